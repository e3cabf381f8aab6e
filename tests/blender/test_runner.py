"""The job runner: non-blocking polling of a subprocess speaking the backend's line protocol.

These use a small stand-in script for speed (the real backend is exercised in
test_backend_e2e.py); the script prints the same JSON progress/error lines `track4dgen run` does.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from addon import runner
from addon.errors import AddonError

FAKE_BACKEND = textwrap.dedent(
    '''
    import json, sys, time, pathlib, numpy as np
    mode, out = sys.argv[1], pathlib.Path(sys.argv[2])
    def emit(**e): print(json.dumps(e), flush=True)
    print("some library warning that is not JSON", flush=True)
    if mode == "ok":
        for i in range(1, 4):
            emit(stage="stage2", step=i, total=3, message=f"loss {1.0 / i:.3f}", eta_s=float(3 - i))
        out.mkdir(parents=True)
        np.savez(out / "gaussians4d.npz", x=np.zeros(1))
        (out / "COMPLETE").write_text("{}")
    elif mode == "error":
        emit(stage="validate", step=0, total=1, message="checking", eta_s=None)
        emit(error="bad_image", message="conditioning view 2 has no alpha channel", hint="Render with a transparent film.")
        sys.exit(1)
    elif mode == "crash":
        print("Traceback (most recent call last):\\nRuntimeError: out of memory", file=sys.stderr, flush=True)
        sys.exit(3)
    elif mode == "slow":
        for i in range(1000):
            emit(stage="stage1", step=i, total=1000, message="sampling", eta_s=100.0)
            time.sleep(0.05)
    elif mode == "nocomplete":
        emit(stage="stage2", step=1, total=1, message="done?", eta_s=0.0)
    '''
)


def _job(tmp_path: Path, mode: str) -> runner.BackendJob:
    script = tmp_path / "fake_backend.py"
    script.write_text(FAKE_BACKEND)
    job_dir = tmp_path / "job"
    return runner.BackendJob(sys.executable, job_dir, job_dir / "result",
                             command=[sys.executable, str(script), mode, str(job_dir / "result")])


def test_parse_line():
    assert runner.parse_line('{"stage": "stage2", "step": 1}') == {"stage": "stage2", "step": 1}
    assert runner.parse_line("warning: foo") == {"log": "warning: foo"}
    assert runner.parse_line("{broken") == {"log": "{broken"}
    assert runner.parse_line("   ") is None


def test_success_reports_progress_and_completes(tmp_path):
    job = _job(tmp_path, "ok").start()
    seen = []
    assert job.wait(timeout=60, on_event=seen.append) == runner.DONE
    stages = [e for e in seen if "stage" in e]
    assert [e["step"] for e in stages] == [1, 2, 3]
    assert {"log": "some library warning that is not JSON"} in seen
    assert job.progress.step == 3 and job.progress.total == 3 and job.progress.fraction == 1.0
    assert job.progress.message == "loss 0.333" and job.progress.eta_s == 0.0
    assert job.error is None and runner.is_complete_result(job.result_dir)


def test_poll_never_blocks(tmp_path):
    job = _job(tmp_path, "slow").start()
    try:
        t0 = time.perf_counter()
        for _ in range(20):
            job.poll()
        assert time.perf_counter() - t0 < 0.5, "poll() must return immediately while the backend runs"
        assert job.status == runner.RUNNING
    finally:
        job.cancel()


def test_backend_error_event_is_reported(tmp_path):
    job = _job(tmp_path, "error").start()
    assert job.wait(timeout=60) == runner.FAILED
    assert job.error.code == "bad_image"
    assert "alpha" in job.error.message and "transparent" in job.error.hint


def test_crash_keeps_log_and_names_it(tmp_path):
    job = _job(tmp_path, "crash").start()
    assert job.wait(timeout=60) == runner.FAILED
    assert job.error.code == "backend_crashed"
    assert "code 3" in job.error.message and "out of memory" in job.error.message
    assert str(job.log_path) in job.error.hint
    assert "RuntimeError: out of memory" in job.log_path.read_text()


def test_exit_zero_without_result_is_a_failure(tmp_path):
    job = _job(tmp_path, "nocomplete").start()
    assert job.wait(timeout=60) == runner.FAILED
    assert job.error.code == "incomplete_result"


def test_cancel_terminates_the_process_quickly(tmp_path):
    job = _job(tmp_path, "slow").start()
    deadline = time.monotonic() + 30
    while job.progress.step < 2 and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    assert job.progress.stage == "stage1" and job.progress.step >= 2
    t0 = time.perf_counter()
    job.cancel()
    assert time.perf_counter() - t0 < 5.0
    assert job.status == runner.CANCELLED and job.error is None
    assert job.proc.poll() is not None, "the backend process must be gone"
    job.cancel()  # idempotent
    assert job.status == runner.CANCELLED


def test_wait_timeout_cancels(tmp_path):
    job = _job(tmp_path, "slow").start()
    with pytest.raises(AddonError, match="did not finish"):
        job.wait(timeout=0.5)
    assert job.proc.poll() is not None


def test_missing_interpreter_gives_clear_error(tmp_path):
    with pytest.raises(AddonError) as info:
        runner.backend_python_or_raise(str(tmp_path / "no" / "python"))
    assert info.value.code == "backend_missing"
    assert "does not exist" in info.value.message and "Preferences" in info.value.hint
    with pytest.raises(AddonError, match="backend is not installed") as info:
        runner.backend_python_or_raise("")
    assert "Set Up Backend" in info.value.hint
    # an interpreter without the backend installed is named as such
    bare = tmp_path / "bare-python"  # an interpreter that runs but has no backend installed
    bare.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named track4dgen' >&2\nexit 1\n")
    bare.chmod(0o755)
    ok, detail = runner.python_can_import_backend(str(bare))
    assert not ok and "cannot import track4dgen" in detail and "ModuleNotFoundError" in detail
    job = runner.BackendJob(str(tmp_path / "missing-python"), tmp_path / "job")
    with pytest.raises(AddonError, match="cannot start the backend"):
        job.start()


def test_detect_prefers_env_then_repo_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK4DGEN_PYTHON", "/opt/x/python")
    assert runner.detect_backend_python(tmp_path) == "/opt/x/python"
    monkeypatch.delenv("TRACK4DGEN_PYTHON")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    assert runner.detect_backend_python(tmp_path) == str(venv / "python")


class _FakeClient:
    """Stands in for the HTTP server (the true external boundary); the real client is tested
    against the real server by the server's own tests."""

    def __init__(self, fail: bool = False):
        self.fail, self.cancelled = fail, False

    def submit(self, job_dir, idempotency_key):
        assert Path(job_dir).is_dir() and idempotency_key
        return "job-1"

    def events(self, job_id):
        yield {"stage": "server", "step": 0, "total": 0, "eta_s": None, "message": "queued", "state": "queued"}
        for i in range(1, 3):
            yield {"stage": "stage2", "step": i, "total": 2, "message": "", "eta_s": 1.0}
        if self.fail:
            yield {"error": "diverged", "message": "loss became nan", "hint": "Lower the learning rates."}

    def status(self, job_id):
        if self.fail:
            return {"state": "failed", "error": {"error": "diverged", "message": "loss became nan", "hint": "Lower the learning rates."}}
        return {"state": "succeeded"}

    def cancel(self, job_id):
        self.cancelled = True

    def download(self, job_id, dest_dir):
        dest = Path(dest_dir)
        dest.mkdir(parents=True)
        np.savez(dest / "gaussians4d.npz", x=np.zeros(1))
        (dest / "COMPLETE").write_text("{}")
        return dest


