"""Issue 14: per-vertex trajectories from the fitted field and the files that carry them
(mesh_animation.npz, animated.glb, per-frame 3DGS .ply)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from benchmarks.bench_vertex_animation import random_motion_model
from track4dgen.eval import gt as G
from track4dgen.meshio import load_mesh
from track4dgen.stage2.deformation import quat_rotate
from track4dgen.stage2.gltf_animation import add_morph_animation, read_glb, write_animated_glb
from track4dgen.stage2.model import Stage2Model
from track4dgen.stage2.splat_ply import read_splat_ply, write_frame_plys
from track4dgen.stage2.vertex_animation import (
    ArapSolver,
    RotationField,
    bind_targets,
    closest_rotations,
    field_targets,
    gaussian_motion,
    load_mesh_animation,
    mesh_edges,
    singular_value_bounds,
    vertex_trajectories,
    weld,
    write_mesh_animation_npz,
)

pytestmark = pytest.mark.usefixtures("single_thread")
FRAMES = 5


def moving_model(vertices: np.ndarray, faces: np.ndarray, seed: int = 0) -> Stage2Model:
    """A model whose field really moves things (the benchmark's untrained moving field), 400 Gaussians."""
    return random_motion_model(vertices, faces, FRAMES, seed, num_gaussians=400)[0]


@pytest.fixture(scope="module")
def sphere():
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    return np.asarray(m.vertices), np.asarray(m.faces)


def test_field_at_gaussian_centres_matches_the_gaussians_motion(sphere):
    v, f = sphere
    model = moving_model(v, f)
    centres = model.gaussians.means.detach().numpy()
    # k=1: each centre takes its own Gaussian's inputs, so it must move exactly as that Gaussian
    moved = field_targets(model, centres, k=1)
    with torch.no_grad():
        truth = np.stack([model.frame(fr).surface.numpy() for fr in range(FRAMES)])
    assert np.abs(truth[1:] - centres).max() > 1e-2  # the field moves them
    np.testing.assert_allclose(moved, truth, atol=1e-5)


def test_weld_and_edges():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=float)  # vertex 3 duplicates 1
    u, inv = weld(v)
    assert len(u) == 3 and inv[1] == inv[3]
    np.testing.assert_array_equal(u[inv], v)
    e = mesh_edges(np.array([[0, 1, 2], [2, 1, 0]]))
    assert e.tolist() == [[0, 1], [0, 2], [1, 2]]


def test_closest_rotations_match_svd():
    rng = np.random.default_rng(0)
    S = np.eye(3) + 0.5 * rng.normal(size=(500, 3, 3))
    S[:50, :, 2] *= 1e-6  # rank-deficient, as for a flat one-ring
    R = closest_rotations(S)
    U, _, Vh = np.linalg.svd(S)
    V = Vh.transpose(0, 2, 1)
    V[np.linalg.det(V @ U.transpose(0, 2, 1)) < 0, :, 2] *= -1
    ref = V @ U.transpose(0, 2, 1)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-4)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-4)
    # the best rotation maximises tr(R S); on rank-deficient S several can tie, so compare the objective
    obj = lambda r: np.einsum("nij,nji->n", r, S)  # noqa: E731
    assert (obj(R) >= obj(ref) - 1e-3).all()
    well = np.linalg.det(S) > 1e-3  # unique maximiser: the same rotation
    np.testing.assert_allclose(R[well], ref[well], atol=1e-4)


def test_arap_keeps_rigid_motion_and_removes_noise(sphere):
    v, f = sphere
    a = 0.8
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    target = v @ R.T + np.array([0.2, -0.1, 0.05])
    solver = ArapSolver(v, f, weight=1.0)
    np.testing.assert_allclose(solver.solve(target, 2), target, atol=2e-5)  # a rigid motion is its own ARAP solution
    noisy = target + 0.03 * np.random.default_rng(0).normal(size=target.shape)
    out = solver.solve(noisy, 3)
    assert np.linalg.norm(out - target, axis=1).mean() < 0.4 * np.linalg.norm(noisy - target, axis=1).mean()


