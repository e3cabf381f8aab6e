"""Stage Two benchmark: is the motion really learned — on what it was tuned on, on objects it never
saw, on inputs that look generated — and what a real job costs.

Regimes (``--regime``):
- ``tuning``: the five named synthetic objects Stage Two's settings were tuned on;
- ``heldout``: procedurally varied objects from seeds (``synthetic/procedural.py``), never tuned on;
- ``degraded``: held-out objects whose input videos are degraded like generated video
  (``synthetic/degrade.py`` presets: ``generated``, ``under``, ``over``);
- ``realjob``: the configuration a real job runs — 256², batch 64, 20k Gaussians, the paper's
  schedule, diffusion features and 4D-SDS from the tiny MV-VDM (Stage One run on the job's views)
  — for a few iterations; the full schedule's time is extrapolated from the measured it/s.

Every object is written as a Stage-Two-only job (4 views x 16 frames), run through
``track4dgen.runner.run_job`` (realjob: ``run_stage1`` + ``run_stage2``), then scored against the
exact ground truth with ``track4dgen.eval.cli.evaluate_gt``: PSNR on the 4 training views (against
the given, possibly degraded, videos) and the 4 held-out views (exact renders), the 3D centre error
and motion error (% of the bbox diagonal) next to the no-motion baseline, and the 2D track error.
``--tracks oracle|noisy`` writes the exact (or tracker-like degraded) 2D tracks of each job's videos as
its ``tracks.npz``, so Stage Two adds its track term (stage2/tracks.py; ``--w-track`` sets its weight);
rows are labelled with the mode. Each run is its own process (peak memory is
its own); ``--json`` is rewritten after every row, so a long run can be read while it goes.

    python benchmarks/bench_stage2.py [--regime R] [--presets generated]
        [--objects a,b] [--iters N] [--tracks none|oracle|noisy] [--w-track W] [--quick] [--full] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COLUMNS = ("name", "psnr_train", "psnr_train_masked", "psnr_heldout", "psnr_heldout_masked", "err3d_pct",
           "err3d_static_pct", "motion_err_pct", "motion_err_static_pct", "track_epe_px", "track_epe_static_px",
           "it_per_s", "wall_s", "peak_mem_mb")
REGIMES = ("tuning", "heldout", "degraded", "realjob")


def settings(args: argparse.Namespace) -> dict:
    """Stage Two settings per mode. The synthetic regimes use ``SYNTHETIC_64_OVERRIDES`` (few Gaussians,
    small batches; see stage2/config.py) on top of the paper's defaults; without Stage One their SDS
    phase is reconstruction + ARAP. ``realjob`` keeps the paper's defaults."""
    from track4dgen.stage2.config import SYNTHETIC_64_OVERRIDES

    if args.regime == "realjob":
        stage2 = {"checkpoint_every": 0, "background": [0.5, 0.5, 0.5]}
        stage2.update(iters_rec=args.iters or 6, iters_sds=args.iters_sds if args.iters_sds is not None else 3)
        return {"resolution": args.resolution or 256, "stage2": stage2}
    if args.full:  # the paper's own settings, for a GPU
        return {"resolution": args.resolution or 256, "stage2": {"checkpoint_every": 0}}
    if args.quick:
        return {"resolution": args.resolution or 32,
                "stage2": {**SYNTHETIC_64_OVERRIDES, "iters_rec": 80, "iters_sds": 20, "num_gaussians": 1000, "checkpoint_every": 0}}
    stage2 = {**SYNTHETIC_64_OVERRIDES, "checkpoint_every": 0}
    if args.iters:
        stage2.update(iters_rec=args.iters, iters_sds=args.iters_sds or 0)
    if args.w_track is not None:
        stage2["w_track"] = args.w_track
    return {"resolution": args.resolution or 64, "stage2": stage2}


