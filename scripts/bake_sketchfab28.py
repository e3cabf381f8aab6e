"""Prepare assets the way the paper built Sketchfab28: baked four-point lighting -> vertex
colours -> 3D Gaussians.

Two steps, two interpreters (why: Blender's Python must never need torch, the backend's must
never need bpy):

* ``bake`` runs with bpy — inside Blender (``blender -b -P scripts/bake_sketchfab28.py -- bake
  ...``) or with the ``bpy`` module (``python scripts/bake_sketchfab28.py bake ...``). Per asset:
  import (.glb/.gltf/.obj/.fbx/.ply/.blend), normalise (bounding-box centre to the origin, farthest
  vertex at distance 1, as the synthetic objects), add the four-point rig, bake Cycles (CPU)
  COMBINED lighting — diffuse, glossy, transmission and emission, direct and indirect — into a
  point-domain colour attribute ``baked``, write ``baked.ply`` (8-bit sRGB vertex colours, Blender's
  Z-up frame), render a preview of the baked colours (emission shader, transparent film) at the
  rig's front camera(s) with ``preview/cameras.json`` (OpenCV convention), then call ``convert``.
* ``convert`` runs with the backend's Python (a subprocess: ``--python``, default the current
  interpreter when it can import ``track4dgen``, else ``$TRACK4DGEN_PYTHON`` or ``python3``): it
  samples 3D Gaussians with Stage Two's canonical sampler (``CanonicalGaussians.from_mesh``:
  area-weighted surface samples, colours from the vertex colours, scales from 3-NN distances),
  writes ``gaussians4d.npz`` in the result format with one frame (so the evaluation tools and
  the Blender importer read it) and ``baked.glb`` (vertex colours, Z-up coordinates as stored, like every job mesh).

Four-point rig (sun lamps, so the lighting does not depend on the object's size; azimuth 0 is
the front, -Y; 90 is +X): key az -45 el 45 strength 2.5; fill az 60 el 15 strength 0.8; back
(rim) az 180 el 50 strength 1.5; background = uniform world light 0.2 (the lighting a backdrop
returns). A white (0.8) surface facing the key comes out near 0.9 linear, so little is clipped. Baked values are linear radiance; PLY and Gaussian colours are sRGB, clipped to [0, 1].

Batch behaviour: one JSON line per asset event on stdout (``{"asset", "index", "total", "status",
"message", "wall_s"}``); an asset whose ``OUT/<name>/DONE`` exists is skipped (resumable); a
broken file gets ``status: "error"`` and ``OUT/<name>.error.txt`` and the batch goes on; the exit
code is 1 when any asset failed. Output folders appear atomically (written under a temporary name).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

SUPPORTED = (".glb", ".gltf", ".obj", ".fbx", ".ply", ".blend")
RIG = (  # name, azimuth deg, elevation deg, strength (W/m^2)
    ("key", -45.0, 45.0, 2.5),
    ("fill", 60.0, 15.0, 0.8),
    ("back", 180.0, 50.0, 1.5),
)
BACKGROUND_STRENGTH = 0.2
PREVIEW_ELEVATION, PREVIEW_DISTANCE, PREVIEW_FOV = 15.0, 3.0, 40.0  # the conditioning rig
BAKE_PASSES = {"DIRECT", "INDIRECT", "DIFFUSE", "GLOSSY", "TRANSMISSION", "EMIT"}


class BakeError(RuntimeError):
    """An asset that cannot be baked; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# math shared by both steps (numpy only)


def direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector from the origin toward an orbit position (track4dgen.cameras.orbit_eye)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])


