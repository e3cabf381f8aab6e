"""Write a backend job folder from a Blender mesh object.

Job folder layout and ``job.json`` schema are the backend's (``track4dgen.job``): job.json,
mesh.glb, views/0..3.png, cameras.json. The backend rejects unknown job.json keys, so the add-on's
own bookkeeping (which object, how it was normalised, which frames to write) goes into a separate
``blender.json`` that the backend ignores and the importer reads to put the result back.

Normalisation: the evaluated object (modifiers applied) is copied into world space, then moved and
scaled so its bounding-box centre is the origin and every vertex lies in the unit sphere -- the
frame the rig (distance 3, 40 degree FOV) was made for. ``world = normalised / scale + center``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, Vector

from . import cameras, render_views
from .errors import AddonError

BLENDER_JSON = "blender.json"

# Quality presets: job resolution + Stage Two schedule. "paper" is the paper's schedule
# (256 px, 750 reconstruction + 250 SDS iterations); "preview" is for a quick look on a CPU.
PRESETS: dict[str, dict[str, Any]] = {
    # preview: FreeInit off ("fast"), 8 images per step with every frame from the start (the paper's
    # 64-image progressive batches made this preset take 43 min on a 2-core CPU)
    "preview": {"resolution": 64, "samples": 8, "stage1": {"steps": 10, "feature_step": 8, "preset": "fast"},
                "stage2": {"iters_rec": 150, "iters_sds": 30, "num_gaussians": 5000, "batch_images": 8,
                           "progressive_iters_per_frame": 0}},
    "standard": {"resolution": 256, "samples": 32, "stage1": {},
                 "stage2": {"iters_rec": 400, "iters_sds": 100, "num_gaussians": 20000}},
    "paper": {"resolution": 256, "samples": 64, "stage1": {}, "stage2": {"iters_rec": 750, "iters_sds": 250}},
}


@dataclass
class JobSettings:
    """Everything needed to write one job; built from the panel/preferences or the batch CLI."""

    prompt: str
    seed: int = 0
    frames: int = 16
    preset: str = "standard"
    model: str = "animate3d"  # "tiny" = the backend's CPU test model
    device: str = "auto"
    engine: str = "AUTO"
    frame_start: int = 1
    frame_end: int | None = None  # None: frame_start + frames - 1 (one scene frame per result frame)
    resolution: int | None = None  # None: from the preset
    samples: int | None = None  # None: from the preset
    stage1: dict[str, Any] = field(default_factory=dict)  # merged over the preset's stage1
    stage2: dict[str, Any] = field(default_factory=dict)  # merged over the preset's stage2
    weights: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> "JobSettings":
        """Check the values and fill preset-dependent ones; raises AddonError naming the field."""
        if self.preset not in PRESETS:
            raise AddonError(f"unknown quality preset {self.preset!r}", f"Use one of {sorted(PRESETS)}.", "bad_settings")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise AddonError("the prompt is empty", "Describe the motion, e.g. 'a dog wagging its tail'.", "bad_settings")
        if not 2 <= int(self.frames) <= 64:
            raise AddonError(f"frame count {self.frames} is out of range", "Use 2 to 64 frames (the model was trained on 16).", "bad_settings")
        p = PRESETS[self.preset]
        out = JobSettings(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        out.resolution = int(self.resolution or p["resolution"])
        out.samples = int(self.samples or p["samples"])
        out.stage1 = {**p["stage1"], **self.stage1}
        out.stage2 = {**p["stage2"], **self.stage2}
        out.frame_end = int(self.frame_end) if self.frame_end is not None else self.frame_start + self.frames - 1
        if out.frame_end <= out.frame_start:
            raise AddonError(f"frame range {out.frame_start}-{out.frame_end} is empty",
                             "Set the end frame after the start frame.", "bad_settings")
        return out

    def job_json(self) -> dict[str, Any]:
        """The backend's job.json (keys exactly as ``track4dgen.job.KNOWN_KEYS`` allows)."""
        s = self.resolved()
        return {
            "version": 1,
            "prompt": s.prompt,
            "seed": int(s.seed),
            "frames": int(s.frames),
            "views": len(cameras.RIG_AZIMUTHS_DEG),
            "resolution": int(s.resolution),
            "model": s.model,
            "device": s.device,
            "stage1": dict(s.stage1),
            "stage2": dict(s.stage2),
            "weights": dict(s.weights),
        }


def settings_with_overrides(settings: JobSettings, overrides: str | dict[str, Any]) -> JobSettings:
    """A copy of ``settings`` with fields replaced from a dict or JSON object (unknown keys rejected)."""
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise AddonError(f"settings override is not valid JSON: {exc}", "Pass a JSON object.", "bad_settings") from exc
    if not isinstance(overrides, dict):
        raise AddonError("settings override must be a JSON object", "Pass e.g. {\"model\": \"tiny\"}.", "bad_settings")
    unknown = sorted(set(overrides) - set(JobSettings.__dataclass_fields__))
    if unknown:
        raise AddonError(f"unknown setting(s) {unknown}", f"Known: {sorted(JobSettings.__dataclass_fields__)}.", "bad_settings")
    values = {k: getattr(settings, k) for k in JobSettings.__dataclass_fields__}
    values.update(overrides)
    return JobSettings(**values)


