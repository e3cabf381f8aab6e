"""addon.placement on real bpy: timing, frame range, collection, parenting, hidden source,
selection, and one undo step for a whole import."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest
from mathutils import Matrix

from addon import import_result as ir
from addon import placement
from addon.errors import AddonError
from test_import_result import F, write_result


def _source(scene, name="Suzanne", collection="Props", location=(1.0, 2.0, 0.5)):
    coll = bpy.data.collections.new(collection)
    scene.collection.children.link(coll)
    obj = bpy.data.objects.new(name, bpy.data.meshes.new(name))
    coll.objects.link(obj)
    obj.location = location
    bpy.context.view_layer.update()
    return obj, coll


def _job(tmp_path, source, **extra):
    """A job folder as the add-on writes it: result/ plus blender.json for ``source``."""
    data = write_result(tmp_path / "job" / "result")
    info = {"source_object": source.name, "source_matrix_world": [list(r) for r in source.matrix_world],
            "center": list(source.matrix_world.translation), "scale": 0.5, "frame_start": 1, "frame_end": F,
            "custom_frame_range": False}
    info.update(extra)
    (tmp_path / "job" / "blender.json").write_text(json.dumps(info))
    return tmp_path / "job" / "result", data, info


def _world_points(obj):
    bpy.context.view_layer.update()
    m = np.array(obj.matrix_world)
    return ir.evaluated_points(obj) @ m[:3, :3].T + m[:3, 3]


def test_frame_range_timings(fresh_scene):
    fresh_scene.render.fps, fresh_scene.render.fps_base = 24, 1.0
    fresh_scene.frame_start = 1
    # 16 frames at 8 fps last 15/8 s: 45 scene frames at 24 fps
    assert placement.frame_range(fresh_scene, 16, 8.0, 1) == placement.FrameRange(1, 46)
    assert placement.frame_range(fresh_scene, 16, 8.0, 10, timing="PER_FRAME") == placement.FrameRange(10, 25)
    assert placement.frame_range(fresh_scene, 16, 8.0, 1, 100) == placement.FrameRange(1, 100), "an explicit end wins"
    fresh_scene.render.fps, fresh_scene.render.fps_base = 30, 1.001  # 29.97
    assert placement.frame_range(fresh_scene, 16, 8.0, 1).end == 1 + round(15 * 30 / 1.001 / 8)
    with pytest.raises(AddonError, match="unknown timing"):
        placement.frame_range(fresh_scene, 16, 8.0, timing="FAST")
    with pytest.raises(AddonError, match="frame range 5-5 is empty"):
        placement.frame_range(fresh_scene, 16, 8.0, 5, 5)


def test_import_plays_in_real_time_and_fits_the_range(fresh_scene, tmp_path):
    fresh_scene.render.fps = 24
    fresh_scene.frame_start, fresh_scene.frame_end = 1, 250
    src, _ = _source(fresh_scene)
    result, data, _ = _job(tmp_path, src)
    obj = ir.import_result(result, fresh_scene)
    end = 1 + 3 * (F - 1)  # 8 fps result in a 24 fps scene
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (1, end)
    assert list(obj[placement.RANGE_KEY]) == [1, end]
    fresh_scene.frame_set(1 + 3 * 2)
    assert np.abs(ir.evaluated_points(obj) - data["frame_means"][2]).max() < 1e-4
    fresh_scene.frame_set(2)  # a third of the way from result frame 0 to 1
    expect = data["frame_means"][0] + (data["frame_means"][1] - data["frame_means"][0]) / 3
    assert np.abs(ir.evaluated_points(obj) - expect).max() < 1e-4


def test_scene_fps_timing_and_custom_range(fresh_scene, tmp_path):
    src, _ = _source(fresh_scene)
    result, _, _ = _job(tmp_path, src)
    obj = ir.import_result(result, fresh_scene, timing="SCENE_FPS")
    assert placement.scene_fps(fresh_scene) == pytest.approx(8.0)
    assert list(obj[placement.RANGE_KEY]) == [1, F]
    # a range the user chose in the panel is kept as it is
    result2, _, _ = _job(tmp_path / "b", src, frame_start=20, frame_end=60, custom_frame_range=True)
    obj2 = ir.import_result(result2, fresh_scene)
    assert list(obj2[placement.RANGE_KEY]) == [20, 60]
    # the scene range covers both imported results
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (1, 60)


def test_result_joins_the_source_and_follows_it(fresh_scene, tmp_path):
    src, coll = _source(fresh_scene)
    other = bpy.data.objects.new("Other", None)
    fresh_scene.collection.objects.link(other)
    other.select_set(True)
    result, data, info = _job(tmp_path, src)
    obj = ir.import_result(result, fresh_scene, timing="PER_FRAME")

    assert obj.users_collection == (coll,), "linked into the source's collection only"
    assert obj.parent == src
    vl = bpy.context.view_layer
    assert vl.objects.active == obj and obj.select_get() and not other.select_get()
    assert src.hide_get() and src.hide_render, "the result replaces the source"
    assert obj.visible_get()

    fresh_scene.frame_set(1 + 2)
    expect = data["frame_means"][2] / info["scale"] + np.array(info["center"])
    assert np.abs(_world_points(obj) - expect).max() < 1e-4
    # moving / turning the source carries the result along
    src.location = (-3.0, 0.0, 1.0)
    src.rotation_euler = (0.0, 0.0, np.pi / 2)
    bpy.context.view_layer.update()
    delta = np.array(src.matrix_world) @ np.linalg.inv(np.array(info["source_matrix_world"]))
    assert np.abs(_world_points(obj) - (expect @ delta[:3, :3].T + delta[:3, 3])).max() < 1e-4


def test_source_moved_during_the_job(fresh_scene, tmp_path):
    """The result lands where the source was when the job ran, and moves with it from there."""
    src, _ = _source(fresh_scene, location=(0.0, 0.0, 0.0))
    result, data, info = _job(tmp_path, src)
    src.location = (5.0, 0.0, 0.0)
    bpy.context.view_layer.update()
    obj = ir.import_result(result, fresh_scene, timing="PER_FRAME")
    fresh_scene.frame_set(1)
    expect = data["frame_means"][0] / info["scale"] + np.array(info["center"]) + [5.0, 0.0, 0.0]
    assert np.abs(_world_points(obj) - expect).max() < 1e-4


def test_options_keep_source_and_range(fresh_scene, tmp_path):
    fresh_scene.frame_start, fresh_scene.frame_end = 1, 250
    src, _ = _source(fresh_scene)
    result, _, _ = _job(tmp_path, src)
    ir.import_result(result, fresh_scene, fit_scene_range=False, hide_source=False)
    assert not src.hide_get() and not src.hide_render
    assert (fresh_scene.frame_start, fresh_scene.frame_end) == (1, 250)


def test_without_source_goes_to_the_active_collection(fresh_scene, tmp_path):
    coll = bpy.data.collections.new("Active")
    fresh_scene.collection.children.link(coll)
    vl = bpy.context.view_layer
    vl.active_layer_collection = vl.layer_collection.children["Active"]
    write_result(tmp_path / "result")
    obj = ir.import_result(tmp_path / "result", fresh_scene, placement={})
    assert obj.users_collection == (coll,) and obj.parent is None
    assert obj.matrix_world == Matrix.Identity(4)


def test_one_undo_step_undoes_the_import(fresh_scene, tmp_path):
    import addon

    fresh_scene.render.fps = 24
    fresh_scene.frame_start, fresh_scene.frame_end = 1, 250
    src, _ = _source(fresh_scene)
    result, _, _ = _job(tmp_path, src)
    addon.register()
    try:
        bpy.ops.ed.undo_push(message="file loaded")  # the stack's first step cannot be undone
        bpy.ops.ed.undo_push(message="before import")
        assert bpy.ops.track4dgen.import_result(filepath=str(result / "gaussians4d.npz"), timing="SCENE_FPS") == {"FINISHED"}
        # what Blender's UI does after an operator with the UNDO flag (an operator called from
        # Python does not push), so everything the import changed is in this one step
        bpy.ops.ed.undo_push(message="Import 4D Gaussians")
        assert "Suzanne_4D" in bpy.data.objects and bpy.data.objects["Suzanne"].hide_get()
        assert bpy.context.scene.render.fps == 8
        bpy.ops.ed.undo()
        scene = bpy.context.scene
        assert "Suzanne_4D" not in bpy.data.objects
        src = bpy.data.objects["Suzanne"]
        assert not src.hide_get() and not src.hide_render
        assert (scene.frame_start, scene.frame_end, scene.render.fps) == (1, 250, 24)
        assert scene.cycles.transparent_max_bounces < ir.TRANSPARENT_BOUNCES
    finally:
        addon.unregister()
