"""The first run as an artist meets it: the weights are checked before anything is rendered, the
one progress bar moves through plain stage names without long freezes, and the job folders can
be opened and cleaned up. Real bpy, the real backend (tiny settings)."""

from __future__ import annotations

import json
import os
import time
import types
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from addon import job_io, operators, runner, session  # noqa: E402
from addon.preferences import backend_config  # noqa: E402
from test_operator import TINY, _monkey, _snapshot, _state  # noqa: E402


@pytest.fixture
def registered(registered, tmp_path, monkeypatch):
    """The add-on registered (conftest), with an empty, offline Hugging Face cache: the Animate3D
    weights are certainly missing."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield registered


def test_missing_weights_are_reported_before_rendering(registered, tmp_path):
    _monkey()
    before = _snapshot()
    with pytest.raises(RuntimeError, match="The Animate3D weights are not on this computer"):
        bpy.ops.track4dgen.animate_selected(settings_json=json.dumps({"model": "animate3d"}), timeout=120)
    st = _state()
    assert st.last_error_code == "missing_weights" and st.status == "failed"
    for option in ("Download Weights", "Weights Folder", "Tiny (test)"):
        assert option in st.last_hint
    assert "Traceback" not in st.last_error + st.last_hint
    assert not list((tmp_path / "jobs").glob("*/views")), "nothing was rendered"
    assert _snapshot() == before
    # a weights folder that is not a converted copy is named as such
    with pytest.raises(RuntimeError, match="The Weights Folder is not usable: .*does not exist"):
        bpy.ops.track4dgen.animate_selected(settings_json=json.dumps({"model": "animate3d", "weights": {"path": str(tmp_path / "w")}}))


def test_download_respects_online_access_and_reports_plainly(registered, tmp_path):
    if not bpy.app.online_access:  # headless bpy: online access is off, as an extension must respect
        with pytest.raises(RuntimeError, match="Allow Online Access is off"):
            bpy.ops.track4dgen.download_weights()
        assert "Weights Folder" in _state().last_hint
    # the background download itself: offline here, so the backend answers with a plain error
    job = operators.start_download(backend_config(bpy.context))
    assert job.wait(timeout=120) == runner.FAILED
    assert job.error.code == "offline" and "HF_HUB_OFFLINE" in job.error.message
    assert job.log_path == tmp_path / "jobs" / operators.DOWNLOAD_LOG


def _drive(sess: session.AnimateSession, limit_s: float = 400.0):
    """Call the modal operator's timer handler as the window manager would; record each tick."""
    op = types.SimpleNamespace(_timer=None, reports=[])
    op.report = lambda kind, msg: op.reports.append((kind, msg))
    cls = bpy.types.TRACK4DGEN_OT_animate_selected
    for name in ("_finish", "_stop_timer"):
        setattr(op, name, getattr(cls, name).__get__(op))
    timer = types.SimpleNamespace(type="TIMER")
    ticks = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        res = cls.modal(op, bpy.context, timer)
        st = _state()
        ticks.append((st.label, round(st.fraction, 4), st.eta_s, time.monotonic() - t0))
        if res != {"PASS_THROUGH"}:
            return res, op.reports, ticks
        time.sleep(0.05)
    raise AssertionError("the modal operator never finished")


def test_one_bar_with_plain_stage_names_from_check_to_import(registered):
    obj = _monkey()
    cfg = backend_config(bpy.context)
    # 40 fitting iterations, not TINY's 4: the fit must span several timer ticks for one of them to
    # see its ETA (with 4 a loaded machine could poll only the first event, whose ETA is still 0)
    slower_fit = {**TINY, "stage2": {**TINY["stage2"], "iters_rec": 40}}
    settings = job_io.settings_with_overrides(job_io.JobSettings(prompt="a monkey nodding"), slower_fit)
    t0 = time.monotonic()
    sess = session.AnimateSession.begin(bpy.context, [obj], settings, cfg)
    begin_s = time.monotonic() - t0
    session.ACTIVE = sess
    res, reports, ticks = _drive(sess)
    assert res == {"FINISHED"}, reports
    labels = [t[0] for t in ticks]
    order = ["Checking the backend and weights", "Rendering the four views (1 of 4)", "Generating multi-view video",
             "Fitting 4D Gaussians", "Importing", "Done"]
    seen = [name for name in order if name in labels]
    assert seen == order, labels
    assert not any(l.startswith(("stage1", "stage2", "loss")) for l in labels)
    fractions = [t[1] for t in ticks]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, "one bar that only moves forward"
    assert any(t[2] > 0 for t in ticks if t[0] == "Fitting 4D Gaussians"), "a total ETA while fitting"
    longest = max(t[3] for t in ticks)
    print(f"begin() {begin_s:.2f} s, longest modal tick {longest:.2f} s over {len(ticks)} ticks")
    assert begin_s < 1.0, "starting does not wait for the backend"


