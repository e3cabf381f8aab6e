"""Rigid rotation search: finds a part's per-frame turn from the images, and the field learns it."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from track4dgen.job import ProgressReporter, load_job
from track4dgen.meshio import load_mesh
from track4dgen.stage2.config import Stage2Config
from track4dgen.stage2.model import Stage2Model
from track4dgen.stage2.motion_search import axis_angle_quat, search_rotations
from track4dgen.stage2.optimize import default_render_fn, render_state
from track4dgen.stage2.run import build_train_data, check_videos, run_stage2
from track4dgen.synthetic import load_gt, load_videos, write_job
from track4dgen.synthetic.shapes import rotation

TINY = {"num_gaussians": 1500, "hexplane_resolution": [16, 16, 4], "hexplane_dim": 8, "head_hidden": 32,
        "checkpoint_every": 0, "batch_images": 4}


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_axis_angle_quaternion_rotates_like_the_rotation_matrix(axis):
    from track4dgen.stage2.deformation import quat_rotate
    q = axis_angle_quat(axis, 0.7)
    v = torch.tensor([[0.3, -0.5, 0.8], [1.0, 2.0, -0.5]])
    expect = torch.tensor(v.double().numpy() @ rotation("xyz"[axis], 0.7).T, dtype=torch.float32)
    torch.testing.assert_close(quat_rotate(q, v), expect)


@pytest.fixture(scope="module")
def spinner(tmp_path_factory):
    """The synthetic spinner at 32 px, 4 frames: the blades turn 90 degrees per frame about z."""
    job_dir = write_job("spinner", tmp_path_factory.mktemp("spin") / "job", resolution=32, frames=4)
    job = load_job(job_dir)
    cfg = Stage2Config(**TINY)
    mesh = load_mesh(job.mesh_path)
    data = build_train_data(job, check_videos(load_videos(job_dir, frames=4), 4, 4), None, cfg.background)
    model = Stage2Model.build(cfg, mesh.vertices, mesh.faces, mesh.colors, 4, seed=0)
    truth = load_gt(job_dir)
    moving_vertex = np.linalg.norm(truth.vertices - truth.vertices[:1], axis=-1).max(0) > 1e-6
    moving_face = moving_vertex[truth.faces].any(1)
    part = torch.as_tensor(moving_face[model.gaussians.face_idx.numpy()])
    return job_dir, cfg, data, model, part


def test_search_finds_the_spin_of_the_blades(spinner):
    _, cfg, data, model, part = spinner
    render_fn = default_render_fn()

    def render(state):
        return render_state(model, state, data.viewmats, data.Ks, data.size, data.background, render_fn, "torch", cfg.raster_mode)

    guess = search_rotations(model, data.images, render, data.background, part, min_gain=0.1)
    assert guess.axis[1:] == [2, 2, 2]
    found = [math.degrees(a) % 360 for a in guess.angle[1:]]
    np.testing.assert_allclose(found, [90.0, 180.0, 270.0], atol=4.0)
    assert min(guess.gain[1:]) > 0.1

    # one confident frame of three is not a turning part: with the majority rule all keep the identity
    few = search_rotations(model, data.images, render, data.background, part, min_gain=0.2, min_frames=0.5)
    assert few.angle == [0.0] * 4, few
    assert search_rotations(model, data.images, render, data.background, part, min_gain=0.2, min_frames=0.3).angle[2] != 0.0

    # nothing turns where nothing moves: the still stand as the "part" keeps the identity
    still = search_rotations(model, data.images, render, data.background, ~part, min_gain=0.1)
    assert still.angle == [0.0] * 4, still


def test_rigid_part_turns_its_gaussians_and_the_field_adds_to_it(spinner):
    _, cfg, _, _, part = spinner
    model = Stage2Model.build(cfg, *_mesh(spinner), 4, seed=0)
    rest = model.frame(0).means.detach()
    pivot = rest[part].mean(0)
    rotations = torch.stack([axis_angle_quat(2, a) for a in (0.0, math.pi / 2, math.pi, 1.5 * math.pi)])
    model.set_rigid_part(part, rotations, pivot)
    torch.testing.assert_close(model.frame(0).means, rest)  # frame 0 is the rest pose
    turned = model.frame(1)
    expect = (rest[part] - pivot) @ torch.tensor(rotation("z", math.pi / 2).T, dtype=torch.float32) + pivot
    torch.testing.assert_close(turned.means[part], expect, atol=1e-5, rtol=0)
    torch.testing.assert_close(turned.means[~part], rest[~part])
    # the Gaussians' own rotations turn with the part
    torch.testing.assert_close(turned.dq[part], rotations[1].expand(int(part.sum()), 4), atol=1e-5, rtol=0)
    # the field's residual still trains: its gradient reaches the HexPlane through the turned part
    turned.means[part].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.deformation.parameters())
    with pytest.raises(ValueError, match="rigid part"):
        model.set_rigid_part(part[:-1], rotations, pivot)


def _mesh(spinner):
    job_dir = spinner[0]
    mesh = load_mesh(load_job(job_dir).mesh_path)
    return mesh.vertices, mesh.faces, mesh.colors


def test_stage2_with_motion_search_learns_the_spin(spinner, tmp_path):
    job_dir = write_job("spinner", tmp_path / "job", resolution=32, frames=4,
                        stage2_overrides={**TINY, "iters_rec": 10, "iters_sds": 0, "motion_gate": True, "motion_search": True,
                                          "motion_search_min_gain": 0.1})
    out = tmp_path / "result"
    run_stage2(load_job(job_dir), load_videos(job_dir, frames=4), None, ProgressReporter(stream=io.StringIO()), out)
    z = np.load(out / "gaussians4d.npz")
    truth = load_gt(job_dir)
    from track4dgen.eval import gt as G

    err = G.centre_error_pct(z["frame_means"], truth.vertices, truth.faces)
    still = G.centre_error_pct(np.repeat(z["means"][None], 4, 0), truth.vertices, truth.faces)
    assert err < 0.5 * still, (err, still)
