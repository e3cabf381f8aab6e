"""4D-SDS for Stage Two, in the z0-reconstruction form (paper eq. 11), as Animate3D's guidance
computes it (``animatemv_guidance.py`` at commit 033a1be; constants below name their source).

For renders of the 4D Gaussians (V views x F frames, from *random orbit cameras* — Stage Two's
``stage2.sds_cameras`` — whose vectors are passed in) we encode with the VAE, noise frames
1..F-1 to one t ~ U[t_min, t_max], predict the noise with the MV-VDM and form

    x0_hat = (z_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)        (no gradient)
    L      = 0.5 * || z - x0_hat ||^2 / (V * (F - 1))                  (per-image sum)

over the generated frames 1..F-1 (frame 0 is the condition, supervised by reconstruction).

* Condition frame: the encoded frame 0 of the renders themselves (``sds_condition="render"``,
  the reference; no gradient), or the job's conditioning views (``"views"``, only meaningful
  when the renders come from the conditioning cameras).  Track4DGen adds the eq.-2 noise to it
  as in sampling (``cond_noise_max=0`` gives the reference's clean frame).
* IP-Adapter image embeddings: from the rendered frame 0 of every view, at every SDS step
  (reference); from the conditioning views with ``"views"``.
* Guidance: ``c + s (c - u)`` — the reference's form (``noise_pred_text + guidance_scale *
  (noise_pred_text - noise_pred_uncond)``), i.e. classic CFG at scale s + 1 — then Animate3D's
  std rescale of the reconstruction (``sds_rescale``, ``recon_std_rescale`` 0.25); s = 5
  (``guidance_scale``), t in [20, 200] (``min/max_step_percent`` 0.02/0.2 of 1000).
Its gradient w.r.t. z is (z - x0_hat), so gradients reach the Gaussians only through the VAE
encoder and the differentiable rasteriser — never through the U-Net (saves memory and time).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .camera_embed import camera_tensor
from .components import Components, encode_image_embeds, encode_images, encode_text
from .config import SamplerConfig
from .pipeline import cond_noise_scale, make_scheduler

SDSFn = Callable[..., torch.Tensor]  # sds_fn(renders [V,F,3,H,W], cameras=None) -> scalar


def rescale_x0(x0_cfg: torch.Tensor, x0_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Animate3D's ``recon_std_rescale``: scale the guided reconstruction to the std of the
    unguided (text-only) one, blend by phi (std over everything but the batch axis)."""
    if phi <= 0:
        return x0_cfg
    dims = tuple(range(1, x0_cfg.ndim))
    factor = (x0_cond.std(dim=dims, keepdim=True) + 1e-8) / (x0_cfg.std(dim=dims, keepdim=True) + 1e-8)
    return phi * x0_cfg * factor + (1 - phi) * x0_cfg