def test_open_and_clean_up_job_folders(registered, tmp_path):
    jobs = tmp_path / "jobs"
    old, new, stray = jobs / "old-job", jobs / "new-job", jobs / "not-a-job"
    for d in (old, new, stray):
        d.mkdir(parents=True)
    (old / "job.json").write_text("{}")
    (old / "result").mkdir()
    (old / "result" / "gaussians4d.npz").write_bytes(b"x" * 4096)
    (new / job_io.BLENDER_JSON).write_text("{}")
    (stray / "notes.txt").write_text("mine")
    ten_days = time.time() - 10 * 86400
    os.utime(old, (ten_days, ten_days))
    cfg = backend_config(bpy.context)
    cfg.keep_days = 7
    session.cleanup_old_jobs(cfg)  # the retention preference, applied when a job starts
    assert not old.exists() and new.exists() and stray.exists()
    session.ACTIVE = types.SimpleNamespace(job_dir=new, finished=False)  # a running job is never removed
    assert session.cleanup_jobs(jobs) == (0, 0) and new.exists()
    session.ACTIVE = None
    _state().job_dir = str(new)
    assert bpy.ops.track4dgen.open_job_folder.poll()
    assert bpy.ops.track4dgen.cleanup_jobs() == {"FINISHED"}
    assert not new.exists() and stray.exists(), "only the add-on's job folders are removed"
    assert _state().job_dir == "" and not bpy.ops.track4dgen.open_job_folder.poll()


def test_batch_checks_the_weights_once_before_any_object(tmp_path, backend_python):
    import subprocess
    import sys

    from test_batch import BOX_OBJ, SCRIPT

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for name in ("a", "b", "c"):
        (meshes / f"{name}.obj").write_text(BOX_OBJ)
    env = {k: v for k, v in os.environ.items() if k != "TRACK4DGEN_TOKEN"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, str(SCRIPT), "--input", str(meshes), "--prompt", "a box hopping",
                          "--out", str(tmp_path / "out"), "--python", backend_python],
                         capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert res.returncode == 2, res.stdout + res.stderr
    assert [e.get("error") for e in events] == ["missing_weights"], "one answer for all three objects"
    assert "Download Weights" in events[0]["hint"] or "download" in events[0]["hint"].lower()
    assert not any("object" in e for e in events) and not list((tmp_path / "out" / "jobs").glob("*/views"))


PARENT = '''
import sys, time
sys.path.insert(0, sys.argv[1])
from addon import runner
python, job_dir = sys.argv[2], sys.argv[3]
job = runner.BackendJob(python, job_dir, job_dir + "/result").start()
while not any("stage" in e for e in job.poll()):
    time.sleep(0.1)
print(job.proc.pid, flush=True)
time.sleep(600)
'''


@pytest.mark.skipif(os.name != "posix", reason="kills a process group with POSIX signals")
def test_backend_stops_when_blender_dies(tmp_path, backend_python):
    """The process that started the backend is killed (SIGKILL: no clean-up of its own); the
    backend notices its stdin closing and stops within seconds, leaving no half-written result."""
    import signal
    import subprocess
    import sys

    from track4dgen.synthetic import write_job

    ROOT = Path(__file__).resolve().parents[2]
    job = write_job("hopper", tmp_path / "job", resolution=24, frames=4,
                    stage2_overrides={"iters_rec": 100000, "iters_sds": 0, "num_gaussians": 300, "checkpoint_every": 0})
    (tmp_path / "parent.py").write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(ROOT), backend_python, str(job)],
                              stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    assert line.strip().isdigit(), "the parent saw the backend's first progress line"
    child = int(line)
    os.kill(child, 0)  # the backend is running
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(child, signal.SIGKILL)
        raise AssertionError("the backend kept running after its parent died")
    stopped_s = time.monotonic() - t0
    print(f"backend stopped {stopped_s:.1f} s after its parent was killed")
    assert not (job / "result").exists() and not list(job.glob(".result.tmp-*")), "no half-written result"
    assert "parent process is gone" in (job / runner.LOG_NAME).read_text()


def test_several_selected_meshes_are_animated_as_one(registered, tmp_path):
    monkey = _monkey()
    bpy.ops.mesh.primitive_cube_add(location=(-3.0, 0.0, 0.0))
    cube = bpy.context.active_object
    for o in bpy.context.view_layer.objects:
        o.select_set(o in (monkey, cube))
    bpy.context.view_layer.objects.active = cube
    objs = job_io.selected_sources(bpy.context)
    assert [o.name for o in objs] == [cube.name, monkey.name], "the active mesh first"
    before = _snapshot()
    mesh, center, scale = job_io.normalised_mesh(objs, bpy.context.evaluated_depsgraph_get())
    try:
        assert len(mesh.vertices) == len(monkey.data.vertices) + len(cube.data.vertices)
        assert len(mesh.materials) >= 0 and len(mesh.polygons) == len(monkey.data.polygons) + len(cube.data.polygons)
        world = [np.array(o.matrix_world @ v.co) for o in objs for v in o.data.vertices]
        lo, hi = np.min(world, axis=0), np.max(world, axis=0)
        assert np.allclose(center, 0.5 * (lo + hi), atol=1e-5), "one frame for both meshes"
    finally:
        bpy.data.meshes.remove(mesh)
    assert _snapshot() == before, "joining leaves no temporary objects, meshes or scenes"
    settings = job_io.settings_with_overrides(job_io.JobSettings(prompt="x"), {k: TINY[k] for k in ("resolution", "samples", "engine")})
    info = job_io.prepare_job(bpy.context, objs, tmp_path / "job", settings)
    assert info["source_objects"] == [cube.name, monkey.name] and info["source_object"] == cube.name
    assert _snapshot() == before
    # a camera among the selection is refused with the fix
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    registered.collection.objects.link(cam)
    cam.select_set(True)
    with pytest.raises(job_io.AddonError, match="'Cam' is not a mesh"):
        job_io.selected_sources(bpy.context)
