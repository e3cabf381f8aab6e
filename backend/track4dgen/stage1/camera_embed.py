"""Camera conditioning of the MV-VDM (MVDream / Animate3D).

The U-Net's ``camera_embedding`` (diffusers ``TimestepEmbedding``: Linear 16->1280, SiLU,
Linear 1280->1280) takes the row-major flattened 4x4 camera-to-world matrix in MVDream's
convention: OpenGL camera axes (x right, y up, z backward), Blender world (+Z up), camera on the
unit sphere.  Our cameras are OpenCV world->camera (``track4dgen.cameras``), so this module is
the one place that converts: invert, flip the camera's y and z axes, scale the position to unit
distance.  For the rig at azimuth a / elevation e this reproduces MVDream's ``get_camera``
(checked in tests against its formula).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

OPENCV_TO_OPENGL_CAM = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_matrix_16(w2c: np.ndarray) -> np.ndarray:
    """One OpenCV world->camera 4x4 -> MVDream's 16-d camera vector (float32)."""
    w2c = np.asarray(w2c, dtype=np.float64).reshape(4, 4)
    c2w = np.linalg.inv(w2c) @ OPENCV_TO_OPENGL_CAM  # columns: camera axes in world, GL style
    dist = np.linalg.norm(c2w[:3, 3])
    if dist < 1e-8:
        raise ValueError("camera sits at the world origin; MVDream cameras orbit the object")
    c2w[:3, 3] /= dist
    return c2w.reshape(16).astype(np.float32)


def camera_tensor(w2cs: Sequence[np.ndarray] | np.ndarray, device=None, dtype=torch.float32) -> torch.Tensor:
    """[V, 16] camera vectors for a list of OpenCV world->camera matrices (or [V,4,4] array)."""
    mats = np.stack([camera_matrix_16(m) for m in np.asarray(w2cs).reshape(-1, 4, 4)])
    return torch.from_numpy(mats).to(device=device, dtype=dtype)


def cameras_from_job(cameras: Sequence) -> torch.Tensor:
    """[V, 16] from ``track4dgen.cameras.Camera`` objects (job.cameras)."""
    return camera_tensor([c.w2c for c in cameras])
