"""Extension packaging: Blender's own extension tool builds and validates the manifest, the zip
holds the add-on only, and the installed extension enables/disables cleanly (twice)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import bpy
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The script behind `blender --command extension build|validate`, shipped inside bpy.
BLENDER_EXT = Path(bpy.__file__).resolve().parents[2] / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def _ext(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BLENDER_EXT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ext")
    res = _ext("build", "--source-dir", str(ROOT), "--output-dir", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    zips = list(out.glob("*.zip"))
    assert len(zips) == 1
    return zips[0]


def test_manifest_fields():
    m = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert m["schema_version"] == "1.0.0" and m["id"] == "track4dgen" and m["type"] == "add-on"
    assert m["blender_version_min"] == "4.2.0"
    assert set(m["permissions"]) == {"files", "network"}
    for text in [m["tagline"], *m["permissions"].values()]:
        assert len(text) <= 64 and text[-1] not in ".!?,;:"
    assert m["license"] and all(lic.startswith("SPDX:") for lic in m["license"])


def test_build_and_validate_with_blenders_tool(built_zip):
    assert BLENDER_EXT.is_file()
    res = _ext("validate", str(built_zip))
    assert res.returncode == 0, res.stdout + res.stderr
    names = set(zipfile.ZipFile(built_zip).namelist())
    assert {"blender_manifest.toml", "__init__.py", "addon/__init__.py", "addon/import_result.py"} <= names
    for py in (ROOT / "addon").glob("*.py"):  # nothing of the add-on is forgotten
        assert f"addon/{py.name}" in names, f"add addon/{py.name} to [build] paths in blender_manifest.toml"
    assert not any(n.startswith(("backend/", "tests/", "training/", ".venv/")) or "__pycache__" in n for n in names)


def test_validator_rejects_a_bad_manifest(tmp_path):
    """The check above can fail: Blender's tool refuses a tagline ending in a period."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "__init__.py", src / "__init__.py")
    text = (ROOT / "blender_manifest.toml").read_text()
    text = text.replace('tagline = "', 'tagline = "Bad.', 1).replace('"\nmaintainer', '."\nmaintainer', 1)
    text = text[: text.index("[build]")]
    (src / "blender_manifest.toml").write_text(text)
    res = _ext("build", "--source-dir", str(src), "--output-dir", str(tmp_path))
    assert res.returncode != 0 and "tagline" in (res.stdout + res.stderr)


def test_installed_extension_enables_and_disables_twice(built_zip, tmp_path):
    """Install the zip like a user would (isolated user folder) and toggle it twice."""
    code = textwrap.dedent(f"""
        import bpy, addon_utils
        assert bpy.ops.extensions.package_install_files(filepath={str(built_zip)!r}, repo="user_default",
                                                         enable_on_install=True) == {{"FINISHED"}}
        mod = "bl_ext.user_default.track4dgen"
        def present():
            return (hasattr(bpy.types, "VIEW3D_PT_track4dgen"), hasattr(bpy.types.Scene, "track4dgen"),
                    hasattr(bpy.types.WindowManager, "track4dgen_run"), mod in bpy.context.preferences.addons)
        assert present() == (True, True, True, True), present()
        prefs = bpy.context.preferences.addons[mod].preferences
        assert prefs.backend_mode == "LOCAL" and prefs.preset == "standard"
        assert prefs.bl_rna.properties["remote_token"].subtype == "PASSWORD"
        for _ in range(2):
            addon_utils.disable(mod, default_set=True)
            assert present() == (False, False, False, False), present()
            addon_utils.enable(mod, default_set=True)
            assert present() == (True, True, True, True), present()
            assert bpy.ops.track4dgen.animate_selected.poll() is True
        print("TOGGLE_OK")
    """)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert "TOGGLE_OK" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr


def test_register_unregister_in_process_twice(fresh_scene):
    import addon

    for _ in range(2):
        addon.register()
        assert hasattr(bpy.types.Scene, "track4dgen") and hasattr(bpy.types, "VIEW3D_PT_track4dgen")
        assert fresh_scene.track4dgen.frames == 16
        assert hasattr(bpy.types, "TRACK4DGEN_OT_animate_selected")
        assert addon.operators.menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
        addon.unregister()
        assert not hasattr(bpy.types.Scene, "track4dgen") and not hasattr(bpy.types, "VIEW3D_PT_track4dgen")
        for cls in ("TRACK4DGEN_OT_animate_selected", "TRACK4DGEN_OT_cancel", "TRACK4DGEN_OT_import_result"):
            assert not hasattr(bpy.types, cls)


def test_addon_never_imports_the_backend():
    """The add-on runs in Blender's Python: bpy, numpy and the standard library only."""
    import ast

    allowed_third_party = {"bpy", "bpy_extras", "mathutils", "numpy", "gpu", "addon_utils"}
    stdlib = set(sys.stdlib_module_names)
    for py in sorted((ROOT / "addon").glob("*.py")):
        tree = ast.parse(py.read_text(), filename=str(py))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top in allowed_third_party, f"{py.name} imports {name}"
