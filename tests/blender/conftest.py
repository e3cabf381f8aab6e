"""Fixtures for the Blender tests: real bpy (5.0.1, headless), a fresh empty file per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import bpy
except ImportError:  # no bpy wheel for this Python (it needs 3.11): skip the Blender tests
    bpy = None
    collect_ignore = ["test_batch.py", "test_cameras.py", "test_import_result.py", "test_job_io.py",
                      "test_manifest.py", "test_operator.py", "test_panel.py", "test_runner.py"]

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def fresh_scene():
    """An empty factory-settings file, so tests never see each other's objects."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene


@pytest.fixture
def backend_python(tmp_path_factory) -> str:
    """The interpreter that has the backend installed (the project's venv, or this one), wrapped
    so that it runs this checkout's backend: the venv's editable install may point at another
    checkout, and the add-on drops PYTHONPATH for the backend process."""
    base = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    wrapper = tmp_path_factory.mktemp("python") / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT / "backend"}" exec "{base}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)

