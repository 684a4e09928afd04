"""The preference store keeps every sample and preference, survives reopening, and exports to parquet."""

from __future__ import annotations

import numpy as np
import pytest

from vibe3r.errors import InputError
from vibe3r.preference.store import PreferenceStore
from vibe3r.recon.policy import PairSample


def _samples(n: int, seed0: int = 0) -> list[PairSample]:
    rng = np.random.default_rng(seed0)
    out = []
    for k in range(n):
        T = np.eye(4)
        T[:3, 3] = rng.normal(size=3)
        out.append(PairSample(seed=seed0 + k, fwd=rng.integers(0, 12, 12, dtype=np.int32),
                              bwd=rng.integers(0, 12, 12, dtype=np.int32), logp=-float(k), kp1=np.zeros((5, 2)),
                              kp2=np.zeros((5, 2)), inliers=np.ones(5, bool), T21=None if k == 3 else T))
    return out


def _rewards(values, degenerate=()):
    return [{"combined": v, "epipolar": v / 2, "degenerate": ("no pose" if k in degenerate else None)}
            for k, v in enumerate(values)]


def test_samples_and_reward_preferences_round_trip(tmp_path):
    db = tmp_path / "run" / "preferences.sqlite"
    with PreferenceStore(db) as st:
        cap = st.add_capture("real/7scenes@0:125", "7scenes", 125)
        assert st.add_capture("real/7scenes@0:125") == cap  # idempotent
        p1, p2 = st.add_pair(cap, 0, 7), st.add_pair(cap, 3, 9)
        s1 = _samples(4)
        ids1 = st.add_samples(p1, s1, _rewards([1.0, 3.0, 2.0, -5.0], degenerate=(3,)), "base", round=1)
        ids2 = st.add_samples(p2, _samples(3, 10), _rewards([0.5, 0.5, 0.5]), "base", round=1)
        assert st.add_samples(p1, s1[:1], _rewards([9.0]), "base", round=1) == ids1[:1]  # same sample: same row
        n = st.prefer_by_reward(round=1, model_version="base", min_margin=0.1)
        assert n == 1  # pair 2's rewards are all equal: no preference
    with PreferenceStore(db) as st:  # reopened from disk
        prefs = st.preferences(round=1)
        assert len(prefs) == 1
        p = prefs[0]
        assert (p.i, p.j, p.source) == (0, 7, "reward")
        assert p.chosen.id == ids1[1] and p.rejected.id == ids1[3]  # best vs the degenerate one
        assert p.margin == pytest.approx(8.0)
        assert np.array_equal(p.chosen.fwd, s1[1].fwd) and np.array_equal(p.rejected.bwd, s1[3].bwd)
        assert np.allclose(p.chosen.T21, s1[1].T21) and p.rejected.T21 is None
        assert p.chosen.rewards == {"epipolar": 1.5}
        h = st.add_preference(ids2[2], ids2[0], round=1, source="human", annotator="ann@lab")
        assert st.preferences(source="human")[0].annotator == "ann@lab" and h > p.id
        summary = st.summary()
        assert summary["samples_per_round"][1]["samples"] == 7 and summary["samples_per_round"][1]["degenerate"] == 1
        with pytest.raises(InputError, match="unknown preference source"):
            st.add_preference(ids1[0], ids1[1], 1, source="oracle")
        with pytest.raises(InputError, match="same pair"):
            st.add_preference(ids1[0], ids2[1], 1)
        from vibe3r.preference.rewards import RewardConfig

        st.reweight(1, RewardConfig(w_epipolar=2.0))  # stored terms, new weights
        re = {s.id: s.combined for s in st.samples(round=1)}
        assert re[ids1[1]] == pytest.approx(3.0) and re[ids1[3]] == pytest.approx(min(re[i] for i in ids1[:3]) - 1)
        out = st.export(tmp_path / "prefs.parquet")
    import datasets

    ds = datasets.Dataset.from_parquet(str(out))
    assert len(ds) == 2 and set(ds["source"]) == {"reward", "human"}
    assert ds[0]["chosen_fwd"] == s1[1].fwd.tolist()
