"""Compute and cache the tracks of every clip of an MV-Video dataset, once, before training.

    python -m training.precompute_tracks --info DATA/info.json --tracker cotracker3 [--clip-frames 16 --stride 3]

Every possible clip start (Animate3D's random phase: 48 frames, 16 at stride 3 -> 3 starts) of
every entry is tracked for the 15x15 query grid of its first frame and stored in
``DATA/.tracks_cache/<tracker>-v<version>/<content hash>.npz``; the training loader then finds
them by the same key. Shard across machines with ``--shard i --num-shards n``.
CoTracker3 code and weights are CC-BY-NC 4.0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from training.data import MVVideoDataset  # noqa: E402
from track4dgen.tracking.base import ClipContext  # noqa: E402
from training.write_mvvideo import CLIP_FRAMES, CLIP_STRIDE  # noqa: E402
from track4dgen.tracking import TRACKERS, make_tracker  # noqa: E402


def precompute(info: str | Path, tracker_name: str = "auto", clip_frames: int = CLIP_FRAMES,
               stride: int = CLIP_STRIDE, checkpoint: Optional[str] = None, shard: int = 0,
               num_shards: int = 1) -> dict:
    tracker = make_tracker(tracker_name, checkpoint)
    ds = MVVideoDataset(info, clip_frames, stride, tracker=None)
    done = cached = 0
    t0 = time.time()
    for i in range(len(ds)):
        if i % num_shards != shard:
            continue
        frames_total = ds._views(i).shape[1]
        for phase in range(frames_total - (clip_frames - 1) * stride):
            ds.phase = phase
            item = ds[i]  # no tracker attached: decodes, masks and builds the query grid only
            ctx = ClipContext(ds.entries[i].clip_dir, item["frame_indices"].tolist())
            _, hit = ds.cache.get_or_compute(tracker, _clip_rgb(ds, i, item), item["queries"].numpy(), ctx)
            done += 1
            cached += int(hit)
            print(json.dumps({"entry": i, "phase": phase, "cached": hit}), flush=True)
    return {"clips": done, "already_cached": cached, "seconds": round(time.time() - t0, 1),
            "tracker": tracker.cache_id}


def _clip_rgb(ds: MVVideoDataset, i: int, item) -> np.ndarray:
    """The exact float RGB the loader hashes ([V, F, H, W, 3] in [0, 1]), so cache keys match."""
    views = ds._views(i)
    return views[:, item["frame_indices"].numpy()][..., :3]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="precompute tracking labels for Stage One training")
    p.add_argument("--info", required=True, help="MV-Video info.json")
    p.add_argument("--tracker", default="auto", choices=TRACKERS)
    p.add_argument("--checkpoint", default=None, help="CoTracker3 checkpoint (default: HF hub cache)")
    p.add_argument("--clip-frames", type=int, default=CLIP_FRAMES)
    p.add_argument("--stride", type=int, default=CLIP_STRIDE)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    a = p.parse_args(argv)
    summary = precompute(a.info, a.tracker, a.clip_frames, a.stride, a.checkpoint, a.shard, a.num_shards)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
