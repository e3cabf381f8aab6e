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
the field at the scale of one triangle would otherwise fold or tear the surface. The system matrix
``L + lambda I`` is the same for every frame and iteration, so it is factorised once.

Coincident vertices (UV or normal seams of a glTF export) are welded first, so both copies of a
seam vertex get one trajectory and the seam cannot open. Frame 0 is the input mesh exactly.
Evaluation runs in vertex chunks and the solver's memory is linear in the vertex count, so a
200k-vertex mesh takes seconds (benchmarks/bench_vertex_animation.py).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

from .deformation import quat_rotate
from .model import Stage2Model

METHODS = ("field", "bind")


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
def bind_targets(model: Stage2Model, points: np.ndarray, k: int = 8) -> np.ndarray:
    """Positions [F, P, 3] of ``points`` carried by their k nearest Gaussians (``method="bind"``)."""
    g0 = model.gaussians.means.detach().cpu().numpy()
    idx, w = _knn_weights(points, g0, k)
    offsets = torch.as_tensor(points[:, None, :] - g0[idx], dtype=torch.float32)  # [P, k, 3]
    wt = torch.as_tensor(w)[..., None]
    ii = torch.as_tensor(idx)
    out = np.empty((model.num_frames, len(points), 3), dtype=np.float32)
    out[0] = points
    anchor = model.anchor()  # D(x, 0) once for all frames
    for f in range(1, model.num_frames):
        state = model.frame(f, anchor)
        mu, dq = state.surface.cpu()[ii], state.dq.cpu()[ii]  # [P, k, 3], [P, k, 4]
        out[f] = ((mu + quat_rotate(dq, offsets)) * wt).sum(1).numpy()
    return out


