"""Per-vertex trajectories of the job's own mesh from the fitted 4D field (issue 14).

After Stage Two every input-mesh vertex gets a position per frame, in the job mesh's coordinate
frame, so the artist's mesh itself can be animated (Blender shape keys, glTF morph targets).

Two ways to get the motion of a vertex (``method``), both measured on the synthetic set
(benchmarks/RESULTS.md, DESIGN.md "Decisions"):

* ``"field"`` — evaluate the deformation field at the vertex itself, exactly as a Gaussian at that
  point would be deformed: ``x_t = x + D(x, t) - D(x, 0)``. The per-Gaussian input the field needs
  besides position (diffusion features) is interpolated from the k nearest canonical Gaussians
  (inverse-distance weights): Gaussians are sampled on the same surface, so those neighbours are
  where the vertex is.
* ``"bind"`` — carry the vertex with its k nearest Gaussians, each moving it rigidly by its own
  translation and rotation (linear blend, as embedded deformation does).

Then a short as-rigid-as-possible solve on the mesh's own edges pulls the vertices toward those
targets while keeping each one-ring close to a rotation of its rest shape (Sorkine & Alexa 2007,
uniform edge weights, which unlike cotangent weights stay positive on bad triangles): noise in
the field at the scale of one triangle would otherwise fold or tear the surface (``ArapSolver``
says how it stays fast). Its first rotations come from the Gaussians, not from the one-rings
(``RotationField``): how the ~2 % of the Gaussians around a vertex turned, fitted by Kabsch. A
one-ring's rotation is read off targets whose noise is as large as the ring itself, and on a part
thinner than that noise (a propeller blade 0.06 thick) the rings turn inside out; the wider
neighbourhood spans the part's whole thickness and turns with it.

Coincident vertices (UV or normal seams of a glTF export) are welded first, so both copies of a
seam vertex get one trajectory and the seam cannot open. Frame 0 is the input mesh exactly.
Evaluation runs in vertex chunks and the solver works on batches of frames of at most
``ARAP_VERTEX_FRAMES`` vertices x frames, so memory is linear in the vertex count: a 200k-vertex mesh
x 16 frames takes ~11 s on one CPU core, 0.68 GB peak (benchmarks/bench_vertex_animation.py --big-only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

from ..eval.gt import vertex_areas
from .config import Stage2Config
from .deformation import quat_rotate
from .model import Stage2Model

METHODS = ("field", "bind")
ARAP_VERTEX_FRAMES = 1 << 16  # vertices x frames per ARAP batch: cache-sized, measured fastest (bigger meshes go frame by frame)


@dataclass
class VertexAnimation:
    """Trajectories of the input mesh's vertices: ``positions[f]`` is frame f, ``positions[0]`` the input."""

    positions: np.ndarray  # [F, V, 3] float32
    fps: float
    method: str
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def vertex_count(self) -> int:
        return int(self.positions.shape[1])