def opencv_camera(azimuth_deg: float, resolution: int) -> dict:
    """The rig camera at ``azimuth_deg`` as {"K", "w2c", "width", "height"} (OpenCV)."""
    eye = PREVIEW_DISTANCE * direction(azimuth_deg, PREVIEW_ELEVATION)
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ eye
    f = 0.5 * resolution / math.tan(math.radians(PREVIEW_FOV) / 2)
    K = [[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1]]
    return {"K": K, "w2c": w2c.tolist(), "width": resolution, "height": resolution}


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colors_u8: np.ndarray) -> None:
    """Binary little-endian PLY: float xyz, uchar rgb per vertex, triangles (no dependencies)."""
    n, m = len(vertices), len(faces)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {m}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
    vert = np.empty(n, vdt)
    vert["p"], vert["c"] = vertices, colors_u8
    fdt = np.dtype([("n", "u1"), ("i", "<i4", 3)])
    face = np.empty(m, fdt)
    face["n"], face["i"] = 3, faces
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read what ``write_ply`` wrote: (vertices [V,3], faces [T,3], colours [V,3] float 0..1)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    n = int(next(l for l in header if l.startswith("element vertex")).split()[-1])
    m = int(next(l for l in header if l.startswith("element face")).split()[-1])
    vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
    fdt = np.dtype([("n", "u1"), ("i", "<i4", 3)])
    vert = np.frombuffer(data, vdt, n, end)
    face = np.frombuffer(data, fdt, m, end + n * vdt.itemsize)
    return vert["p"].astype(np.float64), face["i"].astype(np.int64), vert["c"].astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# step 2: Gaussians (backend Python, never bpy)


def convert(ply: Path, out_dir: Path, n: int, opacity: float = 0.95, seed: int = 0) -> dict:
    """Baked PLY -> gaussians4d.npz (result format, 1 frame) + baked.glb. Returns a summary."""
    import trimesh

    from track4dgen.stage2.gaussians import CanonicalGaussians, sample_surface

    v, f, c = read_ply(ply)
    g = CanonicalGaussians.from_mesh(v, f, c, n, sh_degree=1, sh_time_basis=1, init_opacity=opacity, seed=seed)
    samples = sample_surface(v, f, c, n, seed)  # the same draw from_mesh made: the colours
    means = g.means.detach().numpy()
    if not np.allclose(means, samples.points):
        raise BakeError("canonical sampler draws changed between calls; cannot attach colours")
    quats = g.quats.detach().numpy()
    log_scales = g.log_scales.detach().numpy()
    logit = g.opacity_logit.detach().numpy()
    np.savez(
        out_dir / "gaussians4d.npz",
        means=means, quats=quats, log_scales=log_scales, opacity_logit=logit,
        opacity=1.0 / (1.0 + np.exp(-logit)), sh4d=g.sh4d.detach().numpy(),
        frame_means=means[None], frame_quats=quats[None], frame_log_scales=log_scales[None],
        frame_rgb=samples.colors[None], fps=np.array(8.0, np.float32),
    )
    rgba = np.concatenate([np.round(c * 255), np.full((len(c), 1), 255)], 1).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=v, faces=f, vertex_colors=rgba, process=False)
    (out_dir / "baked.glb").write_bytes(mesh.export(file_type="glb"))
    return {"gaussians": int(n), "vertices": int(len(v)), "faces": int(len(f))}


# ---------------------------------------------------------------------------------------------
# step 1: bake (bpy)


def _bpy():
    import bpy  # noqa: F401  (only the bake step needs Blender)

    return bpy


def reset_scene() -> None:
    _bpy().ops.wm.read_factory_settings(use_empty=True)


def import_asset(path: Path) -> list:
    bpy = _bpy()
    ext = path.suffix.lower()
    try:
        if ext in (".glb", ".gltf"):
            bpy.ops.import_scene.gltf(filepath=str(path))
        elif ext == ".obj":
            bpy.ops.wm.obj_import(filepath=str(path))
        elif ext == ".fbx":
            bpy.ops.import_scene.fbx(filepath=str(path))
        elif ext == ".ply":
            bpy.ops.wm.ply_import(filepath=str(path))
        elif ext == ".blend":
            with bpy.data.libraries.load(str(path), link=False) as (src, dst):
                dst.objects = list(src.objects)
            for obj in dst.objects:
                if obj is not None:
                    bpy.context.scene.collection.objects.link(obj)
        else:
            raise BakeError(f"{path.name}: unsupported format {ext}; use one of {', '.join(SUPPORTED)}")
    except BakeError:
        raise
    except Exception as exc:  # importers raise RuntimeError/OSError/... for broken files
        raise BakeError(f"{path.name}: import failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}") from exc
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH" and len(o.data.polygons) > 0]
    if not meshes:
        raise BakeError(f"{path.name}: contains no mesh with faces")
    return meshes


