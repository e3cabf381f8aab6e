"""Set Up Backend: the preferences' operator creates a working backend environment, and every hint
the add-on gives about the backend matches the README.

To keep CI offline and fast the operator installs a wheel built here from this checkout with
``no_deps=True`` (pip's ``--no-deps``): the new environment then imports ``track4dgen`` but has no
PyTorch. The full install (PyTorch + dependencies) is the same code path without that flag; the
README records a measured run of it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")  # noqa: E402  (the Blender tests need the bpy module)

import addon  # noqa: E402
from addon import backend_setup, preferences, runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backend_wheel(tmp_path_factory) -> Path:
    """The wheel `python -m pip wheel --no-deps -w dist .` builds, made from a copy of the checkout
    (so the build leaves nothing in the worktree) without build isolation (offline)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "backend", src / "backend", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = (tmp / "dist").glob("track4dgen-*.whl")
    return wheel


@pytest.fixture
def registered(fresh_scene):
    addon.register()
    yield fresh_scene
    addon.unregister()
    preferences.SETUP, preferences.SETUP_REPORT = None, ""


def test_setup_operator_creates_a_backend_environment(registered, backend_wheel, tmp_path):
    env = tmp_path / "backend env"  # a space in the path, as in many user folders
    assert bpy.ops.track4dgen.setup_backend(env_dir=str(env), source=str(backend_wheel), no_deps=True,
                                            timeout=300) == {"FINISHED"}
    python = backend_setup.env_python(env)
    assert python.is_file()
    ok, version = runner.python_can_import_backend(str(python))
    assert ok and version == "0.1.0", version
    job = preferences.SETUP
    assert job.status == runner.DONE and job.last_event["python"] == str(python)
    stages = [e for e in job.events if "stage" in e]
    assert [e["step"] for e in stages] == sorted(e["step"] for e in stages), "progress only moves forward"
    assert stages[-1]["step"] == stages[-1]["total"] == 3
    log = (env / preferences.SETUP_LOG).read_text()
    assert "Successfully installed track4dgen-0.1.0" in log, "pip's output is kept in the set-up log"
    assert preferences.SETUP_REPORT == f"Backend ready: {python}"
    # the new environment is what the add-on now finds without any preference set
    assert runner.detect_backend_python(tmp_path / "nowhere", env) == str(python)


def test_setup_refuses_a_wrong_source_with_the_fix(registered, tmp_path):
    bogus = tmp_path / "not_a_wheel.zip"
    bogus.write_bytes(b"PK")
    with pytest.raises(RuntimeError, match="neither a track4dgen wheel nor a Track4DGen checkout"):
        bpy.ops.track4dgen.setup_backend(env_dir=str(tmp_path / "env"), source=str(bogus), no_deps=True, timeout=120)
    assert "pip wheel --no-deps -w dist ." in preferences.SETUP_REPORT
    assert not backend_setup.env_python(tmp_path / "env").exists(), "nothing is created for a bad source"


def test_torch_index_choice():
    assert backend_setup.torch_index("default", gpu=False) == ""
    assert backend_setup.torch_index("https://example/whl", gpu=True) == "https://example/whl"
    assert backend_setup.torch_index("auto", gpu=True) == ""
    if sys.platform != "darwin":
        assert backend_setup.torch_index("auto", gpu=False) == backend_setup.CPU_TORCH_INDEX


def _in_blender_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## In Blender")
    return text[start:text.index("\n## ", start + 1)]


def _ui_names() -> set[str]:
    """Every label an artist can see for a preference, scene setting or operator."""
    names = set()
    for cls in (*preferences.classes, *addon.operators.classes, *addon.panel.classes):
        names.add(getattr(cls, "bl_label", ""))
        for prop in cls.bl_rna.properties:  # the registered RNA: labels exactly as drawn
            names.add(prop.name)
            if prop.type == "ENUM":
                names.update(item.name for item in prop.enum_items)
    return names - {""}


def test_backend_hints_match_the_readme(registered):
    section = _in_blender_section()
    assert "pip install track4dgen" not in section
    for path in (ROOT / "addon").glob("*.py"):
        assert "pip install track4dgen" not in path.read_text(), f"{path.name} points at a package the README never mentions"
    # the hint for a missing backend names UI elements the README walks through
    for name in ("Set Up Backend", "Backend Python"):
        assert name in runner.SETUP_HINT and name in section
    # the wheel command the set-up error suggests is the one the README gives
    assert "python -m pip wheel --no-deps -w dist ." in section
    # Blender's build command fails when --output-dir does not exist: the README creates it first
    assert section.index("mkdir -p dist") < section.index("extension build --source-dir . --output-dir dist")
    # every UI name the README puts in italics or bold exists in the add-on
    shown = _ui_names()
    for name in re.findall(r"\*\*?([A-Z][A-Za-z ]+?)\*\*?", section):
        assert name in shown, f"README names {name!r}, which the add-on does not show"
