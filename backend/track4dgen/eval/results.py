"""Read a result folder's ``gaussians4d.npz`` and render it at any cameras and frames.

Rendering goes through Stage Two's rasterizer (``track4dgen.stage2.raster.rasterize``) with the
per-frame arrays (``frame_means``, ``frame_quats``, ``frame_log_scales``, ``frame_rgb``) and the
canonical ``opacity``, exactly what a viewer without SH evaluation shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..cameras import Camera

FRAME_KEYS = ("frame_means", "frame_quats", "frame_log_scales", "frame_rgb")


class ResultError(ValueError):
    """A result folder that cannot be evaluated; the message says which file/key and why."""


def load_gaussians(result_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``RESULT/gaussians4d.npz`` (or of an .npz path) with shapes checked;
    ``opacity`` is derived from ``opacity_logit`` when a writer stored only the logit."""
    path = Path(result_dir)
    if path.suffix != ".npz":
        path = path / "gaussians4d.npz"
    if not path.is_file():
        raise ResultError(f"{path} is missing; pass a result folder written by `track4dgen run`")
    with np.load(path) as z:
        g = {k: z[k] for k in z.files}
    missing = [k for k in FRAME_KEYS if k not in g]
    if missing:
        raise ResultError(f"{path} lacks per-frame arrays {missing}; re-export the result with a current track4dgen")
    if "opacity" not in g:
        if "opacity_logit" not in g:
            raise ResultError(f"{path} has neither 'opacity' nor 'opacity_logit'")
        g["opacity"] = 1.0 / (1.0 + np.exp(-g["opacity_logit"]))
    F, N = g["frame_means"].shape[:2]
    expect = {"frame_means": (F, N, 3), "frame_quats": (F, N, 4), "frame_log_scales": (F, N, 3), "frame_rgb": (F, N, 3), "opacity": (N,)}
    for k, shape in expect.items():
        if tuple(g[k].shape) != shape:
            raise ResultError(f"{path}: {k} has shape {g[k].shape}, expected {shape}")
        if not np.isfinite(g[k]).all():
            raise ResultError(f"{path}: {k} contains NaN or infinite values")
    if "means" not in g:
        g["means"] = g["frame_means"][0]
    # the tracked surface points; results without a rendered offset track their centres
    g.setdefault("frame_surface", g["frame_means"])
    if tuple(g["frame_surface"].shape) != (F, N, 3) or not np.isfinite(g["frame_surface"]).all():
        raise ResultError(f"{path}: frame_surface must be finite with shape {(F, N, 3)}, got {g['frame_surface'].shape}")
    return g


def render_gaussians(
    g: dict[str, np.ndarray],
    cameras: Sequence[Camera],
    frames: Sequence[int] | None = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
    device: str = "cpu",
) -> np.ndarray:
    """Render frames at cameras -> float32 [C, F, H, W, 4] (RGB composited on ``background``, alpha)."""
    import torch

    try:
        from ..stage2.raster import rasterize
    except ImportError as exc:  # pragma: no cover - only before Stage Two is installed
        raise ResultError("track4dgen.stage2.raster.rasterize is not available; install the full backend") from exc
    if not cameras:
        raise ValueError("render_gaussians needs at least one camera")
    w, h = cameras[0].width, cameras[0].height
    if any((c.width, c.height) != (w, h) for c in cameras):
        raise ValueError("all cameras of one render call must share the image size")
    frames = list(range(g["frame_means"].shape[0])) if frames is None else list(frames)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    viewmats = t(np.stack([c.w2c for c in cameras]))
    Ks = t(np.stack([c.K for c in cameras]))
    bg = t(np.tile(np.asarray(background, dtype=np.float32)[None], (len(cameras), 1)))
    out = np.zeros((len(cameras), len(frames), h, w, 4), dtype=np.float32)
    mode = str(g.get("rasterize_mode", "classic"))  # results from before the key was written: classic
    with torch.no_grad():
        for i, f in enumerate(frames):
            means = t(g["frame_means"][f])
            rgb, alpha = rasterize(
                means, t(g["frame_quats"][f]), t(np.exp(g["frame_log_scales"][f])), t(g["opacity"]),
                _colours(g, f, means, viewmats, t), viewmats, Ks, w, h, backgrounds=bg, backend=backend,
                rasterize_mode=mode,
            )
            out[:, i, ..., :3] = rgb.float().cpu().numpy()
            out[:, i, ..., 3:] = alpha.float().cpu().numpy()
    return out


def _colours(g: dict[str, np.ndarray], frame: int, means, viewmats, t):
    """Per-camera colours ``[C, N, 3]`` from the 4D SH toward each camera (what Stage Two renders);
    results without ``sh4d`` fall back to the view-averaged ``frame_rgb``."""
    import torch

    if "sh4d" not in g:
        return t(np.clip(g["frame_rgb"][frame], 0, 1))
    from ..stage2.sh4d import coeffs_at, eval_rgb, view_dirs

    frames = g["frame_means"].shape[0]
    tau = frame / max(frames - 1, 1)  # time_norm = frame / (frames - 1)
    R, tr = viewmats[:, :3, :3], viewmats[:, :3, 3]
    centres = -(R.transpose(1, 2) @ tr[..., None])[..., 0]
    coeffs = coeffs_at(t(g["sh4d"]), tau)
    return eval_rgb(coeffs, view_dirs(means, centres)).clamp(0, 1).to(torch.float32)
