"""Animate meshes without the UI, through the add-on's own code path (job -> backend -> import).

    blender -b --python scripts/batch_animate.py -- --input scene.blend --prompt "a dog wagging its tail" --out OUT
    blender -b --python scripts/batch_animate.py -- --input meshes/ --prompt "..." --out OUT
    python scripts/batch_animate.py --input meshes/ --prompt "..." --out OUT     # bpy as a module

Input: a .blend (every mesh object with faces is animated, the file is saved as
``OUT/<name>_animated.blend``) or a folder of .glb/.gltf/.obj files (each is imported into an
empty scene, its meshes joined into one object, animated and saved as ``OUT/<stem>.blend``).
Job folders go to ``OUT/jobs``. The backend and the model's weights are checked once, before the
first object is rendered. Progress is printed as one JSON object per line on stdout; the
exit code is 0 only if every object succeeded (the others are still processed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402  (Blender's module, or the bpy wheel)

from addon import job_io, runner, session  # noqa: E402
from addon.errors import AddonError  # noqa: E402
from addon.import_mesh_animation import describe  # noqa: E402
from addon.preferences import BackendConfig  # noqa: E402

MESH_SUFFIXES = (".glb", ".gltf", ".obj")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="batch_animate.py", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, type=Path, help=".blend file or folder of .glb/.gltf/.obj files")
    p.add_argument("--prompt", required=True, help="motion description")
    p.add_argument("--out", required=True, type=Path, help="output folder (.blend files and jobs/)")
    p.add_argument("--preset", default="standard", choices=sorted(job_io.PRESETS))
    p.add_argument("--model", default="animate3d", choices=["animate3d", "tiny"])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame-start", type=int, default=1)
    p.add_argument("--engine", default="AUTO", choices=["AUTO", "CYCLES", "BLENDER_EEVEE"])
    p.add_argument("--python", default="", help="backend interpreter (default: $TRACK4DGEN_PYTHON or the project's .venv)")
    p.add_argument("--weights", default="", help="pretrained weights folder (job.json weights.path)")
    p.add_argument("--remote", default="", help="URL of a `track4dgen serve` machine instead of a local backend")
    p.add_argument("--token", default=os.environ.get("TRACK4DGEN_TOKEN", ""), help="server token (default: $TRACK4DGEN_TOKEN)")
    p.add_argument("--settings-json", default="", help="JSON object of extra JobSettings fields (e.g. stage2 overrides)")
    p.add_argument("--timeout", type=float, default=0.0, help="seconds per object before it is cancelled (0 = none)")
    p.add_argument("--import-mode", default="object", choices=["object", "gaussians", "both"],
                   help="object: animate a copy of each mesh (shape keys); gaussians: the 4D Gaussians; both")
    return p.parse_args(argv)


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def script_argv() -> list[str]:
    """Arguments after `--` under Blender; all arguments under plain Python."""
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]


def import_mesh_file(path: Path) -> bpy.types.Object:
    """Load one mesh file into the (empty) current scene and join its meshes into one object."""
    if path.suffix.lower() in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    else:
        bpy.ops.wm.obj_import(filepath=str(path))
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    if not meshes:
        raise AddonError(f"{path.name} contains no mesh", "Export the object as a mesh.", "bad_input")
    view_layer = bpy.context.view_layer
    for o in view_layer.objects:
        o.select_set(o in meshes)
    view_layer.objects.active = meshes[0]
    if len(meshes) > 1:
        with bpy.context.temp_override(active_object=meshes[0], selected_editable_objects=meshes):
            bpy.ops.object.join()
    obj = view_layer.objects.active
    obj.name = path.stem
    return obj


def animate(obj: bpy.types.Object, settings: job_io.JobSettings, cfg: BackendConfig, timeout: float, mode: str = "object") -> bool:
    """One object through the add-on's session; prints progress; True on success."""
    name = obj.name
    emit(object=name, stage="start", message="rendering views and writing the job")
    try:
        # the backend and weights were checked once in main()
        sess = session.AnimateSession.start(bpy.context, obj, settings, cfg, checked=True, mode=mode.upper())
        emit(object=name, stage="job", message=str(sess.job_dir))

        def on_event(event: dict) -> None:
            if "stage" in event:  # errors are printed once, below, with the add-on's hint
                emit(object=name, **event)

        result = sess.run(bpy.context, timeout=timeout or None, on_event=on_event)
    except AddonError as err:
        emit(object=name, error=err.code, message=err.message, hint=err.hint)
        return False
    if result is None:
        emit(object=name, error="cancelled", message="the job was cancelled", hint="")
        return False
    emit(object=name, stage="imported", message=describe(result))
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(script_argv() if argv is None else argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = job_io.JobSettings(prompt=args.prompt, seed=args.seed, frames=args.frames, preset=args.preset,
                                  model=args.model, engine=args.engine, frame_start=args.frame_start,
                                  weights={"path": args.weights} if args.weights else {})
    try:
        if args.settings_json:
            settings = job_io.settings_with_overrides(settings, args.settings_json)
        settings.resolved()
        cfg = BackendConfig(mode="REMOTE" if args.remote else "LOCAL", url=args.remote, token=args.token,
                            python=args.python or runner.detect_backend_python(ROOT), jobs_dir=str(out / "jobs"))
        session.check_backend(cfg)
    except AddonError as err:
        emit(error=err.code, message=err.message, hint=err.hint)
        return 2

    src = args.input.resolve()
    ok, failed = 0, 0
    t0 = time.monotonic()
    targets: list[str] = []
    files: list[Path] = []
    if src.is_file() and src.suffix.lower() == ".blend":
        bpy.ops.wm.open_mainfile(filepath=str(src))
        targets = [o.name for o in bpy.context.scene.objects if o.type == "MESH" and len(o.data.polygons) > 0]
        if not targets:
            emit(error="bad_input", message=f"{src.name} has no mesh objects with faces", hint="Pass a .blend with meshes.")
            return 1
    elif src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
        if not files:
            emit(error="bad_input", message=f"{src} has no {'/'.join(MESH_SUFFIXES)} files", hint="Point --input at mesh files.")
            return 1
    else:
        emit(error="bad_input", message=f"{src} is neither a .blend file nor a folder", hint="Pass --input FILE.blend or DIR.")
        return 2
    try:  # the model's weights: checked once for all objects, before anything is rendered
        session.check_backend(cfg, settings)
    except AddonError as err:
        emit(error=err.code, message=err.message, hint=err.hint)
        return 2

    if targets:
        for name in targets:
            if animate(bpy.data.objects[name], settings, cfg, args.timeout, args.import_mode):
                ok += 1
            else:
                failed += 1
        dest = out / f"{src.stem}_animated.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(dest))
        emit(stage="saved", message=str(dest))
    else:
        for path in files:
            bpy.ops.wm.read_factory_settings(use_empty=True)
            try:
                obj = import_mesh_file(path)
            except (AddonError, RuntimeError) as err:
                emit(object=path.name, error="bad_input", message=str(err), hint="Check that the file opens in Blender.")
                failed += 1
                continue
            if animate(obj, settings, cfg, args.timeout, args.import_mode):
                ok += 1
                dest = out / f"{path.stem}.blend"
                bpy.ops.wm.save_as_mainfile(filepath=str(dest))
                emit(object=obj.name, stage="saved", message=str(dest))
            else:
                failed += 1
    emit(stage="done", ok=ok, failed=failed, wall_s=round(time.monotonic() - t0, 1))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    # also under `blender -b --python`: SystemExit sets Blender's exit code
    sys.exit(main())
