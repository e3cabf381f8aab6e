"""Stage One trainer: fine-tune the MV-VDM with L_diff + tracking losses (paper §3.2).

One script for every scale, via Hugging Face accelerate:

    python training/train.py --config training/configs/tiny_cpu.yaml            # CPU smoke run
    accelerate launch training/train.py --config training/configs/paper.yaml     # 1..N GPUs / nodes
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no training/train.py --config ...   # 2 CPU ranks (gloo)

Note: ``accelerate launch --cpu --num_processes 2`` starts ONE process (accelerate 1.15 ignores
the count without a distributed mode); the command above really runs two ranks (each writes its
``training_state_rank{i}.pt``; tests/test_training_train.py runs it).

Only the MV2V adapter (``*_i2v``) and the motion modules are trained (``MVVDM.freeze_for_training``);
everything else (multi-view 3D attention, SD weights, VAE, text/image encoders) is frozen.
Checkpoints hold the trainable tensors (safetensors) plus optimizer / LR-scheduler / RNG / data
position, so ``--resume`` continues bit-for-bit where the run stopped (same machine, same config).

Flags: ``--config``, ``--no-corr``, ``--no-pos``, ``--resume [DIR|latest]``, ``--max-steps``,
``--output-dir``, ``--seed``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

if __package__ in (None, ""):  # `python training/train.py` / `accelerate launch training/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import MVVideoDataset, collate  # noqa: E402
from training.losses import LossWeights, nn_track_error, noise_condition_frame, stage1_loss  # noqa: E402
from track4dgen.tracking import make_tracker  # noqa: E402
from track4dgen.tracking.queries import POINTS_PER_VIEW, sample_query_indices  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "model": {"name": "tiny", "overrides": {}, "pretrained": None, "feature_block": None},
    "data": {
        "info": None,  # MV-Video info.json; None -> synthesize into output_dir/data
        "synthesize": {"objects": None, "resolution": 64},
        "clip_frames": 16,
        "stride": 3,
        "resolution": None,
        "tracker": "oracle",
        "tracker_checkpoint": None,
        "points_per_view": POINTS_PER_VIEW,
        "num_workers": 0,
    },
    "train": {
        "seed": 0,
        "batch_size": 1,  # objects per process
        "epochs": 20,
        "max_steps": None,
        "lr": 1.0e-6,
        "weight_decay": 0.01,
        "adam_betas": [0.9, 0.999],
        "lr_scheduler": "constant_with_warmup",
        "warmup_steps": 500,
        "grad_clip": 1.0,
        "gradient_accumulation_steps": 1,
        "mixed_precision": "auto",  # auto: bf16 on CUDA, no on CPU | no | fp16 | bf16
        "gradient_checkpointing": False,
        "cond_noise_max": 0.1,  # paper eq. 2 (beta_t = cond_noise_max * t / T)
        # probability of training a sample unconditionally (empty prompt, zero image embeds) so
        # classifier-free guidance keeps working; common practice, not stated by the paper
        "uncond_prob": 0.0,
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
    },
    "loss": {"diff": 1.0, "corr": 0.1, "pos": 10.0, "pos_temperature": 0.1, "huber_delta": 1.0,
             "use_corr": True, "use_pos": True},
    "log": {
        "output_dir": "runs/stage1",
        "log_every": 1,
        "checkpoint_every": 500,
        "keep_checkpoints": 3,
        "validate_every": 0,  # 0 = only at the end
        "validation_steps": 4,  # sampler steps for the validation mp4s
        "tensorboard": True,
        "wandb": "auto",  # auto: when the wandb package is importable
        "progress_bar": True,
    },
}


# ------------------------------------------------------------------------------------ config
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in out:
            raise ValueError(f"unknown config key {k!r}; known keys here: {sorted(out)}")
        out[k] = _merge(out[k], v) if isinstance(out[k], dict) and isinstance(v, dict) and out[k] else v
    return out


def load_config(path: Optional[str | Path] = None, overrides: Optional[dict] = None) -> dict:
    """DEFAULTS <- YAML file <- overrides (nested dicts). Unknown keys are errors, not silence."""
    import yaml

    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config {p} does not exist (see training/configs/)")
        cfg = _merge(cfg, yaml.safe_load(p.read_text()) or {})
    return _merge(cfg, overrides or {})


# ------------------------------------------------------------------------------------ model
def build_components(cfg: dict):
    """The Stage One components; pretrained weights for full-size configs, random for tiny."""
    from track4dgen.stage1.config import get_config

    mcfg = cfg["model"]
    over = dict(mcfg.get("overrides") or {})
    over.setdefault("num_frames", int(cfg["data"]["clip_frames"]))
    if mcfg.get("feature_block"):
        over["feature_block"] = mcfg["feature_block"]
    model_cfg = get_config(mcfg["name"], **over)
    if mcfg.get("pretrained"):
        from track4dgen.stage1 import weights

        return weights.from_pretrained(mcfg["pretrained"], config=model_cfg)
    from track4dgen.stage1.components import build_components as build

    return build(model_cfg, seed=int(cfg["train"]["seed"]))


def enable_gradient_checkpointing(module: torch.nn.Module) -> int:
    """Turn on diffusers-style checkpointing in every block that supports it; returns the count."""
    from torch.utils.checkpoint import checkpoint

    n = 0
    for m in module.modules():
        if hasattr(m, "gradient_checkpointing"):
            m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            m.gradient_checkpointing = True
            n += 1
    return n


# ------------------------------------------------------------------------------------ data order
def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Deterministic shuffle per epoch, so a resumed run sees exactly the same batches."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def batches_for(n: int, seed: int, epoch: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This process's batches of one epoch (equal count on every process; remainder dropped)."""
    order = epoch_order(n, seed, epoch)
    per_step = batch_size * world
    steps = max(1, len(order) // per_step) if len(order) >= per_step else 1
    if len(order) < per_step:  # tiny datasets: wrap around so every process has a batch
        order = (order * math.ceil(per_step / max(len(order), 1)))[:per_step]
    out = []
    for s in range(steps):
        chunk = order[s * per_step:(s + 1) * per_step]
        out.append(chunk[rank * batch_size:(rank + 1) * batch_size])
    return out


# ------------------------------------------------------------------------------------ trainer
@dataclass
class StepBatch:
    latents: torch.Tensor  # [B, V, F, 4, h, w]
    text: torch.Tensor
    camera: torch.Tensor  # [B, V, 16]
    image_embeds: Optional[torch.Tensor]
    tracks: Optional[torch.Tensor]  # [B, V, F, P, 2]
    track_vis: Optional[torch.Tensor]
    query_valid: torch.Tensor  # [B, V, P]
    image_size: tuple[int, int]
    video: torch.Tensor  # [B, V, F, 3, H, W] in [-1, 1]


class Trainer:
    """Holds model, optimizer, data and RNG; ``train_step`` / ``save`` / ``load`` / ``fit``."""

    def __init__(self, cfg: dict, accelerator=None) -> None:
        from accelerate import Accelerator
        from diffusers.optimization import get_scheduler

        self.cfg = cfg
        tcfg, lcfg = cfg["train"], cfg["log"]
        self.out_dir = Path(lcfg["output_dir"])
        mp = tcfg["mixed_precision"]
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() else "no"
        log_with = []
        if lcfg.get("tensorboard", True):
            try:
                import tensorboard  # noqa: F401

                log_with.append("tensorboard")
            except ImportError:
                pass
        want_wandb = lcfg.get("wandb", "auto")
        if want_wandb is True or (want_wandb == "auto" and _importable("wandb")):
            log_with.append("wandb")
        self.acc = accelerator or Accelerator(
            mixed_precision=mp,
            gradient_accumulation_steps=int(tcfg["gradient_accumulation_steps"]),
            log_with=log_with or None,
            project_dir=str(self.out_dir),
        )
        self.seed = int(tcfg["seed"])
        torch.manual_seed(self.seed + self.acc.process_index)

        self.data_info = self._data_info()
        tracker = make_tracker(cfg["data"]["tracker"], cfg["data"].get("tracker_checkpoint"))
        dcfg = cfg["data"]
        self.dataset = MVVideoDataset(self.data_info, int(dcfg["clip_frames"]), int(dcfg["stride"]),
                                      dcfg.get("resolution"), tracker, seed=self.seed)

        self.comp = build_components(cfg)
        self.unet = self.comp.unet.freeze_for_training()
        self.unet.train()
        for m in (self.comp.vae, self.comp.text_encoder, self.comp.image_encoder):
            if m is not None:
                m.requires_grad_(False)
                m.eval()
        if tcfg.get("gradient_checkpointing"):
            enable_gradient_checkpointing(self.unet)
        self.trainable_names = self.unet.trainable_parameter_names()
        params = self.unet.get_trainable_parameters()
        self.optimizer = torch.optim.AdamW(params, lr=float(tcfg["lr"]), weight_decay=float(tcfg["weight_decay"]),
                                           betas=tuple(tcfg["adam_betas"]))
        steps_per_epoch = len(batches_for(len(self.dataset), self.seed, 0, int(tcfg["batch_size"]),
                                          self.acc.process_index, self.acc.num_processes))
        self.steps_per_epoch = steps_per_epoch
        total = int(tcfg["epochs"]) * steps_per_epoch
        if tcfg.get("max_steps"):
            total = int(tcfg["max_steps"])
        self.total_steps = total
        self.lr_scheduler = get_scheduler(tcfg["lr_scheduler"], self.optimizer,
                                          num_warmup_steps=int(tcfg["warmup_steps"]) * self.acc.num_processes,
                                          num_training_steps=total * self.acc.num_processes)
        self.unet, self.optimizer, self.lr_scheduler = self.acc.prepare(self.unet, self.optimizer, self.lr_scheduler)
        dev = self.acc.device
        for m in (self.comp.vae, self.comp.text_encoder, self.comp.image_encoder):
            if m is not None:
                m.to(dev)

        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler(num_train_timesteps=int(tcfg["num_train_timesteps"]),
                                             beta_start=float(tcfg["beta_start"]), beta_end=float(tcfg["beta_end"]),
                                             beta_schedule="linear", clip_sample=False)
        self.weights = LossWeights(float(cfg["loss"]["diff"]), float(cfg["loss"]["corr"]), float(cfg["loss"]["pos"]),
                                   float(cfg["loss"]["pos_temperature"]), float(cfg["loss"]["huber_delta"]))
        self.use_corr = bool(cfg["loss"]["use_corr"])
        self.use_pos = bool(cfg["loss"]["use_pos"])
        # All training randomness (t, noise, eq.-2 noise, query draws) comes from this generator,
        # whose state is checkpointed: that is what makes resume exact.
        self.gen = torch.Generator().manual_seed(self.seed * 7919 + self.acc.process_index)
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.probe_block: Optional[str] = None  # evaluate another block's features (None: the config's)

    # -------------------------------------------------------------------------------- data
    def _data_info(self) -> Path:
        info = self.cfg["data"].get("info")
        if info:
            return Path(info)
        target = self.out_dir / "data" / "info.json"
        if self.acc.is_main_process and not target.exists():
            from training.write_mvvideo import write_dataset

            syn = self.cfg["data"].get("synthesize") or {}
            write_dataset(target.parent, syn.get("objects"), int(syn.get("resolution", 64)))
        self.acc.wait_for_everyone()
        return target

    def _batch_iter(self, start_step: int) -> Iterator[dict[str, Any]]:
        """Collated batches from ``start_step`` on: the same sequence whether or not the run was
        interrupted. One DataLoader per epoch so worker processes see the epoch's phase seed."""
        from torch.utils.data import DataLoader

        bs = int(self.cfg["train"]["batch_size"])
        workers = int(self.cfg["data"].get("num_workers", 0) or 0)
        epoch, k = divmod(start_step, self.steps_per_epoch)
        while True:
            self.dataset.set_epoch(epoch)
            batches = batches_for(len(self.dataset), self.seed, epoch, bs, self.acc.process_index,
                                  self.acc.num_processes)[k:]
            loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                                persistent_workers=False)
            yield from loader
            epoch, k = epoch + 1, 0

    @torch.no_grad()
    def prepare_batch(self, items: dict[str, Any]) -> StepBatch:
        """Frozen encoders: VAE latents of every frame, text, camera vectors, IP-Adapter embeds."""
        from track4dgen.stage1.camera_embed import camera_tensor
        from track4dgen.stage1.components import encode_image_embeds, encode_images, encode_text

        dev = self.acc.device
        video = items["video"].to(dev)
        B, V, Fr, C, H, W = video.shape
        lat = encode_images(self.comp, ((video.reshape(-1, C, H, W) + 1.0) / 2.0)).float()
        lat = lat.reshape(B, V, Fr, *lat.shape[1:])
        text = encode_text(self.comp, list(items["prompt"])).float()
        cam = torch.stack([camera_tensor(w.cpu().numpy()) for w in items["w2c"]]).to(dev)
        img = encode_image_embeds(self.comp, ((video[:, :, 0].reshape(-1, C, H, W) + 1.0) / 2.0))
        img = img.reshape(B, V, -1).float() if img is not None else None
        tracks = items.get("tracks")
        return StepBatch(lat, text, cam, img, tracks.to(dev) if tracks is not None else None,
                         items["track_vis"].to(dev) if "track_vis" in items else None,
                         items["query_valid"].to(dev), (H, W), video)

    # -------------------------------------------------------------------------------- step
    def compute_losses(self, b: StepBatch, gen: torch.Generator, t: Optional[int] = None,
                       all_queries: bool = False, with_metric: bool = False):
        """Noise the clip (eq. 2 for frame 1), predict, and evaluate L1's three terms.

        Training draws t and 8 queries per view from ``gen``; evaluation fixes t and uses every
        valid query (``all_queries``), optionally adding the nearest-neighbour track error.
        """
        from track4dgen.stage1.features import FeatureHook

        dev = self.acc.device
        B, V, Fr = b.latents.shape[:3]
        T = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, T, (B,), generator=gen) if t is None else torch.full((B,), int(t))
        noise = torch.randn(b.latents.shape, generator=gen)
        beta = float(self.cfg["train"]["cond_noise_max"]) * t.float() / T
        z_cond = noise_condition_frame(b.latents[:, :, :1].cpu(), beta, gen)
        noisy = self.noise_scheduler.add_noise(b.latents.cpu(), noise, t)  # same t for every frame
        noisy = torch.cat([z_cond, noisy[:, :, 1:]], dim=2).to(dev)
        if all_queries:
            P = b.query_valid.shape[-1]
            idx = torch.arange(P).expand(B, V, P)
            wq = b.query_valid.cpu().float()
        else:
            idx, wq = sample_query_indices(b.query_valid.cpu(), int(self.cfg["data"]["points_per_view"]), gen)
        K = idx.shape[-1]
        text, img = b.text, b.image_embeds
        p_uncond = float(self.cfg["train"].get("uncond_prob", 0.0) or 0.0)
        if p_uncond > 0 and self.unet.training:  # drawn only when enabled: the RNG stream is unchanged otherwise
            drop = (torch.rand(B, generator=gen) < p_uncond).to(dev)
            text = torch.where(drop[:, None, None], self._empty_text().expand_as(text), text)
            if img is not None:
                img = torch.where(drop[:, None, None], torch.zeros_like(img), img)
        unet = self.unet
        with FeatureHook(self.acc.unwrap_model(unet), block=self.probe_block) as hook, self.acc.autocast():
            pred = unet(noisy, t.to(dev), text, b.camera, image_embeds=img)
        feat = hook.features
        tracks = vis = None
        if b.tracks is not None:
            gi = idx.to(dev)[:, :, None, :].expand(B, V, Fr, K)
            tracks = torch.gather(b.tracks, 3, gi[..., None].expand(B, V, Fr, K, 2)).flatten(0, 1)
            vis = torch.gather(b.track_vis, 3, gi).flatten(0, 1)
        feat_n = feat.flatten(0, 1) if feat is not None else None
        terms = stage1_loss(pred.float(), noise.to(dev), feat_n, tracks, vis, wq.to(dev).flatten(0, 1),
                            b.image_size, self.weights, self.use_corr, self.use_pos)
        if not with_metric:
            return terms
        metric = (nn_track_error(feat_n, tracks, vis, wq.to(dev).flatten(0, 1), b.image_size)
                  if feat_n is not None and tracks is not None else torch.tensor(float("nan")))
        return terms, float(metric)

    @torch.no_grad()
    def _empty_text(self) -> torch.Tensor:
        if getattr(self, "_empty", None) is None:
            from track4dgen.stage1.components import encode_text

            self._empty = encode_text(self.comp, [""]).float()
        return self._empty

    def train_step(self, items: dict[str, Any]) -> dict[str, float]:
        b = self.prepare_batch(items)
        with self.acc.accumulate(self.unet):
            terms = self.compute_losses(b, self.gen)
            self.acc.backward(terms.total)
            if self.acc.sync_gradients and self.cfg["train"].get("grad_clip"):
                self.acc.clip_grad_norm_(self.unet.parameters(), float(self.cfg["train"]["grad_clip"]))
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        out = terms.as_floats()
        out["lr"] = float(self.lr_scheduler.get_last_lr()[0])
        return out

    @torch.no_grad()
    def evaluate(self, indices: Optional[Sequence[int]] = None, timesteps: Sequence[int] = (100, 400, 700),
                 seed: int = 1234, phase: int = 0) -> dict[str, float]:
        """Losses and the NN track error (px) on fixed clips, fixed timesteps and noise, all valid
        queries: comparable across steps and across runs (ablations)."""
        indices = list(range(len(self.dataset))) if indices is None else list(indices)
        was = self.unet.training
        self.unet.eval()
        saved_phase = self.dataset.phase
        self.dataset.phase = phase
        try:
            sums: dict[str, float] = {}
            n = len(indices) * len(timesteps)
            for i in indices:
                b = self.prepare_batch(collate([self.dataset[i]]))
                for t in timesteps:
                    g = torch.Generator().manual_seed(seed * 1000 + i * 7 + int(t))
                    terms, err = self.compute_losses(b, g, t=int(t), all_queries=True, with_metric=True)
                    vals = terms.as_floats() | {"nn_err_px": err}
                    for k, v in vals.items():
                        sums[k] = sums.get(k, 0.0) + v / n
        finally:
            self.dataset.phase = saved_phase
            self.unet.train(was)
        return sums

    def probe_blocks(self, blocks: Sequence[str], timesteps: Sequence[int] = (100, 300, 500)) -> dict[str, float]:
        """The paper's block-by-block probe: NN track error (px) of each block's motion-module
        features on the data, so the supervised block is chosen by measurement."""
        out = {}
        try:
            for blk in blocks:
                self.probe_block = blk
                out[blk] = self.evaluate(timesteps=timesteps)["nn_err_px"]
        finally:
            self.probe_block = None
        return out

    # -------------------------------------------------------------------------------- checkpoints
    def save(self, directory: Optional[Path] = None) -> Path:
        """trainable.safetensors (trainable tensors only) + training_state.pt (optimizer, LR
        scheduler, RNG, step) per process; written to a temp dir and renamed (never half-written)."""
        from safetensors.torch import save_file

        directory = Path(directory or self.out_dir / "checkpoints" / f"step_{self.global_step:07d}")
        self.acc.wait_for_everyone()
        tmp = directory.with_name(directory.name + ".tmp")
        if self.acc.is_main_process:
            tmp.mkdir(parents=True, exist_ok=True)
            model = self.acc.unwrap_model(self.unet)
            names = set(self.trainable_names)
            tensors = {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters() if n in names}
            save_file(tensors, str(tmp / "trainable.safetensors"), metadata={"step": str(self.global_step)})
            (tmp / "config.json").write_text(json.dumps(self.cfg, indent=1, default=str))
        self.acc.wait_for_everyone()
        state = {
            "step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(),
            "history": self.history,
        }
        torch.save(state, tmp / f"training_state_rank{self.acc.process_index}.pt")
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            if directory.exists():
                import shutil

                shutil.rmtree(directory)
            os.replace(tmp, directory)
            self._prune_checkpoints(directory.parent)
        self.acc.wait_for_everyone()
        return directory

    def _prune_checkpoints(self, root: Path) -> None:
        keep = int(self.cfg["log"].get("keep_checkpoints", 0) or 0)
        if keep <= 0:
            return
        ckpts = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        import shutil

        for p in ckpts[:-keep]:
            shutil.rmtree(p, ignore_errors=True)

    def load(self, directory: str | Path) -> None:
        from safetensors.torch import load_file

        directory = Path(directory)
        if directory.name == "latest" or not (directory / "trainable.safetensors").exists():
            root = directory.parent if directory.name == "latest" else directory
            root = root / "checkpoints" if (root / "checkpoints").is_dir() else root
            ckpts = sorted(p for p in root.glob("step_*") if (p / "trainable.safetensors").exists())
            if not ckpts:
                raise FileNotFoundError(f"no checkpoint (step_*/trainable.safetensors) under {root}")
            directory = ckpts[-1]
        tensors = load_file(str(directory / "trainable.safetensors"))
        model = self.acc.unwrap_model(self.unet)
        missing = set(self.trainable_names) - set(tensors)
        unexpected = set(tensors) - set(self.trainable_names)
        if missing or unexpected:
            raise ValueError(f"checkpoint {directory} does not match the model: {len(missing)} missing, "
                             f"{len(unexpected)} unexpected trainable tensors (different model config?)")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, v in tensors.items():
                params[n].copy_(v.to(params[n].dtype))
        state = torch.load(directory / f"training_state_rank{self.acc.process_index}.pt", map_location="cpu",
                           weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        np.random.set_state(state["numpy_rng"])
        self.global_step = int(state["step"])
        self.history = list(state.get("history", []))

    # -------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self, index: int = 0) -> list[Path]:
        """Sample one clip from its ground-truth first frames and write one mp4 per view."""
        from track4dgen.stage1.config import SamplerConfig
        from track4dgen.stage1.pipeline import MVVDMPipeline
        from track4dgen.video_io import write_mp4

        if not self.acc.is_main_process:
            return []
        item = self.dataset[index]
        views = (item["video"][:, 0] + 1.0) / 2.0
        model = self.acc.unwrap_model(self.unet)
        was = model.training
        model.eval()
        self.comp.unet = model
        try:
            sampler = SamplerConfig(steps=int(self.cfg["log"]["validation_steps"]), return_features=False)
            res = MVVDMPipeline(self.comp, sampler)(views, item["prompt"], item["w2c"].numpy(), seed=self.seed,
                                                    num_frames=item["video"].shape[1])
        finally:
            model.train(was)
        out = self.out_dir / "validation" / f"step_{self.global_step:07d}"
        paths = []
        for v in range(res.videos.shape[0]):
            p = out / f"view{v}.mp4"
            write_mp4(p, res.videos[v].permute(0, 2, 3, 1).numpy())
            paths.append(p)
        return paths

    # -------------------------------------------------------------------------------- loop
    def fit(self, max_steps: Optional[int] = None) -> list[dict[str, float]]:
        lcfg = self.cfg["log"]
        end = min(self.total_steps, max_steps) if max_steps else self.total_steps
        self.acc.init_trackers("stage1", config={"config": json.dumps(self.cfg, default=str)})
        bar = None
        if lcfg.get("progress_bar", True) and self.acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=end, initial=self.global_step, desc="stage1", dynamic_ncols=True)
        batches = self._batch_iter(self.global_step)
        t0 = time.time()
        while self.global_step < end:
            logs = self.train_step(next(batches))
            logs["step"] = self.global_step
            self.history.append(logs)
            if self.global_step % int(lcfg.get("log_every", 1)) == 0:
                self.acc.log({f"loss/{k}": v for k, v in logs.items() if k in ("total", "diff", "corr", "pos")}
                             | {"lr": logs["lr"]}, step=self.global_step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(diff=f"{logs['diff']:.4f}", corr=f"{logs['corr']:.4f}", pos=f"{logs['pos']:.3f}")
            ce = int(lcfg.get("checkpoint_every", 0) or 0)
            if ce and self.global_step % ce == 0 and self.global_step < end:
                self.save()
            ve = int(lcfg.get("validate_every", 0) or 0)
            if ve and self.global_step % ve == 0 and self.global_step < end:
                self.validate()
        if bar is not None:
            bar.close()
        self.save()
        if int(lcfg.get("validation_steps", 0) or 0) > 0:
            self.validate()
        self.acc.end_training()
        if self.acc.is_main_process:
            (self.out_dir / "history.json").write_text(json.dumps(self.history))
            print(json.dumps({"steps": self.global_step, "seconds": round(time.time() - t0, 1), "processes": self.acc.num_processes,
                              "last": self.history[-1] if self.history else None}))
        return self.history


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------------------------ CLI
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Stage One trainer (MV-VDM + tracking losses)")
    p.add_argument("--config", default=None, help="YAML config (training/configs/tiny_cpu.yaml, paper.yaml)")
    p.add_argument("--no-corr", action="store_true", help="ablation: drop L_corr (eq. 4) from the objective")
    p.add_argument("--no-pos", action="store_true", help="ablation: drop L_pos (eq. 5) from the objective")
    p.add_argument("--resume", default=None, help="checkpoint dir, or 'latest' (in --output-dir)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--output-dir", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--tracker", default=None, help="oracle | cotracker3 | cotracker3-official | auto")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> dict:
    over: dict[str, Any] = {}
    if a.no_corr or a.no_pos:
        over["loss"] = {}
        if a.no_corr:
            over["loss"]["use_corr"] = False
        if a.no_pos:
            over["loss"]["use_pos"] = False
    if a.output_dir:
        over["log"] = {"output_dir": a.output_dir}
    if a.max_steps is not None or a.seed is not None:
        over["train"] = {}
        if a.max_steps is not None:
            over["train"]["max_steps"] = a.max_steps
        if a.seed is not None:
            over["train"]["seed"] = a.seed
    if a.tracker:
        over["data"] = {"tracker": a.tracker}
    return load_config(a.config, over)


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    cfg = config_from_args(a)
    trainer = Trainer(cfg)
    if a.resume:
        trainer.load(Path(cfg["log"]["output_dir"]) / "latest" if a.resume == "latest" else a.resume)
    trainer.fit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
