"""The preference store: every capture, pair, sample, reward and preference, in SQLite in the run directory.

A sample row keeps what is needed to use it again without redrawing: its seed and the model version
that drew it (``MatchPolicy.redraw(pair, seed)`` with that model gives it back), its draw fields
(compressed), its relative camera, its log-likelihood and every reward term. A preference row points at
a chosen and a rejected sample of the same pair, with its round, its source (``reward`` or ``human``),
the margin between the two rewards and, for human labels, who gave it.

Evaluators judge whole reconstructions rather than pair samples (the web app's evaluator page): a
``reconstructions`` row is one reconstruction of some frames of a capture by one model (its round and
version; ``seed`` -1 for the model's mode, else a sample's seed) with the folder holding its renders; a
``comparisons`` row puts two of the same capture side by side (A and B); a ``judgements`` row is one
evaluator's verdict on a comparison — ``a``, ``b`` or ``tie`` — with who and when (source ``human``;
one verdict per evaluator and comparison). Stores written before these tables existed gain them when
opened (``CREATE TABLE IF NOT EXISTS``; ``PRAGMA user_version`` records the schema version).

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
from typing import TYPE_CHECKING

import numpy as np

from vibe3r.errors import InputError

if TYPE_CHECKING:  # not imported at run time: the web app reads the store without loading torch
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
CREATE TABLE IF NOT EXISTS reconstructions (
    id INTEGER PRIMARY KEY, capture_id INTEGER NOT NULL REFERENCES captures(id), round INTEGER NOT NULL,
    model_version TEXT NOT NULL, seed INTEGER NOT NULL DEFAULT -1, frames TEXT NOT NULL, path TEXT, created_at REAL,
    UNIQUE(capture_id, model_version, seed, frames));
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY, a_id INTEGER NOT NULL REFERENCES reconstructions(id),
    b_id INTEGER NOT NULL REFERENCES reconstructions(id), created_at REAL, UNIQUE(a_id, b_id), CHECK (a_id <> b_id));
CREATE TABLE IF NOT EXISTS judgements (
    id INTEGER PRIMARY KEY, comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
    verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie')), source TEXT NOT NULL DEFAULT 'human',
    annotator TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE(comparison_id, annotator));
CREATE TABLE IF NOT EXISTS video_samples (
    id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, seed INTEGER NOT NULL, model_version TEXT NOT NULL,
    round INTEGER NOT NULL, rewards TEXT, reward REAL, meta TEXT, created_at REAL,
    UNIQUE(prompt, seed, model_version, round));
CREATE TABLE IF NOT EXISTS video_preferences (
    id INTEGER PRIMARY KEY, chosen_id INTEGER NOT NULL REFERENCES video_samples(id),
    rejected_id INTEGER NOT NULL REFERENCES video_samples(id), round INTEGER NOT NULL, source TEXT NOT NULL,
    margin REAL, annotator TEXT, created_at REAL, UNIQUE(chosen_id, rejected_id, source));
"""
SCHEMA_VERSION = 3  # 1: captures/pairs/samples/preferences; 2: + reconstructions/comparisons/judgements;
#                    3: + video_samples/video_preferences (the generator's judged videos); tables are added on open
VERDICTS = ("a", "b", "tie")


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
        from vibe3r.recon.policy import PairSample

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


@dataclass
class Reconstruction:
    """One reconstruction of frames of a capture by one model (``seed`` -1: the model's mode)."""

    id: int
    capture_spec: str
    round: int
    model_version: str
    seed: int
    frames: list[int]
    path: str | None


@dataclass
class Judgement:
    """An evaluator's verdict on comparison ``comparison_id``: ``a``, ``b`` or ``tie``."""

    id: int
    comparison_id: int
    a: Reconstruction
    b: Reconstruction
    verdict: str
    source: str
    annotator: str
    created_at: float

    @property
    def score_a(self) -> float:
        """A's points: 1 a win, 0.5 a tie, 0 a loss."""
        return {"a": 1.0, "b": 0.0, "tie": 0.5}[self.verdict]


class DuplicateJudgement(InputError):
    """The evaluator already judged this comparison."""