def check_source_object(obj: bpy.types.Object | None) -> None:
    """The operator works on one mesh object with faces; anything else gets a clear report."""
    if obj is None:
        raise AddonError("no object is selected", "Select one mesh object and try again.", "bad_selection")
    if obj.type != "MESH":
        raise AddonError(f"{obj.name!r} is a {obj.type.lower()}, not a mesh",
                         "Select a mesh object (convert curves/text with Object › Convert › Mesh).", "bad_selection")
    if len(obj.data.polygons) == 0:
        raise AddonError(f"mesh {obj.name!r} has no faces",
                         "Select a mesh with faces; point clouds and wire meshes cannot be rendered.", "bad_selection")


def selected_sources(context: bpy.types.Context) -> list[bpy.types.Object]:
    """The selected mesh objects, the active one first. Several meshes are animated as one
    object (joined for the job); anything that is not a mesh makes the selection ambiguous."""
    selected = list(getattr(context, "selected_objects", None) or [])
    if len(selected) > 1:
        others = [o for o in selected if o.type != "MESH"]
        if others:
            raise AddonError(f"{len(selected)} objects are selected and {others[0].name!r} is not a mesh",
                             "Select one mesh object, or only meshes to animate them together as one.", "bad_selection")
        active = getattr(context, "active_object", None)
        selected.sort(key=lambda o: (o != active, o.name))
    if not selected:
        check_source_object(None)
    for obj in selected:
        check_source_object(obj)
    return selected


def selected_source(context: bpy.types.Context) -> bpy.types.Object:
    """The one selected mesh object (several selected objects are ambiguous here)."""
    selected = list(getattr(context, "selected_objects", None) or [])
    if len(selected) > 1:
        raise AddonError(f"{len(selected)} objects are selected", "Select exactly one mesh object.", "bad_selection")
    obj = selected[0] if selected else None
    check_source_object(obj)
    return obj


def _as_list(objs) -> list[bpy.types.Object]:
    return list(objs) if isinstance(objs, (list, tuple)) else [objs]


def world_mesh(objs, depsgraph: bpy.types.Depsgraph) -> bpy.types.Mesh:
    """A new mesh: the evaluated object(s) (modifiers applied) in world space; several objects are
    joined into one mesh with their materials."""
    objs = _as_list(objs)
    meshes = []
    for obj in objs:
        evaluated = obj.evaluated_get(depsgraph)
        mesh = bpy.data.meshes.new_from_object(evaluated, preserve_all_data_layers=True, depsgraph=depsgraph)
        mesh.transform(obj.matrix_world)
        if obj.matrix_world.determinant() < 0.0:  # a mirrored object: keep faces pointing outwards
            mesh.flip_normals()
        meshes.append(mesh)
    if len(meshes) > 1:
        scene = bpy.data.scenes.new("T4DG_join")
        parts = [bpy.data.objects.new(f"T4DG_part_{i}", m) for i, m in enumerate(meshes)]
        try:
            for part in parts:
                scene.collection.objects.link(part)
            with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0], active_object=parts[0],
                                           object=parts[0], selected_objects=parts, selected_editable_objects=parts):
                bpy.ops.object.join()
            joined = parts[0].data
        finally:  # join removed the other parts; their meshes are left without users
            part_names = [f"T4DG_part_{i}" for i in range(len(parts))]
            mesh_names = [m.name for m in meshes[1:]]
            for name in part_names:
                if name in bpy.data.objects:
                    bpy.data.objects.remove(bpy.data.objects[name])
            bpy.data.scenes.remove(scene)
            for name in mesh_names:
                if name in bpy.data.meshes and bpy.data.meshes[name].users == 0:
                    bpy.data.meshes.remove(bpy.data.meshes[name])
        meshes = [joined]
    mesh = meshes[0]
    mesh.name = f"T4DG_norm_{objs[0].name}"
    return mesh


def normalised_mesh(objs, depsgraph: bpy.types.Depsgraph) -> tuple[bpy.types.Mesh, np.ndarray, float]:
    """A new mesh: the evaluated object(s) in world space, centred and scaled into the unit sphere.

    Returns (mesh, center[3] in world units, scale) with ``normalised = (world - center) * scale``.
    """
    name = _as_list(objs)[0].name
    mesh = world_mesh(objs, depsgraph)
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    if len(co) == 0 or not np.isfinite(co).all():
        bpy.data.meshes.remove(mesh)
        raise AddonError(f"mesh {name!r} has no vertices or non-finite coordinates",
                         "Fix the mesh (Mesh › Clean Up) and try again.", "bad_mesh")
    center = 0.5 * (co.min(0) + co.max(0))
    radius = float(np.linalg.norm(co - center, axis=1).max())
    if radius <= 0.0:
        bpy.data.meshes.remove(mesh)
        raise AddonError(f"mesh {name!r} has zero size", "Scale the object up or select another.", "bad_mesh")
    scale = 1.0 / radius
    mesh.transform(Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(-Vector(center)))
    mesh.update()
    return mesh, center, scale


