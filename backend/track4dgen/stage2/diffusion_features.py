"""Diffusion-feature branch of the hybrid Gaussian feature (paper §3.3).

Stage One's up-block feature maps ``[V, F, C, h, w]`` are tracking-aware: a surface point keeps a
similar feature across frames. Each Gaussian gets, per frame, the average of the maps sampled at
the projection of its centre in every view where the centre is visible.

Decisions (documented because the paper leaves them open):

- **Which centre.** The canonical centre (from the mesh), for every frame. The deformed centre
  would make the input depend on the output it is used to predict, and canonical centres let the
  sampled features be computed once before training.
- **Visibility.** Exact ray casting against the job's static mesh: the segment from the centre to
  the camera centre is tested against every triangle (Möller-Trumbore); a hit farther than a small
  epsilon from the centre (which lies on its own triangle) means occluded. This needs no renderer
  and is exact for self-occlusion, so the back of an object never borrows the front's feature.
- **Size.** C can be 1280; caching ``[F, N, C]`` would not fit in memory for large N. Sampling,
  averaging and a linear map commute, so the maps are first reduced to ``pca_dim`` channels by PCA
  (fixed), then sampled; the learned ``Linear(pca_dim -> proj_dim)`` in the model follows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mesh_visibility(
    points: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cam_centers: torch.Tensor,
    eps: float | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """``[C, P]`` bool: True where the segment point -> camera centre hits no triangle.

    ``eps`` (world units, default 1e-3 of the mesh's bbox diagonal) ignores hits at the point's
    own surface and at the camera.
    """
    points = points.detach().float()
    v = vertices.detach().float().to(points.device)
    f = faces.long().to(points.device)
    if eps is None:
        eps = 1e-3 * float((v.max(0).values - v.min(0).values).norm())
    v0, v1, v2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e1, e2 = v1 - v0, v2 - v0  # [T, 3]
    out = torch.ones(cam_centers.shape[0], points.shape[0], dtype=torch.bool, device=points.device)
    for c, cam in enumerate(cam_centers.float().to(points.device)):
        for s in range(0, points.shape[0], chunk):
            o = points[s : s + chunk]  # [P, 3]
            seg = cam[None, :] - o
            length = seg.norm(dim=-1, keepdim=True)
            d = seg / length.clamp_min(1e-12)  # [P, 3]
            # Möller-Trumbore, broadcast [P, T]
            pvec = torch.cross(d[:, None, :].expand(-1, e2.shape[0], -1), e2[None].expand(d.shape[0], -1, -1), dim=-1)
            det = (e1[None] * pvec).sum(-1)
            ok = det.abs() > 1e-12
            inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
            tvec = o[:, None, :] - v0[None]
            u = (tvec * pvec).sum(-1) * inv
            qvec = torch.cross(tvec, e1[None].expand_as(tvec), dim=-1)
            w = (d[:, None, :] * qvec).sum(-1) * inv
            t = (e2[None] * qvec).sum(-1) * inv
            hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > eps) & (t < length - eps)
            out[c, s : s + chunk] = ~hit.any(dim=1)
    return out


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
    cam_centers = torch.linalg.inv(viewmats)[:, :3, 3]
    visible = mesh_visibility(points, vertices, faces, cam_centers)
    reduced = pca_reduce(features, pca_dim)
    return sample_features(reduced, points, Ks, viewmats, image_size, visible), visible
