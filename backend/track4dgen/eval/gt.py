"""Ground-truth metrics for synthetic objects (weight-free, numpy only).

Every function takes plain arrays so Stage Two's benchmark, ``track4dgen eval`` and tests share one
definition of each number. Images are float in [0, 1], channels last (``[H, W, C]`` or a batch
``[B, H, W, C]``); masks are ``[H, W]`` / ``[B, H, W]`` (or with a trailing 1), > 0.5 = object.

Definitions (pinned here, quoted by the README and the benchmark):

* **PSNR** — per image ``10 log10(1 / MSE)``, MSE over all pixels and channels (unmasked) or over
  the pixels inside the mask (masked); the batch value is the mean of per-image PSNRs (so one
  perfect frame cannot make the average infinite, a per-image PSNR is capped at 100 dB).
* **SSIM** — Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  computed per channel on the image, averaged over channels; unmasked = mean of the SSIM map
  without the 5-pixel border (as scikit-image does), masked = mean of the map over mask pixels
  inside that border. Mean over the batch.
* **3D centre error** (``centre_error_pct``) — each Gaussian centre at the anchor frame (0) is
  attached to its closest point on the ground-truth surface at that frame (triangle +
  barycentric coordinates); that material point is moved with the mesh, and the error is the
  mean over frames and Gaussians of ``|centre_f - point_f|``, as a percentage of the bounding-box
  diagonal of the anchor-frame mesh. It measures both shape (frame 0 offset) and motion; the
  "no motion" baseline is the same call with the anchor-frame centres repeated for every frame.
* **3D motion error** (``motion_error_pct``) — the same attachment, but comparing displacements
  from the anchor frame, ``|(centre_f - centre_0) - (point_f - point_0)|``, mean over frames and
  Gaussians, % of the diagonal. Why a second number: a splat representation fits silhouettes with
  centres a fraction of a pixel inside the surface, and that constant offset dominates the centre
  error of mostly-static objects; this one scores only the motion. Its "no motion" baseline is the
  ground truth's own mean displacement.
* **Chamfer** (``chamfer_pct``) — per frame, symmetric mean nearest-neighbour distance (not
  squared) between the centres and ``n_samples`` area-uniform surface samples that move with
  the mesh, averaged over frames, % of the anchor-frame bounding-box diagonal.
* **Mesh vertex error** (``vertex_error_pct``) — the animated input mesh (``mesh_animation.npz``)
  against the ground-truth vertices of the same index: mean over frames of ``|p_f - gt_f|``,
  averaged over vertices weighted by their lumped area (so the number is the error over the
  surface, not over wherever the modeller put many vertices, and is comparable to the centre
  error of the area-uniform Gaussians); % of the anchor-frame bounding-box diagonal. The "no
  motion" baseline is the input mesh held still. The unweighted per-vertex mean is reported too.
* **Flipped faces** (``flipped_face_fraction``) — fraction of (frame, face) pairs, frames 1..F-1
  (frame 0 is the input), whose normal points against the ground-truth face's normal at that
  frame (a fold); faces degenerate in the ground truth are not counted.
* **Edge-length distortion** (``edge_length_distortion``) — mean over frames 1..F-1 and mesh edges
  of ``| |e_f| / |e_gt,f| - 1 |``: stretching or shrinking beyond the true deformation.
* **Track EPE** (``track_epe``) — mean pixel distance between predicted and ground-truth 2D
  tracks over the entries the ground truth marks visible. ``gaussian_tracks_3d`` turns a
  Gaussian result into 3D tracks of the ground truth's canonical query points (each point follows
  the mean displacement of its k nearest canonical Gaussians), which are then projected.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

PSNR_CAP_DB = 100.0


# ---------------------------------------------------------------------------------------------
# image metrics


def _as_batch(img: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(img)
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)  # 8-bit images -> [0, 1]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"{name} must be [H,W,C] or [B,H,W,C], got shape {a.shape}")
    return a


def _mask_batch(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim >= 3 and m.shape[-1] == 1 and m.shape[-2] == shape[2]:
        m = m[..., 0]
    if m.ndim == 2:
        m = m[None]
    if m.shape != shape[:3]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match images {shape}; pass [H,W] or [B,H,W]")
    return m > 0.5


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, max_val: float = 1.0) -> float:
    """Mean per-image PSNR in dB; with ``mask`` only object pixels count (see module doc)."""
    p, t = _as_batch(pred, "pred"), _as_batch(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in shape")
    m = _mask_batch(mask, p.shape)
    values = []
    for b in range(p.shape[0]):
        err = (p[b] - t[b]) ** 2
        if m is not None:
            if not m[b].any():
                continue  # an empty mask has no object pixels to score
            mse = err[m[b]].mean()
        else:
            mse = err.mean()
        values.append(PSNR_CAP_DB if mse <= 0 else min(PSNR_CAP_DB, 10.0 * np.log10(max_val**2 / mse)))
    if not values:
        raise ValueError("every mask is empty: no object pixels to compute a masked PSNR on")
    return float(np.mean(values))


def ssim_map(pred: np.ndarray, target: np.ndarray, max_val: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    """SSIM map [H, W] of one image pair [H, W, C] (channel mean)."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    # truncate 3.5 with sigma 1.5 gives the classic 11-tap window (radius 5)
    blur = lambda a: gaussian_filter(a, sigma=sigma, truncate=3.5, mode="reflect")  # noqa: E731
    maps = []
    for c in range(x.shape[-1]):
        a, b = x[..., c], y[..., c]
        mu_a, mu_b = blur(a), blur(b)
        saa = blur(a * a) - mu_a**2
        sbb = blur(b * b) - mu_b**2
        sab = blur(a * b) - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)
        maps.append(num / den)
    return np.mean(maps, axis=0)


def ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, max_val: float = 1.0) -> float:
    """Mean SSIM over a batch; masked = mean of the SSIM map over mask pixels (module doc)."""
    p, t = _as_batch(pred, "pred"), _as_batch(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in shape")
    m = _mask_batch(mask, p.shape)
    pad = 5
    if min(p.shape[1:3]) <= 2 * pad:
        raise ValueError(f"SSIM needs images larger than {2 * pad}x{2 * pad} (11-tap window), got {p.shape[1:3]}")
    values = []
    for b in range(p.shape[0]):
        smap = ssim_map(p[b], t[b], max_val)[pad:-pad, pad:-pad]
        if m is not None:
            mb = m[b][pad:-pad, pad:-pad]
            if not mb.any():
                continue
            values.append(smap[mb].mean())
        else:
            values.append(smap.mean())
    if not values:
        raise ValueError("every mask is empty: no object pixels to compute a masked SSIM on")
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------
# surface anchoring


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest points of points ``p`` [..., 3] on triangles (a, b, c) [..., 3] (broadcast).

    Returns (closest points [..., 3], barycentric weights [..., 3] for a, b, c). Ericson's
    region test (Real-Time Collision Detection §5.1.5), vectorised; degenerate triangles fall
    back to their closest vertex/edge through the same regions.
    """
    p, a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (p, a, b, c)))
    ab, ac, ap = b - a, c - a, p - a
    d1 = (ab * ap).sum(-1)
    d2 = (ac * ap).sum(-1)
    bp = p - b
    d3 = (ab * bp).sum(-1)
    d4 = (ac * bp).sum(-1)
    cp = p - c
    d5 = (ab * cp).sum(-1)
    d6 = (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2

    shape = d1.shape
    bary = np.zeros(shape + (3,))
    done = np.zeros(shape, dtype=bool)

    def assign(cond: np.ndarray, w: np.ndarray) -> None:
        sel = cond & ~done
        bary[sel] = w[sel]
        done[sel] = True

    ones, zeros = np.ones(shape), np.zeros(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        assign((d1 <= 0) & (d2 <= 0), np.stack([ones, zeros, zeros], -1))  # vertex a
        assign((d3 >= 0) & (d4 <= d3), np.stack([zeros, ones, zeros], -1))  # vertex b
        t = np.where(d1 - d3 != 0, d1 / (d1 - d3), 0.0)
        assign((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t, t, zeros], -1))  # edge ab
        assign((d6 >= 0) & (d5 <= d6), np.stack([zeros, zeros, ones], -1))  # vertex c
        t = np.where(d2 - d6 != 0, d2 / (d2 - d6), 0.0)
        assign((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t, zeros, t], -1))  # edge ac
        den = (d4 - d3) + (d5 - d6)
        t = np.where(den != 0, (d4 - d3) / den, 0.0)
        assign((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), np.stack([zeros, 1 - t, t], -1))  # edge bc
        s = va + vb + vc
        s = np.where(s != 0, s, 1.0)
        v, w = vb / s, vc / s
        assign(np.ones(shape, dtype=bool), np.stack([1 - v - w, v, w], -1))  # interior
    q = bary[..., 0:1] * a + bary[..., 1:2] * b + bary[..., 2:3] * c
    return q, bary


PAIR_BUDGET = 100_000  # (point, triangle) pairs evaluated at once: ~100 MB of temporaries


def _closest_of_pairs(pts: np.ndarray, tri: np.ndarray, pi: np.ndarray, ti: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances [M] and barycentrics [M, 3] of points ``pts[pi]`` to triangles ``tri[ti]``."""
    t = tri[ti]
    q, bary = closest_point_on_triangles(pts[pi], t[:, 0], t[:, 1], t[:, 2])
    return np.linalg.norm(q - pts[pi], axis=-1), bary


def _keep_nearest(pi, ti, d, bary, face_idx, bc, dist) -> None:
    """Per point, keep the nearest of the evaluated pairs where it beats the current best."""
    order = np.lexsort((d, pi))  # by point, nearest first
    first = order[np.r_[True, pi[order][1:] != pi[order][:-1]]]
    better = d[first] < dist[pi[first]]
    sel = first[better]
    face_idx[pi[sel]], bc[pi[sel]], dist[pi[sel]] = ti[sel], bary[sel], d[sel]


def anchor_to_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, k: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest surface point of every point: (face index [N], barycentrics [N,3], distance [N]).

    First guess: the k triangles with the nearest centroids. Then the search is made exact: a
    triangle with centroid c and circumradius r is at least |p - c| - r from p, so only triangles
    whose centroid lies within (best distance so far + r) can do better. Triangles are grouped by
    radius (powers of two), each group with its own k-d tree, so a few large triangles never widen
    the search among the many small ones. Work is done in (point, triangle) pair batches of at most
    ``PAIR_BUDGET``, so memory stays bounded (~100 MB) whatever the mesh size or point placement.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"faces must be [T,3] with T > 0, got shape {f.shape}")
    n = len(pts)
    tri = v[f]  # [T,3,3]
    centroids = tri.mean(1)
    radii = np.linalg.norm(tri - centroids[:, None], axis=-1).max(1)
    face_idx = np.zeros(n, dtype=np.int64)
    bc = np.zeros((n, 3))
    dist = np.full(n, np.inf)

    kk = max(1, min(k, len(f)))
    step = max(1, PAIR_BUDGET // kk)
    tree = cKDTree(centroids)
    for start in range(0, n, step):  # first guess
        sl = np.arange(start, min(n, start + step))
        _, cand = tree.query(pts[sl], k=kk)
        ti = cand.reshape(len(sl), kk).ravel()
        pi = np.repeat(sl, kk)
        d, bary = _closest_of_pairs(pts, tri, pi, ti)
        _keep_nearest(pi, ti, d, bary, face_idx, bc, dist)

    # exact pass: per radius group, every triangle whose bound beats the current best
    base = max(float(np.median(radii)), 1e-12)
    group = np.ceil(np.log2(np.maximum(radii, base) / base)).astype(np.int64)
    for g in np.unique(group):
        members = np.nonzero(group == g)[0]
        gtree = cKDTree(centroids[members])
        r_max = radii[members].max()
        counts = gtree.query_ball_point(pts, dist + r_max, return_length=True)
        todo = np.nonzero(counts > 0)[0]
        start = 0
        while start < len(todo):
            csum = np.cumsum(counts[todo[start:]])
            stop = start + max(1, int(np.searchsorted(csum, PAIR_BUDGET, side="right")))
            sl = todo[start:stop]
            lists = gtree.query_ball_point(pts[sl], dist[sl] + r_max, return_sorted=False)
            lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(sl))
            if lens.sum():
                ti = members[np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])]
                pi = np.repeat(sl, lens)
                d, bary = _closest_of_pairs(pts, tri, pi, ti)
                _keep_nearest(pi, ti, d, bary, face_idx, bc, dist)
            start = stop
    return face_idx, bc, dist


