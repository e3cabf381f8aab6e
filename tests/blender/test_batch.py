"""scripts/batch_animate.py with plain Python (bpy as a module): the add-on's code path without UI.

The end-to-end run goes through a real `track4dgen serve` on loopback (``--remote``), so the same
test covers the batch script, the add-on's RemoteJob and the server engineer's RemoteClient; the
local-subprocess path runs end to end in test_operator.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "batch_animate.py"
TINY = {"device": "cpu", "resolution": 32, "samples": 2, "engine": "CYCLES", "stage1": {"steps": 2, "feature_step": 1},
        "stage2": {"iters_rec": 3, "iters_sds": 1, "num_gaussians": 300, "batch_images": 4, "hexplane_resolution": [16, 16, 4]}}

BOX_OBJ = "\n".join(
    ["v -1 -1 -1", "v 1 -1 -1", "v 1 1 -1", "v -1 1 -1", "v -1 -1 1", "v 1 -1 1", "v 1 1 1", "v -1 1 1",
     "f 1 2 3 4", "f 5 8 7 6", "f 1 5 6 2", "f 2 6 7 3", "f 3 7 8 4", "f 5 1 4 8"]) + "\n"


TOKEN = "blender-batch-test-token-0123456789"


def _run(args: list[str], env_python: str, cwd: Path, timeout: float = 400) -> tuple[int, list[dict], str]:
    res = subprocess.run([sys.executable, str(SCRIPT), *args, "--python", env_python], capture_output=True, text=True,
                         timeout=timeout, cwd=str(cwd), env={k: v for k, v in os.environ.items() if k != "TRACK4DGEN_TOKEN"})
    events = []
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return res.returncode, events, res.stdout + res.stderr


@pytest.fixture
def server(tmp_path, backend_python):
    """`track4dgen serve` on a free loopback port with one token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    log = open(tmp_path / "server.log", "wb")
    env = {k: v for k, v in os.environ.items() if k != "TRACK4DGEN_TOKENS"}
    proc = subprocess.Popen([backend_python, "-m", "track4dgen", "serve", "--port", str(port), "--data", str(tmp_path / "srv"),
                             "--tokens-file", str(tmp_path / "tokens"), "--poll-interval-s", "0.1"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_blend_file_end_to_end_on_a_server(tmp_path, backend_python, server):
    """Every mesh object with faces in a .blend is animated; the file is saved next to the jobs."""
    make = textwrap.dedent(f"""
        import bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 2.0))
        bpy.context.active_object.name = "Crate"
        bpy.ops.object.empty_add()  # not a mesh: skipped
        wire = bpy.data.meshes.new("wire")
        wire.from_pydata([(0, 0, 0), (1, 0, 0)], [(0, 1)], [])
        bpy.context.scene.collection.objects.link(bpy.data.objects.new("Wire", wire))  # no faces: skipped
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / "scene.blend")!r})
    """)
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True, timeout=120)
    rc, events, log = _run(["--input", str(tmp_path / "scene.blend"), "--prompt", "a crate hopping", "--out", str(tmp_path / "out"),
                            "--model", "tiny", "--frames", "4", "--settings-json", json.dumps(TINY),
                            "--remote", server, "--token", TOKEN, "--import-mode", "both"], backend_python, tmp_path)
    assert rc == 0, log[-3000:] + (tmp_path / "server.log").read_text()[-3000:]
    assert TOKEN not in log, "the token is never printed"
    stages = [e.get("stage") for e in events]
    assert {"upload", "server", "stage1", "stage2", "download", "imported"} <= set(stages), stages
    assert {e.get("object") for e in events if e.get("stage") == "start"} == {"Crate"}
    assert events[-1] == {**events[-1], "stage": "done", "ok": 1, "failed": 0}
    blend = tmp_path / "out" / "scene_animated.blend"
    assert blend.is_file()
    check = textwrap.dedent(f"""
        import bpy
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
        obj = bpy.data.objects["Crate_4D"]
        assert obj.modifiers["Track4DGen"].node_group is not None
        assert len(bpy.data.objects["Crate_animated"].data.shape_keys.key_blocks) == 1 + 4
        assert "Crate" in bpy.data.objects and "Wire" in bpy.data.objects
        print("BLEND_OK", len(obj.data.vertices))
    """)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert "BLEND_OK 300" in out.stdout, out.stdout + out.stderr


def test_mesh_files_are_imported_as_one_object(fresh_scene, tmp_path):
    """A folder input: .obj as is, a multi-part .glb joined into one mesh object."""
    sys.path.insert(0, str(SCRIPT.parent))
    import batch_animate
    import bpy

    (tmp_path / "box.obj").write_text(BOX_OBJ)
    obj = batch_animate.import_mesh_file(tmp_path / "box.obj")
    assert obj.name == "box" and obj.type == "MESH" and len(obj.data.polygons) == 6
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(location=(-2, 0, 0))
    bpy.ops.mesh.primitive_uv_sphere_add(location=(2, 0, 0), segments=8, ring_count=4)
    bpy.ops.object.select_all(action="SELECT")
    bpy.ops.export_scene.gltf(filepath=str(tmp_path / "two.glb"), export_format="GLB")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = batch_animate.import_mesh_file(tmp_path / "two.glb")
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    # glTF stores triangles: cube 12 + sphere 48 (8 segments x 4 rings)
    assert meshes == [obj] and obj.name == "two" and len(obj.data.polygons) == 12 + 48


def test_failures_exit_non_zero_with_a_message(tmp_path, backend_python):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, events, log = _run(["--input", str(empty), "--prompt", "x", "--out", str(tmp_path / "o")], backend_python, tmp_path)
    assert rc == 1 and events[-1]["error"] == "bad_input" and "no .glb/.gltf/.obj files" in events[-1]["message"]
    rc, events, log = _run(["--input", str(tmp_path / "nothing.txt"), "--prompt", "x", "--out", str(tmp_path / "o")],
                           backend_python, tmp_path)
    assert rc == 2 and "neither a .blend file nor a folder" in events[-1]["message"]
    rc, events, _ = _run(["--input", str(empty), "--prompt", "x", "--out", str(tmp_path / "o")],
                         str(tmp_path / "missing-python"), tmp_path)
    assert rc == 2 and events[-1]["error"] == "backend_missing" and "does not exist" in events[-1]["message"]
    rc, events, _ = _run(["--input", str(empty), "--prompt", "  ", "--out", str(tmp_path / "o")], backend_python, tmp_path)
    assert rc == 2 and "prompt is empty" in events[-1]["message"]
