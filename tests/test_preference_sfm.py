"""The exact trainer's ``sfm`` teacher: structure from motion of a real capture (pycolmap), no ground truth
read — checked against the capture's GT, cached per run, and used by the loop's preference stage."""

from __future__ import annotations

import numpy as np
import pytest
from _common import REAL, needs_real
from test_loop_prefer import exact_round

from vibe3r.captures import load_capture
from vibe3r.config import load_config
from vibe3r.geometry import rotation_error_deg, translation_direction_error_deg
from vibe3r.preference import sfm
from vibe3r.preference.sampling import exact_items, set_focal

SPEC = f"{REAL / '7scenes-redkitchen'}@0:48:3"  # 16 frames, 12 source frames apart


@needs_real
def test_sfm_poses_of_a_real_capture_agree_with_its_gt_and_are_cached(tmp_path, monkeypatch):
    cap = load_capture(SPEC, size=320)
    set_focal(cap, 518, 532)
    c2w = sfm.capture_poses(cap, tmp_path, SPEC)
    assert sorted(c2w) == list(range(16))
    rot, tdir = [], []
    for i in range(16):
        for j in range(i + 1, min(16, i + 4)):
            T, G = sfm.relative_pose(c2w, i, j), np.linalg.inv(cap.cam2world[j]) @ cap.cam2world[i]
            rot.append(float(rotation_error_deg(T[:3, :3], G[:3, :3])))
            tdir.append(float(translation_direction_error_deg(T[:3, 3], G[:3, 3], ignore_sign=True)))
    # measured: 1.2 deg / 12 deg median (the 7-Scenes GT belongs to the depth camera, itself ~1-2 deg off the colour frames)
    assert np.median(rot) < 2.5 and np.median(tdir) < 25
    assert sfm.relative_pose(c2w, 0, 99) is None

    def no_rerun(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the cached SfM was recomputed")

    monkeypatch.setattr(sfm, "_reconstruct", no_rerun)
    again = sfm.capture_poses(cap, tmp_path, SPEC)
    assert all(np.allclose(again[k], c2w[k]) for k in c2w)
    assert len(list(tmp_path.glob("sfm-*.json"))) == 1 and not list(tmp_path.glob("*.tmp*"))
    assert sfm.capture_structure(cap, tmp_path, SPEC).c2w.keys() == c2w.keys()  # the same SfM's points, cached beside
    fewer = load_capture(f"{REAL / '7scenes-redkitchen'}@0:45:3", size=320)
    set_focal(fewer, 518, 532)
    with pytest.raises(AssertionError, match="recomputed"):  # another frame set is another key
        sfm.capture_poses(fewer, tmp_path, f"{REAL / '7scenes-redkitchen'}@0:45:3")


class _Sampler:
    def pair_input(self, i, j):  # noqa: ANN001, ANN201
        return ("pair", i, j)

    def classical(self, i, j):  # noqa: ANN001, ANN201
        raise AssertionError("the sfm teacher never computes a two-view pose")


def test_exact_items_take_the_sfm_relative_pose_and_skip_unregistered_frames():
    rng = np.random.default_rng(0)
    c2w = {}
    for k in (0, 1, 3):
        c2w[k] = np.eye(4)
        c2w[k][:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0] * np.sign(np.linalg.det(np.linalg.qr(rng.normal(size=(3, 3)))[0]))
        c2w[k][:3, 3] = rng.normal(size=3)
    items = exact_items({"cap": _Sampler()}, [("cap", 0, 1), ("cap", 1, 2), ("cap", 0, 3)], poses={"cap": c2w})
    assert [it.pair for it in items] == [("pair", 0, 1), ("pair", 0, 3)]  # frame 2 was not registered
    # T21 maps camera-0 coordinates into camera 3: a world point seen from both agrees
    X = np.array([0.3, -0.2, 2.0, 1.0])
    assert np.allclose(items[1].T21 @ (np.linalg.inv(c2w[0]) @ X), np.linalg.inv(c2w[3]) @ X)


def test_an_unknown_teacher_is_a_config_error():
    from vibe3r.config import ConfigError

    with pytest.raises(ConfigError, match="teacher"):
        load_config(None, ["preference.teacher=gt"])  # ground truth is never a teacher


@needs_real
def test_the_loops_exact_stage_trains_against_the_captures_sfm(tmp_path):
    """``preference.teacher: sfm``: the loop registers the capture once (cached in the run folder) and the exact
    objective rewards the round's pairs under those poses."""
    cfg = load_config(None, [f"preference.captures=['{SPEC}']", "preference.size=64", "preference.pairs=2", "preference.n=2",
                             "preference.min_gap=2", "preference.max_gap=4", "preference.steps=2", "preference.method=exact",
                             "preference.teacher=sfm", "preference.exact_draws=64"])
    m = exact_round(tmp_path, cfg)["metrics"]
    assert m["exact_pairs"] == 2 and m["sfm_registered_frac"] == 1.0
    assert m["exact_reward"] > m["exact_reward_ref"] - 0.05 and m["exact_kl"] > 0
    assert len(list((tmp_path / "sfm").glob("sfm-*.json"))) == 1


@needs_real
def test_the_loops_samples_are_scored_against_the_captures_sfm(tmp_path):
    """``preference.teacher: sfm`` with GRPO: every sampled reconstruction of the round carries the alignment term,
    its disagreement in degrees with the capture's SfM, and the one SfM (cached) serves sampling and training."""
    from vibe3r.preference.store import PreferenceStore

    cfg = load_config(None, [f"preference.captures=['{SPEC}']", "preference.size=64", "preference.pairs=2", "preference.n=2",
                             "preference.min_gap=2", "preference.max_gap=4", "preference.steps=1", "preference.method=grpo",
                             "preference.teacher=sfm"])
    rec = exact_round(tmp_path, cfg)
    assert np.isfinite(rec["metrics"]["grpo_reward_mean"])  # GRPO trained on rewards with the alignment term
    with PreferenceStore(tmp_path / "rounds" / "0001" / "sample_real" / "preferences.sqlite") as store:
        rows = [s for s in store.samples(round=1) if s.degenerate is None]
    assert rows and all(s.rewards["alignment"] <= 0 for s in rows)
    assert len({round(s.rewards["alignment"], 6) for s in rows}) > 1  # it varies with the sample
    assert len(list((tmp_path / "sfm").glob("sfm-*.json"))) == 1
