"""Video metrics (VBench definitions) with the real architectures and random weights.

A random network cannot know what "the same frame" looks like, so invariances that need trained
weights (zero flow for identical frames) are checked with an exact classical estimator for
translations (phase correlation) plugged into the same metric code; the random RAFT/AMT-S/DINO
check that the pipeline runs their real architectures deterministically.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from track4dgen.eval import backbones as B
from track4dgen.eval import video as V


def textured(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((h // 8, w // 8, 3))
    img = np.kron(small, np.ones((8, 8, 1)))  # blocky texture with strong edges
    return np.clip(img * 0.8 + 0.1, 0, 1)


def translating_video(frames: int, step: int, seed: int = 0) -> np.ndarray:
    base = textured(seed=seed)
    return np.stack([np.roll(base, i * step, axis=1) for i in range(frames)])


def phase_correlation_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact global translation a -> b (integer pixels, circular), as a constant flow field."""
    ga, gb = a[0].mean(0).double(), b[0].mean(0).double()
    Fa, Fb = torch.fft.fft2(ga), torch.fft.fft2(gb)
    r = Fb * Fa.conj()
    corr = torch.fft.ifft2(r / r.abs().clamp_min(1e-12)).real
    idx = int(torch.argmax(corr))
    h, w = corr.shape
    dy, dx = idx // w, idx % w
    dy, dx = (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx)
    flow = torch.zeros(1, 2, h, w)
    flow[0, 0], flow[0, 1] = dx, dy
    return flow


def test_temporal_flicker_values():
    still = np.repeat(textured()[None], 5, 0)
    assert V.temporal_flicker(still) == 1.0
    alternating = np.stack([np.zeros((8, 8, 3)), np.ones((8, 8, 3))] * 2)
    assert V.temporal_flicker(alternating) == 0.0
    assert 0.0 < V.temporal_flicker(translating_video(4, 3)) < 1.0
    with pytest.raises(ValueError, match="RGB"):
        V.temporal_flicker(np.zeros((4, 8, 8, 4)))


def test_dynamic_degree_threshold_and_invariances():
    still = np.repeat(textured()[None], 8, 0)
    r = V.dynamic_degree(still, phase_correlation_flow)
    assert r.moving is False and r.dynamic_px == 0.0
    assert r.threshold_px == pytest.approx(6.0 * 64 / 256)  # VBench: 6 * short side / 256 at 8 fps
    assert r.count_needed == 2  # round(4 * 8 / 16)
    moving = V.dynamic_degree(translating_video(8, 4), phase_correlation_flow)
    assert moving.moving is True and moving.dynamic_px == pytest.approx(4.0)
    assert moving.dynamic_rel == pytest.approx(4.0 / 1.5)
    slow = V.dynamic_degree(translating_video(8, 1), phase_correlation_flow)  # 1 px < 1.5 px
    assert slow.moving is False and slow.dynamic_px == pytest.approx(1.0)
    # VBench's frame-interval rule: every max(1, round(fps / 8))-th frame, same pixel threshold
    assert V.dynamic_degree(translating_video(8, 4), phase_correlation_flow, fps=2).moving is True  # interval 1
    fast = V.dynamic_degree(translating_video(8, 1), phase_correlation_flow, fps=16)  # keeps 4 frames, 2 px apart
    assert (fast.interval, fast.count_needed, fast.threshold_px) == (2, 1, pytest.approx(1.5))
    assert fast.moving is True and fast.pair_scores_px == pytest.approx([2.0, 2.0, 2.0])
    assert [V.vbench_frame_interval(f) for f in (4, 8, 12, 20, 24, 30, 60)] == [1, 1, 2, 2, 3, 4, 8]  # Python's round
    with pytest.raises(ValueError, match=">= 2 frames"):
        V.dynamic_degree(translating_video(3, 4), phase_correlation_flow, fps=24)


def test_dynamic_degree_with_random_raft_is_deterministic():
    raft = B.RAFT().eval()
    vid = translating_video(2, 4)[:, :60]  # 60 rows: padded to 64 (multiple of 8) as in VBench
    flow_fn = V.raft_flow_fn(raft, iters=2)
    a = V.dynamic_degree(vid, flow_fn)
    b = V.dynamic_degree(vid, flow_fn)
    assert len(a.pair_scores_px) == 1 and a.pair_scores_px == b.pair_scores_px
    assert np.isfinite(a.pair_scores_px[0])
    assert a.threshold_px == pytest.approx(6.0 * 60 / 256)  # short side of the unpadded frame


