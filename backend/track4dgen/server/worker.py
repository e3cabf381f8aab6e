"""GPU workers: run each queued job as its own ``track4dgen run`` subprocess.

Why a subprocess per job: a crash, a CUDA out-of-memory or a leak in one job cannot take the server
down or poison the next job, and cancelling is simply terminating the job's process group. The
subprocess prints one JSON progress event per line on stdout (the same events as a local run);
the worker stores each one so status and the event stream survive a server restart.

Durability: the worker passes ``--checkpoint-dir`` so a job interrupted by ``kill -9`` of the
server resumes from Stage Two's last checkpoint when the restarted server runs it again. On Linux
the subprocess gets ``PR_SET_PDEATHSIG`` so it dies with the server; on start-up any survivor that
still runs an interrupted job is killed before the job is re-queued, so two runs never write the
same folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..job import is_complete_result
from .store import JobStore

log = logging.getLogger("track4dgen.server")


@dataclass
class WorkerSettings:
    data_dir: Path
    poll_interval_s: float = 0.25
    max_attempts: int = 3
    kill_grace_s: float = 5.0
    python: str = sys.executable
    devices: list[str] | None = None  # CUDA_VISIBLE_DEVICES per worker; None = inherit
    extra_env: dict[str, str] = field(default_factory=dict)
    max_job_s: float = 0.0  # wall-time limit per run (0 = none)
    max_job_rss_bytes: int = 0  # resident memory limit of a job's runner (0 = none)
    db_retry_s: float = 1.0  # first wait after a failed database write (doubles up to 30 s)


class JobPaths:
    """Where a job's files live inside the data folder (the database never stores paths)."""

    def __init__(self, data_dir: Path, job_id: str) -> None:
        self.root = Path(data_dir) / "jobs" / job_id
        self.input = self.root / "input"
        self.result = self.root / "result"
        self.checkpoints = self.root / "checkpoints"
        self.log = self.root / "runner.log"
        self.zip = self.root / "result.zip"


# -- what clients may see -----------------------------------------------------------------------

_ABS_DIRS = re.compile(r"(?<![\w.:/])/(?:[\w.\-+@~]+/)+")


def scrub_paths(value: Any, known: dict[str, str]) -> Any:
    """``value`` (str, or dicts/lists of them) without server paths: each ``known`` prefix becomes its
    replacement (longest first), and any other absolute path keeps only its file name."""
    if isinstance(value, str):
        for prefix in sorted(known, key=len, reverse=True):
            value = value.replace(prefix, known[prefix])
        return _ABS_DIRS.sub("", value)
    if isinstance(value, dict):
        return {k: scrub_paths(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_paths(v, known) for v in value]
    return value


def job_path_names(paths: JobPaths, data_dir: Path) -> dict[str, str]:
    return {f"{paths.input}/": "", str(paths.input): "the job folder", f"{paths.result}.": "result",
            str(paths.result): "result", f"{paths.root}/": "", str(paths.root): "the job",
            str(data_dir): "the server's data folder"}


# -- process helpers ---------------------------------------------------------------------------

def _make_pdeathsig() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGKILL the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def _preexec() -> None:  # runs in the forked child: no locks, no allocation-heavy work
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return _preexec


_PDEATHSIG = _make_pdeathsig()


def runs_job(pid: int, job_id: str) -> bool:
    """Does process ``pid`` still run this job? (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return job_id.encode() in cmdline


def kill_group(pid: int, grace_s: float, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM the job's process group, then SIGKILL whatever is left after ``grace_s``.

    ``reap`` (``Popen.poll`` for our own child) collects the exited leader: an unreaped zombie
    would keep the group "alive" and make every cancel wait the whole grace period.
    """
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)


def runner_command(python: str, paths: JobPaths) -> list[str]:
    return [python, "-m", "track4dgen", "run", str(paths.input), "--out", str(paths.result),
            "--checkpoint-dir", str(paths.checkpoints)]


# -- results -----------------------------------------------------------------------------------

_zip_lock = threading.Lock()


def result_zip(paths: JobPaths) -> Path:
    """The result folder as one zip (made once, atomically, then reused for every download)."""
    with _zip_lock:
        if paths.zip.is_file():
            return paths.zip
        tmp = paths.zip.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for f in sorted(paths.result.rglob("*")):
                if f.is_file() and not f.is_symlink():
                    zf.write(f, f.relative_to(paths.result).as_posix())
        os.replace(tmp, paths.zip)
        return paths.zip


# -- recovery and retention ------------------------------------------------------------------