def svd_rotations(S: np.ndarray) -> np.ndarray:
    """Reference rotations maximising tr(R S): V U^T of S = U Sigma V^T, reflection removed."""
    U, _, Vh = np.linalg.svd(S)
    V = Vh.transpose(0, 2, 1)
    V[np.linalg.det(V @ U.transpose(0, 2, 1)) < 0, :, 2] *= -1
    return V @ U.transpose(0, 2, 1)


def directed_edges(faces: np.ndarray) -> np.ndarray:
    e = {tuple(sorted(p)) for f in faces.tolist() for p in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    return np.array(sorted(e) + sorted((j, i) for i, j in e))


def target_weights(rest: np.ndarray, faces: np.ndarray, weight: float) -> np.ndarray:
    """lambda_i = weight x (vertex's third of its faces' area) / (mean over vertices), face by face."""
    area = np.zeros(len(rest))
    for a, b, c in faces.tolist():
        third = np.linalg.norm(np.cross(rest[b] - rest[a], rest[c] - rest[a])) / 6.0
        area[[a, b, c]] += third
    return weight * area / area.mean()


def arap_energy(p: np.ndarray, rest: np.ndarray, faces: np.ndarray, targets: np.ndarray, weight: float) -> float:
    """sum_i min_R_i sum_j |(p_i - p_j) - R_i (v_i - v_j)|^2 + lambda_i |p_i - t_i|^2, edge by edge."""
    e = directed_edges(faces)
    dv, dp = rest[e[:, 0]] - rest[e[:, 1]], p[e[:, 0]] - p[e[:, 1]]
    S = np.zeros((len(p), 3, 3))
    np.add.at(S, e[:, 0], dv[:, :, None] * dp[:, None, :])
    R = svd_rotations(S)
    lam = target_weights(rest, faces, weight)
    return float(((dp - np.einsum("eab,eb->ea", R[e[:, 0]], dv)) ** 2).sum() + (lam * ((p - targets) ** 2).sum(1)).sum())


def test_arap_steps_match_a_dense_reference():
    """The local step's rotations and the global step's positions against a direct evaluation of the
    same energy: covariances summed edge by edge, and the global step as one dense least-squares
    problem over the stacked edge and target equations."""
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.8)
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    n, lam = len(v), 0.3
    rng = np.random.default_rng(0)
    target = v @ np.diag([1.2, 0.9, 1.0]) + 0.02 * rng.normal(size=v.shape)
    solver = ArapSolver(v, f, weight=lam, tol=1e-7)
    # local step: S_i = sum_j (v_i - v_j)(p_i - p_j)^T + w_i n_i n'_i^T, n area-weighted normals
    e = directed_edges(f)
    dv, dp = v[e[:, 0]] - v[e[:, 1]], target[e[:, 0]] - target[e[:, 1]]
    S = np.zeros((n, 3, 3))
    np.add.at(S, e[:, 0], dv[:, :, None] * dp[:, None, :])

    def normals(x):
        fn = np.cross(x[f[:, 1]] - x[f[:, 0]], x[f[:, 2]] - x[f[:, 0]])
        vn = np.zeros_like(x)
        for k in range(3):
            np.add.at(vn, f[:, k], fn)
        return vn / np.linalg.norm(vn, axis=1, keepdims=True)

    w = np.bincount(e[:, 0], (dv**2).sum(1)) / np.bincount(e[:, 0])
    S += w[:, None, None] * normals(v)[:, :, None] * normals(target)[:, None, :]
    R = solver.rotations(target[:, None, :].astype(np.float32))[:, 0]
    np.testing.assert_allclose(R, svd_rotations(S), atol=2e-4)
    # global step for these rotations: rows p_i - p_j = R_i (v_i - v_j) and sqrt(lam_i) p_i = sqrt(lam_i) t_i
    lam_i = target_weights(v, f, lam)
    rows = np.zeros((len(e) + n, n))
    rows[np.arange(len(e)), e[:, 0]], rows[np.arange(len(e)), e[:, 1]] = 1.0, -1.0
    rows[len(e) + np.arange(n), np.arange(n)] = np.sqrt(lam_i)
    rhs = np.concatenate([np.einsum("eab,eb->ea", R[e[:, 0]].astype(np.float64), dv), np.sqrt(lam_i)[:, None] * target])
    dense = np.linalg.lstsq(rows, rhs, rcond=None)[0]
    b = solver.rhs(R[:, None], target[:, None, :].astype(np.float32))[:, 0]
    ours = solver.global_step(np.ascontiguousarray(b.T), target.T.astype(np.float32).copy()).T
    np.testing.assert_allclose(ours, dense, atol=1e-5)


