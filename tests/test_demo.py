"""`track4dgen demo` end to end (tiny settings): a synthetic job becomes a complete result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from track4dgen.job import is_complete_result


def test_demo_writes_a_complete_result(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "track4dgen", "demo", "--out", str(tmp_path), "--resolution", "24", "--iters", "6"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["stage"] == "demo"
    assert any(e.get("stage") == "stage2" for e in events)
    # stdout is a pipe, not a terminal: JSON lines, with plain stage names and one overall fraction
    fitting = [e for e in events if e.get("stage") == "stage2"]
    assert {e["label"] for e in fitting} == {"Fitting 4D Gaussians"}
    overall = [e["overall"] for e in events if "overall" in e]
    assert overall == sorted(overall) and overall[-1] == 1.0
    result = Path(events[-1]["result"])
    assert is_complete_result(result)
    with np.load(result / "gaussians4d.npz") as z:
        assert z["frame_means"].shape[0] == 16 and np.isfinite(z["frame_means"]).all()
    assert len(list((result / "videos").glob("render_view*.mp4"))) == 4
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["stages"] == ["stage2"] and metrics["iterations"] == 6
