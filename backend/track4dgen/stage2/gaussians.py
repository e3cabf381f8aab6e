"""Canonical 3D Gaussians sampled from the static mesh (paper §3.3).

Why from the mesh: the object's shape is known, so Stage Two starts from a surface-tight cloud and
only has to learn appearance and motion. Points are sampled area-weighted on the triangles; each
keeps its triangle index and barycentric weights, which (a) give its colour from the vertex
colours and (b) let evaluation move it exactly with a ground-truth animated mesh.

Scales start isotropic at the mean distance to the 3 nearest neighbours (3DGS's density rule),
opacity at ``init_opacity``, rotation at identity (wxyz = 1,0,0,0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .sh4d import num_sh_coeffs, rgb_to_sh_dc


@dataclass
class SurfaceSamples:
    points: np.ndarray  # [N, 3] float32
    colors: np.ndarray  # [N, 3] float32 in [0, 1]
    face_idx: np.ndarray  # [N] int64
    bary: np.ndarray  # [N, 3] float32 barycentric weights of the triangle's vertices
    normals: np.ndarray  # [N, 3] float32 unit normal of the source triangle


def sample_surface(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, n: int, seed: int = 0) -> SurfaceSamples:
    """Area-weighted uniform samples on a triangle mesh, colours by barycentric interpolation."""
    if n <= 0:
        raise ValueError(f"number of Gaussians must be positive, got {n}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    c = np.asarray(colors, dtype=np.float64)
    areas = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has no surface area to sample Gaussians from")
    rng = np.random.default_rng(seed)
    face_idx = rng.choice(len(f), size=n, p=areas / total)
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)  # uniform on the triangle
    tri = f[face_idx]
    points = np.einsum("nk,nkd->nd", bary, v[tri])
    cols = np.einsum("nk,nkd->nd", bary, c[tri])
    n = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    n = n / np.clip(np.linalg.norm(n, axis=1, keepdims=True), 1e-20, None)
    return SurfaceSamples(
        points.astype(np.float32), np.clip(cols, 0, 1).astype(np.float32), face_idx, bary.astype(np.float32), n.astype(np.float32)
    )


def quats_z_to(normals: np.ndarray) -> np.ndarray:
    """wxyz quaternions rotating +z onto each unit normal (shortest arc; -z handled)."""
    n = np.asarray(normals, dtype=np.float64)
    w = 1.0 + n[:, 2]
    xyz = np.stack([-n[:, 1], n[:, 0], np.zeros(len(n))], axis=1)  # ez x n
    q = np.concatenate([w[:, None], xyz], axis=1)
    flip = w < 1e-8  # n = -z: rotate 180 degrees about x
    q[flip] = np.array([0.0, 1.0, 0.0, 0.0])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def knn_distances(points: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(distances [N, k], indices [N, k]) of the k nearest other points."""
    from scipy.spatial import cKDTree

    k = min(k, len(points) - 1)
    if k < 1:
        return np.ones((len(points), 1), np.float32), np.zeros((len(points), 1), np.int64)
    d, idx = cKDTree(points).query(points, k=k + 1)
    return d[:, 1:].astype(np.float32), idx[:, 1:].astype(np.int64)


class CanonicalGaussians(nn.Module):
    """Learnable canonical Gaussians: means, rotations, log-scales, opacity logits, 4D SH."""

    def __init__(self, n: int, sh_degree: int = 1, sh_time_basis: int = 4) -> None:
        super().__init__()
        k = num_sh_coeffs(sh_degree)
        self.sh_degree = sh_degree
        self.means = nn.Parameter(torch.zeros(n, 3))
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.log_scales = nn.Parameter(torch.full((n, 3), -4.0))
        self.opacity_logit = nn.Parameter(torch.zeros(n))
        self.sh4d = nn.Parameter(torch.zeros(n, k, 3, sh_time_basis))
        # provenance for evaluation (not optimised): source triangle and barycentric weights
        self.register_buffer("face_idx", torch.zeros(n, dtype=torch.long))
        self.register_buffer("bary", torch.zeros(n, 3))
        # unit normal of the source triangle: lets training keep centres on the surface (optimize.py)
        self.register_buffer("normals", torch.zeros(n, 3))
        # Signed distance of the *rendered* centre from the surface point ``means`` along the source
        # normal, turned with the Gaussian as it moves. Why: splats fit the video best with their
        # centres a fraction of a pixel inside the surface; with the centres held on the mesh
        # (``means_on_surface``) and no such offset, the deformation field sank every Gaussian by
        # that much in every frame but frame 0 — a constant shape change that read as motion
        # (DESIGN.md "Drift of still parts"). ``means`` stays the tracked surface point.
        self.surface_offset = nn.Parameter(torch.zeros(n))

    @property
    def num(self) -> int:
        return self.means.shape[0]

    @classmethod
    def from_mesh(
        cls,
        vertices: np.ndarray,
        faces: np.ndarray,
        colors: np.ndarray,
        n: int,
        sh_degree: int = 1,
        sh_time_basis: int = 4,
        init_opacity: float = 0.3,
        seed: int = 0,
        flat_ratio: float = 1.0,
    ) -> "CanonicalGaussians":
        """``flat_ratio`` < 1 makes surfels: rotated so their local z is the triangle normal and
        that axis scaled by ``flat_ratio``. Why: a round Gaussian centred on the surface spills
        ~1 sigma outside the silhouette, so fitting the mask pulls centres ~1 sigma inside the true
        surface; a flat one lies in the surface and does not (1.0 = isotropic, identity rotation)."""
        if not 0.0 < init_opacity < 1.0:
            raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
        s = sample_surface(vertices, faces, colors, n, seed)
        d, _ = knn_distances(s.points, 3)
        scale = np.clip(d.mean(1), 1e-6, None)
        g = cls(n, sh_degree, sh_time_basis)
        with torch.no_grad():
            g.means.copy_(torch.from_numpy(s.points))
            g.log_scales.copy_(torch.from_numpy(np.log(scale))[:, None].expand(n, 3))
            if flat_ratio != 1.0:
                if not 0.0 < flat_ratio <= 1.0:
                    raise ValueError(f"flat_ratio must be in (0, 1], got {flat_ratio}")
                g.quats.copy_(torch.from_numpy(quats_z_to(s.normals)).float())
                g.log_scales[:, 2] += float(np.log(flat_ratio))
            g.opacity_logit.fill_(float(np.log(init_opacity / (1.0 - init_opacity))))
            g.sh4d[:, 0, :, 0] = rgb_to_sh_dc(torch.from_numpy(s.colors))
            g.face_idx.copy_(torch.from_numpy(s.face_idx))
            g.bary.copy_(torch.from_numpy(s.bary))
            g.normals.copy_(torch.from_numpy(s.normals))
        return g