def test_remote_job_follows_events_and_downloads(tmp_path):
    (tmp_path / "job").mkdir()
    job = runner.RemoteJob(_FakeClient(), tmp_path / "job").start()
    events = []
    assert job.wait(timeout=30, on_event=events.append) == runner.DONE
    assert [e["stage"] for e in events][:2] == ["upload", "server"]
    assert runner.is_complete_result(tmp_path / "job" / "result")

    (tmp_path / "job2").mkdir()
    bad = runner.RemoteJob(_FakeClient(fail=True), tmp_path / "job2").start()
    assert bad.wait(timeout=30) == runner.FAILED
    assert bad.error.code == "diverged" and "nan" in bad.error.message


def test_remote_cancel_cancels_the_server_job(tmp_path):
    class SlowClient(_FakeClient):
        def events(self, job_id):
            for i in range(200):
                if self.cancelled:  # a real server ends the stream once the job is cancelled
                    return
                yield {"stage": "stage1", "step": i, "total": 200, "message": "", "eta_s": 10.0}
                time.sleep(0.05)

    (tmp_path / "job").mkdir()
    client = SlowClient()
    job = runner.RemoteJob(client, tmp_path / "job").start()
    deadline = time.monotonic() + 30
    while job.progress.stage != "stage1" and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    job.cancel()
    assert client.cancelled and job.status == runner.CANCELLED
    assert not (tmp_path / "job" / "result").exists()
