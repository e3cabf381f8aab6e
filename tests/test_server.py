"""The job server over real HTTP: auth, limits, hostile uploads, validation, concurrency, retention.

One queue-only server (``--workers 0``: jobs are accepted and stored but not run) serves this
module, so these tests measure the HTTP/queue layer without paying for Stage Two; the tests that
run jobs (progress, kill -9, cancel) are in test_server_runner.py and test_client.py.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from test_server_support import TOKENS, Server, tiny_job, write_tokens, zip_dir
from track4dgen.job import JobError, load_job

LIMIT = 50


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("srv")


@pytest.fixture(scope="module")
def job_zip(base: Path) -> bytes:
    return zip_dir(tiny_job(base / "job"))


@pytest.fixture(scope="module")
def server(base: Path):
    srv = Server(base / "data", write_tokens(base / "tokens.txt"), "--workers", "0", "--max-upload-mb", "0.25",
                 "--max-queued-per-token", str(LIMIT), "--max-uploads-per-token", str(2 * LIMIT),
                 "--retention-s", "1.5").start()
    yield srv
    srv.stop()


def test_health_and_openapi_document_the_api(server: Server) -> None:
    status, health = server.request("GET", "/v1/health")
    assert status == 200 and health["status"] == "ok" and health["auth_required"] is True
    assert health["max_upload_bytes"] == int(0.25 * (1 << 20))
    status, spec = server.request("GET", "/openapi.json")
    assert status == 200
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/result", "/v1/health"):
        assert path in spec["paths"], path


def test_missing_or_wrong_token_is_401_and_other_tokens_jobs_are_404(server: Server, job_zip: bytes) -> None:
    for token in (None, "not-a-valid-token-at-all-0000", TOKENS["alice"] + "x"):
        status, body = server.request("GET", "/v1/jobs", token)
        assert status == 401 and body["error"] == "unauthorized", (token, body)
        status, body = server.submit(job_zip, token)
        assert status == 401
    assert list((server.data / "jobs").iterdir()) == []  # nothing was stored for the refused uploads

    status, job = server.submit(job_zip, TOKENS["alice"])
    assert status == 202 and job["state"] == "queued"
    jid = job["id"]
    assert server.request("GET", f"/v1/jobs/{jid}", TOKENS["alice"])[0] == 200
    for method, suffix in (("GET", ""), ("GET", "/events"), ("GET", "/result"), ("POST", "/cancel")):
        status, body = server.request(method, f"/v1/jobs/{jid}{suffix}", TOKENS["bob"])
        assert status == 404 and body["error"] == "not_found", (suffix, body)
    assert jid in {j["id"] for j in server.request("GET", "/v1/jobs", TOKENS["alice"])[1]["jobs"]}
    assert jid not in {j["id"] for j in server.request("GET", "/v1/jobs", TOKENS["bob"])[1]["jobs"]}
    # alice's job was not cancelled by bob's attempt
    assert server.request("GET", f"/v1/jobs/{jid}", TOKENS["alice"])[1]["state"] == "queued"
    status, body = server.request("GET", f"/v1/jobs/{jid}/result", TOKENS["alice"])
    assert status == 409 and body["error"] == "not_ready"


def test_oversized_upload_is_413_and_nothing_is_stored(server: Server, job_zip: bytes) -> None:
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("job.json", b"{}")
        zf.writestr("padding.bin", uuid.uuid4().bytes * 40000)  # 640 KB, incompressible enough
    before = set((server.data / "jobs").iterdir())
    status, body = server.submit(big.getvalue(), TOKENS["alice"])
    assert status == 413 and body["error"] == "upload_too_large" and str(int(0.25 * (1 << 20))) in body["message"]
    # raw body without a Content-Length (chunked): the streaming counter catches it too
    chunks = iter([big.getvalue()[i:i + 65536] for i in range(0, len(big.getvalue()), 65536)])
    status, body = server.request("POST", "/v1/jobs", TOKENS["alice"], body=chunks,
                                  headers={"Content-Type": "application/zip", "Transfer-Encoding": "chunked"})
    assert status == 413, body
    assert set((server.data / "jobs").iterdir()) == before
    assert list((server.data / "tmp").iterdir()) == []


def test_zip_slip_and_symlink_archives_are_rejected_without_writing_outside(server: Server, job_zip: bytes,
                                                                            base: Path) -> None:
    evil = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(job_zip)) as src, zipfile.ZipFile(evil, "w") as zf:
        for info in src.infolist():
            zf.writestr(info.filename, src.read(info))
        zf.writestr("../../../escaped.txt", b"zip-slip")
        zf.writestr("/tmp/escaped-abs.txt", b"absolute")
    linked = io.BytesIO()
    with tarfile.open(fileobj=linked, mode="w") as tf:
        with zipfile.ZipFile(io.BytesIO(job_zip)) as src:
            for info in src.infolist():
                data = src.read(info)
                ti = tarfile.TarInfo(info.filename)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(base)
        tf.addfile(link)
        payload = tarfile.TarInfo("escape/escaped.txt")
        payload.size = 4
        tf.addfile(payload, io.BytesIO(b"evil"))
    before = set((server.data / "jobs").iterdir())
    for archive in (evil.getvalue(), linked.getvalue()):
        status, body = server.submit(archive, TOKENS["alice"])
        assert status == 400 and body["error"] == "unsafe_archive", body
    # raw tar body (no multipart) goes through the same checks
    status, body = server.request("POST", "/v1/jobs", TOKENS["alice"], linked.getvalue(), {"Content-Type": "application/x-tar"})
    assert status == 400 and body["error"] == "unsafe_archive"
    assert not any("escaped" in p.name for p in base.parent.rglob("*"))
    assert not Path("/tmp/escaped-abs.txt").exists()
    assert set((server.data / "jobs").iterdir()) == before
    assert list((server.data / "tmp").iterdir()) == []


def test_malformed_job_is_422_with_the_local_validation_message(server: Server, base: Path) -> None:
    job = tiny_job(base / "bad_job")
    spec = json.loads((job / "job.json").read_text())
    spec["frames"] = "sixteen"
    (job / "job.json").write_text(json.dumps(spec))
    with pytest.raises(JobError) as local:
        load_job(job)
    status, body = server.submit(zip_dir(job), TOKENS["alice"])
    assert status == 422
    assert body["error"] == local.value.code == "bad_job_json"
    assert body["message"] == local.value.message and "'frames'" in body["message"]
    assert body["hint"] == local.value.hint
    (job / "cameras.json").unlink()
    spec["frames"] = 2
    (job / "job.json").write_text(json.dumps(spec))
    status, body = server.submit(zip_dir(job), TOKENS["alice"])
    assert status == 422 and "cameras.json is missing" in body["message"]


def test_fifty_concurrent_submissions_are_all_accounted_for_and_the_queue_limit_holds(server: Server,
                                                                                     job_zip: bytes) -> None:
    token = TOKENS["carol"]
    results: list[tuple[int, dict]] = [None] * LIMIT  # type: ignore[list-item]

    def submit(i: int) -> None:
        results[i] = server.submit(job_zip, token)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(LIMIT)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - t0
    assert all(r is not None for r in results)
    assert [s for s, _ in results] == [202] * LIMIT, [b for s, b in results if s != 202][:3]
    ids = {b["id"] for _, b in results}
    assert len(ids) == LIMIT
    listed = server.request("GET", "/v1/jobs", token)[1]["jobs"]
    assert {j["id"] for j in listed} == ids and all(j["state"] == "queued" for j in listed)
    assert all((server.data / "jobs" / i / "input" / "job.json").is_file() for i in ids)
    # the per-token limit: the 51st active job is refused, other tokens are not affected
    status, body = server.submit(job_zip, token)
    assert status == 429 and body["error"] == "queue_full" and f"limit {LIMIT}" in body["message"]
    assert server.submit(job_zip, TOKENS["frank"])[0] == 202
    victim = sorted(ids)[0]
    status, job = server.request("POST", f"/v1/jobs/{victim}/cancel", token)
    assert status == 202 and job["state"] == "cancelled"
    assert server.submit(job_zip, token)[0] == 202  # a slot was freed
    print(f"50 concurrent submissions in {elapsed:.2f} s")


def test_idempotent_submit_returns_the_same_job(server: Server, job_zip: bytes) -> None:
    token = TOKENS["dave"]
    s1, j1 = server.submit(job_zip, token, key="retry-key-1")
    s2, j2 = server.submit(job_zip, token, key="retry-key-1")
    assert (s1, s2) == (202, 200) and j1["id"] == j2["id"] and j2["idempotency_key"] == "retry-key-1"
    # concurrent retries with one key still make exactly one job
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(server.submit(job_zip, token, key="race-key")[1]["id"]))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 6 and len(set(out)) == 1
    # the same key from another token is a different job
    assert server.submit(job_zip, TOKENS["frank"], key="retry-key-1")[1]["id"] != j1["id"]
    jobs = server.request("GET", "/v1/jobs", token)[1]["jobs"]
    assert len(jobs) == 2
    assert len(list((server.data / "jobs").glob("*/input"))) == len({p.parent for p in (server.data / "jobs").glob("*/input")})
    status, body = server.submit(job_zip, token, key="has spaces/and slashes")
    assert status == 400 and "Idempotency-Key" in body["message"]


def test_event_stream_replays_and_resumes_after_last_event_id(server: Server, job_zip: bytes) -> None:
    token = TOKENS["erin"]
    jid = server.submit(job_zip, token)[1]["id"]
    assert server.request("POST", f"/v1/jobs/{jid}/cancel", token)[1]["state"] == "cancelled"
    status, raw = server.request("GET", f"/v1/jobs/{jid}/events", token)
    text = raw.decode()
    assert status == 200
    assert "id: 1\nevent: state\ndata: {\"state\": \"queued\"" in text
    assert "id: 2\nevent: state\ndata: {\"state\": \"cancelled\"" in text
    assert text.rstrip().endswith('event: end\ndata: {"state": "cancelled"}')
    status, raw = server.request("GET", f"/v1/jobs/{jid}/events", token, headers={"Last-Event-ID": "1"})
    assert "id: 1\n" not in raw.decode() and "id: 2\n" in raw.decode()


def test_finished_jobs_are_removed_after_the_retention_time(server: Server, job_zip: bytes) -> None:
    token = TOKENS["erin"]
    jid = server.submit(job_zip, token)[1]["id"]
    folder = server.data / "jobs" / jid
    assert (folder / "input" / "job.json").is_file()
    job = server.request("POST", f"/v1/jobs/{jid}/cancel", token)[1]
    assert job["state"] == "cancelled" and job["expires"] == pytest.approx(job["finished"] + 1.5)
    job = server.wait_state(jid, token, ("expired",), timeout=30)
    assert not folder.exists()
    status, body = server.request("GET", f"/v1/jobs/{jid}/result", token)
    assert status == 410 and body["error"] == "expired"
    # queued jobs are never removed, however old
    assert all((server.data / "jobs" / j["id"]).is_dir()
               for j in server.request("GET", "/v1/jobs", TOKENS["carol"])[1]["jobs"] if j["state"] == "queued")


def test_tokens_never_reach_the_database_or_the_log(server: Server) -> None:
    blobs = [p.read_bytes() for p in server.data.glob("state.db*")] + [server.log.read_bytes()]
    assert any(b"sha256:" in b for b in blobs[:-1])  # jobs are stored under the token's hash
    for token in TOKENS.values():
        assert all(token.encode() not in b for b in blobs), "a token leaked"


def test_binding_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path, monkeypatch, capsys) -> None:
    from track4dgen.server.cli import main

    monkeypatch.delenv("TRACK4DGEN_TOKENS", raising=False)
    assert main(["--host", "0.0.0.0", "--data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "refusing to bind to 0.0.0.0 without a token" in err and "--tokens-file" in err
    assert not (tmp_path / "d").exists()
    (tmp_path / "short.txt").write_text("abc\n")
    assert main(["--host", "0.0.0.0", "--data", str(tmp_path / "d"), "--tokens-file", str(tmp_path / "short.txt")]) == 2
    assert "at least 16" in capsys.readouterr().err
