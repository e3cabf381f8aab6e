"""4D-SDS from random orbit cameras (Animate3D's 4D stage): the orbit's distribution, and the
SDS gradient of the tiny MV-VDM reaching the Gaussians through views no training camera has."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from track4dgen.cameras import project_points
from track4dgen.job import load_job
from track4dgen.meshio import load_mesh
from track4dgen.stage1.components import build_components
from track4dgen.stage1.config import SamplerConfig, get_config
from track4dgen.stage1.sds import make_sds_fn
from track4dgen.stage2.config import Stage2Config
from track4dgen.stage2.model import Stage2Model
from track4dgen.stage2.optimize import default_render_fn, render_state
from track4dgen.stage2.run import build_train_data, check_videos
from track4dgen.stage2.sds_cameras import (SDS_DISTANCE_RANGE_REL, SDS_ELEVATION_RANGE_DEG, SDS_FOVY_RANGE_DEG,
                                           random_view_sds, sample_sds_orbit, sds_cameras)

FRAMES = 3


def test_orbits_follow_the_reference_ranges():
    gen = torch.Generator().manual_seed(0)
    orbits = [sample_sds_orbit(gen) for _ in range(400)]
    offsets = []
    for o in orbits:
        az = np.array(o["azimuths"])
        np.testing.assert_allclose(np.diff(az), 90.0, atol=1e-9)  # 4 views 90 degrees apart
        assert -180.0 <= az[0] < -90.0
        offsets.append(az[0] + 180.0)
        assert SDS_ELEVATION_RANGE_DEG[0] <= o["elevation"] <= SDS_ELEVATION_RANGE_DEG[1]
        assert SDS_FOVY_RANGE_DEG[0] <= o["fovy"] <= SDS_FOVY_RANGE_DEG[1]
        rel = o["distance"] * math.tan(math.radians(o["fovy"]) / 2)
        assert SDS_DISTANCE_RANGE_REL[0] - 1e-9 <= rel <= SDS_DISTANCE_RANGE_REL[1] + 1e-9
    offsets = np.array(offsets)
    assert offsets.min() < 10 and offsets.max() > 80 and 35 < offsets.mean() < 55  # uniform offset
    elev = np.array([o["elevation"] for o in orbits])
    assert 12 < elev.mean() < 18 and elev.max() > 27  # covers the band
    a = sample_sds_orbit(torch.Generator().manual_seed(5))
    assert a == sample_sds_orbit(torch.Generator().manual_seed(5))  # seeded


def test_orbit_cameras_look_at_the_object_centre():
    orbit = sample_sds_orbit(torch.Generator().manual_seed(1))
    viewmats, Ks = sds_cameras(orbit, 32, 24)
    for w2c, K in zip(viewmats.numpy(), Ks.numpy()):
        uv, z = project_points(np.zeros(3), K, w2c)
        np.testing.assert_allclose(uv, [16.0, 12.0], atol=1e-4)
        assert z == pytest.approx(orbit["distance"], rel=1e-5)


@pytest.fixture(scope="module")
def hopper(tmp_path_factory):
    from track4dgen.synthetic import load_videos, write_job

    root = tmp_path_factory.mktemp("sds") / "job"
    write_job("hopper", root, resolution=24, frames=FRAMES, stage2_overrides={"num_gaussians": 300})
    job = load_job(root)
    cfg = Stage2Config.from_overrides({**job.spec.stage2, "hexplane_resolution": [8, 8, 3], "hexplane_dim": 8, "head_hidden": 16})
    videos = check_videos(load_videos(root, frames=FRAMES), 4, FRAMES)
    data = build_train_data(job, videos, cfg.resolution, cfg.background)
    mesh = load_mesh(job.mesh_path)
    return cfg, data, Stage2Model.build(cfg, mesh.vertices, mesh.faces, mesh.colors, FRAMES, seed=0)


def test_sds_gradient_reaches_the_gaussians_from_a_non_training_view(hopper):
    torch.set_num_threads(1)
    cfg, data, model = hopper
    comp = build_components(get_config("tiny", num_frames=FRAMES), seed=0)
    views = data.images[:, 0, ..., :3].permute(0, 3, 1, 2)
    sds_fn = make_sds_fn(comp, views, "a hopping toy", data.viewmats.numpy(), SamplerConfig(), seed=0)
    render_fn = default_render_fn()

    def render(frame, viewmats, Ks):
        return render_state(model, model.frame(frame), viewmats, Ks, data.size, data.background, render_fn,
                            cfg.raster_backend, cfg.raster_mode)[0]

    model.zero_grad(set_to_none=True)
    loss, orbit = random_view_sds(sds_fn, render, 4, FRAMES, data.size, torch.Generator().manual_seed(3))
    # none of the orbit's cameras is a training camera (the rig sits at 0/90/180/270, elevation 15)
    train_centres = torch.linalg.inv(data.viewmats)[:, :3, 3]
    viewmats, _ = sds_cameras(orbit, *data.size)
    centres = torch.linalg.inv(viewmats)[:, :3, 3]
    assert float(torch.cdist(centres, train_centres).min()) > 0.1
    assert loss is not None and loss.ndim == 0 and torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    g = model.gaussians
    for name, p in (("means", g.means), ("sh", g.sh4d), ("opacity", g.opacity_logit)):
        assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0, name
    field = [p for p in model.deformation.parameters() if p.grad is not None]
    assert field and sum(float(p.grad.abs().sum()) for p in field) > 0  # the motion field learns from SDS too
    assert all(p.grad is None for p in comp.unet.parameters())
