"""Job folders: schema, validation, progress events and atomic result writing.

A job folder (written by the Blender add-on, the HTTP server or ``track4dgen demo``)::

    job.json        {"version": 1, "prompt": str, "seed": int, "frames": 16, "views": 4,
                     "resolution": 256, "model": "animate3d"|"tiny", "stage1": {...},
                     "stage2": {...}, "weights": {...}}
    mesh.glb        the static object (Blender's Z-up frame)
    views/0..3.png  RGBA conditioning renders (alpha = mask)
    cameras.json    {"convention": "opencv", "views": [{"K", "w2c", "width", "height"}, ...]}
    videos/         optional: given multi-view video -> Stage Two only.
                    videos/view{k}/{f:03d}.png RGBA frames (alpha = mask)
    features.npz    optional: diffusion features "features" [V, F, C, h, w] for Stage Two

Every problem raises ``JobError`` with a code, a message naming the file and a hint naming the
fix; the server returns the same message with HTTP 422 and the CLI prints it as an error event.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from . import job_schema
from .cameras import Camera, load_cameras
from .progress import stage_label

JOB_VERSION = 1
KNOWN_KEYS = {"version", "prompt", "seed", "frames", "views", "resolution", "model", "stage1", "stage2", "weights", "device"}
MODELS = ("animate3d", "tiny")
# resource bounds checked before anything is decoded (see _check_png and _check_features)
MAX_JOB_JSON_BYTES = 1 << 20
MAX_DECODED_IMAGE_BYTES = 1 << 30  # all views + video frames as 8-bit RGBA
MAX_FEATURE_BYTES = 1 << 30  # features.npz's 'features' array as stored
MAX_FEATURE_CHANNELS = 4096
MAX_FEATURE_SIDE = 512


class JobError(Exception):
    """A job that cannot run. ``code`` is machine-readable, ``hint`` says how to fix it."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def to_event(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message, "hint": self.hint}


@dataclass
class JobSpec:
    """The parsed ``job.json``."""

    prompt: str = ""
    seed: int = 0
    frames: int = 16
    views: int = 4
    resolution: int = 256
    model: str = "animate3d"
    device: str = "auto"
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    version: int = JOB_VERSION

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in sorted(KNOWN_KEYS)}


@dataclass
class Job:
    """A validated job folder."""

    root: Path
    spec: JobSpec
    cameras: list[Camera]

    @property
    def mesh_path(self) -> Path:
        return self.root / "mesh.glb"

    @property
    def has_videos(self) -> bool:
        return (self.root / "videos").is_dir()

    @property
    def features_path(self) -> Path:
        return self.root / "features.npz"

    @property
    def tracks_path(self) -> Path:
        """Optional 2D tracks of the given videos (format: track4dgen.stage2.tracks)."""
        return self.root / "tracks.npz"

    def view_path(self, k: int) -> Path:
        return self.root / "views" / f"{k}.png"

    def video_frame_path(self, view: int, frame: int) -> Path:
        return self.root / "videos" / f"view{view}" / f"{frame:03d}.png"


def _require(cond: bool, code: str, message: str, hint: str) -> None:
    if not cond:
        raise JobError(code, message, hint)


def parse_spec(data: Any) -> JobSpec:
    """Check the job.json object; every wrong field is named with what is expected."""
    _require(isinstance(data, dict), "bad_job_json", "job.json must hold a JSON object", "Write job.json as {\"version\": 1, ...}.")
    unknown = sorted(set(data) - KNOWN_KEYS)
    _require(not unknown, "bad_job_json", f"job.json has unknown key(s) {unknown}", f"Allowed keys: {sorted(KNOWN_KEYS)}.")
    spec = JobSpec()
    version = data.get("version", JOB_VERSION)
    _require(version == JOB_VERSION, "bad_job_json", f"job.json version {version!r} is not supported", f"Use \"version\": {JOB_VERSION}.")

    def int_field(name: str, lo: int, hi: int) -> None:
        if name in data:
            v = data[name]
            _require(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, "bad_job_json",
                     f"job.json field {name!r} must be an integer in [{lo}, {hi}], got {v!r}", f"Fix {name!r} in job.json.")
            setattr(spec, name, v)

    int_field("seed", 0, 2**32 - 1)
    int_field("frames", 2, 64)
    int_field("views", 1, 8)
    int_field("resolution", 16, 1024)
    if "prompt" in data:
        _require(isinstance(data["prompt"], str) and len(data["prompt"]) <= 1000, "bad_job_json",
                 "job.json field 'prompt' must be a string of at most 1000 characters", "Shorten or fix the prompt.")
        spec.prompt = data["prompt"]
    if "model" in data:
        _require(data["model"] in MODELS, "bad_job_json", f"job.json field 'model' must be one of {list(MODELS)}, got {data['model']!r}",
                 "Use \"animate3d\" (released weights) or \"tiny\" (CPU test model).")
        spec.model = data["model"]
    if "device" in data:
        _require(isinstance(data["device"], str) and re.fullmatch(job_schema.DEVICE_PATTERN, data["device"]) is not None,
                 "bad_job_json", f"job.json field 'device' must be auto, cpu, cuda or cuda:N, got {data['device']!r}",
                 "Fix 'device' in job.json.")
        spec.device = data["device"]
    problems = []
    for name in ("stage1", "stage2", "weights"):
        if name in data:
            _require(isinstance(data[name], dict), "bad_job_json", f"job.json field {name!r} must be an object", f"Write {name!r} as {{...}}.")
            setattr(spec, name, dict(data[name]))
            problems += job_schema.section_problems(name, data[name])
    _require(not problems, "bad_job_json", "job.json: " + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""),
             "Fix or remove these settings (backend/track4dgen/job_schema.py lists every setting's type and range).")
    from .stage1.config import SamplerConfig

    try:
        SamplerConfig.from_overrides(spec.stage1)  # its cross-field rules (sds_t_min < sds_t_max ...)
    except (TypeError, ValueError) as exc:
        raise JobError("bad_job_json", f"job.json 'stage1': {exc}", "Fix the setting.") from exc
    problems = job_schema.resource_problems(spec.stage2)
    decoded = spec.views * (spec.frames + 1) * spec.resolution ** 2 * 4
    if decoded > MAX_DECODED_IMAGE_BYTES:
        problems.append(f"{spec.views} views x {spec.frames} frames at {spec.resolution} px decode to {decoded:,} bytes "
                        f"(limit {MAX_DECODED_IMAGE_BYTES:,}); lower 'resolution', 'frames' or 'views'")
    _require(not problems, "over_budget", "job.json: " + "; ".join(problems), "Lower the settings named above.")
    return spec


