"""The HTTP API of ``track4dgen serve`` (FastAPI on uvicorn; OpenAPI at ``/openapi.json``, ``/docs``).

Endpoints (all JSON unless noted; every error is ``{"error", "message", "hint"}``)::

    GET  /v1/health                 liveness + limits (no token needed)
    POST /v1/jobs                   submit: multipart field "job" (zip/tar of the job folder) or a
                                    raw zip/tar body; header Idempotency-Key makes retries safe.
                                    202 accepted (200 when the key was seen before)
    GET  /v1/jobs                   this token's jobs
    GET  /v1/jobs/{id}              status (state, last progress event, error)
    GET  /v1/jobs/{id}/events       Server-Sent Events: progress | error | state, then "end";
                                    resumable with Last-Event-ID (or ?after=N)
    POST /v1/jobs/{id}/cancel       cancel a queued or running job
    GET  /v1/jobs/{id}/result       the result folder as a zip (409 until it succeeded, 410 expired)

A job is accepted (and written to the database) only after its upload is completely on disk,
unpacked safely and validated by ``track4dgen.job.load_job`` -- the same code as a local run -- so
anything the server has answered 202 for survives a crash of the server.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..job import JobError, is_complete_result, load_job
from .auth import TokenAuth
from .store import TERMINAL_STATES, JobStore, QueueFull
from .uploads import UploadError, extract_archive, find_job_root
from .worker import (Janitor, JobPaths, Worker, WorkerSettings, clean_data_dir, recover_interrupted, remove_expired,
                     result_zip, scrub_paths)

log = logging.getLogger("track4dgen.server")
MiB = 1 << 20
_KEY_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_SEQ_RE = re.compile(r"^[0-9]{1,18}$")  # event sequence numbers fit SQLite's signed 64-bit integers
MAX_SEQ = 2**63 - 1
MAX_BOUNDARY = 70  # RFC 2046
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class ServerSettings:
    data_dir: Path
    tokens: list[str] = field(default_factory=list)
    workers: int = 1
    devices: list[str] | None = None
    max_upload_bytes: int = 1024 * MiB
    max_extract_bytes: int = 4096 * MiB
    max_active_per_token: int = 20
    retention_s: float = 7 * 24 * 3600.0
    poll_interval_s: float = 0.25
    janitor_interval_s: float = 60.0
    max_attempts: int = 3
    sse_ping_s: float = 15.0
    max_job_s: float = 0.0  # wall-time limit of one run (0 = none)
    max_job_rss_bytes: int = 0  # memory limit of one run (0 = none)
    max_uploads_per_token: int = 4  # uploads in progress at once per token
    max_disk_per_token_bytes: int = 0  # unpacked inputs kept per token (0 = no limit)
    min_free_disk_bytes: int = 512 * MiB  # below this: uploads get 507 and health says degraded


_SUBMIT_BODY = {
    "required": True,
    "description": "The job folder (job.json at the root or inside one top-level folder) as a zip or tar.",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["job"],
                                           "properties": {"job": {"type": "string", "format": "binary"}}}},
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
        "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
    },
}


class JobOut(BaseModel):
    """A job as the API shows it (times are Unix seconds)."""

    id: str
    state: str  # queued | running | succeeded | failed | cancelled | expired
    created: float
    started: float | None = None
    finished: float | None = None
    expires: float | None = None  # when a finished job's files are removed
    attempts: int = 0
    cancel_requested: bool = False
    idempotency_key: str | None = None
    progress: dict[str, Any] | None = None  # the last {"stage", "step", "total", "message", "eta_s"}
    error: dict[str, Any] | None = None  # {"error", "message", "hint"} when failed
    last_event: int = 0  # sequence number of the newest event (for ?after= / Last-Event-ID)


class JobList(BaseModel):
    jobs: list[JobOut]


class Health(BaseModel):
    status: str  # "ok" (200) or "degraded" (503: see problems)
    version: str
    auth_required: bool
    workers: int
    max_upload_bytes: int
    problems: list[str] = []
    free_disk_bytes: int | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, hint: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint, self.headers = status, code, message, hint, headers


def _error_response(status: int, code: str, message: str, hint: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "hint": hint}, status_code=status, headers=headers)


# -- receiving uploads -------------------------------------------------------------------------

class _TooLarge(Exception):
    pass


async def _limited_chunks(request: Request, limit: int, drain_cap: int) -> AsyncIterator[bytes]:
    """Yield the body; past ``limit`` keep reading (discarding, up to ``drain_cap`` more bytes) so
    the client finishes sending and can read our 413 instead of a reset connection, then raise."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            if total > limit + drain_cap:
                break
            continue
        yield chunk
    if total > limit:
        raise _TooLarge()


