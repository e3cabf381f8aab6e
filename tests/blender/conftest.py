"""Fixtures for the Blender tests: real bpy (5.0.1, headless), a fresh empty file per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import bpy
except ImportError:  # no bpy wheel for this Python (it needs 3.11): skip the Blender tests
    bpy = None
    collect_ignore = ["test_batch.py", "test_blender_versions.py", "test_cameras.py", "test_import_result.py", "test_job_io.py",
                      "test_manifest.py", "test_operator.py", "test_panel.py", "test_placement.py", "test_runner.py",
                      "test_splat_render.py", "splat_compare.py"]

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def fresh_scene():
    """An empty factory-settings file, so tests never see each other's objects."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene


@pytest.fixture(scope="session")
def _backend_interpreter(tmp_path_factory) -> str:
    """The project's venv (or this) interpreter, wrapped so the backend it runs is this checkout's
    ``backend/`` even where the venv's editable install points at another copy (the add-on strips
    PYTHONPATH from the backend's environment, so setting it here would not reach the backend)."""
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    if sys.platform == "win32":
        return python
    wrapper = tmp_path_factory.mktemp("backend-python") / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT / "backend"}" exec "{python}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture
def backend_python(_backend_interpreter) -> str:
    """The interpreter that has the backend installed (the project's venv, or this one)."""
    return _backend_interpreter


@pytest.fixture
def registered(fresh_scene, tmp_path, monkeypatch, backend_python):
    """The add-on registered against this checkout's backend, jobs in ``tmp_path``; any job or
    download still running is cancelled afterwards."""
    import addon
    from addon import session

    monkeypatch.setenv("TRACK4DGEN_PYTHON", backend_python)
    monkeypatch.setenv("TRACK4DGEN_JOBS_DIR", str(tmp_path / "jobs"))
    addon.register()
    fresh_scene.track4dgen.prompt = "a monkey nodding its head"
    yield fresh_scene
    if session.ACTIVE is not None:
        session.ACTIVE.cancel()
        session.ACTIVE = None
    session.DOWNLOAD = None
    addon.unregister()
