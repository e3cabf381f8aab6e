"""HexPlane space-time feature field (K-Planes / 4DGaussians style, paper §3.3).

Six learnable 2D feature planes over the pairs (x,y) (x,z) (y,z) (x,t) (y,t) (z,t). A query
(x, y, z, t) bilinearly samples each plane and the six features are MULTIPLIED elementwise, so a
feature is only non-zero where every projection agrees; this is what lets the time planes act as
a per-region "switch" for motion.

Initialisation follows 4DGaussians: spatial planes ~ U(0.1, 0.5) and time planes = 1, so at
start the product does not depend on t (the field is a static one) and time dependence is learned.

Coordinates: xyz are normalised by the canonical object's bounding box (plus a margin) to [-1, 1];
``t`` is the normalised time in [0, 1] (frame / (frames - 1)) mapped to [-1, 1]. Queries outside
the box are clamped to the border (``padding_mode="border"``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# (first axis, second axis) of each plane; axes 0,1,2 = x,y,z and 3 = t.
PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


class HexPlane(nn.Module):
    """``forward(xyz [N,3] world, t float|[N]) -> features [N, dim]``.

    ``multires`` (default ``(1,)``, the paper's single grid) adds coarser/finer copies of the
    spatial resolution (4DGaussians uses ``(1, 2)``); their products are concatenated, so the output
    dim is ``dim * len(multires)``.
    """

    def __init__(
        self,
        bbox_min: Sequence[float],
        bbox_max: Sequence[float],
        resolution: Sequence[int] = (100, 100, 8),
        dim: int = 16,
        multires: Sequence[float] = (1,),
        margin: float = 0.05,
        init_range: tuple[float, float] = (0.1, 0.5),
    ) -> None:
        super().__init__()
        if len(resolution) != 3:
            raise ValueError(f"hexplane resolution must be [spatial, spatial, temporal], got {list(resolution)}")
        res_xy, res_z, res_t = (int(r) for r in resolution)
        if min(res_xy, res_z, res_t) < 2:
            raise ValueError(f"hexplane resolution entries must be >= 2, got {list(resolution)}")
        lo = torch.as_tensor(bbox_min, dtype=torch.float32)
        hi = torch.as_tensor(bbox_max, dtype=torch.float32)
        extent = (hi - lo).clamp_min(1e-6)
        pad = margin * extent.max()
        self.register_buffer("lo", lo - pad)
        self.register_buffer("hi", hi + pad)
        self.dim = int(dim)
        self.multires = tuple(float(m) for m in multires)
        self.grids = nn.ModuleList()
        for m in self.multires:
            # x and y share the first spatial resolution, z uses the second (paper: [100, 100, 8])
            sizes = [max(2, int(round(res_xy * m))), max(2, int(round(res_xy * m))), max(2, int(round(res_z * m))), res_t]
            planes = nn.ParameterList()
            for a, b in PLANE_AXES:
                # grid_sample: last grid coordinate indexes the height (rows) -> axis b; first -> width axis a
                shape = (1, self.dim, sizes[b], sizes[a])
                if b == 3:
                    planes.append(nn.Parameter(torch.ones(shape)))
                else:
                    planes.append(nn.Parameter(torch.empty(shape).uniform_(*init_range)))
            self.grids.append(planes)

    @property
    def out_dim(self) -> int:
        return self.dim * len(self.multires)

    def normalise(self, xyz: torch.Tensor) -> torch.Tensor:
        """World coordinates -> [-1, 1] within the (padded) canonical bounding box."""
        return (xyz - self.lo) / (self.hi - self.lo) * 2.0 - 1.0

    def forward(self, xyz: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        n = xyz.shape[0]
        p = self.normalise(xyz)
        t_t = torch.as_tensor(t, dtype=p.dtype, device=p.device)
        t_col = (t_t.expand(n) if t_t.dim() == 0 else t_t.reshape(n)) * 2.0 - 1.0
        coords = torch.cat([p, t_col[:, None]], dim=1)  # [N, 4] in [-1, 1]
        outs = []
        for planes in self.grids:
            feat = None
            for plane, (a, b) in zip(planes, PLANE_AXES):
                grid = torch.stack([coords[:, a], coords[:, b]], dim=-1).view(1, 1, n, 2)
                sampled = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
                sampled = sampled.view(self.dim, n).t()
                feat = sampled if feat is None else feat * sampled
            outs.append(feat)
        return torch.cat(outs, dim=-1)

    def spatial_parameters(self) -> list[nn.Parameter]:
        return [p for planes in self.grids for p, (_, b) in zip(planes, PLANE_AXES) if b != 3]

    def time_parameters(self) -> list[nn.Parameter]:
        return [p for planes in self.grids for p, (_, b) in zip(planes, PLANE_AXES) if b == 3]
