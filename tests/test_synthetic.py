"""track4dgen.synthetic: objects move, renders follow the camera convention, tracks are exact,
and write_job produces a job folder that validates, with ground truth that reads back."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from track4dgen.cameras import HELDOUT_AZIMUTHS_DEG, RIG_AZIMUTHS_DEG, load_cameras, orbit_eye, rig_cameras
from track4dgen.job import JobError, load_job
from track4dgen.meshio import load_mesh
from track4dgen.synthetic import compute_tracks, list_objects, load_gt, load_videos, make_object, render_animation, render_mesh, write_job
from track4dgen.meshraster import rasterize
from track4dgen.synthetic.render import vertex_normals
from track4dgen.synthetic.tracks import points_at, sample_surface
from track4dgen.synthetic.writer import load_png


@pytest.fixture(scope="module")
def objects():
    return {name: make_object(name) for name in list_objects()}


def _face_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def test_objects_move_nontrivially_and_rest_pose_is_frame_zero(objects):
    import trimesh

    assert len(objects) >= 4
    for name, a in objects.items():
        F, V, _ = a.vertices_per_frame.shape
        assert F == 16 and 500 <= V <= 4000, (name, a.vertices_per_frame.shape)
        assert a.faces.shape[1] == 3 and a.faces.max() < V and a.colors.shape == (V, 3)
        assert np.array_equal(a.canonical, a.vertices_per_frame[0])
        # the rest pose does not depend on the clip length (frame 0 is the same static mesh)
        assert np.allclose(make_object(name, frames=3).vertices_per_frame[0], a.canonical)
        # normalised: rest pose centred, whole animation inside the unit sphere
        assert np.abs(0.5 * (a.canonical.min(0) + a.canonical.max(0))).max() < 1e-9
        assert np.linalg.norm(a.vertices_per_frame, axis=-1).max() <= 1.0 + 1e-9
        disp = np.linalg.norm(a.vertices_per_frame - a.canonical, axis=-1).max()
        assert disp > 0.15 * a.bbox_diagonal, (name, disp / a.bbox_diagonal)
        assert a.colors.std(0).max() > 0.1, f"{name} colours must vary over the surface"
        assert trimesh.Trimesh(a.canonical, a.faces, process=False).is_watertight, name


def test_motions_are_distinct(objects):
    """Per-frame signature: centroid offset and bbox extent change, relative to the rest pose."""

    def signature(a):
        v = a.vertices_per_frame
        ext = v.max(1) - v.min(1)
        return np.concatenate([(v.mean(1) - v[0].mean(0)).ravel(), (ext / ext[0] - 1).ravel()])

    sigs = {n: signature(a) for n, a in objects.items()}
    for n1, n2 in combinations(sigs, 2):
        assert np.linalg.norm(sigs[n1] - sigs[n2]) > 0.2, (n1, n2)


def test_any_frame_count_samples_the_same_motion():
    """Phases are f/F, so frame 1 of an 8-frame clip is frame 2 of the 16-frame clip."""
    a16, a8 = make_object("hopper", 16), make_object("hopper", 8)
    assert a8.vertices_per_frame.shape[0] == 8
    assert np.allclose(a8.vertices_per_frame[1], a16.vertices_per_frame[2])
    with pytest.raises(ValueError, match="unknown synthetic object"):
        make_object("teapot")


def test_render_mask_matches_projected_surface_and_background(objects):
    a = objects["waving_arm"]
    bg = (0.2, 0.4, 0.6)
    for cam in rig_cameras(64)[:2]:
        img = render_mesh(a.vertices_per_frame[5], a.faces, a.colors, cam, background=bg)
        assert img.shape == (64, 64, 4) and img.dtype == np.float32
        # independent silhouette: dense surface samples splatted to their pixels
        fid, bary = sample_surface(a.vertices_per_frame[5], a.faces, 40000, seed=1)
        uv = cam.project(points_at(a.vertices_per_frame[5], a.faces, fid, bary))[0]
        splat = np.zeros((64, 64), bool)
        splat[np.floor(uv[:, 1]).astype(int), np.floor(uv[:, 0]).astype(int)] = True
        mask = img[..., 3] > 0.5
        iou = (mask & splat).sum() / (mask | splat).sum()
        assert iou > 0.85, iou
        empty = img[..., 3] == 0
        assert empty.sum() > 1000 and np.allclose(img[empty][:, :3], bg, atol=1e-6)
        assert ((img[..., 3] > 0) & (img[..., 3] < 1)).any(), "supersampling should antialias the edges"


def test_rendered_vertex_colour_at_projected_pixel(objects):
    """End-to-end camera convention: a known vertex's colour shows at Camera.project's pixel,
    and the rig's orientation is as documented (+X right in the front view, +Z up)."""
    a = objects["waving_arm"]
    v, R = a.canonical, 256
    normals = vertex_normals(v, a.faces)
    # vertices whose whole 1-ring shares their colour: their pixel must show exactly that colour
    same = np.ones(len(v), bool)
    for k in range(3):
        for j in range(3):
            diff = np.abs(a.colors[a.faces[:, k]] - a.colors[a.faces[:, j]]).max(1) > 0
            same[a.faces[diff, k]] = False
    for cam in rig_cameras(R):
        img = render_mesh(v, a.faces, a.colors, cam, supersample=1, shading=False)
        raster = rasterize(v, a.faces, cam)
        uv, z = cam.project(v)
        ix, iy = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        to_cam = cam.center - v
        facing = (normals * to_cam).sum(1) > 0.5 * np.linalg.norm(to_cam, axis=1)
        front = same & facing & (np.abs(raster.depth[iy, ix] - z) < 0.01)
        assert front.sum() >= 10
        got = img[iy[front], ix[front], :3]
        assert (np.abs(got - a.colors[front]).max(1) < 1.5 / 255).mean() > 0.95
    front_cam = rig_cameras(R)[0]
    tip = v[np.argmax(v[:, 0])]  # the arm points to +X
    top = v[np.argmax(v[:, 2])]  # the head is on top
    assert front_cam.project(tip)[0][0] > 0.75 * R
    assert front_cam.project(top)[0][1] < 0.25 * R


