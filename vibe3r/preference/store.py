"""The preference store: every capture, pair, sample, reward and preference, in SQLite in the run directory.

A sample row keeps what is needed to use it again without redrawing: its seed and the model version
that drew it (``MatchPolicy.redraw(pair, seed)`` with that model gives it back), its draw fields
(compressed), its relative camera, its log-likelihood and every reward term. A preference row points at
a chosen and a rejected sample of the same pair, with its round, its source (``reward`` or ``human``),
the margin between the two rewards and, for human labels, who gave it.

WAL journaling lets a reader (``vibe3r preference show``, the web app) look while a writer works;
every write is one transaction.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vibe3r.errors import InputError
from vibe3r.preference.rewards import RewardConfig
from vibe3r.recon.policy import PairSample

SOURCES = ("reward", "human")

SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY, spec TEXT NOT NULL UNIQUE, name TEXT, n_frames INTEGER, added_at REAL);
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY, capture_id INTEGER NOT NULL REFERENCES captures(id), i INTEGER NOT NULL,
    j INTEGER NOT NULL, UNIQUE(capture_id, i, j));
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY, pair_id INTEGER NOT NULL REFERENCES pairs(id), seed INTEGER NOT NULL,
    model_version TEXT NOT NULL, round INTEGER NOT NULL, is_mode INTEGER NOT NULL, logp REAL,
    t21 TEXT, n_matches INTEGER, n_inliers INTEGER, draws BLOB, rewards TEXT, combined REAL,
    degenerate TEXT, created_at REAL, UNIQUE(pair_id, seed, model_version));
CREATE TABLE IF NOT EXISTS preferences (
    id INTEGER PRIMARY KEY, pair_id INTEGER NOT NULL REFERENCES pairs(id),
    chosen_id INTEGER NOT NULL REFERENCES samples(id), rejected_id INTEGER NOT NULL REFERENCES samples(id),
    round INTEGER NOT NULL, source TEXT NOT NULL, margin REAL, annotator TEXT, created_at REAL,
    UNIQUE(chosen_id, rejected_id, source));
CREATE INDEX IF NOT EXISTS samples_pair ON samples(pair_id);
CREATE INDEX IF NOT EXISTS prefs_round ON preferences(round);
"""


def _pack_draws(fwd: np.ndarray, bwd: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, fwd=fwd.astype(np.int32), bwd=bwd.astype(np.int32))
    return buf.getvalue()


def _unpack_draws(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(blob)) as z:
        return z["fwd"], z["bwd"]


@dataclass
class StoredSample:
    """A sample as the store gives it back (enough for DPO: the draws and the pose)."""

    id: int
    pair_id: int
    seed: int
    model_version: str
    round: int
    is_mode: bool
    logp: float
    T21: np.ndarray | None
    rewards: dict
    combined: float
    degenerate: str | None
    fwd: np.ndarray
    bwd: np.ndarray

    def as_pair_sample(self) -> PairSample:
        e = np.zeros((0, 2))
        return PairSample(seed=self.seed, fwd=self.fwd, bwd=self.bwd, logp=self.logp, kp1=e, kp2=e,
                          inliers=np.zeros(0, bool), T21=self.T21, is_mode=self.is_mode)


@dataclass
class Preference:
    id: int
    capture_spec: str
    i: int
    j: int
    chosen: StoredSample
    rejected: StoredSample
    round: int
    source: str
    margin: float
    annotator: str | None


