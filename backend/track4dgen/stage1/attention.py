"""Attention processors of the MV-VDM: multi-view 3D self-attention with the MV2V adapter, and
text cross-attention with IP-Adapter image tokens.

They are diffusers attention *processors* (installed with ``Attention.set_processor``), so the
base weights (``to_q``/``to_k``/``to_v``/``to_out``) stay where SD1.5 / MVDream keep them and the
added weights land under ``...attn1.processor.to_q_i2v`` etc. — exactly the names of Animate3D's
released checkpoint (DESIGN.md §Stage One).

Layout: every U-Net tensor has batch ``B*V*F`` ordered (b, view, frame), frames innermost —
the order diffusers' motion blocks assume.  Processors read V and F from a shared ``MVContext``
that ``MVVDM.forward`` fills, so one model serves any batch size / classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MVContext:
    """Per-forward facts the processors need but diffusers' blocks do not pass along."""

    num_views: int = 1
    num_frames: int = 1
    ip_tokens: torch.Tensor | None = None  # [B*V*F, T, cross_dim] IP-Adapter tokens
    use_i2v: bool = True  # MV2V adapter active (False = plain MVDream 3D attention)
    hw: tuple[int, int] | None = None  # spatial size of the current motion module input


def attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head scaled dot-product attention on [N, L, C] tensors with the layer's heads/scale.

    Uses torch SDPA (flash / memory-efficient kernels on CUDA)."""
    heads = attn.heads
    n, lq, c = q.shape
    d = c // heads
    q = q.view(n, lq, heads, d).transpose(1, 2)
    k = k.view(n, k.shape[1], heads, d).transpose(1, 2)
    v = v.view(n, v.shape[1], heads, v.shape[-1] // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    return out.transpose(1, 2).reshape(n, lq, -1)


def _finish(attn: nn.Module, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class MultiViewSelfAttnProcessor(nn.Module):
    """MVDream 3D self-attention (all V views' tokens of a frame attend to each other) plus the
    MV2V ("i2v") adapter of Animate3D: every frame's tokens also query frame 0's keys/values over
    all views through ``to_q_i2v``; the result goes through the zero-initialised ``to_out_i2v``
    and is added *before* the frozen output projection, so at init the model equals the base."""

    def __init__(self, hidden_size: int, context: MVContext, use_i2v: bool = True) -> None:
        super().__init__()
        self.context = context
        self.use_i2v = use_i2v
        if use_i2v:
            self.to_q_i2v = nn.Linear(hidden_size, hidden_size, bias=False)
            self.to_out_i2v = nn.Linear(hidden_size, hidden_size, bias=True)
            nn.init.zeros_(self.to_out_i2v.weight)
            nn.init.zeros_(self.to_out_i2v.bias)

    def init_from_base(self, attn: nn.Module) -> None:
        """Animate3D's initialisation: ``to_q_i2v`` copies ``to_q``, ``to_out_i2v`` is zero."""
        if self.use_i2v:
            with torch.no_grad():
                self.to_q_i2v.weight.copy_(attn.to_q.weight)
                self.to_out_i2v.weight.zero_()
                self.to_out_i2v.bias.zero_()

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("MultiViewSelfAttnProcessor is for self-attention (attn1) only")
        if attention_mask is not None:
            raise ValueError("attention masks are not supported by the multi-view processor")
        V, Fr = self.context.num_views, self.context.num_frames
        bvf, L, C = hidden_states.shape
        if bvf % (V * Fr):
            raise ValueError(f"batch {bvf} is not a multiple of views*frames = {V}*{Fr}")
        B = bvf // (V * Fr)
        residual = hidden_states
        # (b v f) l c -> (b f) (v l) c : one sequence per frame holding all views
        x = hidden_states.view(B, V, Fr, L, C).permute(0, 2, 1, 3, 4).reshape(B * Fr, V * L, C)
        k = attn.to_k(x)
        v = attn.to_v(x)
        out = attend(attn, attn.to_q(x), k, v)
        if self.use_i2v and self.context.use_i2v:
            # keys/values of the conditional frame 0, shared by every frame of the same sample
            k0 = k.view(B, Fr, V * L, -1)[:, :1].expand(B, Fr, V * L, k.shape[-1]).reshape(B * Fr, V * L, -1)
            v0 = v.view(B, Fr, V * L, -1)[:, :1].expand(B, Fr, V * L, v.shape[-1]).reshape(B * Fr, V * L, -1)
            out = out + self.to_out_i2v(attend(attn, self.to_q_i2v(x), k0, v0))
        out = out.view(B, Fr, V, L, -1).permute(0, 2, 1, 3, 4).reshape(bvf, L, -1)
        return _finish(attn, out, residual)


class IPCrossAttnProcessor(nn.Module):
    """Text cross-attention plus IP-Adapter image tokens (decoupled cross-attention).

    Keys ``to_k_ip.0.weight`` / ``to_v_ip.0.weight`` match diffusers' IP-Adapter processor.  The
    image tokens are per view (each view's own conditioning image) and come from
    ``MVContext.ip_tokens``; with none given the layer is plain text cross-attention."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, context: MVContext, scale: float = 1.0) -> None:
        super().__init__()
        self.context = context
        self.scale = scale
        self.to_k_ip = nn.ModuleList([nn.Linear(cross_attention_dim, hidden_size, bias=False)])
        self.to_v_ip = nn.ModuleList([nn.Linear(cross_attention_dim, hidden_size, bias=False)])

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("IPCrossAttnProcessor needs encoder_hidden_states (text embeddings)")
        residual = hidden_states
        q = attn.to_q(hidden_states)
        out = attend(attn, q, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states))
        ip = self.context.ip_tokens
        if ip is not None and self.scale != 0.0:
            ip = ip.to(q.dtype)
            out = out + self.scale * attend(attn, q, self.to_k_ip[0](ip), self.to_v_ip[0](ip))
        return _finish(attn, out, residual)
