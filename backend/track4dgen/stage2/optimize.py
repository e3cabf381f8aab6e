"""Stage Two optimisation: the 750 + 250 schedule (paper §3.3, DESIGN.md §Stage Two).

Phase 1 (``iters_rec``): masked reconstruction + ARAP on random batches of (view, frame) images,
with frames unlocked progressively (``unlocked_frames``, Animate3D's schedule): frame 0 alone,
then one more frame every ``progressive_iters_per_frame`` iterations.
Phase 2 (``iters_sds``): every frame; reconstruction + ARAP + 4D-SDS (when Stage One gives an
``sds_fn``; it scores all frames rendered from a random 4-view orbit each step, ``sds_cameras.py``).
``freeze_canonical`` stops the canonical shape learning once motion frames are in
(``canonical_frozen``).

Beyond the paper, on by default: canonical centres (the tracked surface points) held on the mesh,
each splat drawn at a learned offset along its normal (``means_on_surface``, ``keep_on_surface``).
Off by default (see ``config.SYNTHETIC_64_OVERRIDES``): blurred-image terms
(``rec_pyramid_levels``), frame 0
fitted to the mesh's silhouette in extra cameras (``w_silhouette``), 2D point tracks of the videos
as a long-range motion target (``w_track``, only when ``TrainData.tracks`` is set, stage2/tracks.py;
with them the field is first fitted to the tracks alone, ``Trainer.warm_up_on_tracks``)
and an exponential decay of the field's and the means' learning rates (``lr_final_ratio``, on).

Every iteration is reproducible from (seed, iteration) alone, which is what makes resuming from
a checkpoint continue exactly the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..job import ProgressReporter, finite_or_raise
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Stage2Config
from .losses import SdsFn, arap_loss, knn_indices, reconstruction_loss, track_loss
from .model import Anchor, FrameGaussians, Stage2Model
from .sds_cameras import random_view_sds
from .tracks import TrackTargets

RenderFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def default_render_fn() -> RenderFn:
    from .raster import rasterize

    return rasterize


@dataclass
class TrainData:
    """Targets and cameras at the training resolution."""

    images: torch.Tensor  # [V, F, H, W, 4] straight-alpha RGBA in [0, 1]
    viewmats: torch.Tensor  # [V, 4, 4] world -> camera (OpenCV)
    Ks: torch.Tensor  # [V, 3, 3] pixels, for (W, H)
    background: torch.Tensor  # [3]
    # optional frame-0 mesh silhouettes from extra cameras (stage2/mesh_silhouettes.py)
    silhouettes: torch.Tensor | None = None  # [M, H, W] coverage in [0, 1]
    silhouette_viewmats: torch.Tensor | None = None  # [M, 4, 4]
    silhouette_Ks: torch.Tensor | None = None  # [M, 3, 3]
    # optional 2D-track targets of the Gaussians (stage2/tracks.py); the track term runs only with them
    tracks: TrackTargets | None = None

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def num_frames(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[3], self.images.shape[2]  # (width, height)

    @property
    def cam_centers(self) -> torch.Tensor:
        return torch.linalg.inv(self.viewmats)[:, :3, 3]

    def to(self, device: torch.device) -> "TrainData":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TrainData(self.images.to(device), self.viewmats.to(device), self.Ks.to(device), self.background.to(device),
                         move(self.silhouettes), move(self.silhouette_viewmats), move(self.silhouette_Ks),
                         None if self.tracks is None else self.tracks.to(device))


def render_frame(
    model: Stage2Model, data: TrainData, frame: int, views: list[int], render_fn: RenderFn, backend: str = "auto",
    mode: str = Stage2Config.raster_mode, anchor: Anchor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Render ``views`` of ``frame``: (rgb [C,H,W,3] on the background, alpha [C,H,W,1], frame state).
    ``anchor``: ``model.anchor()`` computed once for all frames of a step."""
    state = model.frame(frame, anchor)
    vi = torch.as_tensor(views, device=data.viewmats.device)
    rgb, alpha = render_state(model, state, data.viewmats[vi], data.Ks[vi], data.size, data.background, render_fn, backend, mode)
    return rgb, alpha, state


