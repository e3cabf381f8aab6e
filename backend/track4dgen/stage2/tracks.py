"""2D point tracks of the input videos as a Stage Two motion target (``losses.track_loss``).

Why: the image loss only pulls a Gaussian toward targets its footprint overlaps, so a part that
moves several of its own widths per frame (a thin limb, a spinning blade) gets no gradient toward
where it went. A point track says where the surface under a pixel of frame 0 is in every later
frame, however far it moved: the long-range correspondence this project is named after.

Tracks ``[V, F, Q, 2]`` (pixels, (0, 0) = top-left *corner*, like ``synthetic.tracks`` and the
``tracking`` package) and ``visibility`` ``[V, F, Q]`` of Q query points placed on frame 0 of
each view. Each Gaussian visible in view v at frame 0 (a depth-buffer test against the mesh,
``diffusion_features.mesh_visibility``) is tied once, before training, to the ``k`` query points
nearest its frame-0 projection within ``radius`` px, with inverse-distance weights. Its target
displacement at frame t is the weighted mean of those tracks' displacements ``track(t) - track(0)``
over the neighbours visible at t; a (view, frame, Gaussian) with no visible neighbour is not used.

File ``tracks.npz`` in a job folder (given videos): ``tracks`` float [V, F, Q, 2] in pixels of the
job's video resolution, ``visibility`` bool [V, F, Q]; Q may differ per job, frame 0 holds the
queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..job import JobError


@dataclass
class TrackTargets:
    """Per (view, frame, Gaussian) target displacements of the frame-0 projection, in pixels of
    the training resolution, and where they are defined."""

    displacement: torch.Tensor  # [V, F, N, 2]
    valid: torch.Tensor  # [V, F, N] bool

    def to(self, device: torch.device) -> "TrackTargets":
        return TrackTargets(self.displacement.to(device), self.valid.to(device))


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


def associate_tracks(
    p0: torch.Tensor,
    visible0: torch.Tensor,
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    k: int = 3,
    radius: float = 3.0,
) -> TrackTargets:
    """Tie each Gaussian to the tracks around its frame-0 projection (module docstring).

    ``p0`` [V, N, 2] frame-0 projections, ``visible0`` [V, N] bool, ``tracks`` [V, F, Q, 2] and
    ``visibility`` [V, F, Q] in the same pixels; ``radius`` in those pixels."""
    nv, nf, nq, _ = tracks.shape
    disp = torch.zeros(nv, nf, p0.shape[1], 2)
    valid = torch.zeros(nv, nf, p0.shape[1], dtype=torch.bool)
    for v in range(nv):
        queries = torch.nonzero(visibility[v, 0]).flatten()  # a query is placed where it is seen
        if len(queries) == 0:
            continue
        dist = torch.cdist(p0[v].float(), tracks[v, 0, queries].float())  # [N, Q']
        kk = min(k, len(queries))
        d, j = dist.topk(kk, dim=1, largest=False)
        near = (d <= radius) & visible0[v][:, None]
        w = near.float() / (d + 0.5)  # inverse distance, softened so a query on the point does not dominate alone
        q = queries[j]  # [N, kk]
        moved = tracks[v][:, q] - tracks[v, 0][q][None]  # [F, N, kk, 2]
        wt = w[None] * visibility[v][:, q].float()  # [F, N, kk]: neighbours seen at t
        total = wt.sum(-1)
        disp[v] = (moved * wt[..., None]).sum(-2) / total.clamp_min(1e-12)[..., None]
        valid[v] = total > 0
    return TrackTargets(disp, valid)


def noisy_tracks(tracks: np.ndarray, visibility: np.ndarray, sigma_px: float = 1.0, outlier_frac: float = 0.05,
                 outlier_px: float = 8.0, flip_frac: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact tracks degraded like a real tracker's: Gaussian jitter of ``sigma_px`` on every frame
    after 0, a fraction ``outlier_frac`` of (view, frame, point) entries off by a uniform offset of up
    to ``outlier_px`` in each axis, and ``flip_frac`` of the visibility flags after frame 0 flipped.
    Frame 0 holds the queries and stays exact."""
    rng = np.random.default_rng(seed)
    t = np.array(tracks, dtype=np.float32, copy=True)
    vis = np.array(visibility, dtype=bool, copy=True)
    later = t[:, 1:]
    later += rng.normal(0.0, sigma_px, later.shape).astype(np.float32)
    out = rng.random(later.shape[:3]) < outlier_frac
    later[out] += rng.uniform(-outlier_px, outlier_px, (int(out.sum()), 2)).astype(np.float32)
    flip = rng.random(vis[:, 1:].shape) < flip_frac
    vis[:, 1:] ^= flip
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