def make_sds_fn(
    comp: Components,
    views: torch.Tensor,
    prompt: str,
    cameras: torch.Tensor | Sequence[np.ndarray],
    config: SamplerConfig | None = None,
    seed: int = 0,
) -> SDSFn:
    """Build ``sds_fn(renders [V, F, 3, H, W] in [0, 1], cameras=None) -> scalar loss``.

    ``views`` [V, 3, H, W] in [0, 1] are the conditioning views (grey-composited) and
    ``cameras`` their cameras; text (and, for ``sds_condition="views"``, image embeddings and
    condition latents) are computed once here.  ``sds_fn``'s own ``cameras`` are the cameras the
    renders were made from ([V, 16] vectors or V world->camera 4x4); None = the job's."""
    cfg = config or SamplerConfig()
    dev = comp.device
    if hasattr(comp.vae, "enable_gradient_checkpointing"):
        # SDS backpropagates through the VAE encoder for V*F images every call: recompute its
        # activations instead of holding them (about 20 GB at 4x16x256^2 otherwise)
        comp.vae.enable_gradient_checkpointing()
    res = comp.config.resolution
    sched = make_scheduler(cfg)
    abar = sched.alphas_cumprod.to(dev, torch.float32)
    gen = torch.Generator("cpu").manual_seed(int(seed))
    cam = (cameras if isinstance(cameras, torch.Tensor) else camera_tensor(cameras)).to(dev, torch.float32)
    cfg_on = cfg.sds_guidance_scale > 0.0  # reference form c + s (c - u): s = 0 is the plain conditional
    with torch.no_grad():
        v = F.interpolate(views.float(), size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        z_cond = encode_images(comp, v.to(dev)).float()
        text = encode_text(comp, [cfg.negative_prompt, prompt] if cfg_on else [prompt])
        view_img = encode_image_embeds(comp, v.to(dev))
    V = z_cond.shape[0]

    def batched(img: torch.Tensor | None) -> torch.Tensor | None:
        if img is None:
            return None
        img = img.unsqueeze(0)
        return torch.cat([torch.zeros_like(img), img]) if cfg_on else img

    def sds_fn(renders: torch.Tensor, cameras: torch.Tensor | Sequence[np.ndarray] | None = None) -> torch.Tensor:
        if renders.ndim != 5 or renders.shape[0] != V or renders.shape[2] != 3:
            raise ValueError(f"sds_fn expects renders [V={V}, F, 3, H, W], got {tuple(renders.shape)}")
        out_device = renders.device
        Vr, Fr, _, H, W = renders.shape
        if cameras is None:
            cam_r = cam
        else:
            cam_r = (cameras if isinstance(cameras, torch.Tensor) else camera_tensor(cameras)).to(dev, torch.float32)
            if cam_r.shape != (V, 16):
                raise ValueError(f"sds_fn cameras must be [V={V}, 16] vectors or V 4x4 matrices, got {tuple(cam_r.shape)}")
        if Fr < 2:
            raise ValueError("sds_fn needs at least 2 frames (frame 0 is the condition)")
        first = 0 if cfg.sds_condition == "render" else 1
        x = renders[:, first:].reshape(Vr * (Fr - first), 3, H, W).to(dev)
        if (H, W) != (res, res):
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        z = encode_images(comp, x).float().view(1, Vr, Fr - first, *z_cond.shape[1:])
        cond_clean = z_cond
        img = batched(view_img)
        if first == 0:  # Animate3D: the render's own frame 0 (no gradient) is the condition
            cond_clean, z = z[0, :, 0].detach(), z[:, :, 1:]
            with torch.no_grad():  # and its IP-Adapter embeddings, at every step
                img = batched(encode_image_embeds(comp, renders[:, 0].detach().to(dev).float()))
        t = int(torch.randint(cfg.sds_t_min, cfg.sds_t_max + 1, (1,), generator=gen))
        noise = torch.randn(z.shape, generator=gen).to(dev)
        a = abar[t]
        with torch.no_grad():
            z_t = a.sqrt() * z + (1 - a).sqrt() * noise
            beta = cond_noise_scale(t, cfg)
            cond = cond_clean + beta * torch.randn(cond_clean.shape, generator=gen).to(dev) if beta else cond_clean
            inp = torch.cat([cond[None, :, None], z_t], dim=2)
            inp = torch.cat([inp, inp]) if cfg_on else inp
            eps = comp.unet(inp, t, text, cam_r, image_embeds=img).float()[:, :, 1:]
            to_x0 = lambda e: (z_t - (1 - a).sqrt() * e) / a.sqrt()  # noqa: E731
            if cfg_on:
                eps_u, eps_c = eps.chunk(2)
                x0_hat = to_x0(eps_c + cfg.sds_guidance_scale * (eps_c - eps_u))  # reference form
                x0_hat = rescale_x0(x0_hat, to_x0(eps_c), cfg.sds_rescale)
            else:
                x0_hat = to_x0(eps)
        loss = 0.5 * (z - x0_hat).pow(2).sum() / (Vr * (Fr - 1))
        return loss.to(out_device)

    return sds_fn
