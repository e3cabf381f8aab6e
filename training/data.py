"""Animate3D's MV-Video training data: reading, clip sampling, masks, cameras and tracks.

Format (one JSON list, paths relative to the JSON file unless absolute):
    {"data_path": [view0.mp4, view1.mp4, view2.mp4, view3.mp4], "text_prompt": str,
     "angle": {"elv": degrees, "azi_start": degrees}}
Each video is a 48-frame animation of one object from one of 4 cameras spaced 90 degrees apart
starting at ``azi_start``, read as the reference's dataset reads it: Animate3D's ``get_camera``
azimuths (0 = the object's front, views counter-clockwise seen from above), which are our orbit
azimuths too because ``stage1.camera_embed`` turns our world into Animate3D's (the vectors the
trainer feeds equal the reference's for the same entry, tested). A training clip takes 16 frames at stride 3 from a random phase
(Animate3D's sampling), pixels in [-1, 1]. Masks come from the alpha channel when the files have
one, else from the solid background (estimated from the image border, or the entry's optional
``"background"`` RGB). Tracks for the clip's 15x15 query grid come from a tracker via the on-disk
cache (``track4dgen.tracking.cache``), computed once per clip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from track4dgen.cameras import Camera
from track4dgen.tracking.base import ClipContext, Tracker
from track4dgen.tracking.cache import TrackCache
from track4dgen.tracking.queries import GRID_SIZE, grid_queries
from track4dgen.video_io import read_mp4, read_rgba

from .write_mvvideo import CLIP_FRAMES, CLIP_STRIDE, mvvideo_cameras

MASK_THRESHOLD = 0.08  # max |rgb - background| (0..1) above which a pixel is foreground
GREY = (0.5, 0.5, 0.5)  # Animate3D's background, used to composite RGBA inputs


class DataFormatError(ValueError):
    """A malformed info JSON entry or video; the message names the file and the fix."""


@dataclass
class Entry:
    paths: list[Path]
    prompt: str
    elevation: float
    azi_start: float
    background: Optional[tuple[float, float, float]]

    @property
    def clip_dir(self) -> Path:
        return self.paths[0].parent


def load_info(info_path: str | Path, num_views: int = 4) -> list[Entry]:
    """Parse and validate an MV-Video info JSON."""
    info_path = Path(info_path)
    if not info_path.exists():
        raise DataFormatError(f"{info_path} does not exist; write one with `python -m training.write_mvvideo DIR`")
    try:
        raw = json.loads(info_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{info_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise DataFormatError(f"{info_path} must hold a non-empty JSON list of entries")
    entries = []
    for i, e in enumerate(raw):
        where = f"{info_path} entry {i}"
        for key in ("data_path", "text_prompt", "angle"):
            if key not in e:
                raise DataFormatError(f"{where} lacks '{key}' (expected data_path, text_prompt, angle)")
        paths = [Path(p) if Path(p).is_absolute() else info_path.parent / p for p in e["data_path"]]
        if len(paths) != num_views:
            raise DataFormatError(f"{where} has {len(paths)} videos, expected {num_views} (one per view)")
        for p in paths:
            if not p.exists():
                raise DataFormatError(f"{where}: video {p} does not exist")
        ang = e["angle"]
        if "elv" not in ang or "azi_start" not in ang:
            raise DataFormatError(f"{where}: 'angle' needs 'elv' and 'azi_start' in degrees")
        bg = e.get("background")
        entries.append(
            Entry(paths, str(e["text_prompt"]), float(ang["elv"]), float(ang["azi_start"]),
                  tuple(float(c) for c in bg) if bg is not None else None)
        )
    return entries


@lru_cache(maxsize=64)
def _read_video(path: str) -> np.ndarray:
    """[F, H, W, 3|4] float32 in [0, 1]; keeps alpha when the container has one (e.g. PNG folders)."""
    p = Path(path)
    if p.is_dir():  # folder of RGBA PNG frames
        frames = sorted(p.glob("*.png"))
        if not frames:
            raise DataFormatError(f"{p} has no PNG frames")
        return np.stack([read_rgba(f) for f in frames])
    try:
        return read_mp4(p, keep_alpha=True)
    except Exception as exc:  # noqa: BLE001 - imageio raises many types for bad files
        raise DataFormatError(f"cannot decode {p}: {exc}") from exc


def background_from_border(frame: np.ndarray) -> np.ndarray:
    """The solid background colour: median of the 1-pixel image border."""
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    return np.median(border[:, :3], axis=0)


def masks_for(video: np.ndarray, background: Optional[Sequence[float]] = None) -> np.ndarray:
    """[F, H, W] float {0, 1} foreground masks: alpha when present, else distance to the background."""
    if video.shape[-1] == 4:
        return (video[..., 3] > 0.5).astype(np.float32)
    bg = np.asarray(background, dtype=np.float32) if background is not None else background_from_border(video[0])
    return (np.abs(video[..., :3] - bg).max(-1) > MASK_THRESHOLD).astype(np.float32)


def clip_indices(num_frames: int, clip_frames: int, stride: int, phase: int) -> np.ndarray:
    idx = phase + stride * np.arange(clip_frames)
    if idx[-1] >= num_frames:
        raise DataFormatError(f"a {clip_frames}-frame clip at stride {stride} from frame {phase} needs "
                              f"{idx[-1] + 1} frames, the video has {num_frames}")
    return idx


class MVVideoDataset(Dataset):
    """Clips of MV-Video data with masks, cameras, query grids and (optionally) tracks.

    Item (tensors): video [V, F, 3, H, W] in [-1, 1], mask [V, F, H, W], w2c [V, 4, 4], K [V, 3, 3],
    frame_indices [F], queries [V, P, 2], query_valid [V, P], and with a tracker
    tracks [V, F, P, 2] / track_vis [V, F, P]; plus "prompt" (str) and "index" (int).
    ``phase=None`` draws Animate3D's random phase from ``seed``+epoch+index, so an epoch is
    reproducible (exact resume) yet phases vary across epochs.
    """

    def __init__(
        self,
        info_path: str | Path,
        clip_frames: int = CLIP_FRAMES,
        stride: int = CLIP_STRIDE,
        resolution: Optional[int] = None,
        tracker: Optional[Tracker] = None,
        phase: Optional[int] = None,
        seed: int = 0,
        num_views: int = 4,
        grid_size: int = GRID_SIZE,
    ) -> None:
        self.info_path = Path(info_path)
        self.entries = load_info(self.info_path, num_views)
        self.clip_frames, self.stride = clip_frames, stride
        self.resolution = resolution
        self.tracker = tracker
        self.phase = phase
        self.seed = seed
        self.epoch = 0
        self.grid_size = grid_size
        self.cache = TrackCache(self.info_path.parent)

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def cameras(self, i: int, height: int, width: int) -> list[Camera]:
        e = self.entries[i]
        if height != width:
            raise DataFormatError(f"MV-Video frames must be square, got {height}x{width}")
        return mvvideo_cameras(e.elevation, e.azi_start, height, len(e.paths))

    def _views(self, i: int) -> np.ndarray:
        vids = [_read_video(str(p)) for p in self.entries[i].paths]
        shapes = {v.shape for v in vids}
        if len(shapes) != 1:
            raise DataFormatError(f"views of entry {i} differ in shape: {sorted(shapes)}")
        return np.stack(vids)  # [V, F_all, H, W, C]

    def _phase(self, i: int, num_frames: int) -> int:
        n = num_frames - (self.clip_frames - 1) * self.stride
        if n < 1:
            raise DataFormatError(f"entry {i} has {num_frames} frames, fewer than a {self.clip_frames}-frame "
                                  f"clip at stride {self.stride} needs")
        if self.phase is not None:
            return int(self.phase)
        g = np.random.default_rng([self.seed, self.epoch, i])
        return int(g.integers(n))

    def __getitem__(self, i: int) -> dict[str, Any]:
        e = self.entries[i]
        views = self._views(i)
        V, F_all, H, W, _ = views.shape
        idx = clip_indices(F_all, self.clip_frames, self.stride, self._phase(i, F_all))
        clip = views[:, idx]
        masks = np.stack([masks_for(clip[v], e.background) for v in range(V)])  # [V, F, H, W]
        rgb = clip[..., :3]
        if clip.shape[-1] == 4:  # RGBA frames: the model sees RGB composited on the solid background
            bg = np.asarray(e.background if e.background is not None else GREY, dtype=np.float32)
            a = clip[..., 3:4]
            rgb = rgb * a + bg * (1.0 - a)
        cams = self.cameras(i, H, W)
        queries, valid = grid_queries(masks[:, 0], self.grid_size)
        item: dict[str, Any] = {
            "video": torch.from_numpy(rgb * 2.0 - 1.0).permute(0, 1, 4, 2, 3).contiguous(),
            "mask": torch.from_numpy(masks),
            "w2c": torch.from_numpy(np.stack([c.w2c for c in cams])).float(),
            "K": torch.from_numpy(np.stack([c.K for c in cams])).float(),
            "frame_indices": torch.from_numpy(idx),
            "queries": torch.from_numpy(queries),
            "query_valid": torch.from_numpy(valid),
            "prompt": e.prompt,
            "index": i,
        }
        if self.tracker is not None:
            ctx = ClipContext(e.clip_dir, idx.tolist())
            res, _ = self.cache.get_or_compute(self.tracker, rgb, queries, ctx)
            vis = torch.from_numpy(res.visibility)
            item["tracks"] = torch.from_numpy(res.tracks)
            item["track_vis"] = vis
            item["query_valid"] = item["query_valid"] & vis[:, 0]
        if self.resolution is not None and self.resolution != H:
            item = resize_item(item, self.resolution)
        return item


def resize_item(item: dict[str, Any], size: int) -> dict[str, Any]:
    """Resize a clip to size x size; cameras and tracks scale with it (corner pixel convention)."""
    import torch.nn.functional as F

    V, T, C, H, W = item["video"].shape
    s = size / H
    out = dict(item)
    out["video"] = F.interpolate(item["video"].flatten(0, 1), (size, size), mode="bilinear",
                                 antialias=True, align_corners=False).reshape(V, T, C, size, size)
    out["mask"] = (F.interpolate(item["mask"].flatten(0, 1)[:, None], (size, size), mode="area")[:, 0] > 0.5
                   ).float().reshape(V, T, size, size)
    K = item["K"].clone()
    K[:, :2] *= s
    out["K"] = K
    out["queries"] = item["queries"] * s
    if "tracks" in item:
        out["tracks"] = item["tracks"] * s
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings/ints as lists."""
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out
