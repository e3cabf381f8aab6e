"""The N-panel and preferences draw what the user needs in each state.

Blender cannot create a UILayout without a window, so draw() is given a recorder with the same
methods; it records labels, operators and the progress bar the real layout would show.
"""

from __future__ import annotations

import types

import bpy
import pytest

import addon
from addon import panel, preferences, runner, session


class Recorder:
    """Duck-typed bpy.types.UILayout: keeps what was drawn."""

    def __init__(self, log=None):
        self.log = [] if log is None else log
        self.enabled = True
        self.alert = False

    def _child(self, *a, **k):
        return Recorder(self.log)

    row = column = box = split = _child

    def prop(self, data, name, **kw):
        assert hasattr(data, name), f"{data} has no property {name!r}"
        self.log.append(("prop", name))

    def label(self, text="", icon="NONE", **kw):
        self.log.append(("label", text))

    def operator(self, idname, text="", icon="NONE", **kw):
        cat, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, cat), name), idname
        self.log.append(("operator", idname))
        return types.SimpleNamespace()  # operator properties are set on what this returns

    def progress(self, factor=0.0, type="BAR", text=""):
        self.log.append(("progress", round(factor, 3), text))


@pytest.fixture
def registered(fresh_scene):
    addon.register()
    yield fresh_scene
    session.ACTIVE = None
    addon.unregister()


def _draw(context) -> list:
    rec = Recorder()
    fake = types.SimpleNamespace(layout=rec)
    panel.VIEW3D_PT_track4dgen.draw(fake, context)
    return rec.log


class _RunningJob:
    finished = False
    status = runner.RUNNING


def test_idle_panel_offers_inputs_and_button(registered):
    log = _draw(bpy.context)
    props = {e[1] for e in log if e[0] == "prop"}
    assert {"prompt", "seed", "frames", "preset", "use_frame_range"} <= props
    assert ("operator", "track4dgen.animate_selected") in log
    assert ("label", "Select one mesh object") in log
    assert ("label", preferences.PRESET_TIMES["standard"]) in log, "the preset's honest time is shown"
    assert not any(e[0] == "progress" for e in log)


def test_running_panel_shows_progress_eta_and_cancel(registered):
    st = bpy.context.window_manager.track4dgen_run
    st.stage, st.step, st.total, st.fraction, st.eta_s, st.message = "stage2", 30, 120, 0.25, 95.0, "loss 0.12"
    st.label = "Fitting 4D Gaussians"
    session.ACTIVE = types.SimpleNamespace(finished=False)
    log = _draw(bpy.context)
    assert ("progress", 0.25, "Fitting 4D Gaussians  1:35 left") in log, "one bar: plain stage name, whole-job ETA"
    assert not any("loss" in str(e) or "stage2" in str(e) for e in log), "no internal stage names or losses"
    assert ("operator", "track4dgen.cancel") in log
    assert ("operator", "track4dgen.animate_selected") not in log


def test_error_is_shown_with_its_hint(registered):
    st = bpy.context.window_manager.track4dgen_run
    st.last_error, st.last_hint = "the backend exited with code 1", "See /tmp/job/backend.log."
    st.status, st.job_dir = "failed", "/tmp/job"
    log = _draw(bpy.context)
    labels = " ".join(e[1] for e in log if e[0] == "label")
    assert "the backend exited with code 1" in labels and "backend.log" in labels
    assert ("operator", "track4dgen.open_job_folder") in log, "a failed job's folder can be opened"
    assert ("operator", "track4dgen.download_weights") not in log


def test_missing_weights_offer_the_download(registered):
    st = bpy.context.window_manager.track4dgen_run
    st.last_error = "The Animate3D weights are not on this computer."
    st.last_hint = "Press Download Weights (several GB), set Weights Folder to a converted copy, or choose the Tiny (test) model in the preferences."
    st.last_error_code = "missing_weights"
    log = _draw(bpy.context)
    assert ("operator", "track4dgen.download_weights") in log
    assert not any("Traceback" in str(e) for e in log)
    st.last_error_code = "backend_missing"
    assert ("operator", "screen.userpref_show") in _draw(bpy.context), "the way to Set Up Backend"


def test_library_errors_become_one_plain_line():
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nRuntimeError: out of memory"
    assert session.plain_message(tb) == "RuntimeError: out of memory"
    assert session.plain_message("CUDA error: device-side assert\nCompile with TORCH_USE_CUDA_DSA") == "CUDA error: device-side assert"
    assert len(session.plain_message("x" * 500)) == 200


def test_preferences_draw_both_modes(registered):
    prefs = types.SimpleNamespace()
    for name in preferences.TRACK4DGEN_AP_preferences.__annotations__:
        setattr(prefs, name, "")
    prefs.backend_mode, prefs.python_path = "LOCAL", ""
    rec = Recorder()
    preferences.TRACK4DGEN_AP_preferences.draw(types.SimpleNamespace(layout=rec, **vars(prefs)), bpy.context)
    assert any(e[0] == "label" and e[1].startswith("Detected: ") for e in rec.log)
    assert ("operator", "track4dgen.check_backend") in rec.log
    prefs.backend_mode = "REMOTE"
    rec = Recorder()
    preferences.TRACK4DGEN_AP_preferences.draw(types.SimpleNamespace(layout=rec, **vars(prefs)), bpy.context)
    names = {e[1] for e in rec.log if e[0] == "prop"}
    assert {"remote_url", "remote_token"} <= names and "python_path" not in names


def test_token_never_in_repr():
    cfg = preferences.BackendConfig(mode="REMOTE", url="http://x", token="s3cret-token")
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg)


def test_panel_inputs_become_job_settings(registered):
    from addon.operators import settings_from_scene

    scene = registered
    s = scene.track4dgen
    s.prompt, s.seed, s.frames, s.preset = "a fox jumping", 5, 8, "preview"
    scene.frame_start = 11
    cfg = preferences.BackendConfig(preset="paper", model="tiny", weights_dir="/w")
    js = settings_from_scene(scene, cfg).resolved()
    assert (js.prompt, js.seed, js.frames, js.preset, js.model) == ("a fox jumping", 5, 8, "preview", "tiny")
    assert (js.frame_start, js.frame_end) == (11, 18), "one scene frame per result frame from the scene start"
    assert js.weights == {"path": "/w"} and js.resolution == 64
    s.preset, s.use_frame_range, s.frame_start, s.frame_end = "DEFAULT", True, 20, 60
    js = settings_from_scene(scene, cfg).resolved()
    assert js.preset == "paper" and (js.frame_start, js.frame_end) == (20, 60)
