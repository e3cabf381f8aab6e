"""Motion gate: Gaussians that no view ever sees change stay exactly still (beyond the paper).

Why: the deformation field is free at every frame but frame 0, and the image loss only pins it
where the images change. Elsewhere it drifts: a splat representation fits a silhouette best with
its centres a fraction of a pixel inside the surface, so the field shrinks static parts by that
much at every frame after the first, and sliding along a plain surface costs nothing. On a
dragon that flaps its wings the body then "breathes". The videos themselves say which parts
move: a Gaussian whose projection stays on unchanged pixels in every view, over the whole clip,
has no evidence of motion, so its deformation is gated to zero.

``gate_i = ramp(min over the views that see x_i of change_v(project_v(x_i)))`` where
``change_v`` is the largest per-pixel difference of view v from its frame 0 over all frames
(composited RGB and alpha), dilated by a few pixels so parts next to a moving one are left free.
The ramp goes from 0 below ``lo`` to 1 above ``hi``. "Sees" is the mesh ray-cast visibility at
frame 0 (a point on the back of the body must not read the change of a limb in front of it).

Why the minimum over views: one view that sees the point and never changes there is evidence it
stays still, while a change in another view may be a moving part passing in front of it (a tail
sweeping across the back in the rear view). Measured on the synthetic set at 64 px, the maximum
left 430 of 2859 still Gaussians free on tail_wag and 350 of 2649 on waving_arm, the minimum 86
and 152; neither gates a single Gaussian that moves more than 0.5 % of the diagonal. A Gaussian
projecting outside an image stays free; one that no view sees (under a belly, between legs)
takes the largest gate of its nearest seen neighbours, since it moves with what is around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .diffusion_features import project_to_pixels
from .losses import composite


def change_maps(images: torch.Tensor, background: torch.Tensor, dilate_px: int = 1) -> torch.Tensor:
    """``[V, H, W]``: per pixel, the largest change from frame 0 over frames and channels.

    ``images`` is ``[V, F, H, W, 4]`` straight-alpha RGBA in [0, 1].
    """
    rgb = composite(images, background)  # [V, F, H, W, 3]
    seen = torch.cat([rgb, images[..., 3:4]], dim=-1)
    change = (seen - seen[:, :1]).abs().amax(dim=(1, 4))  # [V, H, W]
    if dilate_px > 0:
        k = 2 * int(dilate_px) + 1
        change = F.max_pool2d(change[:, None], k, stride=1, padding=int(dilate_px))[:, 0]
    return change


def motion_gate(
    points: torch.Tensor,
    change: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    lo: float = 0.02,
    hi: float = 0.08,
    visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N]`` in [0, 1]: 0 where a view that sees the point shows no change there, 1 where
    every view that sees it does. ``visible`` ``[V, N]`` bool (default: every view sees every point)."""
    if not 0.0 <= lo < hi:
        raise ValueError(f"motion gate range must satisfy 0 <= lo < hi, got [{lo}, {hi}]")
    V, H, W = change.shape
    u, v, z = project_to_pixels(points, Ks, viewmats)
    col, row = torch.floor(u).long(), torch.floor(v).long()
    inside = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    flat = (row.clamp(0, H - 1) * W + col.clamp(0, W - 1))  # [V, N]
    seen = torch.gather(change.reshape(V, H * W), 1, flat)
    seen = torch.where(inside, seen, torch.ones_like(seen))  # outside an image: no evidence, keep free
    if visible is None:
        return ((seen.amin(0) - lo) / (hi - lo)).clamp(0.0, 1.0)
    seen = torch.where(visible, seen, torch.full_like(seen, hi))  # a hidden view has no say
    gate = ((seen.amin(0) - lo) / (hi - lo)).clamp(0.0, 1.0)
    return _fill_unseen(points, gate, visible.any(0))


def _fill_unseen(points: torch.Tensor, gate: torch.Tensor, seen: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Gaussians no view sees take the largest gate of their k nearest seen ones (1 if none is seen)."""
    if bool(seen.all()):
        return gate
    if not bool(seen.any()):
        return torch.ones_like(gate)
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().double().numpy()
    seen_idx = seen.nonzero().squeeze(1).cpu()
    unseen_idx = (~seen).nonzero().squeeze(1).cpu()
    _, nn = cKDTree(pts[seen_idx.numpy()]).query(pts[unseen_idx.numpy()], k=min(k, len(seen_idx)))
    nn = torch.as_tensor(nn, dtype=torch.long).reshape(len(unseen_idx), -1)
    out = gate.clone()
    out[unseen_idx.to(gate.device)] = gate[seen_idx.to(gate.device)[nn.to(gate.device)]].amax(1)
    return out
