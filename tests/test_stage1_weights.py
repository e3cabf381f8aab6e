"""Stage One weights: full-size model on meta, diffusers state dicts load by name, hub assembly
(hub boundary mocked), strict reports, save/load round trip, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from track4dgen.stage1 import weights as W
from track4dgen.stage1.components import build_components
from track4dgen.stage1.config import get_config
from track4dgen.stage1.unet import MVVDM, build_mvvdm, count_parameters

SD15_UNET = dict(  # runwayml/stable-diffusion-v1-5 unet/config.json (public)
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)
V152_ADAPTER = dict(  # guoyww/animatediff-motion-adapter-v1-5-2 config.json (public)
    block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2, motion_max_seq_length=32,
    motion_mid_block_layers_per_block=1, motion_norm_num_groups=32, motion_num_attention_heads=8, use_motion_mid_block=True,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def full_meta() -> MVVDM:
    return build_mvvdm(get_config("animate3d"), "meta")


def _shapes(sd) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def test_full_config_builds_on_meta_with_released_key_layout(full_meta):
    n = count_parameters(full_meta)
    print(f"animate3d MV-VDM parameters: {n:,}")
    assert 1.3e9 < n < 1.7e9
    sd = full_meta.state_dict()
    keys = list(sd)
    motion = [k for k in keys if ".motion_modules." in k and ".processor." not in k]
    spatial = [k for k in keys if ".motion_modules." in k and ".processor." in k]
    i2v = [k for k in keys if "_i2v." in k]
    # DESIGN.md: released checkpoint = 546 motion-module + 294 spatial-branch + 48 i2v keys, and a
    # motion-modules-only save leaves exactly 726 keys missing
    assert (len(motion), len(spatial), len(i2v)) == (546, 294, 48)
    assert len(keys) - (546 + 294 + 48) == 726
    assert all(p.is_meta for p in full_meta.parameters())


def test_full_config_loads_a_state_dict_saved_from_itself(full_meta):
    saved = {k: torch.empty(v.shape, device="meta") for k, v in full_meta.state_dict().items()}
    other = build_mvvdm(get_config("animate3d"), "meta")
    rep = W.load_checked(other, saved, source="self")
    assert rep.ok and rep.loaded == len(saved)
    broken = dict(saved)
    broken.pop("conv_in.weight")
    broken["up_blocks.1.motion_modules.0.transformer_blocks.0.attn1.processor.bogus"] = torch.empty(1, device="meta")
    with pytest.raises(W.WeightsError) as err:
        W.load_checked(other, broken, source="broken.safetensors")
    msg = str(err.value)
    assert "broken.safetensors" in msg and "1 missing" in msg and "1 unexpected" in msg and "conv_in.weight" in msg


def test_diffusers_sd15_unet_and_motion_adapter_load_by_name(full_meta):
    from diffusers import MotionAdapter, UNet2DConditionModel

    with torch.device("meta"):
        sd15 = UNet2DConditionModel(**SD15_UNET)
        adapter = MotionAdapter(**V152_ADAPTER)
    ours = _shapes(full_meta.state_dict())
    base = _shapes(sd15.state_dict())
    assert len(base) == 686
    assert all(ours.get(k) == s for k, s in base.items()), [k for k, s in base.items() if ours.get(k) != s][:5]
    base_part = [k for k in ours if W._part_of(k) == "base U-Net"]
    assert sorted(base_part) == sorted(base)  # no base key of ours is left without an SD1.5 weight
    motion = _shapes(W.convert_motion_adapter(adapter.state_dict()))
    assert all(ours.get(k) == s for k, s in motion.items()), [k for k, s in motion.items() if ours.get(k) != s][:5]
    ours_motion = [k for k in ours if ".motion_modules." in k and (".processor." not in k or k.endswith("time_pos_embed.pe"))]
    assert sorted(ours_motion) == sorted(motion)  # every motion-module weight (and its pos. table) is covered


def test_ip_adapter_numbering_maps_to_the_right_layers(full_meta):
    """IP-Adapter numbers cross-attentions 1,3,..,31 in diffusers order (down, up, mid); the
    widths of SD1.5 in that order must land on layers of the same width."""
    widths = [320, 320, 640, 640, 1280, 1280] + [1280] * 3 + [640] * 3 + [320] * 3 + [1280]
    sd = {"image_proj.proj.weight": torch.empty(4 * 768, 1024, device="meta"), "image_proj.proj.bias": torch.empty(4 * 768, device="meta"),
          "image_proj.norm.weight": torch.empty(768, device="meta"), "image_proj.norm.bias": torch.empty(768, device="meta")}
    for i, w in enumerate(widths):
        for kv in ("k", "v"):
            sd[f"ip_adapter.{2 * i + 1}.to_{kv}_ip.weight"] = torch.empty(w, 768, device="meta")
    conv = _shapes(W.convert_ip_adapter(sd, full_meta))
    ours = _shapes(full_meta.state_dict())
    assert all(ours.get(k) == s for k, s in conv.items())
    assert sorted(conv) == sorted(k for k in ours if W._part_of(k) == "IP-Adapter")


# ----------------------------------------------------------------------------- mocked hub


def _fake_hub(root: Path) -> dict[str, Path]:
    """Repos shaped like the real ones, holding tiny weights (the only mocked boundary)."""
    from diffusers import MotionAdapter, UNet2DConditionModel
    from safetensors.torch import save_file

    cfg = get_config("tiny")
    comp = build_components(cfg, seed=5)
    torch.manual_seed(6)
    unet2d = UNet2DConditionModel(
        sample_size=8, block_out_channels=cfg.block_out_channels, layers_per_block=1, norm_num_groups=4,
        cross_attention_dim=32, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    base_sd = dict(unet2d.state_dict())
    base_sd.update({k: v for k, v in comp.unet.state_dict().items() if k.startswith("camera_embedding.")})
    # the base is stored in half precision (like fp16 hub variants): loading must not leave a
    # mixed-dtype model
    base_sd = {k: v.half() for k, v in base_sd.items()}
    adapter = MotionAdapter(block_out_channels=cfg.block_out_channels, motion_layers_per_block=1, motion_norm_num_groups=4,
                            motion_num_attention_heads=2, motion_max_seq_length=32, use_motion_mid_block=True)
    repos = {p: root / p for p in ("base", "motion", "ip_adapter", "animate3d")}
    (repos["base"] / "unet").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in base_sd.items()}, str(repos["base"] / "unet" / "diffusion_pytorch_model.safetensors"))
    comp.vae.save_pretrained(str(repos["base"] / "vae"))
    comp.text_encoder.save_pretrained(str(repos["base"] / "text_encoder"))
    repos["motion"].mkdir()
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(repos["motion"] / "diffusion_pytorch_model.safetensors"))
    ip = {"image_proj.proj.weight": torch.randn(4 * 32, 16), "image_proj.proj.bias": torch.randn(4 * 32),
          "image_proj.norm.weight": torch.randn(32), "image_proj.norm.bias": torch.randn(32)}
    for i, name in enumerate(W.cross_attention_layers(comp.unet)):
        width = comp.unet.get_submodule(name).to_q.weight.shape[0]
        ip[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = torch.randn(width, 32)
        ip[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = torch.randn(width, 32)
    (repos["ip_adapter"] / "models").mkdir(parents=True)
    # the original IP-Adapter release format: a nested torch pickle
    torch.save({"image_proj": {k[len("image_proj."):]: v for k, v in ip.items() if k.startswith("image_proj.")},
                "ip_adapter": {k[len("ip_adapter."):]: v for k, v in ip.items() if k.startswith("ip_adapter.")}},
               repos["ip_adapter"] / "models" / "ip-adapter_sd15.bin")
    comp.image_encoder.save_pretrained(str(repos["ip_adapter"] / "models" / "image_encoder"))
    repos["animate3d"].mkdir()
    trained = {k: v.clone() + 0.25 for k, v in comp.unet.state_dict().items()
               if ".motion_modules." in k or "_i2v." in k}
    torch.save({"state_dict": trained}, repos["animate3d"] / "animate3d_motion_modules.ckpt")
    return {"unet2d": base_sd, "adapter": adapter.state_dict(), "ip": ip, "trained": trained, "repos": repos}


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    hub = _fake_hub(tmp_path / "hub")
    by_repo = {src.repo_id: hub["repos"][src.part] for src in W.HUB_SOURCES}
    calls = []

    def fake_snapshot(repo_id, allow_patterns, local_files_only):
        calls.append((repo_id, local_files_only))
        return str(by_repo[repo_id])

    monkeypatch.setattr(W, "_snapshot_download", fake_snapshot)
    hub["calls"] = calls
    return hub


def test_hub_assembly_loads_every_part_strictly(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    comp = W.from_pretrained("animate3d", model="tiny", config=get_config("tiny"))
    assert all(offline for _, offline in fake_hub["calls"])  # offline -> cache only
    sd = comp.unet.state_dict()
    assert torch.equal(sd["conv_in.weight"], fake_hub["unet2d"]["conv_in.weight"].float())  # base U-Net
    k_attn = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(sd[k_attn], fake_hub["unet2d"][k_attn].float())
    k_i2v = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_i2v.weight"
    assert torch.equal(sd[k_i2v], fake_hub["trained"][k_i2v])  # Animate3D checkpoint
    k_mm = "up_blocks.1.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(sd[k_mm], fake_hub["trained"][k_mm])  # overrides AnimateDiff's
    k_ip = "mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight"
    assert torch.equal(sd[k_ip], fake_hub["ip"][f"ip_adapter.{2 * 6 + 1}.to_k_ip.weight"])  # mid = last
    assert not any(p.is_meta for p in comp.unet.parameters())
    assert {p.dtype for p in comp.unet.parameters()} == {torch.float32}
    x = torch.randn(1, 4, 3, 4, 8, 8)
    out = comp.unet(x, 100, torch.randn(1, 16, 32), torch.randn(4, 16), image_embeds=torch.randn(1, 4, 16))
    assert torch.isfinite(out).all()


def test_incomplete_checkpoint_is_reported_by_part(fake_hub):
    ckpt = fake_hub["repos"]["animate3d"] / "animate3d_motion_modules.ckpt"
    trained = {k: v for k, v in fake_hub["trained"].items() if "_i2v." not in k}
    torch.save(trained, ckpt)
    with pytest.raises(W.WeightsError) as err:
        W.from_pretrained("animate3d", model="tiny", config=get_config("tiny"))
    assert "MV2V adapter (i2v)" in str(err.value) and "missing" in str(err.value)


def test_missing_weights_name_file_and_command(monkeypatch, tmp_path):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline_snapshot(repo_id, allow_patterns, local_files_only):
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(W, "_snapshot_download", offline_snapshot)
    with pytest.raises(W.WeightsError) as err:
        W.from_pretrained("animate3d")
    assert "unet/diffusion_pytorch_model.safetensors" in str(err.value)
    assert "track4dgen weights download" in err.value.hint
    from track4dgen.stage1.weights_cli import main

    assert main(["verify"]) == 1
    with pytest.raises(W.WeightsError, match="no such folder"):
        W.from_pretrained(tmp_path / "nope")


def test_tiny_save_load_round_trip_and_cli(tmp_path, capsys):
    from track4dgen.stage1.weights_cli import main

    assert main(["init-tiny", "--out", str(tmp_path / "tiny"), "--seed", "3"]) == 0
    comp = W.from_pretrained(tmp_path / "tiny")
    ref = build_components(get_config("tiny"), seed=3)
    a, b = comp.unet.state_dict(), ref.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["verify", str(tmp_path / "tiny")]) == 0
    assert "OK" in capsys.readouterr().out


# ----------------------------------------------------------------------------- real-file robustness


class TrainerState:  # a non-tensor object of the kind training checkpoints carry
    def __init__(self) -> None:
        self.lr = 1e-4


def test_checkpoint_with_python_objects_and_wrappers_loads_its_tensors(tmp_path):
    import numpy as np

    sd = {"module.a.weight": torch.randn(3, 2), "module.b.bias": torch.randn(3).half()}
    path = tmp_path / "trained.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "trainer": TrainerState(), "loss": np.float64(0.5)}, path)
    with pytest.raises(Exception):  # what a plain weights-only load says about this file
        torch.load(path, weights_only=True)
    got = W.read_state_dict(path)
    assert sorted(got) == ["a.weight", "b.bias"] and torch.equal(got["a.weight"], sd["module.a.weight"])
    assert got["b.bias"].dtype == torch.float16  # stored dtype kept; load_checked casts
    torch.save({"module": {"a.weight": sd["module.a.weight"]}, "global_steps": 7}, tmp_path / "ds.pt")  # DeepSpeed
    assert list(W.read_state_dict(tmp_path / "ds.pt")) == ["a.weight"]


@pytest.mark.parametrize("name,content", [("broken.ckpt", b"<html>Bad gateway</html>"), ("cut.safetensors", b"\x10\x00\x00")])
def test_unreadable_files_name_the_file_and_the_fix(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(W.WeightsError) as err:
        W.read_state_dict(tmp_path / name)
    assert name in str(err.value) and "track4dgen weights download" in err.value.hint
    torch.save({"epoch": 1}, tmp_path / "empty.pt")
    with pytest.raises(W.WeightsError, match="no tensors"):
        W.read_state_dict(tmp_path / "empty.pt")


def test_fp16_file_loads_into_an_fp32_model(tmp_path):
    from safetensors.torch import save_file

    model = MVVDM(get_config("tiny"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(half, str(tmp_path / "unet.safetensors"))
    other = MVVDM(get_config("tiny"))
    W.load_checked(other, W.read_state_dict(tmp_path / "unet.safetensors"), source="unet.safetensors")
    assert {p.dtype for p in other.parameters()} == {torch.float32}
    k = "conv_in.weight"
    assert torch.equal(other.state_dict()[k], half[k].float())


def _mvdream_config(**changes) -> dict:
    cfg = get_config("tiny")
    d = {"_class_name": "MVUNet2DConditionModel", "_diffusers_version": "0.25.0", "act_fn": "silu",
         "attention_head_dim": 2, "block_out_channels": list(cfg.block_out_channels), "camera_embedding_dim": 16,
         "center_input_sample": False, "cross_attention_dim": 32, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
         "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 1, "norm_num_groups": 4, "norm_eps": 1e-05,
         "out_channels": 4, "sample_size": 32, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
         "use_linear_projection": False, "some_future_option": {"x": 1}}
    d.update(changes)
    return d


def test_mvdream_config_json_unused_keys_are_ignored_structure_is_checked(fake_hub):
    import json

    cfg_path = fake_hub["repos"]["base"] / "unet" / "config.json"
    cfg_path.write_text(json.dumps(_mvdream_config()))
    comp = W.from_pretrained("animate3d", model="tiny", config=get_config("tiny"))  # extra keys accepted
    assert not any(p.is_meta for p in comp.unet.parameters())
    cfg_path.write_text(json.dumps(_mvdream_config(block_out_channels=[16, 32, 64])))
    with pytest.raises(W.WeightsError) as err:
        W.from_pretrained("animate3d", model="tiny", config=get_config("tiny"))
    assert "config.json" in str(err.value) and "block_out_channels" in str(err.value)
    cfg_path.write_text("{not json")
    with pytest.raises(W.WeightsError, match="readable JSON"):
        W.from_pretrained("animate3d", model="tiny", config=get_config("tiny"))


def test_ip_adapter_safetensors_and_bin_give_the_same_weights(fake_hub):
    from safetensors.torch import save_file

    models = fake_hub["repos"]["ip_adapter"] / "models"
    from_bin = W.from_pretrained("animate3d", model="tiny", config=get_config("tiny")).unet.state_dict()
    (models / "ip-adapter_sd15.bin").unlink()
    save_file({k: v.contiguous() for k, v in fake_hub["ip"].items()}, str(models / "ip-adapter_sd15.safetensors"))
    from_st = W.from_pretrained("animate3d", model="tiny", config=get_config("tiny")).unet.state_dict()
    ip_keys = [k for k in from_bin if "_ip." in k or k.startswith("encoder_hid_proj.")]
    assert len(ip_keys) == 4 + 2 * 7 and all(torch.equal(from_bin[k], from_st[k]) for k in ip_keys)

def _json_lines(text: str) -> list[dict]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_path_json_says_whether_a_job_can_run(fake_hub, monkeypatch, tmp_path, capsys):
    """The add-on's check before rendering: one JSON object, offline, for every kind of source."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from track4dgen.stage1.weights_cli import main

    assert main(["path", "--json"]) == 0
    (status,) = _json_lines(capsys.readouterr().out)
    assert status["ok"] and status["missing"] == [] and set(status["parts"]) == {s.part for s in W.HUB_SOURCES}
    assert all(offline for _, offline in fake_hub["calls"]), "a check never downloads"

    def offline_snapshot(repo_id, allow_patterns, local_files_only):
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(W, "_snapshot_download", offline_snapshot)
    assert main(["path", "--json"]) == 0
    (status,) = _json_lines(capsys.readouterr().out)
    assert not status["ok"] and status["missing"] == ["base", "motion", "ip_adapter", "animate3d"]
    assert "not on this computer" in status["message"] and "track4dgen weights download" in status["hint"]

    assert main(["path", "--json", "--model", "tiny"]) == 0
    assert _json_lines(capsys.readouterr().out)[0]["ok"], "the tiny model needs no weights"
    assert main(["path", "--json", str(tmp_path / "nope")]) == 0
    status = _json_lines(capsys.readouterr().out)[0]
    assert not status["ok"] and "does not exist" in status["message"]
    assert main(["init-tiny", "--out", str(tmp_path / "conv")]) == 0
    capsys.readouterr()
    assert main(["path", "--json", str(tmp_path / "conv")]) == 0
    assert _json_lines(capsys.readouterr().out)[0]["ok"]
    assert main(["verify", "--json", str(tmp_path / "conv")]) == 0
    assert _json_lines(capsys.readouterr().out)[0]["ok"]


def test_download_reports_progress_per_part(fake_hub, monkeypatch, capsys):
    from track4dgen.stage1.weights_cli import main

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["download", "--json"]) == 0
    events = _json_lines(capsys.readouterr().out)
    assert [e["step"] for e in events] == [0, 1, 2, 3, 4] and {e["total"] for e in events} == {4}
    assert events[0]["label"] == "Downloading weights" and "yanqinJiang/mvdream-sd1.5-diffusers" in events[0]["message"]
    assert fake_hub["calls"] and not any(offline for _, offline in fake_hub["calls"])

    def broken(repo_id, allow_patterns, local_files_only):
        raise OSError("network unreachable")

    monkeypatch.setattr(W, "_snapshot_download", broken)
    assert main(["download", "--json"]) == 1
    events = _json_lines(capsys.readouterr().out)
    assert events[-1]["error"] == "download_failed" and "network unreachable" in events[-1]["message"]
