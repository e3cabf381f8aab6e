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

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServerSettings(
        data_dir=args.data, tokens=tokens, workers=args.workers, devices=devices,
        max_upload_bytes=int(args.max_upload_mb * MiB), max_extract_bytes=int(args.max_extract_mb * MiB),
        max_active_per_token=args.max_queued_per_token,
        retention_s=args.retention_s if args.retention_s is not None else args.retention_hours * 3600.0,
        poll_interval_s=args.poll_interval_s, janitor_interval_s=args.janitor_interval_s, max_attempts=args.max_attempts,
    )
    app = create_app(settings)
    # uvicorn's access log shows method, path and status only: tokens travel in a header, never in a URL
    tls = {"ssl_certfile": str(args.ssl_certfile), "ssl_keyfile": str(args.ssl_keyfile)} if args.ssl_certfile else {}
    if tokens and not tls and not is_loopback(args.host):
        logging.getLogger("track4dgen.server").warning(
            "serving plain HTTP on %s: tokens and jobs cross the network unencrypted; use --ssl-certfile/--ssl-keyfile, "
            "a TLS reverse proxy or an SSH tunnel outside a trusted network", args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3,
                server_header=False, **tls)
    return 0