def render_state(
    model: Stage2Model, state: FrameGaussians, viewmats: torch.Tensor, Ks: torch.Tensor, size: tuple[int, int], background: torch.Tensor,
    render_fn: RenderFn, backend: str = "auto", mode: str = Stage2Config.raster_mode,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one frame's Gaussians in the given cameras: (rgb [C,H,W,3], alpha [C,H,W,1])."""
    colors = model.colors(state, torch.linalg.inv(viewmats)[:, :3, 3])
    width, height = size
    return render_fn(
        state.means,
        state.quats,
        torch.exp(state.log_scales),
        state.opacity,
        colors,
        viewmats,
        Ks,
        width,
        height,
        backgrounds=background[None].expand(len(viewmats), 3),
        backend=backend,
        rasterize_mode=mode,
    )


def unlocked_frames(iteration: int, cfg: Stage2Config, num_frames: int) -> int:
    """How many frames (0 .. n-1) the batches of ``iteration`` draw from.

    Animate3D trains its reconstruction progressively, one more frame every 50 iterations, so each
    new frame starts from a field that already explains its neighbour in time. Frame 0 (the mesh's
    pose) comes first, alone: it fits the canonical Gaussians before any motion is asked of them.
    The step is ``min(progressive_iters_per_frame, iters_rec / frames)`` so a shortened schedule
    still unlocks every frame before the SDS phase, which always sees all of them."""
    p = cfg.progressive_iters_per_frame
    if p <= 0 or iteration >= cfg.iters_rec or num_frames <= 1:
        return num_frames
    step = min(float(p), cfg.iters_rec / num_frames)
    return min(num_frames, int(iteration // step) + 1)


def canonical_frozen(iteration: int, cfg: Stage2Config, num_frames: int) -> bool:
    """True when ``freeze_canonical`` holds the canonical shape still: once frame 1 is in the pool."""
    return cfg.freeze_canonical and unlocked_frames(iteration, cfg, num_frames) > 1


CANONICAL_SHAPE_GROUPS = ("means", "opacity", "scales", "quats", "surface_offset")


def field_parameter_groups(model: Stage2Model, cfg: Stage2Config) -> list[dict]:
    """The motion field's parameter groups: the HexPlane, and the heads with the diffusion-feature
    projection that feeds them."""
    heads = model.deformation.head_parameters()
    if model.feature_proj is not None:
        heads = heads + list(model.feature_proj.parameters())
    return [{"name": "hexplane", "params": list(model.deformation.hexplane.parameters()), "lr": cfg.lr_hexplane},
            {"name": "heads", "params": heads, "lr": cfg.lr_heads}]


def build_optimizer(model: Stage2Model, cfg: Stage2Config) -> torch.optim.Adam:
    """Adam with one group per parameter kind, at the paper's / 3DGS's learning rates."""
    g = model.gaussians
    groups = [
        *field_parameter_groups(model, cfg),
        {"name": "means", "params": [g.means], "lr": cfg.lr_means},
        {"name": "sh", "params": [g.sh4d], "lr": cfg.lr_sh},
        {"name": "opacity", "params": [g.opacity_logit], "lr": cfg.lr_opacity},
        {"name": "scales", "params": [g.log_scales], "lr": cfg.lr_scales},
        {"name": "quats", "params": [g.quats], "lr": cfg.lr_quats},
        # only centres held on the mesh need a rendered offset from it (gaussians.py)
        {"name": "surface_offset", "params": [g.surface_offset], "lr": cfg.lr_surface_offset if cfg.means_on_surface else 0.0},
    ]
    return torch.optim.Adam(groups, lr=cfg.lr_heads, eps=1e-15)


class Trainer:
    def __init__(
        self,
        model: Stage2Model,
        data: TrainData,
        cfg: Stage2Config,
        sds_fn: SdsFn | None = None,
        render_fn: RenderFn | None = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.data = data
        self.cfg = cfg
        self.sds_fn = sds_fn
        self.render_fn = render_fn or default_render_fn()
        self.seed = seed
        self.optimizer = build_optimizer(model, cfg)
        self.base_lrs = {grp["name"]: grp["lr"] for grp in self.optimizer.param_groups}
        self.neighbours = knn_indices(model.gaussians.means.detach(), cfg.arap_k)
        self.canon_means0 = model.gaussians.means.detach().clone()
        self.last: dict[str, float] = {}

    # ---------------------------------------------------------------------------------------
    def batch(self, iteration: int) -> dict[int, list[int]]:
        """(view, frame) pairs of this iteration, grouped by frame (deformation runs once per frame);
        drawn from the frames ``unlocked_frames`` allows."""
        nv = self.data.num_views
        nf = unlocked_frames(iteration, self.cfg, self.data.num_frames)
        total = nv * nf
        b = max(1, min(self.cfg.batch_images, total))  # SDS renders its own cameras (sds_cameras.py)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        picks = torch.randperm(total, generator=gen)[:b].tolist()
        groups: dict[int, list[int]] = {}
        for p in sorted(picks):
            groups.setdefault(p % nf, []).append(p // nf)
        return groups

    def step(self, iteration: int) -> dict[str, float]:
        cfg, data = self.cfg, self.data
        self.optimizer.zero_grad(set_to_none=True)
        groups = self.batch(iteration)
        phase2 = iteration >= cfg.iters_rec
        use_arap = cfg.w_arap > 0
        use_track = cfg.w_track > 0 and data.tracks is not None
        gen = torch.Generator().manual_seed(self.seed * 7_919 + iteration)
        n = self.model.gaussians.num
        samples = torch.randperm(n, generator=gen)[: min(cfg.arap_samples, n)].to(self.canon_means0.device)
        # D(x, 0): once per step, shared by every frame below (frame 0 alone needs none)
        anchor = self.model.anchor() if any(f > 0 for f in groups) else None
        rec_total, arap_total, n_img = 0.0, 0.0, 0
        track_sum, n_track = torch.zeros((), device=data.images.device), 0
        loss = torch.zeros((), device=data.images.device)
        stats = {"rec_rgb": 0.0, "rec_mask": 0.0}
        for frame, views in groups.items():
            rgb, alpha, state = render_frame(self.model, data, frame, views, self.render_fn, cfg.raster_backend, cfg.raster_mode, anchor)
            rec, parts = reconstruction_loss(rgb, alpha, data.images[views, frame], data.background, cfg.rec_pyramid_levels)
            weight = len(views)
            loss = loss + cfg.w_rec * rec * weight
            rec_total += float(rec.detach()) * weight
            for k in stats:
                stats[k] += parts[k] * weight
            n_img += weight
            if use_arap and frame > 0:  # frame 0 is the canonical pose itself: nothing to hold rigid
                ar = arap_loss(self.model.gaussians.means, state.surface, self.neighbours, samples, cfg.arap_relative, state.dq)
                loss = loss + cfg.w_arap * ar * weight
                arap_total += float(ar.detach()) * weight
            if use_track and frame > 0:
                vi = torch.as_tensor(views, device=data.viewmats.device)
                tr = track_loss(state.surface, self.model.gaussians.means, data.viewmats[vi], data.Ks[vi],
                                data.tracks.at(vi, frame), data.size)
                track_sum = track_sum + tr * weight
                n_track += weight
        loss = loss / n_img
        if n_track:  # mean over the batch's (view, frame > 0) pairs
            decay = cfg.track_final_ratio ** min(1.0, iteration / max(1, cfg.total_iters))
            loss = loss + cfg.w_track * decay * track_sum / n_track
        out = {"rec": rec_total / n_img, **{k: v / n_img for k, v in stats.items()}}
        if use_arap:
            out["arap"] = arap_total / n_img
        if n_track:
            out["track"] = float(track_sum.detach()) / n_track
        if phase2 and self.sds_fn is not None:  # 4D-SDS from a random orbit (stage2/sds_cameras.py)
            render_sds = lambda f, viewmats, Ks: self._render_for_sds(f, viewmats, Ks, anchor)  # noqa: E731
            sds, _ = random_view_sds(self.sds_fn, render_sds, data.num_views, data.num_frames, data.size,
                                     torch.Generator().manual_seed(self.seed * 104_729 + iteration), data.viewmats.device)
            if sds is not None:
                loss = loss + cfg.w_sds * sds
                out["sds"] = float(sds.detach())
        if cfg.w_silhouette > 0 and data.silhouettes is not None:
            sil = self.silhouette_loss(iteration)
            loss = loss + cfg.w_silhouette * sil  # already a per-image mean, like the terms above
            out["silhouette"] = float(sil.detach())
        out["loss"] = float(loss.detach())
        finite_or_raise("stage2 loss", out["loss"])
        loss.backward()
        self._set_lrs(iteration)
        self.optimizer.step()
        if cfg.means_on_surface and not canonical_frozen(iteration, cfg, self.data.num_frames):
            self.keep_on_surface()
        self.last = out
        return out

    def warm_up_on_tracks(self, reporter: ProgressReporter | None = None) -> dict[str, float]:
        """Fit the motion field to the 2D tracks alone before the schedule starts.

        Why: the image terms compare each frame with the video, and a part whose look repeats
        (the blades of a propeller, spokes, legs in step) matches the images equally well at the
        wrong phase; once the field has settled there the images hold it. The tracks say which way
        every point went, so the field starts in the right basin. No rendering: the track and ARAP
        terms over every (view, frame > 0) at once, with a fresh Adam on the field's parameters
        only (the canonical Gaussians are the mesh's). Seeded, so a restart repeats it exactly."""
        cfg, data, model = self.cfg, self.data, self.model
        if cfg.track_warmup_iters <= 0 or cfg.w_track <= 0 or data.tracks is None or data.num_frames < 2:
            return {}
        opt = torch.optim.Adam(field_parameter_groups(model, cfg), eps=1e-15)
        canon = model.gaussians.means.detach()
        n, pairs = model.gaussians.num, data.num_frames - 1
        for it in range(cfg.track_warmup_iters):
            opt.zero_grad(set_to_none=True)
            anchor = model.anchor()
            gen = torch.Generator().manual_seed(self.seed * 31_337 + it)
            samples = torch.randperm(n, generator=gen)[: min(cfg.arap_samples, n)].to(canon.device)
            track = arap = torch.zeros((), device=canon.device)
            for frame in range(1, data.num_frames):
                state = model.frame(frame, anchor)
                track = track + track_loss(state.surface, canon, data.viewmats, data.Ks, data.tracks.at(slice(None), frame),
                                           data.size, deadzone_px=cfg.track_warmup_deadzone_px)
                if cfg.track_warmup_w_arap > 0:
                    arap = arap + arap_loss(canon, state.surface, self.neighbours, samples, cfg.arap_relative, state.dq)
            loss = (cfg.w_track * track + cfg.track_warmup_w_arap * arap) / pairs
            finite_or_raise("stage2 track warm-up loss", float(loss.detach()))
            loss.backward()
            opt.step()
            if reporter is not None and ((it + 1) % 10 == 0 or it + 1 == cfg.track_warmup_iters):
                reporter.update("track_warmup", it + 1, cfg.track_warmup_iters, f"track loss {float(track.detach()) / pairs:.4f}")
        return {"warmup_track": float(track.detach()) / pairs, "warmup_arap": float(arap.detach()) / pairs}

    def silhouette_loss(self, iteration: int) -> torch.Tensor:
        """L2 between frame 0's alpha and the mesh's silhouette in one extra camera (seeded pick)."""
        data = self.data
        gen = torch.Generator().manual_seed(self.seed * 15_485_863 + iteration)
        m = int(torch.randint(len(data.silhouettes), (1,), generator=gen))
        _, alpha = render_state(self.model, self.model.frame(0), data.silhouette_viewmats[m:m + 1], data.silhouette_Ks[m:m + 1],
                                data.size, data.background, self.render_fn, self.cfg.raster_backend, self.cfg.raster_mode)
        return (alpha[0, ..., 0] - data.silhouettes[m]).pow(2).mean()

    @torch.no_grad()
    def keep_on_surface(self) -> None:
        """Remove each canonical centre's offset along its source triangle's normal.

        Why: splats fit a silhouette best with their centres a fraction of a pixel inside the
        surface (a splat's footprint reaches past its centre), so free centres sink into the mesh.
        The mesh is the known shape, so the centres may slide along it (coverage, appearance) but
        not off it; scales and opacities take up the silhouette instead."""
        g = self.model.gaussians
        offset = ((g.means - self.canon_means0) * g.normals).sum(-1, keepdim=True)
        g.means.sub_(offset * g.normals)

    def _render_for_sds(self, frame: int, viewmats: torch.Tensor, Ks: torch.Tensor, anchor: Anchor | None) -> torch.Tensor:
        """rgb [C, H, W, 3] of ``frame`` in the SDS cameras (on the training background)."""
        d = self.data
        return render_state(self.model, self.model.frame(frame, anchor), viewmats, Ks, d.size, d.background, self.render_fn,
                            self.cfg.raster_backend, self.cfg.raster_mode)[0]

    def _set_lrs(self, iteration: int) -> None:
        """Exponential decay of the field's and the means' learning rates to ``lr_final_ratio``;
        zero for the canonical shape while ``canonical_frozen``."""
        frac = min(1.0, iteration / max(1, self.cfg.total_iters))
        decay = self.cfg.lr_final_ratio**frac
        frozen = canonical_frozen(iteration, self.cfg, self.data.num_frames)
        for grp in self.optimizer.param_groups:
            base = self.base_lrs[grp["name"]]
            grp["lr"] = base * decay if grp["name"] in ("hexplane", "heads", "means") else base
            if frozen and grp["name"] in CANONICAL_SHAPE_GROUPS:
                grp["lr"] = 0.0

    # ---------------------------------------------------------------------------------------
    def train(
        self,
        reporter: ProgressReporter | None = None,
        checkpoint_dir=None,
        stop_after: int | None = None,
    ) -> dict[str, float]:
        """Run (or resume) the schedule. ``stop_after`` ends early after that many iterations in
        total without a final checkpoint (tests use it to simulate a killed run). A checkpoint is
        also written at the very end, so a run killed during export does not train again."""
        cfg = self.cfg
        expect = {"config": cfg.to_dict(), "num_gaussians": self.model.gaussians.num, "frames": self.data.num_frames}
        start = load_checkpoint(checkpoint_dir, self.model, self.optimizer, expect)
        if start == 0:
            self.warm_up_on_tracks(reporter)
        total = cfg.total_iters
        end = total if stop_after is None else min(total, stop_after)
        t0 = time.monotonic()
        for it in range(start, end):
            out = self.step(it)
            done = it + 1
            if reporter is not None:
                reporter.update("stage2", done, total, f"loss {out['loss']:.4f}")
            if checkpoint_dir is not None and cfg.checkpoint_every > 0 and (done % cfg.checkpoint_every == 0 or done == total):
                save_checkpoint(checkpoint_dir, self.model, self.optimizer, done, {"expect": expect})
        elapsed = time.monotonic() - t0
        return {
            "start_iteration": start,
            "iterations": end,
            "train_s": elapsed,
            "it_per_s": (end - start) / elapsed if elapsed > 0 and end > start else 0.0,
            **self.last,
        }
