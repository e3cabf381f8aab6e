"""Adapter to the official ``cotracker`` package (facebookresearch/co-tracker) when it is installed.

Why keep both: the official code is the reference, so users who have it can label data with it;
everyone else gets our re-implementation (``cotracker3.py``), which computes the same function.
Both are CC-BY-NC 4.0 (code and weights) — non-commercial use only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import torch

from .base import ClipContext, TrackResult, Tracker
from .cotracker3 import HUB_FILENAME, HUB_REPO, run_predictor_on_views


def official_available() -> bool:
    """True when ``import cotracker`` would succeed (checked without importing it)."""
    return importlib.util.find_spec("cotracker") is not None


class OfficialCoTracker3Tracker(Tracker):
    """CoTracker3 offline through ``cotracker.predictor.CoTrackerPredictor``."""

    name = "cotracker3"  # same cache id as ours on purpose: both compute the same tracks
    version = "1"

    def __init__(self, checkpoint: Optional[str | Path] = None, device: Optional[str] = None) -> None:
        if not official_available():
            raise ImportError(
                "the official `cotracker` package is not installed; "
                "`pip install git+https://github.com/facebookresearch/co-tracker` or use our implementation "
                "(track4dgen.tracking.cotracker3)"
            )
        from cotracker.predictor import CoTrackerPredictor  # type: ignore[import-not-found]

        if checkpoint is None:
            from huggingface_hub import hf_hub_download

            checkpoint = hf_hub_download(HUB_REPO, HUB_FILENAME)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.predictor = CoTrackerPredictor(checkpoint=str(checkpoint), offline=True, window_len=60).to(self.device)

    def track(self, video, queries, context: Optional[ClipContext] = None) -> TrackResult:
        return run_predictor_on_views(self.predictor, video, queries, self.device)
