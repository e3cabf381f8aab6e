"""Durability with the real runner: graceful stop, then ``kill -9`` of the server mid-job, then a
restart -- the job resumes from its Stage Two checkpoint each time, completes, and nothing is lost.

The server runs each job as ``python -m track4dgen run`` (Stage Two only here: a synthetic job with
given videos), so this exercises the real worker, the real runner and Stage Two's checkpoints.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
import zipfile
from pathlib import Path

from test_server_support import TOKENS, Server, tiny_job, write_tokens, zip_dir


def _pid_alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def _wait_for_step(srv: Server, job_id: str, token: str, min_step: int, ckpt: Path) -> int:
    """Wait until Stage Two reports ``min_step`` and a checkpoint exists; returns the runner's pid."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = srv.request("GET", f"/v1/jobs/{job_id}", token)[1]
        progress = job["progress"] or {}
        if job["state"] == "running" and progress.get("stage") == "stage2" and progress["step"] >= min_step and ckpt.is_file():
            with sqlite3.connect(srv.data / "state.db") as con:
                pid = con.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            assert pid and _pid_alive(pid)
            return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no Stage Two progress/checkpoint: {job}\n{srv.log.read_text()[-2000:]}")


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(pid), "the runner outlived the server"


def _stage2_steps_after(events: str, marker: str) -> list[int]:
    tail = events[events.index(marker):]
    return [json.loads(line[6:])["step"] for line in tail.splitlines()
            if line.startswith("data: {\"stage\": \"stage2\"")]


def test_stop_and_kill9_mid_job_then_restart_completes_every_accepted_job(tmp_path: Path) -> None:
    token = TOKENS["alice"]
    tokens = write_tokens(tmp_path / "tokens.txt")
    data = tmp_path / "data"
    # long enough that a resumed run is still going when the test looks (a quiet 2-core CPU runs
    # these tiny iterations in ~10 ms each)
    iters = 80
    long_zip = zip_dir(tiny_job(tmp_path / "long", {"iters_rec": iters}))

    # 1. graceful stop (SIGINT) while the job runs: it goes back to the queue, not to "failed"
    srv = Server(data, tokens, "--workers", "1").start()
    try:
        s1, first = srv.submit(long_zip, token)
        s2, second = srv.submit(long_zip, token)  # stays queued through both restarts
        assert (s1, s2) == (202, 202)
        ckpt = data / "jobs" / first["id"] / "checkpoints" / "stage2_latest.pt"
        pid = _wait_for_step(srv, first["id"], token, 3, ckpt)
    finally:
        srv.stop()
    _wait_gone(pid)
    with sqlite3.connect(data / "state.db") as con:
        state, interruptions = con.execute("SELECT state, interruptions FROM jobs WHERE id = ?", (first["id"],)).fetchone()
    assert (state, interruptions) == ("queued", 0)

    # 2. restart, let it resume, then kill -9 the server mid-job
    srv = Server(data, tokens, "--workers", "1").start()
    try:
        pid = _wait_for_step(srv, first["id"], token, 8, ckpt)
        srv.kill9()
    finally:
        srv.stop()
    _wait_gone(pid)  # PR_SET_PDEATHSIG: no orphan keeps writing the job's folders
    assert not (data / "jobs" / first["id"] / "result" / "COMPLETE").exists()
    # damage the queued job's stored input while the server is down: its run must fail with the
    # runner's own error (not hang, not vanish)
    (data / "jobs" / second["id"] / "input" / "mesh.glb").unlink()

    # 3. restart: the interrupted job completes from its checkpoint, the queued one is still there
    srv = Server(data, tokens, "--workers", "1").start()
    try:
        jobs = {j["id"]: j for j in srv.request("GET", "/v1/jobs", token)[1]["jobs"]}
        assert set(jobs) == {first["id"], second["id"]}  # no accepted job lost
        assert jobs[second["id"]]["state"] == "queued" and jobs[second["id"]]["attempts"] == 0
        done1 = srv.wait_state(first["id"], token, ("succeeded", "failed"), timeout=180)
        assert done1["state"] == "succeeded", (done1, srv.log.read_text()[-3000:])
        assert done1["attempts"] == 3
        status, raw = srv.request("GET", f"/v1/jobs/{first['id']}/result", token)
        assert status == 200
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = set(zf.namelist())
            metrics = json.loads(zf.read("metrics.json"))
        assert {"COMPLETE", "gaussians4d.npz", "metrics.json", "videos/render_view0.mp4"} <= names
        assert metrics["resumed_from"] >= 6  # the checkpoint before kill -9 (progress 8 is reported before its save)
        text = srv.request("GET", f"/v1/jobs/{first['id']}/events", token)[1].decode()
        assert "event: error" not in text  # the graceful stop did not look like a failure to clients
        assert str(data) not in text and str(data) not in json.dumps(done1)  # no server path reaches clients
        assert done1["progress"]["result"] == "result"
        after_stop = _stage2_steps_after(text, "re-queued: the server is shutting down")
        after_kill = _stage2_steps_after(text, "re-queued after a server restart")
        assert after_stop[0] > 1 and after_kill[0] > 1  # both runs resumed, neither restarted at step 1
        assert after_kill[-1] == iters and text.rstrip().endswith('data: {"state": "succeeded"}')

        done2 = srv.wait_state(second["id"], token, ("succeeded", "failed"), timeout=120)
        assert done2["state"] == "failed" and done2["error"]["error"] == "missing_file"
        assert "mesh.glb" in done2["error"]["message"] and done2["error"]["hint"]
        events2 = srv.request("GET", f"/v1/jobs/{second['id']}/events", token)[1].decode()
        assert "event: error\ndata: {\"error\": \"missing_file\"" in events2
        assert srv.request("GET", f"/v1/jobs/{second['id']}/result", token)[0] == 409
    finally:
        srv.stop()
