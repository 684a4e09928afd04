"""The persistent job queue: one SQLite table, shared by the web server, its worker and the job processes.

States: ``queued`` -> ``running`` -> ``done`` | ``failed``. A job left ``running`` by a server that
stopped (cleanly or not) goes back to ``queued`` when the next server starts (``requeue_running``), so a
restart loses nothing; after ``max_attempts`` starts it fails instead of looping on a crashing input.
Every call opens its own connection (WAL journal, busy timeout): safe from any thread or process.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,          -- uuid4 hex: the only handle a client gets, never guessable
    client TEXT NOT NULL,         -- who submitted it (remote address, plus user under --auth)
    created REAL NOT NULL,        -- unix time
    started REAL,
    finished REAL,
    state TEXT NOT NULL,          -- queued | running | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,                  -- the job process that claimed it (pid)
    kind TEXT NOT NULL,           -- video | images
    display_name TEXT NOT NULL,   -- the uploaded file name, shown as text only (never a path)
    input_bytes INTEGER NOT NULL,
    info TEXT NOT NULL,           -- JSON: what the upload check found (codec, size, duration, ...)
    contribute INTEGER NOT NULL,  -- 1: the user opted in to the loop's real-capture pool
    pooled TEXT,                  -- where the capture was put in the pool (after success)
    phase TEXT,                   -- current phase while running
    progress TEXT,                -- JSON {phase: [done, total]}
    fraction REAL NOT NULL DEFAULT 0,
    error TEXT,                   -- one readable line when failed
    result TEXT                   -- JSON summary when done
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created);
CREATE INDEX IF NOT EXISTS jobs_client ON jobs(client, state);
"""

ACTIVE = ("queued", "running")


class JobStore:
    """The ``jobs`` table of ``<data>/serve.db``."""

    def __init__(self, path: str | Path, max_attempts: int = 3):
        self.path = Path(path)
        self.max_attempts = max_attempts
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit; explicit BEGIN where needed
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    # ---- submit / read ---------------------------------------------------------------------

    def create(self, client: str, kind: str, display_name: str, input_bytes: int, info: dict, contribute: bool,
               job_id: str | None = None) -> str:
        job_id = job_id or uuid.uuid4().hex
        with self._db() as db:
            db.execute("INSERT INTO jobs (id, client, created, state, kind, display_name, input_bytes, info, contribute, progress)"
                       " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, '{}')",
                       (job_id, client, time.time(), kind, display_name[:200], int(input_bytes), json.dumps(info), int(contribute)))
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(row) if row else None

    def list(self, client: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self._db() as db:
            if client is None:
                rows = db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
            else:
                rows = db.execute("SELECT * FROM jobs WHERE client = ? ORDER BY created DESC LIMIT ?", (client, limit)).fetchall()
        return [_row(r) for r in rows]

    def count_active(self, client: str) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE client = ? AND state IN ('queued', 'running')", (client,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {"queued": 0, "running": 0, "done": 0, "failed": 0, **{r[0]: r[1] for r in rows}}

    def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs are ahead of this one (None unless it is queued)."""
        with self._db() as db:
            row = db.execute("SELECT state, created FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != "queued":
                return None
            return db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND created < ?", (row["created"],)).fetchone()[0]

    # ---- worker side -----------------------------------------------------------------------

    def claim(self, worker: str = "") -> dict[str, Any] | None:
        """Atomically move the oldest queued job to ``running`` for ``worker`` and return it (None when the queue is empty)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, phase = 'starting', "
                       "progress = '{}', fraction = 0, error = NULL, worker = ? WHERE id = ?", (time.time(), worker, row["id"]))
            db.execute("COMMIT")
        return self.get(row["id"])

    def set_progress(self, job_id: str, phase: str, progress: dict, fraction: float) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET phase = ?, progress = ?, fraction = ? WHERE id = ? AND state = 'running'",
                       (phase, json.dumps(progress), float(fraction), job_id))

    def finish(self, job_id: str, result: dict, pooled: str | None = None) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET state = 'done', finished = ?, phase = 'done', fraction = 1, result = ?, pooled = ? "
                       "WHERE id = ?", (time.time(), json.dumps(result), pooled, job_id))

    def fail(self, job_id: str, error: str) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE id = ?",
                       (time.time(), " ".join(str(error).split())[:500], job_id))

    def requeue(self, job_id: str) -> None:
        """Back to the queue (the server stopped while it ran); it keeps its place (its creation time)."""
        with self._db() as db:
            db.execute("UPDATE jobs SET state = 'queued', phase = NULL, progress = '{}', fraction = 0 "
                       "WHERE id = ? AND state = 'running'", (job_id,))

    def running_of(self, worker: str) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running' AND worker = ?", (worker,)).fetchall()
        return [_row(r) for r in rows]

    def requeue_running(self) -> list[str]:
        """At start-up: jobs a previous server left ``running`` go back to the queue, or fail after too many starts."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT id, attempts FROM jobs WHERE state = 'running'").fetchall()
            back = []
            for r in rows:
                if r["attempts"] >= self.max_attempts:
                    db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE id = ?",
                               (time.time(), f"gave up after {r['attempts']} attempts (the server stopped during each)", r["id"]))
                else:
                    db.execute("UPDATE jobs SET state = 'queued', phase = NULL, progress = '{}', fraction = 0 WHERE id = ?", (r["id"],))
                    back.append(r["id"])
            db.execute("COMMIT")
        return back


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in ("info", "progress", "result"):
        d[k] = json.loads(d[k]) if d.get(k) else None
    d["contribute"] = bool(d["contribute"])
    return d