def weld(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique positions [U, 3] and the index [V] of each input vertex among them (exact equality:
    an exporter's seam copies are bit-identical)."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    order = np.lexsort(v.T[::-1])
    s = v[order]
    new = np.ones(len(s), dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(1)
    group = np.cumsum(new) - 1
    inverse = np.empty(len(v), dtype=np.int64)
    inverse[order] = group
    return s[new], inverse


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges [E, 2] (i < j) of a triangle list, self-loops dropped."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.sort(e, axis=1)
    e = e[e[:, 0] != e[:, 1]]
    n = int(e.max()) + 1 if len(e) else 1
    key = np.unique(e[:, 0] * n + e[:, 1])
    return np.stack([key // n, key % n], 1)


def _knn_weights(points: np.ndarray, centres: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices [P, k] of the k nearest centres and normalised inverse-distance weights [P, k]."""
    k = min(k, len(centres))
    dist, idx = cKDTree(centres).query(points, k=k)
    dist, idx = dist.reshape(len(points), k), idx.reshape(len(points), k)
    w = 1.0 / np.maximum(dist, 1e-9)
    return idx, (w / w.sum(1, keepdims=True)).astype(np.float32)


class RotationField:
    """Per-frame rotations of any points from how the Gaussians around them turned.

    ``samples`` Gaussians (all when fewer; a seeded random subset otherwise, so each neighbourhood
    spans the same share of the object, ~``k / samples``, whatever the Gaussian count) each get,
    per frame, the Kabsch rotation of their ``k`` nearest samples' canonical -> frame-t centres. A
    point's rotation is the inverse-distance blend of its ``blend_k`` nearest samples' rotations,
    projected back onto rotations. Why the Gaussians' centres and not their orientation quaternions:
    a near-round or flat splat's own rotation barely changes its image, so the fit leaves it loose
    (a blade tip's Gaussians turned 15-30 degrees of the true 180).

    ``centres`` [F, G, 3]: the Gaussians' tracked surface points per frame, frame 0 the canonical
    ones (``gaussian_motion``)."""

    def __init__(self, centres: np.ndarray, points: np.ndarray, samples: int = 3000, k: int = 64, blend_k: int = 8,
                 seed: int = 0) -> None:
        n = centres.shape[1]
        self.ids = np.arange(n) if n <= samples else np.sort(np.random.default_rng(seed).choice(n, samples, replace=False))
        self.centres = np.asarray(centres, dtype=np.float64)[:, self.ids]
        rest = self.centres[0]
        k = min(k, len(rest))
        self.neighbours = cKDTree(rest).query(rest, k=k)[1].reshape(len(rest), k)
        self.rest = rest[self.neighbours] - rest[self.neighbours].mean(1, keepdims=True)  # [M, k, 3]
        self.idx, self.w = _knn_weights(np.asarray(points, dtype=np.float32), rest.astype(np.float32), blend_k)

    def at(self, frame: int) -> np.ndarray:
        """[P, 3, 3] float32 rotations of the points at ``frame`` (rest -> frame)."""
        moved = self.centres[frame][self.neighbours]
        cov = np.einsum("mka,mkb->mab", self.rest, moved - moved.mean(1, keepdims=True))
        rot = closest_rotations(cov.astype(np.float32))  # maps rest offsets onto the frame's
        blend = np.einsum("pk,pkab->pab", self.w, rot[self.idx])
        return closest_rotations(np.ascontiguousarray(np.swapaxes(blend, 1, 2)))  # the rotation nearest the blend


@torch.no_grad()
def gaussian_motion(model: Stage2Model) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussians' tracked surface points [F, G, 3] and rotation deltas [F, G, 4] (wxyz) per frame,
    on the CPU; frame 0 the canonical ones. Evaluated once and read by ``bind_targets`` and
    ``RotationField`` alike."""
    anchor = model.anchor()  # D(x, 0) once for all frames
    means = model.gaussians.means.detach().cpu()
    surfaces, dqs = [means], [torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(means), 4)]
    for f in range(1, model.num_frames):
        state = model.frame(f, anchor)
        surfaces.append(state.surface.cpu())
        dqs.append(state.dq.cpu())
    return torch.stack(surfaces), torch.stack(dqs)


@torch.no_grad()
def field_targets(model: Stage2Model, points: np.ndarray, k: int = 8, chunk: int = 65536) -> np.ndarray:
    """Positions [F, P, 3] of ``points`` moved by the field (``method="field"``, module doc)."""
    device = model.gaussians.means.device
    means = model.gaussians.means.detach().cpu().numpy()
    idx, w = _knn_weights(points, means, k)
    out = np.empty((model.num_frames, len(points), 3), dtype=np.float32)
    out[0] = points
    for s in range(0, len(points), chunk):
        sl = slice(s, s + chunk)
        x = torch.as_tensor(points[sl], dtype=torch.float32, device=device)
        wi = torch.as_tensor(w[sl], device=device)
        ii = torch.as_tensor(idx[sl], device=device)

        def extra(frame: int) -> torch.Tensor | None:
            if model.feature_cache is None or model.feature_proj is None:
                return None
            feats = (model.feature_cache[frame][ii] * wi[..., None]).sum(1)
            return model.feature_proj(feats)

        dx0 = model.deformation(x, 0.0, extra(0))[0] if model.anchor_first_frame else 0.0
        for f in range(1, model.num_frames):
            dx = model.deformation(x, model.tau(f), extra(f))[0] - dx0
            out[f, sl] = (x + dx).cpu().numpy()
    return out


@torch.no_grad()
def bind_targets(model: Stage2Model, points: np.ndarray, k: int = 8,
                 motion: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """Positions [F, P, 3] of ``points`` carried by their k nearest Gaussians (``method="bind"``).

    Each neighbour g moves the point rigidly, ``mu_g + R_g (x - g_0)``; the blend
    ``sum_g w_g (mu_g + R_g (x - g_0)) = (sum_g w_g R_g) x + sum_g w_g (mu_g - R_g g_0)`` is linear
    in the per-Gaussian ``[R_g | mu_g - R_g g_0]``, so one sparse weight matrix [P, G] blends them for
    every point at once (linear blend skinning) instead of rotating P x k offsets per frame.
    Positions are taken about the Gaussians' centroid, so float32 keeps the object's own precision
    wherever it sits. ``motion``: ``gaussian_motion(model)`` when the caller has it already.
    """
    surfaces, dqs = gaussian_motion(model) if motion is None else motion
    g0 = model.gaussians.means.detach().cpu()
    idx, w = _knn_weights(points, g0.numpy(), k)
    centre = g0.mean(0)
    g0, local = g0 - centre, points - centre.numpy()
    blend = sp.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, idx.size + 1, idx.shape[1])), shape=(len(points), len(g0)))
    out = np.empty((model.num_frames, len(points), 3), dtype=np.float32)
    out[0] = points
    basis = torch.eye(3).expand(len(g0), 3, 3)
    for f in range(1, model.num_frames):
        rot = quat_rotate(dqs[f][:, None, :], basis).transpose(1, 2)  # [G, 3, 3]: column c is R e_c
        shift = surfaces[f] - centre - (rot @ g0[:, :, None])[..., 0]
        per_point = blend @ torch.cat([rot.reshape(-1, 9), shift], 1).numpy()  # [P, 12]
        out[f] = np.einsum("pab,pb->pa", per_point[:, :9].reshape(-1, 3, 3), local) + per_point[:, 9:] + centre.numpy()
    return out


def singular_value_bounds(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(smallest, largest) singular values of ``L`` [M, 3, 3], from the closed-form eigenvalues of the
    symmetric ``L^T L`` (the trigonometric solution of its characteristic cubic), float64."""
    A = np.einsum("mji,mjk->mik", L.astype(np.float64), L.astype(np.float64))
    q = np.trace(A, axis1=1, axis2=2) / 3.0
    off = A[:, 0, 1] ** 2 + A[:, 0, 2] ** 2 + A[:, 1, 2] ** 2
    p = np.sqrt(((A[:, 0, 0] - q) ** 2 + (A[:, 1, 1] - q) ** 2 + (A[:, 2, 2] - q) ** 2 + 2.0 * off) / 6.0)
    B = (A - q[:, None, None] * np.eye(3)) / np.maximum(p, 1e-30)[:, None, None]
    phi = np.arccos(np.clip(np.linalg.det(B) / 2.0, -1.0, 1.0)) / 3.0
    big = q + 2.0 * p * np.cos(phi)
    small = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return np.sqrt(np.maximum(small, 0.0)), np.sqrt(np.maximum(big, 0.0))


def _rolled(da: int, db: int) -> list[int]:
    """Flat indices of ``X[(a + da) % 3, (b + db) % 3]`` for a, b in 0..2 (cofactor terms)."""
    return [((a + da) % 3) * 3 + (b + db) % 3 for a in range(3) for b in range(3)]


_COFACTOR = (_rolled(1, 1), _rolled(2, 2), _rolled(1, 2), _rolled(2, 1))


def closest_rotations(S: np.ndarray, tol: float = 1e-4, max_steps: int = 8, chunk: int = 8192) -> np.ndarray:
    """Rotations [..., 3, 3] maximising ``tr(R S)`` for ``S`` [..., 3, 3] (ARAP's ``R_i = V U^T`` for
    ``S_i = U Sigma V^T``: the orthogonal polar factor of ``S^T``).

    Newton's polar iteration with Higham's scaling, ``X <- (g X + X^-T / g) / 2``, where ``X^-T`` is
    the cofactor matrix over the determinant. The nine entries are nine rows of a [9, chunk] array
    and a chunk fits in cache, so a step is ~15 vector operations: ~0.03 us per matrix and step, 5x
    faster than batched 3x3 inverses and 10x faster than batched SVDs. A chunk stops once no matrix
    in it changed by more than ``tol`` (convergence is quadratic, so the error left is ~tol^2, below
    float32's resolution; 4-6 steps). Matrices it cannot handle (det(S) <= 0: singular or a
    reflection; not converged) fall back to the SVD with the reflection removed.
    """
    p1, p2, q1, q2 = _COFACTOR
    flat = np.asarray(S, dtype=np.float32).reshape(-1, 3, 3)
    out = np.empty_like(flat)
    for s in range(0, len(flat), chunk):
        Sc = flat[s : s + chunk]
        X = Sc.transpose(2, 1, 0).reshape(9, -1)  # X = S^T, row-major entries over the chunk (a copy)
        X /= np.maximum(np.abs(X).max(0), 1e-30)
        for step in range(max_steps):
            cof = X[p1] * X[p2]
            cof -= X[q1] * X[q2]
            det = np.einsum("ij,ij->j", X[:3], cof[:3])
            if step == 0:  # singular or a reflection: the SVD below handles them, identity until then
                bad = ~(det > 0)
                X[:, bad] = cof[:, bad] = np.eye(3, dtype=X.dtype).reshape(9, 1)
                det[bad] = 1.0
            gamma = np.sqrt(np.sqrt(np.einsum("ij,ij->j", cof, cof) / np.einsum("ij,ij->j", X, X)) / np.abs(det))
            new = X * (0.5 * gamma)
            new += cof * (0.5 / (gamma * det))
            change = np.abs(new - X).max(0)
            X = new
            if change.max() < tol:
                break
        bad |= ~(change < 1e-3)
        R = X.reshape(3, 3, -1).transpose(2, 0, 1)
        if bad.any():
            U, _, Vh = np.linalg.svd(Sc[bad].astype(np.float64))
            V = Vh.transpose(0, 2, 1)
            V[np.linalg.det(V @ U.transpose(0, 2, 1)) < 0, :, 2] *= -1
            R[bad] = V @ U.transpose(0, 2, 1)
        out[s : s + chunk] = R
    return out.reshape(np.shape(S))


class ArapSolver:
    """ARAP with soft positional targets on a fixed rest mesh (uniform edge weights).

    Energy: ``sum_i sum_{j~i} |(p_i - p_j) - R_i (v_i - v_j)|^2 + sum_i lambda_i |p_i - t_i|^2``.
    ``weight`` is lambda: large follows the targets, small stays rigid. ``lambda_i = lambda A_i / mean(A)``
    with ``A_i`` the vertex's lumped area (``area_weighted``): the edge term is a sum over the surface
    whatever its tessellation, so the target term must be one too; with one weight per vertex, densely
    tessellated places (a UV sphere's poles, an ellipsoid blade's tip, a character's face) follow the
    field's noise more closely than the rest and fold (measured: 2.4 % of a UV sphere's pole faces vs 0.2 %). Frames are solved together
    and every per-vertex sum over neighbours is one sparse product over all of them (no per-edge
    temporaries): the local step works on ``[N, C, 3]`` positions (adjacency products with 3C or 9C
    columns), the global step ``(2 L + Lambda) p = b`` on rows ``[3C, N]``, one per frame and
    coordinate, by Jacobi-preconditioned conjugate gradients started at the current positions. With
    lambda > 0 that system is well conditioned whatever the mesh size (5-15 iterations to 1e-4), so
    time and memory stay linear in the vertex count. A sparse LU factorised once (SuperLU, minimum
    degree ordering) was measured at 200k vertices: 1.6 s to factorise, L and U hold 17x the
    matrix's entries (290 MB, growing faster than linearly), and each right-hand side then takes
    16-22 ms against CG's ~10 ms (benchmarks/RESULTS.md). float32.

    The one-ring covariance ``S_i`` of a flat region has rank 2, and its best rotation is then
    ambiguous up to a mirror about the surface (in float32 about half such vertices came out as
    reflections). Adding the term ``w_i n_i n'_i^T`` (rest and current vertex normals, ``w_i`` the
    one-ring's mean squared edge length) makes the rotation also carry the normal along, which is
    what a surface does, and keeps ``closest_rotations`` on its fast path.
    """

    def __init__(self, rest: np.ndarray, faces: np.ndarray, weight: float, tol: float = 1e-4, max_cg: int = 100,
                 area_weighted: bool = True, max_stretch: float = 0.0) -> None:
        if weight <= 0:
            raise ValueError(f"ARAP target weight must be > 0 (got {weight}); it anchors the solve")
        v = np.asarray(rest, dtype=np.float32)
        n = len(v)
        self.rest, self.faces = v, np.asarray(faces, dtype=np.int64)
        e = mesh_edges(self.faces)
        ones = np.ones(2 * len(e), dtype=np.float32)
        self.adj = sp.csr_matrix((ones, (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
        degree = np.diff(self.adj.indptr).astype(np.float32)
        lam = np.full(n, float(weight), dtype=np.float32)
        if area_weighted:
            area = vertex_areas(v, self.faces)
            if area.sum() > 0:
                lam *= (area / area[degree > 0].mean()).astype(np.float32)
            lam = np.maximum(lam, 1e-3 * float(weight))  # a loose vertex (no area) still has a target
        diag = 2.0 * degree + lam
        self.system = (sp.diags(diag) - 2.0 * self.adj).tocsr().astype(np.float32)  # 2 L + Lambda
        self.inv_diag = 1.0 / diag
        self.weight, self.tol, self.max_cg = lam[:, None, None], float(tol), int(max_cg)
        self.lap_rest = degree[:, None] * v - self.adj @ v  # sum_j (v_i - v_j)
        fc, nf = self.faces, len(self.faces)
        rows, unit = np.r_[np.arange(nf), np.arange(nf)], np.r_[np.ones(nf), -np.ones(nf)].astype(np.float32)
        # face edges p_1 - p_0 and p_2 - p_0, and the sum over each vertex's faces, as sparse products
        self.face_edges = [sp.csr_matrix((unit, (rows, np.r_[fc[:, k], fc[:, 0]])), shape=(nf, n)) for k in (1, 2)]
        self.vertex_faces = sp.csr_matrix((np.ones(3 * nf, np.float32), (fc.ravel(), np.repeat(np.arange(nf), 3))), shape=(n, nf))
        sq = ((v[e[:, 0]] - v[e[:, 1]]) ** 2).sum(1)
        mean_sq = (np.bincount(e[:, 0], sq, n) + np.bincount(e[:, 1], sq, n)) / np.maximum(degree, 1)
        unit_rest = self.normals(v[:, None, :])[:, 0]
        normal_rest = mean_sq.astype(np.float32)[:, None] * unit_rest  # w_i n_i
        self.ring_rest = np.stack([self.lap_rest, -v, normal_rest], 2)  # [N, 3, 3], columns as named in rotations()
        if max_stretch < 0:
            raise ValueError(f"max_stretch must be >= 0 (got {max_stretch}); 0 is classic ARAP")
        self.max_stretch = float(max_stretch)
        self.rest_cov_inv = self._rest_cov_inv(degree, mean_sq, unit_rest) if max_stretch > 0 else None

    def _rest_cov_inv(self, degree: np.ndarray, mean_sq: np.ndarray, unit_rest: np.ndarray) -> np.ndarray:
        """Inverse of each one-ring's rest covariance ``sum_j (v_i - v_j)(v_i - v_j)^T + w_i n_i n_i^T``
        [N, 3, 3] (the least-squares linear map's denominator; the normal term keeps it invertible on
        flat rings). Pseudo-inverse: a loose vertex's zero matrix stays zero."""
        v = self.rest.astype(np.float64)
        n, sv = len(v), self.adj @ v
        C = (self.adj @ (v[:, :, None] * v[:, None, :]).reshape(n, 9)).reshape(n, 3, 3)
        C += degree[:, None, None] * v[:, :, None] * v[:, None, :] - v[:, :, None] * sv[:, None, :] - sv[:, :, None] * v[:, None, :]
        C += mean_sq[:, None, None] * unit_rest[:, :, None] * unit_rest[:, None, :]
        return np.linalg.pinv(C).astype(np.float32)

    def normals(self, p: np.ndarray) -> np.ndarray:
        """Area-weighted unit vertex normals [N, C, 3] of the mesh at positions ``p`` [N, C, 3]."""
        n, c = p.shape[:2]
        a, b = ((d @ p.reshape(n, -1)).reshape(-1, c, 3) for d in self.face_edges)
        fn = np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                       a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], -1)
        vn = (self.vertex_faces @ fn.reshape(len(fn), -1)).reshape(p.shape)
        return vn / np.sqrt(np.maximum(np.einsum("nci,nci->nc", vn, vn), 1e-30))[..., None]

    def rotations(self, p: np.ndarray) -> np.ndarray:
        """Local step: each one-ring's best rotation [N, C, 3, 3] at positions ``p`` [N, C, 3] (with
        ``max_stretch`` > 0 its best linear map of bounded stretch, ``_bounded_maps``)."""
        n, c = p.shape[:2]
        # S_i = sum_j (v_i - v_j)(p_i - p_j)^T + w_i n_i n'_i^T
        #     = sum_j v_j p_j^T + [lap_rest_i, -v_i, w_i n_i] @ [p_i, sum_j p_j, n'_i]^T,
        # built as [N, 3, C x 3] (all frames in one product per vertex), then [N, C, 3, 3]
        flat = p.reshape(n, 1, -1)
        S = (self.adj @ (self.rest[:, :, None] * flat).reshape(n, -1)).reshape(n, 3, -1)
        S += self.ring_rest @ np.concatenate([flat, (self.adj @ p.reshape(n, -1))[:, None], self.normals(p).reshape(n, 1, -1)], 1)
        S = S.reshape(n, 3, c, 3).transpose(0, 2, 1, 3)
        if self.rest_cov_inv is None:
            return closest_rotations(S)
        return self._bounded_maps(S)

    def _bounded_maps(self, S: np.ndarray) -> np.ndarray:
        """Local step with ``max_stretch`` = s > 0: each one-ring's least-squares linear map
        ``L_i = S_i^T C_i^-1`` with its singular values clamped to [1 / (1 + s), 1 + s] and a
        reflection turned back into a rotation (the smallest singular value's sign flipped before
        the clamp): a ring may squash or stretch by up to s (the squash and stretch of a cartoon
        body, which a rotation-only ring fights), never fold inside out or collapse."""
        L = np.swapaxes(S, -1, -2) @ self.rest_cov_inv[:, None]
        lo, hi = 1.0 / (1.0 + self.max_stretch), 1.0 + self.max_stretch
        # most rings are within the band and keep L as it is: only the others need an SVD (a batched
        # 3x3 SVD is ~2 us per matrix, the closed-form bounds below ~20 vector operations for all)
        flat = L.reshape(-1, 3, 3)
        smallest, largest = singular_value_bounds(flat)
        out = np.flatnonzero((np.linalg.det(flat) <= 0) | (smallest < lo) | (largest > hi))
        if len(out):
            U, sig, Vh = np.linalg.svd(flat[out].astype(np.float64))
            sig[:, 2] *= np.sign(np.linalg.det(U @ Vh))
            flat[out] = ((U * np.clip(sig, lo, hi)[:, None, :]) @ Vh).astype(np.float32)
        return flat.reshape(L.shape)

    def rhs(self, R: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``b_i = sum_j (R_i + R_j)(v_i - v_j) + lambda t_i`` [N, C, 3] for rotations ``R`` [N, C, 3, 3]."""
        n, c = targets.shape[:2]
        sum_r = (self.adj @ R.reshape(n, -1)).reshape(n, c, 3, 3)
        rv = np.einsum("ncab,nb->nca", R, self.rest)
        b = np.einsum("ncab,nb->nca", R, self.lap_rest) + np.einsum("ncab,nb->nca", sum_r, self.rest)
        b -= (self.adj @ rv.reshape(n, -1)).reshape(n, c, 3)
        b += self.weight * targets
        return b

    def global_step(self, b: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Solve ``(2 L + Lambda) x = b`` (Lambda = diag(lambda_i)) for ``b`` [K, N] (K independent right-hand sides) by
        Jacobi-preconditioned CG from ``x``, each to a residual of ``tol`` times its ``|b|``.
        One row per right-hand side: every vector operation runs over contiguous vertices."""

        def product(y: np.ndarray) -> np.ndarray:
            return np.stack([self.system @ row for row in y])

        def dot(y: np.ndarray, z: np.ndarray) -> np.ndarray:
            return np.einsum("kn,kn->k", y, z)[:, None]

        x = x.copy()
        r = b - product(x)
        z = r * self.inv_diag
        d = z.copy()
        rz = dot(r, z)
        stop = (self.tol**2) * dot(b, b)
        for _ in range(self.max_cg):
            if (dot(r, r) <= stop).all():
                break
            Ad = product(d)
            alpha = rz / np.maximum(dot(d, Ad), 1e-30)
            x += alpha * d
            r -= alpha * Ad
            np.multiply(r, self.inv_diag, out=z)
            rz_new = dot(r, z)
            d *= rz_new / np.maximum(rz, 1e-30)
            d += z
            rz = rz_new
        return x

    def solve(self, targets: np.ndarray, iterations: int = 2, first_rotations: np.ndarray | None = None) -> np.ndarray:
        """Positions near ``targets`` ([N, 3], or [C, N, 3] for C frames solved together), same shape;
        starts from the targets. ``first_rotations`` (same leading shape, then 3 x 3): one global step
        with these rotations before the ``iterations`` local/global ones (``RotationField``)."""
        t = np.asarray(targets, dtype=np.float32)
        frames = t.reshape(-1, *t.shape[-2:])  # [C, N, 3]
        c, n = frames.shape[:2]
        goal = p = np.ascontiguousarray(frames.transpose(1, 0, 2))  # [N, C, 3]; the global step works on rows [3C, N]
        steps = [] if first_rotations is None else [
            np.ascontiguousarray(np.asarray(first_rotations, dtype=np.float32).reshape(c, n, 3, 3).transpose(1, 0, 2, 3))]
        for rot in steps + [None] * iterations:
            b = self.rhs(self.rotations(p) if rot is None else rot, goal)
            x = self.global_step(b.reshape(n, -1).T.copy(), p.reshape(n, -1).T.copy())
            p = np.ascontiguousarray(x.T).reshape(n, c, 3)
        return p.transpose(1, 0, 2).reshape(t.shape)


def vertex_trajectories(
    model: Stage2Model,
    vertices: np.ndarray,
    faces: np.ndarray,
    fps: float,
    method: str = "bind",
    arap_weight: float = Stage2Config.vertex_arap_weight,
    arap_iterations: int = Stage2Config.vertex_arap_iters,
    k: int = 8,
    max_stretch: float = Stage2Config.vertex_arap_max_stretch,
) -> VertexAnimation:
    """Every input vertex's position at every frame (module doc). ``arap_iterations=0`` skips ARAP."""
    if method not in METHODS:
        raise ValueError(f"vertex motion method {method!r} is unknown; use one of {METHODS}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3] and faces [T, 3], got {v.shape} and {f.shape}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    unique, inverse = weld(v)
    pts = unique.astype(np.float32)
    motion = gaussian_motion(model)
    targets = field_targets(model, pts, k) if method == "field" else bind_targets(model, pts, k, motion)
    timings["targets_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    positions = targets
    if arap_iterations > 0 and model.num_frames > 1:
        solver = ArapSolver(unique, inverse[f], arap_weight, max_stretch=max_stretch)
        turns = RotationField(motion[0].numpy(), pts)
        step = max(1, ARAP_VERTEX_FRAMES // len(pts))  # frames solved together (small meshes only)
        for fr in range(1, model.num_frames, step):  # in place: each batch's targets are read before written
            batch = range(fr, min(fr + step, model.num_frames))
            first = np.stack([turns.at(b) for b in batch])
            positions[fr : fr + step] = solver.solve(targets[fr : fr + step], arap_iterations, first)
    timings["arap_s"] = time.perf_counter() - t1
    out = positions[:, inverse]
    out[0] = v  # frame 0 is the input mesh, bit for bit
    timings["total_s"] = time.perf_counter() - t0
    return VertexAnimation(out.astype(np.float32, copy=False), float(fps), method, timings)


def write_mesh_animation_npz(path: str | Path, anim: VertexAnimation, faces: np.ndarray) -> Path:
    """``mesh_animation.npz``: ``positions`` [F, V, 3] float32 (job mesh frame, Z up), ``faces``,
    ``fps``, ``frames``, ``vertex_count`` (readers check it against their mesh), ``method``,
    ``time_s`` (seconds the trajectories took)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(
            fh,
            positions=anim.positions.astype(np.float32),
            faces=np.asarray(faces, dtype=np.int64),
            fps=np.array(anim.fps, dtype=np.float32),
            frames=np.array(anim.frames, dtype=np.int32),
            vertex_count=np.array(anim.vertex_count, dtype=np.int64),
            method=np.array(anim.method),
            time_s=np.array(anim.timings_s.get("total_s", 0.0), dtype=np.float32),
        )
    return path


def load_mesh_animation(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check ``mesh_animation.npz``; errors name the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / "mesh_animation.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; results written before issue 14 have no mesh animation")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    pos = data.get("positions")
    if pos is None or pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"{path.name}: positions must be [F, V, 3], got {None if pos is None else pos.shape}")
    if int(data["vertex_count"]) != pos.shape[1]:
        raise ValueError(f"{path.name}: vertex_count {int(data['vertex_count'])} != positions' {pos.shape[1]} vertices")
    return data
