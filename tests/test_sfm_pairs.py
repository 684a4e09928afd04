"""Training pairs of a real capture supervised by its own structure from motion (``video_gen.sfm_pairs``):
the sparse depth lands where the points project, the pairs' implied correspondences agree with the
capture's ground truth (read here only to check), the trainer's losses see them, and the SfM is cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _common import REAL, needs_real

from vibe3r import geometry
from vibe3r.captures import load_capture
from vibe3r.errors import InputError
from vibe3r.preference import sfm
from vibe3r.recon.losses import gt_correspondences
from vibe3r.video_gen.dataset import PairShardDataset
from vibe3r.video_gen.sfm_pairs import build_sfm_pairs, choose_sfm_pairs, sparse_depth

SPEC = f"{REAL / '7scenes-redkitchen'}@0:48:3"  # 16 frames, 12 source frames apart


def test_sparse_depth_puts_each_point_on_its_pixel_nearest_first():
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    pts = np.array([[0.0, 0.0, 2.0],   # the principal point: pixel (15.5, 11.5) rounds to (16, 12)
                    [0.0, 0.0, 1.0],   # the same pixel, nearer: wins
                    [0.4, 0.2, 2.0],   # u = 15.5 + 10 = 25.5 -> 26, v = 11.5 + 5 = 16.5 -> 16 (round half to even)
                    [0.0, 0.0, -1.0],  # behind the camera
                    [5.0, 0.0, 1.0]])  # outside the image
    d = sparse_depth(pts, K, (24, 32), radius=0)
    assert d[12, 16] == 1.0 and d[16, 26] == 2.0
    assert (d > 0).sum() == 2
    d1 = sparse_depth(pts, K, (24, 32), radius=1)
    assert (d1[11:14, 15:18] == 1.0).all() and (d1 > 0).sum() == 18


def test_pairs_are_chosen_by_gap_and_shared_points():
    common = lambda i, j: 100 if j - i < 3 else 10  # noqa: E731
    got = choose_sfm_pairs([0, 1, 2, 3, 5], common, 1, 3, 50)  # frame 4 unregistered; gap-3 pairs share too few points
    assert got == [(0, 1, 100), (0, 2, 100), (1, 2, 100), (1, 3, 100), (2, 3, 100), (3, 5, 100)]
    assert choose_sfm_pairs([0, 1, 2], common, 2, 5, 50) == [(0, 2, 100)]


@needs_real
def test_sfm_pairs_of_a_real_capture_agree_with_its_gt_and_train(tmp_path, monkeypatch):
    out = tmp_path / "pairs"
    idx = build_sfm_pairs([SPEC], out, size=(128, 96), cache_dir=tmp_path / "sfm", min_gap=1, max_gap=3, min_common=50)
    info = idx["sfm"]["captures"][0]
    assert info["registered"] == 16 and idx["n_pairs"] == info["pairs"] >= 30  # every frame registered; 42 gap-1..3 pairs at most
    assert 0.03 < info["valid_frac"] < 0.5  # sparse: SIFT points widened to 3x3
    cap = load_capture(SPEC, size=128)  # ground truth, read only to check
    errs, n_corr = [], []
    shard = PairShardDataset(out, shuffle=False).load_shard(0)
    for k, item in enumerate(PairShardDataset(out, shuffle=False)):
        if k >= 12:
            break
        batch = {key: v[None] for key, v in item.items()}
        p, q = gt_correspondences(batch, 0)  # the correspondences the trainer's matching loss sees
        n_corr.append(len(p))
        fa, fb = (int(shard["frame"][r]) for r in shard["pairs"][k])
        # where the GT depth and poses send p (7-Scenes colour focal 518/532 at 640 px)
        K = geometry.scale_intrinsics(torch.tensor([[518.0, 0, 320], [0, 532.0, 240], [0, 0, 1]], dtype=torch.float64), 0.2, 0.2)
        d = torch.from_numpy(cap.depth[fa]).double()
        pi = p.round().long()
        z = d[pi[:, 1], pi[:, 0]]
        ok = z > 0
        X = geometry.unproject_depth(d, K)[pi[ok, 1], pi[ok, 0]]
        T = geometry.relative_pose(torch.from_numpy(cap.cam2world[fa]), torch.from_numpy(cap.cam2world[fb]))
        uv, _ = geometry.project(geometry.transform_points(T, X), K)
        errs.append(float((uv - q[ok].double()).norm(dim=-1).median()))
    # measured: 370-1660 correspondences per pair, each pair's median 0.1-2.5 px (at 128 px) from where the
    # GT depth and poses put them (the GT belongs to 7-Scenes' depth camera, itself not registered with the colour)
    assert min(n_corr) > 100
    assert np.median(errs) < 3.0

    from vibe3r.config import load_config
    from vibe3r.recon.losses import build_loss
    from vibe3r.recon.model import build_model

    cfg = load_config(None)
    model = build_model(cfg.recon.model, seed=0)
    batch = {key: v[None] for key, v in next(iter(PairShardDataset(out, seed=0))).items()}
    pred = model(batch["img1"], batch["img2"])
    loss, details = build_loss(cfg.recon.loss)(pred, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and details["match_n"] > 100
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    def no_rerun(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the cached SfM was recomputed")

    monkeypatch.setattr(sfm, "_reconstruct", no_rerun)
    again = build_sfm_pairs([SPEC], tmp_path / "again", size=(128, 96), cache_dir=tmp_path / "sfm", min_gap=1, max_gap=3,
                            min_common=50, max_pairs=8, shard_size=4)
    assert again["n_pairs"] == 8 and len(again["shards"]) == 2
    assert json.loads((tmp_path / "again" / "index.json").read_text())["sfm"]["captures"][0]["pairs"] == 8
    with pytest.raises(InputError, match="shares 100000"):
        build_sfm_pairs([SPEC], tmp_path / "none", size=(128, 96), cache_dir=tmp_path / "sfm", min_common=100_000)


@needs_real
def test_the_loops_sfm_real_stage_draws_new_pairs_each_round_and_trains_on_them(tmp_path):
    """``loop.sfm_pairs``: each round draws its own pairs of the capture (the SfM itself runs once per run,
    cached in the run folder), and the round's fine-tune trains on them."""
    from pathlib import Path

    from vibe3r.config import load_config
    from vibe3r.loop.registry import Registry
    from vibe3r.loop.stage import run_stage
    from vibe3r.loop.stages import STAGES, _no_pairs

    base = Path(__file__).resolve().parents[1] / "weights" / "recon-base"
    cfg = load_config(None, [f"preference.captures=['{SPEC}']", "loop.sfm_pairs=6", "loop.sfm_gaps=[1,3]",
                             "loop.image_size=[64,48]", "loop.train_steps=2", "loop.replay_fraction=0"])
    stage = {s.name: s for s in STAGES}
    drawn = []
    with Registry(tmp_path) as reg:
        for rnd in (1, 2):
            outputs = {}

            def resolve(name, rnd=rnd, outputs=outputs):  # noqa: ANN001, ANN202
                return {"recon": base, "replay": []}.get(name, outputs.get(name))

            args = {"cfg": cfg, "run_dir": tmp_path, "round": rnd, "registry": reg, "seed": 100 + rnd}
            rec = run_stage(stage["sfm_real"], 0, args, resolve)
            assert rec["metrics"]["pairs"] == 6 and rec["metrics"]["sfm_registered_frac"] == 1.0
            sfm_dir = tmp_path / "rounds" / f"{rnd:04d}" / "sfm_real" / "sfm"
            shard = PairShardDataset(sfm_dir, shuffle=False).load_shard(0)
            drawn.append({tuple(shard["frame"][p]) for p in shard["pairs"]})
            outputs["sfm"] = sfm_dir
            outputs["pairs"] = tmp_path / f"empty-{rnd}"
            _no_pairs(outputs["pairs"], 64, 48)
            m = run_stage(stage["train_recon"], 1, args, resolve)["metrics"]
            assert m["steps"] == 2 and m["new_pairs"] == 6 and m["train_pairs"] == 6  # all of it the SfM pairs
            assert m["final_match_acc"] > 0  # the matching loss saw their correspondences
    assert drawn[0] != drawn[1]  # a fresh draw each round
    assert all(1 <= b - a <= 3 for d in drawn for a, b in d)  # the shards name the capture's frames
    assert len(list((tmp_path / "sfm").glob("sfm-*-points.npz"))) == 1  # one SfM for both rounds


def test_bad_sfm_settings_are_one_line_errors():
    from vibe3r.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="sfm_gaps"):
        load_config(None, ["loop.sfm_gaps=[3,1]"])
    with pytest.raises(ConfigError, match="sfm_pairs"):
        load_config(None, ["loop.sfm_pairs=-1"])


def test_sfm_pairs_cli_names_what_is_missing(tmp_path):
    """A capture without intrinsics asks for --focal; frames SfM cannot register are a one-line error too."""
    import subprocess
    import sys

    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(frames / f"{k:05d}.png")
    cmd = [sys.executable, "-m", "vibe3r.cli", "video", "sfm-pairs", "--capture", str(frames), "--out", str(tmp_path / "out"),
           "--cache", str(tmp_path / "sfm")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "no intrinsics" in r.stderr and "--focal" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cmd + ["--focal", "60", "60"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "structure from motion" in r.stderr
    assert not (tmp_path / "out" / "index.json").exists()
