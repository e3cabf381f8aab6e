"""Run a backend job without blocking Blender: a local subprocess or a remote server job.

Blender's modal operators and ``bpy.app.timers`` never run in background mode (``blender -b``
or ``import bpy``), so the job runner is plain code with a non-blocking :meth:`poll`: the modal
operator calls it on every timer tick in the UI, while ``scripts/batch_animate.py`` and the tests
call :meth:`wait`, which polls in a loop. No bpy here: this module only moves bytes and events.

Local jobs run ``[python, "-m", "track4dgen", "run", JOB_DIR, "--out", RESULT_DIR]``. Its stdout
carries one JSON object per line: progress ``{"stage", "step", "total", "message", "eta_s"}`` or an
error ``{"error", "message", "hint"}``. A reader thread turns lines into events on a queue (pipes
cannot be read without blocking portably); stderr goes to ``backend.log`` in the job folder so a
crash keeps its traceback for inspection.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from .errors import AddonError

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
LOG_NAME = "backend.log"
# The one hint for a missing backend; the README's "In Blender" section describes the same button.
SETUP_HINT = ("Press Set Up Backend in Preferences › Add-ons › Track4DGen, or set Backend Python to an "
              "interpreter with track4dgen installed.")


@dataclass
class Progress:
    """The latest progress as the panel shows it."""

    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 0.0


@dataclass
class JobError:
    code: str
    message: str
    hint: str = ""


@dataclass
class _State:
    status: str = PENDING
    progress: Progress = field(default_factory=Progress)
    error: JobError | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def parse_line(line: str) -> dict[str, Any] | None:
    """One stdout line -> event dict, or None for anything that is not a JSON object.

    Non-JSON lines (warnings printed by libraries) are kept as ``{"log": line}`` so they show up in
    the log without being mistaken for progress.
    """
    line = line.strip()
    if not line:
        return None
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return {"log": line}
        return obj if isinstance(obj, dict) else {"log": line}
    return {"log": line}


def is_complete_result(path: str | Path) -> bool:
    """Same rule as the backend: the COMPLETE marker and the npz exist."""
    path = Path(path)
    return (path / "COMPLETE").is_file() and (path / "gaussians4d.npz").is_file()


class _JobBase:
    """Shared state machine: events update progress/error; subclasses feed the queue."""

    def __init__(self, job_dir: str | Path, result_dir: str | Path | None = None) -> None:
        self.job_dir = Path(job_dir)
        self.result_dir = Path(result_dir) if result_dir is not None else self.job_dir / "result"
        self._queue: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self._state = _State()
        self.started_at: float | None = None
        self.finished_at: float | None = None

    # ----- public, read-only view
    @property
    def status(self) -> str:
        return self._state.status

    @property
    def progress(self) -> Progress:
        return self._state.progress

    @property
    def error(self) -> JobError | None:
        return self._state.error

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._state.events)

    @property
    def finished(self) -> bool:
        return self._state.status in (DONE, FAILED, CANCELLED)

    # ----- event handling
    def _handle(self, event: dict[str, Any]) -> None:
        self._state.events.append(event)
        if "error" in event:
            self._state.error = JobError(str(event.get("error")), str(event.get("message", "")), str(event.get("hint", "")))
        elif "stage" in event:
            self._state.progress = Progress(
                stage=str(event.get("stage", "")),
                step=int(event.get("step", 0) or 0),
                total=int(event.get("total", 0) or 0),
                message=str(event.get("message", "") or ""),
                eta_s=event.get("eta_s"),
            )

    def _drain(self) -> list[dict[str, Any]]:
        new = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self._handle(event)
            new.append(event)
        return new

    def _fail(self, code: str, message: str, hint: str = "") -> None:
        if self._state.error is None:
            self._state.error = JobError(code, message, hint)
        self._state.status = FAILED
        self.finished_at = time.monotonic()

    def poll(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
             interval: float = 0.05) -> str:
        """Poll until the job finishes (batch mode / tests). Returns the final status.

        On timeout the job is cancelled and AddonError is raised, so nothing is left running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if self.finished:
                return self.status
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise AddonError(f"the backend job did not finish within {timeout:.0f} s",
                                 "Use a faster preset or raise the time limit.", "timeout")
            time.sleep(interval)


