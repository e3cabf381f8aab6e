"""Gaussian rasterizer: one signature, two backends.

``rasterize`` renders 3D Gaussians into C cameras with the semantics of gsplat 1.5.3's
``rasterization`` (RGB, "classic" or "antialiased", eps2d 0.3, near plane 0.01, pixel centres at +0.5). On CUDA
tensors with gsplat installed it calls gsplat; everywhere else it uses our pure-PyTorch
differentiable rasterizer (``torch_cpu``), so training code never branches on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gsplat import INSTALL_HINT, gsplat_available, rasterize_gsplat
from .inputs import check_inputs
from .torch_cpu import RASTERIZE_MODES, rasterize_torch

__all__ = ["rasterize", "select_backend", "BACKENDS", "RASTERIZE_MODES"]

BACKENDS = ("auto", "torch", "gsplat")


def select_backend(device: torch.device, backend: str = "auto") -> str:
    """Resolve ``backend`` to "torch" or "gsplat" for tensors on ``device``.

    "auto" picks gsplat only when it can run (CUDA tensors and gsplat importable); asking for
    gsplat explicitly where it cannot run is an error rather than a silent slow fallback.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; use one of {BACKENDS}")
    on_cuda = device.type == "cuda"
    if backend == "auto":
        return "gsplat" if on_cuda and gsplat_available() else "torch"
    if backend == "gsplat":
        if not on_cuda:
            raise RuntimeError(
                "rasterizer backend 'gsplat' needs CUDA tensors, got tensors on "
                f"{device}; move the scene to a CUDA device or use backend='torch'"
            )
        if not gsplat_available():
            raise RuntimeError(
                f"rasterizer backend 'gsplat' requested but gsplat is not importable; "
                f"install it with `{INSTALL_HINT}` or use backend='torch'"
            )
    return backend


def rasterize(
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
    backend: str = "auto",
    rasterize_mode: str = "classic",
) -> tuple[Tensor, Tensor]:
    """Render Gaussians into C cameras.

    Args:
        means: [N, 3] world-space centres.
        quats: [N, 4] rotations, wxyz, any norm (normalised inside).
        scales: [N, 3] linear standard deviations (exp of log-scales).
        opacities: [N] in [0, 1].
        colors: [N, D] or per-camera [C, N, D] (e.g. SH evaluated per view).
        viewmats: [C, 4, 4] OpenCV world->camera.
        Ks: [C, 3, 3] pixel intrinsics; pixel (0, 0) is the top-left corner of the image.
        width, height: image size in pixels.
        backgrounds: [C, D] composited behind the Gaussians, or None (black).
        backend: "auto" (gsplat on CUDA when installed, else torch), "torch" or "gsplat".
        rasterize_mode: "classic" or "antialiased" (opacity compensated for the eps2d low-pass,
            see ``torch_cpu._camera_opacities``).

    Returns:
        (colors [C, H, W, D], alphas [C, H, W, 1]), differentiable w.r.t. every float input
        except Ks.
    """
    # validate before choosing a backend, so a shape error wins over a backend/device error
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}; use one of {RASTERIZE_MODES}")
    render = rasterize_gsplat if select_backend(means.device, backend) == "gsplat" else rasterize_torch
    return render(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height), backgrounds,
        rasterize_mode=rasterize_mode,
    )