def _check_png(root: Path, path: Path, what: str, size: int) -> None:
    """Check an RGBA PNG of ``size`` x ``size`` px. The header (IHDR) is read and checked first and
    pixels are decoded only after that, so a tiny file declaring a huge image costs nothing."""
    from PIL import Image

    rel = path.relative_to(root).as_posix()
    _require(path.is_file() and not path.is_symlink(), "missing_file", f"{what} {rel} is missing",
             "Re-export the job from Blender or add the file.")
    try:
        with Image.open(path, formats=["PNG"]) as im:  # reads the header only
            mode, (w, h) = im.mode, im.size
            _require(w == size and h == size, "bad_image", f"{what} {rel} is {w}x{h}, expected {size}x{size}",
                     "Render every image at the job's resolution.")
            _require(mode in ("RGBA", "LA"), "bad_image", f"{what} {rel} has no alpha channel (mode {mode})",
                     "Render with a transparent film so the alpha channel holds the object mask.")
            im.load()  # now bounded by size x size x 4 bytes
    except JobError:
        raise
    except Exception as exc:
        raise JobError("bad_image", f"{what} {rel} is not a readable PNG: {exc}", "Re-render the image.") from exc


def _check_features(path: Path, spec: JobSpec) -> None:
    """Check features.npz from the npy header inside the zip (shape, dtype, declared size) before
    reading any data, then scan the values for NaN/inf in 4 MiB pieces (never all at once)."""
    import zipfile

    def bad(message: str) -> JobError:
        return JobError("bad_features", f"features.npz {message}", "Write features.npz with one float32 array 'features' [V,F,C,h,w].")

    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo("features.npy")
            except KeyError:
                raise bad("has no array 'features'") from None
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise bad(f"uses npy format version {version}, expected 1.0 or 2.0")
                header_len = f.tell()
                if dtype not in (np.dtype("<f4"), np.dtype("<f2")):
                    raise bad(f"'features' has dtype {dtype}, expected float32 or float16")
                if len(shape) != 5 or shape[0] != spec.views or shape[1] != spec.frames:
                    raise bad(f"'features' has shape {list(shape)}, expected [{spec.views}, {spec.frames}, C, h, w]")
                if not (0 < shape[2] <= MAX_FEATURE_CHANNELS and 0 < shape[3] <= MAX_FEATURE_SIDE and 0 < shape[4] <= MAX_FEATURE_SIDE):
                    raise bad(f"'features' has shape {list(shape)}: C must be 1-{MAX_FEATURE_CHANNELS}, h and w 1-{MAX_FEATURE_SIDE}")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > MAX_FEATURE_BYTES:
                    raise bad(f"'features' holds {nbytes:,} bytes (limit {MAX_FEATURE_BYTES:,})")
                if info.file_size != header_len + nbytes:
                    raise bad(f"'features' declares {nbytes:,} bytes of data but stores {info.file_size - header_len:,}")
                step = (4 << 20) // dtype.itemsize * dtype.itemsize
                while chunk := f.read(step):
                    if not np.isfinite(np.frombuffer(chunk, dtype=dtype)).all():
                        raise JobError("bad_features", "features.npz contains NaN or infinite values", "Re-run Stage One.")
    except JobError:
        raise
    except Exception as exc:  # not a zip, corrupt deflate, bad header, CRC mismatch...
        raise bad(f"is unreadable: {exc}") from exc


