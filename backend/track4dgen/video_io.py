"""Image and video files: RGBA PNG frame folders in, MP4 out.

Kept in one place so the runner, Stage Two, evaluation and training read and write frames the
same way (float32 in [0, 1], channels last).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def read_rgba(path: str | Path) -> np.ndarray:
    """PNG -> float32 [H, W, 4] in [0, 1]; images without alpha get an opaque alpha."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return arr


def write_rgba(path: str | Path, image: np.ndarray, compress_level: int | None = None) -> None:
    """float [H, W, 3|4] in [0, 1] -> 8-bit PNG.

    ``compress_level`` (0-9) trades file size for speed; None keeps Pillow's default (6). Bulk
    writers such as the synthetic data sets pass 1: the pixels are the same (PNG is lossless).
    """
    from PIL import Image

    arr = np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    options = {} if compress_level is None else {"compress_level": int(compress_level)}
    Image.fromarray(arr, mode="RGBA" if arr.shape[-1] == 4 else "RGB").save(path, **options)


def read_frame_folders(paths: Sequence[Sequence[Path]]) -> np.ndarray:
    """[[view0 frame paths], [view1 ...], ...] -> float32 [V, F, H, W, 4]."""
    return np.stack([np.stack([read_rgba(p) for p in frames]) for frames in paths])


def composite(rgba: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """Alpha-composite straight RGBA [..., 4] over a solid background -> RGB [..., 3]."""
    a = rgba[..., 3:4]
    return rgba[..., :3] * a + np.asarray(background, dtype=rgba.dtype) * (1.0 - a)


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8) -> None:
    """float [F, H, W, 3] in [0, 1] (or uint8) -> H.264 MP4 via imageio-ffmpeg.

    macro_block_size=1 keeps tiny test resolutions (e.g. 32x32) exactly as rendered.
    """
    import imageio.v2 as imageio

    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    h, w = arr.shape[1:3]
    if h % 2 or w % 2:  # H.264 in yuv420p needs even sizes: repeat the last row/column
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for frame in arr:
            writer.append_data(frame[..., :3])


def read_mp4(path: str | Path, keep_alpha: bool = False) -> np.ndarray:
    """MP4 (or any video imageio decodes) -> float32 [F, H, W, 3] in [0, 1].

    ``keep_alpha`` keeps a fourth channel when the decoder returns one ([F, H, W, 4]); MP4 from
    ffmpeg is always RGB, so this only matters for other containers.
    """
    import imageio.v2 as imageio

    channels = slice(None) if keep_alpha else slice(0, 3)
    with imageio.get_reader(str(path)) as reader:
        return np.stack([np.asarray(f, dtype=np.float32)[..., channels] / 255.0 for f in reader])
