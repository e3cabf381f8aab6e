"""`track4dgen eval RESULT --gt JOB` end to end on CPU: a result that follows the ground-truth
motion scores better than the same Gaussians left still, on every ground-truth metric."""

from __future__ import annotations

import json

import numpy as np
import pytest

from track4dgen.cli import main as cli_main
from track4dgen.eval import gt as G
from track4dgen.synthetic import load_gt, write_job


def _write_result(result_dir, vertices, faces, colors, moving: bool, n: int = 1000) -> None:
    """Gaussians on the true surface (moving with it or still) and the mesh animation likewise."""
    fi, bary = G.sample_surface(vertices[0], faces, n, seed=0)
    frame_means = G.surface_points(vertices, faces, fi, bary)
    if not moving:
        frame_means = np.repeat(frame_means[:1], len(vertices), 0)
    F = len(vertices)
    rgb = (colors[faces[fi]] * bary[:, :, None]).sum(1)
    result_dir.mkdir(parents=True)
    np.savez(
        result_dir / "gaussians4d.npz",
        means=frame_means[0].astype(np.float32),
        frame_means=frame_means.astype(np.float32),
        frame_quats=np.tile(np.array([1.0, 0, 0, 0], np.float32), (F, n, 1)),
        frame_log_scales=np.full((F, n, 3), np.log(0.025), np.float32),
        frame_rgb=np.repeat(rgb[None], F, 0).astype(np.float32),
        opacity_logit=np.full(n, 2.0, np.float32),
    )
    positions = vertices if moving else np.repeat(vertices[:1], len(vertices), 0)
    np.savez(result_dir / "mesh_animation.npz", positions=positions.astype(np.float32), faces=faces, fps=np.float32(8),
             frames=np.int32(F), vertex_count=np.int64(vertices.shape[1]), method=np.array("field"), time_s=np.float32(0.5))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return write_job("waving_arm", tmp_path_factory.mktemp("job") / "arm", resolution=32, frames=3)


def test_eval_cli_ground_truth_end_to_end(job, tmp_path, capsys):
    truth = load_gt(job)
    _write_result(tmp_path / "good", truth.vertices, truth.faces, truth.colors, moving=True)
    _write_result(tmp_path / "still", truth.vertices, truth.faces, truth.colors, moving=False)
    assert cli_main(["eval", str(tmp_path / "good"), "--gt", str(job), "--json", str(tmp_path / "good.json"), "--backend", "torch"]) == 0
    table = capsys.readouterr().out
    assert "err3d_pct" in table and "psnr_heldout_masked" in table
    assert cli_main(["eval", str(tmp_path / "still"), "--gt", str(job), "--json", str(tmp_path / "still.json"), "--backend", "torch"]) == 0
    good = json.loads((tmp_path / "good.json").read_text())["metrics"]
    still = json.loads((tmp_path / "still.json").read_text())["metrics"]

    assert good["err3d_pct"] < 1e-3  # centres are exact surface points moving with the mesh
    assert good["err3d_static_pct"] == pytest.approx(still["err3d_pct"], rel=1e-6)
    assert still["err3d_pct"] > 0.1  # only the arm moves: a small but clear error
    assert good["motion_err_pct"] < 1e-3 and still["motion_err_pct"] == pytest.approx(still["motion_err_static_pct"], rel=1e-6)
    assert good["track_epe_px"] < 0.05 < still["track_epe_px"]
    assert good["chamfer_pct"] < still["chamfer_pct"]
    assert good["mesh_err_pct"] < 1e-4 and good["mesh_err_static_pct"] == pytest.approx(still["mesh_err_pct"], rel=1e-6)
    assert still["mesh_err_pct"] > 0.1 and good["mesh_flipped_pct"] == 0.0 and good["mesh_edge_distortion_pct"] < 1e-4
    assert still["mesh_edge_distortion_pct"] > 0.0 and good["mesh_time_s"] == pytest.approx(0.5)
    for split in ("heldout", "train"):
        assert good[f"psnr_{split}_masked"] > still[f"psnr_{split}_masked"]
        assert good[f"ssim_{split}"] > still[f"ssim_{split}"]
        assert 10.0 < good[f"psnr_{split}"] < 100.0


