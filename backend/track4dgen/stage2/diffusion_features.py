"""Diffusion-feature branch of the hybrid Gaussian feature (paper §3.3).

Stage One's up-block feature maps ``[V, F, C, h, w]`` are tracking-aware: a surface point keeps a
similar feature across frames. Each Gaussian gets, per frame, the average of the maps sampled at
the projection of its centre in every view where the centre is visible.

Decisions (documented because the paper leaves them open):

- **Which centre.** The canonical centre (from the mesh), for every frame. The deformed centre
  would make the input depend on the output it is used to predict, and canonical centres let the
  sampled features be computed once before training.
- **Visibility.** A depth-buffer test against the job's static mesh: the mesh is rasterized once per
  view (``track4dgen.meshraster``, back faces kept) and a centre is visible when its camera depth is
  no farther than the surface the buffer holds around its pixel. It is exact for self-occlusion up
  to one raster pixel, so the back of an object never borrows the front's feature, and it costs
  one rasterization per view whatever the number of centres (the ray cast it replaced tested
  every centre against every triangle: ~49 min for 20k centres on an 82k-face mesh).
- **Size.** C can be 1280; caching ``[F, N, C]`` would not fit in memory for large N. Sampling,
  averaging and a linear map commute, so the maps are first reduced to ``pca_dim`` channels by PCA
  (fixed), then sampled; the learned ``Linear(pca_dim -> proj_dim)`` in the model follows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def mesh_visibility(
    points: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    image_size: tuple[int, int],
    raster_size: int = 512,
    eps: float | None = None,
) -> torch.Tensor:
    """``[V, P]`` bool: True where camera ``v`` sees point ``p`` (it lies on the visible surface).

    ``viewmats`` [V, 4, 4] world->camera (OpenCV) and ``Ks`` [V, 3, 3] for images of
    ``image_size`` = (width, height); the mesh is rasterized with the same cameras at
    ``raster_size`` px on the longer side. A point is visible when it projects inside the image,
    in front of the camera, and its depth is at most the farthest surface depth in its raster
    pixel's 3x3 neighbourhood plus ``eps`` (world units, default 1e-3 of the mesh's bbox
    diagonal). Why the neighbourhood: a surface point's own pixel centre may sample a steeper part
    of the surface (or just miss the silhouette); one raster pixel of slack costs at most one pixel
    of occluder edge.
    """
    from ..meshraster import rasterize, resized_camera

    pts = points.detach().float().cpu()
    v = vertices.detach().cpu().double().numpy()
    f = faces.detach().cpu().long().numpy()
    if eps is None:
        eps = 1e-3 * float(np.linalg.norm(v.max(0) - v.min(0)))
    vms = viewmats.detach().cpu().double()
    cams = [resized_camera(K, vm, image_size, raster_size) for K, vm in zip(Ks.detach().cpu().double().numpy(), vms.numpy())]
    rw, rh = cams[0].width, cams[0].height
    u, vv, z = project_to_pixels(pts.double(), torch.from_numpy(np.stack([c.K for c in cams])), vms)
    out = torch.zeros(len(vms), pts.shape[0], dtype=torch.bool)
    for k in range(len(vms)):
        depth = rasterize(v, f, cams[k], cull_backfaces=False).depth
        d = torch.from_numpy(np.where(np.isfinite(depth), depth, -np.inf))
        far = F.max_pool2d(d[None, None], 3, stride=1, padding=1)[0, 0]  # farthest surface around each pixel
        ix, iy = u[k].floor().long(), vv[k].floor().long()
        inside = (ix >= 0) & (ix < rw) & (iy >= 0) & (iy < rh) & (z[k] > 0)
        near = far[iy.clamp(0, rh - 1), ix.clamp(0, rw - 1)]
        # no surface around the pixel (-inf): nothing occludes the point
        out[k] = inside & ((z[k] <= near + eps) | torch.isinf(near))
    return out.to(points.device)


def pca_reduce(features: torch.Tensor, dim: int, max_samples: int = 20000, seed: int = 0) -> torch.Tensor:
    """Reduce channels of ``[V, F, C, h, w]`` maps to ``dim`` by PCA, scaled to unit RMS."""
    v, f, c, h, w = features.shape
    flat = features.permute(0, 1, 3, 4, 2).reshape(-1, c).float()
    mean = flat.mean(0)
    if dim >= c:
        basis = torch.eye(c, dtype=flat.dtype, device=flat.device)
    else:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(flat.shape[0], generator=g)[:max_samples].to(flat.device)
        _, _, vh = torch.linalg.svd(flat[pick] - mean, full_matrices=False)
        basis = vh[:dim].t()  # [C, dim]
    red = (flat - mean) @ basis
    red = red / red.pow(2).mean().sqrt().clamp_min(1e-8)
    return red.reshape(v, f, h, w, -1).permute(0, 1, 4, 2, 3).contiguous()


def project_to_pixels(points: torch.Tensor, Ks: torch.Tensor, viewmats: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pixel coordinates of ``points`` [P, 3] in every camera: (u, v, z), each ``[V, P]``.

    OpenCV world->camera ``viewmats`` [V, 4, 4], pixel ``Ks`` [V, 3, 3]; pixel (0, 0) is the
    top-left corner of the image. ``z`` is the camera depth (<= 0: behind the camera).
    """
    cam = points @ viewmats[:, :3, :3].transpose(1, 2) + viewmats[:, None, :3, 3]  # [V, P, 3]
    z = cam[..., 2]
    zs = z.clamp_min(1e-6)
    u = cam[..., 0] / zs * Ks[:, None, 0, 0] + Ks[:, None, 0, 2]
    v = cam[..., 1] / zs * Ks[:, None, 1, 1] + Ks[:, None, 1, 2]
    return u, v, z


