"""4D-SDS for Stage Two, in the z0-reconstruction form (paper eq. 11).

For renders of the 4D Gaussians (V views x F frames) we encode with the VAE, noise to a random
t in [t_min, t_max], predict the noise with the MV-VDM (conditional frame 0 = the encoded
conditioning views, CFG + rescale as in Animate3D's guidance) and form

    x0_hat = (z_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)        (no gradient)
    L      = 0.5 * || z - x0_hat ||^2 / (V * F')                       (per-image sum)

over the generated frames 1..F-1 (frame 0 is the condition, supervised by reconstruction).
The condition frame is, as in Animate3D's guidance, the encoded frame 0 of the renders
(``sds_condition="render"``, no gradient), or the job's conditioning views (``"views"``); it
gets the eq.-2 noise like in sampling.  CFG is ``u + s (c - u)`` followed by Animate3D's std
rescale of the reconstruction (``sds_rescale``).  IP-Adapter embeddings come from the
conditioning views (computed once).
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

SDSFn = Callable[[torch.Tensor], torch.Tensor]


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
    """Build ``sds_fn(renders [V, F, 3, H, W] in [0, 1]) -> scalar loss`` for Stage Two.

    ``views`` [V, 3, H, W] in [0, 1] are the conditioning views (grey-composited); text, image
    embeddings and condition latents are computed once here."""
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
    cfg_on = cfg.sds_guidance_scale > 1.0
    with torch.no_grad():
        v = F.interpolate(views.float(), size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        z_cond = encode_images(comp, v.to(dev)).float()
        text = encode_text(comp, [cfg.negative_prompt, prompt] if cfg_on else [prompt])
        img = encode_image_embeds(comp, v.to(dev))
        if img is not None:
            img = img.unsqueeze(0)
            if cfg_on:
                img = torch.cat([torch.zeros_like(img), img])
    V = z_cond.shape[0]

    def sds_fn(renders: torch.Tensor) -> torch.Tensor:
        if renders.ndim != 5 or renders.shape[0] != V or renders.shape[2] != 3:
            raise ValueError(f"sds_fn expects renders [V={V}, F, 3, H, W], got {tuple(renders.shape)}")
        out_device = renders.device
        Vr, Fr, _, H, W = renders.shape
        if Fr < 2:
            raise ValueError("sds_fn needs at least 2 frames (frame 0 is the condition)")
        first = 0 if cfg.sds_condition == "render" else 1
        x = renders[:, first:].reshape(Vr * (Fr - first), 3, H, W).to(dev)
        if (H, W) != (res, res):
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        z = encode_images(comp, x).float().view(1, Vr, Fr - first, *z_cond.shape[1:])
        cond_clean = z_cond
        if first == 0:  # Animate3D: the render's own frame 0 (no gradient) is the condition
            cond_clean, z = z[0, :, 0].detach(), z[:, :, 1:]
        t = int(torch.randint(cfg.sds_t_min, cfg.sds_t_max + 1, (1,), generator=gen))
        noise = torch.randn(z.shape, generator=gen).to(dev)
        a = abar[t]
        with torch.no_grad():
            z_t = a.sqrt() * z + (1 - a).sqrt() * noise
            beta = cond_noise_scale(t, cfg)
            cond = cond_clean + beta * torch.randn(cond_clean.shape, generator=gen).to(dev) if beta else cond_clean
            inp = torch.cat([cond[None, :, None], z_t], dim=2)
            inp = torch.cat([inp, inp]) if cfg_on else inp
            eps = comp.unet(inp, t, text, cam, image_embeds=img).float()[:, :, 1:]
            to_x0 = lambda e: (z_t - (1 - a).sqrt() * e) / a.sqrt()  # noqa: E731
            if cfg_on:
                eps_u, eps_c = eps.chunk(2)
                x0_hat = to_x0(eps_u + cfg.sds_guidance_scale * (eps_c - eps_u))
                x0_hat = rescale_x0(x0_hat, to_x0(eps_c), cfg.sds_rescale)
            else:
                x0_hat = to_x0(eps)
        loss = 0.5 * (z - x0_hat).pow(2).sum() / (Vr * (Fr - 1))
        return loss.to(out_device)

    return sds_fn
