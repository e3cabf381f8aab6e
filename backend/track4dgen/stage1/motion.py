"""Animate3D's spatio-temporal motion-module processor.

AnimateDiff's motion modules (diffusers ``AnimateDiffTransformer3D``) attend over the F frames of
each pixel.  Animate3D installs a processor on both attention layers of every motion module that

* restores the temporal sinusoidal position encoding (``time_pos_embed``; the block's own
  ``pos_embed`` is removed), then runs AnimateDiff temporal attention with the layer's weights;
* runs a *spatial* branch (``to_{q,k,v,out}_sp``): per frame, all V views' tokens attend to each
  other, with a 2D sine position encoding (DETR-style, normalised) added per view;
* mixes the two with a learned ``alpha_blender`` (sigmoid(mix_factor), mix_factor init 0 -> 0.5).

Input layout (from diffusers): [(b v h w), F, C]; ``MVContext.hw`` carries h, w (set by a
forward pre-hook on the motion module, see ``unet.py``).
"""

from __future__ import annotations

import math

import torch
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from torch import nn

from .attention import MVContext, attend


def sine_position_encoding_2d(h: int, w: int, channels: int, device=None, dtype=torch.float32,
                              temperature: float = 10000.0, scale: float = 2 * math.pi, eps: float = 1e-6) -> torch.Tensor:
    """[channels, h, w] normalised 2D sine encoding: first half encodes y, second half x; within a
    half, even channels are sin and odd channels cos of position / temperature^(2*(i//2)/half)."""
    half = channels // 2
    y = torch.arange(1, h + 1, device=device, dtype=torch.float32) / (h + eps) * scale
    x = torch.arange(1, w + 1, device=device, dtype=torch.float32) / (w + eps) * scale
    i = torch.arange(half, device=device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def enc(p: torch.Tensor) -> torch.Tensor:  # [n] -> [n, half] interleaved sin/cos
        a = p[:, None] / dim_t
        return torch.stack((a[:, 0::2].sin(), a[:, 1::2].cos()), dim=2).reshape(p.shape[0], -1)

    ey = enc(y)[:, None, :].expand(h, w, half)
    ex = enc(x)[None, :, :].expand(h, w, half)
    pos = torch.cat((ey, ex), dim=2).permute(2, 0, 1)
    if pos.shape[0] < channels:  # odd channel count: pad (never the case for U-Net widths)
        pos = torch.cat([pos, pos.new_zeros(channels - pos.shape[0], h, w)])
    return pos.to(dtype)


class AlphaBlender(nn.Module):
    """Learned mix ``a * spatial + (1 - a) * temporal`` with ``a = sigmoid(mix_factor)``; the
    same parameter name and rule as diffusers' ``AlphaBlender(merge_strategy="learned")``, but
    created on the current default device (so the model can be built on ``meta``)."""

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        self.mix_factor = nn.Parameter(torch.full((1,), float(alpha)))

    def forward(self, x_spatial: torch.Tensor, x_temporal: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.mix_factor).to(x_spatial.dtype)
        return a * x_spatial + (1.0 - a) * x_temporal


class SpatioTemporalProcessor(nn.Module):
    """Temporal attention (AnimateDiff weights) blended with a multi-view spatial branch."""

    def __init__(self, hidden_size: int, context: MVContext, max_seq_length: int = 32, use_spatial: bool = True) -> None:
        super().__init__()
        self.context = context
        self.use_spatial = use_spatial
        self.time_pos_embed = SinusoidalPositionalEmbedding(embed_dim=hidden_size, max_seq_length=max_seq_length)
        if use_spatial:
            self.to_q_sp = nn.Linear(hidden_size, hidden_size, bias=False)
            self.to_k_sp = nn.Linear(hidden_size, hidden_size, bias=False)
            self.to_v_sp = nn.Linear(hidden_size, hidden_size, bias=False)
            self.to_out_sp = nn.Linear(hidden_size, hidden_size, bias=True)
            self.alpha_blender = AlphaBlender(alpha=0.0)

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        residual = hidden_states
        n, Fr, C = hidden_states.shape
        if Fr > self.time_pos_embed.pe.shape[1]:
            raise ValueError(f"{Fr} frames exceed the motion module's max_seq_length {self.time_pos_embed.pe.shape[1]}")
        # temporal branch: every pixel of every view attends over its F frames
        t = self.time_pos_embed(hidden_states)
        temporal = attn.to_out[1](attn.to_out[0](attend(attn, attn.to_q(t), attn.to_k(t), attn.to_v(t))))
        if not self.use_spatial:
            out = temporal
        else:
            if self.context.hw is None:
                raise RuntimeError("MVContext.hw is unset: run the motion module through MVVDM.forward")
            h, w = self.context.hw
            V = self.context.num_views
            bv = n // (h * w)
            B = bv // V
            s = hidden_states.view(bv, h * w, Fr, C)
            pe = sine_position_encoding_2d(h, w, C, device=s.device, dtype=s.dtype).reshape(C, h * w).t()
            s = s + pe[None, :, None, :]
            # (b v hw) f c -> (b f) (v hw) c : per frame, one sequence over all views' pixels
            s = s.view(B, V, h * w, Fr, C).permute(0, 3, 1, 2, 4).reshape(B * Fr, V * h * w, C)
            s = self.to_out_sp(attend(attn, self.to_q_sp(s), self.to_k_sp(s), self.to_v_sp(s)))
            s = s.view(B, Fr, V, h * w, C).permute(0, 2, 3, 1, 4).reshape(n, Fr, C)
            out = self.alpha_blender(s, temporal)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

