"""`vibe3r preference sample | score | show | export | train` on a tiny rendered capture and a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _common import TINY_MODEL
from PIL import Image
from typer.testing import CliRunner

from vibe3r.cli import app
from vibe3r.config import ReconModelConfig
from vibe3r.preference.store import PreferenceStore
from vibe3r.recon.model import build_model
from vibe3r.recon.synthetic import box_room_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pref")
    gt = box_room_video(3, n_frames=6, H=48, W=64, step=0.1)
    cap = root / "room"
    (cap / "frames").mkdir(parents=True)
    for k, img in enumerate(gt.images):
        Image.fromarray(img).save(cap / "frames" / f"{k:05d}.png")
    np.savez(cap / "gt.npz", K=gt.K, cam2world=gt.c2w, depth=gt.depth)
    build_model(ReconModelConfig(**TINY_MODEL)).save_pretrained(root / "ckpt")
    return root, cap


def _run(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res


def test_sample_is_stored_and_resumable_then_preferences_train(setup):
    root, cap = setup
    run = root / "run"
    common = ["preference", "sample", "--capture", cap, "--run", run, "--ckpt", root / "ckpt", "--n", 2, "--pairs", 2,
              "--min-gap", 1, "--max-gap", 2, "--size", 64]
    res = _run(*common)
    assert res.exit_code == 0, res.output
    with PreferenceStore(run / "preferences.sqlite") as st:
        samples = st.samples(round=1)
        assert len(samples) == 2 * 3 and sum(s.is_mode for s in samples) == 2
        assert all(np.isfinite(s.combined) and s.fwd.shape == (32 * 24,) for s in samples)
    assert _run(*common).exit_code == 0  # re-run: nothing drawn twice
    with PreferenceStore(run / "preferences.sqlite") as st:
        assert len(st.samples(round=1)) == 6
        # a human label (the evaluator page's path) so that DPO has data whatever the random model's rewards
        pid = samples[0].pair_id
        ids = [s.id for s in samples if s.pair_id == pid]
        st.add_preference(ids[1], ids[2], round=1, source="human", annotator="test")
    res = _run("preference", "score", "--run", run, "--round", 1)
    assert res.exit_code == 0 and "preferences added" in res.output
    res = _run("preference", "show", "--run", run, "--json")
    summary = json.loads(res.output)
    assert summary["pairs"] == 2 and any(p["source"] == "human" for p in summary["preferences"])
    res = _run("preference", "export", "--run", run, "--out", root / "p.parquet")
    assert res.exit_code == 0 and (root / "p.parquet").is_file()
    res = _run("preference", "train", "--run", run, "--out", root / "dpo", "--ckpt", root / "ckpt", "--steps", 2,
               "--size", 64)
    assert res.exit_code == 0, res.output
    last = json.loads(res.output.strip().splitlines()[-1])
    assert "loss" in last
    res = _run("preference", "train", "--run", run, "--out", root / "grpo", "--method", "grpo", "--ckpt", root / "ckpt",
               "--steps", 1, "--group", 2, "--size", 64, "--draws", "matches", "--draw-weight", 1.0)
    assert res.exit_code == 0, res.output
    assert "reward_mean" in json.loads(res.output.strip().splitlines()[-1])
    res = _run("preference", "train", "--run", run, "--out", root / "exact", "--method", "exact", "--ckpt", root / "ckpt",
               "--steps", 2, "--size", 64)
    assert res.exit_code == 0, res.output
    last = json.loads(res.output.strip().splitlines()[-1])
    assert last["step"] == 2 and {"reward", "reward_ref", "kl"} <= set(last)
    assert (root / "exact" / "merged" / "model.safetensors").is_file()


def test_bad_input_is_one_line(setup, tmp_path):
    root, cap = setup
    res = _run("preference", "train", "--run", tmp_path, "--out", tmp_path / "o", "--ckpt", root / "ckpt")
    assert res.exit_code != 0 and "no preferences in round 1" in str(res.exception)
    res = _run("preference", "train", "--run", tmp_path, "--out", tmp_path / "o", "--method", "ppo")
    assert "unknown preference method 'ppo'; valid: dpo, grpo, exact" in str(res.exception)
    res = _run("preference", "train", "--run", tmp_path, "--out", tmp_path / "o", "--draws", "inliers")
    assert "unknown --draws 'inliers'; valid: all, matches" in str(res.exception)
    res = _run("preference", "train", "--run", tmp_path, "--out", tmp_path / "o", "--method", "exact", "--teacher", "gt")
    assert "unknown --teacher 'gt'; valid: classical, sfm" in str(res.exception)  # ground truth is never a teacher
    res = _run("preference", "sample", "--capture", cap, "--run", tmp_path, "--align", "gt")
    assert "unknown --align 'gt'; valid: none, sfm" in str(res.exception)  # nor an alignment
    res = _run("preference", "show", "--run", tmp_path / "nope")
    assert "no preference store" in str(res.exception)
