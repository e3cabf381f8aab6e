"""CUDA backend: a thin wrapper around ``gsplat.rasterization`` (gsplat 1.5.3).

The arguments pin gsplat to exactly the semantics our CPU rasterizer reproduces (RGB,
"classic" or "antialiased" mode, eps2d 0.3, near 0.01, far 1e10, no radius clip), so a scene renders the same
on either backend. ``packed=True`` keeps memory proportional to visible (camera, Gaussian) pairs.
"""

from __future__ import annotations

from torch import Tensor

from .inputs import check_inputs
from .torch_cpu import EPS2D, FAR_PLANE, NEAR_PLANE

INSTALL_HINT = "pip install gsplat==1.5.3"


def gsplat_available() -> bool:
    """True when gsplat can be imported (its CUDA kernels are compiled lazily on first use)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA toolchain raising at import time
        return False
    return True


def rasterize_gsplat(
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
    rasterize_mode: str = "classic",
) -> tuple[Tensor, Tensor]:
    """Render with gsplat; arguments and outputs as :func:`track4dgen.stage2.raster.rasterize`."""
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)
    from gsplat import rasterization

    dtype = means.dtype

    def f32(t: Tensor) -> Tensor:  # gsplat's rasterization kernels are float32 only
        return t.float().contiguous()

    render_colors, render_alphas, _meta = rasterization(
        means=f32(means),
        quats=f32(quats),
        scales=f32(scales),
        opacities=f32(opacities),
        colors=f32(colors),
        viewmats=f32(viewmats),
        Ks=f32(Ks),
        width=int(width),
        height=int(height),
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        radius_clip=0.0,
        eps2d=EPS2D,
        sh_degree=None,
        packed=True,
        backgrounds=None if backgrounds is None else f32(backgrounds),
        render_mode="RGB",
        rasterize_mode=rasterize_mode,
    )
    return render_colors.to(dtype), render_alphas.to(dtype)
