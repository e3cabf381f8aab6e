"""Shared test set-up: deterministic, single-threaded torch so tests are stable on 2-core CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:  # `training` and `scripts` are imported from the repo root
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # steady timings on small, busy CPU machines


@pytest.fixture(autouse=True)
def _seed_torch():
    try:
        import torch
    except ImportError:
        yield
        return
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture
def shared_dir() -> Path:
    return SHARED
