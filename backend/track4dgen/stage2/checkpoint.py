"""Atomic Stage Two checkpoints, so a killed run (kill -9, lost server) resumes where it stopped.

One file, ``stage2_latest.pt``: written to a temporary sibling, fsynced and renamed over the old
one, so the file on disk is always a complete checkpoint (never half-written).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "stage2_latest.pt"


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def save_checkpoint(
    checkpoint_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model + optimizer + the number of completed iterations atomically."""
    final = checkpoint_path(checkpoint_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    payload = {"iteration": int(iteration), "model": model.state_dict(), "optimizer": optimizer.state_dict(), "extra": extra or {}}
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def load_checkpoint(
    checkpoint_dir: str | Path | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    expect: dict[str, Any] | None = None,
) -> int:
    """Restore the latest checkpoint if there is one; returns the completed iteration (0 if none).

    ``expect`` (e.g. the config and Gaussian count) must match what was saved; a checkpoint of a
    different run is ignored rather than loaded into mismatching tensors.
    """
    if checkpoint_dir is None:
        return 0
    path = checkpoint_path(checkpoint_dir)
    if not path.is_file():
        return 0
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if expect is not None and payload.get("extra", {}).get("expect") != expect:
        return 0
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    return int(payload["iteration"])
