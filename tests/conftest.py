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
def single_thread():
    """One intra-op thread: on a shared 2-core CI box, torch's spinning worker threads make small
    ops many times slower than a single thread. Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``; runs after ``_seed_torch`` (autouse
    fixtures come first), so it restores that fixture's thread count afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def shared_dir() -> Path:
    return SHARED
