"""Stage Two settings. Defaults are the paper's (DESIGN.md §Stage Two); every field can be
overridden from ``job.json``'s ``"stage2"`` object, and unknown keys are rejected so a typo
never silently falls back to a default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Stage2Config:
    # schedule: reconstruction, then reconstruction + 4D-SDS + ARAP
    iters_rec: int = 750
    iters_sds: int = 250
    batch_images: int = 64  # images (view, frame pairs) per iteration; 4x16 = all of them
    resolution: int | None = None  # training render size; None = the job's video size
    # canonical Gaussians
    num_gaussians: int = 20000
    # HexPlane: planes xy xz yz xt yt zt; [spatial, spatial, temporal] resolution, dim per plane
    hexplane_resolution: list[int] = field(default_factory=lambda: [100, 100, 8])
    hexplane_dim: int = 16
    head_hidden: int = 64
    use_diffusion_features: bool = True  # used only when the job carries features
    # 4D SH: degree L, W cosine coefficients per SH coefficient
    sh_degree: int = 1
    sh_time_basis: int = 4
    # learning rates
    lr_hexplane: float = 0.01
    lr_heads: float = 1e-4
    lr_means: float = 1.6e-4
    lr_sh: float = 2.5e-3
    lr_opacity: float = 0.05
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    # loss weights
    w_rec: float = 100.0
    w_sds: float = 0.01
    w_arap: float = 10.0
    arap_k: int = 3
    arap_samples: int = 512
    # background the videos were composited on (RGB in [0, 1]); renders use the same
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    raster_backend: str = "auto"  # auto | gsplat | torch
    checkpoint_every: int = 100
    device: str = "auto"  # auto | cpu | cuda

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None) -> "Stage2Config":
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown stage2 setting(s) {unknown}; known settings: {sorted(known)}"
            )
        return cls(**overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_iters(self) -> int:
        return self.iters_rec + self.iters_sds
