"""`track4dgen.animate_selected` headless against the real backend, cancel, and clear reports
for bad selections, a missing backend and a failing backend."""

from __future__ import annotations

import json
import time
from pathlib import Path

import bpy
import numpy as np
import pytest

from addon import import_result as ir
from addon import job_io, runner, session
from addon.preferences import backend_config

# The smallest real job: Stage One with the tiny model (2 denoising steps) + a few Stage Two steps.
TINY = {
    "model": "tiny", "device": "cpu", "frames": 4, "resolution": 32, "samples": 2, "engine": "CYCLES",
    "stage1": {"steps": 2, "feature_step": 1},
    "stage2": {"iters_rec": 3, "iters_sds": 1, "num_gaussians": 300, "batch_images": 4, "hexplane_resolution": [16, 16, 4]},
}


def _monkey(select: bool = True):
    bpy.ops.mesh.primitive_monkey_add(location=(1.0, 2.0, 0.5))
    obj = bpy.context.active_object
    obj.scale = (0.5, 0.5, 0.5)
    for o in bpy.context.view_layer.objects:
        o.select_set(o == obj and select)
    bpy.context.view_layer.update()
    return obj


def _snapshot():
    return {name: sorted(b.name for b in getattr(bpy.data, name))
            for name in ("objects", "meshes", "materials", "node_groups", "scenes", "cameras", "lights", "worlds")}


def _state():
    return bpy.context.window_manager.track4dgen_run


def test_bad_selection_is_reported(registered):
    with pytest.raises(RuntimeError, match="no object is selected"):
        bpy.ops.track4dgen.animate_selected()
    assert "Select one mesh" in _state().last_hint
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    registered.collection.objects.link(cam)
    cam.select_set(True)
    with pytest.raises(RuntimeError, match="'Cam' is a camera, not a mesh"):
        bpy.ops.track4dgen.animate_selected()
    _monkey()
    cam.select_set(True)
    with pytest.raises(RuntimeError, match="2 objects are selected"):
        bpy.ops.track4dgen.animate_selected()


def test_missing_backend_is_reported_before_any_work(registered, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK4DGEN_PYTHON", str(tmp_path / "nowhere" / "python"))
    _monkey()
    before = _snapshot()
    with pytest.raises(RuntimeError, match="the backend cannot be used: .*does not exist"):
        bpy.ops.track4dgen.animate_selected()
    assert "Preferences" in _state().last_hint and "Backend Python" in _state().last_hint
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir()), "nothing rendered"
    assert _snapshot() == before


def test_backend_error_keeps_job_folder(registered):
    obj = _monkey()
    bad = dict(TINY, stage2={"iters_recc": 3})  # a typo the backend rejects
    before = _snapshot()
    with pytest.raises(RuntimeError, match="iters_recc"):
        bpy.ops.track4dgen.animate_selected(settings_json=json.dumps(bad), timeout=120)
    st = _state()
    assert st.status == "failed" and "iters_recc" in st.last_error
    job_dir = Path(st.job_dir)
    assert job_dir.is_dir() and (job_dir / "job.json").is_file() and (job_dir / "backend.log").is_file()
    assert str(job_dir) in st.last_hint, "the hint says where the job folder was kept"
    assert _snapshot() == before and obj.name in bpy.data.objects


