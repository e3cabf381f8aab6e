"""On-disk cache of tracks, next to the data, keyed by content hash and tracker version.

Why content hashes: the same clip must never be tracked twice (CoTracker3 costs seconds per view
on a GPU, minutes on a CPU), and a changed video or a new tracker version must never reuse stale
tracks. The key covers the decoded frames, the queries and ``Tracker.cache_id``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .base import ClipContext, TrackResult, Tracker

CACHE_DIRNAME = ".tracks_cache"


def content_key(video: np.ndarray, queries: np.ndarray, tracker_id: str) -> str:
    """sha256 over the frames (as 8-bit), the queries (float32) and the tracker id."""
    h = hashlib.sha256()
    h.update(tracker_id.encode())
    frames = np.ascontiguousarray(np.clip(np.asarray(video) * 255.0 + 0.5, 0, 255).astype(np.uint8))
    h.update(str(frames.shape).encode())
    h.update(frames.tobytes())
    h.update(np.ascontiguousarray(np.asarray(queries, dtype=np.float32)).tobytes())
    return h.hexdigest()[:32]


class TrackCache:
    """tracks_cache/<tracker-id>/<key>.npz files under a data root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / CACHE_DIRNAME

    def path(self, key: str, tracker_id: str) -> Path:
        return self.root / tracker_id / f"{key}.npz"

    def load(self, key: str, tracker_id: str) -> Optional[TrackResult]:
        p = self.path(key, tracker_id)
        if not p.exists():
            return None
        with np.load(p) as d:
            return TrackResult(d["tracks"], d["visibility"])

    def save(self, key: str, tracker_id: str, result: TrackResult) -> Path:
        p = self.path(key, tracker_id)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.stem + f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, tracks=result.tracks, visibility=result.visibility)
        os.replace(tmp, p)  # atomic: concurrent workers never read half a file
        return p

    def get_or_compute(
        self, tracker: Tracker, video: np.ndarray, queries: np.ndarray, context: Optional[ClipContext] = None
    ) -> tuple[TrackResult, bool]:
        """(tracks, was_cached). Trackers with ``cacheable = False`` are always run."""
        if not tracker.cacheable:
            return tracker.track(video, queries, context), False
        key = content_key(video, queries, tracker.cache_id)
        hit = self.load(key, tracker.cache_id)
        if hit is not None:
            return hit, True
        result = tracker.track(video, queries, context)
        self.save(key, tracker.cache_id, result)
        return result, False
