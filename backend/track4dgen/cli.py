"""`track4dgen` command line: run · demo · serve · weights · eval · doctor.

Each sub-command lives in its own module with a ``main(argv) -> int``; this file only dispatches,
so importing the CLI stays cheap (torch is imported by the sub-command that needs it).
"""

from __future__ import annotations

import importlib
import os
import sys

# Spinning OpenMP workers starve each other on small CPU machines (a 35 ms render became 0.2-4 s
# on a busy 2-core box); passive waiting keeps timings steady. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("track4dgen.runner", "run a job folder (Stage One and/or Stage Two) and write its result"),
    "demo": ("track4dgen.demo", "build a synthetic animated object job and run it"),
    "serve": ("track4dgen.server.cli", "HTTP job server for remote GPU machines"),
    "weights": ("track4dgen.stage1.weights_cli", "download | path | verify pretrained weights"),
    "eval": ("track4dgen.eval.cli", "evaluate a result folder (paper metrics, synthetic ground truth)"),
    "doctor": ("track4dgen.doctor", "check this installation (torch, device, rasterizer, weights)"),
}


def usage() -> str:
    lines = ["usage: track4dgen COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`track4dgen COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"track4dgen: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from .lifeline import watch_stdin

    watch_stdin()  # started from the Blender add-on: stop when Blender is gone
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
