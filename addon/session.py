"""One "animate this object" run: write the job, run the backend, import the result.

This is the single code path behind the N-panel button (polled by a modal operator), the
operator's blocking ``execute`` (scripts, ``blender -b``), ``scripts/batch_animate.py`` and the
tests. Nothing is added to the user's scene until the backend has finished successfully, so a
cancelled or failed run leaves the scene as it was; a failed run keeps its job folder (with
``backend.log``) for inspection.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import bpy

from . import job_io, runner
from .errors import AddonError
from .import_mesh_animation import animate_object, import_outputs
from .preferences import BackendConfig, remote_client


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "object"


def new_job_dir(jobs_dir: str | Path, obj_name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(jobs_dir) / f"{_safe_name(obj_name)}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def job_folders(jobs_dir: str | Path) -> list[Path]:
    """The add-on's job folders in ``jobs_dir`` (folders holding a job.json or blender.json), oldest first."""
    root = Path(jobs_dir)
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if d.is_dir() and ((d / "job.json").is_file() or (d / job_io.BLENDER_JSON).is_file())]
    return sorted(found, key=lambda d: d.stat().st_mtime)


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cleanup_jobs(jobs_dir: str | Path, older_than_days: float | None = None) -> tuple[int, int]:
    """Delete finished job folders (all, or those older than ``older_than_days``); never the
    running job's. Returns (folders removed, bytes freed)."""
    keep = {Path(ACTIVE.job_dir).resolve()} if ACTIVE is not None and not ACTIVE.finished else set()
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400.0
    removed, freed = 0, 0
    for folder in job_folders(jobs_dir):
        if folder.resolve() in keep or (cutoff is not None and folder.stat().st_mtime > cutoff):
            continue
        size = _folder_size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed, freed = removed + 1, freed + size
    return removed, freed


def cleanup_old_jobs(cfg: BackendConfig) -> None:
    """The retention preference: when a job starts, remove finished jobs older than it allows."""
    if cfg.keep_days > 0:
        cleanup_jobs(cfg.jobs_dir, older_than_days=cfg.keep_days)


CHECK_LOG = "backend-check.log"
CHECK_LABEL = "Checking the backend and weights"
IMPORT_LABEL = "Importing"
# Shares of the one progress bar outside the backend (measured: four 256 px Cycles views take
# ~4 % of a Standard job on a CPU, the import ~1 %); the backend's own "overall" fills the rest.
RENDER_SHARE, IMPORT_SHARE = 0.04, 0.01


def check_command(cfg: BackendConfig, settings: job_io.JobSettings) -> list[str]:
    """Ask the backend, offline, whether this job's model can run here (``weights path --json``)."""
    cmd = [cfg.python, "-m", "track4dgen", "weights", "path", "--json", "--model", settings.model]
    path = settings.weights.get("path") if isinstance(settings.weights, dict) else None
    return cmd + ([str(path)] if path else [])


def start_check(cfg: BackendConfig, settings: job_io.JobSettings) -> runner.ToolJob | None:
    """Start the backend/weights check in the background (None in remote mode: the server checks)."""
    if cfg.mode == "REMOTE":
        remote_client(cfg)
        return None
    if not cfg.python:
        runner.backend_python_or_raise(cfg.python)
    if not Path(cfg.python).exists():
        raise AddonError(f"the backend cannot be used: {cfg.python} does not exist", runner.SETUP_HINT, "backend_missing")
    Path(cfg.jobs_dir).mkdir(parents=True, exist_ok=True)
    return runner.ToolJob(check_command(cfg, settings), cfg.jobs_dir, CHECK_LOG, env=cfg.env()).start()


def check_outcome(check: runner.ToolJob, cfg: BackendConfig, settings: job_io.JobSettings) -> None:
    """Turn the finished check into nothing (all good) or one plain AddonError; details stay in the log."""
    answer = next((e for e in reversed(check.events) if "ok" in e), None)
    if answer is None:  # the interpreter ran but could not answer: no backend, or a broken one
        tail = check.log_tail(1) or "no answer"
        raise AddonError(f"the backend cannot be used: {cfg.python} cannot import track4dgen ({tail})",
                         f"{runner.SETUP_HINT} Details: {check.log_path}", "backend_missing")
    if answer.get("ok"):
        return
    if settings.weights.get("path"):
        raise AddonError(f"The Weights Folder is not usable: {answer.get('message', '')}.",
                         "Set Weights Folder to a folder made with `track4dgen weights convert`, or clear it to use "
                         "downloaded weights.", "missing_weights")
    raise AddonError("The Animate3D weights are not on this computer.",
                     "Press Download Weights (or run `track4dgen weights download`; several GB), set Weights Folder to a "
                     "converted copy, or choose the Tiny (test) model in the preferences.", "missing_weights")


