"""Job-server benchmark on loopback: submit latency and status-polling throughput under load.

Starts the real ``track4dgen serve`` (``--workers 0``: jobs are accepted and queued, none run, so
the numbers are the HTTP/validation/queue layer's, not Stage Two's) in a temporary folder, then:

1. ``submit_sequential``: N uploads of a small valid job one after another (latency per submit:
   upload + safe unpack + ``load_job`` validation + durable SQLite commit);
2. ``submit_concurrent``: N uploads from T threads at once (throughput);
3. ``status_poll``: C clients poll ``GET /v1/jobs/{id}`` on keep-alive connections for S seconds
   while a background thread keeps submitting (status throughput under load);
4. ``abuse`` (a fresh server with its default limits): decode bombs (a 9000x9000 PNG view, a
   features.npz of zeros that deflates ~1000:1), a zip bomb, a tar.xz with a huge entry count,
   settings out of range, malformed requests and slow clients (Slowloris) -- while a prober from
   another loopback address (127.0.0.2) calls ``/v1/health`` every 50 ms. Reports each attack's
   answers, the server's peak RSS (``VmHWM``) and whether every health call answered 200 in < 100 ms.

Bounded in count and time (``--max-seconds`` caps everything). Prints a table; ``--json PATH``
writes ``{"device", "config", "objects": [rows]}``; ``--quick`` is the small CPU variant.

    python benchmarks/bench_server.py --quick --json /tmp/bench_server.json
    python benchmarks/bench_server.py --quick --abuse-only   # phase 4 alone
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import lzma
import os
import platform
import struct
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _job_zip(folder: Path) -> bytes:
    from track4dgen.synthetic import write_job

    job = write_job("hopper", folder / "job", resolution=32, frames=4,
                    stage2_overrides={"iters_rec": 10, "iters_sds": 0, "num_gaussians": 300})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(job.rglob("*")):
            rel = p.relative_to(job)
            if p.is_file() and rel.parts[0] not in ("gt", "result"):
                zf.write(p, rel.as_posix())
    return buf.getvalue()


class _Conn:
    """One keep-alive HTTP connection with the bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        hdrs = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def submit(self, archive: bytes) -> tuple[int, dict[str, Any]]:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"job\"; filename=\"job.zip\"\r\n"
                f"Content-Type: application/zip\r\n\r\n").encode() + archive + f"\r\n--{boundary}--\r\n".encode()
        status, raw = self.request("POST", "/v1/jobs", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return status, json.loads(raw)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _latency_row(name: str, lat_s: list[float], wall_s: float, errors: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "count": len(lat_s), "errors": errors, "per_s": round(len(lat_s) / wall_s, 1) if wall_s else 0.0,
            "p50_ms": round(_pct(lat_s, 0.5) * 1e3, 2), "p95_ms": round(_pct(lat_s, 0.95) * 1e3, 2),
            "mean_ms": round(statistics.fmean(lat_s) * 1e3, 2) if lat_s else float("nan"), "wall_s": round(wall_s, 2), **extra}


def _start_server(tmp_path: Path, name: str, deadline: float, *extra: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "track4dgen", "serve", "--port", str(port), "--data", str(tmp_path / name),
           "--tokens-file", str(tmp_path / "tokens.txt"), "--workers", "0", "--log-level", "warning", *extra]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "wb"))
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1).read()
            return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError((tmp_path / f"{name}.log").read_text()[-2000:])
            time.sleep(0.1)


