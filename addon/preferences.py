"""Add-on preferences (backend, quality) and the resolved backend configuration.

Preferences only exist when the add-on is enabled through Blender's add-on system. The batch
script and tests may register the classes directly; :func:`backend_config` then falls back to the
same defaults the preferences would show (detected venv, environment variables), so every code
path resolves the backend the same way.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import backend_setup, runner
from .errors import AddonError

# The add-on's module name as Blender knows it: "bl_ext.<repo>.track4dgen" when installed as an
# extension, "<name>" for a legacy add-on folder; preferences are looked up by it.
ADDON_ID = __package__.rpartition(".")[0] or __package__

# Honest times (benchmarks/RESULTS.md, "First run from Blender"): only Preview was measured end to
# end, on a shared 2-core CPU with the tiny model; no GPU times were measured.
PRESET_TIMES = {
    "preview": "CPU: about 3 min measured (2-core, tiny model); GPU: not measured",
    "standard": "CPU: not measured, far longer than Preview; GPU: not measured",
    "paper": "Needs a GPU; GPU time not measured",
}
PRESET_ITEMS = [
    ("preview", "Preview", f"64 px, 10 Stage One steps + 150 + 30 Stage Two iterations (8 images each), 5000 Gaussians: a quick look. {PRESET_TIMES['preview']}"),
    ("standard", "Standard", f"256 px, 400 + 100 Stage Two iterations, 20000 Gaussians. {PRESET_TIMES['standard']}"),
    ("paper", "Paper", f"256 px, 750 + 250 iterations (the paper's schedule). {PRESET_TIMES['paper']}"),
]
MODEL_ITEMS = [
    ("animate3d", "Animate3D", "The released Animate3D MV-VDM weights (needs downloaded weights)"),
    ("tiny", "Tiny (test)", "A few-channel test model: no weights, runs on a CPU, meaningless motion"),
]
ENGINE_ITEMS = [
    ("AUTO", "Auto", "EEVEE when Blender has a GPU, otherwise Cycles on the CPU"),
    ("CYCLES", "Cycles (CPU)", "Works everywhere, also headless"),
    ("BLENDER_EEVEE", "EEVEE", "Fast, needs a GPU"),
]


def _addon_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_setup_env() -> Path:
    """Where *Set Up Backend* puts the environment unless the user chooses a folder."""
    try:  # an installed extension: its per-user folder survives add-on updates
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="backend-env", create=False))
    except (ValueError, AttributeError, TypeError):
        return Path.home() / ".track4dgen" / "backend-env"


def default_setup_source() -> str:
    """A default *Backend Source* when the add-on runs from a checkout (development installs): the
    wheel in its dist/, else the checkout itself; otherwise nothing and the user picks the wheel."""
    root = _addon_root()
    wheels = sorted((root / "dist").glob("track4dgen-*.whl"))
    if wheels:
        return str(wheels[-1])
    if (root / "pyproject.toml").is_file() and (root / "backend" / "track4dgen").is_dir():
        return str(root)
    return ""


class TRACK4DGEN_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_mode: EnumProperty(
        name="Backend",
        items=[("LOCAL", "Local", "Run the backend on this machine as a subprocess"),
               ("REMOTE", "Remote", "Send jobs to a `track4dgen serve` machine")],
        default="LOCAL",
    )
    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Python interpreter with the track4dgen backend installed (empty: detect the project's .venv)",
    )
    setup_env_dir: StringProperty(
        name="Environment Folder", subtype="DIR_PATH", default="",
        description="Where Set Up Backend creates the backend's Python environment (empty: the add-on's user folder)",
    )
    setup_source: StringProperty(
        name="Backend Source", subtype="FILE_PATH", default="",
        description="The backend wheel (dist/track4dgen-*.whl, built with `python -m pip wheel --no-deps -w dist .`) "
                    "or a Track4DGen checkout folder",
    )
    setup_base_python: StringProperty(
        name="Base Python", subtype="FILE_PATH", default="",
        description="Python 3.10+ that creates the environment (empty: Blender's own Python)",
    )
    remote_url: StringProperty(name="Server URL", default="http://127.0.0.1:8765",
                               description="Address of a `track4dgen serve` machine")
    remote_token: StringProperty(name="Token", subtype="PASSWORD", default="",
                                 description="Bearer token for the server (stored in the preferences, never printed)")
    weights_dir: StringProperty(name="Weights Folder", subtype="DIR_PATH", default="",
                                description="Folder with pretrained weights (empty: the backend's standard cache)")
    jobs_dir: StringProperty(name="Jobs Folder", subtype="DIR_PATH", default="",
                             description="Where job and result folders are written (empty: the add-on's user folder)")
    preset: EnumProperty(name="Quality", items=PRESET_ITEMS, default="standard")
    model: EnumProperty(name="Model", items=MODEL_ITEMS, default="animate3d")
    engine: EnumProperty(name="Render Engine", items=ENGINE_ITEMS, default="AUTO",
                         description="Engine for the four conditioning renders")
    keep_jobs: BoolProperty(name="Keep Job Folders", default=True,
                            description="Keep finished job folders (failed ones are always kept for inspection)")
    keep_days: IntProperty(name="Keep Jobs (days)", default=14, min=0, soft_max=365,
                           description="When a job starts, remove job folders older than this many days (0: keep all)")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "backend_mode", expand=True)
        if self.backend_mode == "LOCAL":
            row = layout.row(align=True)
            row.prop(self, "python_path")
            row.operator("track4dgen.check_backend", text="", icon="CHECKMARK")
            if not self.python_path:
                detected = runner.detect_backend_python(_addon_root(), self.setup_env_dir or default_setup_env())
                layout.label(text=f"Detected: {detected or 'none found: press Set Up Backend below'}", icon="INFO")
            draw_setup(layout, self)
        else:
            layout.prop(self, "remote_url")
            layout.prop(self, "remote_token")
            if not bpy.app.online_access:
                layout.label(text="Blender's 'Allow Online Access' is off: remote jobs are blocked", icon="ERROR")
        layout.prop(self, "weights_dir")
        layout.prop(self, "jobs_dir")
        row = layout.row()
        row.prop(self, "preset")
        row.prop(self, "model")
        layout.prop(self, "engine")
        row = layout.row()
        row.prop(self, "keep_jobs")
        row.prop(self, "keep_days")
        row = layout.row(align=True)
        row.operator("track4dgen.open_jobs_folder", icon="FILE_FOLDER")
        row.operator("track4dgen.cleanup_jobs", icon="TRASH")


def get_preferences(context: bpy.types.Context | None = None):
    """The AddonPreferences, or None when the add-on was registered without the add-on system."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