def test_tracks_land_on_their_colour_and_occluded_points_are_invisible(objects):
    a = objects["squash_stretch"]
    R, f = 96, 7
    cams = rig_cameras(R)
    tr = compute_tracks(a, cams, num_points=400)
    assert tr["tracks"].shape == (4, 16, 400, 2) and tr["visibility"].shape == (4, 16, 400)
    assert np.allclose(tr["points_canonical"], tr["points"][0])
    verts = a.vertices_per_frame[f]
    fn = _face_normals(verts, a.faces)[tr["face_ids"]]
    for k, cam in enumerate(cams):
        img = render_mesh(verts, a.faces, a.colors, cam, supersample=1, shading=False)
        uv, vis = tr["tracks"][k, f], tr["visibility"][k, f]
        d = cam.center - tr["points"][f]
        facing = (fn * d).sum(1) / np.linalg.norm(d, axis=1) > 0.5
        ix, iy = np.clip(np.floor(uv).astype(int), 0, R - 1).T
        match = np.abs(img[iy, ix, :3] - tr["point_colors"]).max(1) < 0.15
        assert match[vis & facing].mean() > 0.85
        assert match[~vis].mean() < 0.5  # hidden points mostly show another colour
        # points on the far side of the blob are hidden, points on the near side are seen
        toward = (tr["points"][f] @ (cam.center / np.linalg.norm(cam.center)))
        assert not vis[toward < -0.4].any()
        assert vis[(toward > 0.4) & facing].mean() > 0.95


def test_tracks_follow_the_surface_motion(objects):
    a = objects["spinner"]
    cams = rig_cameras(64)[:1]
    tr = compute_tracks(a, cams, num_points=200)
    moved = np.linalg.norm(tr["tracks"][0, 4] - tr["tracks"][0, 0], axis=-1)
    assert moved.max() > 5.0  # blade points sweep several pixels in four frames
    assert np.median(moved) < 0.5  # the stand does not move
    uv, _ = cams[0].project(tr["points"][4])
    assert np.allclose(tr["tracks"][0, 4], uv, atol=1e-3)