def surface_points(vertices: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Material points (face, barycentrics) on a mesh pose [V,3] or a sequence [F,V,3]."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[..., np.asarray(faces)[face_idx], :]  # [..., N, 3, 3]
    return (tri * bary[:, :, None]).sum(-2)


def bbox_diagonal(vertices: np.ndarray) -> float:
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    return float(np.linalg.norm(v.max(0) - v.min(0)))


def _check_sequence(frame_means: np.ndarray, gt_vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(frame_means, dtype=np.float64)
    g = np.asarray(gt_vertices, dtype=np.float64)
    if m.ndim != 3 or m.shape[-1] != 3:
        raise ValueError(f"frame_means must be [F,N,3], got {m.shape}")
    if g.ndim != 3 or g.shape[-1] != 3:
        raise ValueError(f"gt_vertices must be [F,V,3], got {g.shape}")
    if m.shape[0] != g.shape[0]:
        raise ValueError(f"frame_means has {m.shape[0]} frames but gt_vertices has {g.shape[0]}; evaluate matching frames")
    return m, g


def centre_error_pct(
    frame_means: np.ndarray,
    gt_vertices: np.ndarray,
    faces: np.ndarray,
    weights: np.ndarray | None = None,
    anchor_frame: int = 0,
) -> float:
    """Mean 3D error of Gaussian centres vs the GT surface motion, % of bbox diagonal (module doc).

    ``weights`` [N] (e.g. opacities) turn the mean over Gaussians into a weighted mean, so that
    near-transparent Gaussians, which do not show in renders, count less.
    """
    m, g = _check_sequence(frame_means, gt_vertices)
    face_idx, bary, _ = anchor_to_surface(m[anchor_frame], g[anchor_frame], faces)
    target = surface_points(g, faces, face_idx, bary)  # [F,N,3]
    err = np.linalg.norm(m - target, axis=-1).mean(0)  # [N]
    w = np.ones(len(err)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != err.shape or w.sum() <= 0:
        raise ValueError(f"weights must be [N={len(err)}] with a positive sum, got shape {w.shape}")
    return float(100.0 * (err * w).sum() / w.sum() / bbox_diagonal(g[anchor_frame]))


def motion_error_pct(
    frame_means: np.ndarray, gt_vertices: np.ndarray, faces: np.ndarray, anchor_frame: int = 0
) -> tuple[float, float]:
    """(motion error, no-motion baseline) of the displacements from the anchor frame, % of the
    bounding-box diagonal (module doc). The baseline is the error of centres that never move."""
    m, g = _check_sequence(frame_means, gt_vertices)
    face_idx, bary, _ = anchor_to_surface(m[anchor_frame], g[anchor_frame], faces)
    target = surface_points(g, faces, face_idx, bary)  # [F,N,3]
    true_disp = target - target[anchor_frame]
    err = np.linalg.norm((m - m[anchor_frame]) - true_disp, axis=-1).mean()
    still = np.linalg.norm(true_disp, axis=-1).mean()
    diag = bbox_diagonal(g[anchor_frame])
    return float(100.0 * err / diag), float(100.0 * still / diag)


def vertex_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Lumped vertex areas [V]: a third of the area of every face around the vertex."""
    n = _face_normals(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64))
    third = np.linalg.norm(n, axis=-1) / 6.0
    return np.bincount(np.asarray(faces).reshape(-1), weights=np.repeat(third, 3), minlength=len(vertices))


def vertex_error_pct(positions: np.ndarray, gt_vertices: np.ndarray, faces: np.ndarray | None = None) -> tuple[float, float]:
    """(mesh vertex error, no-motion baseline), % of the anchor-frame bbox diagonal (module doc).

    With ``faces`` each vertex counts by its lumped area at frame 0 (the error integrated over the
    surface, as the area-uniform Gaussians are scored); without, every vertex counts once.
    """
    p, g = _check_sequence(positions, gt_vertices)
    if p.shape != g.shape:
        raise ValueError(f"mesh animation has {p.shape[1]} vertices but the ground truth {g.shape[1]}; "
                         "both must be the job mesh's vertices in the same order")
    w = np.ones(p.shape[1]) if faces is None else vertex_areas(g[0], faces)
    diag = bbox_diagonal(g[0])
    err = (np.linalg.norm(p - g, axis=-1).mean(0) * w).sum() / w.sum()
    still = (np.linalg.norm(p[:1] - g, axis=-1).mean(0) * w).sum() / w.sum()
    return float(100.0 * err / diag), float(100.0 * still / diag)


def _face_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = v[..., faces, :]  # [..., T, 3, 3]
    return np.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])


def flipped_face_fraction(positions: np.ndarray, gt_vertices: np.ndarray, faces: np.ndarray) -> float:
    """Fraction of faces (frames 1..F-1) turned against the ground truth's orientation (module doc)."""
    p, g = _check_sequence(positions, gt_vertices)
    f = np.asarray(faces, dtype=np.int64)
    n_p, n_g = _face_normals(p[1:], f), _face_normals(g[1:], f)
    area_g = np.linalg.norm(n_g, axis=-1)
    valid = area_g > 1e-12 * max(float(area_g.max()), 1e-30)
    if not valid.any():
        raise ValueError("every ground-truth face is degenerate (or there is only one frame)")
    flipped = (n_p * n_g).sum(-1) < 0
    return float(flipped[valid].mean())


def edge_length_distortion(positions: np.ndarray, gt_vertices: np.ndarray, faces: np.ndarray) -> float:
    """Mean relative edge-length error against the ground truth, frames 1..F-1 (module doc)."""
    p, g = _check_sequence(positions, gt_vertices)
    f = np.asarray(faces, dtype=np.int64)
    e = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1), axis=0)
    length_p = np.linalg.norm(p[1:, e[:, 0]] - p[1:, e[:, 1]], axis=-1)
    length_g = np.linalg.norm(g[1:, e[:, 0]] - g[1:, e[:, 1]], axis=-1)
    ok = length_g > 0
    return float(np.abs(length_p[ok] / length_g[ok] - 1.0).mean())


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform material points: (face index [n], barycentrics [n,3]), deterministic per seed."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    rng = np.random.default_rng(seed)
    face_idx = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], -1)
    return face_idx, bary


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance: mean NN distance a->b plus b->a, halved (same units as input)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("Chamfer distance needs two non-empty point sets")
    d_ab, _ = cKDTree(b).query(a)
    d_ba, _ = cKDTree(a).query(b)
    return float(0.5 * (d_ab.mean() + d_ba.mean()))


