"""A tiny_cpu Stage One run lowers all three losses, saves safetensors checkpoints, and resuming
from a checkpoint reproduces the uninterrupted run's next losses exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.train import Trainer, config_from_args, load_config, parse_args
from training.write_mvvideo import write_dataset


pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.single_thread

ROOT = Path(__file__).resolve().parents[1]
# smaller widths than the tiny model's defaults keep the CPU test fast; same code path
SMALL = {"block_out_channels": [16, 32, 32], "norm_num_groups": 4}


@pytest.fixture(scope="module")
def info(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("mv"), ["hopper"], resolution=64, supersample=1, starts=[0])


def _cfg(info: Path, out: Path, **train) -> dict:
    return load_config(ROOT / "training/configs/tiny_cpu.yaml", {
        "model": {"overrides": SMALL},
        "data": {"info": str(info)},
        "train": {"max_steps": 6, "lr": 3e-3, "warmup_steps": 0, "uncond_prob": 0.25, **train},
        "log": {"output_dir": str(out), "checkpoint_every": 4, "validation_steps": 0, "progress_bar": False,
                "tensorboard": False, "wandb": False},
    })


def test_tiny_run_lowers_losses_checkpoints_and_resumes_exactly(info, tmp_path):
    cfg = _cfg(info, tmp_path / "run")
    cfg["log"]["validation_steps"] = 1
    tr = Trainer(cfg)
    before = tr.evaluate([0], timesteps=(150, 450))
    hist = tr.fit()
    after = tr.evaluate([0], timesteps=(150, 450))
    assert len(hist) == 6
    for k in ("diff", "corr", "pos"):
        assert after[k] < before[k], (k, before, after)

    # checkpoints: trainable tensors only (MV2V adapter + motion modules), plus training state
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000004"
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "trainable.safetensors"))
    names = set(tr.trainable_names)
    assert set(saved) == names and any("_i2v." in n for n in names) and any("motion_modules" in n for n in names)
    all_names = {n for n, _ in tr.acc.unwrap_model(tr.unet).named_parameters()}
    assert len(all_names) > len(names)  # the frozen part is not saved
    assert (ckpt / "training_state_rank0.pt").exists()
    assert len(list((tmp_path / "run" / "validation").rglob("view*.mp4"))) == 4

    # resume from step 4 in a fresh trainer: steps 5 and 6 must repeat bit for bit
    cfg2 = _cfg(info, tmp_path / "run")
    tr2 = Trainer(cfg2)
    tr2.load(ckpt)
    assert tr2.global_step == 4
    hist2 = tr2.fit()
    for a, b in zip(hist[4:], hist2[4:]):
        assert a["step"] == b["step"]
        for k in ("total", "diff", "corr", "pos"):
            assert a[k] == b[k], (k, a, b)


def test_cli_flags_map_to_config(info, tmp_path):
    a = parse_args(["--config", str(ROOT / "training/configs/tiny_cpu.yaml"), "--no-corr", "--max-steps", "3",
                    "--output-dir", str(tmp_path), "--seed", "5"])
    cfg = config_from_args(a)
    assert cfg["loss"]["use_corr"] is False and cfg["loss"]["use_pos"] is True
    assert cfg["train"]["max_steps"] == 3 and cfg["train"]["seed"] == 5 and cfg["log"]["output_dir"] == str(tmp_path)
    paper = load_config(ROOT / "training/configs/paper.yaml")
    assert paper["train"]["lr"] == 1e-6 and paper["train"]["weight_decay"] == 0.01
    assert paper["train"]["lr_scheduler"] == "constant_with_warmup" and paper["train"]["epochs"] == 20
    assert paper["data"]["clip_frames"] == 16 and paper["loss"]["pos"] == 10.0 and paper["loss"]["corr"] == 0.1
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, {"train": {"learning_rate": 1.0}})


def test_gradient_checkpointing_gives_the_same_gradients():
    from track4dgen.stage1.components import build_components
    from track4dgen.stage1.config import get_config
    from training.train import enable_gradient_checkpointing

    grads = []
    for gc in (False, True):
        unet = build_components(get_config("tiny", num_frames=3, **SMALL)).unet.freeze_for_training()
        unet.train()
        if gc:
            assert enable_gradient_checkpointing(unet) > 0
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 3, 4, 8, 8, generator=g)
        out = unet(x, 500, torch.randn(1, 16, 32, generator=g), torch.randn(4, 16, generator=g))
        out.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in unet.get_trainable_parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_accelerate_launch_runs_two_cpu_ranks(info, tmp_path):
    """The documented 2-rank CPU command (train.py docstring) really starts two processes: one
    step of the tiny config, each rank saves its own training state, the trainer reports 2."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if exe is None:
        pytest.skip("the accelerate launcher is not installed")
    cfg = _cfg(info, tmp_path / "run", max_steps=1)
    cfg["log"]["checkpoint_every"] = 1
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "backend"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", str(ROOT / "training" / "train.py"), "--config", str(tmp_path / "cfg.yaml")]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(next(line for line in out.stdout.splitlines() if line.startswith('{"steps"')))
    assert summary["processes"] == 2 and summary["steps"] == 1
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000001"
    assert (ckpt / "training_state_rank0.pt").is_file() and (ckpt / "training_state_rank1.pt").is_file()
