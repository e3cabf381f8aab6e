"""4D-SDS from random orbit cameras, as Animate3D's 4D stage samples them.

The reference does not score renders of the 4 training cameras: every SDS step renders all F
frames from 4 fresh cameras 90 degrees apart around the object (``uncond_hybrid.py`` ``collate``
with ``motion_recon_frame_16.yaml``'s ``random_camera`` block, commit 033a1be):

* azimuths ``(u + k) * 90 - 180`` for k = 0..3, one u ~ U[0, 1) per step (``azimuth_range``
  (-180, 180) split into ``n_view`` = 4 equal parts, ``batch_uniform_azimuth``);
* elevation in [0, 30] degrees (``elevation_range``), half the steps uniform in angle, half
  uniform on the sphere (inverse-sine sampling), one value for all views;
* vertical field of view U[15, 60] degrees (``fovy_range``);
* distance U[0.8, 1.0] / tan(fovy / 2) (``camera_distance_range`` with ``relative_radius``), so
  the object fills a similar part of every image; at fovy 40 that is 2.2-2.7, around the rig's
  3.0 (both worlds normalise the object the same way: the reference's conditioning rig is ours).

Azimuths here are our orbit's (front = 0); ``stage1.camera_embed`` turns them into the
reference's vectors, so "azimuth 0 = the front" holds on both sides.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..cameras import orbit_camera
from .losses import SdsFn, sds_loss

SDS_NUM_VIEWS = 4  # n_view (the MV-VDM's view count; a job with other views uses its own)
SDS_ELEVATION_RANGE_DEG = (0.0, 30.0)  # random_camera.elevation_range
SDS_FOVY_RANGE_DEG = (15.0, 60.0)  # random_camera.fovy_range
SDS_DISTANCE_RANGE_REL = (0.8, 1.0)  # random_camera.camera_distance_range, relative_radius: true


def sample_sds_orbit(gen: torch.Generator, num_views: int = SDS_NUM_VIEWS) -> dict[str, object]:
    """One step's orbit: azimuths [num_views] (degrees), elevation, fovy (degrees), distance."""
    u = float(torch.rand((), generator=gen))
    azimuths = [(u + k) * 360.0 / num_views - 180.0 for k in range(num_views)]
    lo, hi = SDS_ELEVATION_RANGE_DEG
    r = float(torch.rand((), generator=gen))
    if float(torch.rand((), generator=gen)) < 0.5:
        elevation = lo + r * (hi - lo)
    else:  # uniform on the sphere's band
        s_lo, s_hi = math.sin(math.radians(lo)), math.sin(math.radians(hi))
        elevation = math.degrees(math.asin(s_lo + r * (s_hi - s_lo)))
    fovy = SDS_FOVY_RANGE_DEG[0] + float(torch.rand((), generator=gen)) * (SDS_FOVY_RANGE_DEG[1] - SDS_FOVY_RANGE_DEG[0])
    rel = SDS_DISTANCE_RANGE_REL[0] + float(torch.rand((), generator=gen)) * (SDS_DISTANCE_RANGE_REL[1] - SDS_DISTANCE_RANGE_REL[0])
    distance = rel / math.tan(math.radians(fovy) / 2.0)
    return {"azimuths": azimuths, "elevation": elevation, "fovy": fovy, "distance": distance}


def sds_cameras(orbit: dict[str, object], width: int, height: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(viewmats [V, 4, 4] world->camera, Ks [V, 3, 3]) of an orbit at the render size."""
    cams = [orbit_camera(a, orbit["elevation"], orbit["distance"], orbit["fovy"], resolution=height)
            for a in orbit["azimuths"]]
    viewmats = torch.tensor(np.stack([c.w2c for c in cams]), dtype=torch.float32, device=device)
    Ks = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32, device=device)
    Ks[:, 0, 2] = width / 2.0  # orbit_camera builds square images; keep the principal point centred
    return viewmats, Ks


RenderFrame = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]  # (frame, viewmats, Ks) -> rgb [C,H,W,3]


def random_view_sds(sds_fn: SdsFn, render: RenderFrame, num_views: int, num_frames: int, size: tuple[int, int],
                    gen: torch.Generator, device=None) -> tuple[torch.Tensor | None, dict[str, object]]:
    """Render every frame from one random orbit and score the [V, F, 3, H, W] stack with 4D-SDS.

    Returns (loss or None when SDS is off, the orbit used)."""
    width, height = size
    orbit = sample_sds_orbit(gen, num_views)
    viewmats, Ks = sds_cameras(orbit, width, height, device)
    rows = [render(f, viewmats, Ks) for f in range(num_frames)]  # each [4, H, W, 3]
    renders = torch.stack(rows, dim=1).permute(0, 1, 4, 2, 3).clamp(0, 1)
    return sds_loss(sds_fn, renders, cameras=viewmats.detach().cpu().numpy()), orbit
