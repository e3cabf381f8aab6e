"""Silhouettes of the input mesh seen from views between the video's views (beyond the paper).

Why: four views constrain the canonical Gaussians only where those four cameras look. Between
them a splat may stick out past the object (a surfel seen edge-on in every training view is
thin there and wide at 45 degrees), and renders from new angles grow a halo. The mesh is an
input and frame 0 is its pose (``anchor_first_frame``), so the mesh's own silhouette from any
camera is exact supervision of frame 0. ``virtual_cameras`` turns each video camera about the
world's up axis through the object's centre, so the extra views share the rig's elevation,
distance and lens; ``mesh_silhouettes`` renders their antialiased coverage masks once, before
training (``optimize.Trainer`` compares one of them per iteration with the rendered alpha).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..cameras import Camera
from ..meshraster import box_downsample, rasterize, scaled_camera


def rotation_about_z(angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def virtual_cameras(
    viewmats: torch.Tensor, Ks: torch.Tensor, center: np.ndarray, offsets_deg: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every camera turned by every offset about the vertical axis through ``center``:
    ``(viewmats [V*M, 4, 4], Ks [V*M, 3, 3])``. Turning a camera by R about c moves a world
    point x to where it sees R^T (x - c) + c, so the new world->camera matrix is w2c · T with
    T = [R^T | c - R^T c]."""
    center = np.asarray(center, dtype=np.float64)
    mats, ks = [], []
    for w2c, K in zip(viewmats.detach().cpu().double().numpy(), Ks.detach().cpu().double().numpy()):
        for off in offsets_deg:
            Rt = rotation_about_z(off).T
            T = np.eye(4)
            T[:3, :3] = Rt
            T[:3, 3] = center - Rt @ center
            mats.append(w2c @ T)
            ks.append(K)
    dtype, device = viewmats.dtype, viewmats.device
    return torch.tensor(np.stack(mats), dtype=dtype, device=device), torch.tensor(np.stack(ks), dtype=dtype, device=device)


def mesh_silhouettes(
    vertices: np.ndarray, faces: np.ndarray, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
    supersample: int = 4,
) -> torch.Tensor:
    """``[M, H, W]`` coverage in [0, 1] of the mesh in each camera (box-filtered supersamples,
    as the video masks are). Back faces are kept: a user's mesh need not be closed or consistently wound."""
    out = []
    for w2c, K in zip(viewmats.detach().cpu().double().numpy(), Ks.detach().cpu().double().numpy()):
        cam = scaled_camera(Camera(K=K, w2c=w2c, width=int(width), height=int(height)), supersample)
        mask = rasterize(vertices, faces, cam, cull_backfaces=False).mask.astype(np.float32)[..., None]
        out.append(box_downsample(mask, supersample)[..., 0])
    return torch.tensor(np.stack(out), dtype=torch.float32)
