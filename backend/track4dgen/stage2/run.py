"""Stage Two entry point: multi-view videos (+ optional diffusion features) -> animated 4D Gaussians.

``run_stage2(job, videos, features, reporter, out_dir, sds_fn=None, checkpoint_dir=None, tracks=None)``
writes ``gaussians4d.npz``, the animated input mesh (``mesh_animation.npz``, ``animated.glb``),
``ply/frame_{f:03d}.ply``, ``videos/render_view{k}.mp4`` and ``metrics.json`` (``{"stage2": ...}``)
into ``out_dir`` and returns the metrics dict.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..job import Job, JobError, ProgressReporter
from ..meshio import MeshError, load_mesh
from .config import Stage2Config
from .export import render_all, write_gaussians_npz, write_mesh_results, write_videos
from .losses import SdsFn, composite
from .model import Stage2Model
from .optimize import RenderFn, Trainer, TrainData, default_render_fn
from .tracks import associate_tracks, check_tracks


def resolve_device(cfg: Stage2Config, job: Job | None = None) -> torch.device:
    name = cfg.device if cfg.device != "auto" else (job.spec.device if job is not None else "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise JobError("no_cuda", f"stage2 device {name!r} requested but CUDA is not available", "Set \"device\": \"cpu\" or \"auto\".")
    return torch.device(name)


def check_videos(videos: Any, views: int, frames: int) -> torch.Tensor:
    """Validate the [V,F,H,W,4] float video tensor; errors say what shape was expected."""
    arr = torch.as_tensor(np.asarray(videos), dtype=torch.float32)
    if arr.dim() != 5 or arr.shape[-1] != 4:
        raise JobError("bad_videos", f"videos must be [V, F, H, W, 4] RGBA, got shape {tuple(arr.shape)}", "Pass RGB + alpha mask frames.")
    if arr.shape[0] != views or arr.shape[1] != frames:
        raise JobError("bad_videos", f"videos have {arr.shape[0]} views x {arr.shape[1]} frames, job expects {views} x {frames}",
                       "Give one video per camera with the job's frame count.")
    if not torch.isfinite(arr).all():
        raise JobError("bad_videos", "videos contain NaN or infinite values", "Re-run Stage One or re-render the videos.")
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise JobError("bad_videos", f"video values must be in [0, 1], got [{float(arr.min()):.3f}, {float(arr.max()):.3f}]",
                       "Divide 8-bit images by 255.")
    if float(arr[..., 3].max()) <= 0:
        raise JobError("bad_videos", "video alpha masks are empty: no object pixels to reconstruct", "Render with a transparent film.")
    return arr.clamp(0, 1)


def build_train_data(job: Job, videos: torch.Tensor, resolution: int | None, background: list[float]) -> TrainData:
    """Resize targets to the training resolution and scale each camera's K to match."""
    nv, nf, h, w, _ = videos.shape
    out_h = out_w = int(resolution) if resolution else None
    if out_h is None:
        out_h, out_w = h, w
    images = videos
    if (out_h, out_w) != (h, w):
        x = videos.reshape(nv * nf, h, w, 4).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(out_h, out_w), mode="area" if out_h < h else "bilinear", align_corners=None if out_h < h else False)
        images = x.permute(0, 2, 3, 1).reshape(nv, nf, out_h, out_w, 4).clamp(0, 1)
    Ks, viewmats = [], []
    for cam in job.cameras:
        K = np.array(cam.K, dtype=np.float64).copy()
        K[0] *= out_w / cam.width
        K[1] *= out_h / cam.height
        Ks.append(K)
        viewmats.append(cam.w2c)
    return TrainData(
        images=images.contiguous(),
        viewmats=torch.tensor(np.stack(viewmats), dtype=torch.float32),
        Ks=torch.tensor(np.stack(Ks), dtype=torch.float32),
        background=torch.tensor(background, dtype=torch.float32),
    )


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean per-image PSNR over every view x frame, ``[..., H, W, 3]`` images (``mask``
    ``[..., H, W, 1]``, > 0.5 = object). The definition of ``track4dgen eval`` (eval/gt.py), so
    metrics.json and an evaluation of the same result agree; NaN when every mask is empty."""
    from ..eval.gt import psnr as per_image_psnr

    h, w = a.shape[-3], a.shape[-2]
    pred = a.detach().reshape(-1, h, w, a.shape[-1]).float().cpu().numpy()
    target = b.detach().reshape(-1, h, w, b.shape[-1]).float().cpu().numpy()
    m = None if mask is None else (mask.detach().reshape(-1, h, w) > 0.5).cpu().numpy()
    try:
        return per_image_psnr(pred, target, m)
    except ValueError:
        return float("nan")


def with_mesh_silhouettes(data: TrainData, vertices: np.ndarray, faces: np.ndarray, offsets_deg: list[float]) -> TrainData:
    """``data`` plus the mesh's silhouettes from the video cameras turned by ``offsets_deg``."""
    from .mesh_silhouettes import mesh_silhouettes, virtual_cameras

    center = 0.5 * (np.min(vertices, axis=0) + np.max(vertices, axis=0))
    viewmats, Ks = virtual_cameras(data.viewmats, data.Ks, center, offsets_deg)
    width, height = data.size
    masks = mesh_silhouettes(vertices, faces, viewmats, Ks, width, height)
    return replace(data, silhouettes=masks, silhouette_viewmats=viewmats, silhouette_Ks=Ks)