def _stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds
    token = f"bench-{uuid.uuid4().hex}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        tmp_path = Path(tmp)
        archive = _job_zip(tmp_path)
        (tmp_path / "tokens.txt").write_text(token + "\n")
        if args.abuse_only:
            rows += run_abuse(args, tmp_path, token, archive, deadline)
            return _result(args, rows)
        server, port = _start_server(tmp_path, "data", deadline, "--max-queued-per-token", "1000000",
                                     "--max-uploads-per-token", "1000")
        try:

            # 1. sequential submits (after one warm-up submit: first-use imports in the server)
            conn = _Conn(port, token)
            lat, errors, ids = [], 0, []
            status, body = conn.submit(archive)
            if status != 202:
                raise RuntimeError(f"the benchmark job was refused: {body}")
            ids.append(body["id"])
            t0 = time.monotonic()
            for _ in range(args.submits):
                if time.monotonic() > deadline:
                    break
                s = time.perf_counter()
                status, body = conn.submit(archive)
                lat.append(time.perf_counter() - s)
                if status == 202:
                    ids.append(body["id"])
                else:
                    errors += 1
            rows.append(_latency_row("submit_sequential", lat, time.monotonic() - t0, errors, clients=1,
                                     upload_kb=round(len(archive) / 1024, 1)))

            # 2. concurrent submits
            lock = threading.Lock()
            clat: list[float] = []
            cerr = [0]
            per_thread = max(1, args.submits // args.threads)

            def submitter() -> None:
                c = _Conn(port, token)
                for _ in range(per_thread):
                    if time.monotonic() > deadline:
                        return
                    s = time.perf_counter()
                    status, body = c.submit(archive)
                    with lock:
                        clat.append(time.perf_counter() - s)
                        if status == 202:
                            ids.append(body["id"])
                        else:
                            cerr[0] += 1

            threads = [threading.Thread(target=submitter) for _ in range(args.threads)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rows.append(_latency_row("submit_concurrent", clat, time.monotonic() - t0, cerr[0], clients=args.threads,
                                     upload_kb=round(len(archive) / 1024, 1)))

            # 3. status polling while submissions continue in the background
            stop = threading.Event()
            plat: list[float] = []
            perr = [0]
            background = [0]

            def poller(i: int) -> None:
                c = _Conn(port, token)
                mine: list[float] = []
                k = i
                while not stop.is_set():
                    s = time.perf_counter()
                    status, _ = c.request("GET", f"/v1/jobs/{ids[k % len(ids)]}")
                    mine.append(time.perf_counter() - s)
                    if status != 200:
                        perr[0] += 1
                    k += 7
                with lock:
                    plat.extend(mine)

            def loader() -> None:
                c = _Conn(port, token)
                while not stop.is_set() and background[0] < args.submits:
                    c.submit(archive)
                    background[0] += 1

            workers = [threading.Thread(target=poller, args=(i,)) for i in range(args.pollers)]
            workers.append(threading.Thread(target=loader))
            t0 = time.monotonic()
            for t in workers:
                t.start()
            time.sleep(max(0.0, min(args.poll_seconds, deadline - time.monotonic())))
            stop.set()
            for t in workers:
                t.join()
            rows.append(_latency_row("status_poll", plat, time.monotonic() - t0, perr[0], clients=args.pollers,
                                     background_submits=background[0]))
        finally:
            _stop_server(server)
        rows += run_abuse(args, tmp_path, token, archive, deadline)
    return _result(args, rows)


def _result(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "device": f"loopback, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                  f"load average {os.getloadavg()[0]:.1f}",
        "config": {"submits": args.submits, "threads": args.threads, "pollers": args.pollers,
                   "poll_seconds": args.poll_seconds, "max_seconds": args.max_seconds, "quick": args.quick,
                   "abuse_scale": args.abuse_scale, "date": time.strftime("%Y-%m-%d")},
        "objects": rows,
    }


# -- phase 4: abuse ---------------------------------------------------------------------------------

def _png_bomb(width: int, height: int) -> bytes:
    """A valid RGBA PNG of black pixels: a few hundred KB that decode to width*height*4 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 4 * width)
    idat = b"".join(comp.compress(row * 64) for _ in range(height // 64)) + comp.compress(row * (height % 64)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _zeros_entry(zf: zipfile.ZipFile, name: str, head: bytes, nbytes: int) -> None:
    with zf.open(name, "w", force_zip64=True) as out:
        out.write(head)
        block = b"\0" * (8 << 20)
        left = nbytes
        while left > 0:
            out.write(block[:min(left, len(block))])
            left -= len(block)


def _with_files(archive: bytes, files: dict[str, bytes]) -> bytes:
    """The benchmark job's zip with some files replaced."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            if info.filename not in files:
                zf.writestr(info.filename, src.read(info))
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _features_bomb(archive: bytes, shape: tuple[int, ...], declared_only: bool = False) -> bytes:
    """features.npz of zeros deflated ~1000:1; ``declared_only``: a header claiming ``shape``, little data."""
    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        _zeros_entry(zf, "features.npy", header.getvalue(), 1 << 20 if declared_only else int(np.prod(shape)) * 4)
    return _with_files(archive, {"features.npz": inner.getvalue()})


def _zip_bomb(nbytes: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("job.json", b"{}")
        _zeros_entry(zf, "mesh.glb", b"", nbytes)
    return buf.getvalue()


def _many_entries_tar_xz(n: int) -> bytes:
    out = io.BytesIO()
    comp = lzma.LZMACompressor(preset=0)
    for i in range(n):
        info = tarfile.TarInfo(f"job/e{i:07d}")
        out.write(comp.compress(info.tobuf(format=tarfile.USTAR_FORMAT)))
    out.write(comp.compress(b"\0" * 1024) + comp.flush())
    return out.getvalue()


def _settings_job(archive: bytes, stage2: dict[str, Any]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        spec = json.loads(zf.read("job.json"))
    spec["stage2"] = {**spec.get("stage2", {}), **stage2}
    return _with_files(archive, {"job.json": json.dumps(spec).encode()})


class _HealthProbe(threading.Thread):
    """Calls /v1/health every 50 ms on a fresh connection from 127.0.0.2 (another client address)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.lat, self.failures = port, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=("127.0.0.2", 0)) as s:
                    s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    ok = b" 200 " in s.recv(4096).split(b"\r\n", 1)[0]
            except OSError:
                ok = False
            self.lat.append(time.perf_counter() - t0)
            self.failures += not ok
            self.stop.wait(0.05)


def _window_max_ms(probe: _HealthProbe, first: int) -> float | None:
    """The slowest health call since probe call ``first`` (including the one in flight now)."""
    time.sleep(0.06)
    window = probe.lat[first:]
    return round(max(window) * 1e3, 1) if window else None


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _slowloris(port: int, n: int, hold_s: float) -> dict[str, int]:
    """n connections that never finish their headers; counts how the server ended each."""
    socks, counts = [], {"refused_503": 0, "closed_by_server": 0, "still_open": 0, "connect_failed": 0}
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=hold_s)
            s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
            socks.append(s)
        except OSError:
            counts["connect_failed"] += 1
    for s in socks:
        try:
            data = s.recv(4096)
            counts["refused_503" if b" 503 " in data else "closed_by_server"] += 1
        except OSError:  # socket.timeout: the server kept it open for the whole hold time
            counts["still_open"] += 1
        finally:
            s.close()
    return counts


def run_abuse(args: argparse.Namespace, tmp_path: Path, token: str, archive: bytes, deadline: float) -> list[dict[str, Any]]:
    scale = args.abuse_scale
    print(f"abuse phase: building the payloads (scale {scale}) ...", flush=True)
    payloads: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("png_bomb_9000x9000", "submit", _with_files(archive, {"views/0.png": _png_bomb(9000, 9000)}), {}),
        ("features_npz_bomb", "submit", _features_bomb(archive, (4, 4, 64 * scale, 128, 128)), {}),
        ("features_npz_8gb_header", "submit", _features_bomb(archive, (4, 4, 1024, 256, 256), declared_only=True), {}),
        ("zip_bomb", "submit", _zip_bomb(scale * (512 << 20)), {}),
        ("tar_xz_entries", "raw", _many_entries_tar_xz(250_000 * scale), {"Content-Type": "application/x-tar"}),
        ("num_gaussians_1e9", "submit", _settings_job(archive, {"num_gaussians": 1e9}), {}),
        ("iters_rec_1e12", "submit", _settings_job(archive, {"iters_rec": 10**12}), {}),
        ("nan_learning_rate", "submit", _settings_job(archive, {"lr_hexplane": float("nan")}), {}),
        ("hexplane_4096", "submit", _settings_job(archive, {"hexplane_resolution": [4096, 4096, 64]}), {}),
        ("last_event_id_2e63", "events", None, {"Last-Event-ID": str(2**64)}),
    ]
    server, port = _start_server(tmp_path, "data-abuse", deadline, "--header-timeout-s", str(args.header_timeout_s),
                                 "--max-extract-mb", "256")
    rows: list[dict[str, Any]] = []
    probe = _HealthProbe(port)
    probe.start()
    time.sleep(2.0)  # idle baseline: what health costs on this machine before any attack
    idle = list(probe.lat)
    t_phase = time.monotonic()
    try:
        conn = _Conn(port, token)
        job_id = "0" * 32
        payloads.insert(0, ("valid_job (reference)", "submit", archive, {}))
        for name, kind, data, headers in payloads:
            first = len(probe.lat)
            t0 = time.perf_counter()
            if kind == "submit":
                status, answer = conn.submit(data)
            elif kind == "raw":
                status, raw = conn.request("POST", "/v1/jobs", data, headers)
                answer = json.loads(raw)
            else:
                status, raw = conn.request("GET", f"/v1/jobs/{job_id}/events", None, headers)
                answer = json.loads(raw)
            if name.startswith("valid_job"):
                job_id = answer.get("id", job_id)
            rows.append({"name": f"abuse_{name}", "status": status, "error": answer.get("error"),
                         "upload_kb": round(len(data) / 1024, 1) if data else 0,
                         "wall_s": round(time.perf_counter() - t0, 2), "rss_mb": _peak_rss_mb(server.pid),
                         "health_max_ms": _window_max_ms(probe, first)})
        first = len(probe.lat)
        t0 = time.perf_counter()
        counts = _slowloris(port, args.slow_clients, hold_s=args.header_timeout_s + 5)
        rows.append({"name": "abuse_slowloris", "status": "/".join(f"{k}={v}" for k, v in counts.items() if v),
                     "error": None, "upload_kb": 0, "wall_s": round(time.perf_counter() - t0, 2),
                     "rss_mb": _peak_rss_mb(server.pid), "clients": args.slow_clients,
                     "health_max_ms": _window_max_ms(probe, first)})
    finally:
        probe.stop.set()
        probe.join()
        peak = _peak_rss_mb(server.pid)
        _stop_server(server)
    lat = probe.lat[len(idle):]
    rows.append({"name": "abuse_summary", "peak_rss_mb": peak,
                 "idle_health_max_ms": round(max(idle) * 1e3, 1) if idle else None, "health_calls": len(lat), "health_failures": probe.failures,
                 "health_max_ms": round(max(lat) * 1e3, 1) if lat else None,
                 "health_p99_ms": round(_pct(lat, 0.99) * 1e3, 1) if lat else None,
                 "health_always_under_100ms": bool(lat) and probe.failures == 0 and max(lat) < 0.1,
                 "wall_s": round(time.monotonic() - t_phase, 1)})
    return rows



def print_table(result: dict[str, Any]) -> None:
    cols = ["name", "clients", "count", "errors", "per_s", "p50_ms", "p95_ms", "mean_ms", "wall_s"]
    print(f"device: {result['device']}")
    print(" | ".join(f"{c:>17}" if i == 0 else f"{c:>8}" for i, c in enumerate(cols)))
    for row in result["objects"]:
        if not row["name"].startswith("abuse_"):
            print(" | ".join(f"{row.get(c, ''):>17}" if i == 0 else f"{row.get(c, ''):>8}" for i, c in enumerate(cols)))
    abuse = [r for r in result["objects"] if r["name"].startswith("abuse_") and r["name"] != "abuse_summary"]
    if abuse:
        print(f"{'attack':>26} | {'answer':>34} | {'upload KB':>9} | {'wall s':>6} | {'peak RSS MB':>11} | {'health max ms':>13}")
        for r in abuse:
            answer = f"{r['status']} {r['error'] or ''}".strip()
            print(f"{r['name'][6:]:>26} | {answer:>34} | {r['upload_kb']:>9} | {r['wall_s']:>6} | {r['rss_mb']:>11} | "
                  f"{r['health_max_ms']!s:>13}")
        summary = next(r for r in result["objects"] if r["name"] == "abuse_summary")
        print("abuse summary: " + ", ".join(f"{k}={v}" for k, v in summary.items() if k != "name"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small variant (well under 2 minutes on a CPU)")
    p.add_argument("--submits", type=int, default=None, help="submissions per submit phase")
    p.add_argument("--threads", type=int, default=8, help="threads of the concurrent submit phase")
    p.add_argument("--pollers", type=int, default=None, help="concurrent status-polling clients")
    p.add_argument("--poll-seconds", type=float, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="hard cap on the whole benchmark")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--abuse-only", action="store_true", help="run only the abuse phase")
    p.add_argument("--abuse-scale", type=int, default=None, help="payload size multiplier (quick 1, full 4)")
    p.add_argument("--slow-clients", type=int, default=None, help="Slowloris connections (quick 300, full 1100)")
    p.add_argument("--header-timeout-s", type=float, default=3.0, help="the abuse server's --header-timeout-s")
    args = p.parse_args(argv)
    args.abuse_scale = args.abuse_scale or (1 if args.quick else 4)
    args.slow_clients = args.slow_clients or (300 if args.quick else 1100)
    args.submits = args.submits or (20 if args.quick else 200)
    args.pollers = args.pollers or (8 if args.quick else 32)
    args.poll_seconds = args.poll_seconds or (3.0 if args.quick else 15.0)
    args.max_seconds = args.max_seconds or (90.0 if args.quick else 600.0)
    result = run(args)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
