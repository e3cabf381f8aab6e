"""Our pure-PyTorch differentiable Gaussian rasterizer (the CPU backend).

It reproduces gsplat 1.5.3's ``rasterization`` in RGB mode ("classic" or "antialiased") so a model trained on a CPU
renders the same on a GPU and vice versa:

* EWA splatting: quaternion + scale -> 3D covariance, world->camera, perspective Jacobian with
  gsplat's 1.3x-frustum clamp of x/z and y/z, plus ``eps2d`` (0.3 px^2) added to the 2D
  covariance as a low-pass filter;
* culling: depth outside [near, far], opacity below 1/255, boxes fully off screen;
* per pixel (pixel centres at +0.5), front-to-back in depth order:
  ``alpha = min(0.999, o * exp(-sigma))``, skipped when ``sigma < 0`` or ``alpha < 1/255``,
  and the pixel stops (exclusively) at the first Gaussian that would bring transmittance
  to ``<= 1e-4``.

How it is fast without a CUDA kernel (all plain torch ops):

1. Projection is batched over cameras in a component-major layout (one GEMM for the
   rotations, elementwise 2x3 maths on contiguous [C, N] planes) with gsplat's analytic
   backward; autograd is used instead only when the cameras themselves need gradients.
2. Pairs, per camera: a Gaussian only touches the pixels of its opacity-aware box (gsplat's
   ``extend = min(3.33, sqrt(2 ln(255 o)))`` sigmas), so Gaussians are bucketed by box size and
   each bucket is evaluated as one dense ``[s, s, m]`` broadcast; cells with
   ``sigma > ln(255 o)`` (alpha < 1/255) are dropped. No per-tile padding.
3. Occlusion, without autograd: Gaussians go in depth slices; hits are sorted by
   ``pixel * M + depth_rank`` and a running per-pixel sum of ``log(1 - alpha)`` (float64)
   gives gsplat's exclusive stop at T <= 1e-4. Gaussians whose box lies entirely in stopped
   pixels (summed-area table) are skipped and hits on stopped pixels are dropped before the
   sort, so most of the cost of hidden back surfaces is never paid.
4. Only the surviving pairs (typically ~1/4) enter the differentiable pass, a custom autograd
   Function with gsplat's analytic backward (segmented prefix sums, one ``index_add``).

Memory: slices are cut so no slice evaluates more than ``max_cells_per_chunk`` window cells;
what is kept for backward is proportional to the pairs that actually contribute.

Differences from gsplat: none in the rendered values beyond float rounding; gradients also
reach ``viewmats`` and ``Ks`` when they require grad (gsplat's never reach ``Ks``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .inputs import check_inputs

# gsplat constants (RasterizeToPixels3DGSFwd.cu, ProjectionEWA3DGSFused.cu, rendering.py).
ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
MAX_EXTEND = 3.33
FRUSTUM_CLAMP = 0.3  # Jacobian clamp: x/z within the image plus 0.3 * tan(fov/2) either side

_LOG_T_MIN = math.log(T_MIN)


@dataclass
class Projected:
    """Per-camera, per-Gaussian screen-space quantities."""

    means2d: Tensor  # [2, C, N] pixels (x, y), component-major
    conics: Tensor  # [3, C, N] inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    depths: Tensor  # [C, N] camera z
    radii: Tensor  # [C, N, 2] int64 box half-sizes in pixels (0 = culled)
    valid: Tensor  # [C, N] bool
    opacities: Tensor  # [C, N] opacity each camera composites with (compensated in "antialiased" mode)


def _frustum_limits(Ks: Tensor, width: int, height: int) -> tuple[Tensor, ...]:
    """gsplat's clamp of x/z and y/z for the Jacobian: the image plus 0.3 tan(fov/2) per side."""
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FRUSTUM_CLAMP * tan_fovx
    lim_x_neg = cx / fx + FRUSTUM_CLAMP * tan_fovx
    lim_y_pos = (height - cy) / fy + FRUSTUM_CLAMP * tan_fovy
    lim_y_neg = cy / fy + FRUSTUM_CLAMP * tan_fovy
    return fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg


def _rotation_planes(qn: Tensor) -> Tensor:
    """Rotation matrices of unit wxyz quaternions [N, 4] as planes [3, 3, N] (entry-major)."""
    w, x, y, z = qn.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ]
    ).reshape(3, 3, -1)


def _project_math(means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane):
    """Forward EWA projection in plain torch ops (differentiable by autograd when called with
    grad enabled). Returns the results and the intermediates the analytic backward needs.

    Layout is component-major ([3, C, N] planes rather than [C, N, 3]): every elementwise op
    and every reduction over x/y/z then runs along contiguous rows of length N, which on CPU
    is several times faster than length-3 inner loops.
    """
    C, N = viewmats.shape[0], means.shape[0]
    W = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    mean_c = (W.reshape(C * 3, 3) @ means.t()).reshape(C, 3, N) + t[:, :, None]  # [C, 3, N]
    qnorm = quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    rot = _rotation_planes(quats / qnorm)  # [3(k), 3(j), N]
    M = rot * scales.t()[None]  # (R S)[k, j, n]
    # WM[c, i, j, n] = sum_k W[c, i, k] M[k, j, n]: one GEMM
    WM = (W.reshape(C * 3, 3) @ M.reshape(3, 3 * N)).reshape(C, 3, 3, N)

    x, y, z = mean_c.unbind(1)  # [C, N]
    in_depth = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg = _frustum_limits(Ks, width, height)
    rz = 1.0 / z_safe
    u = x * rz
    v = y * rz
    u_cl = torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, u))  # tx / z of gsplat
    v_cl = torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, v))
    # rows of J W R S: J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], as [C, 3(j), N]
    WM2 = WM[:, 2]
    row0 = (fx * rz)[:, None] * (WM[:, 0] - u_cl[:, None] * WM2)
    row1 = (fy * rz)[:, None] * (WM[:, 1] - v_cl[:, None] * WM2)
    a = (row0 * row0).sum(1) + eps2d
    b = (row0 * row1).sum(1)
    c = (row1 * row1).sum(1) + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det_safe = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe])  # [3, C, N]
    means2d = torch.stack([fx * u + cx, fy * v + cy])  # [2, C, N]
    return dict(
        means2d=means2d, conics=conics, z=z, a=a, c=c, det=det, in_depth=in_depth,
        # intermediates for the analytic backward
        W=W, qnorm=qnorm, rot=rot, WM2=WM2, x=x, y=y, rz=rz, u=u, v=v, u_cl=u_cl, v_cl=v_cl,
        row0=row0, row1=row1, fx=fx, fy=fy, lims=(lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg),
    )


