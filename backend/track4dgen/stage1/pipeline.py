"""Sampling the MV-VDM: 4 conditioning views + prompt + cameras -> V x F video.

Follows Animate3D's reference pipeline (DDIM, 25 steps, CFG 7.5, frame 0 of each view = the
encoded conditioning view, re-inserted after every step, optional FreeInit) with Track4DGen's
change (paper eq. 2): the conditional frame is fed as ``z + beta_t * eps'`` with fresh eps' per
step and ``beta_t = cond_noise_max * t / T`` — large early, annealed to 0 — so the model does not
copy the condition verbatim.  Noise is drawn on the CPU from a seeded generator, so a seed gives
the same video on any device (up to kernel round-off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .camera_embed import camera_tensor
from .components import Components, decode_latents, encode_image_embeds, encode_images, encode_text
from .config import SamplerConfig
from .features import FeatureHook

ProgressFn = Callable[[int, int, str], None]


def make_scheduler(cfg: SamplerConfig):
    """diffusers DDIM with the reference settings (no clipping, steps_offset 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                         beta_schedule=cfg.beta_schedule, steps_offset=cfg.steps_offset, clip_sample=False)


def cond_noise_scale(t: int | float, cfg: SamplerConfig) -> float:
    """beta_t of paper eq. 2: linear in t, cond_noise_max at t = T, 0 at t = 0."""
    return float(cfg.cond_noise_max) * float(t) / float(cfg.num_train_timesteps)


