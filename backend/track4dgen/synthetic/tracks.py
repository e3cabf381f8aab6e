"""Exact 2D tracks of surface points of an animated mesh, with visibility.

Points are sampled once on the rest pose as (face id, barycentrics); because the topology is
fixed, the same barycentric combination of each frame's vertices IS that material point in every
frame, so projecting it with a view's camera gives an exact track, not an estimate.

Visibility asks the renderer: the point is visible when it is inside the image and nothing drawn
at its pixel lies in front of it. The comparison uses the visible face's plane evaluated along the
point's own ray (not the pixel-centre depth), so it stays exact at grazing angles; a face that is
the point's own or shares a vertex with it never counts as an occluder.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..cameras import Camera
from .objects import AnimatedMesh
from ..meshraster import NEAR, Raster, rasterize, scaled_camera
from .render import render_mesh_raster

DEFAULT_POINTS = 512
DEPTH_TOLERANCE = 0.02  # world units; objects are normalised to the unit sphere


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform surface samples -> (face ids [P], barycentrics [P, 3])."""
    if count < 1:
        raise ValueError(f"number of track points must be >= 1, got {count}")
    v = np.asarray(vertices, dtype=np.float64)
    area = 0.5 * np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1)
    rng = np.random.default_rng(seed)
    face_ids = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)  # uniform on the triangle (Osada et al.)
    bary = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)
    return face_ids.astype(np.int64), bary


def points_at(vertices: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Surface points for vertices [..., V, 3] -> [..., P, 3]."""
    tri = np.asarray(vertices)[..., faces[face_ids], :]  # [..., P, 3, 3]
    return (tri * bary[:, :, None]).sum(-2)


def point_visibility(
    points: np.ndarray,
    point_faces: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    camera: Camera,
    raster: Raster,
    tolerance: float = DEPTH_TOLERANCE,
) -> np.ndarray:
    """Visibility [P] of surface points (lying on ``point_faces``) in a raster of the same mesh.

    ``raster`` may be on a finer grid than ``camera`` (supersampled); its scale is read from its size.
    """
    uv, zp = camera.project(points)
    inside = (zp > NEAR) & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0) & (uv[:, 1] < camera.height)
    scale = raster.width / camera.width
    ix = np.clip(np.floor(uv[:, 0] * scale).astype(np.int64), 0, raster.width - 1)
    iy = np.clip(np.floor(uv[:, 1] * scale).astype(np.int64), 0, raster.height - 1)
    fo = raster.face_id[iy, ix]
    covered = fo >= 0
    fo_safe = np.where(covered, fo, 0)
    same = fo == point_faces
    adjacent = (faces[fo_safe][:, :, None] == faces[point_faces][:, None, :]).any(axis=(1, 2))
    # depth of the occluding face's plane along the point's own ray
    cam_v = vertices @ camera.w2c[:3, :3].T + camera.w2c[:3, 3]
    A, B, C = (cam_v[faces[fo_safe, k]] for k in range(3))
    n = np.cross(B - A, C - A)
    K = camera.K
    d = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))], axis=1)
    nd = (n * d).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plane_z = np.where(np.abs(nd) > 1e-12, (n * A).sum(1) / nd, np.inf)
    in_front = covered & ~same & ~adjacent & (plane_z > NEAR) & (plane_z + tolerance < zp)
    return inside & ~in_front


def compute_tracks(
    anim: AnimatedMesh,
    cameras: Sequence[Camera],
    num_points: int = DEFAULT_POINTS,
    seed: int = 0,
    supersample: int = 2,
    tolerance: float = DEPTH_TOLERANCE,
) -> dict[str, np.ndarray]:
    """Exact tracks of ``num_points`` surface points in every view and frame.

    Returns ``tracks`` [V,F,P,2] (pixels, corner convention), ``visibility`` [V,F,P] bool,
    ``points_canonical`` [P,3], ``points`` [F,P,3] (3D positions per frame), ``face_ids`` [P],
    ``barycentrics`` [P,3] and ``point_colors`` [P,3].
    """
    return render_and_track(anim, cameras, num_points, seed, supersample, tolerance, render=False)[1]


def render_and_track(
    anim: AnimatedMesh,
    cameras: Sequence[Camera],
    num_points: int = DEFAULT_POINTS,
    seed: int = 0,
    supersample: int = 2,
    tolerance: float = DEPTH_TOLERANCE,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    render: bool = True,
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Videos [V,F,H,W,4] (or None when ``render`` is False) and ``compute_tracks``' dict, sharing
    one rasterization per view and frame so visibility agrees exactly with the rendered pixels."""
    face_ids, bary = sample_surface(anim.canonical, anim.faces, num_points, seed)
    pts = points_at(anim.vertices_per_frame, anim.faces, face_ids, bary)  # [F,P,3]
    V, F = len(cameras), anim.num_frames
    tracks = np.zeros((V, F, num_points, 2))
    vis = np.zeros((V, F, num_points), dtype=bool)
    videos = np.zeros((V, F, cameras[0].height, cameras[0].width, 4), dtype=np.float32) if render else None
    for vi, cam in enumerate(cameras):
        fine = scaled_camera(cam, supersample) if supersample > 1 else cam
        for f, verts in enumerate(anim.vertices_per_frame):
            tracks[vi, f] = cam.project(pts[f])[0]
            if render:
                videos[vi, f], raster = render_mesh_raster(verts, anim.faces, anim.colors, cam, background, supersample)
            else:
                raster = rasterize(verts, anim.faces, fine)
            vis[vi, f] = point_visibility(pts[f], face_ids, verts, anim.faces, cam, raster, tolerance)
    colors = (anim.colors[anim.faces[face_ids]] * bary[:, :, None]).sum(1).astype(np.float32)
    return videos, {
        "tracks": tracks.astype(np.float32),
        "visibility": vis,
        "points_canonical": pts[0],
        "points": pts,
        "face_ids": face_ids,
        "barycentrics": bary,
        "point_colors": colors,
    }