def test_eval_cli_errors(job, tmp_path, capsys):
    assert cli_main(["eval", str(tmp_path / "missing"), "--gt", str(job)]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    np.savez(tmp_path / "r" / "gaussians4d.npz", means=np.zeros((3, 3)))
    assert cli_main(["eval", str(tmp_path / "r"), "--gt", str(job)]) == 1
    assert "frame_means" in capsys.readouterr().err
    truth = load_gt(job)
    _write_result(tmp_path / "ok", truth.vertices, truth.faces, truth.colors, moving=True, n=50)
    assert cli_main(["eval", str(tmp_path / "ok"), "--gt", str(tmp_path)]) == 1  # not a synthetic job
    assert "gt" in capsys.readouterr().err
    assert cli_main(["eval", str(tmp_path / "ok"), "--dino", str(tmp_path / "none.pth")]) == 1
    assert "dino_vitbase16_pretrain.pth" in capsys.readouterr().err  # names the missing file and where to get it


def test_eval_cli_paper_metrics_with_local_weight_files(job, tmp_path, capsys):
    """The weight-file path end to end: RAFT/AMT-S/LAION files and a CLIP folder (random weights,
    real architectures) are loaded by the CLI's loaders and every paper metric comes out finite."""
    import imageio.v2 as imageio
    import torch

    from test_eval_video import textured, tiny_clip
    from track4dgen.eval import backbones as B

    truth = load_gt(job)
    result = tmp_path / "result"
    _write_result(result, truth.vertices, truth.faces, truth.colors, moving=True, n=300)
    (result / "videos").mkdir()
    frames = [np.roll(textured(), 4 * i, axis=1) for i in range(3)]
    imageio.mimwrite(result / "videos" / "render_view0.mp4", [(f * 255).astype(np.uint8) for f in frames], fps=8)
    w = tmp_path / "weights"
    w.mkdir()
    torch.save(B.RAFT().state_dict(), w / "raft-things.pth")
    torch.save({"state_dict": B.AMTS().state_dict()}, w / "amt-s.pth")
    clip = tiny_clip()
    clip.model.save_pretrained(w / "clip")
    torch.save(B.AestheticHead(16).linear.state_dict(), w / "sa_0_4_vit_l_14_linear.pth")

    argv = ["eval", str(result), "--job", str(job), "--videos", "render", "--raft", str(w / "raft-things.pth"), "--raft-iters", "3",
            "--amt", str(w), "--clip", str(w / "clip"), "--aesthetic", str(w / "sa_0_4_vit_l_14_linear.pth"),
            "--prompt", "", "--orbit-views", "4", "--orbit-resolution", "32", "--backend", "torch", "--json", str(tmp_path / "m.json")]
    assert cli_main(argv) == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "m.json").read_text())["metrics"]
    for key in ("temporal_flicker", "motion_smoothness", "dynamic_degree", "dynamic_px", "aesthetic_quality", "clip_c", "clip_o_img", "clip_f_img"):
        assert np.isfinite(m[key]), key
    assert 0.0 < m["temporal_flicker"] < 1.0 and 0.0 < m["motion_smoothness"] <= 1.0
    assert m["dynamic_degree"] in (0.0, 1.0)
    assert all(-1.0 <= m[k] <= 1.0 for k in ("clip_c", "clip_o_img", "clip_f_img"))
    assert "clip_o_text" not in m  # no prompt, no text metric


def test_i2v_condition_background_is_the_videos_background(tmp_path):
    from track4dgen.eval.cli import video_background

    staged = tmp_path / "two_stage"  # Stage One ran: videos and renders on its grey
    staged.mkdir()
    (staged / "job.json").write_text(json.dumps({"prompt": "x"}))
    assert video_background(staged) == (0.5, 0.5, 0.5)
    only2 = tmp_path / "stage2_only"  # given videos: Stage Two's default background
    (only2 / "videos").mkdir(parents=True)
    (only2 / "job.json").write_text(json.dumps({"prompt": "x"}))
    assert video_background(only2) == (1.0, 1.0, 1.0)
    (only2 / "job.json").write_text(json.dumps({"stage2": {"background": [0.2, 0.3, 0.4]}}))
    assert video_background(only2) == (0.2, 0.3, 0.4)
