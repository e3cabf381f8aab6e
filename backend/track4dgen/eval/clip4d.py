"""CLIP metrics of the paper's 4D tables (CLIP-O img/text, CLIP-F img/text, CLIP-C).

One pinned definition (the paper does not spell one out; this is ours, quoted by the README):

* Renders are composited on **white**; the reference image (the conditioning front view, RGBA)
  is composited on white too. Embeddings are unit-normalised CLIP image/text embeddings
  (``backbones.ClipEncoder``: shorter side 224 bicubic without antialiasing as VBench's
  ``clip_transform``, centre crop, CLIP norm); scores are
  **raw cosines** (no x100, no clamp at 0).
* **Orbit**: ``ORBIT_VIEWS`` = 8 cameras at azimuths 0, 45, ..., 315 deg, elevation 15 deg,
  distance 3.0, vertical FOV 40 deg (the conditioning rig's orbit, ``track4dgen.cameras``),
  every frame. **Front**: azimuth 0 (the conditioning front view), every frame.
* ``clip_o_img``  = mean over frames and orbit views of cos(E(reference), E(render)).
* ``clip_o_text`` = mean over frames and orbit views of cos(T(prompt), E(render)).
* ``clip_f_img``  = mean over frames of cos(E(reference), E(front render)).
* ``clip_f_text`` = mean over frames of cos(T(prompt), E(front render)).
* ``clip_c``      = mean over orbit views of the mean consecutive-frame cosine
  cos(E(render_f), E(render_f+1)) of that view.

The CLIP variant is whatever ``ClipEncoder`` is passed (``load_clip("openai/clip-vit-large-patch14")``
by default in the CLI, ``--clip`` switches it, e.g. ``openai/clip-vit-base-patch32``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import video_io
from ..cameras import RIG_DISTANCE, RIG_ELEVATION_DEG, RIG_FOV_Y_DEG, Camera, rig_cameras

ORBIT_VIEWS = 8


def orbit_cameras(n_views: int = ORBIT_VIEWS, resolution: int = 256, elevation_deg: float = RIG_ELEVATION_DEG) -> list[Camera]:
    """The evaluation orbit: n azimuths from 0 (front) in equal steps, the rig's elevation/FOV."""
    az = [360.0 * i / n_views for i in range(n_views)]
    return rig_cameras(resolution, az, elevation_deg, RIG_DISTANCE, RIG_FOV_Y_DEG)


def composite(rgba: np.ndarray, background: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """RGBA float [..., 4] in [0,1] -> RGB over ``background`` (RGB input is returned as is)."""
    a = np.asarray(rgba, dtype=np.float32)
    if a.shape[-1] == 3:
        return a
    if a.shape[-1] != 4:
        raise ValueError(f"expected RGB or RGBA images, got last axis {a.shape[-1]}")
    return video_io.composite(a, background)


def _embed(clip, images: np.ndarray, batch: int = 32) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    return torch.cat([clip.encode_images(x[i : i + batch]).float().cpu() for i in range(0, len(x), batch)])


def clip4d_metrics(
    clip,
    orbit_renders: np.ndarray,
    front_renders: np.ndarray | None = None,
    reference_image: np.ndarray | None = None,
    prompt: str | None = None,
) -> dict[str, float]:
    """All CLIP metrics computable from the inputs (module doc for the definitions).

    ``orbit_renders`` [F, A, H, W, 3|4]; ``front_renders`` [F, H, W, 3|4] (default: orbit view 0,
    which is the front when the orbit starts at azimuth 0); ``reference_image`` [H, W, 3|4].
    """
    orbit = composite(orbit_renders)
    if orbit.ndim != 5:
        raise ValueError(f"orbit_renders must be [F, A, H, W, C], got {orbit.shape}")
    F_, A = orbit.shape[:2]
    if F_ < 2:
        raise ValueError("CLIP-C needs at least 2 frames")
    front = orbit[:, 0] if front_renders is None else composite(front_renders)
    e_orbit = _embed(clip, orbit.reshape(F_ * A, *orbit.shape[2:])).reshape(F_, A, -1)
    e_front = e_orbit[:, 0] if front_renders is None else _embed(clip, front)
    out: dict[str, float] = {}
    out["clip_c"] = float((e_orbit[1:] * e_orbit[:-1]).sum(-1).mean(0).mean())
    if reference_image is not None:
        e_ref = _embed(clip, composite(reference_image)[None])[0]
        out["clip_o_img"] = float((e_orbit @ e_ref).mean())
        out["clip_f_img"] = float((e_front @ e_ref).mean())
    if prompt:
        e_txt = clip.encode_texts([prompt]).float().cpu()[0]
        out["clip_o_text"] = float((e_orbit @ e_txt).mean())
        out["clip_f_text"] = float((e_front @ e_txt).mean())
    return out