class _Project(torch.autograd.Function):
    """EWA projection with gsplat's analytic backward (to means, quats, scales; cameras are
    constants here). Autograd through the same maths records ~150 small ops per call and
    materialises zero-filled slices in backward; this backward is a fixed, short op list."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane
    ):
        r = _project_math(means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane)
        conics = r["conics"]
        ctx.save_for_backward(quats, scales, r["W"], r["qnorm"], r["rot"], r["WM2"], r["x"], r["y"], r["rz"],
                              r["u"], r["v"], r["u_cl"], r["v_cl"], r["row0"], r["row1"], r["fx"], r["fy"],
                              conics, *r["lims"])
        ctx.mark_non_differentiable(r["z"], r["a"], r["c"], r["det"], r["in_depth"])
        return r["means2d"], conics, r["z"], r["a"], r["c"], r["det"], r["in_depth"]

    @staticmethod
    def backward(ctx, g_m2d, g_conic, *_unused):  # type: ignore[override]
        (quats, scales, W, qnorm, rot, WM2, x, y, rz, u, v, u_cl, v_cl, row0, row1, fx, fy,
         conics, lxp, lxn, lyp, lyn) = ctx.saved_tensors
        C, N = rz.shape
        # conic S = inverse(cov2d): dL/dcov2d = -S G S with G the symmetric gradient of S
        A, B, Cc = conics.unbind(0)
        gA, gB, gC = g_conic.unbind(0)
        hB = 0.5 * gB
        sg00, sg01 = A * gA + B * hB, A * hB + B * gC
        sg10, sg11 = B * gA + Cc * hB, B * hB + Cc * gC
        ga = -(sg00 * A + sg01 * B)
        gb = -2.0 * (sg00 * B + sg01 * Cc)
        gc = -(sg10 * B + sg11 * Cc)
        # a = |row0|^2, b = row0 . row1, c = |row1|^2   (rows are [C, 3, N])
        g_row0 = 2.0 * ga[:, None] * row0 + gb[:, None] * row1
        g_row1 = 2.0 * gc[:, None] * row1 + gb[:, None] * row0
        frz, gfrz = fx * rz, fy * rz
        # row0 = fx rz (WM0 - u_cl WM2), row1 = fy rz (WM1 - v_cl WM2)
        g_WM = torch.stack(
            [
                g_row0 * frz[:, None],
                g_row1 * gfrz[:, None],
                -(g_row0 * (frz * u_cl)[:, None] + g_row1 * (gfrz * v_cl)[:, None]),
            ],
            dim=1,
        )  # [C, 3(i), 3(j), N]
        g_ucl = -frz * (g_row0 * WM2).sum(1)
        g_vcl = -gfrz * (g_row1 * WM2).sum(1)
        g_rz = ((g_row0 * row0).sum(1) + (g_row1 * row1).sum(1)) / rz
        # the clamp passes the gradient inside [lo, hi]; means2d = (fx u + cx, fy v + cy)
        g_u = g_ucl * ((u >= -lxn) & (u <= lxp)) + fx * g_m2d[0]
        g_v = g_vcl * ((v >= -lyn) & (v <= lyp)) + fy * g_m2d[1]
        g_rz = g_rz + g_u * x + g_v * y
        g_mean_c = torch.stack([g_u * rz, g_v * rz, -g_rz * rz * rz], dim=1)  # [C, 3, N]
        Wt = W.permute(2, 0, 1).reshape(3, C * 3)  # W^T summed over cameras by the GEMM
        g_means = (Wt @ g_mean_c.reshape(C * 3, N)).t()
        g_M = (Wt @ g_WM.reshape(C * 3, 3 * N)).reshape(3, 3, N)  # [k, j, n]
        g_scales = (g_M * rot).sum(0).t()
        g = (g_M * scales.t()[None]).reshape(9, N)  # dL/dR, entries 00 01 02 10 ... 22
        qn = (quats / qnorm).t()
        w, qx, qy, qz = qn.unbind(0)
        g_qn = 2.0 * torch.stack(
            [
                -qz * g[1] + qy * g[2] + qz * g[3] - qx * g[5] - qy * g[6] + qx * g[7],
                qy * g[1] + qz * g[2] + qy * g[3] - 2 * qx * g[4] - w * g[5] + qz * g[6] + w * g[7] - 2 * qx * g[8],
                -2 * qy * g[0] + qx * g[1] + w * g[2] + qx * g[3] + qz * g[5] - w * g[6] + qz * g[7] - 2 * qy * g[8],
                -2 * qz * g[0] - w * g[1] + qx * g[2] + w * g[3] - 2 * qz * g[4] + qy * g[5] + qx * g[6] + qy * g[7],
            ]
        )  # [4, N]
        g_quats = ((g_qn - qn * (qn * g_qn).sum(0, keepdim=True)) / qnorm.t()).t()
        return g_means, g_quats, g_scales, None, None, None, None, None, None, None


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    force_autograd: bool = False,
    rasterize_mode: str = "classic",
) -> Projected:
    """EWA projection of all Gaussians into all cameras, differentiable w.r.t. the inputs.

    Uses the analytic-backward Function unless the cameras themselves need gradients (or
    ``force_autograd``), in which case the same maths runs under autograd. Culled entries keep
    finite placeholder values (never inf/NaN) so no ``0 * inf`` reaches any gradient.
    """
    if force_autograd or viewmats.requires_grad or Ks.requires_grad:
        r = _project_math(means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane)
        keys = ("means2d", "conics", "z", "a", "c", "det", "in_depth")
        means2d, conics, z, a, c, det, in_depth = (r[k] for k in keys)
    else:
        means2d, conics, z, a, c, det, in_depth = _Project.apply(
            means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane
        )
    ok_det = det > 0
    opac_cn = _camera_opacities(opacities, conics, eps2d, rasterize_mode)

    with torch.no_grad():
        opac = opac_cn.detach()
        ok_opac = opac >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=MAX_EXTEND)
        rx = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp_min(0).sqrt())
        mx, my = means2d.detach().unbind(0)
        on_screen = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = in_depth & ok_det & ok_opac & ((rx > 0) | (ry > 0)) & on_screen
        valid &= torch.isfinite(mx) & torch.isfinite(my)
        radii = torch.stack([rx, ry], -1).nan_to_num(0.0).long() * valid[..., None]
    return Projected(means2d=means2d, conics=conics, depths=z.detach(), radii=radii, valid=valid, opacities=opac_cn)


RASTERIZE_MODES = ("classic", "antialiased")


def _camera_opacities(opacities: Tensor, conics: Tensor, eps2d: float, rasterize_mode: str) -> Tensor:
    """Opacity per (camera, Gaussian) ``[C, N]``.

    "classic": the Gaussian's own opacity in every camera. "antialiased" (gsplat's mode, from
    Mip-Splatting): times ``sqrt(det(cov2d) / det(cov2d + eps2d I))``. Why: the eps2d low-pass
    widens every splat by ~0.55 px; without the compensation a small or edge-on Gaussian keeps
    its full opacity over the wider footprint, so stacked surfels at a silhouette render the
    object ~1 px too large and fitting the mask pulls the centres inside the true surface. The
    ratio is written in the conic alone (``1 - eps (A + C) + eps^2 (A C - B^2)``), so its
    gradient flows through the projection's own backward.
    """
    C = conics.shape[1]
    if rasterize_mode == "classic":
        return opacities[None, :].expand(C, -1)
    if rasterize_mode != "antialiased":
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}; use one of {RASTERIZE_MODES}")
    A, B, Cc = conics.unbind(0)
    ratio = 1.0 - eps2d * (A + Cc) + eps2d * eps2d * (A * Cc - B * B)
    return opacities[None, :] * torch.sqrt(ratio.clamp_min(1e-12))


def _window_sizes(limit: int) -> list[int]:
    """Square window sizes used to bucket Gaussian boxes: exact for small boxes (the common
    case), then growing by ~1.5x so a box never wastes more than ~2.25x its area."""
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12]
    while sizes[-1] < limit:
        sizes.append(int(math.ceil(sizes[-1] * 1.5)))
    return sizes


def _enumerate_pairs(
    proj: Projected,
    opacities: Tensor,
    width: int,
    height: int,
    max_cells_per_chunk: int,
    stats: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """The (pixel, Gaussian) pairs gsplat composites, pixel-major, front to back per pixel.
    ``opacities`` is per camera, ``[C, N]`` (``Projected.opacities``).

    Returns (flat Gaussian ids into [C*N], flat pixel ids into [C*H*W]), both [P]. Cameras
    are processed one at a time: the pair arrays of one 64x64 view stay cache-sized, which on
    a busy CPU is faster than one big batched pass.
    """
    C, N = proj.depths.shape
    hw = width * height
    opac = opacities.detach()
    gs, ps = [], []
    for c in range(C):
        g, p = _camera_pairs(
            proj.means2d[:, c].detach(), proj.conics[:, c].detach(), proj.radii[c],
            proj.depths[c].detach(), proj.valid[c], opac[c], width, height, max_cells_per_chunk, stats,
        )
        gs.append(g + c * N)
        ps.append(p + c * hw)
    return torch.cat(gs), torch.cat(ps)


# Gaussians are enumerated front to back in these slices of the depth order; after each slice,
# Gaussians whose box holds no unsaturated pixel are skipped (they are fully hidden).
_DEPTH_SLICES = (0.0, 0.25, 0.5, 1.0)
_MIN_CELLS_TO_SLICE = 1 << 16  # below this the per-slice overhead outweighs the culling


def _camera_pairs(
    means2d: Tensor,
    conics: Tensor,
    radii: Tensor,
    depths: Tensor,
    valid: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    max_cells_per_chunk: int,
    stats: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """Pairs of one camera: (Gaussian ids into [N], pixel ids into [H*W]), pixel-major.
    ``means2d`` is [2, N], ``conics`` [3, N], ``radii`` [N, 2].

    Each visible Gaussian is evaluated on a square window covering its box (clipped to the
    image); Gaussians are bucketed by window size so a bucket is one dense broadcast
    ``[s, s, m]`` computation, in chunks of at most ``max_cells_per_chunk`` cells. The alpha
    test is done on sigma (``sigma <= ln(255 o)``), so no exp runs on cells that miss.

    Occlusion: Gaussians are processed in depth slices. Per pixel we carry the running sum of
    ``log(1 - alpha)`` over every pair seen so far; a pair is composited only while that sum
    stays above ``log(1e-4)`` (gsplat's exclusive stop), and once a slice is done, Gaussians
    whose box lies entirely in stopped pixels (a summed-area-table lookup) are never
    enumerated. On opaque objects this skips most of the back surface.
    """
    device = depths.device
    hw = width * height
    empty = torch.zeros(0, dtype=torch.long, device=device)
    idx = valid.nonzero().squeeze(1)
    gid = idx.index_select(0, torch.argsort(depths.index_select(0, idx), stable=True))  # front to back
    M = gid.numel()
    if M == 0:
        return empty, empty
    mx, my = means2d.index_select(1, gid).unbind(0)
    ca, cb, cc = conics.index_select(1, gid).unbind(0)
    r = radii.index_select(0, gid).to(mx.dtype)
    opac = opacities.index_select(0, gid)
    # alpha = o exp(-sigma) >= 1/255  <=>  sigma <= ln(255 o); capped at gsplat's 3.33-sigma box
    smax = torch.log(opac * 255.0).clamp(max=0.5 * MAX_EXTEND**2)
    # pixels j whose centre j + 0.5 lies in [m - r, m + r], clipped to the image
    x0 = torch.ceil(mx - r[:, 0] - 0.5).clamp(0, width).long()
    x1 = (torch.floor(mx + r[:, 0] - 0.5) + 1).clamp(0, width).long()
    y0 = torch.ceil(my - r[:, 1] - 0.5).clamp(0, height).long()
    y1 = (torch.floor(my + r[:, 1] - 0.5) + 1).clamp(0, height).long()
    side = torch.maximum(x1 - x0, y1 - y0)
    side = torch.where((x1 > x0) & (y1 > y0), side, torch.zeros_like(side))
    sizes = _window_sizes(max(width, height))
    bucket = torch.searchsorted(torch.tensor(sizes, device=device), side)
    bucket = torch.where(side > 0, bucket, torch.full_like(bucket, -1))

    # sort key = pixel * M + depth rank; int32 sorts faster when it fits
    key_dtype = torch.int32 if hw * M < 2**31 else torch.int64
    rank_k = torch.arange(M, device=device, dtype=key_dtype)
    x0k, y0k = x0.to(key_dtype), y0.to(key_dtype)

    def window_hits(members: Tensor) -> tuple[Tensor, Tensor]:
        """(sort keys, sigmas) of all cells with alpha >= 1/255 of the given Gaussians."""
        keys: list[Tensor] = []
        sigmas: list[Tensor] = []
        b = bucket.index_select(0, members)
        present = torch.bincount(b + 1, minlength=len(sizes) + 1)[1:]
        for k in present.nonzero().squeeze(1).tolist():
            s = sizes[k]
            sel_all = members.index_select(0, (b == k).nonzero().squeeze(1))
            per_chunk = max(1, max_cells_per_chunk // (s * s))
            ar = torch.arange(s, device=device)[:, None]  # [s, 1]
            ark = ar.to(key_dtype)
            for start in range(0, sel_all.numel(), per_chunk):
                sel = sel_all[start:start + per_chunk]
                # layout [s(y), s(x), m]: the Gaussian axis is innermost so every broadcast
                # op runs over long contiguous rows
                xs = x0[sel] + ar  # [s, m]
                ys = y0[sel] + ar
                dx = (xs.to(mx.dtype) + 0.5) - mx[sel]
                dy = (ys.to(my.dtype) + 0.5) - my[sel]
                qa = (0.5 * ca[sel] * dx * dx).masked_fill_(xs >= x1[sel], float("inf"))
                qc = (0.5 * cc[sel] * dy * dy).masked_fill_(ys >= y1[sel], float("inf"))
                qb = cb[sel] * dx
                sigma = (qc[:, None, :] + qa[None, :, :]).addcmul_(qb[None, :, :], dy[:, None, :])
                # (gsplat also skips sigma < 0, which a positive-definite conic only yields
                # by rounding at the centre, so it is not tested here)
                hit = sigma <= smax[sel]  # [s, s, m]
                cells = hit.view(-1).nonzero().squeeze(1)
                row_key = (y0k[sel] + ark) * (width * M) + rank_k[sel]  # [s, m]
                col_key = (x0k[sel] + ark) * M
                keys.append((row_key[:, None, :] + col_key[None, :, :]).view(-1).index_select(0, cells))
                sigmas.append(sigma.view(-1).index_select(0, cells))
        if not keys:
            return empty.to(key_dtype), mx.new_zeros(0)
        return torch.cat(keys), torch.cat(sigmas)

    log_s = torch.zeros(hw, dtype=torch.float64, device=device)  # sum log(1 - alpha), all pairs so far
    kept: list[Tensor] = []
    # slice boundaries: the fixed fractions, plus extra cuts so that no slice evaluates more
    # than ~max_cells_per_chunk window cells (bounds the transient memory of huge splats)
    win = torch.tensor(sizes, device=device).index_select(0, bucket.clamp_min(0)) ** 2 * (bucket >= 0)
    cum_cells = torch.cumsum(win, 0)
    n_cuts = int(cum_cells[-1]) // max_cells_per_chunk
    cuts = torch.searchsorted(
        cum_cells, torch.arange(1, n_cuts + 1, device=device) * max_cells_per_chunk
    ).tolist() if n_cuts else []
    total_cells = int(cum_cells[-1])
    slices = _DEPTH_SLICES if total_cells >= _MIN_CELLS_TO_SLICE else (0.0, 1.0)
    bounds = sorted({min(M, int(round(f * M))) for f in slices} | {min(M, c + 1) for c in cuts})
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = torch.arange(a, b, device=device)
        members = members.index_select(0, (side.index_select(0, members) > 0).nonzero().squeeze(1))
        if a > 0:
            # skip Gaussians whose whole box is in pixels that already stopped
            open_px = (log_s > _LOG_T_MIN).view(height, width).to(torch.int32)
            sat = torch.zeros(height + 1, width + 1, dtype=torch.int32, device=device)
            sat[1:, 1:] = open_px.cumsum(0).cumsum(1)
            sat = sat.view(-1)
            w1 = width + 1
            X0, X1 = x0.index_select(0, members), x1.index_select(0, members)
            Y0, Y1 = y0.index_select(0, members), y1.index_select(0, members)
            n_open = (sat.index_select(0, Y1 * w1 + X1) - sat.index_select(0, Y0 * w1 + X1)
                      - sat.index_select(0, Y1 * w1 + X0) + sat.index_select(0, Y0 * w1 + X0))
            if stats is not None:
                stats["culled"] = stats.get("culled", 0) + int((n_open == 0).sum())
            members = members.index_select(0, (n_open > 0).nonzero().squeeze(1))
        if members.numel() == 0:
            continue
        key, sigma = window_hits(members)
        if stats is not None:
            stats["enumerated"] = stats.get("enumerated", 0) + members.numel()
            stats["hits"] = stats.get("hits", 0) + key.numel()
        if a > 0 and key.numel():
            # hits on pixels that already stopped cannot contribute: drop them before sorting
            open_px = (log_s > _LOG_T_MIN).index_select(0, torch.div(key, M, rounding_mode="floor").long())
            open_idx = open_px.nonzero().squeeze(1)
            key, sigma = key.index_select(0, open_idx), sigma.index_select(0, open_idx)
        if key.numel() == 0:
            continue
        key, perm = torch.sort(key)
        key = key.long()
        pix = torch.div(key, M, rounding_mode="floor")
        rank = key - pix * M
        alpha = (opac.index_select(0, rank) * torch.exp(-sigma.index_select(0, perm))).clamp_(max=ALPHA_MAX)
        log1m = torch.log1p(-alpha.double())
        incl = torch.cumsum(log1m, 0)
        run = incl - (incl - log1m).index_select(0, _segment_starts(pix, hw))
        alive = (run + log_s.index_select(0, pix)) > _LOG_T_MIN
        log_s.index_add_(0, pix, log1m)
        kept.append(key.index_select(0, alive.nonzero().squeeze(1)))
    if not kept:
        return empty, empty
    key = torch.sort(torch.cat(kept)).values  # pixel-major, front to back in a pixel
    pix = torch.div(key, M, rounding_mode="floor")
    return gid.index_select(0, key - pix * M), pix


def _segment_starts(sorted_ids: Tensor, n_ids: int) -> Tensor:
    """For sorted ids in [0, n_ids), the index of the first element of each element's run."""
    counts = torch.bincount(sorted_ids, minlength=n_ids)
    first = torch.cumsum(counts, 0) - counts
    return first.index_select(0, sorted_ids)


class _Composite(torch.autograd.Function):
    """Front-to-back alpha compositing of sorted (pixel, Gaussian) pairs, with the analytic
    backward of gsplat's rasterize_to_pixels.

    Why a custom Function: the per-pair chain (sigma -> alpha -> transmittance -> weight ->
    colour) is the hot loop of Stage Two on CPU; autograd would keep ~20 pair-sized
    intermediates and replay them. Here the forward evaluates alpha once, the backward needs
    one segmented prefix sum, and all per-Gaussian gradients land in a single ``index_add``.
    Pair data is kept row-major ([features, P]) because gathers and scatters along the last
    dimension of a [F, P] tensor are several times faster on CPU than on [P, F] columns.

    Inputs: ``table`` [6 + D, CN] = rows (mean_x, mean_y, conic_a, conic_b, conic_c, opacity,
    colour...) per flat (camera, Gaussian); pair ids ``g`` into CN and ``pix`` into C*H*W
    (pixel-major, front to back inside a pixel); pixel centres ``pxc``/``pyc`` of each pair.
    Outputs: colour [D, C*H*W] (no background) and final transmittance [C*H*W].
    """

    @staticmethod
    def forward(ctx, table, g, pix, pxc, pyc, n_pixels):  # type: ignore[override]
        rows = table.index_select(1, g)  # [6 + D, P]
        mx, my, ca, cb, cc, op = rows[:6]
        col = rows[6:]
        dx = mx - pxc
        dy = my - pyc
        sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        vis = torch.exp(-sigma)
        alpha_raw = op * vis
        alpha = alpha_raw.clamp(max=ALPHA_MAX)
        # log-transmittance as a segmented cumulative sum; float64 keeps long runs exact
        log1m = torch.log1p(-alpha.double())
        excl = torch.cumsum(log1m, 0) - log1m
        starts = _segment_starts(pix, n_pixels)
        log_T = excl - excl.index_select(0, starts)
        # gsplat stops a pixel (exclusively) at the pair that would bring T to <= 1e-4
        alive = (log_T + log1m) > _LOG_T_MIN
        alpha = alpha * alive
        log1m = log1m * alive
        T = torch.exp(log_T).to(alpha.dtype)
        weight = alpha * T
        out = table.new_zeros((col.shape[0], n_pixels)).index_add_(1, pix, col * weight)
        log_Tf = torch.zeros(n_pixels, dtype=torch.float64, device=pix.device).index_add_(0, pix, log1m)
        T_final = torch.exp(log_Tf).to(alpha.dtype)
        # d alpha / d alpha_raw is 1 where alive and not clamped
        live = alive & (alpha_raw < ALPHA_MAX)
        ctx.save_for_backward(g, pix, starts, rows, dx, dy, vis, alpha, T, live, out, T_final)
        ctx.n_flat = table.shape[1]
        return out, T_final

    @staticmethod
    def backward(ctx, grad_out, grad_T_final):  # type: ignore[override]
        g, pix, starts, rows, dx, dy, vis, alpha, T, live, out, T_final = ctx.saved_tensors
        ca, cb, cc, op = rows[2], rows[3], rows[4], rows[5]
        col = rows[6:]
        go = grad_out.index_select(1, pix)  # [D, P]
        gc = (go * col).sum(0)  # G . c_i
        weight = alpha * T
        s = gc * weight
        # dL/dT_i+1 terms: sum_{j > i} s_j + gT * T_final, with sum_{j > i} s_j computed as
        # (G . C_pixel) - (inclusive prefix of s inside the pixel's run)
        incl = torch.cumsum(s.double(), 0)
        prefix = (incl - (incl - s).index_select(0, starts)).to(s.dtype)
        pixel_term = (grad_out * out).sum(0) + grad_T_final * T_final  # [n_pixels]
        after = pixel_term.index_select(0, pix) - prefix
        d_alpha = (gc * T - after / (1.0 - alpha)) * live
        d_op = d_alpha * vis
        d_sigma = -d_alpha * op * vis
        grads = torch.cat(
            [
                torch.stack(
                    [
                        d_sigma * (ca * dx + cb * dy),  # d sigma / d mean_x
                        d_sigma * (cc * dy + cb * dx),
                        d_sigma * 0.5 * dx * dx,  # d sigma / d conic
                        d_sigma * dx * dy,
                        d_sigma * 0.5 * dy * dy,
                        d_op,
                    ]
                ),
                go * weight,  # d colour
            ]
        )
        per = grads.new_zeros((grads.shape[0], ctx.n_flat)).index_add_(1, g, grads)
        return per, None, None, None, None, None


def rasterize_torch(
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
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    max_cells_per_chunk: int = 1 << 22,
    stats: dict | None = None,
    rasterize_mode: str = "classic",
) -> tuple[Tensor, Tensor]:
    """Render C cameras; arguments and outputs as :func:`track4dgen.stage2.raster.rasterize`.

    If ``stats`` is a dict it receives counters (Gaussians ``enumerated`` and ``culled`` as
    hidden, window ``hits``, composited ``pairs``), summed over cameras, for benchmarks and tests.
    """
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)
    C = viewmats.shape[0]
    N = means.shape[0]
    D = colors.shape[-1]
    hw = width * height
    proj = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
        rasterize_mode=rasterize_mode,
    )
    g, pix = _enumerate_pairs(proj, proj.opacities, width, height, max_cells_per_chunk, stats)
    if stats is not None:
        stats["pairs"] = stats.get("pairs", 0) + g.numel()
    local = pix - torch.div(pix, hw, rounding_mode="floor") * hw
    py = torch.div(local, width, rounding_mode="floor")
    dtype = proj.means2d.dtype
    pxc = (local - py * width).to(dtype) + 0.5
    pyc = py.to(dtype) + 0.5
    if colors.dim() == 3:  # per-camera colours [C, N, D]
        colors_t = colors.reshape(C * N, D).t()
    else:
        colors_t = colors.t()[:, None, :].expand(D, C, N).reshape(D, C * N)
    table = torch.cat(
        [
            proj.means2d.reshape(2, C * N),
            proj.conics.reshape(3, C * N),
            proj.opacities.reshape(1, C * N),
            colors_t,
        ]
    )  # [6 + D, C*N]
    out_rgb, T_final = _Composite.apply(table, g, pix, pxc, pyc, C * hw)
    T_final = T_final.reshape(C, height, width, 1)
    alphas = 1.0 - T_final
    out = out_rgb.t().reshape(C, height, width, D)
    if backgrounds is not None:
        out = out + T_final * backgrounds[:, None, None, :]
    return out, alphas
