"""Client for a ``track4dgen serve`` job server (standard library only: runs inside Blender).

Used by the add-on's remote mode and by ``scripts/batch_animate.py --remote URL``::

    client = RemoteClient("http://gpu-box:8642", token)
    job_id = client.submit(job_dir)                 # zip + upload; safe to retry (Idempotency-Key)
    for event in client.events(job_id):             # progress dicts, as a local run prints them
        print(event)
    client.download(job_id, result_dir)             # the result folder, unpacked

Every failure raises a :class:`RemoteError` subclass carrying the server's ``message`` and
``hint``; network failures raise :class:`ServerUnavailable`. The event stream reconnects on its own
(with ``Last-Event-ID``) when the server restarts, so a long job survives a server restart.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from http.client import HTTPException
from pathlib import Path
from typing import Any, BinaryIO, Iterator

#: Folders and files of a job folder that are never uploaded (outputs and local ground truth).
SKIP_NAMES = {"result", "gt", "__pycache__", ".DS_Store"}
TERMINAL_STATES = ("succeeded", "failed", "cancelled", "expired")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RemoteError(Exception):
    """The server refused a request (or could not be reached). ``message``/``hint`` are for people."""

    status = 0

    def __init__(self, message: str, hint: str = "", code: str = "remote_error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ServerUnavailable(RemoteError):
    """No answer: wrong URL, server down, network problem."""


class AuthenticationError(RemoteError):
    status = 401


class JobNotFound(RemoteError):
    status = 404


class JobRejected(RemoteError):
    """The upload or job folder is invalid (400/422); the message names the problem."""


class UploadTooLarge(RemoteError):
    status = 413


class QueueFull(RemoteError):
    status = 429


class ResultNotReady(RemoteError):
    """409 (not finished) or 410 (removed after the server's retention time)."""


_BY_STATUS: dict[int, type[RemoteError]] = {401: AuthenticationError, 403: AuthenticationError, 404: JobNotFound,
                                            400: JobRejected, 422: JobRejected, 413: UploadTooLarge, 429: QueueFull,
                                            409: ResultNotReady, 410: ResultNotReady}


def _error_from_http(exc: urllib.error.HTTPError) -> RemoteError:
    try:
        body = json.loads(exc.read().decode("utf-8", "replace") or "{}")
    except (ValueError, OSError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or body.get("detail") or f"HTTP {exc.code} {exc.reason}")
    hint = str(body.get("hint") or "")
    if exc.code == 401 and not hint:
        hint = "Set the server's token in Preferences › Add-ons › Track4DGen."
    cls = _BY_STATUS.get(exc.code, RemoteError)
    return cls(f"server: {message}", hint, str(body.get("error") or f"http_{exc.code}"), exc.code)


def normalise_key(key: str) -> str:
    """Idempotency keys the server accepts; anything else (paths, non-ASCII) is hashed."""
    return key if _SAFE_KEY.match(key) else "sha256-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:64]


def zip_job_folder(job_dir: Path, dest: BinaryIO) -> int:
    """Write the job folder (minus outputs and ground truth) as a zip; returns the file count."""
    job_dir = Path(job_dir)
    if not (job_dir / "job.json").is_file():
        raise JobRejected(f"{job_dir} is not a job folder (no job.json)", "Export the job from Blender first.", "missing_file")
    count = 0
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for root, dirs, files in os.walk(job_dir):
            rel_root = Path(root).relative_to(job_dir)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_NAMES and not d.startswith(".")
                             and not (rel_root == Path(".") and d == "result"))
            for name in sorted(files):
                if name in SKIP_NAMES or name.startswith(".") or name.endswith(".tmp"):
                    continue
                path = Path(root) / name
                zf.write(path, (rel_root / name).as_posix())
                count += 1
    return count


