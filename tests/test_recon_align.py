"""Scene graphs, pairwise pose solvers and global alignment, on exact pointmaps of the analytic box room."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vibe3r import geometry
from vibe3r.errors import InputError
from vibe3r.recon import align as A
from vibe3r.recon import inference as I
from vibe3r.recon.scene_graph import complete_graph, is_connected, make_graph, swin_graph
from vibe3r.recon.synthetic import box_room_video

N, H, W = 6, 24, 32




@pytest.fixture(scope="module")
def scene():
    gt = box_room_video(0, n_frames=N, H=H, W=W, step=0.12)  # seed 0: no pair sees only a plane (E ambiguity)
    edges = I.directed_edges(complete_graph(N))
    pred = I.ground_truth_pairwise(gt.depth, gt.K, gt.c2w, edges)
    c2w_rel = np.linalg.inv(gt.c2w[0]) @ gt.c2w  # the alignment's gauge: camera 0 = identity
    return gt, pred, c2w_rel


# ---- scene graphs ---------------------------------------------------------------------------


def test_complete_graph_has_every_pair_once():
    g = make_graph(5, "complete")
    assert g == complete_graph(5) and len(g) == 10 and len(set(g)) == 10 and all(i < j for i, j in g)


def test_auto_graph_is_complete_for_few_frames_and_swin_for_many():
    assert make_graph(6, "auto") == complete_graph(6)
    long = make_graph(40, "auto", window=2)
    assert len(long) < len(complete_graph(40)) / 3 and is_connected(40, long)


@pytest.mark.parametrize("n", [20, 100, 250, 1000])
def test_swin_graph_grows_linearly_and_connects_window_and_keyframes(n):
    g = swin_graph(n, window=3)
    assert len(g) <= 4 * n  # about n (window + 1/2), never n^2
    assert is_connected(n, g)
    s = set(g)
    assert all((i, i + k) in s for i in range(n - 3) for k in (1, 2, 3))
    every = int(np.ceil(np.sqrt(n)))
    keys = list(range(0, n, every))
    assert all((a, b) in s for a in keys for b in keys if a < b)  # loop closures between keyframes


def test_swin_random_pairs_are_seeded():
    a = swin_graph(60, window=2, random_per_frame=2, seed=5)
    assert a == swin_graph(60, window=2, random_per_frame=2, seed=5)
    assert a != swin_graph(60, window=2, random_per_frame=2, seed=6)
    assert len(a) > len(swin_graph(60, window=2))


def test_graph_errors_are_one_line():
    with pytest.raises(InputError, match="at least 2 frames"):
        make_graph(1)
    with pytest.raises(InputError, match="valid: auto, complete, swin"):
        make_graph(5, "star")


# ---- pairwise geometry ----------------------------------------------------------------------


def test_focal_from_an_exact_pointmap(scene):
    gt, pred, _ = scene
    f = I.estimate_focal(pred.pts_a[0].float(), pred.conf_a[0].float())
    assert f == pytest.approx(gt.K[0, 0, 0], rel=2e-3)
    K = I.frame_intrinsics(pred, N)
    assert np.allclose(K[:, 0, 0], gt.K[0, 0, 0], rtol=2e-3) and np.allclose(K[:, :2, 2], gt.K[0, :2, 2])


@pytest.mark.parametrize("solver", ["pnp", "procrustes", "essential"])
def test_pair_solvers_recover_the_exact_relative_pose_in_pair_units(scene, solver):
    gt, pred, _ = scene
    sub = I.PairwisePredictions(edges=pred.edges, pts_a=pred.pts_a, pts_b=pred.pts_b, conf_a=pred.conf_a, conf_b=pred.conf_b)
    if solver == "essential":  # exact matches: project frame a's pixels into b with the GT geometry
        for e, (a, b) in enumerate(pred.edges):
            Xb = geometry.transform_points(geometry.relative_pose(gt.c2w[a], gt.c2w[b]),
                                           geometry.unproject_depth(gt.depth[a], gt.K[a])).reshape(-1, 3)
            uv, z = geometry.project(Xb, gt.K[b])
            kp_a = geometry.pixel_grid(H, W).reshape(-1, 2)
            ok = (z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < W - 1) & (uv[:, 1] > 0) & (uv[:, 1] < H - 1)
            sub.matches.append((kp_a[ok].numpy(), uv[ok].float().numpy()))
    I.estimate_pair_poses(sub, gt.K, solver=solver, ransac_px=0.02)  # exact matches, f = 28 px: a tight threshold
    assert set(sub.pose_method) == {solver}
    R_err = geometry.rotation_error_deg(sub.rel_pose[:, :3, :3], pred.rel_pose[:, :3, :3])
    t_err = np.linalg.norm(sub.rel_pose[:, :3, 3] - pred.rel_pose[:, :3, 3], axis=1)
    assert float(R_err.max()) < 0.1 and t_err.max() < 2e-3  # for essential: the baseline from the pointmap


def test_baseline_from_matches_is_exact():
    rng = np.random.default_rng(0)
    X = rng.uniform([-1, -1, 2], [1, 1, 4], (50, 3))
    R = geometry.look_at(np.zeros(3), np.array([0.1, 0.05, 1.0]), up=(0, -1, 0)).numpy()[:3, :3].T
    t = np.array([0.3, -0.1, 0.05])
    K = np.array([[100.0, 0, 40], [0, 100, 30], [0, 0, 1]])
    uv, _ = geometry.project(torch.from_numpy(X @ R.T + t), torch.from_numpy(K))
    lam = I.baseline_from_matches(X, uv.numpy(), K, R, t / np.linalg.norm(t))
    assert lam == pytest.approx(np.linalg.norm(t), rel=1e-9)


# ---- global alignment -----------------------------------------------------------------------


def test_spanning_tree_init_is_exact_on_exact_pairs(scene):
    gt, pred, c2w_rel = scene
    c2w, depth = A.mst_init(pred, N)
    assert np.allclose(c2w[0], np.eye(4))
    assert geometry.ate(c2w, c2w_rel) < 1e-3
    assert geometry.depth_metrics(depth, gt.depth)["abs_rel"] < 1e-3


@pytest.mark.parametrize("stride", [1, 2])
def test_alignment_recovers_trajectory_and_depth_from_exact_pairs(scene, stride):
    gt, pred, c2w_rel = scene
    al = A.global_align(pred, N, gt.K, cfg=A.AlignConfig(iters=60, depth_stride=stride))
    assert al.stride == stride and al.depth.shape == gt.depth.shape
    assert np.allclose(al.c2w[0], np.eye(4), atol=1e-6)  # gauge: camera 0 fixed
    assert geometry.ate(al.c2w, c2w_rel) < 2e-3  # metres; the path is ~0.6 m
    assert geometry.depth_metrics(al.depth, gt.depth)["abs_rel"] < 2e-3
    rot = geometry.rotation_error_deg(al.c2w[:, :3, :3], c2w_rel[:, :3, :3])
    assert float(rot.max()) < 0.2
    # one world scale for the whole scene: depth ratio to GT is the same for every frame
    ratios = [np.median(gt.depth[n] / al.depth[n]) for n in range(N)]
    assert np.ptp(ratios) / np.mean(ratios) < 2e-3


def test_alignment_converges_back_from_a_noisy_initialisation(scene):
    gt, pred, c2w_rel = scene
    c2w0, d0 = A.mst_init(pred, N)
    rng = np.random.default_rng(0)
    c2w_n = c2w0.copy()
    for n in range(1, N):  # ~3 degrees and 5 cm of noise per camera, 10 % per depth pixel
        dR = geometry.look_at(np.zeros(3), np.array([*rng.normal(0, 0.05, 2), 1.0]), up=(0, -1, 0)).numpy()
        c2w_n[n] = c2w_n[n] @ dR
        c2w_n[n, :3, 3] += rng.normal(0, 0.05, 3)
    d_n = d0 * np.exp(rng.normal(0, 0.1, d0.shape))
    before = geometry.ate(c2w_n, c2w_rel)
    al = A.global_align(pred, N, gt.K, cfg=A.AlignConfig(iters=150, lr=0.02), init=(c2w_n, d_n))
    after = geometry.ate(al.c2w, c2w_rel)
    assert before > 0.03 and after < before / 5
    assert al.losses[-1] < al.init_loss / 5
    assert geometry.depth_metrics(al.depth, gt.depth)["abs_rel"] < 0.01


def test_alignment_with_unknown_focal_starts_from_the_pointmap_focal(scene):
    gt, pred, c2w_rel = scene
    K0 = I.frame_intrinsics(pred, N)
    al = A.global_align(pred, N, K0, known_K=False, cfg=A.AlignConfig(iters=60))
    assert al.K[0, 0, 0] == pytest.approx(gt.K[0, 0, 0], rel=1e-2)
    assert np.allclose(al.K[:, 0, 0], al.K[0, 0, 0])  # shared focal
    assert geometry.ate(al.c2w, c2w_rel) < 5e-3


def test_pairwise_memory_is_linear_in_pairs():
    pairs_250 = make_graph(250, "auto")
    pairs_500 = make_graph(500, "auto")
    assert len(pairs_500) < 2.2 * len(pairs_250)
    # float16 pointmaps + confidences of every directed edge at 128x96: well under 1 GiB for 250 frames
    E = 2 * len(pairs_250)
    assert E * 96 * 128 * 8 * 2 < 2**30
    assert A.auto_stride(E, (96, 128), A.AlignConfig().max_points) >= 2


def _exact_matches(gt, pred):
    """Every pixel of frame a with its exact projection in frame b, all marked RANSAC inliers."""
    out = I.PairwisePredictions(edges=pred.edges, pts_a=pred.pts_a, pts_b=pred.pts_b, conf_a=pred.conf_a, conf_b=pred.conf_b,
                                rel_pose=pred.rel_pose.copy(), pose_method=list(pred.pose_method))
    for a, b in pred.edges:
        Xb = geometry.transform_points(geometry.relative_pose(gt.c2w[a], gt.c2w[b]),
                                       geometry.unproject_depth(gt.depth[a], gt.K[a])).reshape(-1, 3)
        uv, z = geometry.project(Xb, gt.K[b])
        ok = (z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < W - 1) & (uv[:, 1] > 0) & (uv[:, 1] < H - 1)
        out.matches.append((geometry.pixel_grid(H, W).reshape(-1, 2)[ok].numpy(), uv[ok].float().numpy()))
        out.inlier_masks.append(np.ones(int(ok.sum()), bool))
    out.n_inliers = np.array([len(m[0]) for m in out.matches])
    return out


def test_match_reprojection_term_alone_recovers_the_trajectory(scene):
    gt, pred, c2w_rel = scene
    pm = _exact_matches(gt, pred)
    c2w0, d0 = A.mst_init(pm, N)
    rng = np.random.default_rng(1)
    c2w_n = c2w0.copy()
    c2w_n[1:, :3, 3] += rng.normal(0, 0.05, (N - 1, 3))
    before = geometry.ate(c2w_n, c2w_rel)
    al = A.global_align(pm, N, gt.K, cfg=A.AlignConfig(iters=150, pts_weight=0.0, match_weight=1.0),
                        init=(c2w_n, d0 * np.exp(rng.normal(0, 0.1, d0.shape))))
    assert before > 0.03 and geometry.ate(al.c2w, c2w_rel) < before / 5


def test_an_edge_contradicting_the_spanning_tree_is_dropped(scene):
    gt, pred, c2w_rel = scene
    bad = I.PairwisePredictions(edges=pred.edges, pts_a=pred.pts_a, pts_b=pred.pts_b.clone(), conf_a=pred.conf_a.clone(),
                                conf_b=pred.conf_b, rel_pose=pred.rel_pose.copy(), pose_method=list(pred.pose_method))
    e = int(np.flatnonzero((pred.edges[:, 0] == 0) & (pred.edges[:, 1] == N - 1))[0])
    Rz = geometry.look_at(np.zeros(3), np.array([0.5, 0.0, 1.0]), up=(0, -1, 0)).numpy()  # ~27 degrees
    bad.rel_pose[e] = Rz @ bad.rel_pose[e]
    bad.pts_b[e] = geometry.transform_points(torch.from_numpy(Rz), bad.pts_b[e].double()).half()  # a wrong pointmap
    bad.conf_a[e] = 1.0  # weakest edge: not in the spanning tree
    al = A.global_align(bad, N, gt.K, cfg=A.AlignConfig(iters=60))
    assert al.edges_kept == bad.n_edges - 1
    assert geometry.ate(al.c2w, c2w_rel) < 2e-3