class BackendJob(_JobBase):
    """A local ``track4dgen run`` subprocess (or any command speaking the same line protocol)."""

    log_name = LOG_NAME

    def __init__(self, python: str, job_dir: str | Path, result_dir: str | Path | None = None,
                 env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        super().__init__(job_dir, result_dir)
        self.python = python
        self.command = command or [python, "-m", "track4dgen", "run", str(self.job_dir), "--out", str(self.result_dir)]
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._log = None
        self._cancel_requested = False

    @property
    def log_path(self) -> Path:
        return self.job_dir / self.log_name

    def _completed(self) -> bool:
        """After exit code 0: is the job's output really there?"""
        return is_complete_result(self.result_dir)

    def _incomplete(self) -> None:
        self._fail("incomplete_result", f"the backend exited without a complete result in {self.result_dir}",
                   f"See {self.log_path} for details.")

    def start(self) -> "BackendJob":
        if self.proc is not None:
            raise RuntimeError("job already started")
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive as they are printed
        # The backend watches its stdin: when this process dies the pipe closes and it stops
        # (track4dgen.lifeline); nothing is written to it.
        env["TRACK4DGEN_WATCH_STDIN"] = "1"
        # Blender sets PYTHONHOME/PYTHONPATH for its own interpreter; they would break another one.
        for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
            env.pop(key, None)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own process group: cancel reaches its children
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.PIPE,
                                         env=env, cwd=str(self.job_dir), **kwargs)
        except OSError as exc:
            self._log.close()
            raise AddonError(f"cannot start the backend {self.command[0]!r}: {exc.strerror or exc}",
                             "Set the backend Python in Preferences › Add-ons › Track4DGen.", "backend_missing") from exc
        self.started_at = time.monotonic()
        self._state.status = RUNNING
        self._reader = threading.Thread(target=self._read_stdout, name="track4dgen-reader", daemon=True)
        self._reader.start()
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            event = parse_line(raw.decode("utf-8", errors="replace"))
            if event is not None:
                self._queue.put(event)
        self.proc.stdout.close()

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def poll(self) -> list[dict[str, Any]]:
        """Collect new events and update the status; never blocks."""
        new = self._drain()
        if self.proc is None or self.finished:
            return new
        rc = self.proc.poll()
        if rc is None:
            return new
        if self._reader is not None:
            self._reader.join(timeout=5.0)  # the pipe is closed: the rest of stdout is in the queue
        new += self._drain()
        if self._log is not None:
            self._log.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.finished_at = time.monotonic()
        if self._cancel_requested:
            self._state.status = CANCELLED
            self._state.error = None  # the backend's own "cancelled" event is not a failure
        elif rc == 0 and self._completed():
            self._state.status = DONE
        elif rc == 0:
            self._incomplete()
        else:
            tail = self.log_tail()
            detail = f": {tail.splitlines()[-1]}" if tail else ""
            self._fail("backend_crashed", f"the backend exited with code {rc}{detail}",
                       f"The job folder is kept for inspection; see {self.log_path}.")
        return new

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the backend (its whole process group) and wait for it; idempotent."""
        if self.proc is None:
            self._state.status = CANCELLED
            return
        self._cancel_requested = True
        if self.proc.poll() is None:
            _terminate(self.proc, grace_s)
        self.poll()
        if not self.finished:  # poll() saw the exit before this call
            self._state.status = CANCELLED


class ToolJob(BackendJob):
    """A helper command speaking the same line protocol (backend set-up, weights download,
    weights check): success is exit code 0, there is no result folder; ``work_dir`` holds the log."""

    def __init__(self, command: list[str], work_dir: str | Path, log_name: str, env: dict[str, str] | None = None) -> None:
        super().__init__(command[0], work_dir, env=env, command=command)
        self.log_name = log_name

    def _completed(self) -> bool:
        return True

    @property
    def last_event(self) -> dict[str, Any] | None:
        """The last progress event (it carries the command's answer, e.g. the installed Python)."""
        for event in reversed(self._state.events):
            if "stage" in event:
                return event
        return None


def _terminate(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace_s``."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=grace_s)


class RemoteClientLike(Protocol):
    """What :class:`RemoteJob` needs from ``addon.client.RemoteClient``."""

    def submit(self, job_dir: str | Path, idempotency_key: str) -> str: ...
    def status(self, job_id: str) -> dict: ...
    def events(self, job_id: str) -> Iterable[dict]: ...
    def cancel(self, job_id: str) -> None: ...
    def download(self, job_id: str, dest_dir: str | Path) -> Any: ...


class RemoteJob(_JobBase):
    """A job on a ``track4dgen serve`` machine: upload, follow its events, download the result.

    The network calls block, so they run on one worker thread that feeds the same event queue;
    :meth:`poll` stays non-blocking and the UI code is identical for local and remote jobs.
    """

    def __init__(self, client: RemoteClientLike, job_dir: str | Path, result_dir: str | Path | None = None,
                 idempotency_key: str | None = None) -> None:
        super().__init__(job_dir, result_dir)
        self.client = client
        # the server accepts [A-Za-z0-9._:-]{1,128}; one key per started run
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.job_dir.name)[:80]
        self.idempotency_key = idempotency_key or f"t4dg-{safe}-{time.time_ns()}"
        self.job_id: str | None = None
        self._worker: threading.Thread | None = None
        self._cancel = threading.Event()
        self._outcome: tuple[str, JobError | None] | None = None

    def start(self) -> "RemoteJob":
        self._state.status = RUNNING
        self.started_at = time.monotonic()
        self._worker = threading.Thread(target=self._work, name="track4dgen-remote", daemon=True)
        self._worker.start()
        return self

    def _work(self) -> None:
        try:
            self._queue.put({"stage": "upload", "step": 0, "total": 1, "message": "uploading job", "eta_s": None})
            self.job_id = self.client.submit(self.job_dir, self.idempotency_key)
            for event in self.client.events(self.job_id):
                if self._cancel.is_set():
                    break
                self._queue.put(dict(event))
                if "error" in event:
                    break
            if self._cancel.is_set():
                self._outcome = (CANCELLED, None)
                return
            status = self.client.status(self.job_id)
            state = str(status.get("state", status.get("status", "")))
            if state not in ("done", "succeeded", "complete", "completed"):
                err = status.get("error") or {}
                if isinstance(err, str):
                    err = {"error": err}
                self._outcome = (FAILED, JobError(str(err.get("error", "remote_failed")),
                                                  str(err.get("message", f"remote job {self.job_id} ended as {state!r}")),
                                                  str(err.get("hint", "See the server log."))))
                return
            self._queue.put({"stage": "download", "step": 0, "total": 1, "message": "downloading result", "eta_s": None})
            self.client.download(self.job_id, self.result_dir)
            if not is_complete_result(self.result_dir):
                self._outcome = (FAILED, JobError("incomplete_result", f"the downloaded result in {self.result_dir} is incomplete",
                                                  "Download it again or re-run the job."))
                return
            self._outcome = (DONE, None)
        except Exception as exc:  # network and server errors end the job with their message
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            hint = getattr(exc, "hint", "") or "Check the server URL and token in Preferences › Add-ons › Track4DGen."
            self._outcome = (FAILED, JobError(getattr(exc, "code", "remote_error"), message, hint))

    def poll(self) -> list[dict[str, Any]]:
        new = self._drain()
        if self.finished or self._worker is None or self._worker.is_alive():
            return new
        new += self._drain()
        status, err = self._outcome or (FAILED, JobError("remote_error", "the remote worker stopped unexpectedly"))
        if self._cancel.is_set():
            status, err = CANCELLED, None
        if err is not None and self._state.error is None:
            self._state.error = err
        if status == FAILED and self._state.error is None:
            self._state.error = JobError("remote_failed", "the remote job failed")
        self._state.status = status
        self.finished_at = time.monotonic()
        return new

    def cancel(self) -> None:
        self._cancel.set()
        if self.job_id is not None:
            try:
                self.client.cancel(self.job_id)
            except Exception:  # best effort: the local side is cancelled either way
                pass
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        self.poll()
        if not self.finished:
            self._state.status = CANCELLED
            self.finished_at = time.monotonic()


def python_can_import_backend(python: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Check an interpreter: returns (ok, version-or-error). Used by preferences and the operator."""
    if not python:
        return False, "no backend Python is set"
    if not Path(python).exists():
        return False, f"{python} does not exist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    try:
        out = subprocess.run([python, "-c", "import track4dgen; print(track4dgen.__version__)"], capture_output=True,
                             text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{python} could not be run: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, f"{python} cannot import track4dgen ({last})"
    return True, out.stdout.strip()


def detect_backend_python(addon_root: str | Path | None = None, setup_env: str | Path | None = None) -> str:
    """Best guess for the backend interpreter, '' when none is found.

    Order: $TRACK4DGEN_PYTHON, the environment made by *Set Up Backend* (``setup_env``), the
    project's venv next to the add-on (a development checkout: ``<repo>/.venv``), then the
    interpreter of a ``track4dgen`` script on PATH.
    """
    env = os.environ.get("TRACK4DGEN_PYTHON")
    if env:
        return env
    root = Path(addon_root) if addon_root is not None else Path(__file__).resolve().parents[1]
    candidates = [Path(setup_env) / rel for rel in ("bin/python", "Scripts/python.exe")] if setup_env else []
    candidates += [root / rel for rel in (".venv/bin/python", ".venv/Scripts/python.exe", "venv/bin/python")]
    for cand in candidates:
        if cand.exists():
            return str(cand)
    import shutil

    script = shutil.which("track4dgen")
    if script:
        try:
            first = Path(script).read_text(errors="replace").splitlines()[0]
        except (OSError, IndexError):
            first = ""
        if first.startswith("#!") and Path(first[2:].strip().split()[0]).exists():
            return first[2:].strip().split()[0]
    return ""


def backend_python_or_raise(python: str) -> str:
    """Validate the configured interpreter before a job starts (clear error, not a crash later)."""
    if not python:
        raise AddonError("the Track4DGen backend is not installed", SETUP_HINT, "backend_missing")
    ok, detail = python_can_import_backend(python)
    if not ok:
        raise AddonError(f"the backend cannot be used: {detail}", SETUP_HINT, "backend_missing")
    return python