def sample_features(
    features: torch.Tensor,
    points: torch.Tensor,
    Ks: torch.Tensor,
    viewmats: torch.Tensor,
    image_size: tuple[int, int],
    visible: torch.Tensor,
) -> torch.Tensor:
    """Average over visible views of the maps sampled at each point's projection.

    features ``[V, F, C, h, w]`` (covering images of ``image_size`` = (width, height)), points
    ``[P, 3]``, Ks ``[V, 3, 3]``, viewmats ``[V, 4, 4]`` world->camera OpenCV, visible ``[V, P]``.
    Returns ``[F, P, C]``; points visible in no view (or projecting outside every image) get 0.
    """
    nv, nf, c, h, w = features.shape
    width, height = image_size
    u, v, z = project_to_pixels(points, Ks, viewmats)
    gx = u / width * 2.0 - 1.0  # pixel (0,0) = top-left corner; align_corners=False convention
    gy = v / height * 2.0 - 1.0
    inside = (gx.abs() <= 1) & (gy.abs() <= 1) & (z > 0)
    weight = (visible & inside).float()  # [V, P]
    grid = torch.stack([gx, gy], dim=-1)  # [V, P, 2]
    out = torch.zeros(nf, points.shape[0], c, dtype=features.dtype, device=features.device)
    for k in range(nv):
        g = grid[k].view(1, 1, -1, 2).expand(nf, 1, -1, 2)
        s = F.grid_sample(features[k], g, mode="bilinear", padding_mode="border", align_corners=False)  # [F, C, 1, P]
        out += s[:, :, 0, :].transpose(1, 2) * weight[k][None, :, None]
    count = weight.sum(0).clamp_min(1.0)  # [P]
    return out / count[None, :, None]


def gaussian_diffusion_features(
    features: torch.Tensor,
    points: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    Ks: torch.Tensor,
    viewmats: torch.Tensor,
    image_size: tuple[int, int],
    pca_dim: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame visible-view-averaged features for canonical centres: (``[F, P, pca_dim]``, visible ``[V, P]``)."""
    visible = mesh_visibility(points, vertices, faces, viewmats, Ks, image_size)
    reduced = pca_reduce(features, pca_dim)
    return sample_features(reduced, points, Ks, viewmats, image_size, visible), visible
