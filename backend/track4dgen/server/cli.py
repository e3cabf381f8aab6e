"""``track4dgen serve``: start the job server (uvicorn running the FastAPI app).

Binding to anything but loopback without a token is refused: the server runs arbitrary uploaded
jobs on an expensive GPU, so an open port on a studio network must never be unauthenticated.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from .auth import AuthConfigError, load_tokens

MiB = 1 << 20


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _connection_cap() -> int:
    """Connections the server can hold: the open-file limit (raised to its hard maximum) minus
    room for the database, uploads and job logs."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = 65536 if hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (ImportError, ValueError, OSError):
        soft = 1024
    return max(16, min(1000, soft - 128))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="track4dgen serve", description="HTTP job server for remote GPU machines.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; others need a token)")
    p.add_argument("--port", type=int, default=8642)
    p.add_argument("--data", required=True, type=Path, help="folder for the job database, uploads and results")
    p.add_argument("--tokens-file", type=Path, default=None,
                   help="file with one bearer token per line (also read: $TRACK4DGEN_TOKENS, comma-separated)")
    p.add_argument("--workers", type=int, default=1,
                   help="jobs run at once, one per GPU (0 = accept and queue only, run nothing)")
    p.add_argument("--devices", default=None,
                   help="comma-separated CUDA device ids, one per worker (default: 0..N-1 when --workers > 1)")
    p.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest accepted upload (413 above)")
    p.add_argument("--max-extract-mb", type=float, default=4096.0, help="largest unpacked job folder")
    p.add_argument("--max-queued-per-token", type=int, default=20, help="queued+running jobs per token (429 above; 0 = no limit)")
    p.add_argument("--retention-hours", type=float, default=168.0, help="keep finished jobs' files this long")
    p.add_argument("--retention-s", type=float, default=None, help="the same in seconds (overrides --retention-hours)")
    p.add_argument("--poll-interval-s", type=float, default=_env_float("TRACK4DGEN_SERVER_POLL_S", 0.25),
                   help="worker queue/cancel polling and event-stream polling period")
    p.add_argument("--janitor-interval-s", type=float, default=_env_float("TRACK4DGEN_SERVER_JANITOR_S", 60.0),
                   help="how often expired results are removed")
    p.add_argument("--max-attempts", type=int, default=3, help="runs of a job interrupted by server crashes before it is marked failed")
    p.add_argument("--max-job-minutes", type=float, default=180.0,
                   help="wall-time limit of one run; longer runs fail with 'time_limit' (default 180: the paper's "
                        "schedule, Stage One + 1000 Stage Two iterations, takes well under an hour on one GPU; 0 = none)")
    p.add_argument("--max-job-memory-gb", type=float, default=None,
                   help="resident memory limit of one run; larger runs fail with 'memory_limit' "
                        "(default: 75%% of this machine's memory divided among the workers; 0 = none)")
    p.add_argument("--max-uploads-per-token", type=int, default=4, help="uploads in progress at once per token (429 above)")
    p.add_argument("--max-disk-per-token-mb", type=float, default=20480.0,
                   help="unpacked job inputs kept on disk per token until they expire (429 above; 0 = no limit)")
    p.add_argument("--min-free-disk-mb", type=float, default=512.0,
                   help="below this much free space uploads get 507 and /v1/health reports 'degraded'")
    p.add_argument("--header-timeout-s", type=float, default=10.0,
                   help="time a client has to send a request's headers (Slowloris protection; 0 = none)")
    p.add_argument("--keep-alive-s", type=int, default=5, help="idle keep-alive connections are closed after this")
    p.add_argument("--max-connections-per-ip", type=int, default=64,
                   help="open connections per client address (503 above; 0 = none, e.g. behind a reverse proxy)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections in all (default: below the open-file limit, at most 1000)")
    p.add_argument("--ssl-certfile", type=Path, default=None, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", type=Path, default=None, help="the certificate's private key (PEM)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tokens = load_tokens(args.tokens_file)
    except AuthConfigError as exc:
        print(f"track4dgen serve: {exc}", file=sys.stderr)
        return 2
    if not tokens and not is_loopback(args.host):
        print(f"track4dgen serve: refusing to bind to {args.host} without a token: anyone on the network could run "
              f"jobs on this machine. Pass --tokens-file FILE (one token per line) or set TRACK4DGEN_TOKENS, "
              f"or bind to 127.0.0.1.", file=sys.stderr)
        return 2
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        print("track4dgen serve: pass both --ssl-certfile and --ssl-keyfile (or neither)", file=sys.stderr)
        return 2
    if args.workers < 0:
        print("track4dgen serve: --workers must be 0 or more", file=sys.stderr)
        return 2
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    if devices is None and args.workers > 1:
        devices = [str(i) for i in range(args.workers)]

    import uvicorn

    from .app import ServerSettings, create_app
    from .connections import ConnectionLimits, guarded_protocol

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    memory_gb = args.max_job_memory_gb
    if memory_gb is None:
        memory_gb = 0.75 * _total_memory_bytes() / max(args.workers, 1) / (1 << 30)
    settings = ServerSettings(
        data_dir=args.data, tokens=tokens, workers=args.workers, devices=devices,
        max_upload_bytes=int(args.max_upload_mb * MiB), max_extract_bytes=int(args.max_extract_mb * MiB),
        max_active_per_token=args.max_queued_per_token,
        retention_s=args.retention_s if args.retention_s is not None else args.retention_hours * 3600.0,
        poll_interval_s=args.poll_interval_s, janitor_interval_s=args.janitor_interval_s, max_attempts=args.max_attempts,
        max_job_s=args.max_job_minutes * 60.0, max_job_rss_bytes=int(memory_gb * (1 << 30)),
        max_uploads_per_token=args.max_uploads_per_token, max_disk_per_token_bytes=int(args.max_disk_per_token_mb * MiB),
        min_free_disk_bytes=int(args.min_free_disk_mb * MiB),
    )
    limits = ConnectionLimits(header_timeout_s=args.header_timeout_s, max_per_ip=args.max_connections_per_ip,
                              max_total=args.max_connections or _connection_cap())
    app = create_app(settings)
    # uvicorn's access log shows method, path and status only: tokens travel in a header, never in a URL
    tls = {"ssl_certfile": str(args.ssl_certfile), "ssl_keyfile": str(args.ssl_keyfile)} if args.ssl_certfile else {}
    if tokens and not tls and not is_loopback(args.host):
        logging.getLogger("track4dgen.server").warning(
            "serving plain HTTP on %s: tokens and jobs cross the network unencrypted; use --ssl-certfile/--ssl-keyfile, "
            "a TLS reverse proxy or an SSH tunnel outside a trusted network", args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3,
                server_header=False, http=guarded_protocol(limits), timeout_keep_alive=args.keep_alive_s, **tls)
    return 0