async def _receive_raw(request: Request, dest: Path, limit: int, drain_cap: int) -> int:
    n = 0
    with open(dest, "wb") as out:
        async for chunk in _limited_chunks(request, limit, drain_cap):
            out.write(chunk)
            n += len(chunk)
    return n


async def _receive_multipart(request: Request, dest: Path, limit: int, drain_cap: int) -> int:
    """Stream the first file part of a multipart body to ``dest`` without buffering it in memory."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_request", "the multipart body has no boundary", "Send a standard multipart/form-data request.")
    if len(boundary) > MAX_BOUNDARY:
        raise ApiError(400, "bad_request", f"the multipart boundary is {len(boundary)} bytes long (limit {MAX_BOUNDARY})",
                       "Send a standard multipart/form-data request.")
    out = open(dest, "wb")
    state: dict[str, Any] = {"field": b"", "value": b"", "headers": {}, "target": None, "files": 0, "n": 0}

    def on_part_begin() -> None:
        state["headers"], state["target"] = {}, None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if b"filename" in disp and state["files"] == 0:
            state["target"] = "file"
            state["files"] += 1

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["target"] == "file":
            out.write(data[start:end])
            state["n"] += end - start

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data})
    try:
        async for chunk in _limited_chunks(request, limit, drain_cap):
            parser.write(chunk)
        parser.finalize()
    except (_TooLarge, OSError):  # OSError: our own file write (a full disk), not the client's fault
        raise
    except Exception as exc:
        raise ApiError(400, "bad_request", f"the multipart body is malformed: {exc}", "Send a standard multipart/form-data request.") from exc
    finally:
        out.close()
    if state["files"] == 0:
        raise ApiError(400, "bad_request", "the multipart body has no file part",
                       "Send the zipped job folder as the form field 'job' with a filename.")
    return int(state["n"])


# -- the app -----------------------------------------------------------------------------------

def create_app(settings: ServerSettings) -> FastAPI:
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # artists' assets: owner-only when we create it
    store = JobStore(data_dir / "state.db")
    auth = TokenAuth(settings.tokens)
    stop = threading.Event()
    wsettings = WorkerSettings(data_dir=data_dir, poll_interval_s=settings.poll_interval_s,
                               max_attempts=settings.max_attempts, devices=settings.devices,
                               max_job_s=settings.max_job_s, max_job_rss_bytes=settings.max_job_rss_bytes)
    threads: list[threading.Thread] = []
    uploading: Counter[str] = Counter()  # uploads in progress per owner (touched on the event loop only)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        requeued, failed = recover_interrupted(store, wsettings)
        if requeued:
            log.warning("re-queued %d interrupted job(s): %s", len(requeued), ", ".join(requeued))
        if failed:
            log.warning("failed %d job(s) interrupted --max-attempts (%d) times: %s", len(failed), settings.max_attempts,
                        ", ".join(failed))
        clean_data_dir(store, data_dir)
        remove_expired(store, data_dir, settings.retention_s)
        await run_in_threadpool(_import_validators)
        threads.extend(Worker(i, store, wsettings, stop) for i in range(settings.workers))
        threads.append(Janitor(store, data_dir, settings.retention_s, settings.janitor_interval_s, stop))
        for t in threads:
            t.start()
        log.info("serving %s with %d worker(s); tokens %s", data_dir, settings.workers, "required" if auth.required else "off")
        try:
            yield
        finally:
            stop.set()  # workers stop their running job and re-queue it
            for t in threads:
                await run_in_threadpool(t.join, 30)

    app = FastAPI(title="Track4DGen job server", version=__version__, lifespan=lifespan,
                  description="Remote backend for the Track4DGen Blender extension: submit a job folder, follow its "
                              "progress, download the 4D Gaussian result. Send `Authorization: Bearer <token>`.")
    app.state.store = store
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.message, exc.hint, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(exc.status_code, "http_error", str(exc.detail), "", getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, "bad_request", f"invalid request: {exc.errors()}", "See /docs for the API.")

    def public(row) -> dict[str, Any]:
        return store.to_public(row, settings.retention_s)

    bearer = HTTPBearer(auto_error=False, description="a token from the server's --tokens-file / $TRACK4DGEN_TOKENS")

    def owner(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        found = auth.owner_for_token(creds.credentials if creds is not None else None)
        if found is None:
            raise ApiError(401, "unauthorized", "missing or wrong bearer token",
                           "Send 'Authorization: Bearer <token>' with a token from the server's tokens file.",
                           {"WWW-Authenticate": "Bearer"})
        return found

    def own_job(job_id: str, who: str):
        row = store.get(job_id, who) if _ID_RE.match(job_id) else None
        if row is None:  # someone else's job looks exactly like a missing one
            raise ApiError(404, "not_found", f"job {job_id} does not exist", "List your jobs with GET /v1/jobs.")
        return row

    def free_disk() -> int | None:
        try:
            return shutil.disk_usage(data_dir).free
        except OSError:
            return None

    @app.get("/v1/health", response_model=Health, responses={503: {"model": Health, "description": "degraded: see problems"}})
    async def health() -> JSONResponse:
        """Liveness and readiness: 503 with ``problems`` when workers died, the database cannot be
        written or the disk is nearly full -- a load balancer or monitor sees it without a token.
        Runs on the event loop (a statvfs and one indexed SQLite read): no thread hand-off, so it
        stays fast while uploads are validated in the thread pool."""
        workers = [t for t in threads if isinstance(t, Worker)]
        free = free_disk()
        problems = health_problems(workers, settings.workers if threads else 0, free, settings.min_free_disk_bytes)
        try:
            store.counts()
        except Exception as exc:
            problems.append(f"the job database cannot be read: {type(exc).__name__}")
        body = {"status": "degraded" if problems else "ok", "version": __version__, "auth_required": auth.required,
                "workers": settings.workers, "max_upload_bytes": settings.max_upload_bytes, "problems": problems,
                "free_disk_bytes": free}
        if problems:  # also in the error shape every client already shows
            body.update(error="degraded", message="the server is degraded: " + "; ".join(problems),
                        hint="Ask the server's admin; see the server log.")
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.post("/v1/jobs", status_code=202, response_model=JobOut, openapi_extra={"requestBody": _SUBMIT_BODY},
              responses={200: {"description": "the Idempotency-Key was seen before: the existing job"},
                         400: {"description": "not an archive, or an unsafe entry (absolute, '..', link)"},
                         401: {"description": "missing or wrong token"}, 413: {"description": "upload too large"},
                         422: {"description": "the job folder is invalid (message from track4dgen.job)"},
                         429: {"description": "too many queued or running jobs for this token"}})
    async def submit(request: Request, who: str = Depends(owner),
                     idempotency_key: str | None = Header(None, alias="Idempotency-Key")) -> JSONResponse:
        """Upload a job folder as a zip or tar (multipart field ``job``, or the raw archive as the body)."""
        if idempotency_key is not None and not _KEY_RE.match(idempotency_key):
            raise ApiError(400, "bad_request", "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                           "Use a UUID as the key.")
        if idempotency_key is not None:
            existing = await run_in_threadpool(store.find_by_key, who, idempotency_key)
            if existing is not None:
                return JSONResponse(public(existing), status_code=200)
        declared = request.headers.get("content-length")
        declared_n = int(declared) if declared is not None and declared.isdigit() and len(declared) < 19 else 0
        if declared_n > settings.max_upload_bytes + MiB:
            raise ApiError(413, "upload_too_large", f"the upload is {declared_n} bytes (limit {settings.max_upload_bytes})",
                           "Lower the job's resolution or frame count, or ask the admin to raise --max-upload-mb.")
        active = await run_in_threadpool(store.active_count, who)
        used = await run_in_threadpool(store.disk_bytes, who)
        check_room(who, active, used, declared_n)  # no await from here to the increment: check and count are atomic
        uploading[who] += 1
        try:
            return await receive_job(request, who, idempotency_key)
        finally:
            uploading[who] -= 1
            if uploading[who] <= 0:
                del uploading[who]

    def check_room(who: str, active: int, used: int, incoming: int) -> None:
        """429/507 before reading a byte: the token's queue (uploads in progress count), uploads in
        progress, disk quota, free disk."""
        active += uploading[who]
        limit = settings.max_active_per_token
        if limit > 0 and active >= limit:
            raise ApiError(429, "queue_full", f"{active} jobs are already queued, running or uploading for this token "
                           f"(limit {limit})", "Wait for a job to finish or cancel one.", {"Retry-After": "30"})
        if settings.max_uploads_per_token > 0 and uploading[who] >= settings.max_uploads_per_token:
            raise ApiError(429, "too_many_uploads", f"{uploading[who]} uploads are already in progress for this token "
                           f"(limit {settings.max_uploads_per_token})", "Upload jobs one after another.", {"Retry-After": "10"})
        quota = settings.max_disk_per_token_bytes
        if quota > 0 and used + incoming > quota:
            raise ApiError(429, "disk_quota", f"this token's jobs keep {used} bytes on the server (quota {quota})",
                           "Wait for finished jobs to expire, or ask the admin to raise --max-disk-per-token-mb.",
                           {"Retry-After": "300"})
        free = free_disk()
        if free is not None and free - incoming < settings.min_free_disk_bytes:
            raise ApiError(507, "disk_full", "the server's disk is too full to accept a job",
                           "Try again later; the admin should free space in the server's data folder.")

    async def receive_job(request: Request, who: str, idempotency_key: str | None) -> JSONResponse:
        job_id = uuid.uuid4().hex
        staging = data_dir / "tmp" / job_id
        staging.mkdir(parents=True)
        paths = JobPaths(data_dir, job_id)
        try:
            archive = staging / "upload"
            ctype = request.headers.get("content-type", "")
            receive = _receive_multipart if ctype.startswith("multipart/form-data") else _receive_raw
            try:
                nbytes = await receive(request, archive, settings.max_upload_bytes, 64 * MiB)
                stored = await run_in_threadpool(_unpack_and_validate, archive, staging / "x", settings.max_extract_bytes,
                                                 paths)
            except _TooLarge:
                raise ApiError(413, "upload_too_large", f"the upload is larger than {settings.max_upload_bytes} bytes",
                               "Lower the job's resolution or frame count, or ask the admin to raise --max-upload-mb.")
            except OSError as exc:
                if exc.errno not in _DISK_ERRNOS:
                    raise
                log.error("upload refused: %s", exc)
                raise ApiError(507, "disk_full", "the server ran out of disk space while storing the upload",
                               "Try again later; the admin should free space in the server's data folder.") from None
            quota = settings.max_disk_per_token_bytes
            if quota > 0 and await run_in_threadpool(store.disk_bytes, who) + stored > quota:
                raise ApiError(429, "disk_quota", f"the job's {stored} unpacked bytes exceed this token's disk quota ({quota})",
                               "Wait for finished jobs to expire, or ask the admin to raise --max-disk-per-token-mb.")
            try:
                row, created = await run_in_threadpool(store.create, job_id, who, idempotency_key,
                                                       settings.max_active_per_token, stored)
            except QueueFull as exc:
                shutil.rmtree(paths.root, ignore_errors=True)
                raise ApiError(429, "queue_full", str(exc), "Wait for a job to finish or cancel one.", {"Retry-After": "30"})
            if not created:  # lost an idempotency race: the other upload is the job
                shutil.rmtree(paths.root, ignore_errors=True)
        except BaseException:
            shutil.rmtree(paths.root, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if created:
            log.info("job %s accepted (%d bytes, owner %s)", job_id, nbytes, who[:15])
        return JSONResponse(public(row), status_code=202 if created else 200)

    @app.get("/v1/jobs", response_model=JobList)
    def list_jobs(who: str = Depends(owner)) -> dict[str, Any]:
        return {"jobs": [public(r) for r in store.list(who)]}

    @app.get("/v1/jobs/{job_id}", response_model=JobOut)
    def job_status(job_id: str, who: str = Depends(owner)) -> dict[str, Any]:
        return public(own_job(job_id, who))

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobOut,
              responses={409: {"description": "the job has already finished"}})
    def cancel(job_id: str, who: str = Depends(owner)) -> dict[str, Any]:
        row = own_job(job_id, who)
        if row["state"] in TERMINAL_STATES:
            raise ApiError(409, "already_finished", f"job {job_id} is {row['state']}; there is nothing to cancel",
                           "Only queued or running jobs can be cancelled.")
        return public(store.request_cancel(job_id, who))

    @app.get("/v1/jobs/{job_id}/result", response_class=FileResponse,
             responses={200: {"content": {"application/zip": {}}}, 409: {}, 410: {}})
    async def result(job_id: str, who: str = Depends(owner)) -> FileResponse:
        row = await run_in_threadpool(own_job, job_id, who)
        if row["state"] == "expired":
            raise ApiError(410, "expired", f"job {job_id}'s result was removed after the retention time", "Submit the job again.")
        if row["state"] != "succeeded":
            raise ApiError(409, "not_ready", f"job {job_id} is {row['state']}, there is no result to download",
                           "Wait for the state 'succeeded' (GET /v1/jobs/{id} or its event stream).")
        paths = JobPaths(data_dir, job_id)
        if not is_complete_result(paths.result):
            raise ApiError(410, "result_missing", f"job {job_id}'s result folder is missing on the server",
                           "Submit the job again.")
        path = await run_in_threadpool(result_zip, paths)
        return FileResponse(path, media_type="application/zip", filename=f"track4dgen-{job_id}.zip")

    @app.get("/v1/jobs/{job_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(job_id: str, request: Request, who: str = Depends(owner),
                     last_event_id: str | None = Header(None, alias="Last-Event-ID"),
                     after: int = Query(0, ge=0, le=MAX_SEQ, description="send only events after this sequence number")) -> StreamingResponse:
        """Server-Sent Events: ``progress`` (runner events), ``error``, ``state``; a final ``end``."""
        await run_in_threadpool(own_job, job_id, who)
        if last_event_id is not None and last_event_id.strip() and not _SEQ_RE.match(last_event_id.strip()):
            raise ApiError(400, "bad_request", "Last-Event-ID must be an event number (the 'id:' of a received event)",
                           "Resend the last 'id:' value you received, or omit the header to replay all events.")
        start = max(after, int(last_event_id) if last_event_id and last_event_id.strip() else 0)
        return StreamingResponse(_event_stream(store, job_id, start, settings, stop), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def _import_validators() -> None:
    """Import what validation uses before serving: a first import (trimesh, PIL, the configs) holds
    the GIL for seconds, which would otherwise stall every request during the first upload."""
    import PIL.PngImagePlugin  # noqa: F401
    import trimesh  # noqa: F401

    from ..stage1 import config as _s1  # noqa: F401
    from ..stage2 import config as _s2  # noqa: F401


def health_problems(workers: list[Worker], expected: int, free: int | None, min_free: int) -> list[str]:
    """Why the server cannot do its work right now (empty when healthy)."""
    problems = []
    alive = sum(w.is_alive() for w in workers)
    if alive < expected:
        problems.append(f"{expected - alive} of {expected} worker(s) stopped; restart the server")
    problems += [f"worker {w.index}: the job database cannot be written ({w.db_error})" for w in workers if w.db_error]
    if free is not None and free < min_free:
        problems.append(f"only {free} bytes free on the data folder's disk (minimum {min_free})")
    return problems


def _unpack_and_validate(archive: Path, extract_to: Path, max_bytes: int, paths: JobPaths) -> int:
    """Extract, find the job root, validate with the local runner's code, then move into place.
    Returns the unpacked bytes. Messages never show the server's folders."""
    try:
        stored = extract_archive(archive, extract_to, max_bytes)
        root = find_job_root(extract_to)
    except UploadError as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.hint) from exc
    names = {f"{root}/": "", str(root): "the job folder"}
    try:
        job = load_job(root)
    except JobError as exc:
        raise ApiError(422, exc.code, scrub_paths(exc.message, names), scrub_paths(exc.hint, names)) from exc
    if "path" in job.spec.weights:
        raise ApiError(422, "bad_job_json", "job.json 'weights.path' names a folder on the server; remote jobs cannot choose one",
                       "Remove 'weights.path': the server uses its own installed weights.")
    paths.root.mkdir(parents=True)
    os.replace(root, paths.input)
    return stored


