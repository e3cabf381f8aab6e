"""CoTracker3 offline: our implementation loads the official state dict strictly and computes the
reference function (fixture: ../shared/fixtures/cotracker3, produced with the public code)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from track4dgen.tracking.cotracker3 import CoTracker3Offline, CoTracker3Predictor, CoTracker3Tracker


pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.single_thread

FIXTURE = "fixtures/cotracker3"


def deterministic_weights(manifest: dict) -> dict[str, torch.Tensor]:
    """The README's name-and-shape-seeded weights (no checkpoint needs to ship)."""
    out = {}
    for t in manifest["tensors"]:
        name, shape = t["name"], t["shape"]
        n = int(np.prod(shape))
        phase = (sum((k + 1) * ord(c) for k, c in enumerate(name)) % 997) / 97
        s = np.sin(0.7 * np.arange(n, dtype=np.float64) + phase)
        if len(shape) >= 2:
            g = {"updateformer.vis_conf_head.weight": 0.01, "updateformer.flow_head.weight": 0.05}.get(name, 10.0)
            v = g * s / np.sqrt(n / shape[0])
        elif name.endswith("weight"):
            v = 1 + 0.1 * s
        else:
            v = 0.05 * s
        out[name] = torch.from_numpy(v.reshape(shape).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def manifest(request) -> dict:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1].parent / "shared" / FIXTURE
    if not root.exists():
        pytest.skip(f"fixture {root} not present")
    request.module.FIXTURE_DIR = root
    return json.loads((root / "state_dict_manifest.json").read_text())


@pytest.fixture(scope="module")
def parity(manifest, request):
    return np.load(request.module.FIXTURE_DIR / "parity.npz")


@pytest.fixture(scope="module")
def model(manifest) -> CoTracker3Offline:
    """Deterministic-weight model whose feature encoder is memoised: the model- and predictor-level
    checks feed it the same resized video, and the encoder is >90% of CPU time."""
    m = CoTracker3Offline()
    m.load_state_dict(deterministic_weights(manifest), strict=True)
    m.eval()
    fnet = m.fnet
    memo: dict[str, torch.Tensor] = {}
    real_forward = fnet.forward

    def cached(x: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(x.detach().contiguous().numpy().tobytes()).hexdigest()
        if key not in memo:
            memo[key] = real_forward(x)
        return memo[key]

    fnet.forward = cached  # type: ignore[method-assign]
    return m


def test_state_dict_names_shapes_and_order_match_official(manifest):
    ours = CoTracker3Offline().state_dict()
    assert [k for k in ours] == [t["name"] for t in manifest["tensors"]]
    for t in manifest["tensors"]:
        assert list(ours[t["name"]].shape) == t["shape"], t["name"]
    assert sum(v.numel() for v in ours.values()) == manifest["num_values"]
    # strict loading rejects a missing or an extra key
    sd = deterministic_weights(manifest)
    sd.pop("corr_mlp.fc2.bias")
    with pytest.raises(RuntimeError):
        CoTracker3Offline().load_state_dict(sd, strict=True)


def _model_video(parity) -> torch.Tensor:
    video = torch.from_numpy(parity["video_uint8_TCHW"]).float()
    return F.interpolate(video, (384, 512), mode="bilinear", align_corners=True)[None]


def test_model_level_parity(model, parity):
    video = _model_video(parity)
    with torch.no_grad():
        fmap = model.encode(video)  # memoised; reused by the forward below
        coords, vis, conf = model(video, torch.from_numpy(parity["model_queries_txy_scaled"])[None], iters=4)
    assert tuple(fmap.shape) == tuple(parity["model_fnet_out_shape"])
    np.testing.assert_allclose(fmap[0, :8, ::4, ::4].numpy(), parity["model_fnet_out_frame0_ch0to7_every4px"],
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(coords[0].numpy(), parity["model_iters4_coords"], atol=1e-2)
    np.testing.assert_allclose(vis[0].numpy(), parity["model_iters4_vis"], atol=1e-4)
    np.testing.assert_allclose(conf[0].numpy(), parity["model_iters4_conf"], atol=1e-4)


def test_predictor_level_parity_queries_and_masked_grid(model, parity):
    video = torch.from_numpy(parity["video_uint8_TCHW"]).float()[None]
    pred = CoTracker3Predictor(model)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[1].clone()), with_kwargs=True)
    try:
        tracks, vis = pred(video, queries=torch.from_numpy(parity["queries_txy_pixels"])[None])
    finally:
        hook.remove()
    q_all = seen[0][0]
    assert len(q_all) == 8 + 36 and (q_all[8:, 0] == 0).all()  # the 6x6 support grid sits on frame 0
    np.testing.assert_allclose(tracks[0].numpy(), parity["predictor_queries_tracks"], atol=1e-2)
    assert np.array_equal(vis[0].numpy(), parity["predictor_queries_visibility"])

    mask = torch.from_numpy(parity["segm_mask_HW"]).float()[None, None]
    tracks, vis = pred(video, grid_size=5, segm_mask=mask)
    np.testing.assert_allclose(tracks[0].numpy(), parity["predictor_grid5_mask_tracks"], atol=1e-2)
    assert np.array_equal(vis[0].numpy(), parity["predictor_grid5_mask_visibility"])


def test_tracker_adapter_uses_corner_pixel_convention(model, parity):
    """The Tracker speaks the project's corner-origin pixels: CoTracker's centre-origin output is
    shifted by +0.5 px and each query sits at its own position on frame 0 (2 frames keep it cheap)."""
    video = parity["video_uint8_TCHW"][:2].transpose(0, 2, 3, 1)[None].astype(np.float32) / 255.0  # [1,2,H,W,3]
    q = parity["queries_txy_pixels"]
    first = q[q[:, 0] == 0][:3, 1:] + 0.5  # frame-0 queries in corner convention
    tracker = CoTracker3Tracker(model=model, device="cpu")
    tracker.predictor.iters = 1
    res = tracker.track(video, first[None])
    np.testing.assert_allclose(res.tracks[0, 0], first, atol=1e-4)
    assert res.tracks.shape == (1, 2, len(first), 2) and res.visibility[0, 0].all()
    # frame 1 is the model's own estimate, returned in the same convention as the raw predictor + 0.5
    raw, _ = tracker.predictor(torch.from_numpy(video[0]).permute(0, 3, 1, 2)[None] * 255.0,
                               queries=torch.from_numpy(np.concatenate([np.zeros((3, 1)), first - 0.5], 1)).float()[None])
    np.testing.assert_allclose(res.tracks[0, 1], raw[0, 1].numpy() + 0.5, atol=1e-4)
