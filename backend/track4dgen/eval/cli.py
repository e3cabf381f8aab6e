"""``track4dgen eval RESULT_DIR [--gt JOB_DIR] [--json PATH] [weights...]``

Ground-truth metrics (``--gt``, a synthetic job written by ``track4dgen.synthetic.write_job``) need
no weights: PSNR/SSIM (masked and not) on the 4 held-out and the 4 training views, 3D centre
error (and its no-motion baseline), Chamfer, projected-track EPE, and for the animated input mesh
(``mesh_animation.npz``) its vertex error (and baseline), flipped faces, edge-length distortion
and the seconds its trajectories took. Paper metrics run when their
weights are given: the video metrics of Table 1 on the result's videos (``--dino --amt --raft
--clip --aesthetic``; I2V uses the job's conditioning views, ``--job``) and the CLIP 4D metrics
(``--clip``; reference image and prompt from ``--job`` or ``--reference``/``--prompt``).
Prints a table; ``--json`` writes ``{"result", "gt", "metrics", "definitions", "wall_s"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..video_io import composite, read_mp4, read_rgba


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="track4dgen eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", type=Path, help="result folder holding gaussians4d.npz")
    p.add_argument("--gt", type=Path, default=None, help="synthetic job folder with gt/ (ground-truth metrics)")
    p.add_argument("--json", type=Path, default=None, help="write all metrics to this JSON file")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"], help="rasterizer backend")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    w = p.add_argument_group("paper metrics (pretrained weights; local file/folder or Hugging Face id)")
    w.add_argument("--videos", default="auto", choices=["auto", "stage1", "render"],
                   help="which result videos the video metrics score (auto: stage1_view*.mp4 when present)")
    w.add_argument("--dino", default=None, help="DINO ViT-B/16 (dino_vitbase16_pretrain.pth or facebook/dino-vitb16)")
    w.add_argument("--amt", default=None, help="AMT-S weights (amt-s.pth)")
    w.add_argument("--raft", default=None, help="RAFT weights (raft-things.pth)")
    w.add_argument("--clip", default=None, help="CLIP model folder or HF id (openai/clip-vit-large-patch14)")
    w.add_argument("--aesthetic", default=None, help="LAION head (sa_0_4_vit_l_14_linear.pth)")
    w.add_argument("--job", type=Path, default=None,
                   help="job folder whose views/*.png (I2V conditioning, CLIP reference) and prompt are used (default: --gt)")
    w.add_argument("--reference", type=Path, default=None, help="reference front image (RGBA PNG) for CLIP img metrics (default: JOB/views/0.png)")
    w.add_argument("--prompt", default=None, help="text prompt for CLIP text metrics (default: the job's prompt)")
    w.add_argument("--orbit-views", type=int, default=8, help="orbit cameras for CLIP-O/CLIP-C")
    w.add_argument("--orbit-resolution", type=int, default=256)
    w.add_argument("--fps", type=float, default=8.0, help="video fps for VBench's dynamic-degree threshold")
    w.add_argument("--raft-iters", type=int, default=20, help="RAFT refinement iterations (VBench: 20)")
    return p


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


STAGE_ONE_GREY = (0.5, 0.5, 0.5)  # runner.py: Stage One's videos and then Stage Two's renders are on grey


def _job_background(job_dir: Path, default: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[float, float, float]:
    try:
        spec = json.loads((job_dir / "job.json").read_text())
        return tuple(float(x) for x in spec.get("stage2", {}).get("background", default))  # type: ignore[return-value]
    except (OSError, ValueError):
        return default


def video_background(job_dir: Path) -> tuple[float, float, float]:
    """The background a job's result videos are composited on: the job's Stage Two background,
    which defaults to Stage One's grey when Stage One ran (no ``videos/`` in the job) and to
    white for a Stage-Two-only job (``Stage2Config``) — the runner's rule."""
    return _job_background(job_dir, (1.0, 1.0, 1.0) if (job_dir / "videos").is_dir() else STAGE_ONE_GREY)


