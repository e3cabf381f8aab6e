"""scripts/bake_sketchfab28.py headless on two procedural meshes (and one broken file).

Runs the script as a user would (a subprocess with the bpy module), at tiny sample counts and
resolution, then checks the physics (the key-lit side is brighter), the conversion (Gaussians
render like Blender's render of the baked mesh) and the batch behaviour (errors do not stop it,
a second run skips finished assets).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bake_sketchfab28.py"


def _write_obj(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    """OBJ is Y-up: write (x, z, -y) so Blender's importer brings it back to Z-up."""
    lines = [f"v {x:.6f} {z:.6f} {-y:.6f}" for x, y, z in v] + ["s 1"] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    path.write_text("\n".join(lines) + "\n")


def uv_sphere(n_lat: int = 12, n_lon: int = 18, r: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    verts = [[0, 0, r], [0, 0, -r]]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        verts += [[r * np.sin(th) * np.cos(2 * np.pi * j / n_lon), r * np.sin(th) * np.sin(2 * np.pi * j / n_lon), r * np.cos(th)] for j in range(n_lon)]
    ring = lambda i, j: 2 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    faces = []
    for j in range(n_lon):
        faces += [[0, ring(1, j), ring(1, j + 1)], [1, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)]]
        for i in range(1, n_lat - 1):
            faces += [[ring(i, j), ring(i + 1, j), ring(i + 1, j + 1)], [ring(i, j), ring(i + 1, j + 1), ring(i, j + 1)]]
    return np.array(verts, float), np.array(faces)


def torus(n_major: int = 24, n_minor: int = 10, R: float = 1.0, r: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    u, w = np.meshgrid(np.arange(n_major) * 2 * np.pi / n_major, np.arange(n_minor) * 2 * np.pi / n_minor, indexing="ij")
    v = np.stack([(R + r * np.cos(w)) * np.cos(u), (R + r * np.cos(w)) * np.sin(u), r * np.sin(w)], -1).reshape(-1, 3)
    idx = lambda i, j: (i % n_major) * n_minor + (j % n_minor)  # noqa: E731
    faces = []
    for i in range(n_major):
        for j in range(n_minor):
            faces += [[idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)], [idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)]]
    return v, np.array(faces)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def _run(args: list[str], python: str) -> tuple[int, list[dict]]:
    proc = subprocess.run([python, str(SCRIPT), *args], capture_output=True, text=True, env=subprocess_env(), timeout=240)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def test_bake_two_meshes_light_colours_gaussians_and_resume(tmp_path, backend_python):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import bake_sketchfab28 as bk
    from PIL import Image

    from track4dgen.cameras import load_cameras, orbit_camera
    from track4dgen.eval import gt as G
    from track4dgen.eval.results import load_gaussians, render_gaussians

    src = tmp_path / "in"
    src.mkdir()
    _write_obj(src / "ball.obj", *uv_sphere())
    _write_obj(src / "ring.obj", *torus())
    (src / "broken.glb").write_bytes(b"not a glTF file" * 8)
    out = tmp_path / "out"
    args = ["bake", str(src), "--out", str(out), "--samples", "8", "--gaussians", "10000",
            "--preview-resolution", "64", "--preview-samples", "4", "--preview-azimuths", "0,90", "--python", backend_python]
    code, events = _run(args, backend_python)
    status = {e["asset"]: e["status"] for e in events}
    assert code == 1  # one asset failed ...
    assert status == {"ball": "done", "broken": "error", "ring": "done"}  # ... and the batch went on
    assert "broken.glb" in (out / "broken.error.txt").read_text()

    key = bk.direction(*bk.RIG[0][1:3])
    for name in ("ball", "ring"):
        asset = out / name
        v, f, colors = bk.read_ply(asset / "baked.ply")
        assert np.abs(np.linalg.norm(v, axis=1).max() - 1.0) < 1e-4  # normalised to the unit sphere
        ndl = _vertex_normals(v, f) @ key
        lum = colors.mean(1)
        lit, shadowed = lum[ndl > 0.5].mean(), lum[ndl < -0.5].mean()
        print(f"{name}: key-lit side {lit:.3f}, shadowed side {shadowed:.3f}")
        assert lit > shadowed + 0.15

        cams = load_cameras(asset / "preview" / "cameras.json")
        assert np.allclose(cams[1].w2c, orbit_camera(90.0, resolution=64).w2c, atol=1e-9)
        render = render_gaussians(load_gaussians(asset / "gaussians4d.npz"), cams, [0], (1.0, 1.0, 1.0), "torch")
        for k in range(len(cams)):
            png = np.asarray(Image.open(asset / "preview" / f"view{k}.png").convert("RGBA"), np.float32) / 255.0
            blender_rgb = png[..., :3] * png[..., 3:] + (1.0 - png[..., 3:])
            mask = png[..., 3] > 0.5
            p_masked = G.psnr(render[k, 0, ..., :3], blender_rgb, mask)
            p_all = G.psnr(render[k, 0, ..., :3], blender_rgb)
            print(f"{name} view {k}: Gaussians vs Blender render of the baked mesh: masked PSNR {p_masked:.2f} dB, full {p_all:.2f} dB")
            assert p_masked > 23.0  # measured: ball ~33 dB, ring ~25-27 dB (64 px, thin torus edges)

    done_before = {n: (out / n / "DONE").stat().st_mtime_ns for n in ("ball", "ring")}
    code, events = _run(args, backend_python)
    assert code == 1
    assert {e["asset"]: e["status"] for e in events} == {"ball": "skipped", "broken": "error", "ring": "skipped"}
    assert done_before == {n: (out / n / "DONE").stat().st_mtime_ns for n in ("ball", "ring")}


def test_convert_step_needs_no_bpy(tmp_path, backend_python):
    """The conversion step is plain backend Python: it runs with bpy blocked from importing."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import bake_sketchfab28 as bk

    v, f = uv_sphere(6, 8)
    bk.write_ply(tmp_path / "baked.ply", v, f, np.full((len(v), 3), 200, np.uint8))
    code = (
        "import sys; sys.modules['bpy'] = None; sys.argv = ['x', 'convert', sys.argv[1], sys.argv[2], '--gaussians', '200'];"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r}); import bake_sketchfab28 as b; raise SystemExit(b.main())"
    )
    proc = subprocess.run([backend_python, "-c", code, str(tmp_path / "baked.ply"), str(tmp_path)], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    z = np.load(tmp_path / "gaussians4d.npz")
    assert z["frame_means"].shape == (1, 200, 3) and np.allclose(z["frame_rgb"], 200 / 255, atol=1e-6)
    assert (tmp_path / "baked.glb").stat().st_size > 0
