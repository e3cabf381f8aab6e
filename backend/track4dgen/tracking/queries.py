"""Query points for the tracking losses (paper §3.2): a 15x15 grid per view on the clip's first
frame, kept where the object mask is on, and 8 of them drawn per view at every training step.

Why a fixed grid: tracks are computed once per clip and cached, so the candidate queries must not
change between epochs; only the per-step subset is random.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

GRID_SIZE = 15
POINTS_PER_VIEW = 8


def grid_points(height: int, width: int, n: int = GRID_SIZE) -> np.ndarray:
    """[n*n, 2] (x, y) pixel positions, cell centres of an n x n partition of the image, row-major."""
    xs = (np.arange(n) + 0.5) * (width / n)
    ys = (np.arange(n) + 0.5) * (height / n)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return np.stack([gx, gy], axis=-1).reshape(-1, 2).astype(np.float32)


def inside_mask(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[..., P] bool: whether each point's pixel is on in ``mask`` [H, W] (points outside -> False)."""
    H, W = mask.shape[-2:]
    ix = np.floor(points[..., 0]).astype(np.int64)
    iy = np.floor(points[..., 1]).astype(np.int64)
    ok = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    out = np.zeros(points.shape[:-1], dtype=bool)
    out[ok] = mask[iy[ok], ix[ok]] > 0.5
    return out


def grid_queries(masks: np.ndarray, n: int = GRID_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """masks [V, H, W] of the query frame -> (queries [V, n*n, 2], valid [V, n*n] bool)."""
    V, H, W = masks.shape
    pts = grid_points(H, W, n)
    queries = np.broadcast_to(pts, (V, *pts.shape)).copy()
    valid = np.stack([inside_mask(pts, masks[v]) for v in range(V)])
    return queries, valid


def sample_query_indices(
    valid: torch.Tensor, k: int = POINTS_PER_VIEW, generator: Optional[torch.Generator] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """valid [..., P] bool -> (indices [..., k] long, weight [..., k] float).

    Draws k distinct valid points per view (with replacement only when fewer than k are valid).
    Views with no valid point get weight 0 so they drop out of the losses instead of crashing.
    """
    flat = valid.reshape(-1, valid.shape[-1])
    idx = torch.zeros(flat.shape[0], k, dtype=torch.long)
    w = torch.zeros(flat.shape[0], k)
    for i, row in enumerate(flat):
        cand = torch.nonzero(row, as_tuple=False).flatten()
        if len(cand) == 0:
            continue
        if len(cand) >= k:
            pick = cand[torch.randperm(len(cand), generator=generator)[:k]]
        else:
            pick = cand[torch.randint(len(cand), (k,), generator=generator)]
        idx[i] = pick
        w[i] = 1.0
    return idx.reshape(*valid.shape[:-1], k), w.reshape(*valid.shape[:-1], k)