def recover_interrupted(store: JobStore, settings: WorkerSettings) -> tuple[list[str], list[str]]:
    """Re-queue jobs a dead server left ``running``; returns (re-queued ids, ids failed for good).

    A job that was already interrupted ``max_attempts`` times fails instead, so a job that kills
    the server (e.g. exhausts host memory) cannot crash-loop it forever. Graceful shutdowns
    re-queue without counting.
    """
    requeued, failed = [], []
    for row in store.interrupted():
        job_id = row["id"]
        if row["pid"] and runs_job(int(row["pid"]), job_id):
            log.warning("job %s: killing leftover runner process group %s", job_id, row["pid"])
            kill_group(int(row["pid"]), grace_s=0.0)
        if row["cancel_requested"]:
            store.finish(job_id, "cancelled", message="cancelled (server restarted)")
        elif row["interruptions"] + 1 >= settings.max_attempts:
            store.finish(job_id, "failed", error={
                "error": "interrupted", "message": f"the job was interrupted {row['interruptions'] + 1} times",
                "hint": "Check the server's memory and GPU; resubmit the job."})
            failed.append(job_id)
        else:
            store.requeue(job_id, "re-queued after a server restart; resumes from its last checkpoint", interrupted=True)
            requeued.append(job_id)
    return requeued, failed


