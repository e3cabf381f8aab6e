"""MVVDM: the multi-view video diffusion U-Net (Animate3D's MV-VDM, Track4DGen §3.2).

Built from diffusers' ``UNetMotionModel`` blocks: we construct one and *adopt its children*, so
every parameter keeps the diffusers name (``down_blocks.0.attentions.0.transformer_blocks.0.
attn1.to_q.weight``, ``down_blocks.0.motion_modules.0...``) and SD1.5 ``UNet2DConditionModel``,
AnimateDiff ``MotionAdapter`` and Animate3D checkpoints load by name.  Added on top, with the
released checkpoint's names:

* ``camera_embedding.linear_{1,2}`` — MLP 16->1280->1280 on the camera, added to the time embedding;
* ``encoder_hid_proj.{image_embeds,norm}`` — IP-Adapter image projection (4 tokens per view);
* ``...attn1.processor.{to_q_i2v,to_out_i2v}`` — MV2V adapter inside multi-view self-attention;
* ``...attn2.processor.to_{k,v}_ip.0`` — IP-Adapter keys/values on cross-attention;
* ``...motion_modules.N.transformer_blocks.0.attn{1,2}.processor.{to_{q,k,v,out}_sp,
  alpha_blender.mix_factor,time_pos_embed.pe}`` — spatial branch of the motion modules (their
  own ``pos_embed`` is removed; the processor re-applies it).

Forward layout (see ``MVVDM.forward``): latents ``[B, V, F, 4, h, w]``; internally the batch is
flattened to ``B*V*F`` in (b, view, frame) order, frames innermost.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.utils.checkpoint
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import ImageProjection, TimestepEmbedding
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D, UNetMotionModel
from torch import nn

from .attention import IPCrossAttnProcessor, MultiViewSelfAttnProcessor, MVContext
from .config import MVVDMConfig
from .motion import SpatioTemporalProcessor


class MVVDM(nn.Module):
    """Multi-view video diffusion U-Net. ``MVVDM(get_config("tiny"))`` builds random weights;
    ``MVVDM.from_pretrained(...)`` (in ``weights.py``) loads real ones."""

    def __init__(self, config: MVVDMConfig) -> None:
        super().__init__()
        self.config = config
        base = UNetMotionModel(**config.unet_kwargs())
        for name, child in base.named_children():
            self.add_module(name, child)
        self.num_upsamplers = base.num_upsamplers
        self.camera_embedding = TimestepEmbedding(config.camera_dim, config.time_embed_dim)
        self.encoder_hid_proj = (
            ImageProjection(config.ip_embed_dim, config.cross_attention_dim, config.ip_num_tokens)
            if config.use_ip_adapter else None
        )
        self.mv_context = MVContext(num_views=config.num_views, num_frames=config.num_frames)
        self._install_processors()

    # ---------------------------------------------------------------- construction
    def _install_processors(self) -> None:
        cfg, ctx = self.config, self.mv_context
        for name, module in list(self.named_modules()):
            if isinstance(module, AnimateDiffTransformer3D):
                module.register_forward_pre_hook(self._record_hw)
                for block in module.transformer_blocks:
                    block.pos_embed = None  # re-applied inside the processor (Animate3D)
                    for attn in (block.attn1, block.attn2):
                        width = attn.to_q.weight.shape[0]
                        attn.set_processor(SpatioTemporalProcessor(width, ctx, cfg.motion_max_seq_length, cfg.use_motion_spatial))
            elif isinstance(module, Attention) and ".motion_modules." not in f".{name}.":
                width = module.to_q.weight.shape[0]
                if name.endswith("attn1"):
                    proc = MultiViewSelfAttnProcessor(width, ctx, cfg.use_i2v)
                    proc.init_from_base(module)
                    module.set_processor(proc)
                elif name.endswith("attn2") and cfg.use_ip_adapter:
                    module.set_processor(IPCrossAttnProcessor(width, cfg.cross_attention_dim, ctx))

    def _record_hw(self, module: nn.Module, args: tuple) -> None:
        self.mv_context.hw = tuple(args[0].shape[-2:])

    # ---------------------------------------------------------------- parameter groups
    def trainable_parameter_names(self) -> list[str]:
        """Stage One training updates only the MV2V adapter and the (spatio)temporal motion
        modules (paper §3.2); the multi-view 3D attention and all SD weights stay frozen."""
        return [n for n, _ in self.named_parameters() if ".motion_modules." in f".{n}" or "_i2v." in n]

    def get_trainable_parameters(self) -> list[nn.Parameter]:
        names = set(self.trainable_parameter_names())
        return [p for n, p in self.named_parameters() if n in names]

    def freeze_for_training(self) -> "MVVDM":
        """Set requires_grad on exactly the trainable split; returns self."""
        names = set(self.trainable_parameter_names())
        for n, p in self.named_parameters():
            p.requires_grad_(n in names)
        return self

    def iter_motion_modules(self) -> Iterator[tuple[str, AnimateDiffTransformer3D]]:
        for name, module in self.named_modules():
            if isinstance(module, AnimateDiffTransformer3D):
                yield name, module

    def enable_gradient_checkpointing(self, enable: bool = True) -> "MVVDM":
        """Recompute block activations in backward (diffusers' per-block checkpointing, non-reentrant)."""

        def ckpt(module: nn.Module, *args):
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

        for m in self.modules():
            if hasattr(m, "gradient_checkpointing"):
                m.gradient_checkpointing = enable
                m._gradient_checkpointing_func = ckpt
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        camera: torch.Tensor,
        image_embeds: torch.Tensor | None = None,
        use_i2v: bool = True,
    ) -> torch.Tensor:
        """Predict the noise of every frame of every view.

        sample: ``[B, V, F, C, h, w]`` latents; frame 0 of each view is the conditional frame
            (clean or eq.-2 noised render of the conditioning view) that the MV2V adapter reads.
        timestep: scalar, ``[B]``, or anything broadcastable to ``[B, V, F]`` (per-frame t lets
            the conditional frame carry its own, e.g. small, timestep).
        encoder_hidden_states: text embeddings ``[B, T, D]`` (shared by views and frames) or
            ``[B, V, T, D]`` (per view).
        camera: ``[B, V, 16]`` or ``[V, 16]`` (``camera_embed.camera_tensor``).
        image_embeds: optional IP-Adapter image embeddings ``[B, V, ip_embed_dim]`` (zeros =
            unconditional); ignored when the config has no IP-Adapter.
        use_i2v: False disables the MV2V adapter (plain MVDream + motion model).
        Returns ``[B, V, F, C, h, w]``.
        """
        if sample.ndim != 6:
            raise ValueError(f"sample must be [B, V, F, C, h, w], got shape {tuple(sample.shape)}")
        B, V, Fr, C, h, w = sample.shape
        dev, dt = sample.device, self.dtype
        ctx = self.mv_context
        ctx.num_views, ctx.num_frames, ctx.use_i2v = V, Fr, use_i2v

        t = torch.as_tensor(timestep, device=dev)
        if t.ndim == 1:
            t = t.view(-1, 1, 1)
        t = t.expand(B, V, Fr).reshape(-1)
        emb = self.time_embedding(self.time_proj(t).to(dt))
        if camera.ndim == 2:
            camera = camera.unsqueeze(0).expand(B, V, camera.shape[-1])
        if camera.shape[:2] != (B, V):
            raise ValueError(f"camera must be [B, V, 16] = [{B}, {V}, 16], got {tuple(camera.shape)}")
        cam = self.camera_embedding(camera.reshape(B * V, -1).to(device=dev, dtype=dt))
        emb = emb + cam.repeat_interleave(Fr, dim=0)

        ehs = encoder_hidden_states.to(device=dev, dtype=dt)
        if ehs.ndim == 3:
            ehs = ehs.unsqueeze(1).expand(B, V, *ehs.shape[1:])
        ehs = ehs.reshape(B * V, *ehs.shape[2:]).repeat_interleave(Fr, dim=0)

        ctx.ip_tokens = None
        if self.encoder_hid_proj is not None and image_embeds is not None:
            tokens = self.encoder_hid_proj(image_embeds.reshape(B * V, -1).to(device=dev, dtype=dt))
            ctx.ip_tokens = tokens.repeat_interleave(Fr, dim=0)

        x = self.conv_in(sample.reshape(B * V * Fr, C, h, w).to(dt))
        down_res = (x,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=ehs, num_frames=Fr)
            else:
                x, res = block(hidden_states=x, temb=emb, num_frames=Fr)
            down_res += res
        x = self.mid_block(x, emb, encoder_hidden_states=ehs, num_frames=Fr)
        for i, block in enumerate(self.up_blocks):
            res = down_res[-len(block.resnets):]
            down_res = down_res[: -len(block.resnets)]
            upsample_size = down_res[-1].shape[2:] if (i < len(self.up_blocks) - 1 and down_res) else None
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=ehs,
                          upsample_size=upsample_size, num_frames=Fr)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size, num_frames=Fr)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        # ctx.ip_tokens stays set until the next forward: gradient checkpointing re-runs the
        # cross-attentions during backward and must see the same tokens
        return x.view(B, V, Fr, *x.shape[1:])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_mvvdm(config: MVVDMConfig, device: str | torch.device | None = None) -> MVVDM:
    """Build the model; ``device="meta"`` allocates nothing (full config in tests)."""
    if device is not None and str(device) == "meta":
        with torch.device("meta"):
            return MVVDM(config)
    model = MVVDM(config)
    return model.to(device) if device is not None else model
