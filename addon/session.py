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
from .import_mesh_animation import import_outputs
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


def check_backend(cfg: BackendConfig) -> None:
    """Fail before rendering anything when the backend cannot run at all."""
    if cfg.mode == "REMOTE":
        remote_client(cfg)
    else:
        runner.backend_python_or_raise(cfg.python)


class AnimateSession:
    """A started job for one source object. Drive it with :meth:`poll` (UI) or :meth:`run` (blocking)."""

    def __init__(self, source_name: str, job_dir: Path, info: dict[str, Any], job: runner._JobBase,
                 cfg: BackendConfig, mode: str = "OBJECT") -> None:
        self.source_name = source_name
        self.mode = mode  # what to import: OBJECT (animate a copy), GAUSSIANS or BOTH
        self.job_dir = job_dir
        self.info = info
        self.job = job
        self.cfg = cfg
        self.imported: bpy.types.Object | None = None

    # ----- lifecycle
    @classmethod
    def start(cls, context: bpy.types.Context, obj: bpy.types.Object, settings: job_io.JobSettings,
              cfg: BackendConfig, job_dir: str | Path | None = None, mode: str = "OBJECT") -> "AnimateSession":
        job_io.check_source_object(obj)
        settings.resolved()  # bad settings fail before any work
        check_backend(cfg)
        job_dir = Path(job_dir) if job_dir is not None else new_job_dir(cfg.jobs_dir, obj.name)
        info = job_io.prepare_job(context, obj, job_dir, settings)
        if cfg.mode == "REMOTE":
            job: runner._JobBase = runner.RemoteJob(remote_client(cfg), job_dir, job_dir / "result")
        else:
            job = runner.BackendJob(cfg.python, job_dir, job_dir / "result", env=cfg.env())
        job.start()
        return cls(obj.name, job_dir, info, job, cfg, mode)

    def poll(self) -> list[dict[str, Any]]:
        return self.job.poll()

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def finished(self) -> bool:
        return self.job.finished

    def error(self) -> AddonError | None:
        err = self.job.error
        if self.job.status != runner.FAILED:
            return None
        if err is None:
            return AddonError("the backend failed", f"See {self.job_dir / runner.LOG_NAME}.", "backend_failed")
        hint = err.hint or f"See {self.job_dir / runner.LOG_NAME}."
        if "job folder" not in hint.lower():
            hint = f"{hint} Job folder kept: {self.job_dir}"
        return AddonError(err.message, hint, err.code)

    def finish(self, context: bpy.types.Context) -> bpy.types.Object | None:
        """After the job ended: import on success, raise AddonError on failure, None if cancelled."""
        if self.job.status == runner.DONE:
            if self.imported is None:
                self.imported = import_outputs(self.mode, self.job.result_dir, context.scene,
                                               bpy.data.objects.get(self.source_name), placement=self.info)
                if not self.cfg.keep_jobs:
                    shutil.rmtree(self.job_dir, ignore_errors=True)
            return self.imported
        if self.job.status == runner.CANCELLED:
            return None
        err = self.error()
        if err is not None:
            raise err
        raise AddonError(f"the job is still {self.job.status}", "Wait for it to finish or cancel it.", "busy")

    def run(self, context: bpy.types.Context, timeout: float | None = None,
            on_event: Callable[[dict[str, Any]], None] | None = None) -> bpy.types.Object | None:
        """Blocking: wait for the backend, then :meth:`finish`."""
        self.job.wait(timeout=timeout, on_event=on_event)
        return self.finish(context)


# The run the UI is following (one at a time per Blender session).
ACTIVE: AnimateSession | None = None