def test_arap_energy_decreases_and_frames_solve_independently(sphere):
    v, f = sphere
    rng = np.random.default_rng(1)
    a = 0.5
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    frames = np.stack([v @ rot.T + 0.03 * rng.normal(size=v.shape), v * 1.1 + 0.03 * rng.normal(size=v.shape)])
    solver = ArapSolver(v, f, weight=0.3, tol=1e-6)
    energies = [arap_energy(frames[0], v, f, frames[0], 0.3)]
    energies += [arap_energy(solver.solve(frames[0], k).astype(np.float64), v, f, frames[0], 0.3) for k in (1, 2, 4)]
    assert all(later < earlier for earlier, later in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.5 * energies[0]
    # two frames in one batch give each frame's own solution
    together = solver.solve(frames, 2)
    for k in range(2):
        np.testing.assert_allclose(together[k], solver.solve(frames[k], 2), atol=1e-5)


def test_arap_smooths_by_surface_area_not_by_vertex_count():
    """Target noise of the same size everywhere on a UV sphere, whose faces shrink toward the poles:
    with one target weight per vertex the dense poles follow the noise and fold; weighted by each
    vertex's area they are smoothed like the rest (the mesh's tessellation is the artist's choice,
    not a statement about how much to trust the field there)."""
    m = trimesh.creation.uv_sphere(radius=1.0, count=[48, 48])
    v, inverse = weld(np.asarray(m.vertices))
    f = inverse[np.asarray(m.faces)]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    edge = np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1).mean()
    target = (v + np.random.default_rng(0).normal(0.0, 0.3 * edge, v.shape)).astype(np.float32)

    def normals(x):
        return np.cross(x[f[:, 1]] - x[f[:, 0]], x[f[:, 2]] - x[f[:, 0]])

    pole = np.abs(v[f].mean(1)[:, 2]) > 0.95
    flipped = {}
    for area_weighted in (False, True):
        out = ArapSolver(v, f, 1.0, area_weighted=area_weighted).solve(target, 2)
        flipped[area_weighted] = (normals(out) * normals(v)).sum(1) < 0
    assert flipped[False][pole].mean() > 0.01  # measured 2.4 % of the pole faces
    assert flipped[True][pole].mean() < 0.25 * flipped[False][pole].mean()  # measured 0.23 %
    assert not flipped[True][~pole].any()


def test_bounded_stretch_follows_a_squash_that_rigid_rings_resist(sphere):
    """A sphere squashed by 15 % in z and widened by 8 % (a cartoon squash): rigid one-rings pull the
    solve back toward the round shape; rings allowed 20 % stretch follow it, and an inside-out
    ring is still turned back (det > 0, singular values in the band)."""
    v, f = sphere
    squash = np.diag([1.08, 1.08, 0.85])
    target = (v @ squash.T).astype(np.float32)
    err = {}
    for stretch in (0.0, 0.2):
        out = ArapSolver(v, f, 0.3, max_stretch=stretch).solve(target, 4)
        err[stretch] = float(np.linalg.norm(out - target, axis=1).mean())
    assert err[0.2] < 0.1 * err[0.0], err  # measured 0.0006 vs 0.019
    solver = ArapSolver(v, f, 0.3, max_stretch=0.2)
    mirrored = (v * np.array([1.0, 1.0, -1.0]))[:, None, :].astype(np.float32)  # every ring inside out
    maps = solver.rotations(mirrored)[:, 0]
    s = np.linalg.svd(maps.astype(np.float64), compute_uv=False)
    assert (np.linalg.det(maps) > 0).all() and s.min() > 1 / 1.2 - 1e-4 and s.max() < 1.2 + 1e-4