def normalise(meshes: list) -> tuple[np.ndarray, float]:
    """Move the bbox centre to the origin and scale the farthest vertex to distance 1."""
    bpy = _bpy()
    from mathutils import Matrix

    bpy.context.view_layer.update()
    pts = []
    for o in meshes:
        co = np.empty(len(o.data.vertices) * 3)
        o.data.vertices.foreach_get("co", co)
        mw = np.array(o.matrix_world)
        pts.append(co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3])
    pts = np.concatenate(pts)
    if not np.isfinite(pts).all():
        raise BakeError("mesh has NaN or infinite vertex coordinates")
    center = 0.5 * (pts.min(0) + pts.max(0))
    radius = float(np.linalg.norm(pts - center, axis=1).max())
    if radius <= 0:
        raise BakeError("mesh has zero size")
    M = Matrix.Diagonal((1 / radius, 1 / radius, 1 / radius, 1.0)) @ Matrix.Translation(tuple(-center))
    for o in bpy.context.scene.objects:
        if o.parent is None:
            o.matrix_world = M @ o.matrix_world
    bpy.context.view_layer.update()
    return center, radius


def ensure_materials(meshes: list) -> None:
    """Meshes without a material get a neutral grey Principled BSDF (something must be lit)."""
    bpy = _bpy()
    default = None
    for o in meshes:
        if not any(slot.material for slot in o.material_slots):
            if default is None:
                default = bpy.data.materials.new("bake_default")
                if default.node_tree is None:  # Blender < 5 creates materials without nodes
                    default.use_nodes = True
                default.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.8, 0.8, 1.0)
            o.data.materials.clear()
            o.data.materials.append(default)


def add_light_rig() -> None:
    bpy = _bpy()
    from mathutils import Vector

    scene = bpy.context.scene
    for name, az, el, strength in RIG:
        light = bpy.data.lights.new(name, "SUN")
        light.energy = strength
        light.angle = math.radians(5.0)  # slightly soft shadows
        obj = bpy.data.objects.new(name, light)
        to_light = Vector(direction(az, el).tolist())
        obj.rotation_euler = (-to_light).to_track_quat("-Z", "Y").to_euler()  # sun shines along -Z
        scene.collection.objects.link(obj)
    world = bpy.data.worlds.new("background")
    if world.node_tree is None:
        world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    bg.inputs["Strength"].default_value = BACKGROUND_STRENGTH
    scene.world = world


def setup_cycles(samples: int) -> None:
    scene = _bpy().context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = max(1, min(os.cpu_count() or 1, int(os.environ.get("BAKE_THREADS", "2"))))


def bake_vertex_colors(meshes: list, samples: int) -> None:
    bpy = _bpy()
    setup_cycles(samples)
    bake = bpy.context.scene.render.bake
    bake.target = "VERTEX_COLORS"
    for flag in ("emit", "direct", "indirect", "diffuse", "glossy", "transmission"):
        setattr(bake, f"use_pass_{flag}", True)
    for o in bpy.context.scene.objects:
        o.select_set(False)
    for o in meshes:
        old = o.data.color_attributes.get("baked")
        if old is not None:  # re-baking one of our own outputs: start from a clean attribute
            o.data.color_attributes.remove(old)
        attr = o.data.color_attributes.new("baked", "FLOAT_COLOR", "POINT")
        o.data.color_attributes.active_color = attr
        o.select_set(True)
    bpy.context.view_layer.objects.active = meshes[0]
    result = bpy.ops.object.bake(type="COMBINED", pass_filter=BAKE_PASSES, target="VERTEX_COLORS")
    if "FINISHED" not in result:
        raise BakeError(f"Cycles bake did not finish ({result})")


