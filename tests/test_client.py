"""``addon/client.py`` against the real server: submit → progress events → download, cancel,
errors carrying the server's message, and an event stream that survives a server restart.

The client is loaded straight from its file (not through the ``addon`` package, which imports
bpy), which also proves it needs nothing but the standard library.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from test_server_support import TOKENS, Server, tiny_job, write_tokens
from track4dgen.job import JobError, is_complete_result, load_job

ROOT = Path(__file__).resolve().parents[1]


def _load_client():
    spec = importlib.util.spec_from_file_location("track4dgen_remote_client", ROOT / "addon" / "client.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


client_mod = _load_client()
RemoteClient = client_mod.RemoteClient


def test_client_imports_only_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    source = (ROOT / "addon" / "client.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported <= stdlib, imported - stdlib


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client")


@pytest.fixture(scope="module")
def server(base: Path):
    srv = Server(base / "data", write_tokens(base / "tokens.txt"), "--workers", "1", "--max-upload-mb", "0.2").start()
    yield srv
    srv.stop()


def test_submit_follow_progress_and_download_a_stage2_job(server: Server, base: Path) -> None:
    job_dir = tiny_job(base / "job")
    assert (job_dir / "gt").is_dir()  # ground truth stays on the client
    client = RemoteClient(server.url, TOKENS["alice"])
    assert client.health()["status"] == "ok" and "alice" not in repr(client)
    job_id = client.submit(job_dir, idempotency_key=str(job_dir.resolve()) + ":1")  # a path is hashed into a key
    assert client.submit(job_dir, idempotency_key=str(job_dir.resolve()) + ":1") == job_id

    events = list(client.events(job_id))
    steps = [e["step"] for e in events if e.get("stage") == "stage2"]
    assert steps and steps == sorted(steps) and steps[-1] == events[[e.get("stage") for e in events].index("stage2")]["total"] == 6
    assert all({"stage", "step", "total", "message", "eta_s"} <= set(e) for e in events)
    states = [e["state"] for e in events if e["stage"] == "server"]
    assert states[0] == "queued" and "running" in states and states[-1] == "succeeded"
    assert any(e["stage"] == "export" for e in events)

    status = client.status(job_id)
    assert status["state"] == "succeeded" and status["progress"]["stage"] == "export" and status["error"] is None
    assert [j["id"] for j in client.list_jobs()] == [job_id]
    assert not (server.data / "jobs" / job_id / "input" / "gt").exists()

    dest = base / "downloaded"
    dest.mkdir()
    (dest / "stale.txt").write_text("old result")  # replaced in one rename
    assert client.download(job_id, dest) == dest
    assert is_complete_result(dest) and not (dest / "stale.txt").exists()
    with np.load(dest / "gaussians4d.npz") as z:
        assert z["means"].shape == (100, 3) and z["frame_means"].shape == (2, 100, 3)
        assert np.isfinite(z["frame_means"]).all()
    metrics = json.loads((dest / "metrics.json").read_text())
    assert metrics["iterations"] == 6 and not metrics["tracks_used"]


def test_a_job_with_tracks_is_fitted_with_them_on_the_server(server: Server, base: Path) -> None:
    from track4dgen.synthetic import write_job
    from test_server_support import TINY_STAGE2

    job_dir = write_job("hopper", base / "tracked", resolution=16, frames=2, stage2_overrides={**TINY_STAGE2, "track_warmup_iters": 2},
                        num_points=32, tracks="noisy")
    assert (job_dir / "tracks.npz").is_file()
    client = RemoteClient(server.url, TOKENS["alice"])
    job_id = client.submit(job_dir)
    assert [e for e in client.events(job_id) if e.get("stage") == "server"][-1]["state"] == "succeeded"
    dest = client.download(job_id, base / "tracked_result")
    metrics = json.loads((dest / "metrics.json").read_text())
    assert metrics["tracks_used"] and metrics["final_losses"]["track"] >= 0
    assert not list(base.glob(".downloaded.download-*"))


def test_cancel_a_running_job_stops_its_process(server: Server, base: Path) -> None:
    client = RemoteClient(server.url, TOKENS["bob"])
    job_id = client.submit(tiny_job(base / "long", {"iters_rec": 5000, "checkpoint_every": 1000}))
    for event in client.events(job_id):
        if event.get("stage") == "stage2":
            break
    import sqlite3

    with sqlite3.connect(server.data / "state.db") as con:
        pid = con.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    assert pid and Path(f"/proc/{pid}").exists()
    t0 = time.monotonic()
    assert client.cancel(job_id)["cancel_requested"] is True
    final = client.wait(job_id, poll_s=0.05, timeout_s=30)
    assert final["state"] == "cancelled" and time.monotonic() - t0 < 15
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    with pytest.raises(client_mod.ResultNotReady) as err:
        client.download(job_id, base / "never")
    assert err.value.status == 409 and "cancelled" in err.value.message


def test_errors_carry_the_servers_message(server: Server, base: Path) -> None:
    job_dir = tiny_job(base / "errjob")
    with pytest.raises(client_mod.AuthenticationError) as err:
        RemoteClient(server.url, "wrong-token-wrong-token").list_jobs()
    assert err.value.status == 401 and "missing or wrong bearer token" in err.value.message
    with pytest.raises(client_mod.JobNotFound):
        RemoteClient(server.url, TOKENS["carol"]).status("0" * 32)

    bad = base / "badjob"
    shutil.copytree(job_dir, bad)
    spec = json.loads((bad / "job.json").read_text())
    spec["views"] = 3
    (bad / "job.json").write_text(json.dumps(spec))
    with pytest.raises(JobError) as local:
        load_job(bad)
    with pytest.raises(client_mod.JobRejected) as err:
        RemoteClient(server.url, TOKENS["carol"]).submit(bad)
    assert err.value.code == local.value.code and local.value.message in err.value.message
    assert err.value.hint == local.value.hint

    big = base / "bigjob"
    shutil.copytree(job_dir, big)
    (big / "extra.bin").write_bytes(np.random.default_rng(0).bytes(300_000))
    with pytest.raises(client_mod.UploadTooLarge) as err:
        RemoteClient(server.url, TOKENS["carol"]).submit(big)
    assert "at most 209715" in err.value.message
    assert RemoteClient(server.url, TOKENS["carol"]).list_jobs() == []

    with pytest.raises(client_mod.ServerUnavailable) as err:
        RemoteClient("http://127.0.0.1:9", TOKENS["carol"], timeout=2, retries=1).health()
    assert "cannot reach the server" in err.value.message
    with pytest.raises(client_mod.RemoteError):
        RemoteClient("ftp://example.com", "x")


def test_event_stream_survives_a_server_restart(base: Path) -> None:
    tokens = write_tokens(base / "tokens2.txt")
    srv = Server(base / "data2", tokens, "--workers", "0").start()
    client = RemoteClient(srv.url, TOKENS["dave"], reconnect_timeout_s=60)
    job_id = client.submit(tiny_job(base / "restartjob"))
    seen: list[dict] = []
    reader = threading.Thread(target=lambda: seen.extend(client.events(job_id)), daemon=True)
    reader.start()
    time.sleep(0.5)
    srv.kill9()
    srv2 = Server(base / "data2", tokens, "--workers", "0")
    srv2.port, srv2.url = srv.port, srv.url  # the same address, as after a real restart
    srv2.start()
    try:
        assert client.status(job_id)["state"] == "queued"  # accepted before the crash: still there
        client.cancel(job_id)
        reader.join(30)
        assert not reader.is_alive()
        assert [e["state"] for e in seen] == ["queued", "cancelled"]  # each event once, none lost
    finally:
        srv2.stop()