@dataclass
class BackendConfig:
    """Where and how jobs run; ``token`` is never included in repr or logs."""

    mode: str = "LOCAL"
    python: str = ""
    url: str = ""
    token: str = ""
    weights_dir: str = ""
    jobs_dir: str = ""
    preset: str = "standard"
    model: str = "animate3d"
    engine: str = "AUTO"
    keep_jobs: bool = True
    keep_days: int = 0  # 0: keep all (scripts); the preference defaults to 14

    def __repr__(self) -> str:
        return (f"BackendConfig(mode={self.mode!r}, python={self.python!r}, url={self.url!r}, "
                f"token={'***' if self.token else ''!r}, preset={self.preset!r}, model={self.model!r})")

    __str__ = __repr__

    def env(self) -> dict[str, str]:
        """Environment for a local backend process."""
        return dict(os.environ)


def default_jobs_dir() -> Path:
    try:  # Blender 4.2+ extensions get a per-user writable folder
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="jobs", create=True))
    except (ValueError, AttributeError, TypeError):
        return Path(tempfile.gettempdir()) / "track4dgen" / "jobs"


def backend_config(context: bpy.types.Context | None = None) -> BackendConfig:
    prefs = get_preferences(context)
    if prefs is None:
        cfg = BackendConfig(
            mode=os.environ.get("TRACK4DGEN_MODE", "LOCAL").upper(),
            url=os.environ.get("TRACK4DGEN_URL", ""),
            token=os.environ.get("TRACK4DGEN_TOKEN", ""),
        )
    else:
        cfg = BackendConfig(
            mode=prefs.backend_mode, python=bpy.path.abspath(prefs.python_path) if prefs.python_path else "",
            url=prefs.remote_url, token=prefs.remote_token, weights_dir=prefs.weights_dir,
            jobs_dir=bpy.path.abspath(prefs.jobs_dir) if prefs.jobs_dir else "",
            preset=prefs.preset, model=prefs.model, engine=prefs.engine, keep_jobs=prefs.keep_jobs,
            keep_days=prefs.keep_days,
        )
    if not cfg.python:
        env_dir = bpy.path.abspath(prefs.setup_env_dir) if prefs is not None and prefs.setup_env_dir else default_setup_env()
        cfg.python = runner.detect_backend_python(_addon_root(), env_dir)
    if not cfg.jobs_dir:
        cfg.jobs_dir = os.environ.get("TRACK4DGEN_JOBS_DIR") or str(default_jobs_dir())
    return cfg


