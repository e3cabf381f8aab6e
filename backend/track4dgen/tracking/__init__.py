"""Point tracking for Stage One's tracking losses.

``make_tracker("oracle" | "cotracker3" | "cotracker3-official" | "auto")`` returns a
:class:`~track4dgen.tracking.base.Tracker`. "auto" uses the official ``cotracker`` package when it
is importable, else our own CoTracker3 implementation. CoTracker3's code and weights are
CC-BY-NC 4.0 (non-commercial); the oracle (exact tracks of synthetic data) has no such terms.
"""

from __future__ import annotations

from typing import Optional

from .base import ClipContext, TrackResult, Tracker
from .oracle import OracleTracker
from .queries import GRID_SIZE, POINTS_PER_VIEW, grid_points, grid_queries, sample_query_indices

TRACKERS = ("oracle", "cotracker3", "cotracker3-official", "auto")


def make_tracker(name: str, checkpoint: Optional[str] = None, device: Optional[str] = None) -> Tracker:
    """Build a tracker by name (see module docstring)."""
    if name == "oracle":
        return OracleTracker()
    if name in ("auto", "cotracker3-official"):
        from .official import OfficialCoTracker3Tracker, official_available

        if name == "cotracker3-official" or official_available():
            return OfficialCoTracker3Tracker(checkpoint, device)
        name = "cotracker3"
    if name == "cotracker3":
        from .cotracker3 import CoTracker3Tracker

        return CoTracker3Tracker(checkpoint, device)
    raise ValueError(f"unknown tracker {name!r}; choose one of {TRACKERS}")


__all__ = [
    "ClipContext", "TrackResult", "Tracker", "OracleTracker", "make_tracker", "TRACKERS",
    "GRID_SIZE", "POINTS_PER_VIEW", "grid_points", "grid_queries", "sample_query_indices",
]