def export_glb(scene: bpy.types.Scene, obj: bpy.types.Object, path: Path) -> None:
    """mesh.glb in Blender's Z-up frame (the project's world frame) with vertex colours."""
    view_layer = scene.view_layers[0]
    for other in scene.objects:  # the exporter reads each object's own selection flag
        other.select_set(other == obj, view_layer=view_layer)
    has_colors = len(obj.data.color_attributes) > 0
    with bpy.context.temp_override(scene=scene, view_layer=view_layer, active_object=obj,
                                   selected_objects=[obj], object=obj):
        bpy.ops.export_scene.gltf(
            filepath=str(path),
            export_format="GLB",
            use_selection=True,
            export_yup=False,
            export_apply=True,
            export_animations=False,
            export_materials="EXPORT",
            export_vertex_color="ACTIVE" if has_colors else "NONE",
            export_extras=False,
        )
    if not path.is_file():
        raise AddonError(f"the glTF exporter wrote no file at {path}", "Check that the glTF add-on is enabled.", "export_failed")


def prepare_job(context: bpy.types.Context, obj, job_dir: str | Path, settings: JobSettings) -> dict[str, Any]:
    """Write a complete job folder for ``obj`` (or several meshes, joined); leaves the user's scene
    and data as they were. Returns the blender.json payload (also written to the folder)."""
    steps = prepare_job_steps(context, obj, job_dir, settings)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


RENDER_STEP_LABEL = "Rendering the four views"


def prepare_job_steps(context: bpy.types.Context, objs, job_dir: str | Path, settings: JobSettings):
    """:func:`prepare_job` one conditioning view at a time: a generator yielding ``(done, total)``
    after each render and returning the blender.json payload, so the UI can show progress between
    views instead of freezing for all four. Closing it early removes everything it created."""
    objs = _as_list(objs)
    for obj in objs:
        check_source_object(obj)
    obj = objs[0]
    s = settings.resolved()
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    depsgraph = context.evaluated_depsgraph_get()

    created: list[tuple[Any, Any]] = []  # (collection, datablock) to remove afterwards
    tmp_scene = bpy.data.scenes.new("T4DG_render")
    try:
        mesh, center, scale = normalised_mesh(objs, depsgraph)
        created.append((bpy.data.meshes, mesh))
        copy = bpy.data.objects.new(f"T4DG_norm_{obj.name}", mesh)
        created.append((bpy.data.objects, copy))
        tmp_scene.collection.objects.link(copy)
        render_views.configure_scene(tmp_scene, s.resolution, s.engine, s.samples)
        created.append((bpy.data.worlds, tmp_scene.world))
        key_obj, key_light = render_views.add_key_light(tmp_scene)
        created += [(bpy.data.lights, key_light), (bpy.data.objects, key_obj)]
        rig = cameras.make_rig()
        for cam in rig:
            tmp_scene.collection.objects.link(cam)
            created.append((bpy.data.cameras, cam.data))
            created.append((bpy.data.objects, cam))

        yield 0, len(rig)
        for k, cam in enumerate(rig):
            render_views.render_view(tmp_scene, cam, k, job_dir / "views")
            yield k + 1, len(rig)
        (job_dir / "cameras.json").write_text(json.dumps(cameras.cameras_json(rig, tmp_scene), indent=1))
        export_glb(tmp_scene, copy, job_dir / "mesh.glb")
        (job_dir / "job.json").write_text(json.dumps(s.job_json(), indent=1))
        info = {
            "source_object": obj.name,
            "source_objects": [o.name for o in objs],  # several: joined for the job, the result is one object
            "source_matrix_world": [list(row) for row in obj.matrix_world],
            "center": [float(c) for c in center],
            "scale": float(scale),
            "frame_start": int(s.frame_start),
            "frame_end": int(s.frame_end),
            "custom_frame_range": settings.frame_end is not None,  # else the importer fits the range to the fps
            "frames": int(s.frames),
            "preset": s.preset,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "settings": {k: v for k, v in asdict(s).items() if k != "prompt"},
        }
        (job_dir / BLENDER_JSON).write_text(json.dumps(info, indent=1))
        return info
    finally:
        bpy.data.scenes.remove(tmp_scene)
        for coll, block in reversed(created):
            if block is not None and block.name in coll and coll[block.name] == block:
                coll.remove(block)


def read_blender_json(result_or_job_dir: str | Path) -> dict[str, Any] | None:
    """blender.json next to a result: in the folder itself or in its parent (the job folder)."""
    d = Path(result_or_job_dir)
    for candidate in (d / BLENDER_JSON, d.parent / BLENDER_JSON):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError as exc:
                raise AddonError(f"{candidate} is not valid JSON: {exc}", "Delete or fix blender.json.", "bad_blender_json") from exc
    return None
