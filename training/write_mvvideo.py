"""Write synthetic animated objects in Animate3D's MV-Video training format.

Layout written under ``out_dir`` (what ``training/data.py`` reads, and what Animate3D's loader reads):

    info.json                      [{"data_path": [4 mp4 paths, relative to info.json],
                                     "text_prompt": str, "angle": {"elv": deg, "azi_start": deg}}, ...]
    <object>/view{k}.mp4           48-frame RGB video per view, object over a solid grey background
    <object>/exact_tracks.npz      exact tracks of the 15x15 query grid for every clip start frame
    <object>/gt/animation.npz      vertices [F, V, 3], faces, colors (for tests and metrics)
    <object>/gt/cameras.json       the 4 OpenCV cameras (track4dgen.cameras convention)

Why real files: every test and smoke run then goes through the same decode/mask/camera path as a
real Objaverse-scale dataset would. Run ``python -m training.write_mvvideo OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from track4dgen.cameras import Camera, orbit_camera, save_cameras
from track4dgen.tracking.oracle import EXACT_TRACKS_FILE, exact_tracks
from track4dgen.tracking.queries import GRID_SIZE, grid_points
from track4dgen.video_io import write_mp4

NUM_FRAMES = 48  # Animate3D's MV-Video animations
CLIP_FRAMES = 16
CLIP_STRIDE = 3
BACKGROUND = (0.5, 0.5, 0.5)  # Animate3D bakes a grey background into its videos


def _synthetic():
    """track4dgen.synthetic's public API (make_object, list_objects, render_mesh)."""
    from track4dgen import synthetic

    return synthetic


def mvvideo_cameras(elevation: float, azi_start: float, resolution: int, num_views: int = 4) -> list[Camera]:
    """Animate3D's data rig: num_views azimuths over 360 degrees from azi_start (0 = the front),
    one elevation; ``camera_embed`` turns these into the reference's ``get_camera`` vectors."""
    return [
        orbit_camera(azi_start + k * 360.0 / num_views, elevation, resolution=resolution) for k in range(num_views)
    ]


def clip_starts(num_frames: int = NUM_FRAMES, clip_frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE) -> list[int]:
    """Every first frame a strided clip can start at (the loader's random phase)."""
    n = num_frames - (clip_frames - 1) * stride
    if n < 1:
        raise ValueError(f"{num_frames} frames cannot hold a {clip_frames}-frame clip at stride {stride}")
    return list(range(n))


def write_object(
    name: str,
    out_dir: Path,
    resolution: int = 64,
    num_frames: int = NUM_FRAMES,
    elevation: float = 15.0,
    azi_start: float = 0.0,
    background: Sequence[float] = BACKGROUND,
    fps: int = 8,
    supersample: int = 2,
    starts: Optional[Sequence[int]] = None,
) -> dict:
    """Render one object's four views, save videos + exact tracks; return its info.json entry."""
    syn = _synthetic()
    mesh = syn.make_object(name, frames=num_frames)
    cams = mvvideo_cameras(elevation, azi_start, resolution)
    obj_dir = out_dir / name
    (obj_dir / "gt").mkdir(parents=True, exist_ok=True)

    paths = []
    for k, cam in enumerate(cams):
        frames = np.stack(
            [syn.render_mesh(v, mesh.faces, mesh.colors, cam, background, supersample) for v in mesh.vertices_per_frame]
        )
        write_mp4(obj_dir / f"view{k}.mp4", frames[..., :3], fps=fps)
        paths.append(f"{name}/view{k}.mp4")

    grid = grid_points(resolution, resolution, GRID_SIZE)
    queries = np.broadcast_to(grid, (len(cams), *grid.shape)).copy()
    payload: dict[str, np.ndarray] = {"image_size": np.array([resolution, resolution])}
    for s in starts if starts is not None else clip_starts(num_frames):
        tr, vis = exact_tracks(mesh.vertices_per_frame, mesh.faces, cams, queries, start=s)
        payload[f"start{s}_queries"] = queries
        payload[f"start{s}_tracks"] = tr
        payload[f"start{s}_visibility"] = vis
    np.savez_compressed(obj_dir / EXACT_TRACKS_FILE, **payload)
    np.savez_compressed(
        obj_dir / "gt" / "animation.npz",
        vertices=mesh.vertices_per_frame.astype(np.float32),
        faces=mesh.faces,
        colors=mesh.colors,
    )
    save_cameras(obj_dir / "gt" / "cameras.json", cams)
    return {
        "data_path": paths,
        "text_prompt": mesh.prompt or name.replace("_", " "),
        "angle": {"elv": float(elevation), "azi_start": float(azi_start)},
    }


def write_dataset(
    out_dir: str | Path,
    names: Optional[Sequence[str]] = None,
    resolution: int = 64,
    num_frames: int = NUM_FRAMES,
    elevation: float = 15.0,
    azi_starts: Optional[Sequence[float]] = None,
    **kwargs,
) -> Path:
    """Write every named object (default: all synthetic objects); returns the info.json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else _synthetic().list_objects()
    azi = list(azi_starts) if azi_starts is not None else [0.0] * len(names)
    if len(azi) != len(names):
        raise ValueError(f"azi_starts has {len(azi)} entries for {len(names)} objects")
    entries = [
        write_object(n, out, resolution, num_frames, elevation, a, **kwargs) for n, a in zip(names, azi)
    ]
    info = out / "info.json"
    info.write_text(json.dumps(entries, indent=1))
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--objects", nargs="*", default=None, help="synthetic object names (default: all)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--frames", type=int, default=NUM_FRAMES)
    p.add_argument("--elevation", type=float, default=15.0)
    a = p.parse_args(argv)
    info = write_dataset(a.out_dir, a.objects, a.resolution, a.frames, a.elevation)
    print(info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
