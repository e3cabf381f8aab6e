"""Animated input mesh (issue 14): how well do the mesh's own vertices follow the true motion?

For every synthetic object: run Stage Two with the Stage Two benchmark's settings
(``SYNTHETIC_64_OVERRIDES``, 64 px, 4 views x 16 frames, 750 + 250 iterations) keeping the final
checkpoint, then rebuild the fitted model and compute the vertex trajectories with each variant
(``field`` = the field evaluated at the vertices, ``bind`` = carried by the nearest Gaussians; each
with and without the ARAP solve). Scores (definitions: ``track4dgen.eval.gt``): mesh vertex error
and its no-motion baseline (% of the bbox diagonal), the Gaussians' ``err3d`` of the same run,
flipped faces (%), edge-length distortion (%), seconds. The vertex error is area-weighted (the
error over the surface; gt.py says why) and also given per vertex. ``--big N`` also times every variant on an
N-vertex sphere with the last object's field (seconds for the targets and the ARAP solve, peak RSS);
``--big-only`` times only that, with an untrained field given random motion instead of a fitted one
(no training run needed: the timing depends on the vertex count, not on what the field learnt).

    python benchmarks/bench_vertex_animation.py --work DIR [--objects a,b] [--big 200000] [--json PATH]
    python benchmarks/bench_vertex_animation.py --big-only --big 200000 [--methods bind]

Runs whose checkpoint is already in ``DIR/<object>/ckpt`` are not repeated, so the slow part can
be started early and scored later.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VARIANTS = (("field", 2), ("field", 0), ("bind", 2), ("bind", 0))


def train(name: str, work: Path, tracks: str = "none", overrides: dict | None = None) -> None:
    """Stage Two on one synthetic object, result and final checkpoint under ``work/name``;
    ``tracks`` "oracle"/"noisy" writes the videos' 2D tracks into the job (Stage Two's track term);
    ``overrides``: stage2 settings on top of the synthetic 64 px ones."""
    from track4dgen.job import ProgressReporter, load_job
    from track4dgen.runner import run_job
    from track4dgen.stage2.config import SYNTHETIC_64_OVERRIDES
    from track4dgen.synthetic import write_job

    stage2 = {**SYNTHETIC_64_OVERRIDES, "checkpoint_every": 1000, **(overrides or {})}
    job_dir = write_job(name, work / name / "job", resolution=64, frames=16, stage2_overrides=stage2, tracks=tracks)
    t0 = time.perf_counter()
    run_job(load_job(job_dir), work / name / "result", ProgressReporter(stream=io.StringIO()), work / name / "ckpt")
    (work / name / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - t0}))


def fitted_model(work: Path, name: str):
    """The Stage Two model of ``work/name`` rebuilt from its job and final checkpoint."""
    import torch

    from track4dgen.job import load_job
    from track4dgen.meshio import load_mesh
    from track4dgen.stage2.checkpoint import checkpoint_path
    from track4dgen.stage2.config import Stage2Config
    from track4dgen.stage2.model import Stage2Model

    job = load_job(work / name / "job")
    cfg = Stage2Config.from_overrides(job.spec.stage2)
    mesh = load_mesh(job.mesh_path)
    model = Stage2Model.build(cfg, mesh.vertices, mesh.faces, mesh.colors, job.spec.frames, seed=job.spec.seed)
    model.load_state_dict(torch.load(checkpoint_path(work / name / "ckpt"), map_location="cpu", weights_only=False)["model"])
    return model.eval(), mesh, cfg


def random_motion_model(vertices, faces, frames: int, seed: int = 0, num_gaussians: int = 3000):
    """An untrained Stage Two model whose field really moves things: time planes off their
    all-ones start and non-zero last layers, so every frame deforms differently."""
    import numpy as np
    import torch

    from track4dgen.stage2.config import SYNTHETIC_64_OVERRIDES, Stage2Config
    from track4dgen.stage2.model import Stage2Model

    cfg = Stage2Config.from_overrides({**SYNTHETIC_64_OVERRIDES, "num_gaussians": num_gaussians,
                                       "hexplane_resolution": [16, 16, frames], "head_last_init_std": 0.05})
    colors = np.full((len(vertices), 3), 0.5, dtype=np.float32)
    model = Stage2Model.build(cfg, vertices, faces, colors, frames, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for plane in model.deformation.hexplane.time_parameters():
            plane.mul_(1 + 0.5 * (2 * torch.rand(plane.shape, generator=gen) - 1))
    return model.eval(), cfg


def score(work: Path, name: str) -> list[dict]:
    import numpy as np

    from track4dgen.eval import gt as G
    from track4dgen.eval.results import load_gaussians
    from track4dgen.stage2.vertex_animation import vertex_trajectories
    from track4dgen.synthetic import load_gt

    model, mesh, cfg = fitted_model(work, name)
    truth = load_gt(work / name / "job")
    err3d = G.centre_error_pct(load_gaussians(work / name / "result")["frame_surface"], truth.vertices, truth.faces)
    rows = []
    for method, iters in VARIANTS:
        anim = vertex_trajectories(model, mesh.vertices, mesh.faces, cfg.fps, method, cfg.vertex_arap_weight, iters,
                                   max_stretch=cfg.vertex_arap_max_stretch)
        err, still = G.vertex_error_pct(anim.positions, truth.vertices, truth.faces)
        per_vertex, per_vertex_still = G.vertex_error_pct(anim.positions, truth.vertices)
        rows.append({
            "name": name, "method": method, "arap_iters": iters, "vertices": len(mesh.vertices),
            "mesh_err_pct": err, "mesh_err_static_pct": still, "err3d_pct": err3d,
            "mesh_err_per_vertex_pct": per_vertex, "mesh_err_per_vertex_static_pct": per_vertex_still,
            "mesh_flipped_pct": 100 * G.flipped_face_fraction(anim.positions, truth.vertices, truth.faces),
            "mesh_edge_distortion_pct": 100 * G.edge_length_distortion(anim.positions, truth.vertices, truth.faces),
            "time_s": anim.timings_s["total_s"],
        })
    return rows


def big(model, bbox_diagonal: float, cfg, vertices: int, variants=VARIANTS) -> list[dict]:
    """``variants`` on a UV sphere of about ``vertices`` vertices moved by ``model``'s field."""
    import resource

    import numpy as np
    import trimesh

    from track4dgen.stage2.vertex_animation import vertex_trajectories

    side = int(np.ceil(np.sqrt(vertices / 2)))  # a count=[c, c] UV sphere has ~2 c^2 vertices
    sphere = trimesh.creation.uv_sphere(radius=0.5 * bbox_diagonal / np.sqrt(3), count=[side, side])
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch, the model and the sphere
    rows = []
    for method, iters in variants:
        cpu = time.process_time()  # on a shared CPU the wall clock also counts other processes' turns
        anim = vertex_trajectories(model, np.asarray(sphere.vertices), np.asarray(sphere.faces), cfg.fps, method, cfg.vertex_arap_weight, iters,
                                   max_stretch=cfg.vertex_arap_max_stretch)
        rows.append({"name": f"sphere ({len(sphere.vertices)} v)", "method": method, "arap_iters": iters, "frames": anim.frames,
                     **anim.timings_s, "cpu_s": time.process_time() - cpu, "load_avg_1min": os.getloadavg()[0], "base_rss_mb": base_mb, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="folder for the runs (kept, reused); required unless --big-only")
    p.add_argument("--objects", default=None, help="comma-separated names (default: all)")
    p.add_argument("--big", type=int, default=0, help="also time a sphere of this many vertices")
    p.add_argument("--score-only", action="store_true", help="score the runs already in --work, train none")
    p.add_argument("--big-only", action="store_true", help="only time --big, with an untrained moving field on the last object")
    p.add_argument("--methods", default="field,bind", help="comma-separated vertex motion methods for --big (default: both)")
    p.add_argument("--frames", type=int, default=16, help="frames of the --big-only field")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--tracks", choices=("none", "oracle", "noisy"), default="none",
                   help="train with the videos' 2D tracks, exact or degraded like a tracker's (bench_stage2.py --tracks)")
    p.add_argument("--stage2", type=json.loads, default={}, help='JSON of stage2 settings to train with, e.g. \'{"w_track": 10}\'')
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from track4dgen.stage2.checkpoint import checkpoint_path
    from track4dgen.synthetic import list_objects

    torch.set_num_threads(1)
    names = args.objects.split(",") if args.objects else list_objects()
    variants = [(m, i) for m, i in VARIANTS if m in args.methods.split(",")]
    if args.big_only:
        if not args.big:
            p.error("--big-only needs --big N")
        from track4dgen.synthetic import make_object

        obj = make_object(names[-1], frames=args.frames)
        model, cfg = random_motion_model(obj.canonical, obj.faces, args.frames)
        diagonal = float(np.linalg.norm(obj.canonical.max(0) - obj.canonical.min(0)))
        rows = big(model, diagonal, cfg, args.big, variants)
        for r in rows:
            print(r)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"device": "cpu", "rows": rows}, indent=1))
        return 0
    if args.work is None:
        p.error("--work is required unless --big-only")
    rows, done = [], []
    for name in names:
        if not checkpoint_path(args.work / name / "ckpt").is_file() or not (args.work / name / "result").is_dir():
            if args.score_only:
                print(f"{name}: no finished run in {args.work}", file=sys.stderr)
                continue
            train(name, args.work, args.tracks, args.stage2)
        rows += score(args.work, name)
        done.append(name)
    cols = ("name", "method", "arap_iters", "mesh_err_pct", "mesh_err_static_pct", "err3d_pct", "mesh_flipped_pct",
            "mesh_edge_distortion_pct", "time_s")
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>14.3f}" if isinstance(r[c], float) else f"{r[c]!s:>14}" for c in cols))
    if args.big and done:
        model, mesh, cfg = fitted_model(args.work, done[-1])
        rows_big = big(model, mesh.bbox_diagonal, cfg, args.big, variants)
        for r in rows_big:
            print(r)
        rows += rows_big
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": "cpu", "tracks": args.tracks, "stage2": args.stage2, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