def test_write_job_passes_validation_and_ground_truth_reads_back(tmp_path):
    job_dir = write_job("waving_arm", tmp_path / "job", resolution=32, frames=4, num_points=64, stage2_overrides={"iters_rec": 5, "background": [0.0, 0.0, 0.0]})
    job = load_job(job_dir)
    assert (job.spec.frames, job.spec.views, job.spec.resolution, job.spec.model) == (4, 4, 32, "tiny")
    assert "waving" in job.spec.prompt and job.spec.stage2["iters_rec"] == 5
    videos = load_videos(job_dir)
    assert videos.shape == (4, 4, 32, 32, 4)
    assert np.array_equal(load_png(job_dir / "views" / "0.png"), videos[0, 0])
    assert np.allclose(videos[:, :, 0, 0, :], 0.0)  # corner: background black, alpha 0
    assert (videos[..., 3] > 0.5).mean(axis=(2, 3)).min() > 0.05
    assert not np.array_equal(videos[0, 0], videos[0, 2]), "the arm moves between frames"

    gt = load_gt(job_dir)
    assert gt.vertices.shape[0] == 4 and gt.tracks.shape == (4, 4, 64, 2) and gt.visibility.dtype == bool
    mesh = load_mesh(job_dir / "mesh.glb")  # glb round trip: rest pose and colours kept
    assert np.allclose(mesh.vertices, gt.vertices[0], atol=1e-6)
    assert np.array_equal(mesh.faces, gt.faces)
    assert np.allclose(mesh.colors, gt.colors, atol=1e-6)
    assert np.allclose(job.cameras[1].center, orbit_eye(RIG_AZIMUTHS_DEG[1], 15.0, 3.0))
    assert np.allclose(gt.heldout_cameras[0].center, orbit_eye(HELDOUT_AZIMUTHS_DEG[0], 15.0, 3.0))
    held = gt.heldout_videos()
    assert held.shape == (4, 4, 32, 32, 4)
    expect = render_animation(gt.vertices, gt.faces, gt.colors, gt.heldout_cameras, background=(0, 0, 0))
    assert np.abs(held[..., 3] - expect[..., 3]).max() <= 0.5 / 255 + 1e-6
    # stored straight alpha: compositing once on the job's background (black here) gives the render
    assert np.abs(held[..., :3] * held[..., 3:] - expect[..., :3]).max() <= 1.0 / 255 + 1e-6
    assert json.loads((job_dir / "gt" / "heldout_cameras.json").read_text())["azimuths_deg"] == list(HELDOUT_AZIMUTHS_DEG)
    assert len(load_cameras(job_dir / "cameras.json")) == 4


def test_write_job_rejects_bad_settings_before_writing(tmp_path):
    with pytest.raises(JobError, match="unknown stage2"):
        write_job("hopper", tmp_path / "bad", stage2_overrides={"iters_recc": 5})
    with pytest.raises(JobError, match="frames"):
        write_job("hopper", tmp_path / "bad", frames=1)
    assert not (tmp_path / "bad").exists()


def test_rendering_four_views_sixteen_frames_at_64_is_fast(objects):
    import time

    a = objects["tail_wag"]
    t0 = time.perf_counter()
    videos = render_animation(a.vertices_per_frame, a.faces, a.colors, rig_cameras(64))
    elapsed = time.perf_counter() - t0
    assert videos.shape == (4, 16, 64, 64, 4)
    assert elapsed < 10.0, f"4x16 renders at 64x64 took {elapsed:.1f} s"
    # one fixed world light (front-left-top): the nearly symmetric blob looks brighter from the front
    blob = objects["squash_stretch"]
    front, back = (render_mesh(blob.canonical, blob.faces, blob.colors, cam) for cam in rig_cameras(64)[::2])
    brightness = [img[img[..., 3] > 0.99][:, :3].mean() for img in (front, back)]
    assert brightness[0] > brightness[1] + 0.1, brightness


def test_straight_alpha_composites_back_to_the_render_once():
    """Edge pixels store the object's own colour: compositing on the background once restores the
    render; the old storage (RGB already over the background) whitened edges a second time."""
    from track4dgen.synthetic.writer import straight_alpha

    white = np.ones(3, np.float32)
    colour = np.array([0.8, 0.2, 0.1], np.float32)
    a = np.array([0.0, 0.25, 0.5, 1.0], np.float32)[:, None]
    over_white = np.concatenate([colour * a + white * (1 - a), a], axis=-1)  # what the renderer returns
    straight = straight_alpha(over_white, white)
    np.testing.assert_allclose(straight[1:, :3], np.broadcast_to(colour, (3, 3)), atol=1e-6)
    np.testing.assert_allclose(straight[0, :3], white)  # alpha 0: the background
    np.testing.assert_allclose(straight[:, :3] * a + white * (1 - a), over_white[:, :3], atol=1e-6)
