"""Durable job store: SQLite in WAL mode inside the server's data folder.

Why SQLite: one file, in the standard library, transactional, and it survives ``kill -9`` of the
server (a committed transaction is on disk before the HTTP answer goes out). WAL lets the status
readers run while the worker appends progress events. Every write that must be atomic (claiming
the next job, the per-token queue limit, idempotent submit) runs in one ``BEGIN IMMEDIATE``
transaction, so concurrent request threads and worker threads cannot both win.

States: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``; after the retention
time a finished job's files are deleted and it becomes ``expired`` (the row stays, so a client
asking about it learns what happened instead of getting a 404).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("succeeded", "failed", "cancelled", "expired")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    idem_key         TEXT,
    state            TEXT NOT NULL,
    created          REAL NOT NULL,
    started          REAL,
    finished         REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    interruptions    INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    pid              INTEGER,
    worker           INTEGER,
    progress         TEXT,
    error            TEXT,
    upload_bytes     INTEGER,
    seq              INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(owner, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    ts     REAL NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""


class QueueFull(Exception):
    """The owner already has ``limit`` queued or running jobs."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"{active} jobs are already queued or running for this token (limit {limit})")
        self.active = active
        self.limit = limit


class JobStore:
    """Thread-safe access to the job database; each thread gets its own connection.

    ``durable=True`` connections (request threads: job acceptance) commit with
    ``synchronous=FULL``; worker connections, which write many progress events, use NORMAL, which
    in WAL mode is still safe against a process crash (only power loss can drop the last events).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect(durable=True) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    # -- connections -------------------------------------------------------------------------

    def _connect(self, durable: bool) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    def _con(self, durable: bool = True) -> sqlite3.Connection:
        key = "durable" if durable else "fast"
        con = getattr(self._local, key, None)
        if con is None:
            con = self._connect(durable)
            setattr(self._local, key, con)
        return con

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        con = self._con(durable)
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _append_event(con: sqlite3.Connection, job_id: str, data: dict[str, Any], progress: bool) -> int:
        if progress:
            row = con.execute("UPDATE jobs SET seq = seq + 1, progress = ? WHERE id = ? RETURNING seq",
                              (json.dumps(data), job_id)).fetchone()
        else:
            row = con.execute("UPDATE jobs SET seq = seq + 1 WHERE id = ? RETURNING seq", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        con.execute("INSERT INTO events (job_id, seq, ts, data) VALUES (?, ?, ?, ?)",
                    (job_id, row[0], time.time(), json.dumps(data)))
        return int(row[0])

    @staticmethod
    def _state_event(state: str, message: str = "") -> dict[str, Any]:
        return {"state": state, "message": message}

    @staticmethod
    def to_public(row: sqlite3.Row | None, retention_s: float | None = None) -> dict[str, Any] | None:
        """The job as the API shows it (never the owner hash, never a path)."""
        if row is None:
            return None
        expires = None
        if row["finished"] is not None and row["state"] != "expired" and retention_s is not None:
            expires = row["finished"] + retention_s
        return {
            "id": row["id"],
            "state": row["state"],
            "created": row["created"],
            "started": row["started"],
            "finished": row["finished"],
            "expires": expires,
            "attempts": row["attempts"],
            "cancel_requested": bool(row["cancel_requested"]),
            "idempotency_key": row["idem_key"],
            "progress": json.loads(row["progress"]) if row["progress"] else None,
            "error": json.loads(row["error"]) if row["error"] else None,
            "last_event": row["seq"],
        }

    # -- submit --------------------------------------------------------------------------------

    def find_by_key(self, owner: str, idem_key: str) -> sqlite3.Row | None:
        return self._con().execute("SELECT * FROM jobs WHERE owner = ? AND idem_key = ?", (owner, idem_key)).fetchone()

    def disk_bytes(self, owner: str) -> int:
        """Bytes of unpacked input the owner's not-yet-expired jobs keep on disk (results not counted)."""
        row = self._con().execute("SELECT COALESCE(SUM(upload_bytes), 0) FROM jobs WHERE owner = ? AND state != 'expired'",
                                  (owner,)).fetchone()
        return int(row[0])

    def active_count(self, owner: str) -> int:
        row = self._con().execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')",
                                  (owner,)).fetchone()
        return int(row[0])

    def create(self, job_id: str, owner: str, idem_key: str | None, max_active: int,
               upload_bytes: int = 0) -> tuple[sqlite3.Row, bool]:
        """Insert a queued job. Returns (row, created); an existing idempotency key returns its job."""
        with self._write() as con:
            if idem_key is not None:
                existing = con.execute("SELECT * FROM jobs WHERE owner = ? AND idem_key = ?", (owner, idem_key)).fetchone()
                if existing is not None:
                    return existing, False
            active = con.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')",
                                 (owner,)).fetchone()[0]
            if max_active > 0 and active >= max_active:
                raise QueueFull(int(active), max_active)
            con.execute("INSERT INTO jobs (id, owner, idem_key, state, created, upload_bytes) VALUES (?, ?, ?, 'queued', ?, ?)",
                        (job_id, owner, idem_key, time.time(), upload_bytes))
            self._append_event(con, job_id, self._state_event("queued", "job accepted"), progress=False)
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row, True

    # -- reads -------------------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None = None) -> sqlite3.Row | None:
        row = self._con().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return row

    def list(self, owner: str, limit: int = 1000) -> list[sqlite3.Row]:
        return self._con().execute("SELECT * FROM jobs WHERE owner = ? ORDER BY created DESC LIMIT ?",
                                   (owner, limit)).fetchall()

    def events_since(self, job_id: str, after: int, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        rows = self._con().execute("SELECT seq, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                   (job_id, after, limit)).fetchall()
        return [(int(r["seq"]), json.loads(r["data"])) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._con().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- worker side ---------------------------------------------------------------------------

    def claim_next(self, worker: int) -> sqlite3.Row | None:
        """Atomically move the oldest queued job to ``running`` for this worker."""
        with self._write(durable=False) as con:
            row = con.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, id LIMIT 1").fetchone()
            if row is None:
                return None
            job_id = row["id"]
            con.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, worker = ?, pid = NULL, "
                        "progress = NULL WHERE id = ?", (time.time(), worker, job_id))
            self._append_event(con, job_id, self._state_event("running", f"started on worker {worker}"), progress=False)
            return con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def set_pid(self, job_id: str, pid: int | None) -> None:
        with self._write(durable=False) as con:
            con.execute("UPDATE jobs SET pid = ? WHERE id = ?", (pid, job_id))

    def add_event(self, job_id: str, data: dict[str, Any]) -> int:
        """Persist one event of the runner (progress or error) and return its sequence number."""
        with self._write(durable=False) as con:
            return self._append_event(con, job_id, data, progress="stage" in data)

    def cancel_requested(self, job_id: str) -> bool:
        row = self._con(durable=False).execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def finish(self, job_id: str, state: str, error: dict[str, Any] | None = None, message: str = "") -> None:
        assert state in ("succeeded", "failed", "cancelled"), state
        with self._write() as con:
            con.execute("UPDATE jobs SET state = ?, finished = ?, pid = NULL, error = ? WHERE id = ?",
                        (state, time.time(), json.dumps(error) if error else None, job_id))
            self._append_event(con, job_id, self._state_event(state, message), progress=False)

    def requeue(self, job_id: str, message: str, interrupted: bool = False) -> None:
        """Back to the queue; ``interrupted`` counts a crash (a graceful shutdown does not count)."""
        with self._write() as con:
            con.execute("UPDATE jobs SET state = 'queued', pid = NULL, worker = NULL, progress = NULL, "
                        "interruptions = interruptions + ? WHERE id = ?", (int(interrupted), job_id))
            self._append_event(con, job_id, self._state_event("queued", message), progress=False)

    def request_cancel(self, job_id: str, owner: str) -> sqlite3.Row | None:
        """Queued jobs are cancelled at once; running ones are flagged for their worker to stop."""
        with self._write() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
            if row is None:
                return None
            if row["state"] == "queued":
                con.execute("UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished = ? WHERE id = ?",
                            (time.time(), job_id))
                self._append_event(con, job_id, self._state_event("cancelled", "cancelled before it started"), progress=False)
            elif row["state"] == "running":
                con.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    # -- start-up and retention ----------------------------------------------------------------

    def interrupted(self) -> list[sqlite3.Row]:
        """Jobs left ``running`` by a previous server process (it died or was killed)."""
        return self._con().execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY created").fetchall()

    def expired(self, retention_s: float, now: float | None = None) -> list[str]:
        """Finished jobs older than the retention time *now* configured (lowering it purges old ones)."""
        now = time.time() if now is None else now
        rows = self._con().execute("SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') "
                                   "AND finished IS NOT NULL AND finished <= ?", (now - retention_s,)).fetchall()
        return [r[0] for r in rows]

    def mark_expired(self, job_id: str) -> None:
        """The files are gone; keep the row (and only the final event) so clients learn why."""
        with self._write() as con:
            con.execute("UPDATE jobs SET state = 'expired' WHERE id = ?", (job_id,))
            con.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            self._append_event(con, job_id, self._state_event("expired", "result removed after the retention time"),
                               progress=False)

    def all_ids(self) -> set[str]:
        return {r[0] for r in self._con().execute("SELECT id FROM jobs").fetchall()}

    def close(self) -> None:
        for key in ("durable", "fast"):
            con = getattr(self._local, key, None)
            if con is not None:
                con.close()
                setattr(self._local, key, None)
