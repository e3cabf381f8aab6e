"""Re-create the README images: import a result folder with the add-on and render two frames.

    python docs/images/render_readme_images.py RESULT_DIR [--frames 1 8] [--size 256] [--samples 16]

Uses the add-on's importer exactly as File › Import › Import 4D Gaussians does, then renders
with Cycles on the CPU from a three-quarter view of the rig's orbit (azimuth 30, elevation 15).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import bpy  # noqa: E402

from addon import cameras, import_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("result", type=Path)
    p.add_argument("--frames", type=int, nargs="+", default=[1, 8])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--azimuth", type=float, default=30.0)
    p.add_argument("--prefix", default="blender_import")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    obj = import_result.import_result(args.result, scene, frame_start=1, timing="PER_FRAME")
    cam = cameras.make_rig_camera("readme_cam", args.azimuth, distance=3.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    world = bpy.data.worlds.new("readme")
    world.color = (0.06, 0.06, 0.07)
    if world.node_tree is not None:
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.06, 0.06, 0.07, 1.0)
    scene.world = world
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", args.samples, False
    r.resolution_x = r.resolution_y = args.size
    r.resolution_percentage = 100
    r.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGB"
    written = []
    for f in args.frames:
        scene.frame_set(f)
        path = args.out / f"{args.prefix}_frame{f:02d}.png"
        r.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        written.append(path)
    print("wrote", *[str(w) for w in written], f"({len(obj.data.vertices)} Gaussians)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else None))
