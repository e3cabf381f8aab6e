"""Stage One MV-VDM: shapes, which axes mix (views / frames), trainable split, camera input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from track4dgen.cameras import rig_cameras
from track4dgen.stage1.attention import MultiViewSelfAttnProcessor, MVContext
from track4dgen.stage1.camera_embed import animate3d_orbit_vectors, camera_matrix_16, camera_tensor
from track4dgen.stage1.config import get_config
from track4dgen.stage1.features import FeatureHook
from track4dgen.stage1.motion import SpatioTemporalProcessor
from track4dgen.stage1.unet import MVVDM


@pytest.fixture(autouse=True)
def _one_thread():
    # 2 cores shared by many processes: one thread avoids oversubscription stalls
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny() -> MVVDM:
    torch.manual_seed(0)
    model = MVVDM(get_config("tiny")).eval()
    # give the zero-initialised adapters non-zero weights so their paths are exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "to_out_i2v" in name:
                p.normal_(0, 0.05)
    return model


def _inputs(B=1, V=4, Fr=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, Fr, 4, 8, 8, generator=g)
    text = torch.randn(B, 16, 32, generator=g)
    cam = camera_tensor([c.w2c for c in rig_cameras(64)])[:V]
    img = torch.randn(B, V, 16, generator=g)
    return x, text, cam, img


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_forward_backward_shapes(tiny):
    x, text, cam, img = _inputs(B=2)
    x.requires_grad_(True)
    out = tiny(x, torch.tensor([10, 900]), text, cam, image_embeds=img)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    grads = {n: p.grad for n, p in tiny.named_parameters()}
    assert grads["camera_embedding.linear_1.weight"].abs().sum() > 0
    some_i2v = next(n for n in grads if "to_q_i2v" in n)
    assert grads[some_i2v].abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_views_mix_through_3d_attention(tiny):
    x, text, cam, img = _inputs()
    with torch.no_grad():
        base = tiny(x, 500, text, cam, image_embeds=img)
        x2 = x.clone()
        x2[:, 0] += torch.randn_like(x2[:, 0])
        out = tiny(x2, 500, text, cam, image_embeds=img)
    for v in (1, 2, 3):
        assert _diff(out[:, v], base[:, v]) > 1e-4, f"view {v} ignores view 0"


def test_frames_mix_through_temporal_attention(tiny):
    x, text, cam, img = _inputs()
    with torch.no_grad():
        base = tiny(x, 500, text, cam, image_embeds=img, use_i2v=False)
        x2 = x.clone()
        x2[:, :, 2] += torch.randn_like(x2[:, :, 2])
        out = tiny(x2, 500, text, cam, image_embeds=img, use_i2v=False)
    for f in (0, 1, 3):
        assert _diff(out[:, :, f], base[:, :, f]) > 1e-4, f"frame {f} ignores frame 2"


def test_multiview_attention_is_per_frame_and_i2v_reads_frame0():
    """The 3D self-attention mixes views within a frame and never leaks across frames; the
    MV2V adapter makes every frame read frame 0 (and only frame 0)."""
    torch.manual_seed(1)
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=16, heads=2, dim_head=8)
    ctx = MVContext(num_views=3, num_frames=4)
    proc = MultiViewSelfAttnProcessor(16, ctx, use_i2v=True)
    with torch.no_grad():
        proc.to_out_i2v.weight.normal_(0, 0.5)
    attn.set_processor(proc)
    x = torch.randn(1 * 3 * 4, 5, 16)
    view = lambda t: t.view(1, 3, 4, 5, 16)  # noqa: E731  (b, v, f, tokens, c)
    with torch.no_grad():
        for use_i2v in (False, True):
            ctx.use_i2v = use_i2v
            base = view(attn(x))
            x2 = view(x.clone())
            x2[0, 0, 2] += 1.0  # view 0, frame 2
            out = view(attn(x2.reshape_as(x)))
            assert _diff(out[0, 1, 2], base[0, 1, 2]) > 1e-4  # other view, same frame: mixed
            for f in (0, 1, 3):
                assert _diff(out[0, :, f], base[0, :, f]) < 1e-6  # other frames: untouched
        x3 = view(x.clone())
        x3[0, 1, 0] += 1.0  # view 1, frame 0 (the conditional frame)
        out = view(attn(x3.reshape_as(x)))
        for f in (1, 2, 3):
            assert _diff(out[0, :, f], base[0, :, f]) > 1e-4  # every frame reads frame 0


def test_motion_spatial_branch_mixes_views_not_frames_alone():
    """Motion processor: temporal branch mixes frames of one pixel; spatial branch mixes views."""
    torch.manual_seed(2)
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=16, heads=2, dim_head=8)
    ctx = MVContext(num_views=2, num_frames=3, hw=(2, 2))
    attn.set_processor(SpatioTemporalProcessor(16, ctx, max_seq_length=8, use_spatial=True))
    x = torch.randn(2 * 4, 3, 16)  # (b v h w), f, c
    with torch.no_grad():
        base = attn(x).view(2, 4, 3, 16)
        x2 = x.clone().view(2, 4, 3, 16)
        x2[0, 0, 1] += 1.0  # view 0, pixel 0, frame 1
        out = attn(x2.view(8, 3, 16)).view(2, 4, 3, 16)
    assert _diff(out[1, 3, 1], base[1, 3, 1]) > 1e-4  # other view, other pixel, same frame (spatial)
    assert _diff(out[0, 0, 2], base[0, 0, 2]) > 1e-4  # same pixel, other frame (temporal)
    assert _diff(out[1, 3, 2], base[1, 3, 2]) < 1e-6  # other view AND other frame: one layer can't reach


def test_fresh_mv2v_adapter_is_identity(tiny):
    """to_out_i2v starts at zero (Animate3D init): a fresh model equals the base model."""
    torch.manual_seed(3)
    fresh = MVVDM(get_config("tiny")).eval()
    x, text, cam, img = _inputs()
    with torch.no_grad():
        a = fresh(x, 300, text, cam, image_embeds=img, use_i2v=True)
        b = fresh(x, 300, text, cam, image_embeds=img, use_i2v=False)
    assert _diff(a, b) < 1e-6
    q = dict(fresh.named_parameters())
    name = next(n for n in q if n.endswith("to_q_i2v.weight"))
    assert torch.equal(q[name], q[name.replace("processor.to_q_i2v", "to_q")])


def test_trainable_split_is_mv2v_and_motion_modules_only():
    torch.manual_seed(4)
    model = MVVDM(get_config("tiny")).freeze_for_training()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.trainable_parameter_names())
    assert len(model.get_trainable_parameters()) == len(trainable)
    for n in trainable:
        assert ".motion_modules." in f".{n}" or "_i2v." in n, n
    assert any("to_q_i2v" in n for n in trainable) and any("to_out_sp" in n for n in trainable)
    assert any("alpha_blender.mix_factor" in n for n in trainable)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.endswith("attn1.to_q.weight") and "motion" not in n for n in frozen)  # 3D attention frozen
    assert "camera_embedding.linear_1.weight" in frozen and "conv_in.weight" in frozen
    x, text, cam, img = _inputs()
    model(x, 500, text, cam, image_embeds=img).square().mean().backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got and got <= trainable


def test_feature_hook_shape_and_gradient(tiny):
    x, text, cam, img = _inputs()
    with FeatureHook(tiny) as hook:
        tiny(x, 500, text, cam, image_embeds=img)
    feats = hook.features
    assert feats.shape == (1, 4, 4, hook.channels(), 4, 4)  # up_blocks.1 of tiny: 32 ch at latent/2
    assert feats.requires_grad  # usable for the tracking losses
    with pytest.raises(ValueError, match="does not exist"):
        FeatureHook(tiny, block="up_blocks.9")


SHARED_A3D = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "animate3d"


def test_camera_vectors_follow_the_reference_convention():
    """Our rig's view i (front at -Y) carries the reference's view i vector (front at +X): the
    formula here, and the reference's own vectors when the shared fixtures are present."""
    cams = rig_cameras(256)
    vecs = camera_tensor([c.w2c for c in cams]).numpy()
    assert vecs.shape == (4, 16)
    np.testing.assert_allclose(vecs, animate3d_orbit_vectors(15.0, 0.0).numpy(), atol=1e-6)
    # MVDream's original convention (no world turn) gives view i the reference's view (i+3) mod 4
    raw = np.stack([camera_matrix_16(c.w2c, world=np.eye(4)) for c in cams])
    np.testing.assert_allclose(raw, animate3d_orbit_vectors(15.0, 270.0).numpy(), atol=1e-6)  # view i = ref (i+3) mod 4
    if not SHARED_A3D.is_dir():
        pytest.skip(f"reference camera fixture not found at {SHARED_A3D} (../shared absent)")
    official = np.array(json.loads((SHARED_A3D / "official_get_camera_4.json").read_text()))
    np.testing.assert_allclose(vecs, official, atol=1e-6)
    np.testing.assert_allclose(raw, official[[3, 0, 1, 2]], atol=1e-6)
    start90 = np.array(json.loads((SHARED_A3D / "official_get_camera_4_start-90.json").read_text()))
    rig90 = camera_tensor([c.w2c for c in rig_cameras(256, azimuths_deg=(-90.0, 0.0, 90.0, 180.0))]).numpy()
    np.testing.assert_allclose(rig90, start90, atol=1e-6)
    np.testing.assert_allclose(animate3d_orbit_vectors(15.0, 0.0).numpy(), official, atol=1e-6)
    np.testing.assert_allclose(animate3d_orbit_vectors(15.0, -90.0).numpy(), start90, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(5)
    model = MVVDM(get_config("tiny", num_frames=2)).freeze_for_training()
    x, text, cam, img = _inputs(Fr=2)

    def grads():
        model.zero_grad(set_to_none=True)
        model(x, 400, text, cam, image_embeds=img).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    calls = []
    resnet = model.up_blocks[-1].resnets[-1]  # after trainable layers, so backward needs its activations
    forward = resnet.forward

    def counting_forward(*args, **kwargs):  # (forward hooks do not fire during recomputation)
        calls.append(1)
        return forward(*args, **kwargs)

    resnet.forward = counting_forward
    plain = grads()
    n_plain = len(calls)
    model.enable_gradient_checkpointing()
    ckpt = grads()
    assert len(calls) - n_plain == 2 * n_plain  # the resnet was re-run in backward
    assert plain.keys() == ckpt.keys() and plain
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], atol=1e-5, rtol=1e-4), n


def test_spatial_sine_encoding_layout():
    """DETR-style normalised 2D encoding (Animate3D's spatial branch): first half encodes the
    row, second half the column; channel pairs are sin/cos of the same frequency."""
    from track4dgen.stage1.motion import sine_position_encoding_2d

    h, w, c = 4, 6, 16
    pe = sine_position_encoding_2d(h, w, c)
    assert pe.shape == (c, h, w)
    rows = torch.arange(1, h + 1).float() / h * 2 * math.pi
    cols = torch.arange(1, w + 1).float() / w * 2 * math.pi
    assert torch.allclose(pe[0], rows[:, None].sin().expand(h, w), atol=1e-5)
    assert torch.allclose(pe[1], rows[:, None].cos().expand(h, w), atol=1e-5)
    assert torch.allclose(pe[c // 2], cols[None, :].sin().expand(h, w), atol=1e-5)
    freq = 10000 ** (2 / (c // 2))
    assert torch.allclose(pe[c // 2 + 2], (cols / freq)[None, :].sin().expand(h, w), atol=1e-5)
