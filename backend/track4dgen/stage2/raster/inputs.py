"""Validation of the rasterizer's arguments, shared by every entry point.

``rasterize`` (the dispatcher), ``rasterize_torch``, ``rasterize_gsplat`` and the float64
``render_reference`` all take the same leading arguments, documented once in
:func:`track4dgen.stage2.raster.rasterize`. They are checked once, here, so a wrong shape gets
the same clear message whichever entry point a caller used (tests and benchmarks call the
backends directly).
"""

from __future__ import annotations

from torch import Tensor


def check_inputs(
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
    """Shape/device checks with messages that name the argument and the expected shape.

    Raises ValueError. Cheap (shape and device attributes only, no device sync), so every
    backend can call it on entry even when ``rasterize`` already did.
    """

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