def test_motion_smoothness_random_amt():
    amt = B.AMTS().eval()
    still = np.repeat(textured()[None], 5, 0)
    s_still = V.motion_smoothness(still, amt)
    assert s_still == V.motion_smoothness(still, amt)  # deterministic
    jerky = still.copy()
    jerky[1] = np.roll(jerky[1], 16, axis=1)  # an odd frame jumps away from its neighbours
    jerky[3] = np.roll(jerky[3], -16, axis=0)
    s_jerky = V.motion_smoothness(jerky, amt)
    assert 0.0 < s_jerky < s_still <= 1.0


def test_i2v_subject_random_dino():
    dino = B.DinoViT(B.ViTConfig(dim=64, depth=2, heads=2)).eval()
    frame = textured()
    still = np.repeat(frame[None], 4, 0)
    assert V.i2v_subject(still, frame, dino) == pytest.approx(1.0, abs=1e-5)
    other = textured(seed=5)
    changed = V.i2v_subject(still, other, dino)
    jumpy = still.copy()
    jumpy[2] = other
    assert changed < 1.0 - 1e-4 and V.i2v_subject(jumpy, frame, dino) < 1.0 - 1e-4
    assert V.i2v_subject(jumpy, frame, dino) == V.i2v_subject(jumpy, frame, dino)


def test_subject_consistency_random_dino():
    dino = B.DinoViT(B.ViTConfig(dim=64, depth=2, heads=2)).eval()
    still = np.repeat(textured()[None], 4, 0)
    assert V.subject_consistency(still, dino) == pytest.approx(1.0, abs=1e-5)
    jumpy = still.copy()
    jumpy[2] = textured(seed=5)
    s = V.subject_consistency(jumpy, dino)
    assert 0.0 <= s < 1.0 - 1e-4 and s == V.subject_consistency(jumpy, dino)
    # the definition written out: frames resized to 224 (shorter side) on 8-bit values, no crop
    x = torch.from_numpy(V.to_uint8(jumpy).astype(np.float32)).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False).round() / 255
    with torch.no_grad():
        f = torch.nn.functional.normalize(dino(B.normalize(x, B.IMAGENET_MEAN, B.IMAGENET_STD)), dim=-1)
    sims = [(max(0.0, float(f[i] @ f[i - 1])) + max(0.0, float(f[i] @ f[0]))) / 2 for i in range(1, 4)]
    assert s == pytest.approx(float(np.mean(sims)), abs=1e-5)


def tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=16, eos_token_id=39, bos_token_id=38, pad_token_id=0),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()

    def char_tokenizer(texts: list[str]) -> torch.Tensor:  # stands in for the downloaded BPE vocab
        ids = torch.zeros(len(texts), 16, dtype=torch.long)
        for i, t in enumerate(texts):
            body = [1 + (ord(c) % 36) for c in t.lower()][:14]
            ids[i, : len(body) + 2] = torch.tensor([38] + body + [39])
        return ids

    return B.ClipEncoder(model, char_tokenizer)


def test_aesthetic_matches_definition():
    clip = tiny_clip()
    head = B.AestheticHead(16).eval()
    vid = translating_video(3, 2)
    score = V.aesthetic_quality(vid, clip, head)
    x = torch.from_numpy(V.to_uint8(vid).astype(np.float32) / 255).permute(0, 3, 1, 2)
    with torch.no_grad():
        pooled = clip.model.vision_model(pixel_values=clip.preprocess(x)).pooler_output
        emb = torch.nn.functional.normalize(clip.model.visual_projection(pooled), dim=-1)
        manual = float(head.linear(emb).mean() / 10)
    assert score == pytest.approx(manual, abs=1e-6)


def test_evaluate_videos_averages_views():
    vids = np.stack([np.repeat(textured()[None], 4, 0), translating_video(4, 4)])
    out = V.evaluate_videos(vids, V.VideoBackbones(flow=phase_correlation_flow))
    assert out["per_view"]["dynamic_degree"] == [0.0, 1.0]
    assert out["metrics"]["dynamic_degree"] == 0.5
    assert out["metrics"]["temporal_flicker"] == pytest.approx(np.mean([1.0, V.temporal_flicker(vids[1])]))
    assert "i2v_subject" not in out["metrics"] and "subject_consistency" not in out["metrics"]  # no DINO: skipped


