"""Animate a copy of the user's own object with a result's ``mesh_animation.npz``. numpy + bpy only.

What gets created
-----------------
* a copy of the source object sharing nothing with it but its materials: same modifiers, parent,
  collections, transform, UVs and material slots (the mesh data is copied, so the source stays
  untouched), named ``<source>_animated``;
* on the copy's mesh, relative shape keys: ``Basis`` (the mesh as it was) and one key per result
  frame ``T4DG 000..`` holding that frame's vertex positions in the object's own local space;
* one keyframed value per key: 1 at its scene frame, 0 at the neighbours' (linear), so at every
  scene frame the weights of the two neighbouring result frames sum to one and a frame range
  longer than the result plays slowed down and smooth;
* the source object is hidden (viewport and render) so the copy does not overlap it.

Why shape keys and not a Mesh Cache modifier reading a point-cache file: both play in real time
(measured, benchmarks/RESULTS.md), but shape keys live inside the .blend, so a saved file plays
and renders without the add-on and without a side file that can go missing when the .blend is
moved or the job folder is cleaned up; the Mesh Cache modifier stores only a path.

Vertex correspondence: the backend animated the job's ``mesh.glb``, the source's evaluated mesh
in world space normalised by ``blender.json``'s ``center``/``scale`` (glTF export splits vertices
along UV seams, and modifiers may add vertices). Each of the copy's own vertices is therefore
found by position: its rest position, normalised the same way, is matched to the nearest animated
vertex; a vertex farther than a tolerance (one a modifier moved) takes the inverse-distance blend
of its 4 nearest animated vertices' displacements. Displacements are mapped back to the object's
local space with the object matrix the job was made with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, kdtree

from .errors import AddonError

KEY_PREFIX = "T4DG "
SUFFIX = "_animated"
MODES = ("OBJECT", "GAUSSIANS", "BOTH")


@dataclass
class MeshAnimation:
    """``mesh_animation.npz``: positions [F, V, 3] in the job's normalised frame, fps."""

    positions: np.ndarray
    fps: float

    @property
    def frames(self) -> int:
        return int(self.positions.shape[0])


def load_mesh_animation(result_dir: str | Path) -> MeshAnimation:
    """Read and check the npz; every problem names what is wrong and what to do."""
    path = Path(result_dir)
    path = path if path.suffix == ".npz" else path / "mesh_animation.npz"
    if not path.is_file():
        raise AddonError(f"no mesh_animation.npz in {path.parent}",
                         "Re-run the job with a backend that writes the animated mesh, or import the Gaussians.", "bad_result")
    try:
        with np.load(path, allow_pickle=False) as z:
            pos = np.asarray(z["positions"], dtype=np.float64)
            fps = float(z["fps"]) if "fps" in z.files else 8.0
            count = int(z["vertex_count"]) if "vertex_count" in z.files else pos.shape[1]
    except (KeyError, ValueError, OSError) as exc:
        raise AddonError(f"{path} cannot be read: {exc}", "Re-run or re-download the job.", "bad_result") from exc
    if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] < 1:
        raise AddonError(f"positions has shape {pos.shape}, expected [F, V, 3]", "Re-run the job.", "bad_result")
    if count != pos.shape[1]:
        raise AddonError(f"vertex_count {count} does not match positions' {pos.shape[1]} vertices", "Re-run the job.", "bad_result")
    if not np.isfinite(pos).all():
        raise AddonError(f"{path.name} contains NaN or infinite values", "Re-run the job with the preview preset.", "bad_result")
    return MeshAnimation(pos, fps)


def _mesh_co(mesh: bpy.types.Mesh) -> np.ndarray:
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def local_trajectories(rest_local: np.ndarray, anim: MeshAnimation, matrix_world: Matrix, center: Any, scale: float,
                       tolerance: float = 1e-4) -> np.ndarray:
    """Positions [F, V, 3] in the object's local space for its rest vertices ``rest_local`` [V, 3]."""
    m = np.array(matrix_world, dtype=np.float64)
    normalised = ((rest_local @ m[:3, :3].T + m[:3, 3]) - np.asarray(center, dtype=np.float64)) * float(scale)
    rest = anim.positions[0]
    tree = kdtree.KDTree(len(rest))
    for i, p in enumerate(rest):
        tree.insert(p, i)
    tree.balance()
    disp = np.empty((anim.frames, len(normalised), 3))
    moved = anim.positions - rest[None]
    for v, p in enumerate(normalised):
        _, i, d = tree.find(p)
        if d <= tolerance:
            disp[:, v] = moved[:, i]
            continue
        near = tree.find_n(p, 4)
        w = np.array([1.0 / max(n[2], 1e-9) for n in near])
        disp[:, v] = np.tensordot(moved[:, [n[1] for n in near]], w / w.sum(), axes=([1], [0]))
    to_local = np.linalg.inv(m[:3, :3]) / float(scale)
    return rest_local[None] + disp @ to_local.T


