"""Track4DGen Blender add-on: animate a mesh from a text prompt with the Track4DGen backend.

The add-on imports bpy (and numpy) only; the heavy backend runs as a separate Python process
(local) or on a server (remote). ``register``/``unregister`` are re-exported by the extension's
root ``__init__.py``.
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import operators, panel, preferences, session

_CLASSES = (*preferences.classes, *operators.classes, *panel.classes)


@persistent
def _cancel_on_load(_dummy=None) -> None:
    """Loading another file would orphan a running backend: stop it first."""
    if session.ACTIVE is not None and not session.ACTIVE.finished:
        session.ACTIVE.cancel()
    session.ACTIVE = None


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.track4dgen = bpy.props.PointerProperty(type=operators.Track4DGenSettings)
    bpy.types.WindowManager.track4dgen_run = bpy.props.PointerProperty(type=operators.Track4DGenRunState)
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)
    bpy.app.handlers.load_pre.append(_cancel_on_load)


def unregister() -> None:
    _cancel_on_load()
    preferences.cancel_setup_on_exit()
    if session.download_running():
        session.DOWNLOAD.cancel()
    if _cancel_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_cancel_on_load)
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    del bpy.types.WindowManager.track4dgen_run
    del bpy.types.Scene.track4dgen
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