def with_track_targets(
    data: TrainData, means: torch.Tensor, vertices: np.ndarray, faces: np.ndarray, tracks: Any, visibility: Any,
    video_size: tuple[int, int], cfg: Stage2Config,
) -> TrainData:
    """``data`` plus the tracked points of every view (stage2/tracks.py): tracks given in pixels of
    ``video_size`` = (width, height) are scaled to the training resolution and their frame-0
    queries lifted onto the canonical mesh (computed once, here)."""
    t, vis = check_tracks(tracks, visibility, data.num_views, data.num_frames)
    width, height = data.size
    t = t * torch.tensor([width / video_size[0], height / video_size[1]])
    targets = associate_tracks(means.detach().cpu(), vertices, faces, data.viewmats.cpu(), data.Ks.cpu(), data.size, t, vis,
                               cfg.track_k, cfg.track_occluded_weight)
    return replace(data, tracks=targets)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_stage2(
    job: Job,
    videos: Any,
    features: Any | None,
    reporter: ProgressReporter | None,
    out_dir: str | Path,
    sds_fn: SdsFn | None = None,
    checkpoint_dir: str | Path | None = None,
    render_fn: RenderFn | None = None,
    tracks: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Reconstruct the 4D Gaussians of ``job`` from ``videos`` [V,F,H,W,4] and write the result.

    ``render_fn`` overrides the rasterizer (default ``track4dgen.stage2.raster.rasterize``).
    ``tracks``: (tracks [V,F,Q,2] in video pixels, visibility [V,F,Q]) of the videos; with them and
    ``w_track`` > 0 the fit adds the 2D-track term (stage2/tracks.py).
    """
    t_start = time.monotonic()
    try:
        cfg = Stage2Config.from_overrides(job.spec.stage2)
    except (TypeError, ValueError) as exc:
        raise JobError("bad_job_json", f"job.json 'stage2': {exc}", "Remove or rename the setting.") from exc
    device = resolve_device(cfg, job)
    torch.manual_seed(job.spec.seed)
    vids = check_videos(videos, len(job.cameras), job.spec.frames)
    try:
        mesh = load_mesh(job.mesh_path)
    except MeshError as exc:
        raise JobError("bad_mesh", str(exc), "Export a mesh with faces and finite coordinates as mesh.glb.") from exc
    data = build_train_data(job, vids, cfg.resolution, cfg.background)
    if cfg.w_silhouette > 0:
        data = with_mesh_silhouettes(data, mesh.vertices, mesh.faces, cfg.silhouette_offsets_deg)
    data = data.to(device)

    feature_fn = None
    if features is not None and cfg.use_diffusion_features:
        feats = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        if feats.dim() != 5 or feats.shape[0] != data.num_views or feats.shape[1] != data.num_frames:
            raise JobError("bad_features", f"features must be [{data.num_views}, {data.num_frames}, C, h, w], got {tuple(feats.shape)}",
                           "Re-run Stage One or drop features.npz.")
        from .diffusion_features import gaussian_diffusion_features

        verts_t = torch.tensor(mesh.vertices, dtype=torch.float32)
        faces_t = torch.tensor(mesh.faces, dtype=torch.long)

        def feature_fn(points: torch.Tensor) -> torch.Tensor:
            cache, _ = gaussian_diffusion_features(
                feats, points.cpu(), verts_t, faces_t, data.Ks.cpu(), data.viewmats.cpu(), data.size, cfg.feature_pca_dim
            )
            return cache

    model = Stage2Model.build(cfg, mesh.vertices, mesh.faces, mesh.colors, data.num_frames, feature_fn, seed=job.spec.seed).to(device)
    if tracks is not None and cfg.w_track > 0:
        data = with_track_targets(data, model.gaussians.means, mesh.vertices, mesh.faces, tracks[0], tracks[1],
                                  (vids.shape[3], vids.shape[2]), cfg).to(device)
    render = render_fn or default_render_fn()
    t_init = time.monotonic() - t_start
    trainer = Trainer(model, data, cfg, sds_fn=sds_fn, render_fn=render, seed=job.spec.seed)
    train_stats = trainer.train(reporter, checkpoint_dir)

    t_export = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if reporter is not None:
        reporter.update("export", 0, 3, "writing gaussians4d.npz")
    write_gaussians_npz(out_dir / "gaussians4d.npz", model, data.cam_centers, cfg.fps, cfg.raster_mode)
    if reporter is not None:
        reporter.update("export", 1, 3, "animating the input mesh")
    mesh_timings = write_mesh_results(out_dir, model, mesh.vertices, mesh.faces, job.mesh_path, cfg)
    rgb, alpha = render_all(model, data, render, cfg.raster_backend, cfg.raster_mode)
    target = composite(data.images, data.background)
    mask = (data.images[..., 3:4] > 0.5).float()
    write_videos(out_dir / "videos", rgb, cfg.fps)
    if reporter is not None:
        reporter.update("export", 3, 3, "wrote videos")

    metrics = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "num_gaussians": model.gaussians.num,
        "iterations": train_stats["iterations"],
        "resumed_from": train_stats["start_iteration"],
        "it_per_s": train_stats["it_per_s"],
        "psnr_train": psnr(rgb, target),
        "psnr_train_masked": psnr(rgb, target, mask),
        "final_losses": {k: v for k, v in train_stats.items() if k in ("loss", "rec", "rec_rgb", "rec_mask", "arap", "sds", "track")},
        "tracks_used": bool(data.tracks is not None),
        "timings_s": {"init": t_init, "train": train_stats["train_s"], "export": time.monotonic() - t_export, **mesh_timings,
                      "total": time.monotonic() - t_start},
        "peak_mem_mb": peak_memory_mb(device),
        "resolution": list(data.size),
        "config": cfg.to_dict(),
    }
    (out_dir / "metrics.json").write_text(json.dumps({"stage2": metrics}, indent=1))
    return metrics