def default_objects(regime: str, presets: list[str]) -> list[str]:
    """Object names of a regime; degraded ones are ``name+preset``."""
    from track4dgen.synthetic import list_heldout, list_objects

    if regime == "tuning":
        return list_objects()
    if regime == "heldout":
        return list_heldout()
    if regime == "degraded":
        return [f"{n}+{p}" for n in list_heldout()[:3] for p in presets]
    return [list_heldout()[0]]  # realjob


def run_one(name: str, resolution: int, stage2: dict, work: Path, tracks: str = "none") -> dict:
    """Write, run and score one object (called in a child process). ``name`` may carry a
    degradation preset as ``object+preset``."""
    from track4dgen.eval.cli import evaluate_gt
    from track4dgen.job import ProgressReporter, load_job
    from track4dgen.runner import run_job
    from track4dgen.synthetic import write_job
    from track4dgen.synthetic.degrade import PRESETS

    obj, _, preset = name.partition("+")
    job_dir = write_job(obj, work / name / "job", resolution=resolution, frames=16, stage2_overrides=stage2,
                        degrade=PRESETS[preset] if preset else None, tracks=tracks)
    t0 = time.perf_counter()
    metrics = run_job(load_job(job_dir), work / name / "result", ProgressReporter(stream=io.StringIO()))
    wall = time.perf_counter() - t0
    scores = evaluate_gt(work / name / "result", job_dir, device="cpu")
    row = {"name": name if tracks == "none" else f"{name} [tracks {tracks}]", **{k: scores[k] for k in COLUMNS if k in scores}}
    row.update({"tracks": tracks, "tracks_used": metrics.get("tracks_used"), "it_per_s": metrics.get("it_per_s"), "wall_s": round(wall, 1), "peak_mem_mb": metrics.get("peak_mem_mb"),
                "device": metrics.get("device"), "iterations": metrics.get("iterations")})
    return row


def run_realjob(name: str, resolution: int, stage2: dict, work: Path) -> dict:
    """The real-job configuration on one object: Stage One (tiny MV-VDM) on the job's views for
    diffusion features and the 4D-SDS hook, then Stage Two on the job's exact videos at the paper's
    settings for ``iters_rec + iters_sds`` iterations; each phase's it/s is measured separately and
    the paper's 750 + 250 extrapolated from it."""
    import numpy as np

    from track4dgen.eval.cli import evaluate_gt
    from track4dgen.job import ProgressReporter, load_job
    from track4dgen.runner import load_given_videos
    from track4dgen.stage1.run import run_stage1
    from track4dgen.stage2.run import run_stage2
    from track4dgen.synthetic import write_job

    job_dir = write_job(name, work / name / "job", resolution=resolution, frames=16, stage2_overrides=stage2)
    spec = json.loads((job_dir / "job.json").read_text())
    job = load_job(job_dir)
    events: list[tuple[float, dict]] = []
    reporter = ProgressReporter(stream=io.StringIO(), sink=lambda e: events.append((time.perf_counter(), e)))
    t0 = time.perf_counter()
    _, features, sds_fn = run_stage1(job, reporter, work / name / "stage1")
    t_stage1 = time.perf_counter() - t0
    videos = load_given_videos(job)
    t1 = time.perf_counter()
    metrics = run_stage2(job, videos, features, reporter, work / name / "result", sds_fn=sds_fn)
    wall2 = time.perf_counter() - t1
    it_rec, it_sds = int(spec["stage2"]["iters_rec"]), int(spec["stage2"]["iters_sds"])
    steps = [(t, e["step"]) for t, e in events if e.get("stage") == "stage2" and e.get("total") == it_rec + it_sds and e["step"] > 0]
    scores = evaluate_gt(work / name / "result", job_dir, device="cpu")
    row = {"name": f"{name} (real-job config)", **{k: scores[k] for k in COLUMNS if k in scores}}
    row.update({"it_per_s": metrics.get("it_per_s"), "wall_s": round(t_stage1 + wall2, 1), "peak_mem_mb": metrics.get("peak_mem_mb"),
                "device": metrics.get("device"), "iterations": metrics.get("iterations"), "stage1_s": round(t_stage1, 1),
                "stage2_s": round(wall2, 1), "stage2_train_s": metrics["timings_s"]["train"],
                "stage2_init_s": metrics["timings_s"]["init"], "features_shape": list(np.shape(features)) if features is not None else None,
                "iters_rec": it_rec, "iters_sds": it_sds, "num_gaussians": metrics.get("num_gaussians"),
                "s_per_it_rec": _seconds_per_step(steps, 1, it_rec), "s_per_it_sds": _seconds_per_step(steps, it_rec, it_rec + it_sds)})
    rec, sds = row["s_per_it_rec"], row["s_per_it_sds"]
    if rec is not None and sds is not None:  # the paper's schedule at the measured speeds
        row["extrapolated_750_250_h"] = round((750 * rec + 250 * sds) / 3600.0, 2)
    return row


