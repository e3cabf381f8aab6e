"""Exact point tracks of a synthetic animated mesh, and the tracker that reads them back.

Why: on synthetic data the true motion is known, so the tracking losses and the ablation metric can
be checked against ground truth instead of another network's guesses. The writer
(``training/write_mvvideo.py``) calls :func:`exact_tracks` once per possible clip start and saves
the result as ``exact_tracks.npz`` next to the videos; :class:`OracleTracker` reads it.

A query point is lifted to the surface point seen through it on the query frame (exact ray cast:
face + perspective-correct barycentrics); that material point is carried through every frame with
the mesh and projected again. It is visible where no other surface is in front of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..cameras import Camera
from .base import ClipContext, TrackResult, Tracker, check_inputs

EXACT_TRACKS_FILE = "exact_tracks.npz"
DEPTH_TOLERANCE = 0.02  # world units (objects fit the unit sphere, camera 3 units away)


def raycast(
    vertices: np.ndarray, faces: np.ndarray, camera: Camera, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest surface seen through each image point [P, 2] (exact, not pixel-centre sampled).

    Returns (face [P] (-1 = background), perspective-correct barycentrics [P, 3], depth [P] (inf on
    background)). Candidate (point, face) pairs are pre-filtered by the faces' screen bounding boxes.
    """
    uv, z = camera.project(np.asarray(vertices, dtype=np.float64))
    tri, tz = uv[faces], z[faces]  # [T, 3, 2], [T, 3]
    ok = (tz > 1e-6).all(1)
    lo, hi = tri.min(1), tri.max(1)
    pts = np.asarray(points, dtype=np.float64)
    P = len(pts)
    face = np.full(P, -1, dtype=np.int64)
    bary = np.zeros((P, 3))
    depth = np.full(P, np.inf)
    inbox = ((pts[:, None, 0] >= lo[None, :, 0]) & (pts[:, None, 0] <= hi[None, :, 0])
             & (pts[:, None, 1] >= lo[None, :, 1]) & (pts[:, None, 1] <= hi[None, :, 1]) & ok[None])
    pi, fi = np.nonzero(inbox)
    if len(pi) == 0:
        return face, bary, depth
    t = tri[fi]
    e1, e2, d = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], pts[pi] - t[:, 0]
    den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    good = np.abs(den) > 1e-12
    den = np.where(good, den, 1.0)
    b1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / den
    b2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / den
    screen = np.stack([1.0 - b1 - b2, b1, b2], axis=1)
    inside = good & (screen >= -1e-9).all(1)
    persp = screen / tz[fi]
    pz = 1.0 / persp.sum(1)  # perspective-correct depth at the point
    pz = np.where(inside, pz, np.inf)
    order = np.lexsort((pz, pi))  # by point, then depth
    pi, fi, pz, persp = pi[order], fi[order], pz[order], persp[order]
    first = np.r_[True, pi[1:] != pi[:-1]]
    sel = first & np.isfinite(pz)
    face[pi[sel]] = fi[sel]
    depth[pi[sel]] = pz[sel]
    bary[pi[sel]] = persp[sel] * pz[sel, None]
    return face, bary, depth


