"""Job-server benchmark on loopback: submit latency and status-polling throughput under load.

Starts the real ``track4dgen serve`` (``--workers 0``: jobs are accepted and queued, none run, so
the numbers are the HTTP/validation/queue layer's, not Stage Two's) in a temporary folder, then:

1. ``submit_sequential``: N uploads of a small valid job one after another (latency per submit:
   upload + safe unpack + ``load_job`` validation + durable SQLite commit);
2. ``submit_concurrent``: N uploads from T threads at once (throughput);
3. ``status_poll``: C clients poll ``GET /v1/jobs/{id}`` on keep-alive connections for S seconds
   while a background thread keeps submitting (status throughput under load).

Bounded in count and time (``--max-seconds`` caps everything). Prints a table; ``--json PATH``
writes ``{"device", "config", "objects": [rows]}``; ``--quick`` is the small CPU variant.

    python benchmarks/bench_server.py --quick --json /tmp/bench_server.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zipfile
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds
    token = f"bench-{uuid.uuid4().hex}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        tmp_path = Path(tmp)
        archive = _job_zip(tmp_path)
        (tmp_path / "tokens.txt").write_text(token + "\n")
        port = _free_port()
        cmd = [sys.executable, "-m", "track4dgen", "serve", "--port", str(port), "--data", str(tmp_path / "data"),
               "--tokens-file", str(tmp_path / "tokens.txt"), "--workers", "0", "--log-level", "warning",
               "--max-queued-per-token", "1000000"]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"))
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1).read()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((tmp_path / "server.log").read_text()[-2000:])
                    time.sleep(0.1)

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
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
    return {
        "device": f"loopback, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                  f"load average {os.getloadavg()[0]:.1f}",
        "config": {"submits": args.submits, "threads": args.threads, "pollers": args.pollers,
                   "poll_seconds": args.poll_seconds, "max_seconds": args.max_seconds, "quick": args.quick,
                   "date": time.strftime("%Y-%m-%d")},
        "objects": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    cols = ["name", "clients", "count", "errors", "per_s", "p50_ms", "p95_ms", "mean_ms", "wall_s"]
    print(f"device: {result['device']}")
    print(" | ".join(f"{c:>17}" if i == 0 else f"{c:>8}" for i, c in enumerate(cols)))
    for row in result["objects"]:
        print(" | ".join(f"{row.get(c, ''):>17}" if i == 0 else f"{row.get(c, ''):>8}" for i, c in enumerate(cols)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small variant (well under 2 minutes on a CPU)")
    p.add_argument("--submits", type=int, default=None, help="submissions per submit phase")
    p.add_argument("--threads", type=int, default=8, help="threads of the concurrent submit phase")
    p.add_argument("--pollers", type=int, default=None, help="concurrent status-polling clients")
    p.add_argument("--poll-seconds", type=float, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="hard cap on the whole benchmark")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
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
