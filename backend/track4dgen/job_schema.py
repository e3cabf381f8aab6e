"""Types and ranges of every ``job.json`` setting (``stage1``, ``stage2``, ``weights``).

Why one table: the config dataclasses only check key *names*, so ``num_gaussians: 1e9``, a NaN
learning rate or a string where a number belongs reached the trainer and crashed or exhausted the
machine. ``job.parse_spec`` (used by ``track4dgen run`` and by the server alike) checks every value
here first, so a local run and a remote submit refuse the same job with the same message.

The tables are kept beside the dataclasses by a test (tests/test_job.py) that requires every
``Stage2Config`` / ``SamplerConfig`` field to have exactly one entry here and no entry to name a
field that does not exist, so adding or removing a setting without its range fails CI.

The ranges are generous (the paper's GPU schedule and several times it fit) but finite: each one
bounds the memory or time a single job can claim. ``resource_problems`` adds the few limits that
only combinations of settings reveal (HexPlane size, total iterations x Gaussians).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .stage1.config import SAMPLER_PRESETS


@dataclass(frozen=True)
class Num:
    """An int or float in [lo, hi]; ``optional`` admits null (the dataclass default None)."""

    kind: type
    lo: float
    hi: float
    optional: bool = False

    def problem(self, v: Any) -> str | None:
        if v is None and self.optional:
            return None
        what = "an integer" if self.kind is int else "a number"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.kind is int and not isinstance(v, int)):
            return f"must be {what} in [{self.lo:g}, {self.hi:g}]{' or null' if self.optional else ''}"
        if not math.isfinite(v) or not self.lo <= v <= self.hi:
            return f"must be {what} in [{self.lo:g}, {self.hi:g}]"
        return None


@dataclass(frozen=True)
class NumList:
    """A list of ``n_min``..``n_max`` numbers, each a valid ``item``."""

    item: Num
    n_min: int
    n_max: int

    def problem(self, v: Any) -> str | None:
        if isinstance(v, list) and self.n_min <= len(v) <= self.n_max and all(self.item.problem(x) is None for x in v):
            return None
        n = f"{self.n_min}" if self.n_min == self.n_max else f"{self.n_min}-{self.n_max}"
        what = "integers" if self.item.kind is int else "numbers"
        return f"must be a list of {n} {what}, each in [{self.item.lo:g}, {self.item.hi:g}]"


@dataclass(frozen=True)
class Bool:
    def problem(self, v: Any) -> str | None:
        return None if isinstance(v, bool) else "must be true or false"


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]

    def problem(self, v: Any) -> str | None:
        return None if isinstance(v, str) and v in self.values else f"must be one of {list(self.values)}"


@dataclass(frozen=True)
class Text:
    """A string of at most ``max_len`` characters matching ``pattern`` (or null when optional)."""

    max_len: int
    pattern: str = r"[\s\S]*"
    optional: bool = False

    def problem(self, v: Any) -> str | None:
        if v is None and self.optional:
            return None
        if not isinstance(v, str) or len(v) > self.max_len or not re.fullmatch(self.pattern, v):
            return f"must be a string of at most {self.max_len} characters" + (
                f" matching {self.pattern}" if self.pattern != r"[\s\S]*" else "")
        return None


DEVICE_PATTERN = r"auto|cpu|cuda|cuda:[0-9]{1,2}"

_LR = Num(float, 0.0, 1.0)
_WEIGHT = Num(float, 0.0, 1e6)
_FRACTION = Num(float, 0.0, 1.0)

STAGE2: dict[str, Any] = {
    "iters_rec": Num(int, 0, 100_000),
    "iters_sds": Num(int, 0, 100_000),
    "batch_images": Num(int, 1, 1024),
    "resolution": Num(int, 16, 1024, optional=True),
    "num_gaussians": Num(int, 1, 1_000_000),
    "init_flat_ratio": Num(float, 1e-3, 1.0),
    "init_opacity": Num(float, 1e-4, 0.9999),
    "hexplane_resolution": NumList(Num(int, 1, 512), 3, 3),
    "hexplane_dim": Num(int, 1, 128),
    "hexplane_multires": NumList(Num(float, 0.01, 4.0), 1, 4),
    "head_hidden": Num(int, 1, 1024),
    "anchor_first_frame": Bool(),
    "head_last_init_std": _FRACTION,
    "head_depth": Num(int, 1, 8),
    "use_diffusion_features": Bool(),
    "feature_pca_dim": Num(int, 1, 1024),
    "feature_proj_dim": Num(int, 1, 256),
    "sh_degree": Num(int, 0, 3),
    "sh_time_basis": Num(int, 1, 32),
    "lr_hexplane": _LR,
    "lr_heads": _LR,
    "lr_means": _LR,
    "means_on_surface": Bool(),
    "lr_sh": _LR,
    "lr_opacity": _LR,
    "lr_scales": _LR,
    "lr_quats": _LR,
    "lr_surface_offset": _LR,
    "w_rec": _WEIGHT,
    "rec_pyramid_levels": Num(int, 0, 8),
    "w_sds": _WEIGHT,
    "w_arap": _WEIGHT,
    "arap_k": Num(int, 1, 32),
    "arap_samples": Num(int, 1, 100_000),
    "arap_relative": Bool(),
    "progressive_iters_per_frame": Num(int, 0, 10_000),  # 0 = every frame from the start
    "freeze_canonical": Bool(),
    "w_silhouette": _WEIGHT,
    "silhouette_offsets_deg": NumList(Num(float, -360.0, 360.0), 0, 16),
    "w_track": _WEIGHT,
    "track_warmup_iters": Num(int, 0, 5000),
    "track_final_ratio": Num(float, 1e-6, 1.0),
    "track_warmup_w_arap": _WEIGHT,
    "track_warmup_deadzone_px": Num(float, 0.0, 64.0),
    "track_occluded_weight": Num(float, 0.0, 1.0),
    "track_k": Num(int, 1, 16),
    "tracker": Choice(("none", "cotracker3", "cotracker3-official", "auto")),
    "track_grid": Num(int, 2, 128),
    "lr_final_ratio": Num(float, 1e-6, 1.0),
    "background": NumList(_FRACTION, 3, 3),
    "raster_backend": Choice(("auto", "gsplat", "torch")),
    "raster_mode": Choice(("antialiased", "classic")),
    "checkpoint_every": Num(int, 0, 1_000_000),  # 0 = no checkpoints
    "fps": Num(int, 1, 240),
    "device": Text(16, DEVICE_PATTERN),
    "vertex_motion": Choice(("bind", "field")),
    "vertex_arap_weight": Num(float, 0.0, 1000.0),
    "vertex_arap_iters": Num(int, 0, 100),
    "vertex_arap_max_stretch": Num(float, 0.0, 10.0),
    "write_frame_plys": Bool(),
}

STAGE1: dict[str, Any] = {
    "preset": Choice(tuple(SAMPLER_PRESETS)),  # named defaults (stage1/config.py), explicit keys win
    "steps": Num(int, 1, 1000),
    "guidance_scale": Num(float, 0.0, 100.0),
    "negative_prompt": Text(1000),
    "num_train_timesteps": Num(int, 1, 10_000),
    "beta_start": _FRACTION,
    "beta_end": _FRACTION,
    "beta_schedule": Choice(("linear", "scaled_linear", "squaredcos_cap_v2")),
    "steps_offset": Num(int, 0, 100),
    "cond_noise_max": _FRACTION,
    "freeinit_iters": Num(int, 1, 10),
    "freeinit_d_s": _FRACTION,
    "freeinit_d_t": _FRACTION,
    "feature_step": Num(int, 0, 1000),
    "feature_block": Text(200, r"[A-Za-z_][A-Za-z0-9_.]*", optional=True),
    "return_features": Bool(),
    "sds_t_min": Num(int, 0, 10_000),
    "sds_t_max": Num(int, 0, 10_000),
    "sds_guidance_scale": Num(float, 0.0, 100.0),
    "sds_rescale": _FRACTION,
    "sds_condition": Choice(("render", "views")),
    "dtype": Choice(("auto", "float32", "float16", "bfloat16")),
}

WEIGHTS: dict[str, Any] = {
    "path": Text(4096),  # a folder on the machine that runs the job (refused from remote jobs)
}

SECTIONS = {"stage1": STAGE1, "stage2": STAGE2, "weights": WEIGHTS}

# combined budgets: what no single range can express
MAX_HEXPLANE_PARAMS = 64_000_000  # floats in all HexPlane grids (256 MB in fp32)
MAX_GAUSSIAN_ITERS = 20_000_000_000  # num_gaussians x total iterations (the paper: 20k x 1000 = 2e7)


def section_problems(section: str, values: dict[str, Any]) -> list[str]:
    """Every setting of ``job.json[section]`` that is unknown or out of its type/range."""
    schema = SECTIONS[section]
    problems = []
    for key in sorted(values):
        rule = schema.get(key)
        if rule is None:
            problems.append(f"unknown {section} setting '{key}' (known settings: {sorted(schema)})")
            continue
        bad = rule.problem(values[key])
        if bad:
            problems.append(f"'{section}.{key}' {bad}, got {_short(values[key])}")
    return problems


def resource_problems(stage2: dict[str, Any]) -> list[str]:
    """Budgets over combinations of (already range-checked) Stage Two settings."""
    from .stage2.config import Stage2Config

    cfg = Stage2Config.from_overrides(stage2)
    s, _, t = cfg.hexplane_resolution
    per_scale = cfg.hexplane_dim * (3 * s * s + 3 * s * t)
    params = int(sum(per_scale * max(m, 1.0) ** 2 for m in cfg.hexplane_multires))
    problems = []
    if params > MAX_HEXPLANE_PARAMS:
        problems.append(f"the HexPlane grids would hold {params:,} values (limit {MAX_HEXPLANE_PARAMS:,}); "
                        "lower 'stage2.hexplane_resolution', 'hexplane_dim' or 'hexplane_multires'")
    work = cfg.num_gaussians * (cfg.iters_rec + cfg.iters_sds)
    if work > MAX_GAUSSIAN_ITERS:
        problems.append(f"num_gaussians x (iters_rec + iters_sds) = {work:,} exceeds the budget {MAX_GAUSSIAN_ITERS:,}; "
                        "lower 'stage2.num_gaussians' or the iteration counts")
    return problems


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
