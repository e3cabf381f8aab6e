"""Add-on preferences (backend, quality) and the resolved backend configuration.

Preferences only exist when the add-on is enabled through Blender's add-on system. The batch
script and tests may register the classes directly; :func:`backend_config` then falls back to the
same defaults the preferences would show (detected venv, environment variables), so every code
path resolves the backend the same way.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import runner
from .errors import AddonError

# The add-on's module name as Blender knows it: "bl_ext.<repo>.track4dgen" when installed as an
# extension, "<name>" for a legacy add-on folder; preferences are looked up by it.
ADDON_ID = __package__.rpartition(".")[0] or __package__

PRESET_ITEMS = [
    ("preview", "Preview", "64 px, few iterations: a quick look, minutes on a CPU"),
    ("standard", "Standard", "256 px, 400 + 100 Stage Two iterations"),
    ("paper", "Paper", "256 px, 750 + 250 iterations (the paper's schedule; needs a GPU)"),
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

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "backend_mode", expand=True)
        if self.backend_mode == "LOCAL":
            row = layout.row(align=True)
            row.prop(self, "python_path")
            row.operator("track4dgen.check_backend", text="", icon="CHECKMARK")
            if not self.python_path:
                detected = runner.detect_backend_python(_addon_root())
                layout.label(text=f"Detected: {detected or 'none found'}", icon="INFO")
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
        layout.prop(self, "keep_jobs")


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
        )
    if not cfg.python:
        cfg.python = runner.detect_backend_python(_addon_root())
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


classes = (TRACK4DGEN_AP_preferences, TRACK4DGEN_OT_check_backend)