class PreferenceStore:
    """SQLite-backed store (``path`` is a file, created with its schema when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.db:  # commits, or rolls back on an exception
            yield self.db

    # ---- writing -------------------------------------------------------------------------------

    def add_capture(self, spec: str, name: str = "", n_frames: int = 0) -> int:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO captures(spec, name, n_frames, added_at) VALUES (?,?,?,?)",
                       (spec, name, n_frames, time.time()))
            return db.execute("SELECT id FROM captures WHERE spec=?", (spec,)).fetchone()[0]

    def add_pair(self, capture_id: int, i: int, j: int) -> int:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO pairs(capture_id, i, j) VALUES (?,?,?)", (capture_id, i, j))
            return db.execute("SELECT id FROM pairs WHERE capture_id=? AND i=? AND j=?", (capture_id, i, j)).fetchone()[0]

    def add_samples(self, pair_id: int, samples: list[PairSample], rewards: list[dict], model_version: str,
                    round: int = 0) -> list[int]:
        """Store samples with their rewards (one transaction); a sample already stored (same pair, seed and
        model version) keeps its row. Returns the row ids in order."""
        if len(samples) != len(rewards):
            raise ValueError("one reward dict per sample")
        ids = []
        with self._tx() as db:
            for s, r in zip(samples, rewards):
                terms = {k: v for k, v in r.items() if k not in ("combined", "degenerate")}
                db.execute(
                    "INSERT OR IGNORE INTO samples(pair_id, seed, model_version, round, is_mode, logp, t21, n_matches,"
                    " n_inliers, draws, rewards, combined, degenerate, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (pair_id, s.seed, model_version, round, int(s.is_mode), s.logp,
                     None if s.T21 is None else json.dumps(np.asarray(s.T21).tolist()), s.n_matches, s.n_inliers,
                     _pack_draws(s.fwd, s.bwd), json.dumps(terms), r["combined"], r.get("degenerate"), time.time()))
                ids.append(db.execute("SELECT id FROM samples WHERE pair_id=? AND seed=? AND model_version=?",
                                      (pair_id, s.seed, model_version)).fetchone()[0])
        return ids

    def reweight(self, round: int, cfg: RewardConfig) -> None:
        """Recompute the combined reward of a round's samples from their stored terms with ``cfg``'s weights."""
        from vibe3r.preference.rewards import combine

        with self._tx() as db:
            pids = [r[0] for r in db.execute("SELECT DISTINCT pair_id FROM samples WHERE round=?", (round,))]
            for pid in pids:
                got = db.execute("SELECT id, rewards, degenerate FROM samples WHERE pair_id=? AND round=?", (pid, round)).fetchall()
                rows = [{**json.loads(t), "degenerate": d} for _, t, d in got]
                for (sid, _, _), r in zip(got, combine(rows, cfg)):
                    db.execute("UPDATE samples SET combined=? WHERE id=?", (r["combined"], sid))

    def add_preference(self, chosen_id: int, rejected_id: int, round: int, source: str = "reward",
                       annotator: str | None = None) -> int:
        """Record that sample ``chosen_id`` beats ``rejected_id`` (same pair)."""
        if source not in SOURCES:
            raise InputError(f"unknown preference source {source!r}; valid: {', '.join(SOURCES)}")
        with self._tx() as db:
            rows = db.execute("SELECT id, pair_id, combined FROM samples WHERE id IN (?,?)", (chosen_id, rejected_id)).fetchall()
            by_id = {r[0]: r for r in rows}
            if chosen_id not in by_id or rejected_id not in by_id:
                raise InputError(f"unknown sample id in preference ({chosen_id}, {rejected_id})")
            if by_id[chosen_id][1] != by_id[rejected_id][1]:
                raise InputError("a preference compares two samples of the same pair")
            margin = by_id[chosen_id][2] - by_id[rejected_id][2]
            db.execute("INSERT OR IGNORE INTO preferences(pair_id, chosen_id, rejected_id, round, source, margin,"
                       " annotator, created_at) VALUES (?,?,?,?,?,?,?,?)",
                       (by_id[chosen_id][1], chosen_id, rejected_id, round, source, margin, annotator, time.time()))
            return db.execute("SELECT id FROM preferences WHERE chosen_id=? AND rejected_id=? AND source=?",
                              (chosen_id, rejected_id, source)).fetchone()[0]

    def prefer_by_reward(self, round: int, model_version: str, min_margin: float = 0.0, per_pair: int = 1) -> int:
        """Turn the rewards of a round's samples into preferences: per pair, the ``per_pair`` best
        non-degenerate samples each against the worst remaining one (degenerate samples are rejected
        first), when their combined rewards differ by more than ``min_margin``. Returns how many were added."""
        n = 0
        pair_ids = [r[0] for r in self.db.execute(
            "SELECT DISTINCT pair_id FROM samples WHERE round=? AND model_version=?", (round, model_version))]
        for pid in pair_ids:
            rows = self.db.execute(
                "SELECT id, combined, degenerate FROM samples WHERE pair_id=? AND round=? AND model_version=?"
                " ORDER BY combined DESC, id", (pid, round, model_version)).fetchall()
            good = [r for r in rows if r[2] is None]
            bad = [r for r in rows if r[2] is not None]
            losers = bad + good[::-1]
            for w in good[:per_pair]:
                loser = next((r for r in losers if r[0] != w[0] and w[1] - r[1] > min_margin), None)
                if loser is None:
                    continue
                losers.remove(loser)
                self.add_preference(w[0], loser[0], round, "reward")
                n += 1
        return n

    # ---- reading -------------------------------------------------------------------------------

    def _sample(self, row: tuple) -> StoredSample:
        (sid, pid, seed, ver, rnd, is_mode, logp, t21, _nm, _ni, draws, rewards, combined, degen) = row
        fwd, bwd = _unpack_draws(draws)
        return StoredSample(sid, pid, seed, ver, rnd, bool(is_mode), logp,
                            None if t21 is None else np.array(json.loads(t21)), json.loads(rewards), combined, degen,
                            fwd, bwd)

    _SAMPLE_COLS = ("id, pair_id, seed, model_version, round, is_mode, logp, t21, n_matches, n_inliers, draws, "
                    "rewards, combined, degenerate")

    def samples(self, pair_id: int | None = None, round: int | None = None) -> list[StoredSample]:
        q, args = f"SELECT {self._SAMPLE_COLS} FROM samples WHERE 1=1", []
        if pair_id is not None:
            q += " AND pair_id=?"
            args.append(pair_id)
        if round is not None:
            q += " AND round=?"
            args.append(round)
        return [self._sample(r) for r in self.db.execute(q + " ORDER BY id", args)]

    def preferences(self, round: int | None = None, source: str | None = None) -> list[Preference]:
        q = ("SELECT p.id, c.spec, pr.i, pr.j, p.chosen_id, p.rejected_id, p.round, p.source, p.margin, p.annotator"
             " FROM preferences p JOIN pairs pr ON pr.id = p.pair_id JOIN captures c ON c.id = pr.capture_id WHERE 1=1")
        args: list = []
        if round is not None:
            q += " AND p.round=?"
            args.append(round)
        if source is not None:
            q += " AND p.source=?"
            args.append(source)
        out = []
        for pid, spec, i, j, cid, rid, rnd, src, margin, who in self.db.execute(q + " ORDER BY p.id", args).fetchall():
            get = lambda sid: self._sample(self.db.execute(f"SELECT {self._SAMPLE_COLS} FROM samples WHERE id=?", (sid,)).fetchone())  # noqa: E731
            out.append(Preference(pid, spec, i, j, get(cid), get(rid), rnd, src, margin, who))
        return out

    def summary(self) -> dict:
        """Counts per round and source, and reward statistics (``vibe3r preference show``)."""
        q = lambda s: self.db.execute(s).fetchall()  # noqa: E731
        return {
            "captures": q("SELECT COUNT(*) FROM captures")[0][0],
            "pairs": q("SELECT COUNT(*) FROM pairs")[0][0],
            "samples_per_round": {r: {"samples": n, "degenerate": d, "mean_reward": m} for r, n, d, m in q(
                "SELECT round, COUNT(*), SUM(degenerate IS NOT NULL), AVG(combined) FROM samples GROUP BY round")},
            "preferences": [{"round": r, "source": s, "n": n, "mean_margin": m} for r, s, n, m in q(
                "SELECT round, source, COUNT(*), AVG(margin) FROM preferences GROUP BY round, source ORDER BY round")],
        }

    def export(self, out: str | Path) -> Path:
        """Preferences as a Hugging Face ``datasets`` dataset saved to parquet (draws as int32 lists)."""
        import datasets

        rows = [{"id": p.id, "capture": p.capture_spec, "i": p.i, "j": p.j, "round": p.round, "source": p.source,
                 "margin": p.margin, "annotator": p.annotator or "",
                 "chosen_seed": p.chosen.seed, "rejected_seed": p.rejected.seed, "model_version": p.chosen.model_version,
                 "chosen_reward": p.chosen.combined, "rejected_reward": p.rejected.combined,
                 "chosen_fwd": p.chosen.fwd.tolist(), "chosen_bwd": p.chosen.bwd.tolist(),
                 "rejected_fwd": p.rejected.fwd.tolist(), "rejected_bwd": p.rejected.bwd.tolist()}
                for p in self.preferences()]
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows).to_parquet(str(out))
        return out