def chamfer_pct(frame_means: np.ndarray, gt_vertices: np.ndarray, faces: np.ndarray, n_samples: int = 10000, seed: int = 0) -> float:
    """Mean over frames of the Chamfer distance centres <-> moving GT surface samples, % of diagonal."""
    m, g = _check_sequence(frame_means, gt_vertices)
    face_idx, bary = sample_surface(g[0], faces, n_samples, seed)
    samples = surface_points(g, faces, face_idx, bary)  # [F,S,3]
    per_frame = [chamfer_distance(m[f], samples[f]) for f in range(len(m))]
    return float(100.0 * np.mean(per_frame) / bbox_diagonal(g[0]))


# ---------------------------------------------------------------------------------------------
# tracks


def gaussian_tracks_3d(points_canonical: np.ndarray, means: np.ndarray, frame_means: np.ndarray, k: int = 4) -> np.ndarray:
    """3D tracks [F,P,3] of canonical query points carried by the Gaussians' motion.

    Each point is attached to its k nearest canonical Gaussians (``means`` [N,3]) and moves by
    their mean displacement ``frame_means[f] - means`` (inverse-distance weighted), i.e. the
    deformation field the result encodes, sampled at the point.
    """
    p = np.asarray(points_canonical, dtype=np.float64).reshape(-1, 3)
    c = np.asarray(means, dtype=np.float64)
    fm = np.asarray(frame_means, dtype=np.float64)
    if fm.ndim != 3 or fm.shape[1:] != c.shape:
        raise ValueError(f"frame_means {fm.shape} must be [F, N, 3] with N matching means {c.shape}")
    k = min(k, len(c))
    dist, idx = cKDTree(c).query(p, k=k)
    dist, idx = dist.reshape(len(p), k), idx.reshape(len(p), k)
    w = 1.0 / np.maximum(dist, 1e-8)
    w /= w.sum(1, keepdims=True)
    disp = fm[:, idx] - c[idx][None]  # [F,P,k,3]
    return p[None] + (disp * w[None, :, :, None]).sum(2)


