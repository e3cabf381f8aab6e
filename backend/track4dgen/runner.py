"""`track4dgen run JOB_DIR`: validate a job folder, run the stages it allows, write the result.

A job with ``videos/`` (given multi-view video) runs Stage Two only; otherwise Stage One generates
the video (and the diffusion features and the 4D-SDS hook) first. The result folder appears in one
rename when everything is written (``job.atomic_result_dir``), so a killed run never leaves a
result that looks complete. Progress goes to stdout as JSON lines; human-readable logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .job import Job, JobError, ProgressReporter, atomic_result_dir, load_job
from .progress import Plan, job_plan, make_reporter
from .video_io import read_frame_folders, write_mp4, composite

if TYPE_CHECKING:  # the runner imports torch-side modules only when a job runs
    from .stage2.config import Stage2Config


def load_given_videos(job: Job) -> np.ndarray:
    """videos/view{k}/{f:03d}.png -> float32 [V, F, H, W, 4]."""
    paths = [[job.video_frame_path(k, f) for f in range(job.spec.frames)] for k in range(job.spec.views)]
    return read_frame_folders(paths)


def load_given_features(job: Job) -> np.ndarray | None:
    if not job.features_path.exists():
        return None
    with np.load(job.features_path) as z:
        return np.asarray(z["features"], dtype=np.float32)


def given_tracks(job: Job) -> bool:
    """True when the job brings its videos' tracks (tracks of generated videos cannot be given in advance)."""
    return job.has_videos and job.tracks_path.exists()


def uses_tracks(job: Job, cfg: Stage2Config) -> bool:
    """Whether Stage Two will fit this job with 2D tracks: given ones, or its ``stage2.tracker``'s."""
    return cfg.w_track > 0 and (given_tracks(job) or cfg.tracker != "none")


def job_tracks(job: Job, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The videos' 2D tracks for Stage Two's track term: the job's ``tracks.npz`` when given, else
    the ``stage2.tracker``'s tracks of ``videos`` (None when neither is asked for)."""
    from .stage2.config import Stage2Config
    from .stage2.tracks import load_tracks_npz, track_videos

    if given_tracks(job):
        return load_tracks_npz(job.tracks_path, job.spec.views, job.spec.frames)
    cfg = Stage2Config.from_overrides(job.spec.stage2)
    if not uses_tracks(job, cfg):
        return None
    return track_videos(videos, cfg.tracker, cfg.track_grid, tuple(cfg.background))


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def job_progress_plan(job: Job) -> Plan | None:
    """The stages this job runs with their costs (None for bad settings: the stage reports them)."""
    from .stage1.config import SamplerConfig
    from .stage2.config import Stage2Config

    try:
        s1 = SamplerConfig.from_overrides(job.spec.stage1)
        s2 = Stage2Config.from_overrides(job.spec.stage2)
    except (TypeError, ValueError):
        return None
    warmup = s2.track_warmup_iters if uses_tracks(job, s2) else 0
    return job_plan(job.has_videos, s1.steps * s1.freeinit_iters, s2.iters_rec, s2.iters_sds, job.spec.model, warmup)


def run_job(job: Job, out_dir: Path, reporter: ProgressReporter, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Run a validated job into ``out_dir``; returns the metrics written to metrics.json."""
    from .stage2.run import run_stage2

    if reporter.plan is None:
        reporter.plan = job_progress_plan(job)

    timings: dict[str, float] = {}
    sds_fn = None
    stage1_videos = None
    if job.has_videos:
        videos = load_given_videos(job)
        features = load_given_features(job)
    else:
        from .stage1.run import run_stage1

        t0 = time.perf_counter()
        work = (checkpoint_dir or out_dir.parent / f".{out_dir.name}.work") / "stage1"
        work.mkdir(parents=True, exist_ok=True)
        videos, features, sds_fn = run_stage1(job, reporter, work)
        # Stage One (and its 4D-SDS) works on renders composited on Animate3D's grey background.
        job.spec.stage2.setdefault("background", [0.5, 0.5, 0.5])
        stage1_videos = videos
        timings["stage1_s"] = round(time.perf_counter() - t0, 2)

    with atomic_result_dir(out_dir) as tmp:
        if stage1_videos is not None:
            from .stage2.config import Stage2Config

            bg = Stage2Config.from_overrides(job.spec.stage2).background
            for k in range(stage1_videos.shape[0]):
                write_mp4(tmp / "videos" / f"stage1_view{k}.mp4", composite(stage1_videos[k], bg))
        t0 = time.perf_counter()
        tracks = job_tracks(job, videos)
        metrics = run_stage2(job, videos, features, reporter, tmp, sds_fn=sds_fn, checkpoint_dir=checkpoint_dir, tracks=tracks)
        timings["stage2_s"] = round(time.perf_counter() - t0, 2)
        metrics = dict(metrics or {})
        metrics.setdefault("timings", {}).update(timings)
        metrics.setdefault("device", _device_name())
        metrics["stages"] = ["stage2"] if job.has_videos else ["stage1", "stage2"]
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
        reporter.update("export", 1, 1, "result written", result=str(out_dir))
    return metrics


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="track4dgen run", description=__doc__.splitlines()[0])
    p.add_argument("job_dir", type=Path, help="job folder (job.json, mesh.glb, views/, cameras.json[, videos/])")
    p.add_argument("--out", type=Path, default=None, help="result folder (default: JOB_DIR/result)")
    p.add_argument("--checkpoint-dir", type=Path, default=None,
                   help="keep Stage Two checkpoints here and resume from the latest one")
    p.add_argument("--validate-only", action="store_true", help="check the job folder and exit")
    p.add_argument("--json", action="store_true",
                   help="progress as JSON lines (the default when stdout is not a terminal); otherwise a progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = make_reporter(args.json)
    # SIGTERM (cancel from the add-on or server) unwinds like Ctrl-C so temporary folders are removed.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        job = load_job(args.job_dir)
        if args.validate_only:
            reporter.emit({"stage": "validate", "step": 1, "total": 1, "message": "job is valid", "eta_s": 0})
            return 0
        run_job(job, args.out or job.root / "result", reporter, args.checkpoint_dir)
        return 0
    except JobError as err:
        reporter.error(err)
        return 1
    except KeyboardInterrupt:
        reporter.error(JobError("cancelled", "the run was cancelled", "Start the job again to rerun it."))
        return 130
    except Exception as exc:  # report unexpected failures as an event too, with the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        reporter.error(JobError("internal_error", f"{type(exc).__name__}: {exc}",
                                "This is a bug: keep the job folder and report it with the traceback printed on stderr."))
        return 1
