"""Ground-truth metrics: known values on constructed inputs (no weights, numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from track4dgen.cameras import rig_cameras
from track4dgen.eval import gt


def _icosphere_like(n_lat: int = 8, n_lon: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere (radius 0.5) as vertices/faces."""
    verts = [[0, 0, 0.5], [0, 0, -0.5]]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            verts.append([0.5 * np.sin(th) * np.cos(ph), 0.5 * np.sin(th) * np.sin(ph), 0.5 * np.cos(th)])
    verts = np.array(verts)
    faces = []
    ring = lambda i, j: 2 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
        faces.append([1, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
        for i in range(1, n_lat - 1):
            faces.append([ring(i, j), ring(i + 1, j), ring(i + 1, j + 1)])
            faces.append([ring(i, j), ring(i + 1, j + 1), ring(i, j + 1)])
    return verts, np.array(faces)


def test_psnr_known_values_and_mask():
    rng = np.random.default_rng(0)
    target = rng.random((2, 16, 16, 3))
    assert gt.psnr(target + 0.1, target) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01
    pred = target.copy()
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:12, 4:12] = True
    pred[:, :2] += 0.5  # error only outside the mask
    assert gt.psnr(pred, target, mask) == gt.PSNR_CAP_DB
    assert gt.psnr(pred, target) < 20.0
    # error inside the mask only: masked PSNR is lower than unmasked (fewer clean pixels)
    pred2 = target.copy()
    pred2[:, 6:8, 6:8] += 0.2
    assert gt.psnr(pred2, target, mask) < gt.psnr(pred2, target)
    assert gt.psnr(np.round(pred2 * 255).clip(0, 255).astype(np.uint8), np.round(target * 255).astype(np.uint8)) == pytest.approx(
        gt.psnr(np.round(pred2 * 255).clip(0, 255) / 255, np.round(target * 255) / 255))  # 8-bit input is read as 0..255
    with pytest.raises(ValueError, match="mask shape"):
        gt.psnr(pred, target, np.ones((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        gt.psnr(pred, target, np.zeros((2, 16, 16)))


def test_ssim_properties():
    rng = np.random.default_rng(1)
    img = gaussian_img = np.clip(rng.random((32, 32, 3)) * 0.2 + np.linspace(0, 0.8, 32)[None, :, None], 0, 1)
    assert gt.ssim(img, img) == pytest.approx(1.0, abs=1e-9)
    noisy = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    noisier = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    s1, s2 = gt.ssim(noisy, img), gt.ssim(noisier, img)
    assert 0 < s2 < s1 < 1
    assert gt.ssim(img, noisy) == pytest.approx(s1, abs=1e-12)  # symmetric
    mask = np.zeros((32, 32), bool)
    mask[:, :10] = True
    damaged = gaussian_img.copy()
    damaged[:, 22:] = 0.0  # far from the mask (beyond the 5-px window radius)
    assert gt.ssim(damaged, img, mask) == pytest.approx(1.0, abs=1e-9)
    assert gt.ssim(damaged, img) < 0.9


def test_closest_point_matches_dense_sampling():
    rng = np.random.default_rng(2)
    a, b, c = rng.normal(size=(3, 3))
    pts = rng.normal(size=(100, 3)) * 2
    q, bary = gt.closest_point_on_triangles(pts, a, b, c)
    assert np.allclose(bary.sum(-1), 1) and (bary >= -1e-12).all()
    assert np.allclose(bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c, q)
    u, v = np.meshgrid(np.linspace(0, 1, 200), np.linspace(0, 1, 200))
    keep = (u + v) <= 1
    dense = a + u[keep, None] * (b - a) + v[keep, None] * (c - a)
    d_exact = np.linalg.norm(q - pts, axis=1)
    d_dense = np.linalg.norm(pts[:, None] - dense[None], axis=-1).min(1)
    assert (d_exact <= d_dense + 1e-9).all()  # never worse than any sample
    assert np.abs(d_exact - d_dense).max() < 0.03  # and as good as the dense grid


def test_anchor_is_exact_even_with_one_candidate():
    v, f = _icosphere_like()
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(300, 3)) * 0.4
    fi1, b1, d1 = gt.anchor_to_surface(pts, v, f, k=1)  # forces the exact fallback
    fi_all, b_all, d_all = gt.anchor_to_surface(pts, v, f, k=len(f))
    assert np.allclose(d1, d_all, atol=1e-12)
    q1 = gt.surface_points(v, f, fi1, b1)
    assert np.allclose(np.linalg.norm(q1 - pts, axis=1), d1)


def test_centre_error_zero_for_exact_motion_and_known_for_static():
    v, f = _icosphere_like()
    F = 5
    step = np.array([0.05, 0.0, 0.02])
    gt_seq = np.stack([v + i * step for i in range(F)])
    # also a non-rigid part: scale grows, so the check is not only translation
    gt_seq = gt_seq * np.linspace(1.0, 1.2, F)[:, None, None]
    fi, bary = gt.sample_surface(v, f, 400, seed=1)
    moving = gt.surface_points(gt_seq, f, fi, bary)
    assert gt.centre_error_pct(moving, gt_seq, f) < 1e-9
    # static centres on a purely translating mesh: error = mean |i*step| over frames
    trans = np.stack([v + i * step for i in range(F)])
    static = np.repeat(gt.surface_points(v, f, fi, bary)[None], F, 0)
    expected = 100 * np.mean([i * np.linalg.norm(step) for i in range(F)]) / gt.bbox_diagonal(v)
    assert gt.centre_error_pct(static, trans, f) == pytest.approx(expected, rel=1e-9)
    # weights: a wrong Gaussian with zero weight does not count
    bad = moving.copy()
    bad[:, 0] += 1.0
    w = np.ones(400)
    w[0] = 0
    assert gt.centre_error_pct(bad, gt_seq, f, weights=w) < 1e-9
    assert gt.centre_error_pct(bad, gt_seq, f) > 0.1
    with pytest.raises(ValueError, match="frames"):
        gt.centre_error_pct(moving[:3], gt_seq, f)


def test_motion_error_ignores_a_constant_offset_but_not_wrong_motion():
    """A centre cloud shrunk 2% toward the centroid but moving exactly with the mesh has a clear
    centre error and ~zero motion error; centres left still score the true mean displacement."""
    v, f = _icosphere_like()
    F = 4
    step = np.array([0.05, 0.0, 0.02])
    gt_seq = np.stack([v + i * step for i in range(F)])
    fi, bary = gt.sample_surface(v, f, 400, seed=2)
    exact = gt.surface_points(gt_seq, f, fi, bary)
    shrunk = exact[0] + (exact[0] - exact[0].mean(0)) * -0.02
    offset = shrunk[None] + (exact - exact[0])
    err, still = gt.motion_error_pct(offset, gt_seq, f)
    assert gt.centre_error_pct(offset, gt_seq, f) > 0.3
    assert err < 1e-6
    expected = 100 * np.mean([i * np.linalg.norm(step) for i in range(F)]) / gt.bbox_diagonal(v)
    assert still == pytest.approx(expected, rel=1e-6)
    frozen = np.repeat(exact[:1], F, 0)
    assert gt.motion_error_pct(frozen, gt_seq, f)[0] == pytest.approx(still, rel=1e-9)


def test_chamfer():
    rng = np.random.default_rng(4)
    a = rng.random((500, 3))
    assert gt.chamfer_distance(a, a) == 0.0
    assert gt.chamfer_distance(a, a + [0.001, 0, 0]) == pytest.approx(0.001, rel=1e-6)
    v, f = _icosphere_like()
    seq = np.stack([v, v + 0.1])
    fi, bary = gt.sample_surface(v, f, 3000, seed=7)
    on_surface = gt.surface_points(seq, f, fi, bary)
    near = gt.chamfer_pct(on_surface, seq, f, n_samples=3000)
    off = gt.chamfer_pct(on_surface * 1.3, seq, f, n_samples=3000)
    assert near < 2.0 < off


def test_tracks_epe_rigid_motion():
    v, f = _icosphere_like()
    rng = np.random.default_rng(5)
    means = gt.surface_points(v, f, *gt.sample_surface(v, f, 2000, seed=2))
    F = 4
    shift = np.array([0.0, 0.0, 0.1])
    frame_means = np.stack([means + i * shift for i in range(F)])
    pts = gt.surface_points(v, f, *gt.sample_surface(v, f, 50, seed=3))
    cams = rig_cameras(64)
    Ks, w2cs = [c.K for c in cams], [c.w2c for c in cams]
    gt_tracks = gt.project_tracks(np.stack([pts + i * shift for i in range(F)]), Ks, w2cs)
    vis = rng.random(gt_tracks.shape[:-1]) > 0.3
    pred = gt.project_tracks(gt.gaussian_tracks_3d(pts, means, frame_means), Ks, w2cs)
    assert pred.shape == (4, F, 50, 2)
    assert gt.track_epe(pred, gt_tracks, vis) < 1e-6
    still = gt.project_tracks(gt.gaussian_tracks_3d(pts, means, np.repeat(means[None], F, 0)), Ks, w2cs)
    assert gt.track_epe(still, gt_tracks, vis) > 1.0


def _dense_scene(n_lat: int = 224, n_lon: int = 224, n_ground: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A ~100k-triangle sphere over a ground plane of ~1000 triangles 30x larger (many "large" triangles)."""
    th = np.linspace(0.05, np.pi - 0.05, n_lat + 1)
    ph = np.linspace(0, 2 * np.pi, n_lon + 1)[:-1]
    T, P = np.meshgrid(th, ph, indexing="ij")
    sphere = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_lat), np.arange(n_lon), indexing="ij")
    a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    f_s = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    g = np.linspace(-3, 3, n_ground + 1)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    ground = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, -1.2)], -1)
    i, j = np.meshgrid(np.arange(n_ground), np.arange(n_ground), indexing="ij")
    a = i * (n_ground + 1) + j
    b, c, d = a + 1, a + n_ground + 1, a + n_ground + 2
    f_g = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)]) + len(sphere)
    return np.concatenate([sphere, ground]), np.concatenate([f_s, f_g])


def test_anchor_on_a_dense_mesh_is_exact_with_bounded_memory():
    import tracemalloc

    v, f = _dense_scene()
    assert len(f) > 100_000
    rng = np.random.default_rng(0)
    d = rng.normal(size=(3000, 3))
    near = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0.97, 1.03, (3000, 1))  # Gaussians on the surface
    stray = rng.uniform(-3, 3, (30, 3))  # and a few far from it
    pts = np.concatenate([near, stray])
    tracemalloc.start()
    fi, bary, dist = gt.anchor_to_surface(pts, v, f)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 500 * 2**20, peak / 2**20  # issue 13: < 2 GB for 100k triangles (was 21.9 GB on 62k)
    check = np.r_[rng.choice(3000, 20, replace=False), np.arange(3000, 3030)]
    tri = v[f]
    for p in check:  # brute force, one point against every triangle
        q, _ = gt.closest_point_on_triangles(pts[p], tri[:, 0], tri[:, 1], tri[:, 2])
        assert dist[p] == pytest.approx(np.linalg.norm(q - pts[p], axis=1).min(), abs=1e-12)
    assert np.allclose(np.linalg.norm(gt.surface_points(v, f, fi, bary) - pts, axis=1), dist)

def test_mesh_metrics_count_flips_stretch_and_error():
    """Issue 14's mesh metrics on a two-triangle square: one face folded over, edges stretched."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    truth = np.stack([v, v + [0, 0, 1]])  # the truth moves up by 1
    folded = truth.copy()
    folded[1, 3] = [1.0, -1.0, 1.0]  # vertex 3 pulled across the diagonal: face 1 flips
    assert gt.flipped_face_fraction(truth, truth, faces) == 0.0
    assert gt.flipped_face_fraction(folded, truth, faces) == 0.5
    stretched = truth.copy()
    stretched[1] = truth[0] * 2 + [0, 0, 1]  # every edge twice as long
    assert gt.edge_length_distortion(stretched, truth, faces) == pytest.approx(1.0)
    err, still = gt.vertex_error_pct(truth, truth)
    assert err == 0.0 and still == pytest.approx(100 * 0.5 / np.sqrt(2))  # 1 unit in half the frames / diag
    # area weighting: vertex 0 and 2 carry both faces (1/3 each of two triangles), 1 and 3 one
    moved = truth.copy()
    moved[1, 1] += [0, 0, 0.3]
    np.testing.assert_allclose(gt.vertex_areas(v, faces), [1 / 3, 1 / 6, 1 / 3, 1 / 6])
    assert gt.vertex_error_pct(moved, truth, faces)[0] == pytest.approx(100 * 0.3 / 2 * (1 / 6) / np.sqrt(2))
    assert gt.vertex_error_pct(moved, truth)[0] == pytest.approx(100 * 0.3 / 2 / 4 / np.sqrt(2))
    with pytest.raises(ValueError, match="vertices"):
        gt.vertex_error_pct(truth[:, :3], truth)