class _MultipartFile(io.RawIOBase):
    """A multipart/form-data body streamed from a file: preamble + file + epilogue."""

    def __init__(self, boundary: str, field: str, filename: str, fileobj: BinaryIO, size: int) -> None:
        self._pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                     f"Content-Type: application/zip\r\n\r\n").encode()
        self._post = f"\r\n--{boundary}--\r\n".encode()
        self._parts: list[BinaryIO] = [io.BytesIO(self._pre), fileobj, io.BytesIO(self._post)]
        self.length = len(self._pre) + size + len(self._post)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # http.client asks for 8 KiB; larger blocks upload faster
        want = max(n, 1 << 20) if n and n > 0 else -1
        while self._parts:
            chunk = self._parts[0].read(want)
            if chunk:
                return chunk
            self._parts.pop(0)
        return b""


def safe_extract_zip(archive: Path, dest: Path) -> None:
    """Extract a result zip, refusing absolute paths, '..' and links (a server is not trusted blindly)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            parts = [p for p in name.split("/") if p not in ("", ".")]
            mode = (info.external_attr >> 16) & 0xFFFF
            if ("\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts
                    or stat.S_ISLNK(mode)):
                raise RemoteError(f"the downloaded result holds an unsafe entry {name!r}", "Check the server.", "unsafe_result")
        for info in zf.infolist():
            parts = [p for p in info.filename.split("/") if p not in ("", ".")]
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


class RemoteClient:
    """Talks to one server with one token. Creating it does not contact the server."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, retries: int = 4,
                 reconnect_timeout_s: float = 600.0) -> None:
        parsed = urllib.parse.urlparse((url or "").strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RemoteError(f"server URL {url!r} is not an http(s) URL", "Use a URL like http://gpu-box:8642.", "bad_url")
        self.url = parsed.geturl().rstrip("/")
        self.token = (token or "").strip() or None
        self.timeout = timeout
        self.retries = retries
        self.reconnect_timeout_s = reconnect_timeout_s

    def __repr__(self) -> str:  # never show the token
        return f"RemoteClient({self.url!r}, token={'set' if self.token else 'none'})"

    # -- plumbing ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                 timeout: float | None = None):
        all_headers = {"Accept": "application/json", "User-Agent": "track4dgen-addon"}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=all_headers)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise _error_from_http(exc) from None
        except (urllib.error.URLError, HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnavailable(f"cannot reach the server at {self.url}: {reason}",
                                    "Check the server URL and that `track4dgen serve` is running.", "unreachable") from exc

    def _unavailable(self, exc: BaseException) -> ServerUnavailable:
        return ServerUnavailable(f"the connection to {self.url} failed: {exc}",
                                 "Check the network and that `track4dgen serve` is running.", "unreachable")

    def _json(self, method: str, path: str, retry: bool = True, **kw: Any) -> Any:
        """One JSON request; connection failures are retried (every call here is idempotent)."""
        attempts = self.retries if retry else 1
        for attempt in range(attempts):
            try:
                try:
                    with self._request(method, path, **kw) as resp:
                        raw = resp.read()
                except (OSError, HTTPException) as exc:  # dropped while reading the answer
                    raise self._unavailable(exc) from exc
                try:
                    return json.loads(raw.decode("utf-8"))
                except ValueError as exc:
                    raise RemoteError(f"the server at {self.url} did not answer with JSON",
                                      "Check that the URL points to `track4dgen serve`.", "bad_response") from exc
            except ServerUnavailable:
                if attempt == attempts - 1:
                    raise
                time.sleep(min(0.5 * 2 ** attempt, 5.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _job_path(job_id: str, suffix: str = "") -> str:
        return f"/v1/jobs/{urllib.parse.quote(str(job_id), safe='')}{suffix}"

    # -- API -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/v1/health")

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/jobs")["jobs"])

    def status(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", self._job_path(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", self._job_path(job_id, "/cancel"), body=b"")

    def submit(self, job_dir: str | Path, idempotency_key: str | None = None) -> str:
        """Upload a job folder; returns the job id. Retried uploads with one key make one job."""
        key = normalise_key(idempotency_key or uuid.uuid4().hex)
        with tempfile.TemporaryFile() as tmp:
            zip_job_folder(Path(job_dir), tmp)
            size = tmp.tell()
            try:
                limit = int(self.health().get("max_upload_bytes") or 0)
            except (RemoteError, ValueError, TypeError):
                limit = 0
            if limit and size > limit:
                raise UploadTooLarge(f"the zipped job is {size} bytes, the server accepts at most {limit}",
                                     "Lower the resolution or frame count, or ask the admin to raise --max-upload-mb.",
                                     "upload_too_large")
            for attempt in range(self.retries):
                tmp.seek(0)
                boundary = uuid.uuid4().hex
                body = _MultipartFile(boundary, "job", "job.zip", tmp, size)
                headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                           "Content-Length": str(body.length), "Idempotency-Key": key}
                try:
                    try:
                        with self._request("POST", "/v1/jobs", body=body, headers=headers,
                                           timeout=max(self.timeout, 300)) as resp:
                            return str(json.loads(resp.read().decode("utf-8"))["id"])
                    except (OSError, HTTPException) as exc:
                        raise self._unavailable(exc) from exc
                except ServerUnavailable:  # retried with the same key: never two jobs
                    if attempt == self.retries - 1:
                        raise
                    time.sleep(min(0.5 * 2 ** attempt, 5.0))
        raise AssertionError("unreachable")

    def events(self, job_id: str, include_state: bool = True) -> Iterator[dict[str, Any]]:
        """Progress dicts until the job ends: the runner's ``{"stage", "step", "total", "message",
        "eta_s"}`` and ``{"error", "message", "hint"}``; server state changes arrive as
        ``{"stage": "server", ..., "state": "queued|running|succeeded|..."}`` (skip them with
        ``include_state=False``). Reconnects after dropped connections, resuming where it was."""
        last_id = 0
        down_since: float | None = None
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = str(last_id)
            try:
                resp = self._request("GET", self._job_path(job_id, "/events"), headers=headers)
            except ServerUnavailable:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.reconnect_timeout_s:
                    raise
                time.sleep(1.0)
                continue
            down_since = None
            ended = False
            try:
                with resp:
                    for kind, data, event_id in _parse_sse(resp):
                        if event_id is not None and event_id.isdigit():
                            last_id = int(event_id)
                        if kind == "end":
                            ended = True
                            break
                        if kind == "state":
                            if include_state:
                                yield {"stage": "server", "step": 0, "total": 0, "eta_s": None,
                                       "message": data.get("message") or data.get("state", ""), "state": data.get("state")}
                            continue
                        yield data
            except (OSError, HTTPException, ValueError):
                pass  # connection dropped mid-stream: reconnect with Last-Event-ID
            if ended:
                return
            time.sleep(0.2)

    def wait(self, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll the status until the job ends (for scripts that do not need the event stream)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            st = self.status(job_id)
            if st.get("state") in TERMINAL_STATES:
                return st
            if deadline is not None and time.monotonic() > deadline:
                raise RemoteError(f"job {job_id} is still {st.get('state')} after {timeout_s} s", "Wait longer.", "timeout")
            time.sleep(poll_s)

    def download(self, job_id: str, dest_dir: str | Path) -> Path:
        """Download the result zip and unpack it as ``dest_dir`` (replaced in one rename)."""
        dest = Path(dest_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=dest.parent))
        try:
            archive = tmp_dir / "result.zip"
            try:
                with self._request("GET", self._job_path(job_id, "/result"), headers={"Accept": "application/zip"},
                                   timeout=max(self.timeout, 300)) as resp, open(archive, "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
            except (ConnectionError, TimeoutError, HTTPException) as exc:
                raise self._unavailable(exc) from exc
            unpacked = tmp_dir / "result"
            unpacked.mkdir()
            try:
                safe_extract_zip(archive, unpacked)
            except zipfile.BadZipFile as exc:
                raise RemoteError(f"the downloaded result is not a valid zip: {exc}", "Download it again.", "bad_result") from exc
            old = None
            if dest.exists():
                old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(dest, old)
            os.replace(unpacked, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return dest
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _parse_sse(resp) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """Minimal Server-Sent Events parser: yields (event, json data, id) per dispatched event."""
    kind, data_lines, event_id = "message", [], None
    while True:
        raw = resp.readline()
        if not raw:
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data_lines:
                yield kind, json.loads("\n".join(data_lines)), event_id
            kind, data_lines, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            kind = value
        elif field == "data":
            data_lines.append(value)
        elif field == "id":
            event_id = value
