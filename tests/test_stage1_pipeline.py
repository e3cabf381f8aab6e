"""Stage One sampling, 4D-SDS and the job entry point on the tiny model (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from track4dgen.cameras import rig_cameras, save_cameras
from track4dgen.stage1.components import build_components
from track4dgen.stage1.config import SamplerConfig, get_config
from track4dgen.stage1.pipeline import MVVDMPipeline, butterworth_lowpass, cond_noise_scale, freeinit_mix
from track4dgen.stage1.sds import make_sds_fn


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def comp():
    return build_components(get_config("tiny", num_frames=3), seed=0)


def _views(V=4, size=64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.full((V, 3, size, size), 0.5)
    v[:, :, 16:48, 16:48] = torch.rand(V, 3, 32, 32, generator=g)
    return v


CAMS = [c.w2c for c in rig_cameras(64)]


def test_tiny_pipeline_is_deterministic_per_seed(comp):
    pipe = MVVDMPipeline(comp, SamplerConfig(steps=3, feature_step=1, freeinit_iters=1))
    seen = []
    a = pipe(_views(), "a dancing robot", CAMS, seed=7, progress=lambda s, t, m: seen.append((s, t)))
    b = pipe(_views(), "a dancing robot", CAMS, seed=7)
    c = pipe(_views(), "a dancing robot", CAMS, seed=8)
    assert a.videos.shape == (4, 3, 3, 64, 64) and a.latents.shape == (4, 3, 4, 8, 8)
    assert 0.0 <= float(a.videos.min()) and float(a.videos.max()) <= 1.0
    assert torch.equal(a.videos, b.videos) and torch.equal(a.features, b.features)
    assert float((a.videos[:, 1:] - c.videos[:, 1:]).abs().max()) > 1e-3  # seed matters
    assert torch.equal(a.videos[:, 0], c.videos[:, 0])  # frame 0 = decoded condition, seed-free
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert a.features.shape[:2] == (4, 3) and a.features.ndim == 5


def test_prompt_and_condition_change_the_sample(comp):
    pipe = MVVDMPipeline(comp, SamplerConfig(steps=2, return_features=False, freeinit_iters=1))
    a = pipe(_views(), "a cat", CAMS, seed=1)
    b = pipe(_views(), "a dog", CAMS, seed=1)
    c = pipe(_views(seed=5), "a cat", CAMS, seed=1)
    assert float((a.videos[:, 1:] - b.videos[:, 1:]).abs().max()) > 1e-4  # CFG uses the text
    assert float((a.videos[:, 1:] - c.videos[:, 1:]).abs().max()) > 1e-4  # frames follow the views
    assert a.features is None
    mid = MVVDMPipeline(comp, SamplerConfig(steps=1, feature_step=0, feature_block="mid_block", freeinit_iters=1))(_views(), "a cat", CAMS)
    assert mid.features.shape[-1] == 2  # the mid block works at latent/4 in the tiny model


def test_freeinit_is_on_by_default_with_the_reference_setting_and_a_fast_preset(comp):
    ref = SamplerConfig.from_overrides({})
    assert (ref.freeinit_iters, ref.freeinit_d_s, ref.freeinit_d_t) == (3, 0.25, 0.25)
    assert SamplerConfig.from_overrides({"preset": "fast"}).freeinit_iters == 1
    assert SamplerConfig.from_overrides({"preset": "fast", "freeinit_iters": 2}).freeinit_iters == 2  # keys win
    with pytest.raises(ValueError, match="unknown stage1 preset"):
        SamplerConfig.from_overrides({"preset": "quick"})
    seen = []
    on = MVVDMPipeline(comp, SamplerConfig(steps=2, return_features=False))(_views(), "a cat", CAMS, seed=3,
                                                                             progress=lambda s, t, m: seen.append((s, t, m)))
    off = MVVDMPipeline(comp, SamplerConfig.from_overrides({"preset": "fast", "steps": 2, "return_features": False}))(
        _views(), "a cat", CAMS, seed=3)
    assert [(s, t) for s, t, _ in seen] == [(i, 6) for i in range(1, 7)] and "FreeInit 3/3" in seen[-1][2]
    assert float((on.videos[:, 1:] - off.videos[:, 1:]).abs().max()) > 1e-4  # the re-noised passes change the result


def test_conditional_frame_noise_is_annealed():
    cfg = SamplerConfig(cond_noise_max=0.2)
    assert cond_noise_scale(0, cfg) == 0.0
    assert cond_noise_scale(999, cfg) > cond_noise_scale(500, cfg) > cond_noise_scale(10, cfg) > 0.0
    assert cond_noise_scale(1000, cfg) == pytest.approx(0.2)


def test_freeinit_keeps_low_frequencies_of_latents_and_high_of_noise():
    g = torch.Generator().manual_seed(0)
    lat, noise = torch.randn(1, 2, 4, 4, 8, 8, generator=g), torch.randn(1, 2, 4, 4, 8, 8, generator=g)
    assert torch.allclose(freeinit_mix(lat, noise, torch.ones(4, 8, 8)), lat, atol=1e-5)
    assert torch.allclose(freeinit_mix(lat, noise, torch.zeros(4, 8, 8)), noise, atol=1e-5)
    mask = butterworth_lowpass((4, 8, 8), 0.25, 0.25)
    assert mask[2, 4, 4] == pytest.approx(1.0) and float(mask[0, 0, 0]) < 0.01  # centre = DC after fftshift
    mixed = freeinit_mix(lat, noise, mask)
    assert torch.allclose(mixed.mean(dim=(2, 4, 5)), lat.mean(dim=(2, 4, 5)), atol=1e-4)  # DC from latents
    assert SamplerConfig.from_overrides({"freeinit_iters": 2}).freeinit_iters == 2
    with pytest.raises(ValueError, match="unknown stage1 setting"):
        SamplerConfig.from_overrides({"stepz": 3})


@pytest.mark.parametrize("condition", ["render", "views"])
def test_sds_gradient_reaches_the_rendered_parameter(comp, condition):
    """A parameter image stands in for the differentiable render of Stage Two."""
    sds = make_sds_fn(comp, _views(), "a cat", CAMS, SamplerConfig(sds_guidance_scale=5.0, sds_condition=condition), seed=0)
    render = torch.nn.Parameter(torch.rand(4, 3, 3, 64, 64))
    loss = sds(render)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    g = render.grad
    assert g is not None and torch.isfinite(g).all()
    assert float(g[:, 1:].abs().sum()) > 0  # generated frames get SDS gradient
    assert float(g[:, 0].abs().sum()) == 0.0  # frame 0 is the condition
    assert all(p.grad is None for p in comp.unet.parameters())  # the U-Net is not differentiated
    with pytest.raises(ValueError, match="expects renders"):
        sds(torch.rand(2, 3, 3, 64, 64))


def test_sds_reads_condition_and_image_embeddings_from_the_renders_and_uses_their_cameras(comp):
    """Reference 4D-SDS: condition latent and IP-Adapter embeddings come from the rendered frame
    0 (so the job's views do not matter), and the cameras passed with the renders are used."""
    from track4dgen.stage1.camera_embed import camera_tensor

    cfg = SamplerConfig(sds_guidance_scale=5.0, sds_condition="render")
    render = torch.rand(4, 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    def loss(views, r=render, cams=None):
        return make_sds_fn(comp, views, "a cat", CAMS, cfg, seed=2)(r, cams).item()

    base = loss(_views())
    assert loss(_views(seed=9)) == pytest.approx(base, rel=1e-6)  # the job's views are not read
    other = render.clone()
    other[:, 0] = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert abs(loss(_views(), other) - base) > 1e-6 * base  # frame 0 of the renders is
    turned = camera_tensor([c.w2c for c in rig_cameras(64, azimuths_deg=(37.0, 127.0, 217.0, 307.0))])
    assert abs(loss(_views(), render, turned) - base) > 1e-6 * base  # and the render cameras are
    with pytest.raises(ValueError, match="cameras must be"):
        make_sds_fn(comp, _views(), "a cat", CAMS, cfg)(render, turned[:2])


def test_sds_step_moves_renders_toward_the_models_reconstruction(comp):
    """One SGD step on the SDS loss must lower ||z - x0_hat|| for the same t and noise."""
    render = torch.nn.Parameter(torch.rand(4, 2, 3, 64, 64))
    loss0 = make_sds_fn(comp, _views(), "a cat", CAMS, SamplerConfig(sds_guidance_scale=0.0), seed=3)(render)
    loss0.backward()
    with torch.no_grad():
        render -= 2.0 * render.grad / render.grad.abs().max()
    loss1 = make_sds_fn(comp, _views(), "a cat", CAMS, SamplerConfig(sds_guidance_scale=0.0), seed=3)(render)
    assert loss1.item() < loss0.item()


# ----------------------------------------------------------------------------- job entry


def _write_job(root: Path, frames: int = 3, stage1: dict | None = None, model: str = "tiny") -> Path:
    import trimesh
    from PIL import Image

    root.mkdir(parents=True)
    spec = {"version": 1, "prompt": "a jumping cube", "seed": 4, "frames": frames, "views": 4, "resolution": 64,
            "model": model, "stage1": stage1 or {"steps": 2, "feature_step": 1}}
    (root / "job.json").write_text(json.dumps(spec))
    trimesh.creation.box(extents=(1, 1, 1)).export(root / "mesh.glb")
    save_cameras(root / "cameras.json", rig_cameras(64))
    (root / "views").mkdir()
    for k in range(4):
        a = np.zeros((64, 64, 4), np.uint8)
        a[20:44, 20:44] = (200, 40 * k, 90, 255)
        Image.fromarray(a, "RGBA").save(root / "views" / f"{k}.png")
    return root


def test_run_stage1_on_a_tiny_job(tmp_path):
    from track4dgen.job import ProgressReporter, load_job
    from track4dgen.stage1.run import run_stage1

    job = load_job(_write_job(tmp_path / "job"))
    events = []
    videos, features, sds_fn = run_stage1(job, ProgressReporter(sink=events.append), tmp_path / "work")
    assert videos.shape == (4, 3, 64, 64, 4) and videos.dtype == np.float32
    assert 0.0 <= videos.min() and videos.max() <= 1.0
    mask0 = videos[:, 0, :, :, 3]
    assert mask0[:, 20:44, 20:44].min() == 1.0 and mask0[:, :10, :10].max() == 0.0  # frame 0 alpha = view mask
    assert features.ndim == 5 and features.shape[:2] == (4, 3) and np.isfinite(features).all()
    steps = [e for e in events if e.get("stage") == "stage1"]
    assert steps and steps[-1]["step"] == steps[-1]["total"] == 6  # 2 steps x 3 FreeInit passes (default)
    assert (tmp_path / "work" / "stage1_view3" / "002.png").is_file() and (tmp_path / "work" / "features.npz").is_file()
    render = torch.nn.Parameter(torch.from_numpy(videos[..., :3]).permute(0, 1, 4, 2, 3).contiguous())
    sds_fn(render).backward()
    assert float(render.grad.abs().sum()) > 0


def test_run_stage1_errors_are_job_errors(tmp_path, monkeypatch):
    from track4dgen.job import JobError, ProgressReporter, load_job
    from track4dgen.stage1 import weights as W
    from track4dgen.stage1.run import run_stage1

    with pytest.raises(JobError) as err:  # job validation (local and server) refuses it before Stage One
        load_job(_write_job(tmp_path / "bad", stage1={"stepz": 2}))
    assert err.value.code == "bad_job_json" and "stepz" in err.value.message

    def no_cache(repo_id, allow_patterns, local_files_only):
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(W, "_snapshot_download", no_cache)
    full = load_job(_write_job(tmp_path / "full", model="animate3d"))
    with pytest.raises(JobError) as err:
        run_stage1(full, ProgressReporter(sink=lambda e: None), tmp_path / "w2")
    assert err.value.code == "missing_weights" and "track4dgen weights download" in err.value.hint


def test_nearest_neighbour_tracks_recover_known_motion():
    from track4dgen.stage1.features import nearest_neighbour_tracks

    g = torch.Generator().manual_seed(0)
    code = torch.randn(16, 8, 8, generator=g)  # unique random code per feature cell
    shifts = [(0, 0), (1, 0), (2, 1), (3, 2)]  # (dx, dy) cells per frame
    feats = torch.stack([torch.roll(code, shifts=(dy, dx), dims=(1, 2)) for dx, dy in shifts])
    cells = torch.tensor([[2, 2], [4, 3], [1, 5]])
    queries = (cells.float() + 0.5) * 8  # pixel centres of those cells in a 64x64 image
    tracks = nearest_neighbour_tracks(feats, queries, (64, 64))
    for f, (dx, dy) in enumerate(shifts):
        expect = ((cells + torch.tensor([dx, dy])) % 8).float().add(0.5).mul(8)
        assert torch.allclose(tracks[f], expect), f


def test_block_probe_reports_every_motion_block(comp):
    from track4dgen.stage1.features import all_feature_blocks, probe_blocks

    V, Fr = 4, 3
    video = _views()[:, None].repeat(1, Fr, 1, 1, 1)  # a still video: true tracks stay put
    queries = torch.tensor([[24.0, 24.0], [40.0, 32.0]])
    tracks = queries.expand(V, Fr, 2, 2).clone()
    errors = probe_blocks(comp, video, "a cat", CAMS, tracks, t=50)
    assert list(errors) == all_feature_blocks(comp.unet) and "up_blocks.1" in errors
    assert all(math.isfinite(e) and e >= 0 for e in errors.values())


def test_bfloat16_path_runs_on_cpu():
    half = build_components(get_config("tiny", num_frames=2), seed=0).to(dtype=torch.bfloat16)
    out = MVVDMPipeline(half, SamplerConfig(steps=1, feature_step=0))(_views(), "a cat", CAMS, seed=0)
    assert out.videos.dtype == torch.float32 and torch.isfinite(out.videos).all()
    assert half.unet.dtype == torch.bfloat16 and torch.isfinite(out.features).all()
