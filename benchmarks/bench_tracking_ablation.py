"""Ablation of the Stage One tracking losses (a small-scale, honest version of paper Table 4).

Trains the tiny MV-VDM on synthetic MV-Video data (exact oracle tracks) with the same seed, data
order and step count in four settings — full L1, --no-corr, --no-pos, and diffusion only — then
measures how well the U-Net's up-block temporal features track: for every valid 15x15-grid query
of every view, the frame-1 feature's nearest neighbour (max cosine) on later frames vs the oracle
track, in pixels (lower is better), averaged over objects and three noise levels.

    python benchmarks/bench_tracking_ablation.py [--steps 150] [--seeds 0 1] [--objects hopper waving_arm tail_wag]

Prints a table and a JSON line. CPU is enough (tiny model); the numbers are small-scale and only
compare the variants with each other. ``--feature-block up_blocks.2`` supervises another block;
``--probe up_blocks.0 up_blocks.1 ...`` instead measures each block's features without training
(the paper's block probe; meaningful with pretrained weights, e.g. ``--config
training/configs/paper.yaml --resolution 256 --frames 16`` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.train import Trainer, load_config  # noqa: E402
from training.write_mvvideo import write_dataset  # noqa: E402

VARIANTS = {
    "full": {"use_corr": True, "use_pos": True},
    "no_corr": {"use_corr": False, "use_pos": True},
    "no_pos": {"use_corr": True, "use_pos": False},
    "diff_only": {"use_corr": False, "use_pos": False},
}
EVAL_T = (100, 300, 500)


def _mean(x: list[float]) -> float:
    return float(sum(x) / len(x))


def _std(x: list[float]) -> float:
    m = _mean(x)
    return float((sum((v - m) ** 2 for v in x) / max(len(x) - 1, 1)) ** 0.5)


def _prepare(args, prefix: str) -> tuple[Path, Path]:
    """Thread count, work folder and (once) the MV-Video data set; returns (root, info.json)."""
    torch.set_num_threads(args.threads)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix=prefix))
    info = root / "data" / "info.json"
    if not info.exists():
        write_dataset(info.parent, args.objects, resolution=args.resolution, starts=[0])
    return root, info


def run(args) -> dict:
    root, info = _prepare(args, "t4d_ablation_")
    results: dict[str, dict] = {}
    for name, sw in VARIANTS.items():
        if args.variants and name not in args.variants:
            continue
        per_seed = []
        for seed in args.seeds:
            cfg = load_config(Path(args.config), {
                "model": {"overrides": dict(args.model_overrides), "feature_block": args.feature_block},
                "data": {"info": str(info), "clip_frames": args.frames, "stride": 3},
                "train": {"max_steps": args.steps, "lr": args.lr, "seed": seed, "warmup_steps": 0},
                "loss": sw,
                "log": {"output_dir": str(root / f"{name}_s{seed}"), "checkpoint_every": 0, "validation_steps": 0,
                        "progress_bar": False, "tensorboard": False, "wandb": False},
            })
            tr = Trainer(cfg)
            t0 = time.time()
            before = tr.evaluate(timesteps=EVAL_T)
            tr.fit()
            after = tr.evaluate(timesteps=EVAL_T)
            per_seed.append({"seed": seed, "before": before, "after": after, "seconds": round(time.time() - t0, 1)})
            print(json.dumps({name: per_seed[-1]}), flush=True)
        keys = per_seed[0]["after"].keys()
        results[name] = {
            "before": {k: _mean([r["before"][k] for r in per_seed]) for k in keys},
            "after": {k: _mean([r["after"][k] for r in per_seed]) for k in keys},
            "after_std_nn_err_px": _std([r["after"]["nn_err_px"] for r in per_seed]),
            "seconds": round(sum(r["seconds"] for r in per_seed) / len(per_seed), 1),
            "per_seed": per_seed,
        }
    return {"device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                      f"{args.threads} thread(s)",
            "feature_block": args.feature_block, "steps": args.steps, "frames": args.frames, "objects": args.objects, "lr": args.lr,
            "seeds": args.seeds, "eval_timesteps": list(EVAL_T), "results": results}


def probe(args) -> dict:
    """Block-by-block probe at initialisation (meaningful with pretrained weights, e.g. paper.yaml)."""
    root, info = _prepare(args, "t4d_probe_")
    cfg = load_config(Path(args.config), {
        "model": {"overrides": dict(args.model_overrides)},
        "data": {"info": str(info), "clip_frames": args.frames, "stride": 3},
        "train": {"seed": args.seeds[0]},
        "log": {"output_dir": str(root / "probe"), "progress_bar": False, "tensorboard": False, "wandb": False},
    })
    tr = Trainer(cfg)
    blocks = args.probe or ["up_blocks.0", "up_blocks.1", "up_blocks.2"]
    return {"config": str(args.config), "nn_err_px": tr.probe_blocks(blocks, EVAL_T)}


def table(summary: dict) -> str:
    rows = ["| variant | NN track err (px) before -> after (± std over seeds) | L_diff | L_corr | L_pos | train s/run |",
            "|---|---|---|---|---|---|"]
    for name, r in summary["results"].items():
        b, a = r["before"], r["after"]
        rows.append(f"| {name} | {b['nn_err_px']:.2f} -> {a['nn_err_px']:.2f} ± {r['after_std_nn_err_px']:.2f} | "
                    f"{a['diff']:.4f} | {a['corr']:.4f} | {a['pos']:.4f} | {r['seconds']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "training/configs/tiny_cpu.yaml"))
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--resolution", type=int, default=64, help="synthetic data resolution (256 for paper.yaml)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--objects", nargs="+", default=["hopper", "waving_arm", "tail_wag"])
    p.add_argument("--variants", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--feature-block", default="up_blocks.1", help="U-Net block whose motion-module features are supervised")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--model-overrides", type=json.loads, default={}, help='e.g. \'{"block_out_channels": [16,32,32]}\'')
    p.add_argument("--json", default=None, help="also write the summary here")
    p.add_argument("--probe", nargs="*", default=None,
                   help="instead of the ablation: NN track error of these blocks' features for the untrained "
                        "model of the config (e.g. up_blocks.0 up_blocks.1 up_blocks.2)")
    a = p.parse_args(argv)
    if a.probe is not None:
        print(json.dumps(probe(a)))
        return 0
    summary = run(a)
    print(table(summary))
    print(json.dumps(summary))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
