"""``python -m track4dgen.synthetic NAME JOB_DIR [--resolution R] [--frames F] [--points P] [--degrade PRESET]``:
write one synthetic job folder (with ground truth) for manual runs and benchmarks. NAME is a named
object or ``proc_<seed>``; PRESET one of ``degrade.PRESETS``."""

from __future__ import annotations

import argparse
import sys

from .degrade import PRESETS
from .objects import list_heldout, list_objects
from .procedural import seed_of
from .writer import write_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m track4dgen.synthetic", description=__doc__)
    parser.add_argument("name", help=f"one of {list_objects()} or proc_<seed> (held-out: {list_heldout()})")
    parser.add_argument("job_dir")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--points", type=int, default=512, help="number of ground-truth track points")
    parser.add_argument("--degrade", choices=sorted(PRESETS), default=None, help="make the input videos look generated")
    args = parser.parse_args(argv)
    if args.name not in list_objects() and seed_of(args.name) is None:
        parser.error(f"unknown object {args.name!r}: choose one of {list_objects()} or proc_<seed>")
    path = write_job(args.name, args.job_dir, resolution=args.resolution, frames=args.frames, num_points=args.points,
                     degrade=PRESETS[args.degrade] if args.degrade else None)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
