"""Write Stage Two results: ``gaussians4d.npz``, ``videos/render_view{k}.mp4`` and the animated
input mesh (``mesh_animation.npz``, ``animated.glb``) with per-frame 3DGS ``ply/frame_{f:03d}.ply``.

npz keys (DESIGN.md, brief): canonical ``means quats(wxyz) log_scales opacity_logit sh4d``;
per frame ``frame_means frame_quats frame_log_scales frame_rgb``; ``opacity`` (sigmoid), ``fps``.
``frame_surface`` [F, N, 3]: the surface point each Gaussian tracks (``means`` is its canonical
position); ``frame_means`` (the rendered centres) sit off it along the normal by a learned offset.
``frame_rgb`` is the SH colour averaged over the training cameras' directions, for viewers that
cannot evaluate SH. Extra keys: ``sh_degree``, ``frames``, ``time_norm`` (the string
"frame/(frames-1)", the 4D-SH time convention), ``rasterize_mode`` (the rasterizer mode the
Gaussians were fitted with; renderers must use the same) and ``source_face_idx``/``source_bary`` (the mesh
triangle and barycentric weights each Gaussian was sampled from, used by ground-truth evaluation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..video_io import write_mp4
from .config import Stage2Config
from .model import Stage2Model
from .optimize import RenderFn, TrainData, render_frame


@torch.no_grad()
def frame_arrays(model: Stage2Model, cam_centers: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-frame means/quats/log_scales/rgb for every frame: ``[F, N, ...]`` float32."""
    means, surface, quats, scales, rgb = [], [], [], [], []
    anchor = model.anchor()  # D(x, 0) once for all frames
    for f in range(model.num_frames):
        s = model.frame(f, anchor)
        means.append(s.means)
        surface.append(s.surface)
        quats.append(s.quats)
        scales.append(s.log_scales)
        rgb.append(model.colors(s, cam_centers).mean(0).clamp(0, 1))
    as_np = lambda xs: torch.stack(xs).float().cpu().numpy()  # noqa: E731
    return {"frame_means": as_np(means), "frame_surface": as_np(surface), "frame_quats": as_np(quats), "frame_log_scales": as_np(scales), "frame_rgb": as_np(rgb)}


@torch.no_grad()
def write_gaussians_npz(
    path: str | Path, model: Stage2Model, cam_centers: torch.Tensor, fps: float,
    rasterize_mode: str = Stage2Config.raster_mode,
) -> Path:
    g = model.gaussians
    q = g.quats / g.quats.norm(dim=-1, keepdim=True)
    arrays = {
        "means": g.means.float().cpu().numpy(),
        "quats": q.float().cpu().numpy(),
        "log_scales": g.log_scales.float().cpu().numpy(),
        "opacity_logit": g.opacity_logit.float().cpu().numpy(),
        "opacity": torch.sigmoid(g.opacity_logit).float().cpu().numpy(),
        "sh4d": g.sh4d.float().cpu().numpy(),
        "fps": np.array(float(fps), dtype=np.float32),
        "sh_degree": np.array(g.sh_degree, dtype=np.int32),
        "frames": np.array(model.num_frames, dtype=np.int32),
        "time_norm": np.array("frame/(frames-1)"),
        "rasterize_mode": np.array(rasterize_mode),
        "source_face_idx": g.face_idx.cpu().numpy().astype(np.int64),
        "source_bary": g.bary.float().cpu().numpy(),
    }
    arrays.update(frame_arrays(model, cam_centers))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def write_mesh_results(
    out_dir: str | Path, model: Stage2Model, vertices: np.ndarray, faces: np.ndarray, mesh_path: str | Path, cfg: Stage2Config
) -> dict[str, float]:
    """``mesh_animation.npz`` and ``animated.glb`` for the job mesh (stage2/vertex_animation.py,
    stage2/gltf_animation.py), then ``ply/`` from the written ``gaussians4d.npz``. Returns timings."""
    from .gltf_animation import write_animated_glb
    from .splat_ply import write_frame_plys
    from .vertex_animation import vertex_trajectories, write_mesh_animation_npz

    out_dir = Path(out_dir)
    anim = vertex_trajectories(model, vertices, faces, cfg.fps, cfg.vertex_motion, cfg.vertex_arap_weight, cfg.vertex_arap_iters,
                               max_stretch=cfg.vertex_arap_max_stretch)
    write_mesh_animation_npz(out_dir / "mesh_animation.npz", anim, faces)
    write_animated_glb(out_dir / "animated.glb", mesh_path, anim.positions, cfg.fps)
    if cfg.write_frame_plys:
        with np.load(out_dir / "gaussians4d.npz") as z:
            write_frame_plys(out_dir / "ply", {k: z[k] for k in ("sh4d", "frame_means", "opacity_logit", "frame_log_scales", "frame_quats")})
    return {f"mesh_{k}": round(v, 3) for k, v in anim.timings_s.items()}


@torch.no_grad()
def render_all(
    model: Stage2Model, data: TrainData, render_fn: RenderFn, backend: str = "auto", mode: str = Stage2Config.raster_mode
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every view x frame: (rgb [V,F,H,W,3] on the background, alpha [V,F,H,W,1])."""
    views = list(range(data.num_views))
    rgbs, alphas = [], []
    for f in range(data.num_frames):
        rgb, alpha, _ = render_frame(model, data, f, views, render_fn, backend, mode)
        rgbs.append(rgb)
        alphas.append(alpha)
    return torch.stack(rgbs, 1), torch.stack(alphas, 1)


def write_videos(out_dir: str | Path, rgb: torch.Tensor, fps: float, prefix: str = "render_view") -> list[Path]:
    """``rgb`` [V,F,H,W,3] in [0,1] -> ``out_dir/{prefix}{k}.mp4`` (one file per view)."""
    out_dir = Path(out_dir)
    frames = rgb.clamp(0, 1).cpu().numpy()
    paths = [out_dir / f"{prefix}{k}.mp4" for k in range(frames.shape[0])]
    for path, view in zip(paths, frames):
        write_mp4(path, view, fps=int(round(fps)))
    return paths
