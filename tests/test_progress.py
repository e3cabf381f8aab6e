"""Progress a person can read: the whole job's fraction and ETA, plain stage names, a bar on a
terminal and JSON lines for programs (the add-on and the server parse them)."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from track4dgen.job import ProgressReporter
from track4dgen.progress import HumanBar, Plan, job_plan, make_reporter, stage_label


def test_plan_gives_one_fraction_and_total_eta():
    plan = Plan({"stage1": 1.0, "stage2": 3.0})
    a = plan.annotate("stage1", 5, 10, eta_s=10.0, stage_elapsed_s=10.0)
    # half of a quarter of the job; 10 s left in Stage One, then 3x Stage One's 20 s
    assert a == {"overall": 0.125, "overall_eta_s": 70.0}
    b = plan.annotate("stage2", 0, 100, eta_s=None, stage_elapsed_s=0.0)
    assert b["overall"] == 0.25 and b["overall_eta_s"] is None  # no speed measured yet in this stage
    c = plan.annotate("stage1", 0, 10, eta_s=None, stage_elapsed_s=0.0)
    assert c["overall"] == 0.25, "the bar never moves back"
    assert plan.annotate("download", 1, 2, 1.0, 1.0) == {}


def test_job_plan_orders_stages():
    plan = job_plan(has_videos=False, stage1_steps=25, iters_rec=400, iters_sds=100)
    assert plan.order == ["stage1", "stage2", "export"] and abs(sum(plan.weights.values()) - 1.0) < 1e-9
    assert job_plan(has_videos=True, stage1_steps=25, iters_rec=400, iters_sds=100).order == ["stage2", "export"]


def test_reporter_events_carry_labels_and_overall():
    buf = io.StringIO()
    rep = ProgressReporter(stream=buf)
    rep.plan = Plan({"stage1": 1.0, "stage2": 1.0})
    for i in range(3):
        rep.update("stage1", i, 2, f"denoising step {i}")
        time.sleep(0.2)
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert {e["label"] for e in events} == {"Generating multi-view video"}
    assert [e["overall"] for e in events] == [0.0, 0.25, 0.5]
    assert events[0]["overall_eta_s"] is None and events[1]["overall_eta_s"] > events[2]["overall_eta_s"] > 0
    assert stage_label("stage2") == "Fitting 4D Gaussians"


def test_human_bar_draws_one_line_per_stage_and_errors_plainly():
    buf = io.StringIO()
    bar = HumanBar(buf)
    bar({"stage": "stage2", "step": 1, "total": 4, "label": "Fitting 4D Gaussians", "overall": 0.25, "overall_eta_s": 75})
    bar({"stage": "stage2", "step": 2, "total": 4, "label": "Fitting 4D Gaussians", "overall": 0.5, "overall_eta_s": 50})
    bar({"error": "diverged", "message": "loss became nan", "hint": "Lower the learning rates."})
    text = buf.getvalue()
    assert "\r" in text and "Fitting 4D Gaussians" in text and " 50%" in text and "0:50 left" in text
    assert "error: loss became nan\nhint: Lower the learning rates.\n" in text
    assert "{" not in text, "no JSON on a terminal"


def test_json_unless_a_terminal(tmp_path):
    assert isinstance(make_reporter(False, stream=io.StringIO()).stream, io.StringIO)  # not a TTY: JSON
    with open(os.devnull, "w") as devnull:
        assert make_reporter(True, stream=devnull).sink is None


def _run_in_terminal(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run a command with stdout on a pseudo-terminal, as in a shell; returns (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_demo_shows_a_progress_bar_on_a_terminal(tmp_path: Path):
    rc, out = _run_in_terminal([sys.executable, "-m", "track4dgen", "demo", "--out", str(tmp_path),
                                "--resolution", "24", "--iters", "6"])
    assert rc == 0, out[-2000:]
    assert "Fitting 4D Gaussians" in out and "100%" in out and " left" in out
    assert "demo finished" in out
    assert '{"stage"' not in out, "JSON lines only with --json or when not on a terminal"
