"""Stage One model and sampler settings.

Two model configs come from the same code (DESIGN.md §Stage One):

* ``animate3d`` — full size, Stable Diffusion 1.5 widths, the layout of the released Animate3D
  MV-VDM (MVDream SD1.5 U-Net + AnimateDiff v1-5-2 motion modules + IP-Adapter + MV2V adapter).
  Built on the meta device in tests; real weights come from ``weights.py``.
* ``tiny`` — the same blocks with a few channels, 64x64 images (8x8 latents); random weights,
  runs a forward+backward on CPU in about a second.  Its VAE and CLIP text encoder are built from
  transformers/diffusers configs with random init, and its tokenizer is ``ByteTokenizer``
  (UTF-8 bytes -> ids), so nothing is ever downloaded.

Sampler settings (``SamplerConfig``) default to the paper / reference pipeline and can be
overridden from ``job.json``'s ``"stage1"`` object; unknown keys are rejected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class MVVDMConfig:
    """Architecture of the multi-view video diffusion model (U-Net + its VAE/text encoder)."""

    name: str
    # U-Net (diffusers UNetMotionModel arguments)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",)
    up_block_types: tuple[str, ...] = ("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * 3
    layers_per_block: int = 2
    norm_num_groups: int = 32
    cross_attention_dim: int = 768
    num_attention_heads: int = 8  # SD1.5's "attention_head_dim: 8" is really the head count
    motion_num_attention_heads: int = 8
    motion_max_seq_length: int = 32
    in_channels: int = 4
    # added parts (Animate3D)
    camera_dim: int = 16  # flattened 4x4 camera-to-world
    use_i2v: bool = True  # MV2V adapter inside the multi-view self-attention processors
    use_motion_spatial: bool = True  # spatial branch + alpha blender inside motion modules
    use_ip_adapter: bool = True  # IP-Adapter image tokens on cross-attention
    ip_num_tokens: int = 4
    ip_embed_dim: int = 1024  # CLIP ViT-H/14 image embedding (h94/IP-Adapter image encoder)
    # data layout
    num_views: int = 4
    num_frames: int = 16
    resolution: int = 256  # pixels; latents are resolution / 8
    # tracking-prior features: the up-block whose LAST motion module output is captured
    feature_block: str = "up_blocks.1"
    # VAE / text encoder
    vae_scaling_factor: float = 0.18215
    text_max_length: int = 77
    vae_config: dict[str, Any] | None = None  # None -> load from weights
    text_config: dict[str, Any] | None = None  # None -> load from weights
    image_encoder_config: dict[str, Any] | None = None  # None -> tiny CLIP vision / from weights

    @property
    def latent_size(self) -> int:
        return self.resolution // 8

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    def unet_kwargs(self) -> dict[str, Any]:
        """Arguments for diffusers' ``UNetMotionModel`` (its module names are the checkpoint's)."""
        return dict(
            sample_size=self.latent_size,
            in_channels=self.in_channels,
            out_channels=self.in_channels,
            down_block_types=tuple(self.down_block_types),
            up_block_types=tuple(self.up_block_types),
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups,
            cross_attention_dim=self.cross_attention_dim,
            num_attention_heads=self.num_attention_heads,
            motion_num_attention_heads=self.motion_num_attention_heads,
            motion_max_seq_length=self.motion_max_seq_length,
            use_motion_mid_block=True,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MVVDMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MV-VDM config key(s) {unknown}; known: {sorted(known)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


ANIMATE3D = MVVDMConfig(name="animate3d")

# Tiny: 3 levels so that `up_blocks.1` exists and sits at the same relative depth as in the full
# model (latent/4 resolution before its upsampler).  Widths are multiples of the group count.
TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 64,
}
TINY_TEXT = {
    "vocab_size": 260,  # 256 bytes + pad/bos/eos
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
    "projection_dim": 32,
    "pad_token_id": 256,
    "bos_token_id": 257,
    "eos_token_id": 258,
}
TINY = MVVDMConfig(
    name="tiny",
    block_out_channels=(16, 32, 32),
    down_block_types=("CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion", "DownBlockMotion"),
    up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion"),
    layers_per_block=1,
    norm_num_groups=4,
    cross_attention_dim=32,
    num_attention_heads=2,
    motion_num_attention_heads=2,
    ip_embed_dim=16,
    num_views=4,
    num_frames=4,
    resolution=64,
    text_max_length=16,
    vae_config=TINY_VAE,
    text_config=TINY_TEXT,
)

# Public configs of the released companions, for building the full model with RANDOM weights
# (benchmarks on machines without the download): SD1.5 VAE, CLIP ViT-L/14 text encoder,
# IP-Adapter's CLIP ViT-H/14 image encoder.
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512], "sample_size": 256,
}
SD15_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu",
}
VIT_H14_VISION = {
    "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
    "image_size": 224, "patch_size": 14, "projection_dim": 1024, "hidden_act": "gelu",
}


def animate3d_random_config(**overrides: Any) -> MVVDMConfig:
    """The full model with built-in companion configs, so ``build_components`` can make it with
    random weights (benchmarks / memory checks without the 5 GB download)."""
    return replace(ANIMATE3D, vae_config=SD15_VAE, text_config=SD15_TEXT, image_encoder_config=VIT_H14_VISION, **overrides)


CONFIGS: dict[str, MVVDMConfig] = {"animate3d": ANIMATE3D, "tiny": TINY}


def get_config(name: str, **overrides: Any) -> MVVDMConfig:
    """A named config, optionally with fields replaced (e.g. ``num_frames=16`` for tiny)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown Stage One model {name!r}; use one of {sorted(CONFIGS)}")
    return replace(CONFIGS[name], **overrides) if overrides else CONFIGS[name]