def butterworth_lowpass(shape: tuple[int, int, int], d_s: float, d_t: float, order: int = 4) -> torch.Tensor:
    """FreeInit's 3D (frames, h, w) Butterworth low-pass mask in fftshift-ed frequency space."""
    Fr, H, W = shape
    if d_s <= 0:
        return torch.zeros(shape)
    t = (d_s / d_t) * (2 * torch.arange(Fr) / Fr - 1) if d_t > 0 else torch.zeros(Fr)
    y = 2 * torch.arange(H) / H - 1
    x = 2 * torch.arange(W) / W - 1
    d2 = t[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2
    return 1.0 / (1.0 + (d2 / d_s ** 2) ** order)


def freeinit_mix(latents: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Low frequencies of ``latents`` + high frequencies of ``noise`` over (frames, h, w).
    Tensors are [..., F, C, h, w]; the mask is [F, h, w]."""
    x = latents.float().transpose(-4, -3)  # [..., C, F, h, w]
    n = noise.float().transpose(-4, -3)
    dims = (-3, -2, -1)
    xf = torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)
    nf = torch.fft.fftshift(torch.fft.fftn(n, dim=dims), dim=dims)
    m = mask.to(x.device)
    mixed = xf * m + nf * (1 - m)
    out = torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=dims), dim=dims).real
    return out.transpose(-4, -3).to(latents.dtype)


@dataclass
class SampleResult:
    videos: torch.Tensor  # [V, F, 3, H, W] in [0, 1]
    latents: torch.Tensor  # [V, F, 4, h, w]
    features: torch.Tensor | None  # [V, F, C, h', w']


class MVVDMPipeline:
    """``MVVDMPipeline(components, SamplerConfig())(views, prompt, cameras, seed=0)``."""

    def __init__(self, components: Components, config: SamplerConfig | None = None) -> None:
        self.comp = components
        self.cfg = config or SamplerConfig()

    def _noise(self, gen: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(self.comp.device)

    @torch.no_grad()
    def __call__(
        self,
        views: torch.Tensor,
        prompt: str,
        cameras: torch.Tensor | Sequence[np.ndarray],
        seed: int = 0,
        num_frames: int | None = None,
        progress: ProgressFn | None = None,
        return_features: bool | None = None,
    ) -> SampleResult:
        """views: [V, 3, H, W] in [0, 1] (RGB composited on grey); cameras: [V, 16] camera
        vectors or V OpenCV world->camera 4x4 matrices."""
        comp, cfg = self.comp, self.cfg
        mcfg = comp.config
        dev = comp.device
        if views.ndim != 4 or views.shape[1] != 3:
            raise ValueError(f"views must be [V, 3, H, W], got {tuple(views.shape)}")
        V, _, H, W = views.shape
        if H % 8 or W % 8:
            raise ValueError(f"view size {H}x{W} must be a multiple of 8 (VAE downsampling)")
        Fr = int(num_frames or mcfg.num_frames)
        if Fr < 2:
            raise ValueError("num_frames must be >= 2 (frame 0 is the conditional frame)")
        cam = cameras if isinstance(cameras, torch.Tensor) else camera_tensor(cameras)
        cam = cam.to(device=dev, dtype=torch.float32)
        want_feats = cfg.return_features if return_features is None else return_features

        sched = make_scheduler(cfg)
        sched.set_timesteps(cfg.steps, device="cpu")
        timesteps = [int(t) for t in sched.timesteps]
        total = len(timesteps) * cfg.freeinit_iters
        gen = torch.Generator("cpu").manual_seed(int(seed))

        views = views.to(dev, torch.float32)
        z_cond = encode_images(comp, views).float()  # [V, 4, h, w]
        h, w = z_cond.shape[-2:]
        cfg_on = cfg.guidance_scale > 1.0
        text = encode_text(comp, [cfg.negative_prompt, prompt] if cfg_on else [prompt])
        img = encode_image_embeds(comp, views)
        if img is not None:
            img = img.unsqueeze(0)
            if cfg_on:
                img = torch.cat([torch.zeros_like(img), img])

        shape = (1, V, Fr - 1, 4, h, w)
        initial_noise = self._noise(gen, shape)
        latents = initial_noise * sched.init_noise_sigma
        feature_step = min(max(cfg.feature_step, 0), len(timesteps) - 1)
        features = None
        hook = FeatureHook(comp.unet, block=cfg.feature_block, detach=True) if want_feats else None
        mask = butterworth_lowpass((Fr - 1, h, w), cfg.freeinit_d_s, cfg.freeinit_d_t) if cfg.freeinit_iters > 1 else None
        done = 0
        try:
            if hook is not None:
                hook.__enter__()
            for it in range(cfg.freeinit_iters):
                if it > 0:  # FreeInit: re-noise the result to T, keep its low frequencies
                    t_last = torch.tensor([cfg.num_train_timesteps - 1])
                    noisy = sched.add_noise(latents.cpu(), initial_noise.cpu(), t_last).to(dev)
                    latents = freeinit_mix(noisy, self._noise(gen, shape), mask)
                    sched.set_timesteps(cfg.steps, device="cpu")
                for i, t in enumerate(timesteps):
                    beta = cond_noise_scale(t, cfg)
                    cond_frame = z_cond if beta == 0 else z_cond + beta * self._noise(gen, z_cond.shape)
                    x = torch.cat([cond_frame[None, :, None], latents], dim=2)
                    x_in = torch.cat([x, x]) if cfg_on else x
                    eps = comp.unet(x_in, t, text, cam, image_embeds=img).float()
                    if hook is not None and i == feature_step and it == cfg.freeinit_iters - 1:
                        features = hook.features[-1].float().cpu()  # conditional half, [V, F, C, h', w']
                    if cfg_on:
                        eps_u, eps_c = eps.chunk(2)
                        eps = eps_u + cfg.guidance_scale * (eps_c - eps_u)
                    latents = sched.step(eps[:, :, 1:], t, latents).prev_sample
                    done += 1
                    if progress is not None:
                        progress(done, total, f"denoising step {i + 1}/{len(timesteps)}"
                                 + (f" (FreeInit {it + 1}/{cfg.freeinit_iters})" if cfg.freeinit_iters > 1 else ""))
        finally:
            if hook is not None:
                hook.__exit__()
        all_latents = torch.cat([z_cond[None, :, None], latents], dim=2)[0]  # [V, F, 4, h, w]
        frames = decode_latents(comp, all_latents.reshape(V * Fr, 4, h, w)).float()
        videos = frames.view(V, Fr, 3, frames.shape[-2], frames.shape[-1]).cpu()
        return SampleResult(videos=videos, latents=all_latents.cpu(), features=features)
