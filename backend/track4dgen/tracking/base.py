"""The tracker interface used by Stage One training.

A tracker labels a ground-truth multi-view clip once: given each view's frames and query points
on the clip's first frame it returns where every query is in every frame and whether it is
visible. Training reads these labels (``training/losses.py``) to supervise U-Net features.

Pixel convention (the project's, see ``track4dgen.cameras``): (0, 0) is the top-left *corner* of
the top-left pixel, pixel centres sit at +0.5. Implementations that use another convention
(CoTracker puts 0 at the first pixel centre) convert at their boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


@dataclass
class ClipContext:
    """Where a clip came from, for trackers that read labels instead of computing them.

    ``clip_dir`` is the object's data folder, ``frame_indices`` the frames of the source
    animation that make up the clip (frame_indices[0] is the query frame).
    """

    clip_dir: Optional[Path] = None
    frame_indices: Sequence[int] = field(default_factory=list)


@dataclass
class TrackResult:
    """tracks [V, F, P, 2] float32 pixels (corner origin) and visibility [V, F, P] bool."""

    tracks: np.ndarray
    visibility: np.ndarray

    def __post_init__(self) -> None:
        self.tracks = np.asarray(self.tracks, dtype=np.float32)
        self.visibility = np.asarray(self.visibility, dtype=bool)
        if self.tracks.ndim != 4 or self.tracks.shape[-1] != 2:
            raise ValueError(f"tracks must be [V, F, P, 2], got {self.tracks.shape}")
        if self.visibility.shape != self.tracks.shape[:3]:
            raise ValueError(f"visibility {self.visibility.shape} must be tracks' [V, F, P] {self.tracks.shape[:3]}")


class Tracker(ABC):
    """Point tracker over the views of a multi-view clip (queries live on frame 0)."""

    #: short id used in cache keys and CLI flags
    name: str = "tracker"
    #: bump when the tracker's output for the same input changes (invalidates caches)
    version: str = "1"
    #: False for trackers that only read stored labels (caching them would only risk staleness)
    cacheable: bool = True

    @abstractmethod
    def track(
        self, video: np.ndarray, queries: np.ndarray, context: Optional[ClipContext] = None
    ) -> TrackResult:
        """video [V, F, H, W, 3] float in [0, 1]; queries [V, P, 2] pixels on frame 0."""

    @property
    def cache_id(self) -> str:
        return f"{self.name}-v{self.version}"


def check_inputs(video: np.ndarray, queries: np.ndarray) -> None:
    """Clear errors for the shapes every tracker expects."""
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"video must be [V, F, H, W, 3] RGB, got shape {video.shape}")
    if queries.ndim != 3 or queries.shape[-1] != 2 or queries.shape[0] != video.shape[0]:
        raise ValueError(f"queries must be [V, P, 2] with V={video.shape[0]}, got shape {queries.shape}")