def _seconds_per_step(steps: list[tuple[float, int]], first: int, last: int) -> float | None:
    """Mean seconds per iteration between the progress events of steps ``first`` and ``last``
    (the first iteration of a phase is left out: it pays one-off set-up)."""
    at = {s: t for t, s in steps}
    if first not in at or last not in at or last <= first:
        return None
    return round((at[last] - at[first]) / (last - first), 3)


def format_table(rows: list[dict]) -> str:
    cols = COLUMNS
    head = " | ".join(f"{c:>12}" for c in cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:>12}" if isinstance(v, str) or v is None else f"{v:>12.2f}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regime", choices=REGIMES, default="tuning")
    p.add_argument("--presets", default="generated,under", help="degradation presets for --regime degraded")
    p.add_argument("--quick", action="store_true", help="<= 2 minutes on CPU: 32 px, 100 iterations, 2 objects")
    p.add_argument("--full", action="store_true", help="the paper's full schedule (GPU)")
    p.add_argument("--iters", type=int, default=0, help="reconstruction iterations instead of the 750 + 250 schedule")
    p.add_argument("--iters-sds", type=int, default=None, help="second-phase iterations with --iters (default 0; realjob 3)")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--objects", default=None, help="comma-separated names (default: the regime's set)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--tracks", choices=("none", "oracle", "noisy"), default="none",
                   help="write the videos' 2D tracks (exact, or degraded like a tracker's) into each job: Stage Two's track term")
    p.add_argument("--w-track", type=float, default=None, help="weight of the track term (default: the config's)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child-process mode
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cfg = settings(args)

    if args.one:
        if args.regime == "realjob":
            row = run_realjob(args.one, cfg["resolution"], cfg["stage2"], args.work)
        else:
            row = run_one(args.one, cfg["resolution"], cfg["stage2"], args.work, args.tracks)
        print("ROW " + json.dumps({**row, "regime": args.regime}))
        return 0

    names = args.objects.split(",") if args.objects else default_objects(args.regime, args.presets.split(","))
    if args.quick and not args.objects:
        names = names[:2]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_stage2_") as tmp:
        for name in names:
            cmd = [sys.executable, __file__, "--one", name, "--regime", args.regime, "--work", tmp, "--iters", str(args.iters)]
            cmd += ["--iters-sds", str(args.iters_sds)] if args.iters_sds is not None else []
            cmd += ["--tracks", args.tracks] + (["--w-track", str(args.w_track)] if args.w_track is not None else [])
            cmd += ["--quick"] if args.quick else []
            cmd += ["--full"] if args.full else []
            cmd += ["--resolution", str(args.resolution)] if args.resolution else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            found = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
            if proc.returncode != 0 or not found:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"object {name} failed (exit {proc.returncode})")
            rows.append(json.loads(found[0]))
            print(f"{name}: done in {rows[-1]['wall_s']} s", file=sys.stderr)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                device = rows[0].get("device")
                args.json.write_text(json.dumps({"device": device, "regime": args.regime, "tracks": args.tracks, "config": cfg, "objects": rows}, indent=1))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
