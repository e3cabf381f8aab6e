"""Degraded inputs: exact synthetic videos made to look like Stage One's generated ones.

Why: every Stage Two number used to come from exact renders. A video diffusion model's output
differs in known ways, and each is reproduced here with a size that can be set:

- ``noise``: per-frame pixel noise (Gaussian, std in [0, 1] units, fresh every frame);
- ``flicker``: per-frame, per-view colour gain (one factor per channel, std around 1);
- ``jitter_px``: each view's frame shifted by its own random sub-pixel offset (uniform within
  +-jitter_px), so the four views disagree slightly about where things are;
- ``animate_view`` / ``animate_scale``: one view renders the motion scaled (0.6 = under-animated,
  1.4 = over-animated): ``v0 + s (v_f - v0)``, the others the true motion;
- ``soft_edge_px``: the alpha mask blurred (Gaussian sigma in pixels), soft generated edges.

Frame 0 keeps the exact alpha and position (Stage One's frame 0 is the conditioning view, its mask
is the rendered one: stage1/run.py), but gets noise and flicker like every frame. The ground truth
is never degraded: it is the true motion that Stage Two should recover despite the inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Degradation:
    noise: float = 0.0
    flicker: float = 0.0
    jitter_px: float = 0.0
    animate_view: int = -1  # -1: every view shows the true motion
    animate_scale: float = 1.0
    soft_edge_px: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, views: int) -> None:
        """Clear errors for settings that cannot be applied."""
        for name in ("noise", "flicker", "jitter_px", "soft_edge_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"degradation {name} must be >= 0, got {getattr(self, name)}")
        if not -1 <= self.animate_view < views:
            raise ValueError(f"degradation animate_view must be -1 (none) or a view index < {views}, got {self.animate_view}")
        if self.animate_scale < 0:
            raise ValueError(f"degradation animate_scale must be >= 0, got {self.animate_scale}")


# The benchmark's degraded regimes (sizes at 64 px; a generated 256 px video, downsampled, is in
# this range: Stage One's tiny/real samples show a few % noise and flicker and sub-pixel wobble).
PRESETS: dict[str, Degradation] = {
    "generated": Degradation(noise=0.03, flicker=0.04, jitter_px=0.5, soft_edge_px=0.7, seed=1),
    "under": Degradation(noise=0.03, flicker=0.04, jitter_px=0.5, soft_edge_px=0.7, animate_view=1, animate_scale=0.6, seed=2),
    "over": Degradation(noise=0.03, flicker=0.04, jitter_px=0.5, soft_edge_px=0.7, animate_view=1, animate_scale=1.4, seed=3),
}


def scaled_motion(vertices: np.ndarray, scale: float) -> np.ndarray:
    """[F,V,3] -> the same clip with every displacement from frame 0 scaled by ``scale``."""
    return vertices[:1] + scale * (vertices - vertices[:1])


def degrade_videos(videos: np.ndarray, deg: Degradation) -> np.ndarray:
    """Straight-alpha RGBA videos [V,F,H,W,4] -> degraded copy (the motion scaling of one view is
    applied by the caller, who renders it; this applies the image-space degradations)."""
    rng = np.random.default_rng(deg.seed)
    out = videos.astype(np.float32).copy()
    V, F = out.shape[:2]
    for v in range(V):
        for f in range(F):
            img = out[v, f]
            if f > 0 and deg.jitter_px > 0:
                dy, dx = rng.uniform(-deg.jitter_px, deg.jitter_px, size=2)
                img = np.stack([ndimage.shift(img[..., c], (dy, dx), order=1, mode="nearest") for c in range(4)], axis=-1)
            if f > 0 and deg.soft_edge_px > 0:
                img[..., 3] = ndimage.gaussian_filter(img[..., 3], deg.soft_edge_px, mode="nearest")
            if deg.flicker > 0:
                img[..., :3] *= 1.0 + rng.normal(0.0, deg.flicker, size=3).astype(np.float32)
            if deg.noise > 0:
                img[..., :3] += rng.normal(0.0, deg.noise, size=img[..., :3].shape).astype(np.float32)
            out[v, f] = img.clip(0.0, 1.0)
    return out
