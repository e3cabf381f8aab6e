"""Deformation decoder: hybrid feature -> (dx, dq, ds) per Gaussian and time (paper §3.3).

A shared trunk (Linear + ReLU, 4DGaussians' ``feature_out``) feeds three small heads. The last
layer of every head is zero-initialised, so at any t the field starts as the identity and the
canonical shape renders unchanged until the images ask for motion.

- dx is scaled by the object's bounding-box extent, so the heads work in object-relative units
  whatever the mesh's world size.
- dq is a quaternion delta ``normalize((1,0,0,0) + head)`` applied as ``q_t = dq * q_0``.
- ds is added to the log-scales.
"""

from __future__ import annotations

import torch
from torch import nn

from .hexplane import HexPlane


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of wxyz quaternions ``[..., 4]``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    """Inverse rotation of a unit wxyz quaternion."""
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], device=q.device, dtype=q.dtype)


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``v [..., 3]`` by unit wxyz quaternions ``q [..., 4]`` (broadcast):
    v' = v + 2w (u x v) + 2 u x (u x v), the quaternion form of Rodrigues' formula."""
    w, u = q[..., :1], q[..., 1:].expand_as(v)
    t = 2.0 * torch.linalg.cross(u, v)
    return v + w * t + torch.linalg.cross(u, t)


def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _head(hidden: int, out: int, last_init_std: float = 0.0) -> nn.Sequential:
    last = nn.Linear(hidden, out)
    nn.init.zeros_(last.bias)
    if last_init_std > 0:
        nn.init.normal_(last.weight, std=last_init_std)
    else:
        nn.init.zeros_(last.weight)
    return nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), last)


class DeformationField(nn.Module):
    """``forward(means, t, extra=None) -> (dx [N,3], dq [N,4] unit wxyz, ds [N,3])``.

    ``extra`` is the optional per-Gaussian diffusion feature (already projected), concatenated
    with the HexPlane feature before the trunk.
    """

    def __init__(
        self, hexplane: HexPlane, hidden: int = 64, extra_dim: int = 0, depth: int = 1, last_init_std: float = 0.0
    ) -> None:
        super().__init__()
        self.hexplane = hexplane
        self.extra_dim = int(extra_dim)
        layers: list[nn.Module] = [nn.Linear(hexplane.out_dim + self.extra_dim, hidden)]
        for _ in range(depth - 1):
            layers += [nn.ReLU(), nn.Linear(hidden, hidden)]
        self.trunk = nn.Sequential(*layers)
        self.head_x = _head(hidden, 3, last_init_std)
        self.head_r = _head(hidden, 4, last_init_std)
        self.head_s = _head(hidden, 3, last_init_std)
        self.register_buffer("extent", (hexplane.hi - hexplane.lo).max().detach().clone())

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.trunk, self.head_x, self.head_r, self.head_s) for p in m.parameters()]

    def forward(
        self, means: torch.Tensor, t: float | torch.Tensor, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat = self.hexplane(means, t)
        if self.extra_dim:
            if extra is None:
                raise ValueError("this deformation field was built with diffusion features; pass extra")
            feat = torch.cat([feat, extra], dim=-1)
        h = self.trunk(feat)
        dx = self.head_x(h) * self.extent
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=h.device, dtype=h.dtype)
        dq = quat_normalize(identity + self.head_r(h))
        ds = self.head_s(h)
        return dx, dq, ds
