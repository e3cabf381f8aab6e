"""2D point tracks of the input videos as a Stage Two motion target (``losses.track_loss``).

Why: the image loss only pulls a Gaussian toward targets its footprint overlaps, so a part that
moves several of its own widths per frame (a thin limb, a spinning blade) gets no gradient toward
where it went. A point track says where the surface under a pixel of frame 0 is in every later
frame, however far it moved: the long-range correspondence this project is named after.

Tracks ``[V, F, Q, 2]`` (pixels, (0, 0) = top-left *corner*, like ``synthetic.tracks`` and the
``tracking`` package) and ``visibility`` ``[V, F, Q]`` of Q query points placed on frame 0 of
each view. A query is a material point: its frame-0 pixel is lifted onto the canonical mesh
through the mesh's depth buffer in that view (``unproject_queries``), and the point is carried by
the motion of its ``k`` nearest Gaussians in 3D (inverse-distance blend). The track term asks that
point's projection at frame t to have moved by ``track(t) - track(0)``. Why 3D, not the Gaussians'
2D neighbourhoods: averaging the displacements of queries around a Gaussian's projection pulls a
part's edge toward its inside (at a turning blade's tip every query lies inward, so the target cut
the tip's path short by ~2.5 px at 64 px), and mixes parts across depth edges; the lifted point
is the tracked point itself.

Seen at t, a query's target has weight 1. Hidden at t (behind another part, in that view), the
tracker's estimate of where it went (CoTracker3 tracks through occlusion) has weight
``occluded_weight`` (0 = not used): a blade tip that passes behind the hub half a turn later must
still be told it went round, or the field cuts the chord between the frames it was seen in. (A
weight falling with the frames out of sight was measured and lost the blade tips again; DESIGN.md.)

File ``tracks.npz`` in a job folder (given videos): ``tracks`` float [V, F, Q, 2] in pixels of the
job's video resolution, ``visibility`` bool [V, F, Q]; Q may differ per job, frame 0 holds the
queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..job import JobError


@dataclass
class TrackTargets:
    """Every view's tracked points and where their tracks say they went, in pixels of the
    training resolution (module docstring). Q is the tracks' query count; queries not seen on
    frame 0, or off the mesh, have weight 0 on every frame."""

    points: torch.Tensor  # [V, Q, 3] canonical material points of the queries
    gaussians: torch.Tensor  # [V, Q, k] long: the Gaussians that carry each point
    blend: torch.Tensor  # [V, Q, k] their weights (rows sum to 1)
    displacement: torch.Tensor  # [V, F, Q, 2] track(t) - track(0)
    weight: torch.Tensor  # [V, F, Q] float: 1 seen, occluded_weight hidden, 0 unused

    @property
    def valid(self) -> torch.Tensor:
        """[V, F, Q] bool: where a target is defined."""
        return self.weight > 0

    def to(self, device: torch.device) -> "TrackTargets":
        return TrackTargets(*(x.to(device) for x in (self.points, self.gaussians, self.blend, self.displacement, self.weight)))

    def at(self, views: torch.Tensor | slice, frame: int) -> "ViewTracks":
        """The targets of ``views`` at ``frame`` (what ``losses.track_loss`` takes)."""
        return ViewTracks(self.points[views], self.gaussians[views], self.blend[views],
                          self.displacement[views, frame], self.weight[views, frame])


@dataclass
class ViewTracks:
    """One frame's targets in C views: ``points`` [C, Q, 3], ``gaussians``/``blend`` [C, Q, k],
    ``displacement`` [C, Q, 2], ``weight`` [C, Q]."""

    points: torch.Tensor
    gaussians: torch.Tensor
    blend: torch.Tensor
    displacement: torch.Tensor
    weight: torch.Tensor

    def carried(self, surface_t: torch.Tensor, canonical: torch.Tensor) -> torch.Tensor:
        """[C, Q, 3] the tracked points at t: each moved by its Gaussians' blended displacement
        ``surface_t - canonical`` (``canonical`` gets no gradient: the term constrains motion, not
        where the canonical Gaussians sit)."""
        moved = surface_t[self.gaussians] - canonical.detach()[self.gaussians]  # [C, Q, k, 3]
        return self.points + (moved * self.blend[..., None]).sum(-2)


def check_tracks(tracks, visibility, views: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate given tracks; returns (tracks float32 [V,F,Q,2], visibility bool [V,F,Q])."""
    t = torch.as_tensor(np.asarray(tracks), dtype=torch.float32)
    vis = torch.as_tensor(np.asarray(visibility))
    fix = "Write tracks.npz with tracks [views, frames, Q, 2] (pixels) and visibility [views, frames, Q], or remove it."
    if t.dim() != 4 or t.shape[-1] != 2 or t.shape[0] != views or t.shape[1] != frames:
        raise JobError("bad_tracks", f"tracks must be [{views}, {frames}, Q, 2], got shape {tuple(t.shape)}", fix)
    if tuple(vis.shape) != tuple(t.shape[:3]):
        raise JobError("bad_tracks", f"track visibility must be {tuple(t.shape[:3])}, got shape {tuple(vis.shape)}", fix)
    if not torch.isfinite(t).all():
        raise JobError("bad_tracks", "tracks contain NaN or infinite positions", fix)
    return t, vis.bool()


