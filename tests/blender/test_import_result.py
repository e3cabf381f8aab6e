"""Importing gaussians4d.npz: one object, one vertex per Gaussian, per-frame attributes picked by
Geometry Nodes, placed back at the source, renderable, and intact after save/reload."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import bpy
import numpy as np
import pytest

from addon import import_result as ir
from addon.errors import AddonError

F, N = 5, 300


def write_result(folder: Path, seed: int = 0, frames: int = F, n: int = N, rgb=None) -> dict[str, np.ndarray]:
    """A result folder in the backend's format (DESIGN.md, result folder)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, frames)[:, None, None]
    base = rng.normal(size=(1, n, 3)).astype(np.float32) * 0.4
    data = {
        "means": base.repeat(1, 0)[0],
        "quats": np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)).astype(np.float32),
        "log_scales": np.full((n, 3), -3.0, np.float32),
        "opacity_logit": np.zeros(n, np.float32),
        "frame_means": (base + 0.3 * np.sin(2 * np.pi * t + base)).astype(np.float32),
        "frame_quats": rng.normal(size=(frames, n, 4)).astype(np.float32),
        "frame_log_scales": rng.uniform(-4, -2, size=(frames, n, 3)).astype(np.float32),
        "frame_rgb": (rng.uniform(size=(frames, n, 3)) if rgb is None else np.broadcast_to(rgb, (frames, n, 3))).astype(np.float32),
        "opacity": rng.uniform(0.2, 1.0, size=n).astype(np.float32),
        "fps": np.float32(8.0),
    }
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "gaussians4d.npz", **data)
    (folder / "COMPLETE").write_text("{}")
    return data


def _point_attr(obj, name: str, width: int) -> np.ndarray:
    geo = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    attr = geo.pointcloud.attributes[name]
    key = {"FLOAT_COLOR": "color", "FLOAT": "value", "QUATERNION": "value"}.get(attr.data_type, "vector")
    out = np.empty(len(attr.data) * width, np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def test_positions_follow_means_per_frame(fresh_scene, tmp_path):
    data = write_result(tmp_path / "result")
    obj = ir.import_result(tmp_path / "result", fresh_scene, frame_start=10)
    assert obj.type == "MESH" and len(obj.data.vertices) == N, "one vertex per Gaussian"
    for name in ("color", "opacity", "scale", "rot"):
        assert name in obj.data.attributes
    assert fresh_scene.frame_end >= 10 + F - 1, "the scene range covers the animation"
    for f in (0, 2, 4, 1):
        fresh_scene.frame_set(10 + f)
        pos = ir.evaluated_points(obj)
        assert np.abs(pos - data["frame_means"][f]).max() < 1e-4, f
        rgb = _point_attr(obj, "color", 4)[:, :3]
        assert np.abs(rgb - data["frame_rgb"][f]).max() < 1e-5
        scale = _point_attr(obj, "scale", 3)
        assert np.allclose(scale, np.exp(data["frame_log_scales"][f]), rtol=1e-5)
        q = data["frame_quats"][f] / np.linalg.norm(data["frame_quats"][f], axis=1, keepdims=True)
        rot = _point_attr(obj, "rot", 4)
        assert np.minimum(np.abs(rot - q).max(1), np.abs(rot + q).max(1)).max() < 1e-4
        assert np.allclose(_point_attr(obj, "opacity", 1), data["opacity"], atol=1e-6)
    # before the start and after the end the animation holds its first / last frame
    fresh_scene.frame_set(3)
    assert np.abs(ir.evaluated_points(obj) - data["frame_means"][0]).max() < 1e-4
    fresh_scene.frame_set(40)
    assert np.abs(ir.evaluated_points(obj) - data["frame_means"][-1]).max() < 1e-4


def test_longer_frame_range_interpolates(fresh_scene, tmp_path):
    data = write_result(tmp_path / "result")
    obj = ir.import_result(tmp_path / "result", fresh_scene, frame_start=1, frame_end=1 + 2 * (F - 1))
    fresh_scene.frame_set(4)  # result time 1.5: halfway between result frames 1 and 2
    expect = 0.5 * (data["frame_means"][1] + data["frame_means"][2])
    assert np.abs(ir.evaluated_points(obj) - expect).max() < 1e-4
    fresh_scene.frame_set(5)
    assert np.abs(ir.evaluated_points(obj) - data["frame_means"][2]).max() < 1e-4


def test_placed_back_at_the_source(fresh_scene, tmp_path):
    data = write_result(tmp_path / "job" / "result")
    info = {"source_object": "Suzanne", "center": [2.0, -1.0, 0.5], "scale": 0.25, "frame_start": 5, "frame_end": 5 + F - 1}
    (tmp_path / "job" / "blender.json").write_text(json.dumps(info))
    obj = ir.import_result(tmp_path / "job" / "result", fresh_scene)
    assert obj.name == "Suzanne_4D"
    fresh_scene.frame_set(5 + 3)
    local = ir.evaluated_points(obj)
    world = local @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
    expect = data["frame_means"][3] / 0.25 + np.array(info["center"])
    assert np.abs(world - expect).max() < 1e-4


def test_ellipsoid_display_and_material(fresh_scene, tmp_path):
    write_result(tmp_path / "result", n=50)
    obj = ir.import_result(tmp_path / "result", fresh_scene, frame_start=1, ellipsoids=True)
    geo = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    assert geo.mesh is not None and len(geo.mesh.vertices) == 50 * 12, "one icosphere per Gaussian"
    assert "color" in geo.mesh.attributes and "opacity" in geo.mesh.attributes
    mat = obj.data.materials[0]
    names = {n.attribute_name for n in mat.node_tree.nodes if n.type == "ATTRIBUTE"}
    assert names == {ir.RENDER_COLOR, "opacity"}
    assert ir.RENDER_COLOR in geo.mesh.attributes


def test_render_shows_the_point_colours(fresh_scene, tmp_path):
    """A Cycles render of an all-red result is red where the points are and transparent elsewhere."""
    write_result(tmp_path / "result", n=400, rgb=np.array([1.0, 0.0, 0.0]))
    obj = ir.import_result(tmp_path / "result", fresh_scene, frame_start=1, point_size=3.0)
    scene = fresh_scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -4.0, 0.0)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = cam
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 4
    scene.render.resolution_x = scene.render.resolution_y = 32
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.filepath = str(tmp_path / "r.png")
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    im = np.asarray(Image.open(tmp_path / "r.png").convert("RGBA")).astype(float)
    covered = im[..., 3] > 200
    assert 0.02 < covered.mean() < 0.9
    px = im[covered]
    assert px[:, 0].mean() > 150 and px[:, 1].mean() < 60 and px[:, 2].mean() < 60


