"""Job folders written by the add-on: renders with alpha, cameras that project like Blender,
a normalised mesh, a job.json the backend accepts, and clear reports for bad selections."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from PIL import Image

from addon import cameras, job_io
from addon.errors import AddonError

RES = 48


def _monkey():
    bpy.ops.mesh.primitive_monkey_add(location=(2.0, 1.0, 0.5), rotation=(0.0, 0.0, 0.4))
    obj = bpy.context.active_object
    obj.scale = (1.5, 1.5, 1.5)
    bpy.context.view_layer.update()
    return obj


def _settings(**kw) -> job_io.JobSettings:
    kw.setdefault("prompt", "a monkey nodding")
    return job_io.JobSettings(preset="preview", resolution=RES, samples=2, engine="CYCLES", **kw)


def _data_snapshot():
    return {name: sorted(b.name for b in getattr(bpy.data, name))
            for name in ("objects", "meshes", "scenes", "cameras", "lights", "worlds", "materials", "node_groups")}


@pytest.fixture(scope="module")
def written_job(tmp_path_factory):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = _monkey()
    before = _data_snapshot()
    matrix_before = [list(r) for r in obj.matrix_world]
    job_dir = tmp_path_factory.mktemp("job")
    info = job_io.prepare_job(bpy.context, obj, job_dir, _settings(seed=7, frames=8))
    return {"obj_name": obj.name, "dir": job_dir, "info": info, "before": before, "after": _data_snapshot(),
            "matrix_before": matrix_before}


def test_four_rgba_views_with_a_mask(written_job):
    for k in range(4):
        im = np.asarray(Image.open(written_job["dir"] / "views" / f"{k}.png"))
        assert im.shape == (RES, RES, 4), "RGBA at the job resolution"
        alpha = im[..., 3]
        assert 0.05 < (alpha > 127).mean() < 0.8, "the object covers part of the frame"
        border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
        assert border.max() == 0, "transparent film: background alpha is 0"
        assert im[alpha > 200][:, :3].mean() > 60, "the object is lit (not black)"


def test_cameras_json_projects_like_blender(written_job):
    """A known vertex of the normalised mesh lands on the pixel Blender's own projection gives,
    and inside the rendered mask."""
    payload = json.loads((written_job["dir"] / "cameras.json").read_text())
    assert payload["convention"] == "opencv" and len(payload["views"]) == 4
    info = written_job["info"]
    obj = bpy.data.objects[written_job["obj_name"]]
    # the tip of the monkey's nose region: the vertex with the most negative local y (front)
    local = np.array([v.co for v in obj.data.vertices])
    world = np.array([obj.matrix_world @ Vector(p) for p in local])
    known = (world[np.argmin(local[:, 1])] - np.array(info["center"])) * info["scale"]

    scene = bpy.data.scenes.new("check")
    try:
        scene.render.resolution_x = scene.render.resolution_y = RES
        scene.render.resolution_percentage = 100
        rig = cameras.make_rig()
        for k, (view, cam) in enumerate(zip(payload["views"], rig)):
            K, w2c = np.array(view["K"]), np.array(view["w2c"])
            pc = w2c[:3, :3] @ known + w2c[:3, 3]
            ours = (K @ (pc / pc[2]))[:2]
            ndc = world_to_camera_view(scene, cam, Vector(known))
            theirs = np.array([ndc.x * RES, (1.0 - ndc.y) * RES])
            assert np.abs(ours - theirs).max() < 0.5, (k, ours, theirs)
            if k == 0:  # the front view sees the nose: its pixel is inside the mask
                alpha = np.asarray(Image.open(written_job["dir"] / "views" / "0.png"))[..., 3]
                u, v = np.clip(ours.astype(int), 0, RES - 1)
                assert alpha[v, u] > 0
    finally:
        for cam in rig:
            data = cam.data
            bpy.data.objects.remove(cam)
            bpy.data.cameras.remove(data)
        bpy.data.scenes.remove(scene)


def test_backend_accepts_job_and_mesh_is_normalised(written_job):
    tjob = pytest.importorskip("track4dgen.job")
    job = tjob.load_job(written_job["dir"])
    assert job.spec.seed == 7 and job.spec.frames == 8 and job.spec.resolution == RES and job.spec.views == 4
    assert job.spec.prompt == "a monkey nodding"
    from track4dgen.meshio import load_mesh

    mesh = load_mesh(written_job["dir"] / "mesh.glb")
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert r.max() == pytest.approx(1.0, abs=1e-4), "unit sphere"
    assert np.allclose(0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0)), 0.0, atol=1e-4), "centred"
    # Z-up kept: the monkey is taller along Z than deep along Y... its ears span X
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    assert extent[0] > extent[2], "ears along X: the exporter did not swap axes"
    # denormalising recovers the Blender world coordinates of the source
    obj = bpy.data.objects[written_job["obj_name"]]
    world = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
    back = mesh.vertices / written_job["info"]["scale"] + np.array(written_job["info"]["center"])
    # (glTF splits vertices along seams, so compare as point sets)
    nearest = np.linalg.norm(back[:, None, :] - world[None, :, :], axis=-1).min(1)
    assert nearest.max() < 1e-4
    assert np.allclose(back.min(0), world.min(0), atol=1e-4) and np.allclose(back.max(0), world.max(0), atol=1e-4)


def test_blender_json_and_scene_left_unchanged(written_job):
    info = json.loads((written_job["dir"] / "blender.json").read_text())
    assert info["source_object"] == written_job["obj_name"]
    assert info["frame_start"] == 1 and info["frame_end"] == 8
    assert written_job["after"] == written_job["before"], "no datablocks left behind"
    obj = bpy.data.objects[written_job["obj_name"]]
    assert [list(r) for r in obj.matrix_world] == written_job["matrix_before"]
    job_json = json.loads((written_job["dir"] / "job.json").read_text())
    assert "source_object" not in job_json, "add-on bookkeeping stays out of job.json"


def test_bad_selections_are_reported(fresh_scene):
    with pytest.raises(AddonError, match="no object is selected"):
        job_io.check_source_object(None)
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    with pytest.raises(AddonError, match="'Cam' is a camera, not a mesh"):
        job_io.check_source_object(cam)
    wire = bpy.data.meshes.new("wire")
    wire.from_pydata([(0, 0, 0), (1, 0, 0)], [(0, 1)], [])
    with pytest.raises(AddonError, match="has no faces") as info:
        job_io.check_source_object(bpy.data.objects.new("Wire", wire))
    assert info.value.code == "bad_selection" and info.value.hint


def test_settings_are_checked():
    with pytest.raises(AddonError, match="prompt is empty"):
        job_io.JobSettings(prompt="  ").resolved()
    with pytest.raises(AddonError, match="unknown quality preset"):
        job_io.JobSettings(prompt="x", preset="ultra").resolved()
    with pytest.raises(AddonError, match="frame count"):
        job_io.JobSettings(prompt="x", frames=1).resolved()
    s = job_io.JobSettings(prompt="x", preset="paper").resolved()
    assert s.resolution == 256 and s.stage2["iters_rec"] == 750 and s.stage2["iters_sds"] == 250
    s = job_io.JobSettings(prompt="x", preset="preview", stage2={"iters_rec": 5}).resolved()
    assert s.resolution == 64 and s.stage2["iters_rec"] == 5, "explicit overrides win over the preset"
    tjob = pytest.importorskip("track4dgen.job")
    from track4dgen.stage1.config import SamplerConfig

    for preset in job_io.PRESETS:  # every preset writes a job.json the backend accepts
        spec = tjob.parse_spec(job_io.JobSettings(prompt="x", preset=preset).job_json())
        SamplerConfig.from_overrides(spec.stage1)


@pytest.mark.parametrize("scale", [(1.0, 1.0, 1.0), (-1.0, 2.0, 1.0)])
def test_normalised_copy_is_in_unit_sphere_and_outward(fresh_scene, scale):
    """Also for a mirrored object (negative scale) the faces keep pointing outwards."""
    bpy.ops.mesh.primitive_cube_add(location=(3.0, 0.0, 0.0))
    obj = bpy.context.active_object
    obj.scale = scale
    bpy.context.view_layer.update()
    mesh, center, s = job_io.normalised_mesh(obj, bpy.context.evaluated_depsgraph_get())
    try:
        co = np.array([v.co for v in mesh.vertices])
        assert np.linalg.norm(co, axis=1).max() == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(center, [3.0, 0.0, 0.0], atol=1e-6)
        # signed volume from the face winding: positive when normals point out
        vol = sum(np.dot(co[p.vertices[0]], np.cross(co[p.vertices[i]], co[p.vertices[i + 1]]))
                  for p in mesh.polygons for i in range(1, len(p.vertices) - 1)) / 6.0
        assert vol > 0
    finally:
        bpy.data.meshes.remove(mesh)
