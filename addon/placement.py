"""Put an imported Track4DGen result into the scene the way an artist expects. bpy only.

One entry point for every importer (the Gaussians importer, and any importer of a result as a
mesh animation): :func:`place_result`. Given the new, still unlinked object and the job's
``blender.json`` payload it

* chooses the scene frames the result plays over (:func:`frame_range`, see ``TIMING_ITEMS``);
* undoes the add-on's normalisation (``world = p / scale + center``, :func:`placement_matrix`)
  and parents the object to the source, so it follows the source's later moves;
* links it into the source's collection (else the active collection), selects it and makes it
  active;
* hides the source in the viewport and in renders (the result replaces it);
* fits the scene's frame range to the animation (and, with ``SCENE_FPS`` timing, its frame rate).

Everything is ordinary data editing, so the operator that calls it undoes it in one step.

Timing: results carry their own fps (8 for the paper's model) while scenes usually run at 24.
The default, ``REALTIME``, keeps the scene's frame rate and spreads the result over as many scene
frames as its duration needs (the importer interpolates between result frames), so the motion
plays at the speed it was generated at without changing the rest of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bpy
from mathutils import Matrix, Vector

from .errors import AddonError

TIMING_ITEMS = (
    ("REALTIME", "Real Time",
     "Keep the scene's frame rate; stretch the result over its duration (interpolated between result frames)"),
    ("PER_FRAME", "One Scene Frame per Result Frame",
     "One scene frame per result frame (plays faster when the scene's frame rate is higher)"),
    ("SCENE_FPS", "Set Scene Frame Rate",
     "Set the scene's frame rate to the result's and use one scene frame per result frame"),
)
TIMINGS = tuple(item[0] for item in TIMING_ITEMS)
RANGE_KEY = "t4d_frame_range"  # custom property: the scene frames an imported result plays over


@dataclass(frozen=True)
class FrameRange:
    """Scene frames ``start``..``end`` (inclusive) that the result's first..last frame map to."""

    start: int
    end: int


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def frame_range(scene: bpy.types.Scene, frames: int, fps: float, start: int | None = None,
                end: int | None = None, timing: str = "REALTIME") -> FrameRange:
    """The scene frames a result of ``frames`` frames at ``fps`` plays over (pure; no edits).

    An explicit ``end`` wins (a custom range chosen by the user). Otherwise ``timing`` decides:
    REALTIME spans ``(frames - 1) * scene_fps / fps`` frames, PER_FRAME and SCENE_FPS one scene
    frame per result frame.
    """
    if timing not in TIMINGS:
        raise AddonError(f"unknown timing {timing!r}", f"Use one of {', '.join(TIMINGS)}.", "bad_settings")
    start = int(scene.frame_start if start is None else start)
    if end is None:
        steps = frames - 1
        if timing == "REALTIME" and fps > 0:
            steps = round(steps * scene_fps(scene) / fps)
        end = start + max(int(steps), 0)
    end = int(end)
    if end <= start and frames > 1:
        raise AddonError(f"frame range {start}-{end} is empty", "Set the end frame after the start frame.", "bad_settings")
    return FrameRange(start, end)


def placement_matrix(center: Any, scale: float) -> Matrix:
    """Object transform that undoes the normalisation: world = p / scale + center."""
    inv = 1.0 / float(scale)
    return Matrix.Translation(Vector(center)) @ Matrix.Diagonal((inv, inv, inv, 1.0))


def _target_collection(scene: bpy.types.Scene, source: bpy.types.Object | None,
                       view_layer: bpy.types.ViewLayer) -> bpy.types.Collection:
    """The source's first collection that belongs to ``scene``, else the active collection."""
    if source is not None:
        in_scene = {scene.collection, *scene.collection.children_recursive}
        for coll in source.users_collection:
            if coll in in_scene:
                return coll
    return view_layer.active_layer_collection.collection


