"""The Stage Two model: canonical Gaussians + deformation field (+ optional diffusion features).

``model.frame(f)`` gives the Gaussians of frame ``f`` (deformed means/rotations/scales and the
4D-SH coefficients at that time); ``model.colors(state, cam_centers)`` evaluates their colour
toward each camera. Time is normalised as ``tau = f / (frames - 1)`` everywhere (HexPlane and 4D
SH), so one convention serves training, export and viewers.

``anchor_first_frame`` (default on): the deformation is measured from frame 0,
``x_t = x + D(x, t) - D(x, 0)`` (likewise for rotation and scale). In Track4DGen frame 0 of every
video is the conditioning pose, i.e. the pose of the mesh the Gaussians were sampled from, so
this holds frame 0 exactly at the mesh and stops the field from drifting the whole object by a
time-constant offset (which renders fine but is wrong motion). ``D(x, 0)`` is the same for every
frame of a step: ``model.anchor()`` evaluates it once and ``model.frame(f, anchor)`` reuses it.

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import Stage2Config
from .deformation import DeformationField, quat_conjugate, quat_multiply, quat_normalize, quat_rotate
from .gaussians import CanonicalGaussians
from .hexplane import HexPlane
from .sh4d import coeffs_at, eval_rgb, view_dirs


@dataclass
class Anchor:
    """The field at frame 0, ``D(x, 0)``: what anchored frames subtract (one evaluation per step)."""

    dx: torch.Tensor  # [N, 3]
    dq_conj: torch.Tensor  # [N, 4] conjugate of the rotation delta at frame 0
    ds: torch.Tensor  # [N, 3]


@dataclass
class FrameGaussians:
    means: torch.Tensor  # [N, 3]
    quats: torch.Tensor  # [N, 4] unit wxyz
    log_scales: torch.Tensor  # [N, 3]
    opacity: torch.Tensor  # [N] in (0, 1)
    sh: torch.Tensor  # [N, K, 3] SH coefficients at this frame
    dq: torch.Tensor  # [N, 4] rotation delta canonical -> frame (for ARAP)
    surface: torch.Tensor  # [N, 3] the tracked surface points (``means`` minus the rendered offset)


class Stage2Model(nn.Module):
    def __init__(
        self,
        gaussians: CanonicalGaussians,
        deformation: DeformationField,
        num_frames: int,
        feature_cache: torch.Tensor | None = None,
        proj_dim: int = 16,
        anchor_first_frame: bool = True,
    ) -> None:
        super().__init__()
        self.anchor_first_frame = bool(anchor_first_frame)
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        self.gaussians = gaussians
        self.deformation = deformation
        self.num_frames = int(num_frames)
        if feature_cache is not None:
            # [F, N, C'] visible-view-averaged diffusion features of the canonical centres
            self.register_buffer("feature_cache", feature_cache.float())
            self.feature_proj: nn.Module | None = nn.Linear(feature_cache.shape[-1], proj_dim)
        else:
            self.feature_cache = None
            self.feature_proj = None

    @classmethod
    def build(
        cls,
        cfg: Stage2Config,
        vertices: np.ndarray,
        faces: np.ndarray,
        colors: np.ndarray,
        num_frames: int,
        feature_cache_fn=None,
        seed: int = 0,
    ) -> "Stage2Model":
        """Sample the canonical Gaussians and build the field. ``feature_cache_fn(points) -> [F,N,C']``.

        Construction is seeded (its own RNG scope), so the same job and seed always build the same
        initial model: a resumed run and an uninterrupted one are the same run.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls._build(cfg, vertices, faces, colors, num_frames, feature_cache_fn, seed)

    @classmethod
    def _build(cls, cfg, vertices, faces, colors, num_frames, feature_cache_fn, seed) -> "Stage2Model":
        g = CanonicalGaussians.from_mesh(
            vertices, faces, colors, cfg.num_gaussians, cfg.sh_degree, cfg.sh_time_basis, cfg.init_opacity, seed,
            flat_ratio=cfg.init_flat_ratio,
        )
        lo, hi = vertices.min(0), vertices.max(0)
        hp = HexPlane(lo, hi, cfg.hexplane_resolution, cfg.hexplane_dim, multires=cfg.hexplane_multires)
        cache = feature_cache_fn(g.means.detach()) if feature_cache_fn is not None else None
        extra = cfg.feature_proj_dim if cache is not None else 0
        deform = DeformationField(
            hp, cfg.head_hidden, extra_dim=extra, depth=cfg.head_depth,
            last_init_std=cfg.head_last_init_std if cfg.anchor_first_frame else 0.0,
        )
        return cls(g, deform, num_frames, cache, cfg.feature_proj_dim, cfg.anchor_first_frame)

    def tau(self, frame: int) -> float:
        return frame / (self.num_frames - 1) if self.num_frames > 1 else 0.0

    def anchor(self) -> Anchor | None:
        """``D(x, 0)`` for ``frame(f, anchor)`` (None without ``anchor_first_frame``). Compute it once
        per optimisation step and pass it to every frame rendered in that step."""
        if not self.anchor_first_frame:
            return None
        g = self.gaussians
        extra0 = None if self.feature_cache is None or self.feature_proj is None else self.feature_proj(self.feature_cache[0])
        dx0, dq0, ds0 = self.deformation(g.means, 0.0, extra0)
        return Anchor(dx0, quat_conjugate(dq0), ds0)

    def frame(self, frame: int, anchor: Anchor | None = None) -> FrameGaussians:
        """The Gaussians of ``frame``. ``anchor`` (from ``self.anchor()``) saves re-evaluating
        ``D(x, 0)``; when omitted it is computed here."""
        g = self.gaussians
        tau = self.tau(frame)
        if self.anchor_first_frame and frame == 0:
            # frame 0 is the mesh's pose: no deformation (the field's two evaluations would cancel)
            dx, ds = torch.zeros_like(g.means), torch.zeros_like(g.log_scales)
            dq = torch.tensor([1.0, 0.0, 0.0, 0.0], device=g.means.device, dtype=g.means.dtype).expand(g.num, 4)
        else:
            dx, dq, ds = self._deform(frame, tau, anchor)
        # unit rotation deltas on the hemisphere w >= 0 (q and -q are the same rotation)
        dq = quat_normalize(torch.where(dq[:, :1] < 0, -dq, dq))
        surface = g.means + dx
        means = surface + quat_rotate(dq, g.surface_offset[:, None] * g.normals)
        quats = quat_multiply(dq, quat_normalize(g.quats))
        return FrameGaussians(
            means=means,
            surface=surface,
            quats=quats,
            log_scales=g.log_scales + ds,
            opacity=torch.sigmoid(g.opacity_logit),
            sh=coeffs_at(g.sh4d, tau),
            dq=dq,
        )

    def _deform(self, frame: int, tau: float, anchor: Anchor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.gaussians
        extra = None
        if self.feature_cache is not None and self.feature_proj is not None:
            extra = self.feature_proj(self.feature_cache[frame])
        dx, dq, ds = self.deformation(g.means, tau, extra)
        if self.anchor_first_frame:
            # frame 0 is the conditioning pose the mesh was taken in: measure motion from there
            a = anchor if anchor is not None else self.anchor()
            dx, ds = dx - a.dx, ds - a.ds
            dq = quat_multiply(dq, a.dq_conj)
        return dx, dq, ds

    def colors(self, state: FrameGaussians, cam_centers: torch.Tensor) -> torch.Tensor:
        """Per-camera colours ``[C, N, 3]`` from the frame's SH toward each camera."""
        return eval_rgb(state.sh, view_dirs(state.means, cam_centers))
