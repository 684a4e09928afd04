"""Evaluators' judgements of whole reconstructions: the store's tables (added to older stores on open),
one verdict per evaluator and comparison, and the human win rate of a round against the previous one."""

from __future__ import annotations

import sqlite3

import pytest

from vibe3r.errors import InputError
from vibe3r.loop.compare import human_duels, win_rate
from vibe3r.preference.store import SCHEMA_VERSION, DuplicateJudgement, PreferenceStore

OLD_SCHEMA = """
CREATE TABLE captures (id INTEGER PRIMARY KEY, spec TEXT NOT NULL UNIQUE, name TEXT, n_frames INTEGER, added_at REAL);
CREATE TABLE pairs (id INTEGER PRIMARY KEY, capture_id INTEGER NOT NULL REFERENCES captures(id), i INTEGER NOT NULL,
    j INTEGER NOT NULL, UNIQUE(capture_id, i, j));
CREATE TABLE samples (id INTEGER PRIMARY KEY, pair_id INTEGER NOT NULL REFERENCES pairs(id), seed INTEGER NOT NULL,
    model_version TEXT NOT NULL, round INTEGER NOT NULL, is_mode INTEGER NOT NULL, logp REAL, t21 TEXT, n_matches INTEGER,
    n_inliers INTEGER, draws BLOB, rewards TEXT, combined REAL, degenerate TEXT, created_at REAL,
    UNIQUE(pair_id, seed, model_version));
CREATE TABLE preferences (id INTEGER PRIMARY KEY, pair_id INTEGER NOT NULL REFERENCES pairs(id),
    chosen_id INTEGER NOT NULL REFERENCES samples(id), rejected_id INTEGER NOT NULL REFERENCES samples(id),
    round INTEGER NOT NULL, source TEXT NOT NULL, margin REAL, annotator TEXT, created_at REAL,
    UNIQUE(chosen_id, rejected_id, source));
INSERT INTO captures(spec, name, n_frames) VALUES ('old/capture', 'old', 10);
"""


def _two_rounds(st: PreferenceStore, spec: str = "real/kitchen@0:50") -> tuple[int, int, int]:
    cap = st.add_capture(spec, "kitchen", 50)
    r1 = st.add_reconstruction(cap, 1, "v1", [0, 10, 20], path="evaluator/a")
    r2 = st.add_reconstruction(cap, 2, "v2", [0, 10, 20], path="evaluator/b")
    return cap, r1, r2


def test_older_store_gains_the_judgement_tables_and_keeps_its_rows(tmp_path):
    path = tmp_path / "preferences.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    with PreferenceStore(path) as st:
        assert st.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert st.add_capture("old/capture") == 1  # the old row is still there
        _, r1, r2 = _two_rounds(st)
        cid = st.add_comparison(r2, r1)
        st.add_judgement(cid, "a", "ann")
    with PreferenceStore(path) as st:  # reopening changes nothing
        assert [j.verdict for j in st.judgements()] == ["a"] and st.summary()["judgements"] == {"a": 1}


def test_judgements_record_who_when_and_refuse_bad_input(tmp_path):
    with PreferenceStore(tmp_path / "p.sqlite") as st:
        cap, r1, r2 = _two_rounds(st)
        assert st.add_reconstruction(cap, 1, "v1", [0, 10, 20]) == r1  # the same reconstruction keeps its row
        assert st.reconstruction(r1).path == "evaluator/a"
        cid = st.add_comparison(r2, r1)
        assert st.add_comparison(r2, r1) == cid
        assert st.next_comparison("ann")[0] == cid
        jid = st.add_judgement(cid, "tie", "  ann  ")
        j = st.judgements()[0]
        assert (j.id, j.verdict, j.annotator, j.source, j.a.round, j.b.round, j.score_a) == (jid, "tie", "ann", "human", 2, 1, 0.5)
        assert j.created_at > 0 and j.a.frames == [0, 10, 20]
        assert st.next_comparison("ann") is None and st.next_comparison("bob")[0] == cid  # per evaluator
        with pytest.raises(DuplicateJudgement, match="already judged"):
            st.add_judgement(cid, "a", "ann")
        with pytest.raises(InputError, match="no comparison 99"):
            st.add_judgement(99, "a", "ann")
        with pytest.raises(InputError, match="unknown verdict 'A better'"):
            st.add_judgement(cid, "A better", "bob")
        with pytest.raises(InputError, match="name"):
            st.add_judgement(cid, "a", " ")
        other = st.add_reconstruction(st.add_capture("real/other"), 1, "v1", [0, 1])
        with pytest.raises(InputError, match="same capture"):
            st.add_comparison(r1, other)
        with pytest.raises(InputError, match="same capture"):
            st.add_comparison(r1, r1)
        assert len(st.judgements()) == 1


def test_win_rate_counts_ties_half_and_either_side_shown_as_a(tmp_path):
    duels = [(2, 1, 1.0), (1, 2, 1.0), (1, 2, 0.0), (2, 1, 0.5), (3, 2, 1.0), (2, 0, 0.0)]
    assert win_rate(duels, 2, 1) == {"previous": 1, "wins": 2, "losses": 1, "ties": 1, "n": 4, "win_rate": 2.5 / 4}
    assert win_rate(duels, 3, 2)["win_rate"] == 1.0 and win_rate(duels, 2, 0)["win_rate"] == 0.0
    assert win_rate(duels, 5, 4) == {"previous": 4, "wins": 0, "losses": 0, "ties": 0, "n": 0, "win_rate": None}
    path = tmp_path / "p.sqlite"
    with PreferenceStore(path) as st:
        _, r1, r2 = _two_rounds(st)
        ab, ba = st.add_comparison(r2, r1), st.add_comparison(r1, r2)
        st.add_judgement(ab, "a", "ann")   # round 2 wins
        st.add_judgement(ba, "tie", "ann")  # tie
        st.add_judgement(ab, "b", "bob")   # round 1 wins
        st.add_judgement(ba, "b", "bob")   # round 2 wins (shown as B)
    assert sorted(human_duels(path)) == sorted([(2, 1, 1.0), (1, 2, 0.5), (2, 1, 0.0), (1, 2, 0.0)])
    assert win_rate(human_duels(path), 2, 1) == {"previous": 1, "wins": 2, "losses": 1, "ties": 1, "n": 4, "win_rate": 0.625}
