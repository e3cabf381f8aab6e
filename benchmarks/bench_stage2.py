"""Stage Two benchmark on the synthetic set: is the motion really learned, and how fast?

For every synthetic object: write a Stage-Two-only job (4 views x 16 frames), run it through the
same ``track4dgen.runner.run_job`` as `track4dgen run`, then score the result against the exact
ground truth with ``track4dgen.eval.cli.evaluate_gt``: PSNR on the 4 training and the 4 held-out
views (whole image and inside the object mask), and the mean 3D error of the deformed centres
against the true surface motion (% of the bounding-box diagonal) next to the no-motion baseline
(canonical Gaussians left still), the same for displacements from frame 0 (motion only, shape
offset excluded), and the 2D track error of the true surface points. Each object runs in its own process so peak memory is its own.

    python benchmarks/bench_stage2.py [--quick] [--full] [--json PATH] [--objects a,b]

Prints a table; ``--json`` writes {"device", "config", "objects": [rows]} (row keys: DESIGN.md).
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


def settings(args: argparse.Namespace) -> dict:
    """Stage Two settings per mode. The synthetic set uses ``SYNTHETIC_64_OVERRIDES`` (few Gaussians,
    small batches; see stage2/config.py) on top of the paper's defaults; the SDS phase has no Stage
    One model here, so its iterations are reconstruction + ARAP."""
    from track4dgen.stage2.config import SYNTHETIC_64_OVERRIDES

    if args.full:  # the paper's own settings, for a GPU
        return {"resolution": args.resolution or 256, "stage2": {"checkpoint_every": 0}}
    if args.quick:
        return {"resolution": args.resolution or 32,
                "stage2": {**SYNTHETIC_64_OVERRIDES, "iters_rec": 80, "iters_sds": 20, "num_gaussians": 1000, "checkpoint_every": 0}}
    stage2 = {**SYNTHETIC_64_OVERRIDES, "checkpoint_every": 0}
    if args.iters:
        stage2.update(iters_rec=args.iters, iters_sds=0)
    return {"resolution": args.resolution or 64, "stage2": stage2}


def run_one(name: str, resolution: int, stage2: dict, work: Path) -> dict:
    """Write, run and score one object (called in a child process)."""
    from track4dgen.eval.cli import evaluate_gt
    from track4dgen.job import ProgressReporter, load_job
    from track4dgen.runner import run_job
    from track4dgen.synthetic import write_job

    job_dir = write_job(name, work / name / "job", resolution=resolution, frames=16, stage2_overrides=stage2)
    t0 = time.perf_counter()
    metrics = run_job(load_job(job_dir), work / name / "result", ProgressReporter(stream=io.StringIO()))
    wall = time.perf_counter() - t0
    scores = evaluate_gt(work / name / "result", job_dir, device="cpu")
    row = {"name": name, **{k: scores[k] for k in COLUMNS if k in scores}}
    row.update({"it_per_s": metrics.get("it_per_s"), "wall_s": round(wall, 1), "peak_mem_mb": metrics.get("peak_mem_mb"),
                "device": metrics.get("device")})
    return row


def format_table(rows: list[dict]) -> str:
    head = " | ".join(f"{c:>12}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            cells.append(f"{v:>12}" if isinstance(v, str) or v is None else f"{v:>12.2f}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="<= 2 minutes on CPU: 32 px, 60 iterations, 2 objects")
    p.add_argument("--full", action="store_true", help="the paper's full schedule (GPU)")
    p.add_argument("--iters", type=int, default=0, help="reconstruction iterations instead of the 750 + 250 schedule")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--objects", default=None, help="comma-separated names (default: all)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child-process mode
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cfg = settings(args)

    if args.one:
        row = run_one(args.one, cfg["resolution"], cfg["stage2"], args.work)
        print("ROW " + json.dumps(row))
        return 0

    from track4dgen.synthetic import list_objects

    names = args.objects.split(",") if args.objects else list_objects()
    if args.quick and not args.objects:
        names = names[:2]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_stage2_") as tmp:
        for name in names:
            cmd = [sys.executable, __file__, "--one", name, "--work", tmp, "--iters", str(args.iters)]
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
    print(format_table(rows))
    device = rows[0].get("device") if rows else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "config": cfg, "objects": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
