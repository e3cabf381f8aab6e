"""A small deterministic triangle-mesh renderer (numpy, CPU) for the synthetic ground truth.

Why our own: the ground-truth videos must come from the same OpenCV cameras as everything else
(``track4dgen.cameras``), be bit-for-bit reproducible, need no GPU and no Blender. Visibility comes
from the z-buffer rasterizer in ``track4dgen.meshraster``; colours are perspective-correct
interpolated vertex colours times a Lambert term from one fixed world light (so the four views look
different), supersampled for antialiasing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..cameras import Camera
from ..meshraster import Raster, box_downsample, rasterize, scaled_camera

LIGHT_DIR = np.array([-0.45, -0.75, 0.6]) / np.linalg.norm([-0.45, -0.75, 0.6])  # toward the light: front-left-top
AMBIENT = 0.45


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (smooth shading)."""
    v = np.asarray(vertices, dtype=np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def shade_raster(raster: Raster, faces: np.ndarray, colors: np.ndarray, normals: np.ndarray | None, light_dir: np.ndarray = LIGHT_DIR,
                 ambient: float = AMBIENT) -> np.ndarray:
    """Premultiplied RGBA [H, W, 4] for a raster: interpolated colour x (ambient + diffuse Lambert).

    ``normals`` None renders the raw vertex colours (no shading), which tests use to compare
    rendered colours with the mesh's own colours.
    """
    H, W = raster.height, raster.width
    out = np.zeros((H * W, 4), dtype=np.float32)
    idx = np.flatnonzero(raster.face_id.ravel() >= 0)
    fid = raster.face_id.ravel()[idx]
    b = raster.bary.reshape(-1, 3)[idx]
    vid = faces[fid]  # [N, 3]
    rgb = np.einsum("nkc,nk->nc", np.asarray(colors, dtype=np.float64)[vid], b)
    if normals is not None:
        n = np.einsum("nkc,nk->nc", normals[vid], b)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        lam = np.clip(n @ np.asarray(light_dir, dtype=np.float64), 0.0, 1.0)
        rgb = rgb * (ambient + (1.0 - ambient) * lam)[:, None]
    out[idx, :3] = rgb
    out[idx, 3] = 1.0
    return out.reshape(H, W, 4)


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray,
    camera: Camera,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
    shading: bool = True,
) -> np.ndarray:
    """Render one RGBA image [H, W, 4] float32 in [0, 1].

    RGB is composited over ``background``; alpha is the (antialiased) coverage mask, kept so it can
    serve as the object mask. ``supersample`` s renders an s-times finer grid and box-filters it.
    """
    return render_mesh_raster(vertices, faces, colors, camera, background, supersample, shading)[0]


def render_mesh_raster(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray,
    camera: Camera,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
    shading: bool = True,
) -> tuple[np.ndarray, Raster]:
    """``render_mesh`` that also returns its (supersampled) raster, so callers that need the
    depth/face buffers (track visibility) do not rasterize twice."""
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    faces = np.asarray(faces, dtype=np.int64)
    cam = scaled_camera(camera, supersample) if supersample > 1 else camera
    raster = rasterize(vertices, faces, cam)
    normals = vertex_normals(vertices, faces) if shading else None
    pm = shade_raster(raster, faces, colors, normals)
    if supersample > 1:
        pm = box_downsample(pm, supersample)
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    rgb = pm[..., :3] + (1.0 - pm[..., 3:4]) * bg
    return np.concatenate([rgb, pm[..., 3:4]], axis=-1).clip(0.0, 1.0).astype(np.float32), raster


def render_animation(
    vertices_per_frame: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray,
    cameras: Sequence[Camera],
    background: Sequence[float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
    shading: bool = True,
) -> np.ndarray:
    """All views x frames: float32 [V, F, H, W, 4] (cameras must share one image size)."""
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"cameras have different image sizes {sorted(sizes)}; render each size separately")
    return np.stack(
        [
            np.stack([render_mesh(v, faces, colors, cam, background, supersample, shading) for v in vertices_per_frame])
            for cam in cameras
        ]
    )
