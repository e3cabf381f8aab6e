"""Procedural mesh parts for the synthetic objects.

Every part is a closed surface of revolution (a "lathe"): rings of vertices along a profile with
a single pole vertex at each end. That one generator gives spheres, ellipsoids, limbs and discs
with as many rings along their length as skinning needs (trimesh's capsules and cylinders have a
single band along the axis, so they cannot bend smoothly). Each part carries its own (u, v)
surface coordinates so colour patterns follow the surface and make motion visible in renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Part:
    """One closed piece of a synthetic object, in world units (Blender frame, +Z up)."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [T, 3] int64, counter-clockwise seen from outside
    uv: np.ndarray  # [V, 2]: u along the axis in [0, 1], v around it in [0, 1)
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.float32))  # [V, 3]
    tag: int = 0  # which part of the object (used for skinning weights)


def lathe(z: np.ndarray, r: np.ndarray, segments: int = 24) -> Part:
    """Revolve the profile (z[i], r[i]) about the +Z axis into a closed mesh.

    The first and last profile samples must have r == 0: they become single pole vertices, so the
    result is watertight. ``z`` must increase.
    """
    z = np.asarray(z, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if len(z) < 3 or len(z) != len(r):
        raise ValueError("lathe needs at least 3 profile samples and as many radii as heights")
    if abs(r[0]) > 1e-12 or abs(r[-1]) > 1e-12:
        raise ValueError("lathe profile must start and end on the axis (r = 0) to close the surface")
    rings = len(z) - 2
    ang = np.arange(segments) * (2 * np.pi / segments)
    ring_xyz = np.stack(
        [
            r[1:-1, None] * np.cos(ang)[None, :],
            r[1:-1, None] * np.sin(ang)[None, :],
            np.repeat(z[1:-1, None], segments, axis=1),
        ],
        axis=-1,
    ).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, z[0]]], ring_xyz, [[0.0, 0.0, z[-1]]]])
    top = len(verts) - 1

    def idx(ring: int, seg: np.ndarray) -> np.ndarray:
        return 1 + ring * segments + (seg % segments)

    s = np.arange(segments)
    faces = [np.stack([np.zeros(segments, dtype=np.int64), idx(0, s + 1), idx(0, s)], axis=1)]  # bottom cap
    for i in range(rings - 1):
        a, b = idx(i, s), idx(i, s + 1)
        c, d = idx(i + 1, s), idx(i + 1, s + 1)
        faces.append(np.stack([a, b, d], axis=1))
        faces.append(np.stack([a, d, c], axis=1))
    faces.append(np.stack([idx(rings - 1, s), idx(rings - 1, s + 1), np.full(segments, top)], axis=1))  # top cap
    faces_arr = np.concatenate(faces).astype(np.int64)

    zn = (z - z[0]) / max(z[-1] - z[0], 1e-12)
    u = np.concatenate([[0.0], np.repeat(zn[1:-1], segments), [1.0]])
    v = np.concatenate([[0.0], np.tile(ang / (2 * np.pi), rings), [0.0]])
    return Part(verts, faces_arr, np.stack([u, v], axis=1))


def ellipsoid(radii: tuple[float, float, float], rings: int = 16, segments: int = 24) -> Part:
    """An axis-aligned ellipsoid centred at the origin."""
    theta = np.linspace(0.0, np.pi, rings + 2)
    part = lathe(-np.cos(theta), np.sin(theta), segments)
    part.vertices = part.vertices * np.asarray(radii, dtype=np.float64)
    return part


def limb(length: float, r0: float, r1: float, rings: int = 20, segments: int = 16) -> Part:
    """A rounded, tapered tube from z = 0 to z = length (radius r0 at the base, r1 at the tip).

    Hemispherical ends keep it closed; many rings along its length let skinning bend it smoothly.
    """
    cap = 4
    t0 = np.linspace(-np.pi / 2, 0.0, cap + 1)[:-1]  # base cap, bottom pole first
    zs = [r0 * np.sin(t0)]
    rs = [r0 * np.cos(t0)]
    body = np.linspace(0.0, length, rings)
    zs.append(body)
    rs.append(r0 + (r1 - r0) * body / length)
    t1 = np.linspace(0.0, np.pi / 2, cap + 1)[1:]  # tip cap
    zs.append(length + r1 * np.sin(t1))
    rs.append(r1 * np.cos(t1))
    z, r = np.concatenate(zs), np.concatenate(rs)
    r[0] = r[-1] = 0.0
    return lathe(z, r, segments)


def rotation(axis: str | np.ndarray, angle: float) -> np.ndarray:
    """3x3 right-handed rotation by ``angle`` radians about ``axis`` ('x', 'y', 'z' or a vector)."""
    if isinstance(axis, str):
        axis = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]), "z": np.array([0, 0, 1.0])}[axis]
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def place(part: Part, R: np.ndarray | None = None, t: tuple[float, float, float] | np.ndarray = (0, 0, 0)) -> Part:
    """Rotate then translate a part in place; returns it for chaining."""
    if R is not None:
        part.vertices = part.vertices @ np.asarray(R).T
    part.vertices = part.vertices + np.asarray(t, dtype=np.float64)
    return part


def _quantise(c: np.ndarray) -> np.ndarray:
    """Colours on the 8-bit grid, so a GLB round trip (uint8 vertex colours) is exact."""
    return (np.round(np.clip(c, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def checker(part: Part, a: tuple[float, float, float], b: tuple[float, float, float], nu: int, nv: int) -> Part:
    """Colour a part with an nu x nv checkerboard over its (u, v) surface coordinates."""
    cell = (np.floor(part.uv[:, 0] * nu).astype(int) + np.floor(part.uv[:, 1] * nv).astype(int)) % 2
    part.colors = _quantise(np.where(cell[:, None] == 0, np.asarray(a), np.asarray(b)))
    return part


def stripes(part: Part, palette: list[tuple[float, float, float]], n: int) -> Part:
    """Colour a part with n bands along its axis, cycling through ``palette``."""
    band = np.minimum(np.floor(part.uv[:, 0] * n).astype(int), n - 1) % len(palette)
    part.colors = _quantise(np.asarray(palette, dtype=np.float64)[band])
    return part


def merge(parts: list[Part]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate parts -> (vertices [V,3], faces [T,3], colors [V,3] float32, tag per vertex [V])."""
    verts, faces, cols, tags, off = [], [], [], [], 0
    for p in parts:
        if p.colors.shape != (len(p.vertices), 3):
            raise ValueError("every part needs a colour per vertex; call checker() or stripes() first")
        verts.append(p.vertices)
        faces.append(p.faces + off)
        cols.append(p.colors)
        tags.append(np.full(len(p.vertices), p.tag, dtype=np.int64))
        off += len(p.vertices)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(cols).astype(np.float32), np.concatenate(tags)
