"""`track4dgen doctor`: report what this installation can do, so support questions start with facts."""

from __future__ import annotations

import importlib.util
import json
import platform
import sys


def main(argv: list[str] | None = None) -> int:
    import torch

    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gsplat": importlib.util.find_spec("gsplat") is not None,
        "rasterizer": "gsplat" if torch.cuda.is_available() and importlib.util.find_spec("gsplat") else "torch (CPU)",
    }
    try:
        from .stage1.weights import weights_status  # type: ignore[attr-defined]

        report["weights"] = weights_status()
    except Exception as exc:  # weights are optional for Stage-Two-only jobs
        report["weights"] = f"unavailable: {exc}"
    print(json.dumps(report, indent=1, default=str))
    return 0
