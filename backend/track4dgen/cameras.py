"""The one camera convention of the backend.

Every camera in the project is OpenCV-style: a world->camera 4x4 matrix (camera x right, y down,
z forward) and pixel intrinsics K. The world frame is Blender's (right-handed, +Z up, the object's
front faces -Y), so a mesh exported from Blender and a synthetic mesh live in the same frame.

Orbit rig (Animate3D's conditioning views): azimuth 0 looks at the object's front from -Y,
azimuth 90 from +X (Blender's "right" view), elevation lifts the camera toward +Z.
The add-on converts Blender cameras to this convention in exactly one function
(``addon/cameras.py``); this module mirrors the rig so both sides build identical cameras.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# Animate3D's rig (DESIGN.md, Camera convention).
RIG_ELEVATION_DEG = 15.0
RIG_AZIMUTHS_DEG = (0.0, 90.0, 180.0, 270.0)
HELDOUT_AZIMUTHS_DEG = (45.0, 135.0, 225.0, 315.0)
RIG_DISTANCE = 3.0
RIG_FOV_Y_DEG = 40.0
WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: K (3x3 pixels), world->camera (4x4, OpenCV), image size."""

    K: np.ndarray
    w2c: np.ndarray
    width: int
    height: int

    @property
    def c2w(self) -> np.ndarray:
        return np.linalg.inv(self.w2c)

    @property
    def center(self) -> np.ndarray:
        return self.c2w[:3, 3].copy()

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [..., 3] -> (pixel coords [..., 2] with pixel centres at +0.5, depth [...])."""
        return project_points(points, self.K, self.w2c)

    def to_json(self) -> dict:
        return {
            "K": self.K.tolist(),
            "w2c": self.w2c.tolist(),
            "width": int(self.width),
            "height": int(self.height),
        }

    @staticmethod
    def from_json(d: dict) -> "Camera":
        return Camera(
            K=np.asarray(d["K"], dtype=np.float64).reshape(3, 3),
            w2c=np.asarray(d["w2c"], dtype=np.float64).reshape(4, 4),
            width=int(d["width"]),
            height=int(d["height"]),
        )


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> np.ndarray:
    """K with square pixels, f = 0.5*H / tan(fov_y/2), principal point at the image centre."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def look_at_w2c(eye: np.ndarray, target: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """OpenCV world->camera matrix for a camera at ``eye`` looking at ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight up/down: pick any perpendicular
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def orbit_eye(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera position on the orbit: azimuth 0 = front (-Y), 90 = right (+X)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])


def orbit_camera(
    azimuth_deg: float,
    elevation_deg: float = RIG_ELEVATION_DEG,
    distance: float = RIG_DISTANCE,
    fov_y_deg: float = RIG_FOV_Y_DEG,
    resolution: int = 256,
) -> Camera:
    eye = orbit_eye(azimuth_deg, elevation_deg, distance)
    return Camera(
        K=intrinsics_from_fov(fov_y_deg, resolution, resolution),
        w2c=look_at_w2c(eye, np.zeros(3)),
        width=resolution,
        height=resolution,
    )


def rig_cameras(
    resolution: int = 256,
    azimuths_deg: Sequence[float] = RIG_AZIMUTHS_DEG,
    elevation_deg: float = RIG_ELEVATION_DEG,
    distance: float = RIG_DISTANCE,
    fov_y_deg: float = RIG_FOV_Y_DEG,
) -> list[Camera]:
    """The conditioning rig (default) or any other orbit, e.g. HELDOUT_AZIMUTHS_DEG."""
    return [orbit_camera(a, elevation_deg, distance, fov_y_deg, resolution) for a in azimuths_deg]


def project_points(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection. Pixel (0, 0) is the top-left corner of the top-left pixel."""
    pts = np.asarray(points, dtype=np.float64)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[..., 2]
    uv = (cam[..., :2] / z[..., None]) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv, z


def save_cameras(path: str | Path, cameras: Sequence[Camera], extra: dict | None = None) -> None:
    """cameras.json of a job folder: {"convention": "opencv", "views": [...]}."""
    payload = {"convention": "opencv", "views": [c.to_json() for c in cameras]}
    if extra:
        payload.update(extra)
    Path(path).write_text(json.dumps(payload, indent=1))


def load_cameras(path: str | Path) -> list[Camera]:
    data = json.loads(Path(path).read_text())
    if data.get("convention", "opencv") != "opencv":
        raise ValueError(f"{path}: convention must be 'opencv', got {data.get('convention')!r}")
    return [Camera.from_json(v) for v in data["views"]]