def scene_frames(frames: int, start: int, end: int) -> np.ndarray:
    """Scene frame of every result frame: evenly spread over [start, end]."""
    return np.array([float(start)]) if frames == 1 else np.linspace(float(start), float(end), frames)


def _fcurve(action: bpy.types.Action, key: bpy.types.Key, path: str) -> bpy.types.FCurve:
    if hasattr(action, "fcurve_ensure_for_datablock"):  # Blender 4.4+: layered actions
        return action.fcurve_ensure_for_datablock(key, path)
    return action.fcurves.new(path)


def add_shape_key_animation(obj: bpy.types.Object, positions: np.ndarray, frames_at: np.ndarray) -> None:
    """Basis + one relative shape key per result frame, weights keyframed (module doc)."""
    if obj.data.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    key = obj.data.shape_keys
    key.use_relative = True
    names = []
    for f, pos in enumerate(positions):
        kb = obj.shape_key_add(name=f"{KEY_PREFIX}{f:03d}", from_mix=False)
        kb.data.foreach_set("co", np.ascontiguousarray(pos, dtype=np.float32).reshape(-1))
        kb.slider_min, kb.slider_max = 0.0, 1.0
        names.append(kb.name)
    key.animation_data_create()
    action = bpy.data.actions.new(f"{obj.name} T4DG")
    key.animation_data.action = action
    for f, name in enumerate(names):
        pts = [(frames_at[f], 1.0)]
        if f > 0:
            pts.insert(0, (frames_at[f - 1], 0.0))
        if f + 1 < len(names):
            pts.append((frames_at[f + 1], 0.0))
        fc = _fcurve(action, key, f'key_blocks["{name}"].value')
        fc.keyframe_points.add(len(pts))
        fc.keyframe_points.foreach_set("co", [c for p in pts for c in p])
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"
        fc.extrapolation = "CONSTANT"
        fc.update()


def copy_object(source: bpy.types.Object, name: str | None = None) -> bpy.types.Object:
    """A copy with its own mesh data, in the source's collections, with the same parent/modifiers."""
    obj = source.copy()
    obj.data = source.data.copy()
    obj.name = name or f"{source.name}{SUFFIX}"
    obj.animation_data_clear()
    if obj.data.shape_keys is not None:
        # the job was made from the evaluated mesh (shape keys mixed in): start from that mix
        mix = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
        obj.shape_key_add(name="T4DG mix", from_mix=True).data.foreach_get("co", mix)
        obj.shape_key_clear()
        obj.data.vertices.foreach_set("co", mix)
    for coll in source.users_collection:
        coll.objects.link(obj)
    return obj


