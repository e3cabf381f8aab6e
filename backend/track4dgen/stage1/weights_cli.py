"""``track4dgen weights download | path | verify | convert | init-tiny``.

download   fetch the released Animate3D model's parts into the Hugging Face cache (progress per part)
path       show where each part is cached (or that it is missing) and the cache folder; with --json one
           object saying whether a job with that model/source can run (offline, fast: the add-on's check)
verify     check every key and shape of the weights against the model (no GPU needed, never downloads)
convert    merge the hub parts into one local folder (safetensors) for offline machines
init-tiny  write a tiny model with random weights (tests, CPU demo, trainer start point)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="track4dgen weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="download the animate3d weights into the Hugging Face cache")
    d.add_argument("--json", action="store_true", help="progress as JSON lines (default when stdout is not a terminal)")
    w = sub.add_parser("path", help="show cache locations (offline; --json: one object saying whether a job can run)")
    w.add_argument("source", nargs="?", default="animate3d", help="'animate3d' (hub cache) or a local MV-VDM folder")
    w.add_argument("--model", default="animate3d", choices=["animate3d", "tiny"], help="the job's model")
    w.add_argument("--json", action="store_true", help="print one JSON object (ok, parts, missing, message, hint)")
    v = sub.add_parser("verify", help="strict key/shape check")
    v.add_argument("source", nargs="?", default="animate3d", help="'animate3d' (hub cache) or a local MV-VDM folder")
    v.add_argument("--json", action="store_true", help="print one JSON object (ok, report, message, hint)")
    c = sub.add_parser("convert", help="merge hub parts into one local folder")
    c.add_argument("--out", required=True, type=Path)
    t = sub.add_parser("init-tiny", help="write a random tiny model folder")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .weights import WeightsError, from_pretrained, save_pretrained, verify, weights_status

    try:
        if args.cmd == "download":
            return _download(args.json)
        if args.cmd == "path":
            status = weights_status(args.source, args.model)
            if args.json:
                print(json.dumps(status))
                return 0
            print(f"cache      {status['cache']}")
            for part, folder in status["parts"].items():
                print(f"{part:<11} {folder or 'not downloaded'}")
            print(status["message"])
            if status["hint"]:
                print(status["hint"])
            return 0
        if args.cmd == "verify":
            # never downloads: a check answers about this machine
            rep = verify(args.source, local_files_only=True)
            if args.json:
                print(json.dumps({"ok": rep.ok, "source": args.source, "report": rep.format(),
                                  "message": "weights match the model" if rep.ok else "weights do not match the model",
                                  "hint": "" if rep.ok else f"Re-download with `{DOWNLOAD_CMD}`."}))
            else:
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
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": "missing_weights", "message": str(exc), "hint": exc.hint}))
        else:
            print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    return 2


def _download(json_flag: bool) -> int:
    """Fetch each hub part in turn, reporting progress per part (bar on a terminal, else JSON)."""
    from ..job import JobError
    from ..progress import make_reporter
    from .weights import HUB_SOURCES, WeightsError, fetch_sources, hub_offline

    reporter = make_reporter(json_flag)
    if hub_offline():
        reporter.error(JobError("offline", "HF_HUB_OFFLINE is set, so nothing can be downloaded",
                                "Unset HF_HUB_OFFLINE, or copy a converted weights folder to this machine."))
        return 1
    total = len(HUB_SOURCES)
    for i, src in enumerate(HUB_SOURCES):
        reporter.update("download", i, total, f"Downloading {src.part} ({src.repo_id})")
        try:
            folder = fetch_sources(local_files_only=False, sources=[src])[src.part]
        except WeightsError as exc:
            reporter.error(JobError("download_failed", str(exc), "Check the network connection and try again; "
                                    "finished parts are kept in the cache."))
            return 1
        print(f"{src.part:<11} {folder}", file=sys.stderr)
    reporter.update("download", total, total, "All weights downloaded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