def test_rotation_field_is_the_kabsch_rotation_of_the_gaussians_around(sphere):
    v, f = sphere
    model = moving_model(v, f)
    with torch.no_grad():
        rest = model.gaussians.means.double().numpy()
        now = model.frame(3).surface.double().numpy()
    points = rest[::20].astype(np.float32)  # on Gaussians: with blend_k=1 each takes its own's rotation
    centres = gaussian_motion(model)[0].numpy()
    turns = RotationField(centres, points, k=16, blend_k=1)
    got = turns.at(3)
    angles = []
    for i, g in enumerate(range(0, len(rest), 20)):
        nb = np.argsort(np.linalg.norm(rest - rest[g], axis=1))[:16]
        a, b = rest[nb] - rest[nb].mean(0), now[nb] - now[nb].mean(0)
        U, _, Vh = np.linalg.svd(a.T @ b)  # the rotation taking a onto b: (U diag(1, 1, d) Vh)^T
        best = (U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vh)]) @ Vh).T
        np.testing.assert_allclose(got[i], best, atol=2e-4)
        angles.append(np.degrees(np.arccos(np.clip((np.trace(best) - 1) / 2, -1, 1))))
    assert np.median(angles) > 0.2  # the field does turn neighbourhoods (not the identity by default)
    np.testing.assert_allclose(turns.at(0), np.broadcast_to(np.eye(3), got.shape), atol=1e-5)
    assert len(RotationField(centres, points, samples=100).ids) == 100  # many Gaussians: a fixed share each


def test_first_rotations_from_the_part_keep_a_thin_slab_from_folding():
    """A slab 0.03 thick turned 90 degrees, every vertex target off by noise of a third of its
    thickness: rotations read off the one-rings fold it; given the part's rotation first, the
    solve keeps it right side out (measured 1.7 % vs 0.26 % of faces flipped)."""
    box = trimesh.creation.box(extents=(1.0, 0.3, 0.03))
    v, f = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, 0.04)
    v, inv = weld(v)
    f = inv[f]
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    truth = v @ turn.T
    targets = truth + np.random.default_rng(0).normal(0, 0.01, v.shape)
    solver = ArapSolver(v, f, 1.0, max_stretch=0.2)
    flipped = {}
    for name, first in (("rings", None), ("part", np.broadcast_to(turn, (len(v), 3, 3)))):
        p = solver.solve(targets, 2, first)
        flipped[name] = G.flipped_face_fraction(np.stack([v, p]), np.stack([v, truth]), f)
    assert flipped["rings"] > 0.01, flipped
    assert flipped["part"] < 0.25 * flipped["rings"], flipped


def test_singular_value_bounds_match_the_svd():
    L = np.random.default_rng(3).normal(size=(500, 3, 3))
    L[:5] = np.eye(3)
    L[5:10] = np.diag([2.0, 1.0, 0.0])
    s = np.linalg.svd(L, compute_uv=False)
    small, large = singular_value_bounds(L)
    np.testing.assert_allclose(small, s[:, 2], atol=1e-6)
    np.testing.assert_allclose(large, s[:, 0], atol=1e-6)


def test_arap_handles_loose_vertices_and_degenerate_faces(sphere):
    """A vertex on no face has no ring to keep rigid: it follows its target; a zero-area face adds
    nothing. Neither may turn the solve into NaNs."""
    v, f = sphere
    v2 = np.concatenate([v, [[2.0, 0.0, 0.0]]])
    f2 = np.concatenate([f, [[0, 0, 1]]])
    target = v2 + 0.01 * np.random.default_rng(0).normal(size=v2.shape)
    out = ArapSolver(v2, f2, weight=0.3).solve(target, 2)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[-1], target[-1], atol=1e-6)


def test_bind_targets_are_the_gaussians_rigid_motion(sphere):
    """Against the blend written out: each of the k nearest Gaussians moves the point rigidly with
    its own rotation and translation, weighted by inverse distance."""
    v, f = sphere
    model = moving_model(v, f, seed=2)
    points = (0.95 * v[::7]).astype(np.float32)
    ours = bind_targets(model, points, k=4)
    from scipy.spatial import cKDTree

    g0 = model.gaussians.means.detach().numpy()
    dist, idx = cKDTree(g0).query(points, k=4)
    w = (1 / dist) / (1 / dist).sum(1, keepdims=True)
    with torch.no_grad():
        for fr in range(FRAMES):
            state = model.frame(fr)
            moved = state.surface[idx] + quat_rotate(state.dq[idx], torch.as_tensor(points[:, None] - g0[idx]))
            ref = (moved.numpy() * w[..., None]).sum(1)
            np.testing.assert_allclose(ours[fr], ref, atol=2e-5)
    assert np.abs(ours[1:] - points).max() > 2e-3  # it does move


