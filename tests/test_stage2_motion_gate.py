"""Motion gate: which Gaussians the videos show moving, and that gated ones stay exactly still."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from track4dgen.job import JobError, ProgressReporter, load_job
from track4dgen.stage2.motion_gate import change_maps, motion_gate
from track4dgen.stage2.run import run_stage2


def _square_video(frames: int = 4, size: int = 16) -> torch.Tensor:
    """One view: a static grey block on the left, a red square sliding right along the bottom."""
    v = torch.zeros(1, frames, size, size, 4)
    v[0, :, 2:6, 2:6] = torch.tensor([0.5, 0.5, 0.5, 1.0])
    for f in range(frames):
        v[0, f, 10:13, 2 + 2 * f:5 + 2 * f] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    return v


def test_change_map_marks_the_moving_square_not_the_static_block():
    change = change_maps(_square_video(), torch.ones(3), dilate_px=0)[0]
    assert change[2:6, 2:6].max() == 0  # the static block never changes
    assert change[10:13, 2:11].min() > 0.5  # the square's path (start to end) changes
    assert change[:8, 8:].max() == 0  # empty background stays unchanged
    dilated = change_maps(_square_video(), torch.ones(3), dilate_px=1)[0]
    assert dilated[9, 5] > 0.5 and change[9, 5] == 0  # one pixel grown around the path


def _camera(size: int = 16):
    K = torch.tensor([[[float(size), 0.0, size / 2], [0.0, float(size), size / 2], [0.0, 0.0, 1.0]]])
    return torch.eye(4)[None], K


def _pixel_point(col: float, row: float, size: int = 16) -> list[float]:
    """A camera-frame point at depth 1 that projects to the centre of pixel (col, row)."""
    return [(col + 0.5 - size / 2) / size, (row + 0.5 - size / 2) / size, 1.0]


def test_gate_is_zero_on_unchanged_pixels_one_on_changed_and_outside():
    change = change_maps(_square_video(), torch.ones(3), dilate_px=0)
    vm, K = _camera()
    pts = torch.tensor([_pixel_point(3, 3), _pixel_point(6, 11), [5.0, 0.0, 1.0], _pixel_point(12, 2)])
    gate = motion_gate(pts, change, vm, K)
    assert gate.tolist() == [0.0, 1.0, 1.0, 0.0]  # block, square's path, outside the image, background
    with pytest.raises(ValueError, match="lo < hi"):
        motion_gate(pts, change, vm, K, lo=0.1, hi=0.1)


def test_a_still_view_that_sees_the_point_wins_hidden_views_have_no_say():
    one = change_maps(_square_video(), torch.ones(3), dilate_px=0)
    change = torch.cat([one, torch.zeros_like(one)])  # view 0 sees the square move, view 1 sees nothing
    vm, K = _camera()
    vm, K = vm.expand(2, 4, 4), K.expand(2, 3, 3)
    on_path = torch.tensor([_pixel_point(6, 11)])
    # seen by both: view 1 shows it never changes (in view 0 something passed in front of it)
    assert motion_gate(on_path, change, vm, K, visible=torch.tensor([[True], [True]])).item() == 0
    assert motion_gate(on_path, change, vm, K, visible=torch.tensor([[True], [False]])).item() == 1  # only view 0 sees it
    assert motion_gate(on_path, change, vm, K, visible=torch.tensor([[False], [True]])).item() == 0  # only view 1 sees it


def test_unseen_points_follow_their_neighbours():
    one = change_maps(_square_video(), torch.ones(3), dilate_px=0)
    change = torch.cat([one, one])
    vm, K = _camera()
    vm, K = vm.expand(2, 4, 4), K.expand(2, 3, 3)
    block = torch.tensor([_pixel_point(3, 3)]) + torch.randn(10, 3) * 1e-3
    path = torch.tensor([_pixel_point(6, 11)]) + torch.randn(10, 3) * 1e-3
    near_block, near_path = block[:1] + 0.01, path[:1] + 0.01
    pts = torch.cat([block, path, near_block, near_path])
    visible = torch.ones(2, len(pts), dtype=torch.bool)
    visible[:, -2:] = False
    gate = motion_gate(pts, change, vm, K, visible=visible)
    assert gate[:10].max() == 0 and gate[10:20].min() == 1
    assert gate[-2] == 0 and gate[-1] == 1


def test_gated_gaussians_never_move_while_free_ones_learn_the_motion(tmp_path):
    from track4dgen.synthetic import load_videos, write_job

    tiny = {"iters_rec": 12, "iters_sds": 0, "num_gaussians": 400, "batch_images": 4, "hexplane_resolution": [16, 16, 4],
            "hexplane_dim": 8, "head_hidden": 32, "checkpoint_every": 0, "motion_gate": True,
            "progressive_iters_per_frame": 0}  # 12 iterations: every frame from the start
    job_dir = write_job("waving_arm", tmp_path / "job", resolution=24, frames=4, stage2_overrides=tiny)
    job = load_job(job_dir)
    out = tmp_path / "result"
    run_stage2(job, load_videos(job_dir, frames=4), None, ProgressReporter(stream=io.StringIO()), out)
    z = np.load(out / "gaussians4d.npz")
    moved = np.abs(z["frame_means"] - z["means"][None]).max(axis=(0, 2))
    still = moved == 0
    assert 0.3 < still.mean() < 0.98, still.mean()  # the body is gated, the arm is not
    # the free ones are those near the arm (+x side of the body): they did move
    assert moved[~still].max() > 1e-4
    assert z["means"][~still, 0].mean() > z["means"][still, 0].mean()

    bad = dict(tiny, motion_gate_range=[0.1, 0.05])
    job_dir_bad = write_job("waving_arm", tmp_path / "bad", resolution=24, frames=4, stage2_overrides=bad)
    with pytest.raises(JobError, match="motion gate"):
        run_stage2(load_job(job_dir_bad), load_videos(job_dir_bad, frames=4), None, None, tmp_path / "bad_out")


def test_means_on_surface_keeps_canonical_centres_on_their_triangles(tmp_path):
    """With ``means_on_surface`` the centres still move (along the mesh) but never off it; without
    it the same run moves them off the surface."""
    from track4dgen.stage2.config import Stage2Config
    from track4dgen.stage2.model import Stage2Model
    from track4dgen.stage2.optimize import Trainer
    from track4dgen.stage2.run import build_train_data, check_videos
    from track4dgen.meshio import load_mesh
    from track4dgen.synthetic import load_videos, write_job

    job_dir = write_job("hopper", tmp_path / "job", resolution=24, frames=4)
    job = load_job(job_dir)
    mesh = load_mesh(job.mesh_path)
    videos = check_videos(load_videos(job_dir, frames=4), len(job.cameras), 4)
    offsets = {}
    for on_surface in (True, False):
        cfg = Stage2Config(iters_rec=15, iters_sds=0, num_gaussians=300, batch_images=4, hexplane_resolution=[8, 8, 4],
                           hexplane_dim=8, head_hidden=16, lr_means=5e-3, means_on_surface=on_surface)
        data = build_train_data(job, videos, None, cfg.background)
        model = Stage2Model.build(cfg, mesh.vertices, mesh.faces, mesh.colors, 4, seed=0)
        start = model.gaussians.means.detach().clone()
        Trainer(model, data, cfg).train()
        g = model.gaussians
        moved = (g.means - start).detach()
        offsets[on_surface] = (moved * g.normals).sum(-1).abs().max().item()
        assert moved.norm(dim=-1).max() > 1e-3  # the centres did move
    assert offsets[True] < 1e-6 < 1e-3 < offsets[False], offsets
