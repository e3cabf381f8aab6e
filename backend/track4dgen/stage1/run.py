"""Stage One entry point for ``track4dgen run``: job folder -> multi-view video (+ features, SDS).

``run_stage1(job, reporter, work_dir) -> (videos [V,F,H,W,4] float32 0..1, features
[V,F,C,h,w] float32 or None, sds_fn or None)``.

* ``"model": "tiny"`` builds the tiny model (random weights seeded by the job seed, or trained
  tiny weights from ``job.json`` ``"weights": {"path": FOLDER}``) and runs on CPU in seconds.
* ``"model": "animate3d"`` loads the released weights (``weights.from_pretrained``); when they
  are missing the JobError names the file and ``track4dgen weights download``.

Videos: RGB is what the model generated (grey 0.5 background, like its training renders), stored
as straight alpha.  The model has no alpha output: ``foreground_alpha`` starts from frame 0's exact
mask (the conditioning view's own alpha, as Animate3D seeds its video segmentation with the static
render's mask) and updates it only where the video changes.  Artifacts written to ``work_dir``: ``stage1_view{k}/{f:03d}.png`` RGBA,
and ``features.npz`` (the runner writes the mp4 previews).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..job import Job, JobError, ProgressReporter
from .camera_embed import cameras_from_job
from .components import Components, build_components
from .config import SamplerConfig, get_config
from .pipeline import MVVDMPipeline
from .sds import make_sds_fn

BACKGROUND = 0.5


def resolve_device(name: str) -> torch.device:
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise JobError("no_cuda", f"job asks for device {name!r} but CUDA is not available", "Set \"device\": \"cpu\" or \"auto\".")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise JobError("bad_job_json", f"stage1 dtype {name!r} is not one of {sorted(table)}", "Use auto, float32, float16 or bfloat16.")
    if device.type == "cpu" and table[name] == torch.float16:
        raise JobError("bad_job_json", "float16 is not supported on CPU", "Use float32 or bfloat16 on CPU.")
    return table[name]


def load_views(job: Job, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RGBA conditioning views -> (RGB composited on grey [V,3,size,size], alpha [V,1,size,size])."""
    from PIL import Image

    rgbs, alphas = [], []
    for k in range(job.spec.views):
        with Image.open(job.view_path(k)) as im:
            a = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        t = torch.from_numpy(a).permute(2, 0, 1)
        rgbs.append(t[:3] * t[3:] + BACKGROUND * (1 - t[3:]))
        alphas.append(t[3:])
    rgb, alpha = torch.stack(rgbs), torch.stack(alphas)
    if rgb.shape[-1] != size:
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        alpha = F.interpolate(alpha, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return rgb, alpha


def _ramp(x: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean of ``[..., C, H, W]`` (edges replicated): per-pixel noise / 3, object contrast kept."""
    shape = x.shape
    flat = F.pad(x.reshape(-1, 1, shape[-2], shape[-1]), (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(flat, 3, stride=1).reshape(shape)


def _border(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """The outer ``width`` pixels of ``[..., H, W]`` images, flattened: ``[..., P]``."""
    return torch.cat([x[..., :width, :].flatten(-2), x[..., -width:, :].flatten(-2),
                      x[..., :, :width].flatten(-2), x[..., :, -width:].flatten(-2)], -1)


def foreground_alpha(videos: torch.Tensor, alpha0: torch.Tensor) -> torch.Tensor:
    """Soft foreground masks ``[V, F, 1, H, W]`` of generated videos ``[V, F, 3, H, W]`` on grey,
    from frame 0's exact alpha ``alpha0`` ``[V, 1, H, W]``.

    Why not "differs from grey by 0.04" (the old rule): a grey part of the object does not, and
    becomes a hole that the x100 mask loss then carves out of the Gaussians. Animate3D segments
    its generated videos with Track-Anything (SAM + XMem) seeded by the static render's mask; we
    have no segmentation model, but the same prior and the fact that the background never moves
    give a motion-aware rule:

    * where the frame equals frame 0, the mask is frame 0's;
    * where it changed over frame-0 background, something of the object arrived: foreground,
      whatever its colour;
    * where it changed over the frame-0 object, the object moved away or another part moved in:
      it is background only if it now has the background's flat level.

    "Equals" and "has the background's level" are judged on 3x3-averaged differences against the
    generation's own noise, measured on the image border (background there): the cues ramp from 3
    noise sigmas (4.5 for a difference of two frames) up over 0.01, so grey objects a few levels off the
    background survive and soft edges get soft alpha. The background level is each frame's border
    median (generated grey drifts a little from 0.5). Limits: a grey part within noise of the
    background that moves onto the object's own old place is taken for background.
    """
    x = videos.float()
    bg = _border(x).median(dim=-1).values[..., None, None]  # [V, F, 3, 1, 1]
    dev = _box3(x - bg)
    sigma = 1.4826 * _border(dev).abs().median(dim=-1).values.amax(-1)  # [V, F] robust noise of the averaged images
    sigma = sigma.clamp_min(1e-3)[..., None, None, None]
    colour = _ramp(dev.abs().amax(dim=2, keepdim=True), 3 * sigma, 3 * sigma + 0.01)
    moved = _ramp(_box3(x - x[:, :1]).abs().amax(dim=2, keepdim=True), 4.5 * sigma, 4.5 * sigma + 0.01)
    a0 = alpha0.float()[:, None].clamp(0, 1)  # [V, 1, 1, H, W]
    after_change = a0 * colour + (1.0 - a0)  # over the object: the level decides; over background: arrived
    alpha = (1.0 - moved) * a0 + moved * after_change
    alpha[:, 0] = a0[:, 0]
    return alpha


def straight_rgb(composited: torch.Tensor, alpha: torch.Tensor, background: float = BACKGROUND, min_alpha: float = 0.05) -> torch.Tensor:
    """Colour of the object alone from frames composited on ``background`` (the inverse of
    compositing, so Stage Two's compositing gives back the generated frame exactly); pixels with
    alpha below ``min_alpha`` keep their composited value (their colour hardly matters)."""
    a = alpha.clamp_min(min_alpha)
    out = (composited - background * (1.0 - a)) / a
    return torch.where(alpha >= min_alpha, out.clamp(0.0, 1.0), composited)


def load_components(job: Job, device: torch.device, dtype: torch.dtype) -> Components:
    spec = job.spec
    wpath = spec.weights.get("path") if isinstance(spec.weights, dict) else None
    if spec.model == "tiny":
        cfg = get_config("tiny", num_views=spec.views, num_frames=spec.frames)
        if wpath:
            from .weights import from_pretrained

            comp = from_pretrained(wpath, model="tiny")
        else:
            comp = build_components(cfg, seed=spec.seed)
    else:
        from .weights import WeightsError, from_pretrained

        try:
            comp = from_pretrained(wpath or "animate3d", model="animate3d", dtype=dtype)
        except WeightsError as exc:
            raise JobError("missing_weights", str(exc), exc.hint) from exc
    return comp.to(device=device, dtype=dtype).eval()


def _save_artifacts(work_dir: Path, videos: np.ndarray, features: np.ndarray | None) -> None:
    """RGBA frames (``stage1_view{k}/{f:03d}.png``, the job's ``videos/`` layout) + features.npz,
    so a Stage One result can be inspected or re-used as a Stage-Two-only job."""
    from PIL import Image

    work_dir.mkdir(parents=True, exist_ok=True)
    u8 = (np.clip(videos, 0, 1) * 255 + 0.5).astype(np.uint8)
    for k in range(u8.shape[0]):
        d = work_dir / f"stage1_view{k}"
        d.mkdir(exist_ok=True)
        for f in range(u8.shape[1]):
            Image.fromarray(u8[k, f], "RGBA").save(d / f"{f:03d}.png")
    if features is not None:
        np.savez_compressed(work_dir / "features.npz", features=features)


def run_stage1(job: Job, reporter: ProgressReporter, work_dir: str | Path) -> tuple[np.ndarray, np.ndarray | None, Callable | None]:
    spec = job.spec
    try:
        scfg = SamplerConfig.from_overrides(spec.stage1)
    except (TypeError, ValueError) as exc:
        raise JobError("bad_job_json", f"job.json 'stage1': {exc}", "Remove or fix the setting.") from exc
    device = resolve_device(spec.device)
    dtype = resolve_dtype(scfg.dtype, device)
    reporter.update("stage1", 0, scfg.steps * scfg.freeinit_iters, f"loading {spec.model} model on {device}")
    comp = load_components(job, device, dtype)
    res = comp.config.resolution
    views, alpha0 = load_views(job, res)
    cameras = cameras_from_job(job.cameras)
    pipe = MVVDMPipeline(comp, scfg)

    def progress(step: int, total: int, message: str) -> None:
        reporter.update("stage1", step, total, message)

    result = pipe(views, spec.prompt, cameras, seed=spec.seed, num_frames=spec.frames, progress=progress)
    V, Fr = result.videos.shape[:2]
    alpha = foreground_alpha(result.videos, alpha0)
    vid = torch.cat([straight_rgb(result.videos.float(), alpha), alpha], dim=2)  # [V, F, 4, res, res] straight alpha
    if spec.resolution != res:
        vid = F.interpolate(vid.view(V * Fr, 4, res, res), size=(spec.resolution, spec.resolution), mode="bilinear",
                            align_corners=False).view(V, Fr, 4, spec.resolution, spec.resolution)
    videos = vid.permute(0, 1, 3, 4, 2).clamp(0, 1).numpy().astype(np.float32)
    features = result.features.numpy().astype(np.float32) if result.features is not None else None
    _save_artifacts(Path(work_dir), videos, features)
    sds_fn = make_sds_fn(comp, views, spec.prompt, cameras, scfg, seed=spec.seed)
    reporter.update("stage1", scfg.steps * scfg.freeinit_iters, scfg.steps * scfg.freeinit_iters, "stage one done")
    return videos, features, sds_fn