def clean_data_dir(store: JobStore, data_dir: Path) -> None:
    """Remove staging leftovers and job folders with no database row (upload died mid-way)."""
    shutil.rmtree(data_dir / "tmp", ignore_errors=True)
    (data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    jobs = data_dir / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    known = store.all_ids()
    for child in jobs.iterdir():
        if child.name not in known:
            shutil.rmtree(child, ignore_errors=True)


def remove_expired(store: JobStore, data_dir: Path, retention_s: float) -> list[str]:
    removed = []
    for job_id in store.expired(retention_s):
        shutil.rmtree(JobPaths(data_dir, job_id).root, ignore_errors=True)
        store.mark_expired(job_id)
        removed.append(job_id)
    return removed


class Janitor(threading.Thread):
    """Deletes finished jobs' files once their retention time has passed."""

    def __init__(self, store: JobStore, data_dir: Path, retention_s: float, interval_s: float, stop: threading.Event) -> None:
        super().__init__(name="track4dgen-janitor", daemon=True)
        self.store, self.data_dir, self.stop = store, data_dir, stop
        self.retention_s, self.interval_s = retention_s, interval_s

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for job_id in remove_expired(self.store, self.data_dir, self.retention_s):
                    log.info("job %s: result removed after the retention time", job_id)
            except Exception:  # keep the janitor alive; the next round retries
                log.exception("retention clean-up failed")
            self.stop.wait(self.interval_s)


# -- the worker ----------------------------------------------------------------------------------

def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the runner may start ffmpeg), from /proc."""
    total = 0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class Worker(threading.Thread):
    """Claims queued jobs one at a time and runs them; one worker per GPU.

    Database writes that fail (a full disk, a locked or damaged file) never end the thread: each is
    retried with back-off until it succeeds or the server stops, and ``db_error`` says what is wrong
    meanwhile so ``/v1/health`` reports the server as degraded.
    """

    def __init__(self, index: int, store: JobStore, settings: WorkerSettings, stop: threading.Event) -> None:
        super().__init__(name=f"track4dgen-worker-{index}", daemon=True)
        self.index, self.store, self.settings, self.stop = index, store, settings, stop
        self.current: str | None = None
        self.db_error: str | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                row = self.store.claim_next(self.index)
                self.db_error = None
            except Exception as exc:
                log.exception("worker %d: claiming a job failed", self.index)
                self.db_error = f"claiming a job failed: {exc}"
                self.stop.wait(self.settings.db_retry_s)
                continue
            if row is None:
                self.stop.wait(self.settings.poll_interval_s)
                continue
            self.current = row["id"]
            try:
                self.run_job(row["id"])
            except Exception as exc:  # the server must survive anything a job does
                log.exception("job %s: worker error", row["id"])
                self.persist(f"failing job {row['id']}", self.store.finish, row["id"], "failed", error={
                    "error": "server_error", "message": f"the worker failed: {scrub_paths(str(exc), {})}",
                    "hint": "See the server log."})
            finally:
                self.current = None

    def persist(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Run a database write, retrying with back-off until it succeeds (True) or the server stops."""
        wait = self.settings.db_retry_s
        while True:
            try:
                fn(*args, **kwargs)
                self.db_error = None
                return True
            except Exception as exc:
                self.db_error = f"{what}: {exc}"
                log.error("worker %d: %s failed (%s); retrying in %.0f s", self.index, what, exc, wait)
                if self.stop.wait(wait):
                    return False
                wait = min(wait * 2, 30.0)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("TRACK4DGEN_TOKENS", None)  # the job never needs the server's secrets
        devices = self.settings.devices
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[self.index % len(devices)]
        return env

    def _over_limit(self, pid: int, started: float) -> str | None:
        s = self.settings
        if s.max_job_s > 0 and time.monotonic() - started > s.max_job_s:
            return "time_limit"
        if s.max_job_rss_bytes > 0 and _rss_bytes(pid) > s.max_job_rss_bytes:
            return "memory_limit"
        return None

    def run_job(self, job_id: str) -> None:
        paths = JobPaths(self.settings.data_dir, job_id)
        names = job_path_names(paths, self.settings.data_dir)
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(paths.result, ignore_errors=True)  # a partial result of an interrupted run
        log.info("job %s: starting on worker %d", job_id, self.index)
        last_error: dict[str, Any] | None = None
        lost_events = 0
        outcome: str | None = None  # set before the runner is stopped; read by the event reader
        with open(paths.log, "ab") as log_file:
            proc = subprocess.Popen(runner_command(self.settings.python, paths), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log_file, env=self._env(),
                                    start_new_session=True, preexec_fn=_PDEATHSIG, cwd=paths.root)
            started = time.monotonic()
            self.persist(f"recording job {job_id}'s process", self.store.set_pid, job_id, proc.pid)

            def read_events() -> None:
                # Keeps draining the runner's stdout whatever the database does: a reader that
                # stopped would block the runner on a full pipe. A failed write is counted, not fatal.
                nonlocal last_error, lost_events  # ``outcome`` is only read here
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line:
                        continue
                    try:
                        event = json.loads(line)
                    except (json.JSONDecodeError, RecursionError):
                        event = None
                    try:
                        if not isinstance(event, dict):  # plain prints go to the log, not the stream
                            log_file.write(raw)
                            log_file.flush()
                            continue
                        event = scrub_paths(event, names)
                        if "error" in event:
                            if outcome == "shutdown":  # the job is re-queued, not failed: keep clients following
                                log_file.write(raw)
                                continue
                            last_error = event
                        self.store.add_event(job_id, event)
                        self.db_error = None
                    except Exception as exc:
                        lost_events += 1
                        self.db_error = f"storing job {job_id}'s progress: {exc}"
                        if lost_events == 1:
                            log.error("job %s: storing an event failed (%s); later failures are counted", job_id, exc)

            reader = threading.Thread(target=read_events, name=f"events-{job_id[:8]}", daemon=True)
            reader.start()
            while proc.poll() is None:
                if self.stop.is_set():
                    outcome = "shutdown"
                elif self._cancel_requested(job_id):
                    outcome = "cancelled"
                else:
                    outcome = self._over_limit(proc.pid, started)
                if outcome:
                    kill_group(proc.pid, self.settings.kill_grace_s, reap=proc.poll)
                    break
                try:
                    proc.wait(timeout=self.settings.poll_interval_s)
                except subprocess.TimeoutExpired:
                    pass
            rc = proc.wait()
            reader.join(timeout=10)
        if outcome == "shutdown":
            self.persist(f"re-queuing job {job_id}", self.store.requeue, job_id,
                         "re-queued: the server is shutting down; resumes from its last checkpoint")
            return
        if outcome == "cancelled":
            self.persist(f"cancelling job {job_id}", self.store.finish, job_id, "cancelled", message="cancelled while running")
        elif outcome == "time_limit":
            minutes = self.settings.max_job_s / 60
            self._fail(job_id, {"error": "time_limit", "message": f"the job ran longer than the server's limit of {minutes:g} minutes",
                                "hint": "Lower the iteration counts or the resolution, or ask the admin to raise --max-job-minutes."})
        elif outcome == "memory_limit":
            gb = self.settings.max_job_rss_bytes / (1 << 30)
            self._fail(job_id, {"error": "memory_limit", "message": f"the job used more than the server's limit of {gb:.3g} GB of memory",
                                "hint": "Lower num_gaussians, batch_images or the resolution, or ask the admin to raise --max-job-memory-gb."})
        elif rc == 0 and is_complete_result(paths.result):  # the result is intact even if some progress was lost
            self.persist(f"finishing job {job_id}", self.store.finish, job_id, "succeeded", message="result ready")
        elif lost_events and last_error is None:
            self._fail(job_id, {"error": "server_error", "message": f"the server could not record {lost_events} of the job's "
                                "progress events (its database could not be written: full disk?)",
                                "hint": "Ask the admin to check the server's disk, then resubmit the job."})
        else:
            tail = scrub_paths(_tail(paths.log), names)
            error = last_error or {"error": "runner_failed", "message": f"the runner exited with code {rc}: {tail}",
                                   "hint": "See runner.log in the job's server folder."}
            if rc == 0 and last_error is None:
                error = {"error": "incomplete_result", "message": "the runner finished without a complete result folder",
                         "hint": "See runner.log in the job's server folder."}
            self._fail(job_id, error)
        log.info("job %s: %s (exit code %s)", job_id, outcome or ("succeeded" if rc == 0 else "failed"), rc)

    def _fail(self, job_id: str, error: dict[str, Any]) -> None:
        self.persist(f"failing job {job_id}", self.store.finish, job_id, "failed", error=error, message=error.get("message", ""))

    def _cancel_requested(self, job_id: str) -> bool:
        try:
            return self.store.cancel_requested(job_id)
        except Exception as exc:  # a read failure must not stop the job; the next poll asks again
            self.db_error = f"reading job {job_id}'s cancel flag: {exc}"
            return False


def _tail(path: Path, n: int = 600) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip().replace("\n", " | ")
