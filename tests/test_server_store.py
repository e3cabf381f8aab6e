"""The durable job store and worker plumbing, without HTTP: atomic claims, crash recovery limits,
idempotency, per-worker GPU assignment."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from track4dgen.server.store import JobStore, QueueFull
from track4dgen.server.worker import JobPaths, Worker, WorkerSettings, recover_interrupted, remove_expired


def test_each_queued_job_is_claimed_by_exactly_one_worker(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state.db")
    for i in range(12):
        store.create(f"{i:032x}", "owner", None, max_active=0)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        while (row := store.claim_next(k)) is not None:
            with lock:
                claimed.append(row["id"])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == [f"{i:032x}" for i in range(12)]  # each once, none twice
    assert store.counts() == {"running": 12}


def test_queue_limit_and_idempotency_are_atomic_in_one_transaction(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state.db")
    row, created = store.create("a" * 32, "o1", "k1", max_active=2)
    again, created2 = store.create("b" * 32, "o1", "k1", max_active=2)
    assert created and not created2 and again["id"] == row["id"]
    store.create("c" * 32, "o1", None, max_active=2)
    with pytest.raises(QueueFull):
        store.create("d" * 32, "o1", None, max_active=2)
    store.create("e" * 32, "o2", "k1", max_active=2)  # keys and limits are per owner
    assert store.active_count("o1") == 2 and store.active_count("o2") == 1


def test_recovery_requeues_interrupted_jobs_then_gives_up_on_crash_loops(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state.db")
    settings = WorkerSettings(data_dir=tmp_path, max_attempts=2)
    store.create("f" * 32, "o", None, max_active=0)
    store.claim_next(0)  # "the server died while running it"
    assert recover_interrupted(store, settings) == (["f" * 32], [])
    row = store.get("f" * 32)
    assert row["state"] == "queued" and row["interruptions"] == 1
    store.claim_next(0)
    assert recover_interrupted(store, settings) == ([], ["f" * 32])  # second crash with max_attempts=2: give up (logged)
    row = store.get("f" * 32)
    assert row["state"] == "failed" and "interrupted 2 times" in JobStore.to_public(row)["error"]["message"]
    # a graceful shutdown's requeue does not count as an interruption
    store.create("9" * 32, "o", None, max_active=0)
    store.claim_next(0)
    store.requeue("9" * 32, "shutdown")
    assert store.get("9" * 32)["interruptions"] == 0


def test_retention_removes_files_of_finished_jobs_only(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state.db")
    for jid in ("1" * 32, "2" * 32):
        store.create(jid, "o", None, max_active=0)
        JobPaths(tmp_path, jid).input.mkdir(parents=True)
    store.claim_next(0)
    store.finish("1" * 32, "succeeded")
    assert remove_expired(store, tmp_path, retention_s=3600) == []
    assert remove_expired(store, tmp_path, retention_s=0) == ["1" * 32]
    assert not JobPaths(tmp_path, "1" * 32).root.exists() and JobPaths(tmp_path, "2" * 32).input.is_dir()
    assert store.get("1" * 32)["state"] == "expired" and store.get("2" * 32)["state"] == "queued"
    assert [e["state"] for _, e in store.events_since("1" * 32, 0)] == ["expired"]


def test_workers_get_one_gpu_each_and_never_the_servers_tokens(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRACK4DGEN_TOKENS", "secret-token-0123456789")
    store = JobStore(tmp_path / "state.db")
    stop = threading.Event()
    settings = WorkerSettings(data_dir=tmp_path, devices=["0", "1"])
    envs = [Worker(i, store, settings, stop)._env() for i in range(3)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
    assert all("TRACK4DGEN_TOKENS" not in e for e in envs)
    assert os.environ["TRACK4DGEN_TOKENS"]  # the server's own environment is untouched


# -- issue 16: database faults, run limits, re-queue progress ----------------------------------------

class FullDiskStore(JobStore):
    """The real store, whose writes fail like SQLite on a full disk while ``full`` is set."""

    full = False

    def _write(self, durable: bool = True):
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return super()._write(durable)


def _broken_job(data: Path, store: JobStore, job_id: str) -> None:
    """A stored job whose input has no mesh: the real runner fails it within a second."""
    from test_server_support import tiny_job

    store.create(job_id, "o", None, max_active=0)
    tiny_job(JobPaths(data, job_id).root / "src")
    os.replace(JobPaths(data, job_id).root / "src", JobPaths(data, job_id).input)
    (JobPaths(data, job_id).input / "mesh.glb").unlink()


def _wait(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_worker_survives_a_full_disk_retries_and_fails_the_job_clearly(tmp_path: Path) -> None:
    store = FullDiskStore(tmp_path / "state.db")
    _broken_job(tmp_path, store, "a" * 32)
    _broken_job(tmp_path, store, "b" * 32)
    stop = threading.Event()
    worker = Worker(0, store, WorkerSettings(data_dir=tmp_path, poll_interval_s=0.05, db_retry_s=0.05), stop)
    store.full = True  # the disk fills up ...
    worker.start()
    try:
        _wait(lambda: worker.db_error is not None)  # claiming fails: the worker reports it and keeps trying
        store.full = False
        _wait(lambda: worker.current == "a" * 32)
        store.full = True  # ... while the job runs: its events and its final state cannot be written
        time.sleep(2.0)
        assert worker.is_alive() and "database or disk is full" in worker.db_error
        assert store.get("a" * 32)["state"] == "running"
        store.full = False  # space is freed: the retried writes go through, the queue moves on
        _wait(lambda: store.get("b" * 32)["state"] in ("failed", "succeeded"))
    finally:
        stop.set()
        worker.join(30)
    for jid in ("a" * 32, "b" * 32):
        error = JobStore.to_public(store.get(jid))["error"]
        assert store.get(jid)["state"] == "failed" and error["error"] in ("missing_file", "server_error"), error
        assert str(tmp_path) not in json.dumps(error)  # no server path in what clients see
    assert worker.db_error is None
    # b's runner error came through the event stream, path-free
    errors = [e for _, e in store.events_since("b" * 32, 0) if "error" in e]
    assert errors and errors[0]["error"] == "missing_file" and "mesh" in errors[0]["message"]


def test_health_reports_dead_workers_database_errors_and_low_disk(tmp_path: Path) -> None:
    from track4dgen.server.app import health_problems

    store = JobStore(tmp_path / "state.db")
    stop = threading.Event()
    dead = Worker(0, store, WorkerSettings(data_dir=tmp_path), stop)  # never started: not alive
    assert health_problems([dead], 1, 10 << 30, 1 << 20) == ["1 of 1 worker(s) stopped; restart the server"]
    dead.db_error = "finishing job x: database or disk is full"
    problems = health_problems([dead], 1, 100, 1 << 20)
    assert any("database or disk is full" in p for p in problems) and any("only 100 bytes free" in p for p in problems)


@pytest.mark.parametrize("limit", ["time", "memory"])
def test_runs_over_the_time_or_memory_limit_are_stopped_and_failed(tmp_path: Path, limit: str) -> None:
    from test_server_support import tiny_job

    store = JobStore(tmp_path / "state.db")
    jid = "c" * 32
    store.create(jid, "o", None, max_active=0)
    tiny_job(tmp_path / "src", {"iters_rec": 100_000})  # hours on a CPU
    JobPaths(tmp_path, jid).root.mkdir(parents=True)
    os.replace(tmp_path / "src", JobPaths(tmp_path, jid).input)
    settings = WorkerSettings(data_dir=tmp_path, poll_interval_s=0.05, kill_grace_s=1.0,
                              max_job_s=2.0 if limit == "time" else 0.0,
                              max_job_rss_bytes=150 << 20 if limit == "memory" else 0)  # torch alone needs more
    stop = threading.Event()
    worker = Worker(0, store, settings, stop)
    worker.start()
    try:
        _wait(lambda: store.get(jid)["state"] == "failed", timeout=90)
    finally:
        stop.set()
        worker.join(30)
    error = JobStore.to_public(store.get(jid))["error"]
    assert error["error"] == f"{limit}_limit" and ("--max-job-minutes" if limit == "time" else "--max-job-memory-gb") in error["hint"]


def test_requeued_and_reclaimed_jobs_show_no_stale_progress(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state.db")
    store.create("d" * 32, "o", None, max_active=0)
    store.claim_next(0)
    store.add_event("d" * 32, {"stage": "stage2", "step": 90, "total": 100, "message": "", "eta_s": 1})
    assert JobStore.to_public(store.get("d" * 32))["progress"]["step"] == 90
    store.requeue("d" * 32, "re-queued")
    assert JobStore.to_public(store.get("d" * 32))["progress"] is None
    store.add_event("d" * 32, {"stage": "stage2", "step": 90, "total": 100, "message": "", "eta_s": 1})
    store.claim_next(0)
    assert JobStore.to_public(store.get("d" * 32))["progress"] is None


def test_scrub_paths_hides_server_folders() -> None:
    from track4dgen.server.worker import job_path_names, scrub_paths

    paths = JobPaths(Path("/srv/t4d"), "e" * 32)
    names = job_path_names(paths, Path("/srv/t4d"))
    event = {"stage": "export", "result": str(paths.result),
             "message": f"conditioning view 1 {paths.input}/views/1.png is missing; see /usr/lib/python3.11/x.py line 3",
             "nested": [f"{paths.root}/runner.log", "https://example.com/a/b"]}
    out = scrub_paths(event, names)
    assert out == {"stage": "export", "result": "result",
                   "message": "conditioning view 1 views/1.png is missing; see x.py line 3",
                   "nested": ["runner.log", "https://example.com/a/b"]}
