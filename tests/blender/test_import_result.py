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
    """An attribute of the evaluated Gaussians (preview points, or the splat instances)."""
    geo = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    pc = geo.pointcloud or geo.instances_pointcloud()
    attr = pc.attributes[name]
    key = {"FLOAT_COLOR": "color", "FLOAT": "value", "QUATERNION": "value"}.get(attr.data_type, "vector")
    out = np.empty(len(attr.data) * width, np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def test_positions_follow_means_per_frame(fresh_scene, tmp_path):
    data = write_result(tmp_path / "result")
    obj = ir.import_result(tmp_path / "result", fresh_scene, frame_start=10, timing="PER_FRAME")
    assert obj.type == "MESH" and len(obj.data.vertices) == N, "one vertex per Gaussian"
    for name in ("color", "opacity", "scale", "rot"):
        assert name in obj.data.attributes
    assert fresh_scene.frame_end >= 10 + F - 1, "the scene range covers the animation"
    for f in (0, 2, 4, 1):
        fresh_scene.frame_set(10 + f)
        pos = ir.evaluated_points(obj)
        assert np.abs(pos - data["frame_means"][f]).max() < 1e-4, f
        rgb = _point_attr(obj, "color", 4)[:, :3]
        assert np.abs(rgb - ir.srgb_to_linear(data["frame_rgb"][f])).max() < 1e-5, "stored scene-linear"
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
    # 8 fps result in a 24 fps scene, range not customised: three scene frames per result frame
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (5, 5 + 3 * (F - 1))
    fresh_scene.frame_set(5 + 3 * 3)
    local = ir.evaluated_points(obj)
    world = local @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
    expect = data["frame_means"][3] / 0.25 + np.array(info["center"])
    assert np.abs(world - expect).max() < 1e-4


def test_splat_display_and_material(fresh_scene, tmp_path):
    """Default display: one icosphere instance per Gaussian, rotated and scaled by its sigmas,
    with the splat material reading the instance colour/opacity; preview points on request."""
    data = write_result(tmp_path / "result", n=50)
    obj = ir.import_result(tmp_path / "result", fresh_scene, frame_start=1, timing="PER_FRAME")
    fresh_scene.frame_set(3)
    geo = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    inst = geo.instances_pointcloud()
    assert geo.pointcloud is None and len(inst.points) == 50, "one instance per Gaussian"
    (ref,) = geo.instance_references()
    assert len(ref.mesh.vertices) == 42, "a twice-subdivided icosphere"
    set_mats = {n.inputs["Material"].default_value.name for n in obj.modifiers[ir.MODIFIER].node_group.nodes
                if n.bl_idname == "GeometryNodeSetMaterial"}
    assert set_mats == {ir.SPLAT_MATERIAL, ir.POINT_MATERIAL}
    radius = np.linalg.norm(np.array([v.co for v in ref.mesh.vertices]), axis=1)
    assert np.allclose(radius, ir.SPLAT_EXTENT, rtol=1e-4)
    mats = np.empty(50 * 16, np.float32)
    inst.attributes["instance_transform"].data.foreach_get("value", mats)
    mats = mats.reshape(50, 4, 4).transpose(0, 2, 1)  # stored column-major
    sigma = np.exp(data["frame_log_scales"][2])
    assert np.allclose(np.linalg.norm(mats[:, :3, :3], axis=1), sigma, rtol=1e-4), "axis lengths = sigmas"
    assert np.abs(mats[:, :3, 3] - data["frame_means"][2]).max() < 1e-4
    per_frame = [a.name for a in inst.attributes if a.name.startswith(ir.PREFIX) and a.name[-1].isdigit()]
    assert per_frame == [], "per-frame attributes are dropped before instancing"
    for name in (ir.RENDER_COLOR, "opacity"):
        assert name in inst.attributes
    nodes = bpy.data.materials[ir.SPLAT_MATERIAL].node_tree.nodes
    assert {(n.attribute_type, n.attribute_name) for n in nodes if n.type == "ATTRIBUTE"} == {
        ("INSTANCER", ir.RENDER_COLOR), ("INSTANCER", "opacity")}

    ir.set_modifier_inputs(obj.modifiers[ir.MODIFIER], **{"Gaussian Splats": False})
    geo = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).evaluated_geometry()
    assert len(geo.pointcloud.points) == 50 and not geo.instance_references()


def _render(scene, tmp_path, size=32, samples=4) -> np.ndarray:
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, -4.0, 0.0)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = cam
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.filepath = str(tmp_path / "r.png")
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    return np.asarray(Image.open(tmp_path / "r.png").convert("RGBA")).astype(float)


def test_render_shows_the_point_colours(fresh_scene, tmp_path):
    """A Cycles render of an all-red result is red where the splats are and transparent elsewhere."""
    write_result(tmp_path / "result", n=400, rgb=np.array([1.0, 0.0, 0.0]))
    ir.import_result(tmp_path / "result", fresh_scene, frame_start=1)
    im = _render(fresh_scene, tmp_path)
    covered = im[..., 3] > 100
    assert 0.02 < covered.mean() < 0.9
    px = im[covered]
    assert px[:, 0].mean() > 150 and px[:, 1].mean() < 60 and px[:, 2].mean() < 60


def test_srgb_colours_render_as_stored(fresh_scene, tmp_path):
    """frame_rgb is sRGB: an opaque 0.5 grey must come out of a Standard-view render as 128/255
    (stored as linear, it rendered 188). Preview points: opaque, no falloff."""
    data = write_result(tmp_path / "result", n=400, rgb=np.array([0.5, 0.5, 0.5]))
    data["opacity"][:] = 1.0
    np.savez(tmp_path / "result" / "gaussians4d.npz", **data)
    ir.import_result(tmp_path / "result", fresh_scene, frame_start=1, splats=False, point_size=3.0)
    im = _render(fresh_scene, tmp_path)
    solid = im[..., 3] > 254
    assert solid.sum() > 20
    assert abs(im[solid][:, :3].mean() - 127.5) < 3.0


def test_survives_save_and_reload_without_addon(fresh_scene, tmp_path):
    data = write_result(tmp_path / "result")
    ir.import_result(tmp_path / "result", fresh_scene, frame_start=1, name="Gauss", timing="PER_FRAME")
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
            pc = geo.instances_pointcloud()  # the splat instances; valid while `geo` lives
            mats = np.empty(len(pc.points) * 16, np.float32)
            pc.attributes["instance_transform"].data.foreach_get("value", mats)
            err = np.abs(mats.reshape(-1, 16)[:, 12:15] - expect[f]).max()
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
