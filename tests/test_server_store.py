"""The durable job store and worker plumbing, without HTTP: atomic claims, crash recovery limits,
idempotency, per-worker GPU assignment."""

from __future__ import annotations

import os
import threading
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
    assert recover_interrupted(store, settings) == ["f" * 32]
    row = store.get("f" * 32)
    assert row["state"] == "queued" and row["interruptions"] == 1
    store.claim_next(0)
    assert recover_interrupted(store, settings) == []  # second crash with max_attempts=2: give up
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
