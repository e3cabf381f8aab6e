"""Shape keys vs a Mesh Cache modifier for the animated mesh in Blender (issue 14, item 3).

Builds an N-vertex grid animated over F frames both ways (the add-on's shape keys, and a PC2
point-cache file read by a Mesh Cache modifier), then measures: seconds to build, milliseconds to
evaluate one frame (frame_set + evaluated mesh), the saved .blend's size, and whether the saved
file still plays after it is copied to another folder with no add-on loaded (what an artist does
when handing a file on); ``plays_in_place`` checks the frame is right before the move.

    python benchmarks/bench_mesh_import.py [--vertices 200000] [--frames 16] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def grid(bpy, n: int):
    import numpy as np

    side = int(np.ceil(np.sqrt(n)))
    x, y = np.meshgrid(np.linspace(-1, 1, side), np.linspace(-1, 1, side))
    verts = np.stack([x.ravel(), y.ravel(), np.zeros(side * side)], 1)
    idx = np.arange(side * side).reshape(side, side)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    mesh = bpy.data.meshes.new("grid")
    mesh.from_pydata(verts.tolist(), [], quads.tolist())
    obj = bpy.data.objects.new("Grid", mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj, verts


def frames_of(verts, frames: int):
    import numpy as np

    t = np.arange(frames)[:, None]
    out = np.repeat(verts[None], frames, 0)
    out[..., 2] = 0.2 * np.sin(3 * verts[None, :, 0] + 0.4 * t)
    return out.astype(np.float32)


def write_pc2(path: Path, positions) -> None:
    frames, count, _ = positions.shape
    with open(path, "wb") as fh:
        fh.write(b"POINTCACHE2\0" + struct.pack("<iiffi", 1, count, 0.0, 1.0, frames))
        fh.write(positions.astype("<f4").tobytes())


def frame_ms(bpy, obj, frames: int) -> float:
    scene = bpy.context.scene
    t0 = time.perf_counter()
    for f in range(1, frames + 1):
        scene.frame_set(f)
        obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
        obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh_clear()
    return 1000 * (time.perf_counter() - t0) / frames


def plays_elsewhere(blend: Path, expect_path: Path, frame: int) -> bool:
    """Copy the .blend alone to a new folder and evaluate it there in a fresh Python without the add-on."""
    other = Path(tempfile.mkdtemp(prefix="moved_")) / blend.name
    shutil.copy(blend, other)
    code = textwrap.dedent(f"""
        import bpy, numpy as np
        bpy.ops.wm.open_mainfile(filepath={str(other)!r})
        bpy.context.scene.frame_set({frame})
        obj = bpy.data.objects["Grid"]
        m = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
        co = np.empty(len(m.vertices) * 3, np.float32); m.vertices.foreach_get("co", co)
        print("ERR", float(np.abs(co.reshape(-1, 3) - np.load({str(expect_path)!r})).max()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    errs = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("ERR")]
    return bool(errs) and errs[0] < 1e-4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vertices", type=int, default=200_000)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import bpy
    import numpy as np

    from addon.import_mesh_animation import add_shape_key_animation

    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_mesh_import_"))
    for way in ("shape_keys", "mesh_cache"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        obj, verts = grid(bpy, args.vertices)
        pos = frames_of(verts, args.frames)
        t0 = time.perf_counter()
        if way == "shape_keys":
            add_shape_key_animation(obj, pos, np.arange(1, args.frames + 1, dtype=float))
        else:
            write_pc2(work / "grid.pc2", pos)
            mod = obj.modifiers.new("Cache", "MESH_CACHE")
            mod.cache_format, mod.filepath = "PC2", bpy.path.relpath(str(work / "grid.pc2"), start=str(work))
            mod.frame_start = 1.0
        build = time.perf_counter() - t0
        blend = work / f"{way}.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
        ms = frame_ms(bpy, obj, args.frames)
        mid = args.frames // 2
        np.save(work / "expect.npy", pos[mid])
        bpy.context.scene.frame_set(1 + mid)
        m = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
        co = np.empty(len(m.vertices) * 3, np.float32)
        m.vertices.foreach_get("co", co)
        in_place = float(np.abs(co.reshape(-1, 3) - pos[mid]).max()) < 1e-4
        rows.append({"way": way, "vertices": len(verts), "frames": args.frames, "build_s": round(build, 2),
                     "frame_ms": round(ms, 1), "blend_mb": round(blend.stat().st_size / 2**20, 1), "plays_in_place": in_place,
                     "plays_after_move": plays_elsewhere(blend, work / "expect.npy", 1 + mid)})
        print(rows[-1], flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
