"""Render the four RGBA conditioning views of the normalised object with the rig cameras.

Rendering happens in a throw-away scene that holds only the normalised copy, the rig and a
uniform white world: the user's scene, its lights and its render settings are never touched,
and the object is lit evenly so the renders show its albedo (what the video model expects), with a soft key light for shape cues.
The film is transparent so alpha is the object mask; the 'Standard' view transform keeps
colours un-tonemapped, so the backend sees the same values the mesh carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import bpy

ENGINES = ("AUTO", "CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH")


def gpu_available() -> bool:
    """True when Blender runs with a UI and a GPU backend (EEVEE needs one; -b has none)."""
    if bpy.app.background:
        return False
    try:
        import gpu

        # a software OpenGL driver can run EEVEE, but far slower than Cycles on the CPU
        return gpu.platform.device_type_get() not in ("", "UNKNOWN", "SOFTWARE")
    except Exception:  # no GPU module / context: treat as CPU-only
        return False


def pick_engine(requested: str) -> str:
    """AUTO -> EEVEE with a GPU (fast), otherwise Cycles on the CPU (works headless)."""
    if requested not in ENGINES:
        raise ValueError(f"unknown render engine {requested!r}; use one of {ENGINES}")
    if requested == "AUTO":
        return "BLENDER_EEVEE" if gpu_available() else "CYCLES"
    return requested


# EEVEE's engine identifier: BLENDER_EEVEE_NEXT in Blender 4.2 to 4.x, BLENDER_EEVEE in 5.0.
EEVEE_IDS = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")


def set_engine(render: bpy.types.RenderSettings, engine: str) -> None:
    """``render.engine = engine``, with "BLENDER_EEVEE" meaning whichever EEVEE id this Blender has."""
    try:
        render.engine = engine
    except TypeError:  # not in this version's enum
        if engine not in EEVEE_IDS:
            raise
        render.engine = EEVEE_IDS[1 - EEVEE_IDS.index(engine)]


def configure_scene(scene: bpy.types.Scene, resolution: int, engine: str, samples: int) -> None:
    """Square RGBA PNG renders, transparent film, no colour transform, neutral white world."""
    r = scene.render
    set_engine(r, pick_engine(engine))
    r.resolution_x = r.resolution_y = int(resolution)
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    r.use_persistent_data = False
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    if r.engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = int(samples)
        scene.cycles.use_denoising = False
        scene.cycles.use_adaptive_sampling = False
        scene.cycles.max_bounces = 2
    elif r.engine in EEVEE_IDS:
        scene.eevee.taa_render_samples = int(samples)
    elif r.engine == "BLENDER_WORKBENCH":
        scene.display.shading.light = "FLAT"
        scene.display.shading.color_type = "TEXTURE"

    world = bpy.data.worlds.new("T4DG_world")
    if world.node_tree is None:  # Blender < 5 creates worlds without nodes
        world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    if bg is not None:
        bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        bg.inputs["Strength"].default_value = 0.7
    world.color = (1.0, 1.0, 1.0)
    scene.world = world


def add_key_light(scene: bpy.types.Scene) -> tuple[bpy.types.Object, bpy.types.Light]:
    """A soft sun from the upper front-left: enough shading for the model to read the shape,
    while the ambient world keeps colours close to the albedo. Returned for clean-up."""
    light = bpy.data.lights.new("T4DG_key", "SUN")
    light.energy = 1.5
    light.angle = 0.5
    obj = bpy.data.objects.new("T4DG_key", light)
    obj.rotation_euler = (0.9, 0.0, -0.6)
    scene.collection.objects.link(obj)
    return obj, light


def render_view(scene: bpy.types.Scene, cam: bpy.types.Object, k: int, out_dir: Path) -> Path:
    """Render rig camera ``k`` into ``out_dir/{k}.png`` (one view per call: the add-on shows
    progress between views instead of freezing for all four)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene.camera = cam
    path = out_dir / f"{k}.png"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    if not path.is_file():
        from .errors import AddonError

        raise AddonError(f"rendering conditioning view {k} wrote no image ({path})",
                         "Check that the render engine works in this Blender (try Cycles).", "render_failed")
    return path


def render_views(scene: bpy.types.Scene, cams: Sequence[bpy.types.Object], out_dir: Path) -> list[Path]:
    """Render one PNG per rig camera into ``out_dir/{k}.png``; returns the paths."""
    return [render_view(scene, cam, k, out_dir) for k, cam in enumerate(cams)]
