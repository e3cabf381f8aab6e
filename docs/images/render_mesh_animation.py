"""Re-create the README's animated-mesh images: a job's own mesh animated with the add-on, rendered.

    python docs/images/render_mesh_animation.py JOB_DIR RESULT_DIR [--frames 1 9] [--size 256] [--samples 16]

The job's ``mesh.glb`` (read with the backend's loader, vertex colours shown by a material) stands
in for the artist's object; the add-on's "Animate object" path (``import_mesh_animation``) animates
a copy of it from ``RESULT_DIR/mesh_animation.npz``, and Cycles renders it on the CPU from a
three-quarter view of the rig's orbit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parents[1] / "backend"))

import bpy  # noqa: E402
import numpy as np  # noqa: E402

from addon import cameras, import_mesh_animation  # noqa: E402


def source_object(job_dir: Path) -> bpy.types.Object:
    """The job mesh as a Blender object with its vertex colours in a material."""
    from track4dgen.meshio import load_mesh

    m = load_mesh(job_dir / "mesh.glb")
    mesh = bpy.data.meshes.new("Creature")
    mesh.from_pydata(m.vertices.tolist(), [], m.faces.tolist())
    col = mesh.color_attributes.new("Col", "FLOAT_COLOR", "POINT")
    col.data.foreach_set("color", np.concatenate([m.colors, np.ones((len(m.colors), 1))], 1).astype(np.float32).ravel())
    mesh.shade_smooth()
    mat = bpy.data.materials.new("Painted")
    if mat.node_tree is None:
        mat.use_nodes = True
    attr = mat.node_tree.nodes.new("ShaderNodeVertexColor")
    attr.layer_name = "Col"
    mat.node_tree.links.new(attr.outputs["Color"], mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"])
    mesh.materials.append(mat)
    obj = bpy.data.objects.new("Creature", mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("job", type=Path)
    p.add_argument("result", type=Path)
    p.add_argument("--frames", type=int, nargs="+", default=[1, 9])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--azimuth", type=float, default=30.0)
    p.add_argument("--prefix", default="mesh_animation")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    src = source_object(args.job)
    placement = {"center": [0, 0, 0], "scale": 1.0, "frame_start": 1}
    import_mesh_animation.animate_object(src, args.result, scene, placement=placement, frame_start=1, frame_end=16)
    cam = cameras.make_rig_camera("readme_cam", args.azimuth, distance=3.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    world = bpy.data.worlds.new("readme")
    world.color = (0.9, 0.9, 0.9)
    scene.world = world
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.rotation_euler = (0.8, 0.2, 0.6)
    sun.data.energy = 3.0
    scene.collection.objects.link(sun)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.render.resolution_x = scene.render.resolution_y = args.size
    scene.render.film_transparent = False
    for f in args.frames:
        scene.frame_set(f)
        scene.render.filepath = str(args.out / f"{args.prefix}_frame{f:02d}.png")
        bpy.ops.render.render(write_still=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