def baked_arrays(meshes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-space triangles of all meshes with their baked linear colours."""
    verts, faces, cols, offset = [], [], [], 0
    for o in meshes:
        me = o.data
        me.calc_loop_triangles()
        co = np.empty(len(me.vertices) * 3)
        me.vertices.foreach_get("co", co)
        mw = np.array(o.matrix_world)
        tri = np.empty(len(me.loop_triangles) * 3, dtype=np.int64)
        me.loop_triangles.foreach_get("vertices", tri)
        rgba = np.empty(len(me.vertices) * 4, dtype=np.float32)
        me.color_attributes["baked"].data.foreach_get("color", rgba)
        verts.append(co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3])
        faces.append(tri.reshape(-1, 3) + offset)
        cols.append(rgba.reshape(-1, 4)[:, :3])
        offset += len(me.vertices)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(cols)


def render_preview(meshes: list, out_dir: Path, azimuths: list[float], resolution: int, samples: int) -> None:
    """Render the baked colours unlit (emission) at the rig cameras; alpha = coverage."""
    bpy = _bpy()
    from mathutils import Matrix

    mat = bpy.data.materials.new("baked_preview")
    if mat.node_tree is None:
        mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_name = "baked"
    emit = nt.nodes.new("ShaderNodeEmission")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(attr.outputs["Color"], emit.inputs["Color"])
    nt.links.new(emit.outputs["Emission"], out.inputs["Surface"])
    for o in meshes:
        o.data.materials.clear()
        o.data.materials.append(mat)
        o.data.polygons.foreach_set("material_index", np.zeros(len(o.data.polygons), dtype=np.int32))
    scene = bpy.context.scene
    setup_cycles(samples)
    scene.render.film_transparent = True
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.filter_size = 1.5
    cam_data = bpy.data.cameras.new("preview")
    cam_data.sensor_fit = "VERTICAL"
    cam_data.sensor_height = 36.0
    cam_data.lens = 0.5 * 36.0 / math.tan(math.radians(PREVIEW_FOV) / 2)
    cam = bpy.data.objects.new("preview", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    views = []
    (out_dir / "preview").mkdir(parents=True, exist_ok=True)
    for k, az in enumerate(azimuths):
        cv = opencv_camera(az, resolution)
        c2w = np.linalg.inv(np.array(cv["w2c"]))
        c2w[:3, 1:3] *= -1.0  # OpenCV (y down, z forward) -> Blender camera (y up, -z forward)
        cam.matrix_world = Matrix(c2w.tolist())
        scene.render.filepath = str(out_dir / "preview" / f"view{k}.png")
        bpy.ops.render.render(write_still=True)
        views.append(cv)
    payload = {"convention": "opencv", "views": views, "azimuths_deg": list(azimuths)}
    (out_dir / "preview" / "cameras.json").write_text(json.dumps(payload, indent=1))


def backend_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("TRACK4DGEN_PYTHON"):
        return os.environ["TRACK4DGEN_PYTHON"]
    if importlib.util.find_spec("track4dgen") is not None and importlib.util.find_spec("torch") is not None:
        return sys.executable
    return shutil.which("python3") or "python3"


def bake_one(path: Path, work: Path, args: argparse.Namespace) -> dict:
    t0 = time.time()
    reset_scene()
    meshes = import_asset(path)
    center, radius = normalise(meshes)
    ensure_materials(meshes)
    add_light_rig()
    bake_vertex_colors(meshes, args.samples)
    t_bake = time.time() - t0
    v, f, lin = baked_arrays(meshes)
    srgb = linear_to_srgb(lin)
    write_ply(work / "baked.ply", v, f, np.round(srgb * 255).astype(np.uint8))
    np.save(work / "baked_linear.npy", lin.astype(np.float32))
    if args.preview_azimuths:
        render_preview(meshes, work, args.preview_azimuths, args.preview_resolution, args.preview_samples)
    cmd = [backend_python(args.python), str(Path(__file__).resolve()), "convert", str(work / "baked.ply"), str(work),
           "--gaussians", str(args.gaussians)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BakeError(f"{path.name}: Gaussian conversion failed ({' '.join(cmd[:2])} ...): {proc.stderr.strip()[-800:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary.update({"source": str(path), "normalise_center": center.tolist(), "normalise_radius": radius,
                    "samples": args.samples, "bake_s": round(t_bake, 3), "wall_s": round(time.time() - t0, 3)})
    return summary


def collect_inputs(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in SUPPORTED)
        else:
            paths.append(p)
    return paths


def asset_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        base = p.stem
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def run_bake(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = collect_inputs(args.inputs)
    failed = 0
    for i, (path, name) in enumerate(zip(paths, asset_names(paths))):
        final = out / name
        base = {"asset": name, "index": i + 1, "total": len(paths)}
        if (final / "DONE").is_file() and not args.force:
            emit(**base, status="skipped", message="already baked (DONE exists)", wall_s=0.0)
            continue
        emit(**base, status="start", message=str(path), wall_s=0.0)
        t0 = time.time()
        work = out / f".{name}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            if not path.is_file():
                raise BakeError(f"{path}: file does not exist")
            summary = bake_one(path, work, args)
            (work / "DONE").write_text(json.dumps(summary, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
            (out / f"{name}.error.txt").unlink(missing_ok=True)
            emit(**base, status="done", message=f"{summary['vertices']} vertices, {summary['gaussians']} Gaussians", wall_s=round(time.time() - t0, 3))
        except Exception as exc:  # one broken asset never stops the batch
            failed += 1
            shutil.rmtree(work, ignore_errors=True)
            msg = str(exc) if isinstance(exc, BakeError) else f"{path.name}: {type(exc).__name__}: {exc}"
            (out / f"{name}.error.txt").write_text(msg + "\n\n" + traceback.format_exc())
            emit(**base, status="error", message=msg, wall_s=round(time.time() - t0, 3))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bake_sketchfab28.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bake", help="bake lighting into vertex colours and convert to Gaussians (needs bpy)")
    b.add_argument("inputs", nargs="+", help="mesh files or folders")
    b.add_argument("--out", required=True, help="output folder (one sub-folder per asset)")
    b.add_argument("--samples", type=int, default=128, help="Cycles bake samples")
    b.add_argument("--gaussians", type=int, default=20000, help="Gaussians per asset (Stage Two's default)")
    b.add_argument("--preview-azimuths", type=lambda s: [float(x) for x in s.split(",") if x], default=[0.0],
                   help="comma-separated rig azimuths for preview renders (empty: none)")
    b.add_argument("--preview-resolution", type=int, default=256)
    b.add_argument("--preview-samples", type=int, default=16)
    b.add_argument("--python", default=None, help="backend interpreter for the conversion step")
    b.add_argument("--force", action="store_true", help="re-bake assets that are already done")
    c = sub.add_parser("convert", help="baked PLY -> gaussians4d.npz + baked.glb (backend Python, no bpy)")
    c.add_argument("ply", type=Path)
    c.add_argument("out_dir", type=Path)
    c.add_argument("--gaussians", type=int, default=20000)
    c.add_argument("--opacity", type=float, default=0.95, help="initial opacity (opaque: the asset is final, not optimised)")
    c.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    args = build_parser().parse_args(argv)
    if args.cmd == "convert":
        summary = convert(args.ply, args.out_dir, args.gaussians, args.opacity, args.seed)
        print(json.dumps(summary), flush=True)
        return 0
    return run_bake(args)


if __name__ == "__main__":
    sys.exit(main())  # inside Blender (-b -P) this sets Blender's exit code too
