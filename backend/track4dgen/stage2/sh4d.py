"""4D spherical harmonics: view- and time-dependent colour (paper §3.3).

Every SH coefficient is a short cosine series in time,
``k_l^m(t) = sum_{i<W} fr_i * cos(i * pi * tau)``, with ``tau = frame / (frames - 1)`` in [0, 1]
(the paper's ``t / N_t``; we normalise by ``frames - 1`` so the first and last frame are the ends
of the basis' half period and the series is the DCT-II family on the frame grid). With ``W = 1``
the series is the constant ``fr_0`` and 4D SH is exactly static 3DGS SH.

Stored layout (and ``gaussians4d.npz``'s ``sh4d``): ``[N, (L+1)^2, 3, W]``. Colour follows 3DGS:
``rgb = max(sum_k Y_k(dir) * k(t) + 0.5, 0)`` with ``dir`` the unit vector camera -> Gaussian.
"""

from __future__ import annotations

import math

import torch

# Real SH normalisation constants as used by 3DGS / gsplat (degree <= 3).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_coeffs(degree: int) -> int:
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    return (degree + 1) ** 2


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """The DC coefficient that reproduces ``rgb`` (3DGS's RGB2SH)."""
    return (rgb - 0.5) / SH_C0


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH basis values for unit directions ``[..., 3]`` -> ``[..., (degree+1)^2]`` (3DGS order)."""
    num_sh_coeffs(degree)
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
        if degree >= 2:
            xx, yy, zz = x * x, y * y, z * z
            xy, yz, xz = x * y, y * z, x * z
            out += [
                SH_C2[0] * xy,
                SH_C2[1] * yz,
                SH_C2[2] * (2.0 * zz - xx - yy),
                SH_C2[3] * xz,
                SH_C2[4] * (xx - yy),
            ]
            if degree >= 3:
                out += [
                    SH_C3[0] * y * (3.0 * xx - yy),
                    SH_C3[1] * xy * z,
                    SH_C3[2] * y * (4.0 * zz - xx - yy),
                    SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                    SH_C3[4] * x * (4.0 * zz - xx - yy),
                    SH_C3[5] * z * (xx - yy),
                    SH_C3[6] * x * (xx - 3.0 * yy),
                ]
    return torch.stack(out, dim=-1)


def time_basis(tau: float | torch.Tensor, num_basis: int) -> torch.Tensor:
    """Cosine basis ``[cos(i*pi*tau) for i < W]``; ``tau`` scalar or ``[T]`` -> ``[W]`` or ``[T, W]``."""
    tau_t = torch.as_tensor(tau, dtype=torch.float32)
    i = torch.arange(num_basis, dtype=torch.float32, device=tau_t.device)
    return torch.cos(math.pi * tau_t[..., None] * i)


def coeffs_at(sh4d: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """SH coefficients at normalised time ``tau``: ``[N, K, 3, W]`` -> ``[N, K, 3]``."""
    basis = time_basis(tau, sh4d.shape[-1]).to(sh4d)
    return sh4d @ basis


def degree_from_count(k: int) -> int:
    """SH degree L from the coefficient count (L+1)^2."""
    degree = int(round(math.sqrt(k))) - 1
    if (degree + 1) ** 2 != k:
        raise ValueError(f"SH coefficient count {k} is not a square")
    return degree


def eval_rgb(coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour from SH coefficients ``[N, K, 3]`` toward unit ``dirs`` ``[..., N, 3]`` -> ``[..., N, 3]``.

    Adds 3DGS's +0.5 offset and clamps at 0 (colours above 1 are left to the compositor, as in 3DGS).
    """
    basis = sh_basis(dirs, degree_from_count(coeffs.shape[-2]))
    rgb = (basis[..., None] * coeffs).sum(-2) + 0.5
    return rgb.clamp_min(0.0)


def view_dirs(means: torch.Tensor, cam_centers: torch.Tensor) -> torch.Tensor:
    """Unit directions camera -> Gaussian: means ``[N, 3]``, centres ``[C, 3]`` -> ``[C, N, 3]``."""
    d = means[None, :, :] - cam_centers[:, None, :]
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
