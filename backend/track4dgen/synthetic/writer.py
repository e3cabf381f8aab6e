"""Write a synthetic object as a Stage-Two-only job folder with its ground truth, and read it back.

Layout (the job part is exactly what ``track4dgen.job.load_job`` validates)::

    job.json  mesh.glb  cameras.json  views/{k}.png  videos/view{k}/{f:03d}.png
    tracks.npz              only with ``tracks``: 2D tracks of the videos for Stage Two (stage2/tracks.py)
    gt/animation.npz        vertices [F,V,3], faces [T,3], colors [V,3], name, prompt
    gt/tracks.npz           tracks [V,F,P,2] pixels, visibility [V,F,P], points_canonical [P,3],
                            points [F,P,3], face_ids [P], barycentrics [P,3], point_colors [P,3]
    gt/heldout/view{k}/{f:03d}.png, gt/heldout_cameras.json   azimuths 45/135/225/315
    gt/degradation.json     only for degraded inputs (``degrade.Degradation``): what was done to videos/
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cameras import HELDOUT_AZIMUTHS_DEG, Camera, load_cameras, rig_cameras, save_cameras
from ..video_io import read_rgba, write_rgba
from .degrade import Degradation, degrade_videos, scaled_motion
from .objects import AnimatedMesh, make_object
from .render import render_animation
from .tracks import DEFAULT_POINTS, render_and_track

GT_DIR = "gt"
TRACK_MODES = ("none", "oracle", "noisy")


def save_png(path: Path, rgba: np.ndarray) -> None:
    """Float RGBA [H,W,4] in [0,1] -> 8-bit RGBA PNG (``video_io.write_rgba``; fast, lossless
    compression level 1 because a job writes hundreds of frames)."""
    write_rgba(path, rgba, compress_level=1)


load_png = read_rgba  # 8-bit RGBA PNG -> float32 [H,W,4] in [0,1]; the name is part of this module's API


def straight_alpha(rgba: np.ndarray, background) -> np.ndarray:
    """Renders composited on ``background`` (RGB over bg, alpha = coverage) -> straight-alpha RGBA,
    the job format (DESIGN.md; what Blender writes): edge pixels hold the object's own colour, so
    compositing them on the background once gives back the render. Where alpha is 0 the RGB is the
    background. Why: storing the composited RGB made every consumer that composites (Stage Two,
    eval) blend edge pixels with the background twice, whitening the silhouette."""
    a = rgba[..., 3:4]
    bg = np.asarray(background, dtype=np.float32).reshape((1,) * (rgba.ndim - 1) + (3,))
    premult = rgba[..., :3] - (1.0 - a) * bg
    rgb = np.where(a > 0, premult / np.maximum(a, 1e-6), bg)
    return np.concatenate([rgb.clip(0.0, 1.0), a], axis=-1).astype(np.float32)


def save_video(folder: Path, frames: np.ndarray) -> None:
    """Frames [F,H,W,4] -> folder/{f:03d}.png (the job's video layout)."""
    for f, img in enumerate(frames):
        save_png(folder / f"{f:03d}.png", img)


def load_video(folder: Path, frames: int) -> np.ndarray:
    """folder/{f:03d}.png for f < frames -> float32 [F,H,W,4]."""
    return np.stack([load_png(Path(folder) / f"{f:03d}.png") for f in range(frames)])


def export_glb(anim: AnimatedMesh, path: Path) -> None:
    """The rest pose (frame 0) as a GLB with 8-bit vertex colours, coordinates as stored (Z up)."""
    import trimesh

    colors = np.concatenate([np.round(anim.colors * 255.0), np.full((len(anim.colors), 1), 255.0)], axis=1).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=anim.canonical, faces=anim.faces, vertex_colors=colors, process=False)
    path.write_bytes(mesh.export(file_type="glb"))


