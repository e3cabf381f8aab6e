"""Deformation building blocks for the synthetic motions.

Every motion is a function of the clip phase t in [0, 1) that is exactly the identity at t = 0,
so frame 0 is the rest pose that ``mesh.glb`` stores. Phases are f / F (a looping clip), which
keeps per-frame motion the same size whatever the number of frames.
"""

from __future__ import annotations

import numpy as np

from .shapes import rotation


def phases(frames: int) -> np.ndarray:
    """Clip phase of each frame: f / F for f in 0..F-1 (frame 0 -> 0, a seamless loop)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return np.arange(frames, dtype=np.float64) / frames


def smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    """0 below a, 1 above b, C1-smooth between: smooth skinning weights along a limb."""
    s = np.clip((np.asarray(x, dtype=np.float64) - a) / (b - a), 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def rotate_about(points: np.ndarray, R: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Rigidly rotate points [N,3] by R about ``pivot``."""
    return (points - pivot) @ R.T + pivot


def two_bone_skin(
    points: np.ndarray,
    s: np.ndarray,
    axis: np.ndarray,
    shoulder: np.ndarray,
    elbow: np.ndarray,
    shoulder_angle: float,
    elbow_angle: float,
    shoulder_ramp: tuple[float, float] = (0.0, 0.2),
    elbow_ramp: tuple[float, float] = (0.35, 0.65),
) -> np.ndarray:
    """Linear-blend skinning of a limb with two bones (shoulder -> elbow -> tip).

    ``s`` is each vertex's normalised position along the limb. Weights: rest (1 - w1), bone 1
    (w1 - w2), bone 2 (w2), with w1 = smoothstep over ``shoulder_ramp`` and w2 over
    ``elbow_ramp``; the bone-2 transform is bone 1 followed by the elbow rotation about the rest
    elbow, so the elbow pivot travels with the upper arm and the limb bends smoothly.
    """
    w1 = smoothstep(*shoulder_ramp, s)
    w2 = np.minimum(smoothstep(*elbow_ramp, s), w1)
    R1 = rotation(axis, shoulder_angle)
    R2 = rotation(axis, elbow_angle)
    p1 = rotate_about(points, R1, shoulder)
    p2 = rotate_about(rotate_about(points, R2, elbow), R1, shoulder)
    return (1.0 - w1)[:, None] * points + (w1 - w2)[:, None] * p1 + w2[:, None] * p2


def squash(points: np.ndarray, amount: float, anchor_z: float, center_xy: np.ndarray) -> np.ndarray:
    """Volume-preserving squash (amount > 0) or stretch (amount < 0) about a ground point.

    Height scales by (1 - amount) from ``anchor_z``; width by 1/sqrt(1 - amount) about
    ``center_xy`` so the volume stays the same, the classic squash-and-stretch.
    """
    sz = 1.0 - amount
    sxy = 1.0 / np.sqrt(sz)
    out = points.copy()
    out[:, :2] = center_xy + (points[:, :2] - center_xy) * sxy
    out[:, 2] = anchor_z + (points[:, 2] - anchor_z) * sz
    return out


def bend_about_z(points: np.ndarray, base: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate each point about the vertical axis through ``base`` by its own angle [N]: a
    continuous bend when the angle grows along a limb (a wagging tail)."""
    d = points - base
    c, s = np.cos(angles), np.sin(angles)
    out = points.copy()
    out[:, 0] = base[0] + c * d[:, 0] - s * d[:, 1]
    out[:, 1] = base[1] + s * d[:, 0] + c * d[:, 1]
    return out


def bend_about_axis(points: np.ndarray, base: np.ndarray, axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate each point [N,3] about the line through ``base`` along unit ``axis`` by its own angle
    [N] (Rodrigues, vectorised): a continuous bend of a limb about any axis, not only a world one."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    d = points - base
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    return base + d * c + np.cross(k, d) * s + k * (d @ k)[:, None] * (1.0 - c)
