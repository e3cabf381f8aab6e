"""``track4dgen weights download | path | verify | convert | init-tiny``.

download   fetch the released Animate3D model's parts into the Hugging Face cache
path       show where each part is cached (or that it is missing) and the cache folder
verify     check every key and shape of the weights against the model (no GPU needed)
convert    merge the hub parts into one local folder (safetensors) for offline machines
init-tiny  write a tiny model with random weights (tests, CPU demo, trainer start point)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="track4dgen weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("download", help="download the animate3d weights into the Hugging Face cache")
    sub.add_parser("path", help="show cache locations")
    v = sub.add_parser("verify", help="strict key/shape check")
    v.add_argument("source", nargs="?", default="animate3d", help="'animate3d' (hub cache) or a local MV-VDM folder")
    c = sub.add_parser("convert", help="merge hub parts into one local folder")
    c.add_argument("--out", required=True, type=Path)
    t = sub.add_parser("init-tiny", help="write a random tiny model folder")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .weights import HUB_SOURCES, WeightsError, fetch_sources, from_pretrained, hub_offline, save_pretrained, verify

    try:
        if args.cmd == "download":
            if hub_offline():
                print("HF_HUB_OFFLINE is set: unset it to download.", file=sys.stderr)
                return 1
            for part, folder in fetch_sources(local_files_only=False).items():
                print(f"{part:<11} {folder}")
            return 0
        if args.cmd == "path":
            from huggingface_hub import constants

            print(f"cache      {constants.HF_HUB_CACHE}")
            missing = 0
            for src in HUB_SOURCES:
                try:
                    folder = fetch_sources(local_files_only=True, sources=[src])[src.part]
                    print(f"{src.part:<11} {folder}")
                except WeightsError:
                    missing += 1
                    print(f"{src.part:<11} not downloaded ({src.repo_id})")
            if missing:
                print("run `track4dgen weights download` to fetch the missing parts")
            return 0
        if args.cmd == "verify":
            rep = verify(args.source)
            print(rep.format())
            print("OK" if rep.ok else "FAILED")
            return 0 if rep.ok else 1
        if args.cmd == "convert":
            comp = from_pretrained("animate3d")
            print(save_pretrained(comp, args.out))
            return 0
        if args.cmd == "init-tiny":
            from .components import build_components
            from .config import get_config

            print(save_pretrained(build_components(get_config("tiny"), seed=args.seed), args.out))
            return 0
    except WeightsError as exc:
        print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
