"""Per-frame Gaussians as standard 3DGS ``.ply`` files (the INRIA layout splat viewers read).

One binary little-endian PLY per frame, vertex properties in the order of the reference
implementation's ``save_ply``: ``x y z nx ny nz f_dc_0..2 f_rest_0..M opacity scale_0..2
rot_0..3`` (all float32). ``f_dc``/``f_rest`` are the SH coefficients at that frame (our 4D SH
evaluated at ``tau = f / (frames - 1)``, stage2/sh4d.py; the rest coefficients stored channel by
channel, R first), ``opacity`` is the logit, ``scale`` the log scale, ``rot`` the unit quaternion
w x y z. Normals are zero, as the reference writes them. The colour convention is 3DGS's
(``rgb = SH . Y + 0.5``), which ours already is, so viewers show the same colours as our renders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .sh4d import coeffs_at


def ply_header(count: int, rest: int) -> bytes:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    lines += [f"property float {n}" for n in names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def splat_rows(means: np.ndarray, sh: np.ndarray, opacity_logit: np.ndarray, log_scales: np.ndarray, quats: np.ndarray) -> np.ndarray:
    """[N, 17 + 3 (K - 1)] float32 rows in the INRIA property order (module doc); ``sh`` [N, K, 3]."""
    n = len(means)
    rest = np.transpose(sh[:, 1:, :], (0, 2, 1)).reshape(n, -1)  # [N, 3, K-1] channel-major
    q = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    cols = [means, np.zeros((n, 3)), sh[:, 0, :], rest, np.asarray(opacity_logit).reshape(n, 1), log_scales, q]
    return np.concatenate([np.asarray(c, dtype=np.float32).reshape(n, -1) for c in cols], axis=1)


def write_splat_ply(path: str | Path, rows: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.ascontiguousarray(rows, dtype="<f4")
    with open(path, "wb") as fh:
        fh.write(ply_header(len(rows), rows.shape[1] - 17))
        fh.write(rows.tobytes())
    return path


def write_frame_plys(folder: str | Path, arrays: dict[str, np.ndarray]) -> list[Path]:
    """``folder/frame_{f:03d}.ply`` for every frame of a ``gaussians4d.npz`` dict."""
    sh4d = torch.as_tensor(np.asarray(arrays["sh4d"], dtype=np.float32))
    frames = int(arrays["frame_means"].shape[0])
    paths = []
    for f in range(frames):
        tau = f / (frames - 1) if frames > 1 else 0.0
        sh = coeffs_at(sh4d, tau).numpy()
        rows = splat_rows(arrays["frame_means"][f], sh, arrays["opacity_logit"], arrays["frame_log_scales"][f], arrays["frame_quats"][f])
        paths.append(write_splat_ply(Path(folder) / f"frame_{f:03d}.ply", rows))
    return paths


def read_splat_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Properties of a binary little-endian float PLY written by ``write_splat_ply`` (name -> [N])."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if header[1] != "format binary_little_endian 1.0":
        raise ValueError(f"{path}: only binary little-endian PLY is read here")
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    names = [line.split()[2] for line in header if line.startswith("property float")]
    rows = np.frombuffer(data, dtype="<f4", count=count * len(names), offset=end).reshape(count, len(names))
    return {n: rows[:, i] for i, n in enumerate(names)}