def check_backend(cfg: BackendConfig, settings: job_io.JobSettings | None = None, timeout: float = 300.0) -> None:
    """Blocking: fail before rendering anything when the backend (or, given settings, the model's
    weights) cannot run. ``scripts/batch_animate.py`` calls it once for all objects."""
    if settings is None:
        if cfg.mode == "REMOTE":
            remote_client(cfg)
        else:
            runner.backend_python_or_raise(cfg.python)
        return
    check = start_check(cfg, settings)
    if check is not None:
        check.wait(timeout=timeout)
        check_outcome(check, cfg, settings)


def plain_message(message: str, limit: int = 200) -> str:
    """One readable line for the panel: a library's multi-line error (or a traceback) keeps only
    its last meaningful line here; the full text stays in backend.log."""
    lines = [ln.strip() for ln in str(message).strip().splitlines() if ln.strip()]
    if not lines:
        return "the backend failed"
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


class AnimateSession:
    """One "animate this object" run, advanced by :meth:`step` (UI timer) or :meth:`run` (blocking).

    Phases: ``check`` (the backend answers whether it and the weights are there, in the background)
    -> ``render`` (one conditioning view per step) -> ``run`` (the backend job) -> import in
    :meth:`finish`. Built directly (job already running) it starts in ``run``.
    """

    def __init__(self, source_name: str, job_dir: Path, info: dict[str, Any] | None, job: runner._JobBase | None,
                 cfg: BackendConfig, mode: str = "OBJECT") -> None:
        self.source_name = source_name
        self.mode = mode  # what to import: OBJECT (animate a copy), GAUSSIANS or BOTH
        self.job_dir = job_dir
        self.info = info
        self.job = job
        self.cfg = cfg
        self.imported: bpy.types.Object | None = None
        self.phase = "run" if job is not None else "check"
        self.sources: list[str] = [source_name]
        self.settings: job_io.JobSettings | None = None
        self._check: runner.ToolJob | None = None
        self._steps = None  # the prepare_job_steps generator while rendering
        self._rendered = (0, 4)
        self._error: AddonError | None = None
        self.import_shown = False  # the UI showed "Importing" before the (blocking) import

    # ----- lifecycle
    @classmethod
    def begin(cls, context: bpy.types.Context, objs, settings: job_io.JobSettings, cfg: BackendConfig,
              job_dir: str | Path | None = None, checked: bool = False, mode: str = "OBJECT") -> "AnimateSession":
        """Validate and start the check; nothing is rendered yet (call :meth:`step`)."""
        objs = list(objs) if isinstance(objs, (list, tuple)) else [objs]
        for obj in objs:
            job_io.check_source_object(obj)
        settings = settings.resolved()  # bad settings fail before any work
        name = objs[0].name if len(objs) == 1 else f"{objs[0].name}+{len(objs) - 1}"
        job_dir = Path(job_dir) if job_dir is not None else new_job_dir(cfg.jobs_dir, name)
        sess = cls(objs[0].name, job_dir, None, None, cfg, mode)
        sess.sources = [o.name for o in objs]
        sess.settings = settings
        if checked:
            if cfg.mode == "REMOTE":
                remote_client(cfg)
            sess._begin_render(context)
        else:
            sess._check = start_check(cfg, settings)
            if sess._check is None:  # remote: nothing to wait for
                sess._begin_render(context)
        return sess

    @classmethod
    def start(cls, context: bpy.types.Context, obj, settings: job_io.JobSettings, cfg: BackendConfig,
              job_dir: str | Path | None = None, checked: bool = False, mode: str = "OBJECT") -> "AnimateSession":
        """Blocking until the backend job runs: check, render, start (scripts and tests)."""
        sess = cls.begin(context, obj, settings, cfg, job_dir, checked, mode)
        while sess.phase in ("check", "render"):
            sess.step(context)
            if sess.phase == "check":
                time.sleep(0.05)
        err = sess.error()
        if err is not None:
            raise err
        return sess

    def _begin_render(self, context: bpy.types.Context) -> None:
        self.phase = "render"
        objs = [bpy.data.objects[n] for n in self.sources]
        self._steps = job_io.prepare_job_steps(context, objs, self.job_dir, self.settings)

    def _fail(self, err: AddonError) -> None:
        self._error = err
        self.phase = "failed"
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def step(self, context: bpy.types.Context) -> None:
        """Advance without blocking for long: poll the check or the job, or render one view."""
        try:
            if self.phase == "check":
                self._check.poll()
                if self._check.finished:
                    check_outcome(self._check, self.cfg, self.settings)
                    self._begin_render(context)
            elif self.phase == "render":
                try:
                    self._rendered = next(self._steps)
                except StopIteration as done:
                    self._steps = None
                    self.info = done.value
                    self._start_job()
            elif self.phase == "run":
                self.job.poll()
        except AddonError as err:
            self._fail(err)

    def _start_job(self) -> None:
        if self.cfg.mode == "REMOTE":
            self.job = runner.RemoteJob(remote_client(self.cfg), self.job_dir, self.job_dir / "result")
        else:
            self.job = runner.BackendJob(self.cfg.python, self.job_dir, self.job_dir / "result", env=self.cfg.env())
        self.job.start()
        self.phase = "run"

    def poll(self) -> list[dict[str, Any]]:
        return self.job.poll() if self.phase == "run" else []

    def cancel(self) -> None:
        if self._check is not None and not self._check.finished:
            self._check.cancel()
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        if self.job is not None:
            self.job.cancel()
        elif self.phase in ("check", "render"):
            self.phase = "cancelled"

    @property
    def status(self) -> str:
        if self.phase == "failed":
            return runner.FAILED
        if self.phase == "cancelled":
            return runner.CANCELLED
        if self.job is None:
            return runner.RUNNING
        return self.job.status

    @property
    def finished(self) -> bool:
        return self.status in (runner.DONE, runner.FAILED, runner.CANCELLED)

    def overall(self) -> tuple[float, str, float | None]:
        """(fraction of the whole job, plain stage name, seconds left or None) for the one bar."""
        if self.phase == "check":
            return 0.0, CHECK_LABEL, None
        if self.phase == "render":
            done, total = self._rendered
            label = f"{job_io.RENDER_STEP_LABEL} ({min(done + 1, total)} of {total})"
            return RENDER_SHARE * done / max(total, 1), label, None
        if self.job is None:
            return 0.0, "", None
        if self.job.status == runner.DONE:
            return (1.0, "Done", 0.0) if self.imported is not None else (1.0 - IMPORT_SHARE, IMPORT_LABEL, None)
        p = self.job.progress
        event = next((e for e in reversed(self.job.events) if "stage" in e), {})
        backend = event.get("overall")
        if not isinstance(backend, (int, float)):
            backend = p.fraction  # an older backend: the current stage's own fraction
        eta = event.get("overall_eta_s", p.eta_s)
        label = str(event.get("label") or p.stage or "Starting the backend")
        frac = RENDER_SHARE + (1.0 - RENDER_SHARE - IMPORT_SHARE) * float(backend)
        return frac, label, (float(eta) if isinstance(eta, (int, float)) else None)

    def error(self) -> AddonError | None:
        if self._error is not None:
            return self._error
        if self.job is None:
            return None
        err = self.job.error
        if self.job.status != runner.FAILED:
            return None
        if err is None:
            return AddonError("the backend failed", f"See {self.job_dir / runner.LOG_NAME}.", "backend_failed")
        hint = err.hint or f"See {self.job_dir / runner.LOG_NAME}."
        if "job folder" not in hint.lower():
            hint = f"{hint} Job folder kept: {self.job_dir}"
        return AddonError(plain_message(err.message), hint, err.code)

    def finish(self, context: bpy.types.Context) -> bpy.types.Object | None:
        """After the job ended: import on success, raise AddonError on failure, None if cancelled."""
        if self.status == runner.DONE:
            if self.imported is None:
                self.imported = import_outputs(self.mode, self.job.result_dir, context.scene,
                                               bpy.data.objects.get(self.source_name), placement=self.info)
                if self.mode in ("OBJECT", "BOTH"):
                    self._animate_other_sources(context)
                if not self.cfg.keep_jobs:
                    shutil.rmtree(self.job_dir, ignore_errors=True)
            return self.imported
        if self.status == runner.CANCELLED:
            return None
        err = self.error()
        if err is not None:
            raise err
        raise AddonError(f"the job is still {self.status}", "Wait for it to finish or cancel it.", "busy")

    def _animate_other_sources(self, context: bpy.types.Context) -> None:
        """Several meshes were joined (in world space) for one job: each gets its own animated copy,
        its vertices matched to the joined result through its own world matrix."""
        for name in self.sources[1:]:
            obj = bpy.data.objects.get(name)
            if obj is None or obj.type != "MESH":
                continue
            info = {**(self.info or {}), "source_matrix_world": [list(row) for row in obj.matrix_world]}
            animate_object(obj, self.job.result_dir, context.scene, placement=info)

    def run(self, context: bpy.types.Context, timeout: float | None = None,
            on_event: Callable[[dict[str, Any]], None] | None = None) -> bpy.types.Object | None:
        """Blocking: advance to the backend job, wait for it, then :meth:`finish`."""
        while self.phase in ("check", "render"):
            self.step(context)
            if self.phase == "check":
                time.sleep(0.05)
        if self.job is not None:
            self.job.wait(timeout=timeout, on_event=on_event)
        return self.finish(context)


# The run the UI is following (one at a time per Blender session).
ACTIVE: AnimateSession | None = None
# The weights download the panel follows (operators.TRACK4DGEN_OT_download_weights).
DOWNLOAD: runner.ToolJob | None = None


def download_running() -> bool:
    return DOWNLOAD is not None and not DOWNLOAD.finished
