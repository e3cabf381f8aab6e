"""``python -m track4dgen.synthetic NAME JOB_DIR [--resolution R] [--frames F] [--points P]``:
write one synthetic job folder (with ground truth) for manual runs and benchmarks."""

from __future__ import annotations

import argparse
import sys

from .objects import list_objects
from .writer import write_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m track4dgen.synthetic", description=__doc__)
    parser.add_argument("name", choices=list_objects())
    parser.add_argument("job_dir")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--points", type=int, default=512, help="number of ground-truth track points")
    args = parser.parse_args(argv)
    path = write_job(args.name, args.job_dir, resolution=args.resolution, frames=args.frames, num_points=args.points)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