def test_animate_selected_runs_real_backend_and_imports(registered):
    obj = _monkey()
    matrix = np.array(obj.matrix_world)
    registered.track4dgen.import_mode = "BOTH"  # the animated copy (default) and the Gaussians
    res = bpy.ops.track4dgen.animate_selected(settings_json=json.dumps(TINY), timeout=400)
    assert res == {"FINISHED"}
    st = _state()
    assert st.status == "done" and st.last_error == "" and st.fraction == 1.0
    copy = bpy.data.objects[st.result_object]
    assert copy.name == "Suzanne_animated" and len(copy.data.shape_keys.key_blocks) == 1 + 4
    assert copy.data.materials[:] == obj.data.materials[:] and obj.hide_render
    result = bpy.data.objects["Suzanne_4D"]
    assert np.allclose(np.array(obj.matrix_world), matrix)
    job_dir = Path(st.job_dir)
    info = json.loads((job_dir / "blender.json").read_text())
    with np.load(job_dir / "result" / "gaussians4d.npz") as z:
        means = z["frame_means"]
    assert means.shape[0] == 4 and len(result.data.vertices) == means.shape[1]
    M = np.array(result.matrix_world)
    scene = registered
    start, end = result["t4d_frame_range"]  # the result plays in real time at the scene's fps
    assert (scene.frame_start, scene.frame_end) == (start, end)
    for f in (0, 3):
        scene.frame_set(start + f * (end - start) // (means.shape[0] - 1))
        local = ir.evaluated_points(result)
        assert np.abs(local - means[f]).max() < 1e-4
        world = local @ M[:3, :3].T + M[:3, 3]
        assert np.allclose(world, means[f] / info["scale"] + np.array(info["center"]), atol=1e-4)
    # the result sits where the source is: centres agree to within the source's size
    src = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
    world0 = ir.evaluated_points(result) @ M[:3, :3].T + M[:3, 3]
    assert np.linalg.norm(world0.mean(0) - src.mean(0)) < 0.5 * np.ptp(src, axis=0).max()


def test_cancel_leaves_scene_unchanged(registered):
    """Start the same session the modal operator drives, cancel while Stage One runs."""
    obj = _monkey()
    before = _snapshot()
    cfg = backend_config(bpy.context)
    settings = job_io.settings_with_overrides(job_io.JobSettings(prompt="a monkey nodding"),
                                              dict(TINY, stage1={"steps": 50, "feature_step": 1}))
    sess = session.AnimateSession.start(bpy.context, obj, settings, cfg)
    session.ACTIVE = sess
    assert _snapshot() == before, "writing the job adds nothing to the scene"
    deadline = time.monotonic() + 120
    while sess.job.progress.stage != "stage1" and not sess.finished and time.monotonic() < deadline:
        sess.poll()
        time.sleep(0.1)
    assert sess.job.progress.stage == "stage1", sess.job.events
    assert bpy.ops.track4dgen.cancel.poll()
    t0 = time.monotonic()
    assert bpy.ops.track4dgen.cancel() == {"FINISHED"}
    assert time.monotonic() - t0 < 10
    assert sess.status == runner.CANCELLED and sess.job.proc.poll() is not None
    assert sess.finish(bpy.context) is None
    assert _snapshot() == before
    assert not (sess.job_dir / "result").exists() and (sess.job_dir / "job.json").is_file()
    assert not bpy.ops.track4dgen.cancel.poll()


# ------------------------------------------------------------------------------------------
# The modal path. Blender never runs modal operators in background mode, so the operator's
# modal() is driven here with timer events, exactly as the window manager calls it in the UI.
# The backend is a stand-in script that prints progress and writes a valid result.

FAKE = '''
import json, shutil, sys, time, pathlib
src, out, delay = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])
for i in range(1, 4):
    print(json.dumps({"stage": "stage2", "step": i, "total": 3, "message": "", "eta_s": 1.0}), flush=True)
    time.sleep(delay)
tmp = out.parent / ".tmp-result"
tmp.mkdir(parents=True)
shutil.copy(src, tmp / "gaussians4d.npz")
(tmp / "COMPLETE").write_text("{}")
tmp.rename(out)
'''


def _fake_session(context, obj, tmp_path, delay: float) -> session.AnimateSession:
    import sys as _sys

    from test_import_result import write_result

    write_result(tmp_path / "prepared")
    settings = job_io.settings_with_overrides(job_io.JobSettings(prompt="x"), {k: TINY[k] for k in ("resolution", "samples", "engine")})
    job_dir = tmp_path / "job"
    info = job_io.prepare_job(context, obj, job_dir, settings)
    (tmp_path / "fake.py").write_text(FAKE)
    job = runner.BackendJob(_sys.executable, job_dir, job_dir / "result",
                            command=[_sys.executable, str(tmp_path / "fake.py"), str(tmp_path / "prepared" / "gaussians4d.npz"),
                                     str(job_dir / "result"), str(delay)]).start()
    sess = session.AnimateSession(obj.name, job_dir, info, job, backend_config(context))
    session.ACTIVE = sess
    return sess


def _drive_modal(limit_s: float = 60.0) -> set:
    import types

    op = types.SimpleNamespace(_timer=None, reports=[])
    op.report = lambda kind, msg: op.reports.append((kind, msg))
    cls = bpy.types.TRACK4DGEN_OT_animate_selected
    for name in ("_finish", "_stop_timer"):
        setattr(op, name, getattr(cls, name).__get__(op))
    timer, other = types.SimpleNamespace(type="TIMER"), types.SimpleNamespace(type="MOUSEMOVE")
    assert cls.modal(op, bpy.context, other) == {"PASS_THROUGH"}, "other events go to Blender"
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        res = cls.modal(op, bpy.context, timer)
        if res != {"PASS_THROUGH"}:
            return res, op.reports
        time.sleep(0.05)
    raise AssertionError("modal operator never finished")


def test_modal_polls_until_done_and_imports(registered, tmp_path):
    obj = _monkey()
    _fake_session(bpy.context, obj, tmp_path, delay=0.2)
    st = _state()
    res, reports = _drive_modal()
    assert res == {"FINISHED"}, reports
    assert st.status == "done" and st.step == 3 and st.total == 3 and not st.running
    assert st.result_object == "Suzanne_4D" and "Suzanne_4D" in bpy.data.objects
    assert session.ACTIVE is None and ({"INFO"}, "Imported Suzanne_4D (300 Gaussians)") in reports


def test_modal_cancel_leaves_scene_unchanged(registered, tmp_path):
    obj = _monkey()
    before = _snapshot()
    sess = _fake_session(bpy.context, obj, tmp_path, delay=30.0)
    assert _snapshot() == before
    assert bpy.ops.track4dgen.cancel() == {"FINISHED"}
    res, reports = _drive_modal()
    assert res == {"CANCELLED"} and reports[-1][0] == {"WARNING"}
    assert _state().status == "cancelled" and sess.job.proc.poll() is not None
    assert _snapshot() == before