def load_job(root: str | Path, check_images: bool = True) -> Job:
    """Validate a job folder and return it. Raises JobError for the first problem found."""
    root = Path(root)
    _require(root.is_dir(), "missing_job", f"job folder {root} does not exist", "Pass the folder that contains job.json.")
    job_json = root / "job.json"
    _require(job_json.is_file(), "missing_file", f"job.json is missing in {root}", "Every job folder needs a job.json.")
    _require(job_json.stat().st_size <= MAX_JOB_JSON_BYTES, "bad_job_json",
             f"job.json is {job_json.stat().st_size:,} bytes (limit {MAX_JOB_JSON_BYTES:,})", "job.json holds settings only; shrink it.")
    try:
        data = json.loads(job_json.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JobError("bad_job_json", f"job.json is not valid JSON: {exc}", "Fix the JSON syntax.") from exc
    except RecursionError:
        raise JobError("bad_job_json", "job.json nests objects or lists too deeply", "job.json is a flat settings object; fix it.") from None
    spec = parse_spec(data)

    from .meshio import MeshError, load_mesh

    try:
        load_mesh(root / "mesh.glb")
    except MeshError as exc:
        code = "missing_file" if not (root / "mesh.glb").is_file() else "bad_mesh"
        raise JobError(code, str(exc), "Export a mesh with faces and finite coordinates as mesh.glb.") from exc

    cam_path = root / "cameras.json"
    _require(cam_path.is_file(), "missing_file", f"cameras.json is missing in {root}", "Write cameras.json with the job's views.")
    try:
        cameras = load_cameras(cam_path)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise JobError("bad_cameras", f"cameras.json is malformed: {exc}", "Each view needs K (3x3), w2c (4x4), width, height.") from exc
    _require(len(cameras) == spec.views, "bad_cameras", f"cameras.json has {len(cameras)} views, job.json says {spec.views}",
             "Write one camera per view.")
    for i, cam in enumerate(cameras):
        _require(np.isfinite(cam.K).all() and np.isfinite(cam.w2c).all(), "bad_cameras", f"camera {i} has NaN or infinite values",
                 "Re-export the cameras.")
        _require(abs(np.linalg.det(cam.w2c[:3, :3]) - 1.0) < 1e-3, "bad_cameras", f"camera {i} rotation is not a rotation",
                 "w2c must be a rigid world->camera transform.")

    job = Job(root=root, spec=spec, cameras=cameras)
    if check_images:
        for k in range(spec.views):
            _check_png(root, job.view_path(k), f"conditioning view {k}", spec.resolution)
        if job.has_videos:
            for k in range(spec.views):
                for f in range(spec.frames):
                    _check_png(root, job.video_frame_path(k, f), f"video view {k} frame {f}", spec.resolution)
    if job.features_path.exists():
        _check_features(job.features_path, spec)
    return job


# --------------------------------------------------------------------------------------------
# progress events


class ProgressReporter:
    """Writes one JSON object per line: {"stage", "step", "total", "message", "eta_s", "label"}
    (plus "overall" and "overall_eta_s" when a ``progress.Plan`` is set).

    ETA is measured per stage from the first step so a slow start-up does not distort it.
    ``sink`` lets the server collect events instead of printing them.
    """

    def __init__(self, stream: TextIO | None = None, sink: Callable[[dict], None] | None = None) -> None:
        self.stream = stream if stream is not None else (None if sink else sys.stdout)
        self.sink = sink
        self._stage_start: dict[str, tuple[float, int]] = {}
        self.plan = None  # progress.Plan: adds the whole job's fraction and ETA to each event

    def emit(self, event: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink(event)
        if self.stream is not None:
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()

    def update(self, stage: str, step: int, total: int, message: str = "", **extra: Any) -> None:
        now = time.monotonic()
        start = self._stage_start.setdefault(stage, (now, step))
        done = step - start[1]
        eta = None
        if done > 0 and total > 0:
            eta = round((now - start[0]) / done * max(total - step, 0), 1)
        event: dict[str, Any] = {"stage": stage, "step": int(step), "total": int(total), "message": message, "eta_s": eta}
        event["label"] = stage_label(stage)
        if self.plan is not None:
            event.update(self.plan.annotate(stage, step, total, eta, now - start[0]))
        event.update(extra)
        self.emit(event)

    def error(self, err: JobError) -> None:
        self.emit(err.to_event())


# --------------------------------------------------------------------------------------------
# atomic result folders


@contextmanager
def atomic_result_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename.

    A killed run leaves only ``.<name>.tmp-*`` behind, never a half-written ``final``; an earlier
    complete result is swapped out only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        (tmp / "COMPLETE").write_text(json.dumps({"finished": time.time()}))
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_complete_result(path: str | Path) -> bool:
    path = Path(path)
    return (path / "COMPLETE").is_file() and (path / "gaussians4d.npz").is_file()


def finite_or_raise(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise JobError("diverged", f"{name} became {value}", "Lower the learning rates in job.json 'stage2' or check the inputs.")
    return value
