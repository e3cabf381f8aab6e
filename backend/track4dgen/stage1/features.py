"""Tracking-prior features: the output of the configured up-block's temporal (motion) module.

Track4DGen supervises (training) and reuses (Stage Two) the features of the "second
spatiotemporal upsampling block".  Which diffusers block that is, is a config value
(``MVVDMConfig.feature_block``, default ``up_blocks.1``; DESIGN.md explains the ambiguity).  We
capture the output of that block's LAST motion module — after temporal mixing, before the
upsampler — reshaped to ``[B, V, F, C, h, w]``.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import MVVDM


def motion_module_for(model: MVVDM, block: str) -> nn.Module:
    """The last motion module of ``block`` (e.g. ``"up_blocks.1"``, ``"mid_block"``)."""
    try:
        module = model.get_submodule(block)
    except AttributeError as exc:
        blocks = [f"down_blocks.{i}" for i in range(len(model.down_blocks))] + ["mid_block"] + \
                 [f"up_blocks.{i}" for i in range(len(model.up_blocks))]
        raise ValueError(f"feature block {block!r} does not exist; choose one of {blocks}") from exc
    mms = getattr(module, "motion_modules", None)
    if not mms:
        raise ValueError(f"block {block!r} has no motion modules")
    return mms[-1]


class FeatureHook:
    """Context manager that records the features of every forward while active.

    ``hook.features``: latest ``[B, V, F, C, h, w]`` (kept in the graph, so losses on it train the
    motion modules).  ``capture`` False pauses recording (e.g. on the unconditional CFG half —
    the pipeline instead slices the conditional half)."""

    def __init__(self, model: MVVDM, block: str | None = None, detach: bool = False) -> None:
        self.model = model
        self.block = block or model.config.feature_block
        self.module = motion_module_for(model, self.block)
        self.detach = detach
        self.capture = True
        self.features: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not self.capture:
            return
        ctx = self.model.mv_context
        V, Fr = ctx.num_views, ctx.num_frames
        x = output.detach() if self.detach else output
        self.features = x.view(-1, V, Fr, *x.shape[1:])

    def __enter__(self) -> "FeatureHook":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def channels(self) -> int:
        return int(self.module.proj_out.out_features)


# ------------------------------------------------------------------------------ block probe


def all_feature_blocks(model: MVVDM) -> list[str]:
    """Every block that has motion modules, in U-Net order (down, mid, up)."""
    names = [f"down_blocks.{i}" for i in range(len(model.down_blocks))] + ["mid_block"] + \
            [f"up_blocks.{i}" for i in range(len(model.up_blocks))]
    return [n for n in names if getattr(model.get_submodule(n), "motion_modules", None)]


def sample_features(features: torch.Tensor, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear feature lookup. features [C, h, w]; points [P, 2] pixel (x, y) in an image of
    ``image_size`` (H, W) with pixel (0, 0) the top-left corner -> [P, C].  Feature cell centres
    sit at the same relative positions as pixel centres (align_corners=False)."""
    H, W = image_size
    grid = torch.stack([points[:, 0] / W * 2 - 1, points[:, 1] / H * 2 - 1], dim=-1).to(features.dtype)
    out = torch.nn.functional.grid_sample(features[None], grid[None, :, None], mode="bilinear", align_corners=False)
    return out[0, :, :, 0].t()


def nearest_neighbour_tracks(features: torch.Tensor, queries: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Track query points of frame 0 through frames by cosine nearest neighbour in feature space.

    features [F, C, h, w]; queries [P, 2] pixels on frame 0 -> tracks [F, P, 2] pixels (the
    centre of the best-matching feature cell; frame 0 returns the queries)."""
    Fr, C, h, w = features.shape
    H, W = image_size
    q = torch.nn.functional.normalize(sample_features(features[0], queries, image_size), dim=-1)  # [P, C]
    maps = torch.nn.functional.normalize(features.reshape(Fr, C, h * w), dim=1)  # [F, C, hw]
    idx = torch.einsum("pc,fcn->fpn", q, maps).argmax(dim=-1)  # [F, P]
    xy = torch.stack([(idx % w).float() + 0.5, torch.div(idx, w, rounding_mode="floor").float() + 0.5], dim=-1)
    tracks = xy * torch.tensor([W / w, H / h])
    tracks[0] = queries
    return tracks


@torch.no_grad()
def probe_blocks(comp, video: torch.Tensor, prompt: str, cameras, tracks: torch.Tensor,
                 visibility: torch.Tensor | None = None, t: int = 200, blocks: list[str] | None = None,
                 seed: int = 0) -> dict[str, float]:
    """The paper's block-by-block probe: noise a real multi-view video to step t, run the
    MV-VDM once, track frame-0 points by feature nearest neighbour in every block, and report the
    mean pixel error against ground-truth tracks (lower = better tracking prior).

    video [V, F, 3, H, W] in [0, 1] (grey background); tracks [V, F, P, 2] pixels;
    visibility [V, F, P] (bool) or None.  Returns {block: mean error over visible points of
    frames 1..F-1, in pixels}."""
    from .camera_embed import camera_tensor
    from .components import encode_image_embeds, encode_images, encode_text
    from .config import SamplerConfig
    from .pipeline import make_scheduler

    model = comp.unet
    blocks = blocks or all_feature_blocks(model)
    V, Fr, _, H, W = video.shape
    dev = comp.device
    z = encode_images(comp, video.reshape(V * Fr, 3, H, W).to(dev)).float().view(1, V, Fr, 4, H // 8, W // 8)
    sched = make_scheduler(SamplerConfig())
    a = sched.alphas_cumprod[t].to(dev)
    gen = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn(z.shape, generator=gen).to(dev)
    zt = torch.cat([z[:, :, :1], a.sqrt() * z[:, :, 1:] + (1 - a).sqrt() * noise[:, :, 1:]], dim=2)
    cam = cameras if isinstance(cameras, torch.Tensor) else camera_tensor(cameras)
    img = encode_image_embeds(comp, video[:, 0].to(dev))
    hooks = [FeatureHook(model, b, detach=True) for b in blocks]
    for hk in hooks:
        hk.__enter__()
    try:
        model(zt, t, encode_text(comp, [prompt]), cam.to(dev), image_embeds=None if img is None else img[None])
    finally:
        for hk in hooks:
            hk.__exit__()
    vis = visibility if visibility is not None else torch.ones(tracks.shape[:3], dtype=torch.bool)
    out: dict[str, float] = {}
    for b, hk in zip(blocks, hooks):
        feats = hk.features[0].float().cpu()  # [V, F, C, h, w]
        errs = []
        for v in range(V):
            pred = nearest_neighbour_tracks(feats[v], tracks[v, 0].float(), (H, W))
            err = (pred[1:] - tracks[v, 1:].float()).norm(dim=-1)
            m = vis[v, 1:] & vis[v, :1]
            if m.any():
                errs.append(err[m])
        out[b] = float(torch.cat(errs).mean()) if errs else float("nan")
    return out