@pytest.mark.parametrize("method", ["bind", "field"])
def test_no_tearing_or_flips_on_a_synthetic_object(tmp_path, method):
    """A random smooth field on the waving-arm mesh: the ARAP output keeps faces oriented, does
    not stretch edges more than the field did, and welded seam copies move together."""
    from track4dgen.synthetic import make_object

    anim = make_object("waving_arm", frames=FRAMES)
    v, f = anim.canonical, anim.faces
    # duplicate a vertex (a seam copy) to check welding
    v2 = np.concatenate([v, v[:1]])
    f2 = f.copy()
    row, col = np.argwhere(f2 == 0)[0]
    f2[row, col] = len(v)  # one face now uses the copy: a seam
    model = moving_model(v2, f2, seed=1)
    out = vertex_trajectories(model, v2, f2, fps=8.0, method=method, arap_weight=0.3, arap_iterations=2)
    assert out.positions.shape == (FRAMES, len(v2), 3)
    np.testing.assert_array_equal(out.positions[0], v2.astype(np.float32))
    np.testing.assert_allclose(out.positions[:, -1], out.positions[:, 0], atol=1e-6)  # seam copies stay together
    assert np.abs(out.positions[1:] - v2).max() > 1e-3  # it does move
    # against its own targets the result has no flips and near-rest edge lengths
    raw = vertex_trajectories(model, v2, f2, fps=8.0, method=method, arap_iterations=0)
    assert G.flipped_face_fraction(out.positions, raw.positions, f2) < 0.005
    rest = np.repeat(v2[None], FRAMES, 0)
    assert G.edge_length_distortion(out.positions, rest, f2) <= G.edge_length_distortion(raw.positions, rest, f2) + 1e-6


@pytest.mark.parametrize("method", ["field", "bind"])
def test_big_mesh_is_bounded(method):
    """200k vertices: runs, every value finite, and the ARAP memory is linear (no dense or per-edge
    3x3 temporaries: a run well under the size such temporaries would need)."""
    import resource

    m = trimesh.creation.uv_sphere(radius=0.8, count=[320, 320])
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    assert len(v) >= 200_000
    ico = trimesh.creation.icosphere(2, 0.8)
    model = moving_model(np.asarray(ico.vertices), np.asarray(ico.faces))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = vertex_trajectories(model, v, f, fps=8.0, method=method, arap_iterations=1)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert np.isfinite(out.positions).all()
    # positions alone are F x V x 3 float32 = 20 MB; per-edge 3x3 float64 would be ~140 MB each
    assert grew < 1200


def test_mesh_animation_npz_round_trip(tmp_path, sphere):
    v, f = sphere
    out = vertex_trajectories(moving_model(v, f), v, f, fps=12.0)
    path = write_mesh_animation_npz(tmp_path / "mesh_animation.npz", out, f)
    data = load_mesh_animation(tmp_path)
    assert path.name == "mesh_animation.npz"
    assert data["positions"].shape == (FRAMES, len(v), 3) and data["positions"].dtype == np.float32
    assert int(data["vertex_count"]) == len(v) and int(data["frames"]) == FRAMES and float(data["fps"]) == 12.0
    np.testing.assert_array_equal(data["faces"], f)
    bad = dict(data, vertex_count=np.array(len(v) + 1))
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="vertex_count"):
        load_mesh_animation(tmp_path / "bad.npz")


def textured_glb(path):
    """A UV-mapped, textured box inside a translated + scaled node (seams split its vertices)."""
    from PIL import Image

    box = trimesh.creation.box(extents=(0.6, 0.4, 0.8))
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    img = Image.fromarray((np.random.default_rng(1).random((8, 8, 3)) * 255).astype(np.uint8))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=img)
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="box", transform=trimesh.transformations.compose_matrix(scale=[1.5] * 3, translate=[0.1, 0.2, 0.3]))
    path.write_bytes(scene.export(file_type="glb"))
    return path