def project_tracks(tracks_3d: np.ndarray, Ks: Sequence[np.ndarray], w2cs: Sequence[np.ndarray]) -> np.ndarray:
    """Project 3D tracks [F,P,3] into each camera -> pixel tracks [V,F,P,2] (OpenCV, corner origin)."""
    from ..cameras import project_points

    return np.stack([project_points(tracks_3d, np.asarray(K), np.asarray(w2c))[0] for K, w2c in zip(Ks, w2cs)])


def track_epe(pred_tracks: np.ndarray, gt_tracks: np.ndarray, visibility: np.ndarray | None = None) -> float:
    """Mean end-point error in pixels over visible entries of [..., 2] tracks."""
    p = np.asarray(pred_tracks, dtype=np.float64)
    g = np.asarray(gt_tracks, dtype=np.float64)
    if p.shape != g.shape or p.shape[-1] != 2:
        raise ValueError(f"pred tracks {p.shape} and GT tracks {g.shape} must have the same [..., 2] shape")
    err = np.linalg.norm(p - g, axis=-1)
    if visibility is None:
        return float(err.mean())
    vis = np.asarray(visibility).astype(bool)
    if vis.shape != err.shape:
        raise ValueError(f"visibility {vis.shape} must match tracks without the last axis {err.shape}")
    if not vis.any():
        raise ValueError("no visible track entries to score")
    return float(err[vis].mean())
