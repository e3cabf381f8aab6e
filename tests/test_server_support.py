"""Helpers shared by the server and client tests (no tests here).

Every server test runs the *real* ``track4dgen serve`` in a subprocess on 127.0.0.1 with a tokens
file, and talks to it over HTTP -- the same way the add-on does.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

TOKENS = {name: f"{name}-secret-{uuid.uuid4().hex}" for name in ("alice", "bob", "carol", "dave", "erin", "frank")}

#: Smallest Stage-Two-only job that still runs the real runner end to end in a few seconds.
TINY_STAGE2 = {"iters_rec": 6, "iters_sds": 0, "num_gaussians": 100, "checkpoint_every": 2, "batch_images": 2,
               "hexplane_resolution": [8, 8, 2], "hexplane_dim": 4, "head_hidden": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_tokens(path: Path, names: list[str] | None = None) -> Path:
    names = names or list(TOKENS)
    path.write_text("# test tokens\n" + "\n".join(TOKENS[n] for n in names) + "\n")
    return path


def tiny_job(job_dir: Path, stage2: dict[str, Any] | None = None) -> Path:
    from track4dgen.synthetic import write_job

    return write_job("hopper", job_dir, resolution=16, frames=2, stage2_overrides={**TINY_STAGE2, **(stage2 or {})})


def zip_dir(job_dir: Path, skip: tuple[str, ...] = ("gt", "result")) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(job_dir.rglob("*")):
            rel = p.relative_to(job_dir)
            if p.is_file() and rel.parts[0] not in skip:
                zf.write(p, rel.as_posix())
    return buf.getvalue()


def multipart(data: bytes, field: str = "job", filename: str = "job.zip") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/zip\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Server:
    """``python -m track4dgen serve`` in a subprocess, with short polling/retention intervals."""

    def __init__(self, data: Path, tokens_file: Path | None, *extra: str, log: Path | None = None,
                 max_file_bytes: int | None = None) -> None:
        self.data, self.tokens_file, self.extra = Path(data), tokens_file, list(extra)
        self.max_file_bytes = max_file_bytes  # RLIMIT_FSIZE of the server: writes past it fail like a full disk
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or self.data.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Server":
        cmd = [sys.executable, "-m", "track4dgen", "serve", "--port", str(self.port), "--data", str(self.data),
               "--poll-interval-s", "0.05", "--janitor-interval-s", "0.1", *self.extra]
        if self.tokens_file is not None:
            cmd += ["--tokens-file", str(self.tokens_file)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env.pop("TRACK4DGEN_TOKENS", None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         preexec_fn=self._limit_files if self.max_file_bytes else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except urllib.error.HTTPError:  # it answers: up, but degraded (503)
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def _limit_files(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_bytes, self.max_file_bytes))

    def request(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
        return status, (json.loads(raw) if "json" in ctype else raw)

    def submit(self, archive: bytes, token: str | None, key: str | None = None) -> tuple[int, Any]:
        body, ctype = multipart(archive)
        headers = {"Content-Type": ctype}
        if key:
            headers["Idempotency-Key"] = key
        return self.request("POST", "/v1/jobs", token, body, headers)

    def wait_state(self, job_id: str, token: str, states: tuple[str, ...], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, job = self.request("GET", f"/v1/jobs/{job_id}", token)
            assert status == 200, job
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s; log:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- hostile files (small on disk, huge once decoded) ---------------------------------------------

def png_bomb(width: int, height: int) -> bytes:
    """A valid RGBA PNG of ``width`` x ``height`` black pixels, a few hundred KB on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 4 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def npz_bomb(shape: tuple[int, ...], nan_last: bool = True) -> bytes:
    """features.npz whose float32 'features' of ``shape`` is zeros (NaN last), deflated to ~1/1000."""
    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    n = int(np.prod(shape)) * 4
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("features.npy", "w", force_zip64=True) as out:
            out.write(header.getvalue())
            zeros = b"\0" * (8 << 20)
            left = n - 4
            while left > 0:
                out.write(zeros[:min(left, len(zeros))])
                left -= len(zeros)
            out.write(np.array([np.nan if nan_last else 0.0], "<f4").tobytes())
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")
