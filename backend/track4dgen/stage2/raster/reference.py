"""Brute-force float64 reference rasterizer, used by the tests to check the fast backends.

Written to be obviously right rather than fast: every Gaussian is projected on its own with
explicit 2x3 / 3x3 matrices, its alpha is evaluated densely at every pixel centre (no tiles, no
bounding boxes), and Gaussians are composited one at a time in depth order with a per-pixel
"done" flag, exactly like gsplat's per-pixel CUDA loop. It is differentiable by autograd (in
float64) so gradients of the fast backend can be compared against it.

Same math as gsplat 1.5.3 RGB ("classic", or "antialiased": opacity times
sqrt(det(cov2d) / det(cov2d + eps2d I))): eps2d low-pass, near/far cull, Jacobian clamp at 1.3x
the frustum, alpha = min(0.999, o exp(-sigma)), skip sigma < 0 or alpha < 1/255, stop before the
Gaussian that would bring transmittance to <= 1e-4.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .inputs import check_inputs


def _rotation(q: Tensor) -> Tensor:
    q = q / torch.sqrt((q * q).sum())
    w, x, y, z = q[0], q[1], q[2], q[3]
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )


def render_reference(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    rasterize_mode: str = "classic",
) -> tuple[Tensor, Tensor]:
    """Same signature and outputs as ``rasterize``; computes in float64."""
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)
    f64 = torch.float64
    means, quats, scales = means.to(f64), quats.to(f64), scales.to(f64)
    opacities, colors = opacities.to(f64), colors.to(f64)
    viewmats, Ks = viewmats.to(f64), Ks.to(f64)
    C, N, D = viewmats.shape[0], means.shape[0], colors.shape[-1]
    jj, ii = torch.meshgrid(
        torch.arange(width, dtype=f64), torch.arange(height, dtype=f64), indexing="xy"
    )
    px, py = jj + 0.5, ii + 0.5  # [H, W] pixel centres
    out_colors, out_alphas = [], []
    for c in range(C):
        Rw, tw = viewmats[c, :3, :3], viewmats[c, :3, 3]
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        splats = []  # (depth, mean2d, conic, opacity, colour)
        for n in range(N):
            p = Rw @ means[n] + tw
            z = p[2]
            if not (near_plane <= float(z.detach()) <= far_plane):
                continue
            Rq = _rotation(quats[n])
            M = Rq @ torch.diag(scales[n])
            cov_cam = Rw @ (M @ M.T) @ Rw.T
            lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
            lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
            lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
            lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
            tx = z * torch.clamp(p[0] / z, min=-lim_x_neg, max=lim_x_pos)
            ty = z * torch.clamp(p[1] / z, min=-lim_y_neg, max=lim_y_pos)
            zero = torch.zeros((), dtype=f64)
            J = torch.stack(
                [
                    torch.stack([fx / z, zero, -fx * tx / (z * z)]),
                    torch.stack([zero, fy / z, -fy * ty / (z * z)]),
                ]
            )
            cov2_exact = J @ cov_cam @ J.T
            cov2 = cov2_exact + eps2d * torch.eye(2, dtype=f64)
            if float(torch.linalg.det(cov2.detach())) <= 0:
                continue
            opac = opacities[n]
            if rasterize_mode == "antialiased":
                ratio = torch.linalg.det(cov2_exact) / torch.linalg.det(cov2)
                opac = opac * torch.sqrt(torch.clamp(ratio, min=1e-12))
            elif rasterize_mode != "classic":
                raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
            conic = torch.linalg.inv(cov2)
            mean2 = torch.stack([fx * p[0] / z + cx, fy * p[1] / z + cy])
            col = colors[c, n] if colors.dim() == 3 else colors[n]
            splats.append((float(z.detach()), mean2, conic, opac, col))
        splats.sort(key=lambda s: s[0])  # front to back (stable for equal depths)

        T = torch.ones(height, width, dtype=f64)
        done = torch.zeros(height, width, dtype=torch.bool)
        img = torch.zeros(height, width, D, dtype=f64)
        for _, mean2, conic, opac, col in splats:
            dx, dy = mean2[0] - px, mean2[1] - py
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            alpha = torch.clamp(opac * torch.exp(-sigma), max=0.999)
            hit = (sigma >= 0) & (alpha >= 1.0 / 255.0) & ~done
            next_T = T * (1 - alpha)
            saturate = hit & (next_T <= 1e-4)
            done = done | saturate
            hit = hit & ~saturate
            img = img + torch.where(hit, alpha * T, torch.zeros_like(T))[..., None] * col
            T = torch.where(hit, next_T, T)
        if backgrounds is not None:
            img = img + T[..., None] * backgrounds[c].to(f64)
        out_colors.append(img)
        out_alphas.append((1 - T)[..., None])
    return torch.stack(out_colors), torch.stack(out_alphas)