def evaluate_gt(result_dir: Path, job_dir: Path, backend: str = "auto", device: str = "cpu") -> dict[str, float]:
    """All ground-truth metrics of one result against its synthetic job (definitions: ``gt.py``)."""
    from ..cameras import load_cameras
    from ..synthetic import load_gt, load_videos
    from . import gt as G
    from .results import ResultError, load_gaussians, render_gaussians

    g = load_gaussians(result_dir)
    try:
        truth = load_gt(job_dir)
    except FileNotFoundError as exc:
        raise ResultError(f"{exc}; pass --gt the synthetic job folder (the one holding gt/)") from exc
    F = truth.num_frames
    if g["frame_means"].shape[0] != F:
        raise ResultError(f"result has {g['frame_means'].shape[0]} frames but the ground truth has {F}; evaluate the matching job")
    out: dict[str, float] = {}
    # positions are the Gaussians' surface points (export.py: ``frame_surface``), renders use ``frame_means``
    out["err3d_pct"] = G.centre_error_pct(g["frame_surface"], truth.vertices, truth.faces)
    out["err3d_opacity_weighted_pct"] = G.centre_error_pct(g["frame_surface"], truth.vertices, truth.faces, weights=g["opacity"])
    out["err3d_static_pct"] = G.centre_error_pct(np.repeat(g["means"][None], F, 0), truth.vertices, truth.faces)
    out["motion_err_pct"], out["motion_err_static_pct"] = G.motion_error_pct(g["frame_surface"], truth.vertices, truth.faces)
    out["chamfer_pct"] = G.chamfer_pct(g["frame_surface"], truth.vertices, truth.faces)

    cams = load_cameras(job_dir / "cameras.json")
    Ks, w2cs = [c.K for c in cams], [c.w2c for c in cams]
    pred = G.project_tracks(G.gaussian_tracks_3d(truth.points_canonical, g["means"], g["frame_surface"]), Ks, w2cs)
    out["track_epe_px"] = G.track_epe(pred, truth.tracks, truth.visibility)
    still = G.project_tracks(G.gaussian_tracks_3d(truth.points_canonical, g["means"], np.repeat(g["means"][None], F, 0)), Ks, w2cs)
    out["track_epe_static_px"] = G.track_epe(still, truth.tracks, truth.visibility)

    out.update(evaluate_mesh_gt(result_dir, truth.vertices, truth.faces))

    bg = _job_background(job_dir)
    for name, cameras, target in (
        ("heldout", truth.heldout_cameras, truth.heldout_videos()),
        ("train", cams, load_videos(job_dir, len(cams), F)),
    ):
        render = render_gaussians(g, cameras, None, bg, backend, device)
        pred_rgb = render[..., :3].reshape(-1, *render.shape[2:4], 3)
        tgt_rgb = composite(target, bg).reshape(pred_rgb.shape)  # job videos are straight alpha
        mask = target[..., 3].reshape(pred_rgb.shape[:3]) > 0.5
        out[f"psnr_{name}"] = G.psnr(pred_rgb, tgt_rgb)
        out[f"psnr_{name}_masked"] = G.psnr(pred_rgb, tgt_rgb, mask)
        out[f"ssim_{name}"] = G.ssim(pred_rgb, tgt_rgb)
        out[f"ssim_{name}_masked"] = G.ssim(pred_rgb, tgt_rgb, mask)
    return out


def evaluate_mesh_gt(result_dir: Path, gt_vertices: np.ndarray, faces: np.ndarray) -> dict[str, float]:
    """Mesh metrics of ``result_dir/mesh_animation.npz`` (none for results without one)."""
    from ..stage2.vertex_animation import load_mesh_animation
    from . import gt as G
    from .results import ResultError

    if not (result_dir / "mesh_animation.npz").is_file():
        return {}
    try:
        anim = load_mesh_animation(result_dir)
    except ValueError as exc:
        raise ResultError(str(exc)) from exc
    pos = anim["positions"]
    if pos.shape != np.shape(gt_vertices):
        raise ResultError(f"mesh_animation.npz is {pos.shape} but the ground truth is {np.shape(gt_vertices)}; evaluate the matching job")
    out: dict[str, float] = {}
    out["mesh_err_pct"], out["mesh_err_static_pct"] = G.vertex_error_pct(pos, gt_vertices, faces)
    out["mesh_err_per_vertex_pct"], out["mesh_err_per_vertex_static_pct"] = G.vertex_error_pct(pos, gt_vertices)
    out["mesh_flipped_pct"] = 100.0 * G.flipped_face_fraction(pos, gt_vertices, faces)
    out["mesh_edge_distortion_pct"] = 100.0 * G.edge_length_distortion(pos, gt_vertices, faces)
    out["mesh_time_s"] = float(anim["time_s"])
    return out