def animate_object(
    source: bpy.types.Object,
    result_dir: str | Path,
    scene: bpy.types.Scene | None = None,
    placement: dict[str, Any] | None = None,
    frame_start: int | None = None,
    frame_end: int | None = None,
    hide_source: bool = True,
    timing: str = "REALTIME",
    fit_scene_range: bool = True,
) -> bpy.types.Object:
    """Copy ``source`` and animate the copy with ``result_dir/mesh_animation.npz`` (module doc).

    ``placement`` is blender.json's content; without one the result is taken to be in the
    object's world frame (center 0, scale 1). Frame range and timing follow the same rules as the
    Gaussians (``placement.job_frame_range``); the copy is selected and made active and the scene's
    range fitted (``placement.select_and_fit``). The copy keeps the source's parent and transform,
    so it needs no re-parenting to stay where the source is.
    """
    from . import placement as place
    from .job_io import read_blender_json

    if source is None or source.type != "MESH":
        raise AddonError("the object to animate must be a mesh", "Select the mesh the job was made from.", "bad_selection")
    scene = scene or bpy.context.scene
    result_dir = Path(result_dir)
    anim = load_mesh_animation(result_dir)
    if placement is None:
        placement = read_blender_json(result_dir if result_dir.is_dir() else result_dir.parent) or {}
    rng = place.job_frame_range(scene, placement, anim.frames, anim.fps, frame_start, frame_end, timing)
    if timing == "SCENE_FPS" and anim.fps > 0:
        scene.render.fps = max(1, round(anim.fps))
        scene.render.fps_base = scene.render.fps / anim.fps
    matrix = Matrix(placement["source_matrix_world"]) if "source_matrix_world" in placement else source.matrix_world.copy()

    obj = copy_object(source)
    try:
        positions = local_trajectories(_mesh_co(obj.data), anim, matrix, placement.get("center", (0, 0, 0)), placement.get("scale", 1.0))
        add_shape_key_animation(obj, positions, scene_frames(anim.frames, rng.start, rng.end))
    except Exception:
        mesh = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        raise
    obj["t4d_result"] = str(result_dir)
    obj["t4d_fps"] = anim.fps
    obj["t4d_source"] = source.name
    view_layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
    if hide_source:
        source.hide_render = True
        source.hide_set(True, view_layer=view_layer)
    place.select_and_fit(obj, scene, rng, view_layer, fit_scene_range)
    return obj


def evaluated_vertices(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph | None = None) -> np.ndarray:
    """Local vertex positions [V, 3] of the evaluated object at the scene's current frame."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    mesh = obj.evaluated_get(depsgraph).to_mesh()
    try:
        return _mesh_co(mesh)
    finally:
        obj.evaluated_get(depsgraph).to_mesh_clear()


def import_outputs(
    mode: str,
    result_dir: str | Path,
    scene: bpy.types.Scene,
    source: bpy.types.Object | None,
    placement: dict[str, Any] | None = None,
    frame_start: int | None = None,
    **gaussian_options: Any,
) -> bpy.types.Object:
    """Bring a result into ``scene`` as ``mode`` says: ``OBJECT`` animates a copy of ``source``
    (default), ``GAUSSIANS`` imports the 4D Gaussians (import_result.py), ``BOTH`` does both.
    Returns the main new object (the animated copy unless only Gaussians were asked for).
    A result written before the mesh animation existed (no mesh_animation.npz) is imported as
    Gaussians under ``OBJECT``, the only thing it holds; ``BOTH`` then fails with a clear error."""
    from .import_result import import_result

    mode = mode.upper()
    if mode not in MODES:
        raise AddonError(f"unknown import mode {mode!r}", f"Use one of {', '.join(MODES)}.", "bad_settings")
    folder = Path(result_dir)
    if mode == "OBJECT" and not (folder if folder.is_dir() else folder.parent).joinpath("mesh_animation.npz").is_file():
        mode = "GAUSSIANS"
    if mode in ("OBJECT", "BOTH") and (source is None or source.type != "MESH"):
        raise AddonError("the object to animate is gone or not a mesh",
                         "Select the mesh the job was made from, or import the Gaussians instead.", "bad_selection")
    # check every file first, so a bad one leaves the scene untouched rather than half imported
    if mode in ("OBJECT", "BOTH"):
        load_mesh_animation(result_dir)
    if mode in ("GAUSSIANS", "BOTH"):
        from .import_result import load_result

        load_result(result_dir)
    main = None
    if mode in ("OBJECT", "BOTH"):
        timing = gaussian_options.get("timing", "REALTIME")
        main = animate_object(source, result_dir, scene, placement=placement, frame_start=frame_start, timing=timing)
    if mode in ("GAUSSIANS", "BOTH"):
        gaussians = import_result(result_dir, scene, frame_start=frame_start, placement=placement, **gaussian_options)
        main = main or gaussians
    return main


def describe(obj: bpy.types.Object) -> str:
    """Report text for an imported object: 'Name (N Gaussians)' or 'Name (F frames of animation)'."""
    keys = obj.data.shape_keys if obj.type == "MESH" else None
    if keys is not None and any(k.name.startswith(KEY_PREFIX) for k in keys.key_blocks):
        return f"{obj.name} ({len(keys.key_blocks) - 1} frames of animation)"
    return f"{obj.name} ({len(obj.data.vertices)} Gaussians)"