def closest_rotations(S: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Rotations [N, 3, 3] maximising ``tr(R S)`` for ``S`` [N, 3, 3] (ARAP's ``R_i = V U^T`` for
    ``S_i = U Sigma V^T``: the orthogonal polar factor of ``S^T``).

    Newton's polar iteration with Higham's scaling, ``X <- (g X + X^-T / g) / 2``, on batched 3x3
    inverses: measured ~2.5x faster than a batched SVD on CPU, and a few steps suffice even for the
    rank-2 ``S`` of a flat one-ring. The matrices it cannot handle (singular, not converged, or a
    reflection) fall back to the SVD with the reflection removed.
    """
    X = S.transpose(1, 2) / S.abs().amax((1, 2), keepdim=True).clamp_min(1e-30)
    bad = torch.zeros(len(X), dtype=torch.bool, device=X.device)
    for _ in range(iterations):
        inv, info = torch.linalg.inv_ex(X)
        bad |= info != 0
        inv_t = inv.transpose(1, 2)
        gamma = (inv_t.norm(dim=(1, 2)) / X.norm(dim=(1, 2)).clamp_min(1e-30)).sqrt()[:, None, None]
        X = 0.5 * (gamma * X + inv_t / gamma)
    eye = torch.eye(3, dtype=X.dtype, device=X.device)
    bad |= ((X.transpose(1, 2) @ X - eye).abs().amax((1, 2)) > 1e-3) | (torch.linalg.det(X) < 0) | ~torch.isfinite(X).all(2).all(1)
    if bool(bad.any()):
        U, _, Vh = torch.linalg.svd(S[bad].double())
        V = Vh.transpose(1, 2)
        flip = torch.linalg.det(V @ U.transpose(1, 2)) < 0
        V[flip, :, 2] *= -1
        X[bad] = (V @ U.transpose(1, 2)).to(X.dtype)
    return X


class ArapSolver:
    """ARAP with soft positional targets on a fixed rest mesh (uniform edge weights).

    Energy: ``sum_i sum_{j~i} |(p_i - p_j) - R_i (v_i - v_j)|^2 + lambda sum_i |p_i - t_i|^2``.
    ``weight`` is lambda: large follows the targets, small stays rigid. Every per-vertex sum over
    neighbours is a sparse adjacency product on ``[N, 3]``/``[N, 9]`` arrays (no per-edge
    temporaries), and the linear system ``(2 L + lambda I) p = b`` is solved by Jacobi-
    preconditioned conjugate gradients started at the current positions; with lambda > 0 it is
    well conditioned, so memory and time stay linear in the vertex count. float32 throughout.

    The one-ring covariance ``S_i`` of a flat region has rank 2, and its best rotation is then
    ambiguous up to a mirror about the surface (in float32 about half such vertices came out as
    reflections). Adding the term ``w_i n_i n'_i^T`` (rest and current vertex normals, ``w_i`` the
    one-ring's mean squared edge length) makes the rotation also carry the normal along, which is
    what a surface does, and keeps ``closest_rotations`` on its fast path.
    """

    def __init__(self, rest: np.ndarray, faces: np.ndarray, weight: float, tol: float = 1e-4, max_cg: int = 100) -> None:
        if weight <= 0:
            raise ValueError(f"ARAP target weight must be > 0 (got {weight}); it anchors the solve")
        self.rest = torch.as_tensor(np.asarray(rest), dtype=torch.float32)
        n = len(self.rest)
        self.faces = torch.as_tensor(np.asarray(faces), dtype=torch.long)
        e = torch.as_tensor(mesh_edges(np.asarray(faces)), dtype=torch.long)
        idx = torch.cat([e, e.flip(1)]).t()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": used only for products here
            warnings.simplefilter("ignore", UserWarning)
            self.adj = torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1]), (n, n)).coalesce().to_sparse_csr()
        self.degree = torch.bincount(idx[0], minlength=n).float()
        self.weight, self.tol, self.max_cg = float(weight), float(tol), int(max_cg)
        self.diag = (2.0 * self.degree + self.weight)[:, None]
        self.adj_rest = self.adj @ self.rest
        self.lap_rest = self.degree[:, None] * self.rest - self.adj_rest  # sum_j (v_i - v_j)
        sq = (self.rest[idx[0]] - self.rest[idx[1]]).pow(2).sum(1)
        self.normal_weight = (torch.zeros(n).index_add_(0, idx[0], sq) / self.degree.clamp_min(1))[:, None, None]
        self.rest_normals = self.normals(self.rest)

    def normals(self, p: torch.Tensor) -> torch.Tensor:
        """Area-weighted unit vertex normals [N, 3] of the mesh at positions ``p``."""
        f = self.faces
        fn = torch.linalg.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]], dim=1)
        vn = torch.zeros_like(p).index_add_(0, f.reshape(-1), fn.repeat_interleave(3, 0))
        return vn / vn.norm(dim=1, keepdim=True).clamp_min(1e-30)

    def _apply(self, p: torch.Tensor) -> torch.Tensor:
        return self.diag * p - 2.0 * (self.adj @ p)

    def _cg(self, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r = b - self._apply(x)
        z = r / self.diag
        d = z.clone()
        rz = (r * z).sum(0)
        stop = self.tol * b.norm(dim=0).clamp_min(1e-30)
        for _ in range(self.max_cg):
            if bool((r.norm(dim=0) <= stop).all()):
                break
            Ad = self._apply(d)
            alpha = rz / (d * Ad).sum(0).clamp_min(1e-30)
            x = x + alpha * d
            r = r - alpha * Ad
            z = r / self.diag
            rz_new = (r * z).sum(0)
            d = z + (rz_new / rz.clamp_min(1e-30)) * d
            rz = rz_new
        return x

    @torch.no_grad()
    def solve(self, targets: np.ndarray, iterations: int = 2) -> np.ndarray:
        """Positions [N, 3] near ``targets`` [N, 3]; starts from the targets."""
        t = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
        v, adj, deg = self.rest, self.adj, self.degree[:, None, None]
        n = len(v)
        p = t.clone()
        for _ in range(iterations):
            # S_i = sum_j (v_i - v_j)(p_i - p_j)^T, expanded into adjacency products
            vp = v[:, :, None] * p[:, None, :]
            S = deg * vp + (adj @ vp.reshape(n, 9)).reshape(n, 3, 3)
            S -= v[:, :, None] * (adj @ p)[:, None, :] + self.adj_rest[:, :, None] * p[:, None, :]
            S += self.normal_weight * self.rest_normals[:, :, None] * self.normals(p)[:, None, :]
            R = closest_rotations(S)
            # b_i = sum_j (R_i + R_j)(v_i - v_j) + lambda t_i
            sum_r = (adj @ R.reshape(n, 9)).reshape(n, 3, 3)
            rv = (R @ v[:, :, None])[..., 0]
            rhs = (R @ self.lap_rest[:, :, None])[..., 0] + (sum_r @ v[:, :, None])[..., 0] - adj @ rv
            p = self._cg(rhs + self.weight * t, p)
        return p.numpy()


def vertex_trajectories(
    model: Stage2Model,
    vertices: np.ndarray,
    faces: np.ndarray,
    fps: float,
    method: str = "bind",
    arap_weight: float = 0.3,
    arap_iterations: int = 2,
    k: int = 8,
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
    targets = field_targets(model, pts, k) if method == "field" else bind_targets(model, pts, k)
    timings["targets_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    positions = targets
    if arap_iterations > 0 and model.num_frames > 1:
        solver = ArapSolver(unique, inverse[f], arap_weight)
        positions = np.empty_like(targets)
        positions[0] = pts
        for fr in range(1, model.num_frames):
            positions[fr] = solver.solve(targets[fr], arap_iterations)
    timings["arap_s"] = time.perf_counter() - t1
    out = positions[:, inverse]
    out[0] = v  # frame 0 is the input mesh, bit for bit
    timings["total_s"] = time.perf_counter() - t0
    return VertexAnimation(out.astype(np.float32), float(fps), method, timings)


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