def _result_videos(result_dir: Path, which: str) -> np.ndarray | None:
    vdir = result_dir / "videos"
    prefixes = ["stage1_view", "render_view"] if which == "auto" else [f"{which}_view"]
    for prefix in prefixes:
        paths = sorted(vdir.glob(f"{prefix}*.mp4"), key=lambda p: int(p.stem.removeprefix(prefix) or 0))
        if paths:
            return np.stack([read_mp4(p) for p in paths])
    return None


def evaluate_paper(args: argparse.Namespace, device: str) -> dict[str, float]:
    """Table 1 video metrics and CLIP 4D metrics for whichever weights were given."""
    from . import backbones as Bk
    from .clip4d import clip4d_metrics, orbit_cameras
    from .clip4d import composite as composite_on_white  # CLIP 4D: renders and reference on white
    from .results import load_gaussians, render_gaussians
    from .video import VideoBackbones, evaluate_videos, raft_flow_fn

    out: dict[str, float] = {}
    clip = Bk.load_clip(args.clip, device) if args.clip else None
    job = args.job if args.job is not None else args.gt
    reference = composite_on_white(read_rgba(args.reference)) if args.reference else None
    if reference is None and job is not None and (job / "views" / "0.png").is_file():
        reference = composite_on_white(read_rgba(job / "views" / "0.png"))
    prompt = args.prompt
    if prompt is None and job is not None and (job / "job.json").is_file():
        prompt = json.loads((job / "job.json").read_text()).get("prompt") or None

    if any([args.dino, args.amt, args.raft, args.aesthetic]):
        bb = VideoBackbones(
            dino=Bk.load_dino(args.dino, device) if args.dino else None,
            interpolator=Bk.load_amt_s(args.amt, device) if args.amt else None,
            flow=raft_flow_fn(Bk.load_raft(args.raft, device), args.raft_iters) if args.raft else None,
            clip=clip,
            aesthetic_head=Bk.load_aesthetic(args.aesthetic, device) if args.aesthetic else None,
            device=device,
        )
        videos = _result_videos(args.result, args.videos)
        if videos is None:
            raise FileNotFoundError(f"no videos/*_view*.mp4 in {args.result}; video metrics need the result's videos")
        conds = None
        if job is not None and (job / "views").is_dir():
            bg = video_background(job)  # I2V: the condition on the same background as the videos
            conds = np.stack([composite(read_rgba(job / "views" / f"{k}.png"), bg) for k in range(len(videos))])
        out.update(evaluate_videos(videos, bb, conds, args.fps)["metrics"])
    if clip is not None:
        g = load_gaussians(args.result)
        orbit = render_gaussians(g, orbit_cameras(args.orbit_views, args.orbit_resolution), None, (1, 1, 1), args.backend, device)
        out.update(clip4d_metrics(clip, orbit.transpose(1, 0, 2, 3, 4), None, reference, prompt))
    return out


def format_table(metrics: dict[str, Any]) -> str:
    width = max((len(k) for k in metrics), default=6)
    lines = [f"{'metric':<{width}}  value", "-" * (width + 12)]
    for k, v in metrics.items():
        lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .backbones import WeightsNotFound
    from .results import ResultError

    t0 = time.time()
    device = _device(args.device)
    metrics: dict[str, float] = {}
    try:
        if not args.result.is_dir():
            raise ResultError(f"result folder {args.result} does not exist")
        if args.gt is not None:
            metrics.update(evaluate_gt(args.result, args.gt, args.backend, device))
        metrics.update(evaluate_paper(args, device))
    except (ResultError, WeightsNotFound, FileNotFoundError, ValueError) as exc:
        print(f"track4dgen eval: error: {exc}", file=sys.stderr)
        return 1
    if not metrics:
        print("track4dgen eval: nothing to compute; pass --gt JOB_DIR and/or weights (--clip, --dino, ...)", file=sys.stderr)
        return 2
    print(format_table(metrics))
    if args.json is not None:
        payload = {
            "result": str(args.result),
            "gt": str(args.gt) if args.gt else None,
            "metrics": metrics,
            "definitions": {
                "ground_truth": "track4dgen.eval.gt module docstring",
                "video": "track4dgen.eval.video module docstring (dynamic_degree = VBench boolean)",
                "clip4d": "track4dgen.eval.clip4d module docstring",
            },
            "device": device,
            "wall_s": round(time.time() - t0, 3),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
