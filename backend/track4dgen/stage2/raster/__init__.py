"""Gaussian rasterizer: one signature, two backends.

``rasterize`` renders 3D Gaussians into C cameras with the semantics of gsplat 1.5.3's
``rasterization`` (RGB, "classic", eps2d 0.3, near plane 0.01, pixel centres at +0.5). On CUDA
tensors with gsplat installed it calls gsplat; everywhere else it uses our pure-PyTorch
differentiable rasterizer (``torch_cpu``), so training code never branches on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gsplat import INSTALL_HINT, gsplat_available, rasterize_gsplat
from .torch_cpu import rasterize_torch

__all__ = ["rasterize", "select_backend", "BACKENDS"]

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


def _check_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None,
) -> None:
    """Shape/device checks with messages that name the argument and the expected shape."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(msg)

    need(means.dim() == 2 and means.shape[1] == 3, f"means must be [N, 3], got {tuple(means.shape)}")
    N = means.shape[0]
    need(tuple(quats.shape) == (N, 4), f"quats must be [N, 4] = [{N}, 4] (wxyz), got {tuple(quats.shape)}")
    need(tuple(scales.shape) == (N, 3),
         f"scales must be [N, 3] = [{N}, 3] (linear, not log), got {tuple(scales.shape)}")
    need(tuple(opacities.shape) == (N,),
         f"opacities must be [N] = [{N}] (0..1, after sigmoid), got {tuple(opacities.shape)}")
    need(viewmats.dim() == 3 and viewmats.shape[1:] == (4, 4),
         f"viewmats must be [C, 4, 4] world->camera, got {tuple(viewmats.shape)}")
    C = viewmats.shape[0]
    need(tuple(Ks.shape) == (C, 3, 3), f"Ks must be [C, 3, 3] = [{C}, 3, 3], got {tuple(Ks.shape)}")
    need(
        (colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N)),
        f"colors must be [N, D] or [C, N, D] with N={N}, C={C}, got {tuple(colors.shape)}",
    )
    D = colors.shape[-1]
    if backgrounds is not None:
        need(tuple(backgrounds.shape) == (C, D),
             f"backgrounds must be [C, D] = [{C}, {D}] or None, got {tuple(backgrounds.shape)}")
    need(int(width) > 0 and int(height) > 0, f"width and height must be positive, got {width}x{height}")
    tensors = [means, quats, scales, opacities, colors, viewmats, Ks]
    if backgrounds is not None:
        tensors.append(backgrounds)
    devices = {t.device for t in tensors}
    need(len(devices) == 1, f"all rasterizer inputs must be on one device, got {sorted(map(str, devices))}")
    need(all(t.is_floating_point() for t in tensors), "all rasterizer inputs must be floating point tensors")


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

    Returns:
        (colors [C, H, W, D], alphas [C, H, W, 1]), differentiable w.r.t. every float input
        except Ks.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)
    chosen = select_backend(means.device, backend)
    if chosen == "gsplat":
        return rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height), backgrounds
        )
    return rasterize_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height), backgrounds
    )