def exact_tracks(
    vertices_per_frame: np.ndarray,
    faces: np.ndarray,
    cameras: Sequence[Camera],
    queries: np.ndarray,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks of queries [V, P, 2] placed on frame ``start``, through all F frames of the mesh.

    Returns tracks [V, F, P, 2] (NaN where a query hit no surface) and visibility [V, F, P]:
    a tracked point is visible when the first surface along its pixel ray is (within
    DEPTH_TOLERANCE) the point itself.
    """
    faces = np.asarray(faces, dtype=np.int64)
    F = vertices_per_frame.shape[0]
    V, P, _ = queries.shape
    tracks = np.full((V, F, P, 2), np.nan, dtype=np.float64)
    vis = np.zeros((V, F, P), dtype=bool)
    for v, cam in enumerate(cameras):
        face, bary, _ = raycast(vertices_per_frame[start], faces, cam, queries[v])
        hit = face >= 0
        if not hit.any():
            continue
        tri_idx = faces[face[hit]]  # [h, 3]
        for f in range(F):
            pts = (vertices_per_frame[f][tri_idx] * bary[hit][:, :, None]).sum(1)  # [h, 3]
            uv, z = cam.project(pts)
            tracks[v, f, hit] = uv
            _, _, front = raycast(vertices_per_frame[f], faces, cam, uv)
            on_image = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
            vis[v, f, hit] = on_image & (z <= front + DEPTH_TOLERANCE)
    return tracks.astype(np.float32), vis


class OracleTracker(Tracker):
    """Exact tracks of synthetic data: read from the writer's ``exact_tracks.npz`` for the clip
    starts it precomputed, else traced from the saved animation (``gt/``). No network weights."""

    name = "oracle"
    version = "1"
    cacheable = False

    def track(self, video: np.ndarray, queries: np.ndarray, context: Optional[ClipContext] = None) -> TrackResult:
        check_inputs(video, queries)
        if context is None or context.clip_dir is None or not len(context.frame_indices):
            raise ValueError("the oracle tracker needs a ClipContext with clip_dir and frame_indices")
        path = Path(context.clip_dir) / EXACT_TRACKS_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: the oracle only works on data written by training/write_mvvideo.py; "
                "use --tracker cotracker3 for other data"
            )
        frames = np.asarray(context.frame_indices, dtype=np.int64)
        start = int(frames[0])
        with np.load(path) as data:
            key = f"start{start}"
            src_h, src_w = (int(x) for x in data["image_size"])
            if f"{key}_tracks" in data:
                grid = data[f"{key}_queries"]  # [V, P, 2]
                tracks = data[f"{key}_tracks"][:, frames]  # [V, F, P, 2]
                vis = data[f"{key}_visibility"][:, frames]
            else:  # a clip start the writer did not precompute: trace the saved animation
                grid, tracks, vis = self._from_animation(Path(context.clip_dir), frames, src_h, src_w)
        H, W = video.shape[2:4]
        scale = np.array([W / src_w, H / src_h], dtype=np.float32)
        grid = grid * scale
        tracks = tracks * scale
        # Match each requested query to a saved grid point (queries are the writer's grid).
        d = np.linalg.norm(queries[:, :, None, :] - grid[:, None, :, :], axis=-1)  # [V, Q, P]
        nn = d.argmin(-1)
        if (np.take_along_axis(d, nn[..., None], -1) > 1e-3 * max(H, W)).any():
            raise ValueError("oracle queries must be the 15x15 grid the writer saved (track4dgen.tracking.queries.grid_points)")
        idx = nn[:, None, :].repeat(tracks.shape[1], 1)
        out_t = np.take_along_axis(tracks, idx[..., None].repeat(2, -1), axis=2)
        out_v = np.take_along_axis(vis, idx, axis=2) & np.isfinite(out_t).all(-1)
        return TrackResult(np.nan_to_num(out_t, nan=0.0), out_v)

    @staticmethod
    def _from_animation(clip_dir: Path, frames: np.ndarray, height: int, width: int):
        """Exact tracks of the query grid for the given frames from gt/animation.npz + gt/cameras.json."""
        from ..cameras import load_cameras
        from .queries import GRID_SIZE, grid_points

        anim = clip_dir / "gt" / "animation.npz"
        if not anim.exists():
            raise FileNotFoundError(f"{anim} is missing; rewrite the data with training/write_mvvideo.py")
        cams = load_cameras(clip_dir / "gt" / "cameras.json")
        with np.load(anim) as a:
            verts = a["vertices"].astype(np.float64)[frames]
            faces = a["faces"]
        grid = grid_points(height, width, GRID_SIZE)
        queries = np.broadcast_to(grid, (len(cams), *grid.shape)).copy()
        tracks, vis = exact_tracks(verts, faces, cams, queries, start=0)
        return queries, tracks, vis
