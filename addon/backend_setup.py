"""Create the backend's Python environment: a virtual environment, PyTorch, then ``track4dgen``.

The backend (PyTorch, models) must not live inside Blender's Python, so -- like the diffusion
add-ons that install their own dependencies -- the add-on creates a separate virtual environment
and installs into it with pip, in a background process. This file is that process: it uses the
standard library only and runs under any Python >= 3.10 (Blender's own or a system one)::

    python backend_setup.py --env DIR --source WHEEL_OR_CHECKOUT [--torch-index auto|default|URL]
                            [--gpu auto|yes|no] [--no-deps] [--system-site-packages]

Steps: ``python -m venv DIR`` (kept when it exists), ``pip install torch==2.13.0`` (the CPU
wheel index on Linux/Windows machines without an NVIDIA GPU, as ``scripts/setup.sh`` does),
``pip install SOURCE`` (the backend wheel built with ``pip wheel --no-deps -w dist .``, or a
checkout folder), then an import check. Progress is one JSON object per line on stdout -- the
protocol of ``track4dgen run``, so the add-on follows it with the same runner -- and pip's own
output goes to stderr (the add-on's set-up log). ``--no-deps`` skips PyTorch and the backend's
dependencies (offline tests; with ``--system-site-packages`` they may come from the base Python).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

TORCH_REQUIREMENT = "torch==2.13.0"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# pip lines worth showing the artist as the current activity (the rest only goes to the log)
_PIP_NEWS = ("Collecting", "Downloading", "Installing collected", "Successfully installed", "Building wheel",
             "Processing", "Requirement already satisfied: torch")


class SetupError(Exception):
    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def env_python(env_dir: str | Path) -> Path:
    """The interpreter inside a virtual environment (Windows keeps it in Scripts/)."""
    env_dir = Path(env_dir)
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def torch_index(choice: str, gpu: bool) -> str:
    """'' = pip's configured index. macOS wheels are CPU/MPS builds already."""
    if choice == "default":
        return ""
    if choice != "auto":
        return choice
    if gpu or platform.system() == "Darwin":
        return ""
    return CPU_TORCH_INDEX


def check_source(source: str) -> Path:
    """A backend wheel or a checkout folder; anything else is refused with the fix."""
    if not source:
        raise SetupError("bad_source", "no backend source is set",
                         "Choose the backend wheel (dist/track4dgen-*.whl) or a Track4DGen checkout folder as 'Backend Source'.")
    path = Path(source).expanduser().resolve()
    if path.is_file() and path.suffix == ".whl" and path.name.startswith("track4dgen-"):
        return path
    if path.is_dir() and (path / "pyproject.toml").is_file() and (path / "backend" / "track4dgen").is_dir():
        return path
    raise SetupError("bad_source", f"{path} is neither a track4dgen wheel nor a Track4DGen checkout",
                     "Build the wheel in a checkout with `python -m pip wheel --no-deps -w dist .` and choose "
                     "dist/track4dgen-*.whl, or choose the checkout folder itself.")


def run_logged(cmd: list[str], step: int, total: int, label: str) -> None:
    """Run one command; its output goes to the log (stderr), pip's news also to the progress."""
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=env)
    except OSError as exc:
        raise SetupError("setup_failed", f"cannot run {cmd[0]}: {exc}", "Choose another 'Base Python'.") from exc
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:
        sys.stderr.write(line)
        line = line.strip()
        if line:
            last = line
        if line.startswith(_PIP_NEWS):
            emit(stage="setup", step=step, total=total, message=f"{label}: {line[:120]}", eta_s=None)
    rc = proc.wait()
    sys.stderr.flush()
    if rc != 0:
        raise SetupError("setup_failed", f"{label} failed (exit code {rc}): {last[:200]}",
                         "See the set-up log; check the network connection (or the wheel) and press Set Up Backend again.")


def setup(env_dir: Path, source: Path, index: str, gpu: bool, no_deps: bool, system_site_packages: bool,
          base_python: str) -> str:
    """All steps; returns the installed backend's version."""
    total = 3 if no_deps else 4
    py = env_python(env_dir)
    step = 0
    if py.exists():
        emit(stage="setup", step=step, total=total, message=f"Using the existing environment {env_dir}", eta_s=None)
    else:
        emit(stage="setup", step=step, total=total, message=f"Creating the environment {env_dir}", eta_s=None)
        cmd = [base_python, "-m", "venv"] + (["--system-site-packages"] if system_site_packages else []) + [str(env_dir)]
        run_logged(cmd, step, total, "Creating the environment")
    if not py.exists():
        raise SetupError("setup_failed", f"the environment has no Python at {py}",
                         "The base Python may lack the venv module: choose another 'Base Python'.")
    step += 1
    if not no_deps:
        emit(stage="setup", step=step, total=total, message=f"Installing PyTorch ({TORCH_REQUIREMENT})", eta_s=None)
        cmd = [str(py), "-m", "pip", "install", TORCH_REQUIREMENT] + (["--index-url", index] if index else [])
        run_logged(cmd, step, total, "Installing PyTorch")
        step += 1
    emit(stage="setup", step=step, total=total, message="Installing the Track4DGen backend", eta_s=None)
    target = str(source)
    if gpu and not no_deps:
        target = f"track4dgen[gpu] @ {source.as_uri()}"
    run_logged([str(py), "-m", "pip", "install"] + (["--no-deps"] if no_deps else []) + [target], step, total,
               "Installing the backend")
    step += 1
    emit(stage="setup", step=step, total=total, message="Checking the installation", eta_s=None)
    out = subprocess.run([str(py), "-c", "import track4dgen; print(track4dgen.__version__)"], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)
    sys.stderr.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SetupError("setup_failed", "the new environment cannot import track4dgen",
                         "See the set-up log; press Set Up Backend again.")
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="backend_setup.py", description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, type=Path, help="folder of the virtual environment (created if missing)")
    p.add_argument("--source", required=True, help="track4dgen wheel or checkout folder")
    p.add_argument("--torch-index", default="auto", help="auto (CPU wheels without an NVIDIA GPU) | default | URL")
    p.add_argument("--gpu", default="auto", choices=["auto", "yes", "no"], help="also install the GPU extra (gsplat)")
    p.add_argument("--no-deps", action="store_true", help="skip PyTorch and the backend's dependencies")
    p.add_argument("--system-site-packages", action="store_true", help="let the environment see the base Python's packages")
    p.add_argument("--base-python", default=sys.executable, help="interpreter that creates the environment")
    args = p.parse_args(argv)
    try:
        source = check_source(args.source)
        gpu = has_nvidia_gpu() if args.gpu == "auto" else args.gpu == "yes"
        env_dir = args.env.expanduser().resolve()
        version = setup(env_dir, source, torch_index(args.torch_index, gpu), gpu, args.no_deps,
                        args.system_site_packages, args.base_python)
    except SetupError as err:
        emit(error=err.code, message=err.message, hint=err.hint)
        return 1
    except KeyboardInterrupt:
        emit(error="cancelled", message="the set-up was cancelled", hint="Press Set Up Backend again to finish it.")
        return 130
    total = 3 if args.no_deps else 4
    emit(stage="setup", step=total, total=total, message=f"track4dgen {version} is ready", eta_s=0,
         python=str(env_python(env_dir)), version=version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