class PreferenceStore:
    """SQLite-backed store (``path`` is a file, created with its schema when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        if self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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

    def add_reconstruction(self, capture_id: int, round: int, model_version: str, frames: list[int], seed: int = -1,
                           path: str | None = None) -> int:
        """A reconstruction of ``frames`` of a capture by a model (the same one again keeps its row; ``path`` updated)."""
        key = json.dumps([int(f) for f in frames])
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO reconstructions(capture_id, round, model_version, seed, frames, path, created_at)"
                       " VALUES (?,?,?,?,?,?,?)", (capture_id, round, model_version, seed, key, path, time.time()))
            rid = db.execute("SELECT id FROM reconstructions WHERE capture_id=? AND model_version=? AND seed=? AND frames=?",
                             (capture_id, model_version, seed, key)).fetchone()[0]
            if path is not None:
                db.execute("UPDATE reconstructions SET path=? WHERE id=?", (path, rid))
            return rid

    def add_comparison(self, a_id: int, b_id: int) -> int:
        """Reconstructions ``a_id`` (shown as A) and ``b_id`` (B) of the same capture, side by side."""
        with self._tx() as db:
            rows = {r[0]: r[1] for r in db.execute("SELECT id, capture_id FROM reconstructions WHERE id IN (?,?)", (a_id, b_id))}
            if a_id not in rows or b_id not in rows:
                raise InputError(f"unknown reconstruction id in comparison ({a_id}, {b_id})")
            if a_id == b_id or rows[a_id] != rows[b_id]:
                raise InputError("a comparison puts two different reconstructions of the same capture side by side")
            db.execute("INSERT OR IGNORE INTO comparisons(a_id, b_id, created_at) VALUES (?,?,?)", (a_id, b_id, time.time()))
            return db.execute("SELECT id FROM comparisons WHERE a_id=? AND b_id=?", (a_id, b_id)).fetchone()[0]

    def add_judgement(self, comparison_id: int, verdict: str, annotator: str, source: str = "human") -> int:
        """Record ``annotator``'s verdict (``a``, ``b`` or ``tie``) on a comparison; a second verdict of the same
        evaluator on the same comparison raises :class:`DuplicateJudgement`."""
        if verdict not in VERDICTS:
            raise InputError(f"unknown verdict {verdict!r}; valid: {', '.join(VERDICTS)}")
        if source not in SOURCES:
            raise InputError(f"unknown preference source {source!r}; valid: {', '.join(SOURCES)}")
        annotator = (annotator or "").strip()
        if not annotator:
            raise InputError("a judgement needs the evaluator's name")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM comparisons WHERE id=?", (comparison_id,)).fetchone() is None:
                raise InputError(f"no comparison {comparison_id}")
            try:
                cur = db.execute("INSERT INTO judgements(comparison_id, verdict, source, annotator, created_at) VALUES (?,?,?,?,?)",
                                 (comparison_id, verdict, source, annotator[:200], time.time()))
            except sqlite3.IntegrityError:
                raise DuplicateJudgement(f"{annotator} already judged comparison {comparison_id}") from None
            return cur.lastrowid

    # ---- reading -------------------------------------------------------------------------------

    _RECON_COLS = "r.id, c.spec, r.round, r.model_version, r.seed, r.frames, r.path"

    @staticmethod
    def _recon(row: tuple) -> Reconstruction:
        rid, spec, rnd, ver, seed, frames, path = row
        return Reconstruction(rid, spec, rnd, ver, seed, json.loads(frames), path)

    def reconstruction(self, rid: int) -> Reconstruction | None:
        row = self.db.execute(f"SELECT {self._RECON_COLS} FROM reconstructions r JOIN captures c ON c.id = r.capture_id"
                              " WHERE r.id=?", (rid,)).fetchone()
        return None if row is None else self._recon(row)

    def comparisons(self) -> list[tuple[int, Reconstruction, Reconstruction]]:
        """Every comparison as ``(id, A, B)``, in order of creation."""
        rows = self.db.execute("SELECT id, a_id, b_id FROM comparisons ORDER BY id").fetchall()
        return [(cid, self.reconstruction(a), self.reconstruction(b)) for cid, a, b in rows]

    def next_comparison(self, annotator: str) -> tuple[int, Reconstruction, Reconstruction] | None:
        """The first comparison ``annotator`` has not judged yet (None: all judged)."""
        row = self.db.execute("SELECT id, a_id, b_id FROM comparisons WHERE id NOT IN"
                              " (SELECT comparison_id FROM judgements WHERE annotator=?) ORDER BY id LIMIT 1",
                              ((annotator or "").strip(),)).fetchone()
        return None if row is None else (row[0], self.reconstruction(row[1]), self.reconstruction(row[2]))

    def judgements(self, annotator: str | None = None) -> list[Judgement]:
        q, args = "SELECT j.id, j.comparison_id, m.a_id, m.b_id, j.verdict, j.source, j.annotator, j.created_at" \
                  " FROM judgements j JOIN comparisons m ON m.id = j.comparison_id", []
        if annotator is not None:
            q += " WHERE j.annotator=?"
            args.append(annotator)
        return [Judgement(jid, cid, self.reconstruction(a), self.reconstruction(b), v, src, who, t)
                for jid, cid, a, b, v, src, who, t in self.db.execute(q + " ORDER BY j.id", args).fetchall()]

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
            "reconstructions": q("SELECT COUNT(*) FROM reconstructions")[0][0],
            "comparisons": q("SELECT COUNT(*) FROM comparisons")[0][0],
            "judgements": {v: n for v, n in q("SELECT verdict, COUNT(*) FROM judgements GROUP BY verdict")},
            "video_samples_per_round": {r: {"samples": n, "mean_reward": m} for r, n, m in q(
                "SELECT round, COUNT(*), AVG(reward) FROM video_samples GROUP BY round")},
            "video_preferences": q("SELECT COUNT(*) FROM video_preferences")[0][0],
        }

    # ---- the video generator's judged samples -------------------------------------------------

    def add_video_sample(self, prompt: str, seed: int, model_version: str, round: int, rewards: dict,
                         meta: dict | None = None) -> int:
        """A generated video (re-drawable from prompt + seed + model version) and its judge rewards."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO video_samples(prompt, seed, model_version, round, rewards, reward, meta, "
                       "created_at) VALUES (?,?,?,?,?,?,?,?)",
                       (prompt, int(seed), model_version, int(round), json.dumps(rewards), float(rewards.get("reward", 0.0)),
                        json.dumps(meta or {}), time.time()))
            return db.execute("SELECT id FROM video_samples WHERE prompt=? AND seed=? AND model_version=? AND round=?",
                              (prompt, int(seed), model_version, int(round))).fetchone()[0]

    def add_video_preference(self, chosen_id: int, rejected_id: int, round: int, source: str = "reward",
                             margin: float | None = None, annotator: str | None = None) -> int:
        if source not in ("reward", "human"):
            raise InputError(f"unknown preference source {source!r}; valid: reward, human")
        if chosen_id == rejected_id:
            raise InputError("a video cannot be preferred over itself")
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO video_preferences(chosen_id, rejected_id, round, source, margin, annotator, "
                       "created_at) VALUES (?,?,?,?,?,?,?)", (chosen_id, rejected_id, int(round), source, margin, annotator,
                                                            time.time()))
            return db.execute("SELECT id FROM video_preferences WHERE chosen_id=? AND rejected_id=? AND source=?",
                              (chosen_id, rejected_id, source)).fetchone()[0]

    def video_preferences(self, round: int | None = None) -> list[dict]:
        q = ("SELECT p.id, p.round, p.source, p.margin, c.prompt, c.seed, c.reward, r.seed, r.reward, c.model_version "
             "FROM video_preferences p JOIN video_samples c ON c.id = p.chosen_id JOIN video_samples r ON r.id = p.rejected_id")
        rows = self.db.execute(q + (" WHERE p.round=?" if round is not None else "") + " ORDER BY p.id",
                               (() if round is None else (round,))).fetchall()
        keys = ("id", "round", "source", "margin", "prompt", "chosen_seed", "chosen_reward", "rejected_seed",
                "rejected_reward", "model_version")
        return [dict(zip(keys, r)) for r in rows]

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
