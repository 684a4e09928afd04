"""bench/synthetic_pairs.py's SuperGlue export: the pair list of a tiny 2-video dataset gives back, through the
captures loader, the dataset's images, intrinsics and T21 (camera-1 -> camera-2) — and ``vibe3r eval pairs`` reads it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vibe3r.captures import load_pair_images, load_pairs
from vibe3r.recon.synthetic import write_box_dataset
from vibe3r.video_gen.dataset import PairShardDataset

BENCH = Path(__file__).resolve().parents[1] / "bench" / "synthetic_pairs.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("synthetic_pairs", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def exported(bench, tmp_path_factory):
    data = write_box_dataset(tmp_path_factory.mktemp("ds") / "pairs", n_videos=2, n_frames=6, H=24, W=32, pairs_per_video=5,
                             shard_size=4)
    return data, bench.export_superglue(data)


def test_export_reproduces_images_K_and_T21(exported):
    data, pairs_txt = exported
    items = list(PairShardDataset(data, shuffle=False))
    specs = load_pairs(pairs_txt)
    assert len(specs) == len(items) == json.loads((data / "index.json").read_text())["n_pairs"] > 4
    assert len({int(it["video"]) for it in items}) == 2
    assert all(len(line.split()) == 38 for line in pairs_txt.read_text().splitlines())
    for spec, it in zip(specs, items, strict=True):
        img0, img1, K0, K1, T = load_pair_images(spec)  # native size
        np.testing.assert_array_equal(img0, (it["img1"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        np.testing.assert_array_equal(img1, (it["img2"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        np.testing.assert_allclose(K0, it["K1"].numpy(), rtol=1e-7)
        np.testing.assert_allclose(K1, it["K2"].numpy(), rtol=1e-7)
        np.testing.assert_allclose(T, it["T21"].numpy(), atol=1e-6)  # T_0to1 == T21 (float32 in the item)


def test_exported_pose_reprojects_depth(bench, exported):
    """The convention checked numerically: view-0 depth moved by T_0to1 lands on view 1's depth; the inverse does not."""
    data, pairs_txt = exported
    good, inverse = bench.check_convention(data, pairs_txt)
    assert good > 0.5
    assert inverse < good - 0.2


def test_eval_pairs_cli_reads_the_export(exported):
    from vibe3r.cli import app

    _, pairs_txt = exported
    res = CliRunner().invoke(app, ["eval", "pairs", "--pairs", str(pairs_txt), "--method", "identity", "--size", "0", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["all"]["n"] == len(load_pairs(pairs_txt)) and out["all"]["fail_pct"] == 0


def test_trained_scene_seeds_are_refused(bench):
    with pytest.raises(SystemExit, match="held-out seeds must stay < 1000"):
        bench.heldout_overrides(videos=10, pairs=16, seed_start=995, seed=0)