def test_survives_save_and_reload_without_addon(fresh_scene, tmp_path):
    data = write_result(tmp_path / "result")
    ir.import_result(tmp_path / "result", fresh_scene, frame_start=1, name="Gauss")
    blend = tmp_path / "saved.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    np.save(tmp_path / "expect.npy", data["frame_means"])
    # a fresh Python with bpy and no add-on on the path opens the file and plays it
    code = textwrap.dedent(f"""
        import bpy, numpy as np
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
        expect = np.load({str(tmp_path / "expect.npy")!r})
        obj = bpy.data.objects["Gauss"]
        for f in (0, 3, 4):
            bpy.context.scene.frame_set(1 + f)
            geo = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
            pc = geo.pointcloud  # valid while `geo` lives
            pos = np.empty(len(pc.points) * 3, np.float32)
            pc.attributes["position"].data.foreach_get("vector", pos)
            err = np.abs(pos.reshape(-1, 3) - expect[f]).max()
            assert err < 1e-4, (f, err)
        print("RELOAD_OK", len(obj.data.vertices))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert "RELOAD_OK 300" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.parametrize("break_it,match", [
    (lambda d: d.pop("frame_rgb"), "lacks \\['frame_rgb'\\]"),
    (lambda d: d.update(frame_quats=d["frame_quats"][:, :10]), "frame_quats has shape"),
    (lambda d: d.update(opacity=d["opacity"][:3]), "opacity has shape"),
    (lambda d: d["frame_means"].__setitem__((0, 0, 0), np.nan), "NaN"),
])
def test_bad_results_are_named(tmp_path, break_it, match):
    data = write_result(tmp_path / "r")
    data = {k: np.array(v) for k, v in data.items()}
    break_it(data)
    np.savez(tmp_path / "r" / "gaussians4d.npz", **data)
    with pytest.raises(AddonError, match=match):
        ir.load_result(tmp_path / "r")
    with pytest.raises(AddonError, match="no gaussians4d.npz"):
        ir.load_result(tmp_path / "empty")


def test_file_import_operator(fresh_scene, tmp_path):
    import addon

    write_result(tmp_path / "job" / "result")
    (tmp_path / "job" / "blender.json").write_text(json.dumps({"source_object": "Cube", "center": [0, 0, 1], "scale": 2.0,
                                                                "frame_start": 3, "frame_end": 3 + F - 1}))
    addon.register()
    try:
        assert bpy.ops.track4dgen.import_result(filepath=str(tmp_path / "job" / "result" / "gaussians4d.npz")) == {"FINISHED"}
        obj = bpy.context.view_layer.objects.active
        assert obj.name == "Cube_4D" and len(obj.data.vertices) == N
        assert obj.modifiers["Track4DGen"].node_group.name == ir.NODE_GROUP
        assert np.allclose(np.array(obj.matrix_world)[:3, 3], [0, 0, 1])
        with pytest.raises(RuntimeError, match="no gaussians4d.npz"):
            bpy.ops.track4dgen.import_result(filepath=str(tmp_path / "nothing" / "x.npz"))
    finally:
        addon.unregister()
