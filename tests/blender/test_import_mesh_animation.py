"""Issue 14 in real Blender: a copy of a textured, parented, modified mesh is animated with a
result's mesh_animation.npz; the evaluated vertices match the result at every frame, materials /
UVs / modifiers are the source's, the saved .blend plays without the add-on, and the backend's
animated.glb re-imports with its animation in Blender's glTF importer."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import bpy
import numpy as np
import pytest
from mathutils import Matrix

from addon import import_mesh_animation as ima
from addon import job_io
from addon.errors import AddonError

F = 5


def textured_object() -> bpy.types.Object:
    """A UV sphere with an image-texture material, a Triangulate modifier (vertices unchanged),
    a parent empty, a transform, in its own collection."""
    coll = bpy.data.collections.new("Props")
    bpy.context.scene.collection.children.link(coll)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, radius=0.7)
    obj = bpy.context.object
    for c in obj.users_collection:
        c.objects.unlink(obj)
    coll.objects.link(obj)
    img = bpy.data.images.new("tex", 8, 8)
    img.pixels = list(np.random.default_rng(0).random(8 * 8 * 4))
    mat = bpy.data.materials.new("Painted")
    if mat.node_tree is None:
        mat.use_nodes = True
    tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
    tex.image = img
    mat.node_tree.links.new(tex.outputs["Color"], mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"])
    obj.data.materials.append(mat)
    obj.modifiers.new("Tri", "TRIANGULATE")
    parent = bpy.data.objects.new("Rig", None)
    coll.objects.link(parent)
    parent.location = (0.5, 0.0, 0.2)
    obj.parent = parent
    obj.location = (1.0, 2.0, 0.5)
    obj.rotation_euler = (0.3, 0.0, 0.7)
    obj.scale = (1.3, 1.3, 1.3)
    bpy.context.view_layer.update()
    return obj


def motion(points: np.ndarray, f: int) -> np.ndarray:
    """The synthetic 'result' motion in the normalised frame: a turn about z and a rise."""
    a = 0.15 * f
    R = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    return points @ R.T + np.array([0.0, 0.0, 0.05 * f])


def write_result(obj: bpy.types.Object, folder: Path) -> dict:
    """What a job + Stage Two would leave: mesh.glb (the add-on's own export), blender.json
    placement and mesh_animation.npz for the glb's vertices as the backend loads them."""
    from track4dgen.meshio import load_mesh

    folder.mkdir(parents=True)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh, center, scale = job_io.normalised_mesh(obj, depsgraph)
    tmp_scene = bpy.data.scenes.new("tmp")
    copy = bpy.data.objects.new("norm", mesh)
    tmp_scene.collection.objects.link(copy)
    job_io.export_glb(tmp_scene, copy, folder / "mesh.glb")
    bpy.data.objects.remove(copy)
    bpy.data.meshes.remove(mesh)
    bpy.data.scenes.remove(tmp_scene)
    rest = load_mesh(folder / "mesh.glb").vertices
    positions = np.stack([motion(rest, f) for f in range(F)]).astype(np.float32)
    positions[0] = rest
    np.savez(folder / "mesh_animation.npz", positions=positions, fps=np.float32(8.0), vertex_count=np.int64(len(rest)),
             frames=np.int32(F))
    return {"center": [float(c) for c in center], "scale": float(scale),
            "source_matrix_world": [list(r) for r in obj.matrix_world], "frame_start": 1, "frame_end": F, "custom_frame_range": True,
            "source_object": obj.name, "positions": positions}


def expected_local(obj_matrix: Matrix, info: dict, rest_local: np.ndarray, f: int) -> np.ndarray:
    m = np.array(obj_matrix)
    world = rest_local @ m[:3, :3].T + m[:3, 3]
    n = motion((world - info["center"]) * info["scale"], f)
    return (n / info["scale"] + info["center"] - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T


def _uvs(mesh: bpy.types.Mesh) -> np.ndarray:
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers[0].data.foreach_get("uv", uv)
    return uv


def test_copy_follows_the_result_with_the_sources_data(fresh_scene, tmp_path):
    src = textured_object()
    info = write_result(src, tmp_path / "result")
    rest = ima._mesh_co(src.data)
    uv_before = _uvs(src.data)
    obj = ima.animate_object(src, tmp_path / "result", fresh_scene, placement=info)

    assert obj is not src and obj.data is not src.data and obj.name == "Sphere_animated"
    assert [m.name for m in obj.data.materials] == ["Painted"] and obj.data.materials[0] is src.data.materials[0]
    np.testing.assert_array_equal(_uvs(obj.data), uv_before)
    assert [(m.name, m.type) for m in obj.modifiers] == [("Tri", "TRIANGULATE")]
    assert obj.parent is src.parent and set(obj.users_collection) == set(src.users_collection)
    assert src.hide_render and src.hide_get()
    assert src.data.shape_keys is None, "the source mesh is untouched"
    assert len(obj.data.shape_keys.key_blocks) == F + 1
    for f in range(F):
        fresh_scene.frame_set(1 + f)
        got = ima.evaluated_vertices(obj)
        np.testing.assert_allclose(got, expected_local(obj.matrix_world, info, rest, f), atol=2e-4)
    assert np.abs(ima.evaluated_vertices(obj) - rest).max() > 0.05  # it really moved
    np.testing.assert_array_equal(_uvs(obj.data), uv_before)


def test_stretched_range_interpolates_between_result_frames(fresh_scene, tmp_path):
    src = textured_object()
    info = write_result(src, tmp_path / "result")
    obj = ima.animate_object(src, tmp_path / "result", fresh_scene, placement=info, frame_start=10, frame_end=10 + 2 * (F - 1))
    assert fresh_scene.frame_end >= 10 + 2 * (F - 1)
    fresh_scene.frame_set(13)  # result time 1.5
    mid = ima.evaluated_vertices(obj)
    fresh_scene.frame_set(12)
    a = ima.evaluated_vertices(obj)
    fresh_scene.frame_set(14)
    b = ima.evaluated_vertices(obj)
    np.testing.assert_allclose(mid, 0.5 * (a + b), atol=1e-5)


def test_saved_blend_plays_without_the_addon(fresh_scene, tmp_path):
    src = textured_object()
    info = write_result(src, tmp_path / "result")
    obj = ima.animate_object(src, tmp_path / "result", fresh_scene, placement=info)
    expect = []
    for f in range(F):
        fresh_scene.frame_set(1 + f)
        expect.append(ima.evaluated_vertices(obj))
    np.save(tmp_path / "expect.npy", np.stack(expect))
    blend = tmp_path / "saved.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    code = textwrap.dedent(f"""
        import sys, numpy as np
        assert not any(p.endswith("wt14") or "addon" in p for p in sys.modules), "add-on must not be loaded"
        import bpy
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
        expect = np.load({str(tmp_path / "expect.npy")!r})
        obj = bpy.data.objects["Sphere_animated"]
        for f in range({F}):
            bpy.context.scene.frame_set(1 + f)
            mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
            co = np.empty(len(mesh.vertices) * 3); mesh.vertices.foreach_get("co", co)
            err = np.abs(co.reshape(-1, 3) - expect[f]).max()
            assert err < 1e-5, (f, err)
        print("RELOAD_OK", len(obj.data.shape_keys.key_blocks), obj.data.materials[0].name)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert f"RELOAD_OK {F + 1} Painted" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


def test_fps_fits_the_scene_without_a_frame_range(fresh_scene, tmp_path):
    src = textured_object()
    info = write_result(src, tmp_path / "result")
    placement = {k: v for k, v in info.items() if k not in ("frame_start", "frame_end")}
    fresh_scene.render.fps = 24
    obj = ima.animate_object(src, tmp_path / "result", fresh_scene, placement=placement, frame_start=1)
    fcurves = ima._fcurve(obj.data.shape_keys.animation_data.action, obj.data.shape_keys, f'key_blocks["{ima.KEY_PREFIX}{F - 1:03d}"].value')
    # result at 8 fps played at 24 fps: one result frame every 3 scene frames
    assert fcurves.keyframe_points[-1].co[0] == pytest.approx(1 + 3 * (F - 1))


def test_bad_results_are_named(fresh_scene, tmp_path):
    src = textured_object()
    with pytest.raises(AddonError, match="no mesh_animation.npz"):
        ima.animate_object(src, tmp_path, fresh_scene)
    np.savez(tmp_path / "mesh_animation.npz", positions=np.full((2, 3, 3), np.nan), fps=np.float32(8), vertex_count=np.int64(3))
    with pytest.raises(AddonError, match="NaN"):
        ima.animate_object(src, tmp_path, fresh_scene)
    assert [o.name for o in bpy.data.objects if o.name.endswith("_animated")] == []


def test_animated_glb_reimports_with_its_animation(fresh_scene, tmp_path):
    from track4dgen.stage2.gltf_animation import write_animated_glb

    src = textured_object()
    info = write_result(src, tmp_path / "result")
    glb = write_animated_glb(tmp_path / "animated.glb", tmp_path / "result" / "mesh.glb", info["positions"], fps=8.0)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = 24
    bpy.ops.import_scene.gltf(filepath=str(glb))
    (obj,) = [o for o in scene.objects if o.type == "MESH"]
    keys = obj.data.shape_keys
    assert keys is not None and [k.name for k in keys.key_blocks[1:]] == [f"frame_{f:03d}" for f in range(F)]
    assert keys.animation_data is not None and keys.animation_data.action is not None
    assert obj.data.materials and obj.data.uv_layers
    # the importer converts glTF's Y-up to Blender's Z-up; our files are Z-up already, so undo it
    to_ours = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)

    def world_at(frame: int) -> np.ndarray:
        scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        mesh = obj.evaluated_get(depsgraph).to_mesh()
        co = np.empty(len(mesh.vertices) * 3)
        mesh.vertices.foreach_get("co", co)
        obj.evaluated_get(depsgraph).to_mesh_clear()
        m = np.array(obj.matrix_world)
        return (co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]) @ to_ours.T

    rest = world_at(0)
    source = np.linalg.norm(rest[:, None] - info["positions"][0][None], axis=-1).argmin(1)  # glb vertex -> job vertex
    np.testing.assert_allclose(rest, info["positions"][0][source], atol=1e-5)
    for f in (2, F - 1):
        # the importer keys time t at scene frame t * fps: result frame f at f * 24 / 8
        np.testing.assert_allclose(world_at(round(f * 24 / 8)), info["positions"][f][source], atol=1e-4)


def test_file_import_operator_animates_the_jobs_source(fresh_scene, tmp_path):
    import json

    import addon

    src = textured_object()
    info = write_result(src, tmp_path / "result")
    (tmp_path / "result" / "blender.json").write_text(json.dumps({k: v for k, v in info.items() if k != "positions"}))
    bpy.ops.object.select_all(action="DESELECT")  # the source is found by its name in blender.json
    addon.register()
    try:
        assert bpy.ops.track4dgen.import_result(filepath=str(tmp_path / "result" / "mesh_animation.npz")) == {"FINISHED"}
        active = bpy.context.view_layer.objects.active
        assert active.name == "Sphere_animated" and len(active.data.shape_keys.key_blocks) == F + 1
        with pytest.raises(RuntimeError, match="no gaussians4d.npz"):  # "Both" needs the Gaussians too
            bpy.ops.track4dgen.import_result(filepath=str(tmp_path / "result" / "mesh_animation.npz"), mode="BOTH")
        assert [o.name for o in bpy.data.objects if "animated" in o.name] == ["Sphere_animated"], "nothing half imported"
    finally:
        addon.unregister()
