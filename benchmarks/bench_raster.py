"""Rasterizer benchmark: forward and forward+backward time and peak memory.

Scene: N Gaussians on an ellipsoidal shell (like Stage Two's mesh-sampled Gaussians: small,
mostly opaque, front and back surfaces overlapping) seen by C rig cameras at the given
resolution. Prints a table; ``--json PATH`` writes
``{"device", "config", "objects": [rows]}``; ``--quick`` is a short CPU run.

    python benchmarks/bench_raster.py --quick
    python benchmarks/bench_raster.py --backend gsplat --device cuda --json out.json

On a CPU shared with other busy processes, run with ``OMP_WAIT_POLICY=PASSIVE`` (set before
Python starts): with the default spin-waiting, 2-thread timings swing from 0.2 s to 4 s per
call on an oversubscribed 2-core box, and with PASSIVE they are stable (~35 ms here). The
``*_cpu_ms`` columns are process CPU time, which is also meaningful under contention.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from track4dgen.cameras import rig_cameras
from track4dgen.stage2.raster import rasterize, select_backend
from track4dgen.stage2.raster.torch_cpu import rasterize_torch


def make_scene(n: int, cameras: int, res: int, device: torch.device, seed: int = 0):
    """Surface-like Gaussians: spacing ~ sqrt(area / N), as the mesh sampler produces."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    radii = torch.tensor([0.5, 0.4, 0.7])
    means = d * radii
    area = 4 * np.pi * float(radii.prod() ** (2 / 3))
    spacing = (area / n) ** 0.5
    scales = spacing * (0.5 + torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opac = 0.5 + 0.5 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    cams = rig_cameras(res)[:cameras] if cameras <= 4 else rig_cameras(
        res, azimuths_deg=tuple(np.linspace(0, 360, cameras, endpoint=False))
    )
    vm = torch.tensor(np.stack([c.w2c for c in cams]), dtype=torch.float32)
    K = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32)
    bg = torch.ones(len(cams), 3)
    to = lambda t: t.to(device)  # noqa: E731
    return [to(means), to(quats), to(scales), to(opac), to(colors)], to(vm), to(K), to(bg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is KiB on Linux: whole-process peak, so rows are cumulative on CPU
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_one(n: int, res: int, cameras: int, backend: str, device: torch.device, repeats: int) -> dict:
    params, vm, K, bg = make_scene(n, cameras, res, device)
    params = [p.requires_grad_(True) for p in params]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fwd, both, fwd_cpu, both_cpu = [], [], [], []
    for i in range(repeats + 1):  # first run is warm-up
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        img, alpha = rasterize(*params, vm, K, res, res, bg, backend=backend)
        _sync(device)
        t1, c1 = time.perf_counter(), time.process_time()
        (img.square().mean() + alpha.mean()).backward()
        _sync(device)
        t2, c2 = time.perf_counter(), time.process_time()
        for p in params:
            p.grad = None
        if i:
            fwd.append((t1 - t0) * 1e3)
            both.append((t2 - t0) * 1e3)
            fwd_cpu.append((c1 - c0) * 1e3)
            both_cpu.append((c2 - c0) * 1e3)
    chosen = select_backend(device, backend)
    extra = {}
    if chosen == "torch":  # how much work the occlusion culling saved
        stats: dict = {}
        with torch.no_grad():
            rasterize_torch(*params, vm, K, res, res, bg, stats=stats)
        extra = {"pairs_composited": stats.get("pairs", 0), "window_hits": stats.get("hits", 0),
                 "gaussians_culled_per_camera": round(stats.get("culled", 0) / cameras)}
    return {
        "name": f"N={n} {res}x{res} C={cameras}",
        "n_gaussians": n,
        "resolution": res,
        "cameras": cameras,
        "backend": chosen,
        "forward_ms": round(statistics.median(fwd), 2),
        "fwd_bwd_ms": round(statistics.median(both), 2),
        "fwd_bwd_ms_per_camera": round(statistics.median(both) / cameras, 2),
        # process CPU time (all threads): stable on a shared machine where wall time is not
        "forward_cpu_ms": round(statistics.median(fwd_cpu), 2),
        "fwd_bwd_cpu_ms": round(statistics.median(both_cpu), 2),
        "peak_mem_mb": round(_peak_mb(device), 1),
        "coverage": round(float(alpha.detach().mean()), 3),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short CPU variant (< 2 minutes)")
    ap.add_argument("--json", type=Path, help="write results as JSON here")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        grid = [(5000, 64, 1), (20000, 64, 1), (20000, 64, 4), (20000, 128, 1)]
        repeats = args.repeats or 3
    else:
        grid = [(n, r, c) for n in (5000, 20000, 100000) for r in (64, 128, 256) for c in (1, 4)]
        repeats = args.repeats or 5
    rows = []
    print(f"{'N':>7} {'res':>5} {'C':>3} {'backend':>7} {'fwd ms':>9} {'fwd+bwd ms':>11} "
          f"{'fwd cpu ms':>11} {'f+b cpu ms':>11} {'peak MB':>9} {'cover':>6}")
    for n, res, cams in grid:
        row = bench_one(n, res, cams, args.backend, device, repeats)
        rows.append(row)
        print(f"{n:>7} {res:>5} {cams:>3} {row['backend']:>7} {row['forward_ms']:>9.1f} "
              f"{row['fwd_bwd_ms']:>11.1f} {row['forward_cpu_ms']:>11.1f} {row['fwd_bwd_cpu_ms']:>11.1f} "
              f"{row['peak_mem_mb']:>9.0f} {row['coverage']:>6.2f}", flush=True)
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name()
    else:
        dev_name = f"{platform.processor() or 'cpu'} ({args.threads} threads)"
    if args.json:
        args.json.write_text(json.dumps({
            "device": dev_name,
            "config": {"quick": args.quick, "backend": args.backend, "threads": args.threads,
                       "repeats": repeats, "torch": torch.__version__,
                       "load_avg_1m": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")},
            "objects": rows,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
