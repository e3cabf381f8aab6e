"""Stop when the program that started us is gone.

The Blender add-on starts the backend in its own process group (so Cancel can stop all of it) and
keeps the write end of the backend's stdin pipe open; nothing is ever written to it. When Blender
exits or crashes the operating system closes that pipe, stdin reaches end-of-file, and the
backend stops within moments instead of computing until its next progress write. Enabled by
``TRACK4DGEN_WATCH_STDIN=1`` (set by the add-on); the server's workers do not set it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

ENV_VAR = "TRACK4DGEN_WATCH_STDIN"


def _stop(grace_s: float) -> None:
    # Unwind the main thread first (``track4dgen run`` turns SIGTERM into KeyboardInterrupt and
    # removes its temporary result folder); exit hard if it has not finished after ``grace_s``.
    if os.name == "posix":
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        import _thread

        _thread.interrupt_main()
    time.sleep(grace_s)
    os._exit(130)


def _watch(fd: int, grace_s: float) -> None:
    # os.read on the raw descriptor, not sys.stdin.buffer: a daemon thread blocked inside the
    # buffered reader holds its lock, and interpreter shutdown then aborts ("could not acquire lock").
    try:
        while os.read(fd, 1024):
            pass
    except OSError:
        pass
    print("track4dgen: the parent process is gone (stdin closed); stopping", file=sys.stderr, flush=True)
    _stop(grace_s)


def watch_stdin(grace_s: float = 10.0) -> threading.Thread | None:
    """Start the watcher when the environment asks for it; returns the thread (None otherwise)."""
    if os.environ.get(ENV_VAR) != "1" or sys.stdin is None:
        return None
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):
        return None
    thread = threading.Thread(target=_watch, args=(fd, grace_s), name="track4dgen-lifeline", daemon=True)
    thread.start()
    return thread
