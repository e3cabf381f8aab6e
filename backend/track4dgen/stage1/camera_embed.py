"""Camera conditioning of the MV-VDM, in the convention the released Animate3D weights were
trained with.

The U-Net's ``camera_embedding`` (diffusers ``TimestepEmbedding``: Linear 16->1280, SiLU,
Linear 1280->1280) takes a row-major flattened 4x4 camera-to-world matrix: OpenGL camera axes
(x right, y up, z backward), z-up world, camera position scaled to unit distance.

Which world: Animate3D's own (its inference ``get_camera``, its training data's ``azi_start``,
its 4D-SDS cameras): azimuth 0 at +X, 90 at +Y, and its view 0 — the object's front — at
azimuth 0.  Ours (``track4dgen.cameras``, Blender's): the front is seen from -Y (azimuth 0), 90
from +X.  Both orbits turn the same way, so our world maps onto Animate3D's by a +90 degree turn
about Z, and then our rig view i gets exactly the reference's view i vector
(``../shared/fixtures/animate3d/official_get_camera_4.json``, tested to 1e-6).  Without that
turn our view i would carry the reference's view (i+3) mod 4 vector — the model would read the
front image as seen from the object's side (MVDream's original azimuth-0-at-−Y convention).

Our cameras are OpenCV world->camera (``track4dgen.cameras``), so this module is the one place
that converts: invert, flip the camera's y and z axes, turn the world, scale to unit distance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

OPENCV_TO_OPENGL_CAM = np.diag([1.0, -1.0, -1.0, 1.0])
# our world (front seen from -Y) -> Animate3D's (front seen from +X): +90 degrees about Z
OURS_TO_ANIMATE3D_WORLD = np.array([[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def camera_matrix_16(w2c: np.ndarray, world: np.ndarray = OURS_TO_ANIMATE3D_WORLD) -> np.ndarray:
    """One OpenCV world->camera 4x4 -> the MV-VDM's 16-d camera vector (float32).

    ``world`` turns our world into the one the vectors are read in; the default is Animate3D's
    (the released weights); ``np.eye(4)`` gives MVDream's original convention (front at -Y)."""
    w2c = np.asarray(w2c, dtype=np.float64).reshape(4, 4)
    c2w = np.asarray(world, dtype=np.float64) @ np.linalg.inv(w2c) @ OPENCV_TO_OPENGL_CAM  # GL camera axes
    dist = np.linalg.norm(c2w[:3, 3])
    if dist < 1e-8:
        raise ValueError("camera sits at the world origin; MV-VDM cameras orbit the object")
    c2w[:3, 3] /= dist
    return c2w.reshape(16).astype(np.float32)


def camera_tensor(w2cs: Sequence[np.ndarray] | np.ndarray, device=None, dtype=torch.float32) -> torch.Tensor:
    """[V, 16] camera vectors for a list of OpenCV world->camera matrices (or [V,4,4] array)."""
    mats = np.stack([camera_matrix_16(m) for m in np.asarray(w2cs).reshape(-1, 4, 4)])
    return torch.from_numpy(mats).to(device=device, dtype=dtype)


def cameras_from_job(cameras: Sequence) -> torch.Tensor:
    """[V, 16] from ``track4dgen.cameras.Camera`` objects (job.cameras)."""
    return camera_tensor([c.w2c for c in cameras])


def animate3d_orbit_vectors(elevation_deg: float, azimuth_start_deg: float = 0.0, num_views: int = 4) -> torch.Tensor:
    """[V, 16] vectors of Animate3D's own orbit (its ``get_camera``: views 360/V degrees apart
    from ``azimuth_start``, azimuth 0 at +X, z up), computed in its world directly — the
    reference side of the tests, and what an MV-Video entry's ``angle`` means."""
    out = []
    for k in range(num_views):
        el = np.radians(elevation_deg)
        az = np.radians(azimuth_start_deg + k * 360.0 / num_views)
        pos = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        right = np.cross(-pos, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, -pos)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, up, pos], axis=1)
        c2w[:3, 3] = pos
        out.append(c2w.reshape(16))
    return torch.from_numpy(np.stack(out).astype(np.float32))
