"""The MV-VDM's companions: VAE, text encoder + tokenizer, IP-Adapter image encoder.

For ``tiny`` all of them are built from small transformers/diffusers configs with random
weights (seeded), and the tokenizer is ``ByteTokenizer`` — no download, no tokenizer files.
For ``animate3d`` they come from the hub / a local folder through ``weights.from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import MVVDMConfig
from .unet import MVVDM

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ByteTokenizer:
    """Offline deterministic tokenizer for the tiny model: UTF-8 bytes -> ids 0..255, then
    [bos=257] bytes... [eos=258] padded with 256 to ``max_length`` (truncated bytes are dropped).
    It needs no vocabulary file, so tests and the CPU demo never touch the network."""

    pad_id, bos_id, eos_id = 256, 257, 258
    vocab_size = 260

    def __init__(self, max_length: int = 16) -> None:
        self.model_max_length = max_length

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        L = self.model_max_length
        rows = []
        for text in texts:
            body = list(text.encode("utf-8"))[: L - 2]
            ids = [self.bos_id, *body, self.eos_id]
            rows.append(ids + [self.pad_id] * (L - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


@dataclass
class Components:
    """Everything a pipeline / SDS needs. ``tokenizer`` is a ByteTokenizer or a CLIPTokenizer."""

    config: MVVDMConfig
    unet: MVVDM
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    image_encoder: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device=None, dtype=None) -> "Components":
        for m in (self.unet, self.vae, self.text_encoder, self.image_encoder):
            if m is None:
                continue
            if device is not None:
                m.to(device=device)
            if dtype is not None and next(m.parameters()).dtype != dtype:
                m.to(dtype=dtype)
        return self

    def eval(self) -> "Components":
        for m in (self.unet, self.vae, self.text_encoder, self.image_encoder):
            if m is not None:
                m.eval()
        return self


def build_vae(vae_config: dict[str, Any]) -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**vae_config)


def build_text_encoder(text_config: dict[str, Any]) -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**text_config))


def build_tiny_image_encoder(config: MVVDMConfig) -> nn.Module:
    """CLIP vision tower from ``config.image_encoder_config`` or, by default, a 1-layer toy."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    kw = config.image_encoder_config or dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=32, patch_size=16)
    kw = {**kw, "projection_dim": config.ip_embed_dim}
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**kw))


def build_components(config: MVVDMConfig, seed: int = 0, device: str | torch.device | None = None) -> Components:
    """Random-weight components from configs (the tiny model; ``animate3d_random_config()`` for
    benchmarks).  ``device`` builds directly there (fast init of the full model on a GPU)."""
    if config.vae_config is None or config.text_config is None:
        raise ValueError(f"config {config.name!r} has no built-in VAE/text config; load it with weights.from_pretrained")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device or "cpu"):
            unet = MVVDM(config)
            vae = build_vae(config.vae_config)
            text = build_text_encoder(config.text_config)
            image_encoder = build_tiny_image_encoder(config) if config.use_ip_adapter else None
    finally:
        torch.random.set_rng_state(gen_state)
    comp = Components(config, unet, vae, text, ByteTokenizer(config.text_max_length), image_encoder)
    return comp.eval()


# ------------------------------------------------------------------------------ encoders


def tokenize(comp: Components, prompts: Sequence[str]) -> torch.Tensor:
    tok = comp.tokenizer
    if isinstance(tok, ByteTokenizer):
        return tok(prompts)
    return tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids


def encode_text(comp: Components, prompts: Sequence[str]) -> torch.Tensor:
    """[N, T, D] last hidden states of the CLIP text encoder (SD1.5 convention)."""
    ids = tokenize(comp, prompts).to(comp.text_encoder.device)
    return comp.text_encoder(ids)[0]


def _vae_dtype(comp: Components) -> torch.dtype:
    return next(comp.vae.parameters()).dtype


def encode_images(comp: Components, images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> scaled latents [N, 4, H/8, W/8] (posterior mean: deterministic).
    Differentiable, so SDS gradients flow back to the renders."""
    x = (images * 2.0 - 1.0).to(device=comp.vae.device, dtype=_vae_dtype(comp))
    return comp.vae.encode(x).latent_dist.mean * comp.config.vae_scaling_factor


def decode_latents(comp: Components, latents: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Scaled latents [N, 4, h, w] -> images [N, 3, 8h, 8w] in [0, 1] (chunked to bound memory)."""
    outs = []
    z = latents.to(device=comp.vae.device, dtype=_vae_dtype(comp)) / comp.config.vae_scaling_factor
    for i in range(0, z.shape[0], chunk):
        outs.append(comp.vae.decode(z[i:i + chunk]).sample)
    return ((torch.cat(outs) + 1.0) / 2.0).clamp(0.0, 1.0)


def encode_image_embeds(comp: Components, images: torch.Tensor) -> torch.Tensor | None:
    """IP-Adapter image embeddings [N, ip_embed_dim] from [N, 3, H, W] in [0, 1] (CLIP
    preprocessing: bicubic resize to the encoder's size, CLIP mean/std); None without encoder."""
    enc = comp.image_encoder
    if enc is None or not comp.config.use_ip_adapter:
        return None
    size = enc.config.image_size
    p = next(enc.parameters())
    x = F.interpolate(images.to(device=p.device, dtype=torch.float32), size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    x = ((x.clamp(0, 1) - mean) / std).to(p.dtype)
    return enc(pixel_values=x).image_embeds
