"""Stage Two losses: masked reconstruction, ARAP rigidity, and the 4D-SDS hook (paper §3.3).

L = w_rec * L_rec + w_sds * L_sds + w_arap * L_arap (defaults 100 / 0.01 / 10), plus
w_track * L_track when the videos come with 2D point tracks (``track_loss``, stage2/tracks.py).
"""

from __future__ import annotations

from typing import Callable

import math

import torch
import torch.nn.functional as F

from .diffusion_features import project_to_pixels
from .tracks import ViewTracks


SdsFn = Callable[..., torch.Tensor]  # sds_fn(renders [V,F,3,H,W], cameras=None) -> scalar


def composite(rgba: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Straight-alpha RGBA ``[..., 4]`` over a background ``[3]`` -> RGB ``[..., 3]``."""
    a = rgba[..., 3:4]
    return rgba[..., :3] * a + background * (1.0 - a)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` (edges replicated, so the background stays)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _blurred_l2(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """L2 between ``[B,H,W,C]`` images blurred by ``sigma`` px (sampled every ``sigma`` px)."""
    step = max(1, int(sigma))
    ba = gaussian_blur(a.permute(0, 3, 1, 2), sigma)[..., ::step, ::step]
    bb = gaussian_blur(b.permute(0, 3, 1, 2), sigma)[..., ::step, ::step]
    return (ba - bb).pow(2).mean()


def reconstruction_loss(
    render_rgb: torch.Tensor,
    render_alpha: torch.Tensor,
    target_rgba: torch.Tensor,
    background: torch.Tensor,
    pyramid_levels: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked L2: RGB (both composited on the job's background) + alpha vs the object mask.

    ``render_rgb`` [B,H,W,3] is the rasterizer's output already composited on ``background``;
    ``render_alpha`` [B,H,W,1]; ``target_rgba`` [B,H,W,4] straight alpha.

    ``pyramid_levels`` > 0 adds the same L2 on images blurred by sigma = 1, 2, 4, ... px. Why: a part that
    moved farther than its own width (a waving arm) no longer overlaps its target at full
    resolution, so the per-pixel loss has no gradient pulling it there; blurred comparisons
    still overlap and give the deformation field a long-range signal. At the optimum every
    level is zero too, so the extra terms do not bias the fit.
    """
    target_rgb = composite(target_rgba, background)
    l_rgb = (render_rgb - target_rgb).pow(2).mean()
    l_mask = (render_alpha[..., 0] - target_rgba[..., 3]).pow(2).mean()
    loss = l_rgb + l_mask
    if pyramid_levels > 0:
        rend = torch.cat([render_rgb, render_alpha], dim=-1)
        targ = torch.cat([target_rgb, target_rgba[..., 3:4]], dim=-1)
        for level in range(pyramid_levels):
            sigma = float(2**level)
            if 2 * sigma > min(rend.shape[1], rend.shape[2]):
                break
            loss = loss + _blurred_l2(rend, targ, sigma) * 4.0 / 3.0  # 4 channels vs the rgb + mask terms
    return loss, {"rec_rgb": float(l_rgb.detach()), "rec_mask": float(l_mask.detach())}


def knn_indices(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[N, k]`` of each point's k nearest other points (canonical neighbourhoods)."""
    from .gaussians import knn_distances

    _, idx = knn_distances(points.detach().cpu().numpy(), k)
    return torch.from_numpy(idx).to(points.device)


def best_fit_rotations(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Per-node rotations ``[S, 3, 3]`` minimising sum_j |dst_j - R src_j|^2 over edge sets
    ``[S, k, 3]`` (Kabsch: R = V diag(1, 1, det) U^T from the SVD of sum_j src_j dst_j^T)."""
    cov = src.transpose(1, 2) @ dst  # [S, 3, 3]
    u, _, vh = torch.linalg.svd(cov)
    v = vh.transpose(1, 2)
    d = torch.det(v @ u.transpose(1, 2))
    fix = torch.ones(len(cov), 3, dtype=cov.dtype, device=cov.device)
    fix[:, 2] = torch.where(d < 0, -1.0, 1.0)
    return v @ torch.diag_embed(fix) @ u.transpose(1, 2)


def arap_loss(
    canon_means: torch.Tensor,
    means_t: torch.Tensor,
    neighbours: torch.Tensor,
    samples: torch.Tensor | None = None,
    relative: bool = True,
    dq_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """As-rigid-as-possible energy on the canonical k-NN graph, canonical -> frame t (SC-GS's
    form, which Animate3D uses): for each sampled node i with its best-fit rotation R_i (no
    gradient), the mean of |(x_i^t - x_j^t) - R_i (x_i - x_j)|^2 over its neighbours j. Zero for
    any motion that is locally rigid (a bending tail, a turning arm); positive when neighbours'
    displacements disagree with one rotation (stretch, shear, smear).

    ``relative`` divides by the squared mean canonical neighbour distance, a dimensionless strain:
    the same weight then means the same rigidity whatever the object's size or Gaussian count.
    ``dq_t`` (rotation deltas canonical -> t) adds ``1 - |<dq_i, dq_j>|``: neighbours turn their
    Gaussians by the same rotation. ``samples`` picks the nodes used (Animate3D: 512 per step).
    """
    idx = samples if samples is not None else torch.arange(canon_means.shape[0], device=canon_means.device)
    nb = neighbours[idx]  # [S, k]
    e0 = canon_means[idx][:, None, :] - canon_means[nb]  # [S, k, 3]
    et = means_t[idx][:, None, :] - means_t[nb]
    with torch.no_grad():
        rot = best_fit_rotations(e0.detach().double(), et.detach().double()).to(e0.dtype)
    residual = et - e0 @ rot.transpose(1, 2)
    loss = residual.pow(2).sum(-1).mean()
    if relative:
        loss = loss / e0.detach().norm(dim=-1).mean().pow(2).clamp_min(1e-24)
    if dq_t is not None:
        dot = (dq_t[idx][:, None, :] * dq_t[nb]).sum(-1).abs().clamp_max(1.0)
        loss = loss + (1.0 - dot).mean()
    return loss


def track_loss(
    surface_t: torch.Tensor,
    canonical: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    targets: ViewTracks,
    size: tuple[int, int],
    eps: float = 0.01,
    deadzone_px: float = 0.0,
) -> torch.Tensor:
    """Robust 2D-track term of one frame in C views: the mean over views (with any target) of the
    weighted mean Charbonnier penalty ``sqrt(|r|^2 + eps^2) - eps`` on the residual
    ``r = (proj(x_q(t)) - proj(x_q)) - displacement_q`` of each tracked point q, in pixels divided
    by the longer image side (``eps`` 0.01 = 0.64 px at 64 px: quadratic below, L1-like and
    outlier-tolerant above).

    ``surface_t`` [N, 3] the Gaussians' tracked surface points at t, ``canonical`` [N, 3] in the
    canonical pose; ``viewmats`` [C, 4, 4], ``Ks`` [C, 3, 3]; ``targets`` from
    ``TrackTargets.at`` (the points x_q ride on their Gaussians, ``ViewTracks.carried``). A view's
    mean is over its points with a target, so a weight below 1 lowers their say. ``deadzone_px`` > 0
    leaves residuals up to that many pixels unpenalised (the track warm-up: tracker noise on still
    parts must not move them; the image terms settle what is left)."""
    u, v, _ = project_to_pixels(targets.carried(surface_t, canonical), Ks, viewmats)  # [C, Q] each
    with torch.no_grad():
        u0, v0, _ = project_to_pixels(targets.points, Ks, viewmats)
    r = (torch.stack([u - u0, v - v0], dim=-1) - targets.displacement) / float(max(size))
    pen = (r.pow(2).sum(-1) + eps * eps).sqrt() - eps  # [C, Q]
    if deadzone_px > 0:
        pen = torch.relu(pen - deadzone_px / float(max(size)))
    w = targets.weight.float()
    count = (w > 0).float().sum(-1)
    per_view = (pen * w).sum(-1) / count.clamp_min(1.0)
    used = count > 0
    if not bool(used.any()):
        return surface_t.sum() * 0.0
    return per_view[used].mean()


def sds_loss(sds_fn: SdsFn | None, renders: torch.Tensor, cameras=None) -> torch.Tensor | None:
    """The 4D-SDS hook: ``sds_fn(renders [V,F,3,H,W] in [0,1], cameras) -> scalar``; None when off.
    ``cameras``: the V world->camera matrices the renders were made from (None = the job's)."""
    if sds_fn is None:
        return None
    loss = sds_fn(renders) if cameras is None else sds_fn(renders, cameras)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError("sds_fn must return a scalar torch tensor")
    return loss