def load_tracks_npz(path: str | Path, views: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and validate a job's ``tracks.npz`` (format in the module docstring)."""
    try:
        with np.load(path) as z:
            return check_tracks(z["tracks"], z["visibility"], views, frames)
    except (KeyError, ValueError, OSError) as exc:
        raise JobError("bad_tracks", f"{path} is not a readable tracks file ({exc})",
                       "It needs arrays 'tracks' [V, F, Q, 2] and 'visibility' [V, F, Q] (numpy.savez).") from exc


def unproject_queries(
    pixels: torch.Tensor,
    vertices: np.ndarray,
    faces: np.ndarray,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    image_size: tuple[int, int],
    raster_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift each view's frame-0 query pixels onto the mesh: (points [V, Q, 3], on_mesh [V, Q] bool).

    ``pixels`` [V, Q, 2] in images of ``image_size`` = (width, height), cameras ``viewmats``/``Ks``
    for that size. The mesh is rasterized at ``raster_size`` px on the longer side for the face
    under each query, and the query's own ray meets that face's plane (exact, not quantised to the
    raster). A query whose raster pixel is background takes the nearest face in its 3x3
    neighbourhood (it sits on the silhouette); where the plane is met more than 5 % away from the
    raster's depth (grazing faces, a neighbour's face) the point is put at that depth instead. No
    face around: ``on_mesh`` False and the point 0."""
    from ..meshraster import rasterize, resized_camera

    verts = np.asarray(vertices, np.float64)
    tri = verts[np.asarray(faces, np.int64)]  # [T, 3, 3]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    width, height = image_size
    nv, nq, _ = pixels.shape
    points = np.zeros((nv, nq, 3))
    on_mesh = np.zeros((nv, nq), dtype=bool)
    for v in range(nv):
        K = Ks[v].detach().cpu().double().numpy()
        w2c = viewmats[v].detach().cpu().double().numpy()
        cam = resized_camera(K, w2c, image_size, raster_size)
        rw, rh = cam.width, cam.height
        raster = rasterize(verts, np.asarray(faces, np.int64), cam, cull_backfaces=False)
        depth = np.pad(np.where(raster.face_id >= 0, raster.depth, np.inf), 1, constant_values=np.inf)
        face_ids = np.pad(raster.face_id, 1, constant_values=-1)
        px = pixels[v].detach().cpu().double().numpy()
        ix = np.clip(np.floor(px[:, 0] * rw / width).astype(np.int64), 0, rw - 1) + 1  # +1: the padding
        iy = np.clip(np.floor(px[:, 1] * rh / height).astype(np.int64), 0, rh - 1) + 1
        face, z = face_ids[iy, ix], depth[iy, ix]
        for dy in (-1, 0, 1):  # silhouette queries: the nearest face around
            for dx in (-1, 0, 1):
                d = depth[iy + dy, ix + dx]
                take = (face_ids[iy, ix] < 0) & (d < z)
                face = np.where(take, face_ids[iy + dy, ix + dx], face)
                z = np.where(take, d, z)
        ok = face >= 0
        c2w = np.linalg.inv(w2c)
        origin = c2w[:3, 3]
        rays = np.stack([(px[:, 0] - K[0, 2]) / K[0, 0], (px[:, 1] - K[1, 2]) / K[1, 1], np.ones(nq)], -1) @ c2w[:3, :3].T
        f = np.where(ok, face, 0)
        n, a = normals[f], tri[f, 0]
        denom = (n * rays).sum(-1)
        t = (n * (a - origin)).sum(-1) / np.where(np.abs(denom) > 1e-12, denom, 1e-12)
        # the ray's camera z is 1 per unit t, so t is the depth: a plane met far from the raster's
        # depth (grazing, or a silhouette query's neighbour face) gives way to that depth
        t = np.where(np.abs(t - z) <= 0.05 * np.abs(z), t, z)
        points[v] = np.where(ok[:, None], origin + rays * np.where(ok, t, 0.0)[:, None], 0.0)
        on_mesh[v] = ok & (t > 0)
    return torch.from_numpy(points).float(), torch.from_numpy(on_mesh)


def associate_tracks(
    canonical: torch.Tensor,
    vertices: np.ndarray,
    faces: np.ndarray,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    image_size: tuple[int, int],
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    k: int = 3,
    occluded_weight: float = 0.0,
) -> TrackTargets:
    """Lift every view's queries onto the mesh and tie each to its ``k`` nearest Gaussians
    (module docstring). ``canonical`` [N, 3] the Gaussians' canonical centres; ``tracks``
    [V, F, Q, 2] and ``visibility`` [V, F, Q] in pixels of ``image_size``, the cameras' size."""
    nv, nf, nq, _ = tracks.shape
    points, on_mesh = unproject_queries(tracks[:, 0], vertices, faces, viewmats, Ks, image_size)
    used = on_mesh & visibility[:, 0].bool()  # a query is placed where it is seen
    kk = min(k, canonical.shape[0])
    d, idx = cKDTree(canonical.detach().cpu().double().numpy()).query(points.reshape(-1, 3).double().numpy(), k=kk)
    d = torch.from_numpy(d.reshape(-1, kk)).float()
    idx = torch.from_numpy(idx.reshape(-1, kk)).long()
    w = 1.0 / (d + 0.5 * d[:, -1:] + 1e-12)  # inverse distance, softened by the neighbourhood's size
    blend = (w / w.sum(-1, keepdim=True)).reshape(nv, nq, kk)
    moved = tracks - tracks[:, :1]  # [V, F, Q, 2]
    seen = visibility.bool() & used[:, None]
    weight = seen.float()
    if occluded_weight > 0:
        weight = weight + float(occluded_weight) * (~visibility.bool() & used[:, None]).float()
    return TrackTargets(points, idx.reshape(nv, nq, kk), blend, moved.float(), weight)



def noisy_tracks(tracks: np.ndarray, visibility: np.ndarray, sigma_px: float = 1.0, outlier_frac: float = 0.05,
                 outlier_px: float = 8.0, flip_frac: float = 0.05, seed: int = 0,
                 hidden_drift_px: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact tracks degraded like a real tracker's: Gaussian jitter of ``sigma_px`` on every frame
    after 0, a fraction ``outlier_frac`` of (view, frame, point) entries off by a uniform offset of up
    to ``outlier_px`` in each axis, and ``flip_frac`` of the visibility flags after frame 0 flipped.
    While a point is hidden its estimate also drifts: a random walk of ``hidden_drift_px`` per hidden
    frame (a tracker guesses from the point's neighbours there and its error grows the longer the
    point stays out of sight; back in sight, it locks on again). Frame 0 holds the queries and stays
    exact."""
    rng = np.random.default_rng(seed)
    t = np.array(tracks, dtype=np.float32, copy=True)
    vis = np.array(visibility, dtype=bool, copy=True)
    hidden = ~vis[:, 1:]  # the true visibility, before the flags are flipped
    later = t[:, 1:]
    later += rng.normal(0.0, sigma_px, later.shape).astype(np.float32)
    out = rng.random(later.shape[:3]) < outlier_frac
    later[out] += rng.uniform(-outlier_px, outlier_px, (int(out.sum()), 2)).astype(np.float32)
    flip = rng.random(vis[:, 1:].shape) < flip_frac
    vis[:, 1:] ^= flip
    if hidden_drift_px > 0:
        steps = rng.normal(0.0, hidden_drift_px, later.shape)
        drift = np.zeros_like(steps[:, 0])  # [V, Q, 2]
        for f in range(later.shape[1]):  # grows while hidden, back to 0 once seen
            drift = np.where(hidden[:, f, :, None], drift + steps[:, f], 0.0)
            later[:, f] += drift.astype(np.float32)
    return t, vis


def track_videos(videos: np.ndarray, tracker: str, grid: int, background: tuple[float, ...] = (1.0, 1.0, 1.0),
                 device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Track a ``grid`` x ``grid`` query grid on frame 0's object mask through every view of
    ``videos`` [V, F, H, W, 4] (straight alpha) with tracker ``tracker`` (``tracking.make_tracker``).
    Returns (tracks [V, F, Q, 2], visibility [V, F, Q]); grid points off the mask are never visible.

    Missing weights are a ``JobError`` naming the download: the job asked for tracks explicitly, so
    fitting without them silently would not be what was asked for."""
    from ..tracking import grid_queries, make_tracker

    try:
        trk = make_tracker(tracker, device=device)
    except (FileNotFoundError, ImportError) as exc:
        raise JobError("missing_weights", f"stage2.tracker {tracker!r} cannot load: {exc}",
                       "Run `huggingface-cli download facebook/cotracker3 scaled_offline.pth` (CC-BY-NC 4.0), "
                       "or set \"tracker\": \"none\" in job.json's stage2.") from exc
    vids = np.asarray(videos, dtype=np.float32)
    alpha = vids[..., 3:4]
    rgb = vids[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    queries, valid = grid_queries(vids[:, 0, ..., 3], grid)
    result = trk.track(rgb, queries)
    return result.tracks, result.visibility & valid[:, None, :]
