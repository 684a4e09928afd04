"""Sequence evaluation: the metrics on exact and perturbed trajectories, the oracle and SIFT front ends on
a synthetic box room, triangulation, and the CLI's one-line error for a capture without poses."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import roma
import torch

from vibe3r import geometry
from vibe3r.captures import Capture, write_capture_video
from vibe3r.errors import InputError
from vibe3r.eval import sequence as S
from vibe3r.recon.align import AlignConfig
from vibe3r.recon.run import RunConfig
from vibe3r.recon.synthetic import box_room_video
from vibe3r.recon.triangulate import triangulate_midpoint


def _capture(gt) -> Capture:
    n = len(gt.images)
    return Capture(name="box", images=gt.images, frame_names=[f"{i:05d}" for i in range(n)], K=gt.K, cam2world=gt.c2w,
                   depth=gt.depth, timestamps=None, source="vibe3r", meta={"path": "box"})


@pytest.fixture(scope="module")
def room():
    return _capture(box_room_video(4, n_frames=8, H=48, W=64, step=0.1))


def _perturb(c2w: np.ndarray, rot_deg: float, trans: float, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    out = c2w.copy()
    rv = torch.randn(len(c2w), 3, generator=g, dtype=torch.float64) * np.radians(rot_deg)
    out[:, :3, :3] = roma.rotvec_to_rotmat(rv).numpy() @ c2w[:, :3, :3]
    out[:, :3, 3] += trans * torch.randn(len(c2w), 3, generator=g, dtype=torch.float64).numpy()
    return out


def test_metrics_are_zero_for_the_truth_up_to_similarity_and_grow_with_perturbation(room):
    G = room.cam2world
    S3 = geometry.make_pose(roma.rotvec_to_rotmat(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)),
                            torch.tensor([1.0, -2.0, 0.5])).numpy()
    sim = S3 @ G
    sim[:, :3, 3] *= 3.7  # the same trajectory in another frame and scale
    m = S.pose_metrics(sim, G)
    assert m["ate_sim3"] < 1e-9 and m["rpe_rot_deg"] < 1e-5 and m["rpe_trans"] < 1e-9
    small, large = S.pose_metrics(_perturb(G, 1, 0.02), G), S.pose_metrics(_perturb(G, 5, 0.1), G)
    assert 0.005 < small["ate_sim3"] < large["ate_sim3"]
    assert 0.5 < small["rpe_rot_deg"] < large["rpe_rot_deg"]
    d = S.depth_per_frame(room.depth * np.arange(1, 9)[:, None, None], room.depth)  # per-frame scale: exact
    assert d["abs_rel"] < 1e-6 and d["delta1"] == 1.0 and d["frames"] == 8 and d["coverage"] == 1.0


def test_oracle_sequence_has_near_zero_error_and_beats_the_static_prior(room):
    res = S.evaluate_sequence(room, "oracle", cfg=RunConfig(align=AlignConfig(iters=60), mesh=False))
    m, s = res["metrics"], res["static_prior"]
    assert m["ate_sim3"] < 2e-3 * max(1.0, res["gt_path_extent"])
    assert m["rpe_rot_deg"] < 0.1 and m["depth"]["pointmap"]["abs_rel"] < 2e-3
    assert s["ate_sim3"] > 50 * m["ate_sim3"] and s["rpe_rot_deg"] > 1.0
    assert res["depth_kind"] == "triangulated+pointmap" and res["depth_abs_rel"] == m["depth"]["triangulated+pointmap"]["abs_rel"]
    assert "oracle" in S.format_summary(res) and S.dumps(res).startswith("{")


def test_midpoint_triangulation_recovers_points_and_depths():
    g = torch.Generator().manual_seed(0)
    K = np.array([[80.0, 0, 32], [0, 80.0, 24], [0, 0, 1]])
    X = (torch.rand(50, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.5, 2.0]) + torch.tensor([-1.0, -0.75, 2.0])).numpy()
    T = geometry.make_pose(roma.rotvec_to_rotmat(torch.tensor([0.02, 0.1, -0.01], dtype=torch.float64)),
                           torch.tensor([-0.3, 0.02, 0.05])).numpy()
    p_a = geometry.project(torch.from_numpy(X), K)[0].numpy()
    Xb = X @ T[:3, :3].T + T[:3, 3]
    p_b = geometry.project(torch.from_numpy(Xb), K)[0].numpy()
    Xt, za, zb, ang = triangulate_midpoint(p_a, p_b, K, K, T)
    assert np.abs(Xt - X).max() < 1e-9 and np.abs(za - X[:, 2]).max() < 1e-9 and np.abs(zb - Xb[:, 2]).max() < 1e-9
    assert (ang > 1).all()


def test_sift_front_end_feeds_the_same_alignment():
    cap = _capture(box_room_video(2, n_frames=6, H=96, W=128, step=0.1, turn_deg=4))
    res = S.evaluate_sequence(cap, "sift", cfg=RunConfig(align=AlignConfig(iters=30), mesh=False), depth="triangulated")
    m = res["metrics"]
    assert res["pose_methods"].get("essential", 0) >= res["edges"] // 2
    assert m["ate_sim3"] < 0.7 * res["static_prior"]["ate_sim3"]  # SIFT is weak on these smooth 128 px textures (1-4° per pair)
    assert m["depth"]["triangulated"]["abs_rel"] < 0.1 and 0 < m["depth"]["triangulated"]["coverage"] < 0.5
    assert res["depth_abs_rel"] == m["depth"]["triangulated"]["abs_rel"]


def test_capture_without_poses_is_a_one_line_cli_error(room, tmp_path, monkeypatch, capsys):
    from vibe3r.cli import main

    bare = Capture(name="v", images=room.images, frame_names=room.frame_names, K=None, cam2world=None, depth=None,
                   timestamps=None, source="video", meta={"path": "v.mp4"})
    with pytest.raises(InputError, match="no ground-truth poses"):
        S.evaluate_sequence(bare, "oracle")
    with pytest.raises(InputError, match="valid: model, sift"):
        S.evaluate_sequence(room, "orb")
    mp4 = write_capture_video(room.images, tmp_path / "room.mp4", fps=10)
    monkeypatch.delenv("VIBE3R_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["vibe3r", "eval", "sequence", "--capture", str(mp4), "--method", "sift"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert "room.mp4" in err and "no ground-truth poses" in err


def test_output_depth_exists_where_every_confidence_is_at_its_minimum(room):
    from vibe3r.recon import inference as I
    from vibe3r.recon.align import global_align

    edges = I.directed_edges([(i, j) for i in range(4) for j in range(i + 1, 4)])
    pred = I.ground_truth_pairwise(room.depth[:4], room.K[:4], room.cam2world[:4], edges)
    pred.conf_a.fill_(1.0)  # what float16 storage makes of a checkpoint whose confidence is 1 + 1e-4
    pred.conf_b.fill_(1.0)
    pred.conf_a[:, :4, :4] = 2.0  # a few confident pixels so that the alignment has a weight at all
    dense = global_align(pred, 4, room.K[:4], cfg=AlignConfig(iters=0))
    assert (dense.depth > 0).mean() > 0.99
    d = S.depth_per_frame(dense.depth, room.depth[:4])
    assert d["abs_rel"] < 1e-3
    sparse = global_align(pred, 4, room.K[:4], cfg=AlignConfig(iters=0, fuse_min_weight=0.0))
    assert (sparse.depth > 0).mean() < 0.05


def test_triangulated_depth_of_exact_matches_is_the_true_depth(room):
    from vibe3r.recon import inference as I
    from vibe3r.recon.triangulate import select_depth

    edges = I.directed_edges([(0, 2), (1, 3)], symmetric=False)
    pred = I.ground_truth_pairwise(room.depth[:4], room.K[:4], room.cam2world[:4], edges)
    H, W = room.hw
    uv = geometry.pixel_grid(H, W, torch.float64)[::3, ::3].reshape(-1, 2)
    for a, b in edges:
        X = geometry.unproject_depth(torch.from_numpy(room.depth[a]).double(), room.K[a])[::3, ::3].reshape(-1, 3)
        Xb = geometry.transform_points(geometry.relative_pose(room.cam2world[a], room.cam2world[b]), X)
        q, z = geometry.project(Xb, room.K[b])
        ok = ((q[:, 0] > 0) & (q[:, 0] < W - 1) & (q[:, 1] > 0) & (q[:, 1] < H - 1) & (z > 0)).numpy()
        pred.matches.append((uv.numpy()[ok].astype(np.float32), q.numpy()[ok].astype(np.float32)))
        pred.inlier_masks.append(np.ones(int(ok.sum()), bool))
    pointmap = np.full((4, H, W), 7.0, np.float32)
    tri = select_depth("triangulated", pointmap, pred, room.cam2world[:4], room.K[:4])
    d = S.depth_per_frame(tri, room.depth[:4])
    assert d["frames"] == 4 and d["abs_rel"] < 0.02 and 0.05 < d["coverage"] < 0.5
    filled = select_depth("triangulated+pointmap", pointmap, pred, room.cam2world[:4], room.K[:4])
    assert (filled[tri > 0] == tri[tri > 0]).all() and (filled > 0).all()
    for n in range(4):  # the holes: the pointmap depth at the triangulated depth's scale
        assert np.allclose(filled[n][tri[n] == 0], np.median(tri[n][tri[n] > 0]))
    with pytest.raises(InputError, match="valid: pointmap"):
        select_depth("mono", pointmap, pred, room.cam2world[:4], room.K[:4])