class TRACK4DGEN_OT_check_backend(bpy.types.Operator):
    """Check that the backend Python can import track4dgen (or that the server answers)"""

    bl_idname = "track4dgen.check_backend"
    bl_label = "Check Backend"
    bl_options = {"INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        cfg = backend_config(context)
        if cfg.mode == "REMOTE":
            try:
                from .client import RemoteClient

                RemoteClient(cfg.url, cfg.token)
            except Exception as exc:
                self.report({"ERROR"}, f"Remote client unavailable: {exc}")
                return {"CANCELLED"}
            self.report({"INFO"}, f"Remote backend set to {cfg.url}")
            return {"FINISHED"}
        ok, detail = runner.python_can_import_backend(cfg.python)
        if ok:
            self.report({"INFO"}, f"Backend OK: track4dgen {detail} ({cfg.python})")
            return {"FINISHED"}
        self.report({"ERROR"}, f"Backend not usable: {detail}")
        return {"CANCELLED"}


def remote_client(cfg: BackendConfig):
    """The server engineer's RemoteClient; a clear error when remote mode cannot work."""
    if not cfg.url:
        raise AddonError("remote mode needs a server URL", "Set 'Server URL' in Preferences › Add-ons › Track4DGen.", "remote_config")
    host = urllib.parse.urlparse(cfg.url).hostname or ""
    if not bpy.app.online_access and host not in ("127.0.0.1", "localhost", "::1"):
        raise AddonError("Blender's online access is disabled", "Enable Preferences › System › Network › Allow Online Access.",
                         "remote_config")
    try:
        from .client import RemoteClient
    except ImportError as exc:
        raise AddonError(f"the remote client is not available: {exc}", "Use the local backend or update the add-on.",
                         "remote_config") from exc
    return RemoteClient(cfg.url, cfg.token)


# ---------------------------------------------------------------------------------------------
# Set Up Backend: a background process creates the environment (see backend_setup.py)

SETUP_LOG = "setup.log"
SETUP: runner.ToolJob | None = None  # the running (or last) set-up, shown in the preferences
SETUP_REPORT = ""  # its outcome in one line


def setup_running() -> bool:
    return SETUP is not None and not SETUP.finished


def draw_setup(layout: bpy.types.UILayout, prefs) -> None:
    box = layout.box()
    box.label(text="Set Up Backend: create the backend's Python environment here", icon="CONSOLE")
    box.prop(prefs, "setup_source")
    box.prop(prefs, "setup_env_dir")
    box.prop(prefs, "setup_base_python")
    if setup_running():
        p = SETUP.progress
        box.progress(factor=p.fraction, type="BAR", text=f"Setting up the backend: step {p.step + 1} of {p.total}"
                     if p.total else "Setting up the backend")
        if p.message:
            box.label(text=p.message[:90])
        box.operator("track4dgen.cancel_setup", icon="CANCEL")
    else:
        box.operator("track4dgen.setup_backend", icon="IMPORT")
        if SETUP_REPORT:
            box.label(text=SETUP_REPORT[:120], icon="ERROR" if SETUP is not None and SETUP.status == runner.FAILED else "INFO")
    if SETUP is not None:
        op = box.operator("wm.path_open", text="Open Set-up Log", icon="TEXT")
        op.filepath = str(SETUP.log_path)


class TRACK4DGEN_OT_setup_backend(bpy.types.Operator):
    """Create a Python environment with PyTorch and the Track4DGen backend (in the background, minutes; needs network)"""

    bl_idname = "track4dgen.setup_backend"
    bl_label = "Set Up Backend"
    bl_options = {"INTERNAL"}

    env_dir: StringProperty(name="Environment Folder", default="", options={"SKIP_SAVE"},
                            description="Empty: the preference (or the add-on's user folder)")
    source: StringProperty(name="Backend Source", default="", options={"SKIP_SAVE"},
                           description="Empty: the preference (or this checkout)")
    base_python: StringProperty(name="Base Python", default="", options={"SKIP_SAVE"},
                                description="Empty: the preference (or Blender's own Python)")
    torch_index: StringProperty(name="PyTorch Index", default="auto", options={"SKIP_SAVE"},
                                description="auto: CPU wheels on machines without an NVIDIA GPU; default: pip's index; or a URL")
    no_deps: BoolProperty(name="No Dependencies", default=False, options={"SKIP_SAVE"},
                          description="Install only the backend itself (offline tests; PyTorch must come from elsewhere)")
    system_site_packages: BoolProperty(name="Use Base Packages", default=False, options={"SKIP_SAVE"},
                                       description="Let the environment see the base Python's packages")
    timeout: bpy.props.FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE", "HIDDEN"},
                                     description="Blocking runs only: cancel after this many seconds (0 = no limit)")

    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not setup_running()

    def _start(self, context: bpy.types.Context) -> runner.ToolJob | None:
        global SETUP, SETUP_REPORT
        prefs = get_preferences(context)
        env_dir = self.env_dir or (prefs.setup_env_dir if prefs else "") or str(default_setup_env())
        source = self.source or (prefs.setup_source if prefs else "") or default_setup_source()
        base = self.base_python or (prefs.setup_base_python if prefs else "") or sys.executable
        env_dir, source, base = (bpy.path.abspath(v) for v in (env_dir, source, base))
        cmd = [base, str(Path(backend_setup.__file__)), "--env", env_dir, "--source", source,
               "--torch-index", self.torch_index or "auto", "--base-python", base]
        cmd += ["--no-deps"] if self.no_deps else []
        cmd += ["--system-site-packages"] if self.system_site_packages else []
        try:
            SETUP = runner.ToolJob(cmd, env_dir, SETUP_LOG).start()
        except AddonError as err:
            SETUP_REPORT = str(err)
            self.report({"ERROR"}, SETUP_REPORT)
            return None
        SETUP_REPORT = ""
        return SETUP

    def _finish(self, context: bpy.types.Context, job: runner.ToolJob) -> set[str]:
        global SETUP_REPORT
        if job.status == runner.DONE:
            python = str((job.last_event or {}).get("python", backend_setup.env_python(job.job_dir)))
            prefs = get_preferences(context)
            if prefs is not None:
                prefs.python_path = python
            SETUP_REPORT = f"Backend ready: {python}"
            self.report({"INFO"}, SETUP_REPORT)
            return {"FINISHED"}
        if job.status == runner.CANCELLED:
            SETUP_REPORT = "Set-up cancelled; press Set Up Backend again to finish it"
            self.report({"WARNING"}, SETUP_REPORT)
            return {"CANCELLED"}
        err = job.error
        SETUP_REPORT = f"Set-up failed: {err.message if err else 'unknown error'}. {err.hint if err else ''}".strip()
        self.report({"ERROR"}, f"{SETUP_REPORT} Log: {job.log_path}")
        return {"CANCELLED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        try:
            job.wait(timeout=self.timeout or None)
        except AddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return self._finish(context, job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        if self._start(context) is None:
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        job = SETUP
        if job is not None:
            job.poll()
        _redraw_preferences(context)
        if job is not None and not job.finished:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context, job) if job is not None else {"CANCELLED"}


class TRACK4DGEN_OT_cancel_setup(bpy.types.Operator):
    """Stop the running backend set-up (it can be started again later)"""

    bl_idname = "track4dgen.cancel_setup"
    bl_label = "Cancel Set-up"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return setup_running()

    def execute(self, context: bpy.types.Context) -> set[str]:
        if SETUP is not None:
            SETUP.cancel()
        return {"FINISHED"}


def _redraw_preferences(context: bpy.types.Context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def cancel_setup_on_exit() -> None:
    """Unregistering (or quitting) must not leave pip running in the background."""
    if setup_running():
        SETUP.cancel()


classes = (TRACK4DGEN_AP_preferences, TRACK4DGEN_OT_check_backend, TRACK4DGEN_OT_setup_backend,
           TRACK4DGEN_OT_cancel_setup)