# ---------------------------------------------------------------------------------------------
# architectures and loaders


def test_dino_matches_transformers_vit(tmp_path):
    """Our DINO ViT, loaded from transformers ViT checkpoints in both the in-memory (>= 5) and the
    hub-file layout (``encoder.layer.N.attention.attention.query``, as ``facebook/dino-vitb16``
    stores it), gives transformers' own CLS feature; transformers reads the hub layout with its
    own key mapping, so the two conversions are checked against each other."""
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                    image_size=64, patch_size=16, layer_norm_eps=1e-6)
    hf = ViTModel(cfg, add_pooling_layer=False).eval()
    sd = {k: v.contiguous() for k, v in hf.state_dict().items()}
    hub_names = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
                 "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
                 "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    hub_sd = {}
    for k, v in sd.items():
        if k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            for new, old in hub_names.items():
                rest = old + rest[len(new):] if rest.startswith(new) else rest
            k = f"encoder.layer.{i}.{rest}"
        hub_sd[k] = v
    save_file(sd, str(tmp_path / "new.safetensors"))
    (tmp_path / "hub").mkdir()
    cfg.save_pretrained(tmp_path / "hub")
    save_file(hub_sd, str(tmp_path / "hub" / "model.safetensors"))
    reloaded = ViTModel.from_pretrained(tmp_path / "hub", add_pooling_layer=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state[:, 0]
        assert torch.allclose(reloaded(pixel_values=x).last_hidden_state[:, 0], ref, atol=1e-6)
        for path in (tmp_path / "new.safetensors", tmp_path / "hub" / "model.safetensors"):
            ours = B.DinoViT(B.ViTConfig(image_size=64, patch_size=16, dim=48, depth=2, heads=3, mlp_ratio=2.0))
            ours.load_state_dict(B.convert_hf_vit(B.load_state_dict_file(path)), strict=True)
            assert torch.allclose(ours.eval()(x), ref, atol=1e-5)


def test_flow_networks_match_published_sizes_and_names():
    raft, amt = B.RAFT(), B.AMTS()
    n_raft = sum(p.numel() for p in raft.parameters())
    n_amt = sum(p.numel() for p in amt.parameters())
    assert abs(n_raft - 5.26e6) / 5.26e6 < 0.005  # RAFT paper: 5.3M parameters
    assert abs(n_amt - 2.99e6) / 2.99e6 < 0.005  # AMT paper: AMT-S 2.99M parameters
    sd = raft.state_dict()
    assert sd["update_block.gru.convz1.weight"].shape == (128, 384, 1, 5)
    assert sd["update_block.mask.2.weight"].shape == (576, 256, 1, 1)
    assert sd["cnet.layer2.0.downsample.1.running_mean"].shape == (96,)
    sd = amt.state_dict()
    assert sd["update4.convc1.weight"].shape == (64, 392, 1, 1)
    assert sd["decoder1.convblock.2.weight"].shape == (60, 24, 4, 4)
    assert sd["comb_block.0.weight"].shape == (18, 9, 3, 3)


def test_loaders_round_trip_and_errors(tmp_path):
    raft = B.RAFT()
    torch.save({"state_dict": {"module." + k: v for k, v in raft.state_dict().items()}}, tmp_path / "raft-things.pth")
    loaded = B.load_raft(tmp_path)  # a folder holding the official file name
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.equal(loaded(x, x, iters=1), raft.eval()(x, x, iters=1))
    head = B.AestheticHead()
    torch.save(head.linear.state_dict(), tmp_path / "sa_0_4_vit_l_14_linear.pth")
    assert torch.equal(B.load_aesthetic(tmp_path / "sa_0_4_vit_l_14_linear.pth").linear.weight, head.linear.weight)

    with pytest.raises(B.WeightsNotFound, match="amt-s.pth"):
        B.load_amt_s(tmp_path)  # folder without the file: names the expected file
    with pytest.raises(B.WeightsNotFound, match="raft-things.pth"):
        B.load_raft(tmp_path / "nope" / "raft-things.pth")
    with pytest.raises(B.WeightsNotFound, match="facebook/dino-vitb16"):
        B.load_dino("facebook/dino-vitb16")  # the hub is offline in tests
    with pytest.raises(B.WeightsNotFound, match="clip-vit-large-patch14"):
        B.load_clip(str(tmp_path / "clip-vit-large-patch14"))
