"""Side-by-side image: the add-on's Cycles render of a result frame next to the backend's own
render (Stage Two's rasterizer) from the same camera, and their difference.

    python docs/images/render_splat_comparison.py RESULT_DIR [--frame 8] [--size 256] [--samples 32]

Writes docs/images/splats_vs_backend.png and prints the PSNR. The backend runs in a subprocess of
this project's venv Python (the add-on itself never imports torch); see
tests/blender/splat_compare.py for how both renders are set up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "blender")]

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from splat_compare import backend_render, blender_render, psnr  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("result", type=Path)
    p.add_argument("--frame", type=int, default=8, help="result frame (0-based)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--azimuth", type=float, default=30.0)
    p.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the backend's Python")
    p.add_argument("--out", type=Path, default=HERE / "splats_vs_backend.png")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        blender, cams = blender_render(args.result, tmp / "blender.png", args.frame, args.size, args.azimuth, args.samples)
        backend = backend_render(args.python, args.result, cams, args.frame, tmp / "backend.npy")
    diff = np.clip(np.abs(blender - backend) * 4.0, 0.0, 1.0)
    row = np.concatenate([blender, backend, 1.0 - diff], axis=1)
    label_h = 22
    canvas = Image.new("RGB", (row.shape[1], row.shape[0] + label_h), "white")
    canvas.paste(Image.fromarray((row * 255).round().astype(np.uint8)), (0, label_h))
    draw = ImageDraw.Draw(canvas)
    db = psnr(blender, backend)
    for i, text in enumerate(("Blender (Cycles, add-on)", "backend (Stage Two)", f"|difference| x4 (PSNR {db:.1f} dB)")):
        draw.text((i * args.size + 6, 5), text, fill=(0, 0, 0))
    canvas.save(args.out)
    print(f"wrote {args.out}: frame {args.frame}, {args.size} px, PSNR {db:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else None))