# Named sampler presets (job.json ``"stage1": {"preset": NAME, ...}``; explicit keys win).
SAMPLER_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {},  # the defaults: Animate3D's inference settings (+ Track4DGen's eq.-2 noise)
    "fast": {"freeinit_iters": 1},  # FreeInit off: 1 pass of `steps` instead of 3 (3x faster)
}


@dataclass
class SamplerConfig:
    """Sampling / guidance settings (job.json ``"stage1"``).

    Defaults are the reference's (Animate3D ``configs/inference/inference.yaml`` and the 4D
    stage's ``motion_recon_frame_16.yaml``, commit 033a1be): DDIM 25 steps, CFG 7.5, FreeInit on
    (3 iterations, Butterworth low-pass, d_s = d_t = 0.25 as FreeInit's defaults), 4D-SDS with
    t in [20, 200], guidance 5 in the form ``c + s (c - u)``, reconstruction std rescale 0.25.

    One deliberate change (Track4DGen paper eq. 2): the conditional frame is fed as
    ``z + beta_t * eps'`` with ``beta_t = cond_noise_max * t / T``; ``cond_noise_max = 0.0``
    restores the reference (a clean conditional frame) in sampling and in 4D-SDS.
    ``preset="fast"`` turns FreeInit off (``freeinit_iters = 1``) for speed."""

    steps: int = 25
    guidance_scale: float = 7.5  # sampling CFG, u + s (c - u) as diffusers' pipelines
    negative_prompt: str = ""
    # DDIM scheduler (the reference's noise_scheduler_kwargs)
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"
    steps_offset: int = 1
    # paper eq. 2: the conditional frame is z + beta_t * eps', beta_t = cond_noise_max * t / T;
    # 0.0 = the reference (clean conditional frame)
    cond_noise_max: float = 0.1
    # FreeInit (reference: freeinit_enabled, freeinit_num_iters 3, butterworth); 1 = off
    freeinit_iters: int = 3
    freeinit_d_s: float = 0.25
    freeinit_d_t: float = 0.25
    # tracking-prior features: captured at this sampling step index (0-based, cond branch)
    feature_step: int = 20
    feature_block: str | None = None  # None = the model config's (up_blocks.1)
    return_features: bool = True
    # 4D-SDS for Stage Two (reference guidance: min/max_step_percent 0.02/0.2 -> t in [20, 200],
    # guidance_scale 5 in the form c + s (c - u) (0 = conditional only), recon_std_rescale 0.25)
    sds_t_min: int = 20
    sds_t_max: int = 200
    sds_guidance_scale: float = 5.0
    sds_rescale: float = 0.25
    sds_condition: str = "render"  # render (reference: frame 0 of the renders + its IP embeddings) | views
    dtype: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | float32 | float16 | bfloat16
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None) -> "SamplerConfig":
        overrides = dict(overrides or {})
        preset = overrides.pop("preset", "reference")
        if preset not in SAMPLER_PRESETS:
            raise ValueError(f"unknown stage1 preset {preset!r}; use one of {sorted(SAMPLER_PRESETS)}")
        overrides = {**SAMPLER_PRESETS[preset], **overrides}
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown stage1 setting(s) {unknown}; known settings: {sorted(known | {'preset'})}")
        cfg = cls(**overrides)
        if cfg.steps < 1:
            raise ValueError("stage1 'steps' must be >= 1")
        if cfg.freeinit_iters < 1:
            raise ValueError("stage1 'freeinit_iters' must be >= 1 (1 = FreeInit off)")
        if cfg.sds_guidance_scale < 0:
            raise ValueError("stage1 'sds_guidance_scale' must be >= 0 (0 = no guidance)")
        if cfg.sds_condition not in ("render", "views"):
            raise ValueError("stage1 'sds_condition' must be 'render' or 'views'")
        if not 0 <= cfg.sds_t_min < cfg.sds_t_max <= cfg.num_train_timesteps:
            raise ValueError("stage1 needs 0 <= sds_t_min < sds_t_max <= num_train_timesteps")
        return cfg
