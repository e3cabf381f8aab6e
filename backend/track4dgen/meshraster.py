"""Z-buffer rasterization of triangle meshes (numpy, CPU): which face each pixel sees, and where.

Why our own: the synthetic ground truth (videos, tracks) and Stage Two's mesh silhouettes must
come from the same OpenCV cameras as everything else (``track4dgen.cameras``), be bit-for-bit
reproducible and need no GPU and no Blender. Vectorised over (triangle, pixel-in-its-bounding-box)
pairs: every pair gets screen-space barycentrics, the inside pairs keep a perspective-correct
depth, and the nearest pair per pixel wins.

Pixel convention: pixel (0, 0) is the top-left corner of the top-left pixel; pixel (i, j) has its
centre at (i + 0.5, j + 0.5), the same as ``Camera.project``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cameras import Camera

NEAR = 0.01
MAX_PAIRS = 4_000_000  # bounds memory: faces are processed in chunks of at most this many pairs


@dataclass
class Raster:
    """Per-pixel result of rasterizing a mesh: the visible face and where on it."""

    depth: np.ndarray  # [H, W] camera z of the visible surface, inf on background
    face_id: np.ndarray  # [H, W] int64 index of the visible face, -1 on background
    bary: np.ndarray  # [H, W, 3] perspective-correct barycentrics of the pixel centre on that face
    width: int
    height: int

    @property
    def mask(self) -> np.ndarray:
        return self.face_id >= 0


def scaled_camera(camera: Camera, factor: int) -> Camera:
    """The same camera on a grid ``factor`` times finer (pixel coords scale exactly with the corner convention)."""
    K = camera.K.copy()
    K[:2] *= factor
    return Camera(K=K, w2c=camera.w2c, width=camera.width * factor, height=camera.height * factor)


def resized_camera(K: np.ndarray, w2c: np.ndarray, image_size: tuple[int, int], longer_side: int) -> Camera:
    """The camera of images of ``image_size`` = (width, height) on a grid of ``longer_side`` px on its
    longer side (same aspect, rounded): what a finer depth buffer for those images is drawn with."""
    width, height = image_size
    scale = longer_side / max(width, height)
    rw, rh = max(1, round(width * scale)), max(1, round(height * scale))
    Kr = np.array(K, dtype=np.float64, copy=True)
    Kr[0] *= rw / width
    Kr[1] *= rh / height
    return Camera(K=Kr, w2c=np.asarray(w2c, dtype=np.float64), width=rw, height=rh)


def rasterize(vertices: np.ndarray, faces: np.ndarray, camera: Camera, cull_backfaces: bool = True) -> Raster:
    """Z-buffer rasterization of a triangle mesh at the camera's resolution.

    ``cull_backfaces`` skips faces that turn away from the camera; it changes nothing for closed,
    outward-wound meshes (their back faces are always hidden) and halves the work.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    W, H = int(camera.width), int(camera.height)
    uv, z = camera.project(vertices)
    tri_uv = uv[faces]  # [T, 3, 2]
    tri_z = z[faces]  # [T, 3]
    e1 = tri_uv[:, 1] - tri_uv[:, 0]
    e2 = tri_uv[:, 2] - tri_uv[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # twice the signed screen area
    keep = (tri_z > NEAR).all(1) & (np.abs(area) > 1e-12)
    if cull_backfaces:
        # Faces wound counter-clockwise seen from outside keep that orientation on screen when
        # they face the camera; in the y-down pixel frame that is a negative signed area.
        keep &= area < 0
    fidx = np.nonzero(keep)[0]

    depth = np.full(H * W, np.inf)
    face_id = np.full(H * W, -1, dtype=np.int64)
    bary = np.zeros((H * W, 3))
    if len(fidx) == 0:
        return Raster(depth.reshape(H, W), face_id.reshape(H, W), bary.reshape(H, W, 3), W, H)

    lo = np.floor(tri_uv[fidx].min(1) - 0.5).astype(np.int64) + 1  # first pixel whose centre can be inside
    hi = np.floor(tri_uv[fidx].max(1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi[:, 0] = np.minimum(hi[:, 0], W - 1)
    hi[:, 1] = np.minimum(hi[:, 1], H - 1)
    nx = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    ny = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    counts = nx * ny
    has = counts > 0
    fidx, lo, nx, counts = fidx[has], lo[has], nx[has], counts[has]

    # process faces in chunks so the pair arrays stay bounded at high resolution
    csum = np.cumsum(counts)
    start = 0
    while start < len(fidx):
        base = csum[start - 1] if start > 0 else 0
        stop = max(int(np.searchsorted(csum, base + MAX_PAIRS, side="right")), start + 1)
        _raster_chunk(fidx[start:stop], lo[start:stop], nx[start:stop], counts[start:stop], tri_uv, tri_z, area, W, depth, face_id, bary)
        start = stop
    return Raster(depth.reshape(H, W), face_id.reshape(H, W), bary.reshape(H, W, 3), W, H)


def _raster_chunk(fidx, lo, nx, counts, tri_uv, tri_z, area, W, depth, face_id, bary) -> None:
    total = int(counts.sum())
    pair_face = np.repeat(np.arange(len(fidx)), counts)
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    px = lo[pair_face, 0] + offs % nx[pair_face]
    py = lo[pair_face, 1] + offs // nx[pair_face]
    f = fidx[pair_face]
    cx, cy = px + 0.5, py + 0.5
    t = tri_uv[f]  # [P, 3, 2]
    # edge functions: weight of vertex i = signed area of the sub-triangle opposite to it
    w0 = (t[:, 1, 0] - cx) * (t[:, 2, 1] - cy) - (t[:, 1, 1] - cy) * (t[:, 2, 0] - cx)
    w1 = (t[:, 2, 0] - cx) * (t[:, 0, 1] - cy) - (t[:, 2, 1] - cy) * (t[:, 0, 0] - cx)
    w2 = (t[:, 0, 0] - cx) * (t[:, 1, 1] - cy) - (t[:, 0, 1] - cy) * (t[:, 1, 0] - cx)
    b = np.stack([w0, w1, w2], axis=1) / area[f][:, None]
    inside = (b >= 0).all(1)
    b, f, pix = b[inside], f[inside], (py * W + px)[inside]
    inv_z = (b / tri_z[f]).sum(1)
    z = 1.0 / inv_z
    bp = b / tri_z[f] * z[:, None]  # perspective-correct barycentrics
    np.minimum.at(depth, pix, z)  # z-test: nearest depth per pixel (earlier chunks included)
    win = np.nonzero(z == depth[pix])[0]  # exact ties (shared edges): the last pair written wins
    p = pix[win]
    face_id[p] = f[win]
    bary[p] = bp[win]


def box_downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks of an [H*factor, W*factor, C] image (strided slices:
    much faster than a mean over a reshaped, non-contiguous view)."""
    acc = np.zeros_like(img[::factor, ::factor])
    for dy in range(factor):
        for dx in range(factor):
            acc += img[dy::factor, dx::factor]
    return acc / (factor * factor)