def write_job(
    name: str,
    job_dir: str | Path,
    resolution: int = 64,
    frames: int = 16,
    stage2_overrides: dict[str, Any] | None = None,
    prompt: str | None = None,
    num_points: int = DEFAULT_POINTS,
    seed: int = 0,
    degrade: Degradation | None = None,
    tracks: str = "none",
) -> Path:
    """Build synthetic object ``name`` and write it as a Stage-Two-only job plus ground truth.

    Videos are rendered on ``stage2_overrides["background"]`` when given (white otherwise) and
    stored as straight-alpha RGBA (``straight_alpha``), so Stage Two's compositing on that background
    gives the render back exactly. ``degrade`` makes ``videos/`` look generated (``degrade.py``);
    ``views/`` (the conditioning renders) and the ground truth stay exact. ``tracks`` "oracle" writes
    the exact tracks of gt/ as the job's ``tracks.npz`` (Stage Two's track term), "noisy" the same
    degraded like a real tracker (``stage2.tracks.noisy_tracks``' defaults: 1 px jitter, 5 % outliers
    up to 8 px, 5 % visibility flips, at 64 px; scaled with the resolution), "none" none. Returns the job folder.
    """
    from ..job import parse_spec

    job_dir = Path(job_dir)
    spec: dict[str, Any] = {
        "version": 1,
        "prompt": prompt if prompt is not None else "",
        "seed": int(seed),
        "frames": int(frames),
        "views": 4,
        "resolution": int(resolution),
        "model": "tiny",
    }
    if stage2_overrides:
        spec["stage2"] = dict(stage2_overrides)
    parse_spec(spec)  # fail before rendering anything if the settings are invalid
    if degrade is not None:
        degrade.validate(int(spec["views"]))
    if tracks not in TRACK_MODES:
        raise ValueError(f"tracks must be one of {TRACK_MODES}, got {tracks!r}")
    anim = make_object(name, frames)
    if prompt is None:
        spec["prompt"] = anim.prompt
    background = tuple((stage2_overrides or {}).get("background", (1.0, 1.0, 1.0)))

    job_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("views", "videos", GT_DIR):  # no stale frames from an earlier, longer job
        shutil.rmtree(job_dir / sub, ignore_errors=True)
    (job_dir / "tracks.npz").unlink(missing_ok=True)
    gt = job_dir / GT_DIR
    gt.mkdir()

    cameras = rig_cameras(resolution)
    videos, gt_tracks = render_and_track(anim, cameras, num_points, seed, background=background)
    if degrade is not None and degrade.animate_view >= 0 and degrade.animate_scale != 1.0:
        k = degrade.animate_view
        videos[k] = render_animation(scaled_motion(anim.vertices_per_frame, degrade.animate_scale), anim.faces, anim.colors,
                                     [cameras[k]], background)[0]
    videos = straight_alpha(videos, background)
    for k in range(len(cameras)):
        save_png(job_dir / "views" / f"{k}.png", videos[k, 0])
    if degrade is not None:
        videos = degrade_videos(videos, degrade)
        (gt / "degradation.json").write_text(json.dumps(degrade.to_dict(), indent=1))
    for k in range(len(cameras)):
        save_video(job_dir / "videos" / f"view{k}", videos[k])
    save_cameras(job_dir / "cameras.json", cameras)
    export_glb(anim, job_dir / "mesh.glb")
    (job_dir / "job.json").write_text(json.dumps(spec, indent=1))

    np.savez_compressed(
        gt / "animation.npz",
        vertices=anim.vertices_per_frame,
        faces=anim.faces,
        colors=anim.colors,
        name=np.array(anim.name),
        prompt=np.array(anim.prompt),
    )
    np.savez_compressed(gt / "tracks.npz", **gt_tracks)
    if tracks != "none":
        t, vis = gt_tracks["tracks"].copy(), gt_tracks["visibility"]
        if degrade is not None and degrade.animate_view >= 0 and degrade.animate_scale != 1.0:
            k = degrade.animate_view  # a tracker follows the video's motion, not the true one
            t[k] = np.stack([cameras[k].project(p)[0] for p in scaled_motion(gt_tracks["points"], degrade.animate_scale)])
        if tracks == "noisy":
            from ..stage2.tracks import noisy_tracks

            px = resolution / 64.0  # the noise is defined at 64 px
            t, vis = noisy_tracks(t, vis, sigma_px=1.0 * px, outlier_px=8.0 * px, seed=seed, hidden_drift_px=1.0 * px)
        np.savez_compressed(job_dir / "tracks.npz", tracks=t, visibility=vis)
    held = rig_cameras(resolution, azimuths_deg=HELDOUT_AZIMUTHS_DEG)
    held_videos = straight_alpha(render_animation(anim.vertices_per_frame, anim.faces, anim.colors, held, background), background)
    for k in range(len(held)):
        save_video(gt / "heldout" / f"view{k}", held_videos[k])
    save_cameras(gt / "heldout_cameras.json", held, extra={"azimuths_deg": list(HELDOUT_AZIMUTHS_DEG)})
    return job_dir


@dataclass
class GroundTruth:
    """Everything ``write_job`` put in ``gt/``; held-out videos load on demand (they are large)."""

    root: Path
    name: str
    vertices: np.ndarray  # [F,V,3]
    faces: np.ndarray  # [T,3]
    colors: np.ndarray  # [V,3]
    tracks: np.ndarray  # [V,F,P,2]
    visibility: np.ndarray  # [V,F,P]
    points_canonical: np.ndarray  # [P,3]
    points: np.ndarray  # [F,P,3]
    face_ids: np.ndarray  # [P]
    barycentrics: np.ndarray  # [P,3]
    point_colors: np.ndarray  # [P,3]
    heldout_cameras: list[Camera]

    @property
    def num_frames(self) -> int:
        return int(self.vertices.shape[0])

    def heldout_videos(self) -> np.ndarray:
        """Held-out renders float32 [4,F,H,W,4] in [0,1]."""
        return np.stack([load_video(self.root / "heldout" / f"view{k}", self.num_frames) for k in range(len(self.heldout_cameras))])


def load_gt(job_dir: str | Path) -> GroundTruth:
    """Read the ground truth of a job written by ``write_job``."""
    gt = Path(job_dir) / GT_DIR
    if not (gt / "animation.npz").is_file():
        raise FileNotFoundError(f"{gt / 'animation.npz'} is missing: {job_dir} was not written by track4dgen.synthetic.write_job")
    with np.load(gt / "animation.npz") as a, np.load(gt / "tracks.npz") as t:
        return GroundTruth(
            root=gt,
            name=str(a["name"]),
            vertices=a["vertices"],
            faces=a["faces"],
            colors=a["colors"],
            tracks=t["tracks"],
            visibility=t["visibility"],
            points_canonical=t["points_canonical"],
            points=t["points"],
            face_ids=t["face_ids"],
            barycentrics=t["barycentrics"],
            point_colors=t["point_colors"],
            heldout_cameras=load_cameras(gt / "heldout_cameras.json"),
        )


def load_videos(job_dir: str | Path, views: int = 4, frames: int | None = None) -> np.ndarray:
    """The job's given videos float32 [V,F,H,W,4] (frames read from job.json when not given)."""
    job_dir = Path(job_dir)
    if frames is None:
        frames = int(json.loads((job_dir / "job.json").read_text()).get("frames", 16))
    return np.stack([load_video(job_dir / "videos" / f"view{k}", frames) for k in range(views)])


__all__: Sequence[str] = ("write_job", "load_gt", "GroundTruth", "load_videos", "save_png", "load_png", "export_glb")
