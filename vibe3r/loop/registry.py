"""The run registry: one SQLite file (``registry.sqlite``) in the run directory.

Tables (times are UNIX seconds, JSON columns are text)::

    meta(key PK, value)                                     format version, creation time
    rounds(round PK, state, started, ended, config_hash,    one row per round; state running | done
           config_json, stages_json)
    stages(round, name, idx, state, started, ended,         one row per (round, stage); state running | done,
           config_hash, inputs_json, outputs_json,          attempts counts the starts (resumes add one)
           attempts, seconds, peak_rss_mb)
    metrics(round, stage, name, value)                      scalar metrics recorded with their stage
    artifacts(round, stage, name, kind, path, sha256, bytes) every declared output (paths relative to the run)
    checkpoints(round PK, path, sha256, promoted, metric,   every round's candidate recon checkpoint and the
                parent_metric, reason)                      promotion decision

WAL journal, one transaction per state change: a stage is ``done`` together with its metrics and
artifacts or not at all, so a process killed at any instant leaves the registry consistent. The
registry records what happened; the files are written first (see ``vibe3r.loop.stage``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REGISTRY_NAME = "registry.sqlite"
FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, state TEXT NOT NULL, started REAL NOT NULL, ended REAL,
    config_hash TEXT NOT NULL, config_json TEXT NOT NULL, stages_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stages (
    round INTEGER NOT NULL, name TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, config_hash TEXT NOT NULL, inputs_json TEXT NOT NULL,
    outputs_json TEXT, attempts INTEGER NOT NULL DEFAULT 1, seconds REAL, peak_rss_mb REAL,
    PRIMARY KEY (round, name));
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (round, stage, name));
CREATE TABLE IF NOT EXISTS artifacts (
    round INTEGER NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL, sha256 TEXT, bytes INTEGER, PRIMARY KEY (round, stage, name));
CREATE TABLE IF NOT EXISTS checkpoints (
    round INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, promoted INTEGER NOT NULL,
    metric REAL, parent_metric REAL, reason TEXT NOT NULL);
"""


class Registry:
    """Typed access to ``registry.sqlite``; every write is one transaction."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / REGISTRY_NAME
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):  # not executescript: it would COMMIT the transaction
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---------------------------------------------------------------------------------------- rounds

    def last_round(self) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM rounds ORDER BY round DESC LIMIT 1").fetchone()

    def rounds(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM rounds ORDER BY round").fetchall()

    def start_round(self, rnd: int, config_hash: str, config: dict[str, Any], stages: list[str]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO rounds (round, state, started, config_hash, config_json, stages_json) VALUES (?, 'running', ?, ?, ?, ?)",
                       (rnd, time.time(), config_hash, json.dumps(config, sort_keys=True), json.dumps(stages)))

    def finish_round(self, rnd: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE rounds SET state='done', ended=? WHERE round=?", (time.time(), rnd))

    # ---------------------------------------------------------------------------------------- stages

    def stage(self, rnd: int, name: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM stages WHERE round=? AND name=?", (rnd, name)).fetchone()

    def stages(self, rnd: int | None = None) -> list[sqlite3.Row]:
        if rnd is None:
            return self.db.execute("SELECT * FROM stages ORDER BY round, idx").fetchall()
        return self.db.execute("SELECT * FROM stages WHERE round=? ORDER BY idx", (rnd,)).fetchall()

    def start_stage(self, rnd: int, name: str, idx: int, config_hash: str, inputs: dict[str, Any]) -> None:
        """Mark a stage running (a second start of an unfinished stage counts an attempt)."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM stages WHERE round=? AND name=?", (rnd, name)).fetchone()
            if row is None:
                db.execute("INSERT INTO stages (round, name, idx, state, started, config_hash, inputs_json) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                           (rnd, name, idx, time.time(), config_hash, json.dumps(inputs, sort_keys=True)))
            else:
                db.execute("UPDATE stages SET attempts=attempts+1, config_hash=?, inputs_json=? WHERE round=? AND name=?",
                           (config_hash, json.dumps(inputs, sort_keys=True), rnd, name))

    def finish_stage(self, rnd: int, name: str, outputs: dict[str, Any], metrics: dict[str, float],
                     artifacts: list[dict[str, Any]], seconds: float, peak_rss_mb: float,
                     checkpoint: dict[str, Any] | None = None) -> None:
        """Record a complete stage with its metrics, artifacts and (promote) checkpoint row at once."""
        with self.transaction() as db:
            db.execute("UPDATE stages SET state='done', ended=?, outputs_json=?, seconds=?, peak_rss_mb=? WHERE round=? AND name=?",
                       (time.time(), json.dumps(outputs, sort_keys=True), seconds, peak_rss_mb, rnd, name))
            db.execute("DELETE FROM metrics WHERE round=? AND stage=?", (rnd, name))
            db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                           [(rnd, name, k, None if v is None else float(v)) for k, v in sorted(metrics.items())])
            db.execute("DELETE FROM artifacts WHERE round=? AND stage=?", (rnd, name))
            db.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(rnd, name, a["name"], a["kind"], a["path"], a.get("sha256"), a.get("bytes")) for a in artifacts])
            if checkpoint is not None:
                db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (rnd, checkpoint["path"], checkpoint["sha256"], int(checkpoint["promoted"]), checkpoint.get("metric"),
                            checkpoint.get("parent_metric"), checkpoint["reason"]))

    # ---------------------------------------------------------------------------------------- queries

    def metrics(self, rnd: int | None = None) -> dict[int, dict[str, float | None]]:
        """``{round: {"stage/name": value}}``."""
        q = "SELECT * FROM metrics" + ("" if rnd is None else " WHERE round=?") + " ORDER BY round, stage, name"
        out: dict[int, dict[str, float | None]] = {}
        for r in self.db.execute(q, () if rnd is None else (rnd,)):
            out.setdefault(r["round"], {})[f"{r['stage']}/{r['name']}"] = r["value"]
        return out

    def artifacts(self, rnd: int | None = None, name: str | None = None) -> list[sqlite3.Row]:
        q, args = "SELECT * FROM artifacts WHERE 1=1", []
        if rnd is not None:
            q, args = q + " AND round=?", [*args, rnd]
        if name is not None:
            q, args = q + " AND name=?", [*args, name]
        return self.db.execute(q + " ORDER BY round", args).fetchall()

    def checkpoints(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM checkpoints ORDER BY round").fetchall()

    def live_checkpoint(self, before: int | None = None) -> sqlite3.Row | None:
        """The last promoted round's checkpoint (before round ``before``); None: nothing promoted, the base is live."""
        return self.db.execute("SELECT * FROM checkpoints WHERE promoted=1 AND round < ? ORDER BY round DESC LIMIT 1",
                               (before if before is not None else 1 << 62,)).fetchone()