def test_animated_glb_structure(tmp_path):
    src = textured_glb(tmp_path / "mesh.glb")
    mesh = load_mesh(src)
    rng = np.random.default_rng(0)
    positions = np.stack([mesh.vertices + 0.05 * f * rng.normal(size=mesh.vertices.shape) for f in range(FRAMES)])
    positions[0] = mesh.vertices
    out = write_animated_glb(tmp_path / "animated.glb", src, positions, fps=8.0)

    gltf, binary = read_glb(out.read_bytes())
    src_gltf, _ = read_glb(src.read_bytes())
    prim = gltf["meshes"][0]["primitives"][0]
    assert len(prim["targets"]) == FRAMES
    assert gltf["meshes"][0]["extras"]["targetNames"] == [f"frame_{k:03d}" for k in range(FRAMES)]
    assert prim["material"] == src_gltf["meshes"][0]["primitives"][0]["material"]
    assert "TEXCOORD_0" in prim["attributes"] and gltf["images"] and gltf["textures"]
    (anim,) = gltf["animations"]
    sampler = anim["samplers"][0]
    times = np.frombuffer(bytes(binary), np.float32, FRAMES, gltf["bufferViews"][gltf["accessors"][sampler["input"]]["bufferView"]]["byteOffset"])
    np.testing.assert_allclose(times, np.arange(FRAMES) / 8.0)
    assert gltf["accessors"][sampler["output"]]["count"] == FRAMES * FRAMES
    assert anim["channels"][0]["target"]["path"] == "weights"
    # trimesh still loads it (materials/UVs included) and the morphs give back the trajectories
    loaded = trimesh.load(out)
    geom = next(iter(loaded.geometry.values()))
    assert geom.visual.kind == "texture" and geom.visual.uv.shape[0] == len(geom.vertices)
    from track4dgen.stage2.gltf_animation import mesh_nodes, read_positions

    _, world = mesh_nodes(gltf)[0]
    base = read_positions(gltf, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    for k in (1, FRAMES - 1):
        local = base + read_positions(gltf, binary, prim["targets"][k]["POSITION"])
        world_pts = local @ world[:3, :3].T + world[:3, 3]
        nearest = np.linalg.norm(mesh.vertices[None] - (base @ world[:3, :3].T + world[:3, 3])[:, None], axis=-1).argmin(1)
        np.testing.assert_allclose(world_pts, positions[k][nearest], atol=1e-5)


def test_animated_glb_rejects_other_mesh(tmp_path):
    src = textured_glb(tmp_path / "mesh.glb")
    other = np.zeros((FRAMES, 4, 3))
    with pytest.raises(ValueError, match="another mesh"):
        add_morph_animation(src.read_bytes(), other, 8.0)


def test_frame_plys_have_the_inria_layout(tmp_path):
    rng = np.random.default_rng(0)
    n, F, K, W = 50, 3, 4, 2
    arrays = {
        "sh4d": rng.normal(size=(n, K, 3, W)).astype(np.float32),
        "frame_means": rng.normal(size=(F, n, 3)).astype(np.float32),
        "opacity_logit": rng.normal(size=n).astype(np.float32),
        "frame_log_scales": rng.normal(size=(F, n, 3)).astype(np.float32),
        "frame_quats": rng.normal(size=(F, n, 4)).astype(np.float32),
    }
    paths = write_frame_plys(tmp_path, arrays)
    assert [p.name for p in paths] == ["frame_000.ply", "frame_001.ply", "frame_002.ply"]
    ply = read_splat_ply(paths[2])
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert list(ply) == expected
    np.testing.assert_allclose(np.stack([ply["x"], ply["y"], ply["z"]], 1), arrays["frame_means"][2])
    # tau = 1 at the last frame: coefficient = sum_i fr_i cos(i pi) = fr_0 - fr_1
    sh = arrays["sh4d"][..., 0] - arrays["sh4d"][..., 1]
    np.testing.assert_allclose(ply["f_dc_1"], sh[:, 0, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ply["f_rest_0"], sh[:, 1, 0], rtol=1e-5, atol=1e-6)  # R of coefficient 1
    np.testing.assert_allclose(ply["f_rest_3"], sh[:, 1, 1], rtol=1e-5, atol=1e-6)  # G of coefficient 1
    q = np.stack([ply[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    # trimesh reads it as a point cloud with every property
    cloud = trimesh.load(paths[0])
    assert len(cloud.vertices) == n
    assert json.loads(json.dumps(sorted(cloud.metadata["_ply_raw"]["vertex"]["data"].dtype.names))) == sorted(expected)
