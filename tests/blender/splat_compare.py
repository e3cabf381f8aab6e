"""Render one result frame with the add-on's importer (Blender) and with the backend's rasterizer
from the same camera, for tests/blender/test_splat_render.py and docs/images/render_splat_comparison.py.

The backend runs in a subprocess of the backend's Python (the add-on never imports torch).
Both renders composite on white, the backend's default background. The backend is given the
view-averaged ``frame_rgb`` colours (no ``sh4d``): that is what the importer shows.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import bpy
import numpy as np

from addon import cameras, import_result

ROOT = Path(__file__).resolve().parents[2]


def surface_result(folder: Path, n: int = 1500, frames: int = 3, seed: int = 0) -> Path:
    """A result in the backend's format that looks like a fitted one: flat Gaussians tangent to a
    bumpy sphere of radius 0.6, smoothly varying sRGB colours, opacities 0.4-1, moving a little."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = 0.6 * (1.0 + 0.15 * np.sin(3 * d[:, 0]) * np.cos(2 * d[:, 2]))
    means = d * r[:, None]
    # rotation taking +z to the normal (so the thin third axis is along the normal), random spin
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, d)
    s = np.linalg.norm(axis, axis=1, keepdims=True)
    axis = np.where(s > 1e-8, axis / np.maximum(s, 1e-8), [1.0, 0.0, 0.0])
    ang = np.arccos(np.clip(d[:, 2], -1, 1))
    q_tilt = np.concatenate([np.cos(ang / 2)[:, None], axis * np.sin(ang / 2)[:, None]], 1)
    spin = rng.uniform(0, np.pi, n)
    q_spin = np.stack([np.cos(spin / 2), 0 * spin, 0 * spin, np.sin(spin / 2)], 1)
    quats = _qmul(q_tilt, q_spin)
    log_scales = np.stack([rng.uniform(-3.6, -2.8, n), rng.uniform(-3.6, -2.8, n), np.full(n, -5.5)], 1)
    rgb = 0.5 + 0.45 * np.stack([np.sin(4 * d[:, 0] + 1), np.sin(5 * d[:, 1] + 2), np.cos(3 * d[:, 2])], 1)
    t = np.linspace(0, 1, frames)[:, None, None]
    frame_means = means[None] + 0.05 * np.sin(2 * np.pi * t + means[None])
    data = {
        "frame_means": frame_means.astype(np.float32),
        "frame_quats": np.repeat(quats[None], frames, 0).astype(np.float32),
        "frame_log_scales": np.repeat(log_scales[None], frames, 0).astype(np.float32),
        "frame_rgb": np.repeat(rgb[None], frames, 0).astype(np.float32),
        "opacity": rng.uniform(0.4, 1.0, n).astype(np.float32),
        "fps": np.float32(8.0),
        "rasterize_mode": np.array("antialiased"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "gaussians4d.npz", **data)
    (folder / "COMPLETE").write_text("{}")
    return folder


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a.T
    w2, x2, y2, z2 = b.T
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], 1)


def blender_render(result: Path, out_png: Path, frame: int = 0, size: int = 96, azimuth: float = 30.0,
                   samples: int = 32, engine: str = "CYCLES", splats: bool = True) -> tuple[np.ndarray, Path]:
    """Import ``result`` into an empty scene (one scene frame per result frame from 1), render
    result frame ``frame`` from the rig orbit at ``azimuth`` on white. Returns (rgb [H,W,3] in
    [0,1], cameras.json path for the backend)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    import_result.import_result(result, scene, frame_start=1, timing="PER_FRAME", splats=splats)
    cam = cameras.make_rig_camera("cmp_cam", azimuth)
    scene.collection.objects.link(cam)
    scene.camera = cam
    world = bpy.data.worlds.new("white")
    if world.node_tree is None:  # Blender < 5 creates worlds without nodes
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    scene.world = world
    r = scene.render
    r.engine = engine
    r.resolution_x = r.resolution_y = size
    r.resolution_percentage = 100
    r.film_transparent = False
    if engine == "CYCLES":
        scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", samples, False
        scene.cycles.use_adaptive_sampling = False
        # the backend samples each pixel at its centre; a narrow filter does the same
        scene.cycles.filter_width = 0.01
    else:
        scene.eevee.taa_render_samples = samples
        r.filter_size = 0.01
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGB"
    scene.frame_set(1 + frame)
    r.filepath = str(out_png)
    bpy.ops.render.render(write_still=True)
    cams = out_png.with_suffix(".cameras.json")
    cams.write_text(json.dumps(cameras.cameras_json([cam], scene)))
    from PIL import Image

    return np.asarray(Image.open(out_png).convert("RGB"), dtype=np.float32) / 255.0, cams


def backend_render(python: str, result: Path, cameras_path: Path, frame: int, out_npy: Path,
                   linear_light: bool = False) -> np.ndarray:
    """The backend's render (track4dgen.eval.results.render_gaussians, i.e. Stage Two's
    rasterizer) of ``frame`` on white, in a subprocess. Returns rgb [H,W,3] in [0,1].

    The backend blends the sRGB values themselves. ``linear_light`` instead gives it linear
    colours and encodes its output to sRGB afterwards -- blending in linear light, as Blender
    does -- which separates that one known difference from the splat shape's."""
    code = textwrap.dedent(f"""
        import numpy as np
        from track4dgen.cameras import load_cameras
        from track4dgen.eval.results import load_gaussians, render_gaussians
        g = load_gaussians({str(result)!r})
        g.pop("sh4d", None)  # the importer shows frame_rgb, the view-averaged colour
        c = g["frame_rgb"]
        if {linear_light!r}:
            g["frame_rgb"] = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
        out = render_gaussians(g, load_cameras({str(cameras_path)!r}), [{frame}], background=(1.0, 1.0, 1.0), backend="torch")
        rgb = np.clip(out[0, 0, ..., :3], 0.0, 1.0)
        if {linear_light!r}:
            rgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055)
        np.save({str(out_npy)!r}, rgb)
    """)
    env = {"PYTHONPATH": f"{ROOT / 'backend'}:{ROOT}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return np.load(out_npy)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