def _sse(kind: str, data: dict[str, Any], seq: int | None = None) -> str:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n"


async def _event_stream(store: JobStore, job_id: str, after: int, settings: ServerSettings,
                        stop: threading.Event) -> AsyncIterator[str]:
    """Replays stored events after ``after`` and follows new ones until the job is finished."""
    seq = after
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    yield "retry: 1000\n\n"
    while True:
        batch = await run_in_threadpool(store.events_since, job_id, seq)
        for s, data in batch:
            seq = s
            kind = "state" if "state" in data else "error" if "error" in data else "progress"
            yield _sse(kind, data, s)
            last_sent = loop.time()
        if batch:
            continue
        row = await run_in_threadpool(store.get, job_id)
        if row is None or row["state"] in TERMINAL_STATES:
            # the final state's event was committed with the state: send what arrived meanwhile
            for s, data in await run_in_threadpool(store.events_since, job_id, seq):
                yield _sse("state" if "state" in data else "error" if "error" in data else "progress", data, s)
            yield _sse("end", {"state": row["state"] if row is not None else "unknown"})
            return
        if stop.is_set():
            return  # the server is shutting down; the client reconnects with Last-Event-ID
        if loop.time() - last_sent > settings.sse_ping_s:
            yield ": ping\n\n"
            last_sent = loop.time()
        await asyncio.sleep(settings.poll_interval_s)
