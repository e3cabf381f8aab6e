"""Stage One benchmark: MV-VDM sampling speed and memory.

Default (GPU): the full ``animate3d`` model — real weights when ``--weights`` names a folder
written by ``track4dgen weights convert`` (or "animate3d" for the HF cache), random weights
otherwise (same compute) — sampling 4 views x 16 frames at 256x256, 25 DDIM steps, CFG 7.5,
fp16 (``--dtype``), SDPA attention.  Also times one 4D-SDS call (forward, VAE-encoder backward).

``--quick``: the tiny model on CPU (64x64, 4x4 frames) — the same code path in seconds.

``--full-cpu``: the full-size model (1.53 B-parameter U-Net, SD1.5 VAE, CLIP ViT-L text and
ViT-H image encoders) with random weights, float32 on CPU, one sampling pass of ONE denoising
step at 4 views x 16 frames x 256^2 with CFG (batch 2) and FreeInit off — the real
configuration's wiring (encoders, camera vectors, feature hook, VAE decode) on any machine.
Reports the build time, the U-Net step's wall time, the whole call's wall time and the peak
RSS.  Slow and memory heavy (about 10 GB of weights in fp32): run it with ``nice``.

Prints a table; ``--json PATH`` writes {"device", "config", "objects": [row]} (DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))

from track4dgen.cameras import rig_cameras  # noqa: E402
from track4dgen.stage1.components import build_components  # noqa: E402
from track4dgen.stage1.config import SamplerConfig, animate3d_random_config, get_config  # noqa: E402
from track4dgen.stage1.pipeline import MVVDMPipeline  # noqa: E402
from track4dgen.stage1.sds import make_sds_fn  # noqa: E402
from track4dgen.stage1.unet import count_parameters  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _report(row: dict, device, args) -> int:
    """Print the table (header + one row) and write the benchmark JSON when ``--json`` is given."""
    print(f"device: {_device_name(device)}")
    print(" | ".join(f"{k}" for k in row))
    print(" | ".join(f"{v}" for v in row.values()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": _device_name(device), "config": vars(args) | {"json": str(args.json)},
                                         "objects": [row]}, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model on CPU")
    ap.add_argument("--weights", default=None, help="MV-VDM folder or 'animate3d' (HF cache); default random weights")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--freeinit", type=int, default=1, help="FreeInit iterations (1 = off)")
    ap.add_argument("--full-cpu", action="store_true", help="full-size model, random weights, 1 step on CPU (fp32)")
    ap.add_argument("--model", default="animate3d", choices=["animate3d", "tiny"], help="--full-cpu model (tiny: smoke test)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.full_cpu:
        return full_cpu(args)

    if args.quick:
        device, dtype = torch.device("cpu"), torch.float32
        cfg = get_config("tiny", num_frames=args.frames or 4)
    else:
        if not torch.cuda.is_available():
            print("bench_stage1: CUDA is not available; use --quick for the CPU variant", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        dtype = getattr(torch, args.dtype)
        torch.backends.cuda.matmul.allow_tf32 = True
        cfg = animate3d_random_config(num_frames=args.frames or 16)
    Fr, V, res = cfg.num_frames, args.views, cfg.resolution

    t0 = time.perf_counter()
    if args.weights:
        from track4dgen.stage1.weights import from_pretrained

        comp = from_pretrained(args.weights, model="animate3d").to(device=device, dtype=dtype).eval()
    else:
        comp = build_components(cfg, seed=0, device=device).to(device=device, dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    scfg = SamplerConfig(steps=args.steps, freeinit_iters=args.freeinit, feature_step=min(20, args.steps - 1))
    cams = [c.w2c for c in rig_cameras(res)][:V]
    views = torch.full((V, 3, res, res), 0.5)
    views[:, :, res // 4: 3 * res // 4, res // 4: 3 * res // 4] = torch.rand(V, 3, res // 2, res // 2)
    pipe = MVVDMPipeline(comp, scfg)

    # warm-up (kernel selection, allocator) with 1 step
    MVVDMPipeline(comp, SamplerConfig(steps=1, freeinit_iters=1))(views, "warm up", cams, seed=0, num_frames=Fr)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_times: list[float] = []
    last = [time.perf_counter()]

    def progress(step: int, total: int, msg: str) -> None:
        _sync(device)
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    _sync(device)
    t0 = time.perf_counter()
    last[0] = t0
    result = pipe(views, "a robot dancing", cams, seed=0, num_frames=Fr, progress=progress)
    _sync(device)
    sample_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None

    sds = make_sds_fn(comp, views, "a robot dancing", cams, scfg)
    render = torch.rand(V, Fr, 3, res, res, device=device, requires_grad=True)
    sds(render).backward()  # warm-up
    _sync(device)
    t1 = time.perf_counter()
    n_sds = 3
    for _ in range(n_sds):
        render.grad = None
        sds(render).backward()
    _sync(device)
    sds_ms = (time.perf_counter() - t1) / n_sds * 1e3
    peak_sds = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None

    steps_sorted = sorted(step_times)
    row = {
        "name": cfg.name if args.quick else ("animate3d" + ("" if args.weights else " (random weights)")),
        "params": count_parameters(comp.unet),
        "views": V, "frames": Fr, "resolution": res, "steps": args.steps, "freeinit_iters": args.freeinit,
        "dtype": str(dtype).replace("torch.", ""),
        "load_s": round(load_s, 2),
        "sample_s": round(sample_s, 2),
        "step_ms_median": round(steps_sorted[len(steps_sorted) // 2] * 1e3, 1),
        "sds_ms": round(sds_ms, 1),
        "peak_mem_mb": None if peak is None else round(peak, 1),
        "peak_mem_sds_mb": None if peak_sds is None else round(peak_sds, 1),
        "finite": bool(torch.isfinite(result.videos).all()),
    }
    return _report(row, device, args)


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def _mem_available_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def full_cpu(args: argparse.Namespace) -> int:
    """One denoising step of the full-size model on CPU (module doc, ``--full-cpu``)."""
    device = torch.device("cpu")
    frames = args.frames or 16
    cfg = animate3d_random_config(num_frames=frames) if args.model == "animate3d" else get_config("tiny", num_frames=frames)
    V, res = args.views, cfg.resolution
    avail = _mem_available_gb()
    t0 = time.perf_counter()
    comp = build_components(cfg, seed=0, device=device).eval()
    build_s = time.perf_counter() - t0
    rss_built = _peak_rss_gb()
    unet_s: list[float] = []
    started: list[float] = []
    pre = comp.unet.register_forward_pre_hook(lambda m, a: started.append(time.perf_counter()))
    post = comp.unet.register_forward_hook(lambda m, a, o: unet_s.append(time.perf_counter() - started[-1]))
    views = torch.full((V, 3, res, res), 0.5)
    views[:, :, res // 4: 3 * res // 4, res // 4: 3 * res // 4] = torch.rand(V, 3, res // 2, res // 2)
    cams = [c.w2c for c in rig_cameras(res)][:V]
    scfg = SamplerConfig.from_overrides({"preset": "fast", "steps": 1, "feature_step": 0})
    t0 = time.perf_counter()
    with torch.no_grad():
        result = MVVDMPipeline(comp, scfg)(views, "a robot dancing", cams, seed=0, num_frames=frames)
    call_s = time.perf_counter() - t0
    pre.remove()
    post.remove()
    row = {
        "name": cfg.name + " (random weights, fp32)",
        "unet_params": count_parameters(comp.unet),
        "all_params": sum(count_parameters(m) for m in (comp.unet, comp.vae, comp.text_encoder, comp.image_encoder) if m is not None),
        "views": V, "frames": frames, "resolution": res, "cfg_batch": 2 if scfg.guidance_scale > 1 else 1,
        "threads": torch.get_num_threads(),
        "build_s": round(build_s, 1),
        "unet_step_s": round(unet_s[0], 1) if unet_s else None,
        "call_s": round(call_s, 1),
        "rss_after_build_gb": round(rss_built, 2),
        "peak_rss_gb": round(_peak_rss_gb(), 2),
        "mem_available_at_start_gb": None if avail is None else round(avail, 1),
        "finite": bool(torch.isfinite(result.videos).all()),
        "features": None if result.features is None else list(result.features.shape),
    }
    return _report(row, device, args)


if __name__ == "__main__":
    raise SystemExit(main())
