"""Pair selection, shards and streaming on an analytic world (a camera sliding in front of a wall)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vibe3r import geometry
from vibe3r.config import DatasetConfig
from vibe3r.errors import InputError
from vibe3r.video_gen.dataset import (
    PairShardDataset,
    ShardWriter,
    VideoGT,
    covisibility_matrix,
    select_pairs,
)

H, W = 24, 32


def wall_video(n: int = 8, step: float = 0.25, dist: float = 2.0) -> VideoGT:
    """Cameras translating along x in front of a wall at z = dist (camera frame = world frame axes)."""
    K = geometry.intrinsics_from_fov(60, W, H).numpy()
    c2w = np.stack([np.eye(4) for _ in range(n)])
    c2w[:, 0, 3] = np.arange(n) * step
    depth = np.full((n, H, W), dist, np.float32)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, H, W, 3), dtype=np.uint8)
    return VideoGT(images=images, depth=depth, K=np.stack([K] * n), c2w=c2w, scene_seed=7)


def test_covisibility_decreases_with_baseline():
    gt = wall_video()
    C = covisibility_matrix(gt.depth, gt.K, gt.c2w)
    assert np.allclose(np.diag(C), 1.0)
    row = C[0]
    assert np.all(np.diff(row) <= 1e-6), row  # moving away along x sees less and less of frame 0
    # closed form: shift in pixels = fx * baseline / depth; visible fraction = 1 - shift / W
    fx = gt.K[0, 0, 0]
    expect = 1 - fx * 0.25 / 2.0 / W
    assert row[1] == pytest.approx(expect, abs=1.5 / W)


def test_select_pairs_respects_covisibility_range():
    gt = wall_video()
    C = covisibility_matrix(gt.depth, gt.K, gt.c2w)
    cfg = DatasetConfig(pairs_per_video=10, covis_min=0.4, covis_max=0.9)
    pairs = select_pairs(C, cfg, np.random.default_rng(0))
    assert 0 < len(pairs) <= 10
    sym = np.minimum(C, C.T)
    for i, j, c in pairs:
        assert i != j
        assert 0.4 <= sym[i, j] <= 0.9
        assert c == pytest.approx(sym[i, j])
    again = select_pairs(C, cfg, np.random.default_rng(0))
    assert pairs == again


def test_shards_stream_consistent_supervision(tmp_path):
    gt = wall_video()
    C = covisibility_matrix(gt.depth, gt.K, gt.c2w)
    cfg = DatasetConfig(pairs_per_video=12, covis_min=0.3, covis_max=0.95, shard_size=5)
    pairs = select_pairs(C, cfg, np.random.default_rng(1))
    writer = ShardWriter(tmp_path / "shards", cfg.shard_size)
    writer.add(0, gt, pairs)  # a shard closes at a video boundary once shard_size pairs are buffered
    writer.add(1, gt, pairs)
    writer.flush()
    import json

    index = {"format_version": 1, "height": H, "width": W, "n_pairs": 2 * len(pairs), "shards": writer.shards, "videos": []}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert [s["pairs"] for s in writer.shards] == [len(pairs), len(pairs)]

    ds = PairShardDataset(tmp_path, shuffle=True, seed=3)
    items = list(ds)
    assert len(items) == len(ds) == 2 * len(pairs)
    for v in (0, 1):
        seen = sorted((int(it["frame1"]), int(it["frame2"])) for it in items if int(it["video"]) == v)
        assert seen == sorted((i, j) for i, j, _ in pairs)
    for it in items:
        i, j = int(it["frame1"]), int(it["frame2"])
        assert it["img1"].shape == (3, H, W) and it["img1"].max() <= 1
        assert torch.equal(it["img1"], torch.from_numpy(gt.images[i]).permute(2, 0, 1).float() / 255)
        # T21 maps camera-1 coordinates to camera-2: camera 1 sits at x = -baseline in camera 2
        baseline = (j - i) * 0.25
        assert it["T21"][0, 3].item() == pytest.approx(-baseline, abs=1e-5)
        # X^{2,1} is view 2's pointmap in camera-1 coordinates: same z, x shifted by +baseline
        pts22 = geometry.unproject_depth(it["depth2"], it["K2"])
        assert torch.allclose(it["pts21"][..., 0], pts22[..., 0] + baseline, atol=1e-4)
        assert torch.allclose(it["pts21"][..., 2], pts22[..., 2], atol=1e-5)
        assert torch.allclose(it["pts11"], geometry.unproject_depth(it["depth1"], it["K1"]))
        assert it["valid1"].all() and it["valid2"].all()

    # seeded order: the same seed and epoch give the same stream, another epoch another order
    order = [(int(x["frame1"]), int(x["frame2"])) for x in PairShardDataset(tmp_path, seed=3)]
    assert order == [(int(x["frame1"]), int(x["frame2"])) for x in items]
    ds2 = PairShardDataset(tmp_path, seed=3)
    ds2.set_epoch(1)
    assert [(int(x["frame1"]), int(x["frame2"])) for x in ds2] != order


def test_not_a_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no index.json"):
        PairShardDataset(tmp_path)


def test_batched_covisibility_equals_pairwise_reference():
    rng = np.random.default_rng(5)
    gt = wall_video(n=5)
    gt.depth = gt.depth * rng.uniform(0.7, 1.3, gt.depth.shape).astype(np.float32)  # bumpy wall, some occlusions
    gt.depth[:, :3, :5] = 0  # holes
    C = covisibility_matrix(gt.depth, gt.K, gt.c2w)
    for a in range(5):
        for b in range(5):
            if a != b:
                ref = geometry.covisibility(gt.depth[a], gt.depth[b], gt.K[a], gt.K[b], geometry.relative_pose(gt.c2w[a], gt.c2w[b]))
                assert C[a, b] == pytest.approx(ref, abs=2e-3)
