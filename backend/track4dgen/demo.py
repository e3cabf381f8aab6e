"""`track4dgen demo`: build a synthetic animated object as a job folder and run it end to end.

Needs no weights: the synthetic writer renders the 4 conditioning views and the 4×16 video, so
the job runs Stage Two only. Defaults are sized for a 2-core CPU (64×64, shortened schedule).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .job import JobError, load_job
from .progress import make_reporter, print_result
from .runner import run_job
from .stage2.config import CPU_DEMO_OVERRIDES

# Sized for a 2-core CPU: the synthetic-set settings at a reduced iteration count, no checkpoints.
QUICK_STAGE2 = {**CPU_DEMO_OVERRIDES, "checkpoint_every": 0}


def main(argv: list[str] | None = None) -> int:
    from .synthetic import list_objects, write_job

    p = argparse.ArgumentParser(prog="track4dgen demo", description=__doc__.splitlines()[0])
    p.add_argument("--object", default=None, help=f"synthetic object (default: the first of {list_objects()})")
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for the job and its result")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--iters", type=int, default=QUICK_STAGE2["iters_rec"], help="Stage Two reconstruction iterations")
    p.add_argument("--full", action="store_true", help="the paper's full 750 + 250 schedule settings")
    p.add_argument("--json", action="store_true",
                   help="progress as JSON lines (the default when stdout is not a terminal); otherwise a progress bar")
    args = p.parse_args(argv)

    name = args.object or list_objects()[0]
    overrides = {} if args.full else dict(QUICK_STAGE2, iters_rec=args.iters)
    job_dir = args.out / name / "job"
    reporter = make_reporter(args.json)
    t0 = time.perf_counter()
    write_job(name, job_dir, resolution=args.resolution, frames=16, stage2_overrides=overrides)
    try:
        job = load_job(job_dir)
        result = args.out / name / "result"
        metrics = run_job(job, result, reporter)
    except JobError as err:
        reporter.error(err)
        return 1
    summary = {"object": name, "result": str(result), "wall_s": round(time.perf_counter() - t0, 1)}
    summary.update({k: v for k, v in metrics.items() if k in ("psnr_train", "psnr_train_masked", "it_per_s")})
    print_result(reporter, {"stage": "demo", "step": 1, "total": 1, "message": "demo finished", "eta_s": 0, **summary})
    return 0