def _fit_scene_range(scene: bpy.types.Scene, obj: bpy.types.Object, rng: FrameRange) -> None:
    """Scene range = the union of this result's range and the other imported results' ranges."""
    start, end = rng.start, rng.end
    for other in scene.objects:
        if other is not obj and RANGE_KEY in other:
            s, e = other[RANGE_KEY]
            start, end = min(start, int(s)), max(end, int(e))
    scene.frame_start, scene.frame_end = start, end


def place_result(
    obj: bpy.types.Object,
    scene: bpy.types.Scene,
    info: dict[str, Any] | None,
    *,
    frames: int,
    fps: float,
    frame_start: int | None = None,
    frame_end: int | None = None,
    timing: str = "REALTIME",
    fit_scene_range: bool = True,
    hide_source: bool = True,
    view_layer: bpy.types.ViewLayer | None = None,
) -> FrameRange:
    """Place a freshly created result object ``obj`` (not yet linked anywhere) in ``scene``.

    ``info`` is blender.json's payload (``source_object``, ``source_matrix_world``, ``center``,
    ``scale``, ``frame_start``, ``frame_end``, ``custom_frame_range``) or None for a bare result.
    ``frame_start``/``frame_end`` override it. Returns the frame range the caller's animation must
    use (also stored on the object as ``t4d_frame_range``). See the module docstring for what is
    changed; ``fit_scene_range``/``hide_source`` turn those two edits off.
    """
    info = info or {}
    view_layer = view_layer or (bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0])
    if timing == "SCENE_FPS" and fps > 0:
        scene.render.fps = max(1, round(fps))
        scene.render.fps_base = scene.render.fps / fps
    rng = job_frame_range(scene, info, frames, fps, frame_start, frame_end, timing)

    if "center" in info and "scale" in info:
        obj.matrix_world = placement_matrix(info["center"], info["scale"])
    name = info.get("source_object")
    source = scene.objects.get(name) if name else None

    _target_collection(scene, source, view_layer).objects.link(obj)
    if source is not None:
        at_job = Matrix(info["source_matrix_world"]) if "source_matrix_world" in info else source.matrix_world
        basis = obj.matrix_world.copy()
        obj.parent = source
        # the result sits where the source was when the job ran, and moves with it from there
        obj.matrix_parent_inverse = at_job.inverted_safe()
        obj.matrix_basis = basis
        obj["t4d_source"] = source.name
        if hide_source:
            source.hide_set(True, view_layer=view_layer)
            source.hide_render = True

    select_and_fit(obj, scene, rng, view_layer, fit_scene_range)
    return rng


def job_frame_range(scene: bpy.types.Scene, info: dict[str, Any], frames: int, fps: float,
                    frame_start: int | None = None, frame_end: int | None = None,
                    timing: str = "REALTIME") -> FrameRange:
    """The range a result plays over, from explicit overrides, else blender.json's start and (only
    when the user chose it in the panel, ``custom_frame_range``) its end, else ``timing``."""
    start = frame_start if frame_start is not None else info.get("frame_start")
    end = frame_end
    if end is None and frame_start is None and info.get("custom_frame_range"):
        end = info.get("frame_end")
    return frame_range(scene, frames, fps, start, end, timing)


def select_and_fit(obj: bpy.types.Object, scene: bpy.types.Scene, rng: FrameRange,
                   view_layer: bpy.types.ViewLayer, fit_scene_range: bool = True) -> None:
    """Make ``obj`` the only selected and the active object, record its range and fit the scene's."""
    for other in view_layer.objects:
        other.select_set(False, view_layer=view_layer)
    obj.select_set(True, view_layer=view_layer)
    view_layer.objects.active = obj
    obj[RANGE_KEY] = [rng.start, rng.end]
    if fit_scene_range:
        _fit_scene_range(scene, obj, rng)
    elif scene.frame_end < rng.end:
        scene.frame_end = rng.end
