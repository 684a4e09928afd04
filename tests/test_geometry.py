"""vibe3r.geometry against closed-form cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch

from vibe3r import geometry as G

D = torch.float64


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    """n random rigid c2w poses (n, 4, 4) float64 from a seeded numpy generator."""
    rng = np.random.default_rng(seed)
    R = roma.rotvec_to_rotmat(torch.as_tensor(rng.normal(size=(n, 3))))
    t = torch.as_tensor(rng.normal(size=(n, 3)))
    return G.make_pose(R, t)


def K_of(fx=50.0, fy=55.0, cx=15.5, cy=11.0) -> torch.Tensor:
    return torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=D)


def rotz(deg: float) -> torch.Tensor:
    return roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, math.radians(deg)], dtype=D))


# --------------------------------------------------------------------------------------------
# poses
# --------------------------------------------------------------------------------------------


def test_inv_pose_and_relative_pose_compose_to_identity():
    A, B = random_poses(5, seed=1), random_poses(5, seed=2)
    I = torch.eye(4, dtype=D).expand(5, 4, 4)
    torch.testing.assert_close(G.inv_pose(A) @ A, I)
    torch.testing.assert_close(A @ G.inv_pose(A), I)
    torch.testing.assert_close(G.inv_pose(A), torch.linalg.inv(A))
    torch.testing.assert_close(G.relative_pose(A, A), I)
    torch.testing.assert_close(G.relative_pose(A, B) @ G.relative_pose(B, A), I)
    # T_b_a maps a point in camera-a coordinates to camera-b coordinates
    Xa = torch.tensor([0.3, -0.2, 2.0], dtype=D)
    Xw = A[0, :3, :3] @ Xa + A[0, :3, 3]
    Xb = G.inv_pose(B[0])[:3, :3] @ Xw + G.inv_pose(B[0])[:3, 3]
    T = G.relative_pose(A[0], B[0])
    torch.testing.assert_close(T[:3, :3] @ Xa + T[:3, 3], Xb)
    # chain: c->b->a equals c->a
    C = random_poses(1, seed=3)[0]
    torch.testing.assert_close(G.relative_pose(B[0], A[0]) @ G.relative_pose(C, B[0]), G.relative_pose(C, A[0]))


def test_transform_points_on_point_lists_and_pointmaps():
    T = random_poses(3, seed=4)
    rng = np.random.default_rng(5)
    pts = torch.as_tensor(rng.normal(size=(7, 3)))
    expect = pts @ T[0, :3, :3].T + T[0, :3, 3]
    torch.testing.assert_close(G.transform_points(T[0], pts), expect)
    # batch of point lists with a batch of transforms
    bpts = torch.as_tensor(rng.normal(size=(3, 7, 3)))
    out = G.transform_points(T, bpts)
    for b in range(3):
        torch.testing.assert_close(out[b], bpts[b] @ T[b, :3, :3].T + T[b, :3, 3])
    # pointmap (H, W, 3) with one transform, and (B, H, W, 3) with B transforms
    pm = torch.as_tensor(rng.normal(size=(4, 5, 3)))
    torch.testing.assert_close(G.transform_points(T[0], pm), (pm.reshape(-1, 3) @ T[0, :3, :3].T + T[0, :3, 3]).reshape(4, 5, 3))
    bpm = torch.as_tensor(rng.normal(size=(3, 4, 5, 3)))
    out = G.transform_points(T, bpm)
    for b in range(3):
        torch.testing.assert_close(out[b], G.transform_points(T[b], bpm[b]))
    # float32 tensors stay float32-compatible
    assert G.transform_points(T[0].float(), pm.float()).dtype == torch.float32


def test_look_at_points_camera_at_target_with_z_up():
    eye = torch.tensor([1.0, -2.0, 1.5], dtype=D)
    target = torch.tensor([3.0, 1.0, 0.5], dtype=D)
    c2w = G.look_at(eye, target)
    R = c2w[:3, :3]
    torch.testing.assert_close(R.T @ R, torch.eye(3, dtype=D))
    assert torch.det(R) == pytest.approx(1.0)
    torch.testing.assert_close(c2w[:3, 3], eye)
    fwd = (target - eye) / (target - eye).norm()
    torch.testing.assert_close(R[:, 2], fwd)  # camera +z at the target
    assert abs(float(R[2, 0])) < 1e-12  # camera x (right) is horizontal
    assert float(R[2, 1]) < 0  # camera y (down) points down in a z-up world
    uv, z = G.project(G.transform_points(G.inv_pose(c2w), target[None]), K_of())
    torch.testing.assert_close(uv[0], torch.tensor([15.5, 11.0], dtype=D))
    assert z[0] == pytest.approx(float((target - eye).norm()))
    # a point above the target appears above the image centre, one to the right of the view to the right
    up_pt = target + torch.tensor([0, 0, 0.3], dtype=D)
    right_pt = target + 0.3 * R[:, 0]
    uv, _ = G.project(G.transform_points(G.inv_pose(c2w), torch.stack([up_pt, right_pt])), K_of())
    assert uv[0, 1] < 11.0 and uv[1, 0] > 15.5
    # looking straight down is still a proper rotation
    down = G.look_at([0.0, 0.0, 3.0], [0.0, 0.0, 0.0])[:3, :3]
    torch.testing.assert_close(down.T @ down, torch.eye(3, dtype=D))
    torch.testing.assert_close(down[:, 2], torch.tensor([0.0, 0.0, -1.0], dtype=D))


# --------------------------------------------------------------------------------------------
# intrinsics and projection
# --------------------------------------------------------------------------------------------


def test_project_unproject_round_trip():
    rng = np.random.default_rng(6)
    depth = torch.as_tensor(rng.uniform(0.5, 5.0, size=(2, 6, 8)))
    K = torch.stack([K_of(), K_of(40.0, 42.0, 3.5, 2.5)])
    X = G.unproject_depth(depth, K)  # 2,6,8,3
    torch.testing.assert_close(X[..., 2], depth)
    uv, z = G.project(X, K)
    torch.testing.assert_close(uv, G.pixel_grid(6, 8, D).expand(2, 6, 8, 2))
    torch.testing.assert_close(z, depth)
    # pixel (cx, cy) at depth d is on the optical axis
    Xc = G.unproject_depth(torch.full((23, 32), 2.0, dtype=D), K_of(cx=15.0, cy=11.0))
    torch.testing.assert_close(Xc[11, 15], torch.tensor([0.0, 0.0, 2.0], dtype=D))


def test_scale_intrinsics_keeps_pixel_centre_convention():
    K = K_of(100.0, 100.0, 31.5, 23.5)  # 64x48 image, principal point at the centre
    K2 = G.scale_intrinsics(K, 2.0)  # 128x96
    ray = torch.linalg.inv(K) @ torch.tensor([0.0, 0.0, 1.0], dtype=D)  # ray through pixel (0, 0)
    p = K2 @ ray
    torch.testing.assert_close(p[:2] / p[2], torch.tensor([0.5, 0.5], dtype=D))  # between new pixels 0 and 1
    torch.testing.assert_close(K2[:2, 2], torch.tensor([63.5, 47.5], dtype=D))  # still the centre
    Kh = G.scale_intrinsics(K, 0.5, 0.25)
    torch.testing.assert_close(Kh, torch.tensor([[50.0, 0, 15.5], [0, 25.0, 5.5], [0, 0, 1]], dtype=D))
    # the ray through original pixel centre u lands at (u + 0.5) * s - 0.5
    for u in (0.0, 10.0, 63.0):
        q = Kh @ (torch.linalg.inv(K) @ torch.tensor([u, u, 1.0], dtype=D))
        torch.testing.assert_close(q[:2] / q[2], torch.tensor([(u + 0.5) * 0.5 - 0.5, (u + 0.5) * 0.25 - 0.5], dtype=D))
    # fov helper: principal point at the centre, fx from the horizontal field of view
    Kf = G.intrinsics_from_fov(90.0, 64, 48)
    assert float(Kf[0, 0]) == pytest.approx(32.0) and float(Kf[0, 2]) == 31.5 and float(Kf[1, 2]) == 23.5


def test_camera_rays_hit_points_at_their_depth():
    c2w = random_poses(1, seed=7)[0]
    K = K_of()
    depth = torch.full((4, 6), 3.0, dtype=D)
    o, d = G.camera_rays(K, c2w, 4, 6)
    Xw = G.transform_points(c2w, G.unproject_depth(depth, K))
    torch.testing.assert_close(o + 3.0 * d, Xw)


def test_plucker_rays_closed_form():
    C = random_poses(2, seed=8)
    K = K_of()
    P = G.plucker_rays(K, C, 5, 7)  # 2,6,5,7
    assert P.shape == (2, 6, 5, 7)
    d, m = P[:, :3].movedim(1, -1), P[:, 3:].movedim(1, -1)  # 2,5,7,3
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, 5, 7, dtype=D))
    torch.testing.assert_close((d * m).sum(-1), torch.zeros(2, 5, 7, dtype=D))  # moment ⟂ direction
    # any point on the ray satisfies p × d = m
    for b in range(2):
        pts = G.transform_points(C[b], G.unproject_depth(torch.full((5, 7), 2.5, dtype=D), K))
        torch.testing.assert_close(torch.linalg.cross(pts, d[b], dim=-1), m[b])
    # batch equals single; the ray through the principal point is the camera's z axis
    torch.testing.assert_close(G.plucker_rays(K, C[1], 5, 7), P[1])
    Kc = K_of(cx=3.0, cy=2.0)
    Pc = G.plucker_rays(Kc, C[0], 5, 7)
    torch.testing.assert_close(Pc[:3, 2, 3], C[0, :3, 2])


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def test_rotation_and_translation_errors_on_known_angles():
    for deg in (0.0, 5.0, 30.0, 90.0, 179.0):
        R = roma.rotvec_to_rotmat(torch.tensor([1.0, 2.0, -0.5], dtype=D) / math.sqrt(5.25) * math.radians(deg))
        assert float(G.rotation_error_deg(R, torch.eye(3, dtype=D))) == pytest.approx(deg, abs=1e-6)
    A = random_poses(1, seed=9)[0, :3, :3]
    assert float(G.rotation_error_deg(A @ rotz(12.0), A)) == pytest.approx(12.0)
    t = torch.tensor([1.0, 0.0, 0.0], dtype=D)
    for deg in (0.0, 45.0, 120.0):
        u = torch.tensor([math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0], dtype=D) * 3.0
        assert float(G.translation_direction_error_deg(u, t)) == pytest.approx(deg, abs=1e-5)
    assert float(G.translation_direction_error_deg(-t, t)) == pytest.approx(180.0)
    assert float(G.translation_direction_error_deg(-t, t, ignore_sign=True)) == pytest.approx(0.0)
    assert float(G.translation_direction_error_deg(torch.zeros(3, dtype=D), t)) == 90.0


def test_pose_auc_hand_computed():
    """errors [1, 3, 100]: recall 1/3 at 1, 2/3 at 3. Trapezoid up to 5:
    1*(0+1/3)/2 + 2*(1/3+2/3)/2 + 2*(2/3) = 1/6 + 1 + 4/3 = 2.5 -> 2.5/5 = 50 %.
    Up to 2: 1/6 + 1*(1/3 + 1/3)/2 = 1/2 -> 25 %. Up to 100: an error equal to the threshold
    is not counted (SuperGlue's searchsorted), recall stays 2/3 from 3 to 100:
    1/6 + 1 + 97*2/3 = 65.8333 -> 65.8333 %."""
    aucs = G.pose_auc([3.0, 100.0, 1.0], thresholds=(2, 5, 100))
    np.testing.assert_allclose(aucs, [25.0, 50.0, 1 / 6 + 1 + 97 * 2 / 3], rtol=1e-9)
    assert G.pose_auc([], thresholds=(5,)) == [0.0]
    assert G.pose_auc([0.0, 0.0], thresholds=(5,)) == [100.0]
    assert G.pose_auc([np.inf], thresholds=(5, 10)) == [0.0, 0.0]


def test_umeyama_and_ate_recover_known_sim3():
    rng = np.random.default_rng(10)
    src = torch.as_tensor(rng.normal(size=(20, 3)))
    R = roma.rotvec_to_rotmat(torch.tensor([0.3, -0.4, 1.1], dtype=D))
    t = torch.tensor([2.0, -1.0, 0.5], dtype=D)
    s = 2.5
    dst = s * src @ R.T + t
    R_, t_, s_ = G.umeyama_alignment(src, dst)
    torch.testing.assert_close(R_, R)
    torch.testing.assert_close(t_, t)
    assert s_ == pytest.approx(s)
    gt = random_poses(12, seed=11)
    S = G.make_pose(R, t)
    pred = G.inv_pose(S) @ gt  # the same trajectory in another frame ...
    pred[:, :3, 3] /= s  # ... and scale
    assert G.ate(pred, gt, align="sim3") == pytest.approx(0.0, abs=1e-9)
    assert G.ate(pred, gt, align="se3") > 0.1
    assert G.ate(gt, gt, align="none") == 0.0
    with pytest.raises(ValueError, match="sim3"):
        G.ate(pred, gt, align="bogus")
    r = G.rpe(gt, gt)
    assert r["rpe_rot_deg"] == pytest.approx(0.0, abs=1e-5) and r["rpe_trans"] == pytest.approx(0.0, abs=1e-9)


def test_depth_metrics_on_scaled_depth():
    rng = np.random.default_rng(12)
    gt = torch.as_tensor(rng.uniform(1, 4, size=(10, 12)))
    gt[0, :3] = 0  # invalid
    m = G.depth_metrics(3.0 * gt, gt)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12) and m["delta1"] == 1.0
    assert m["scale"] == pytest.approx(1 / 3)
    m = G.depth_metrics(3.0 * gt, gt, median_scale=False)
    assert m["abs_rel"] == pytest.approx(2.0) and m["delta1"] == 0.0
    pred = gt.clone()
    pred[1] *= 1.1  # 12 of the 117 valid pixels 10 % off, 12 others 2x off
    pred[2] *= 2.0
    m = G.depth_metrics(pred, gt, median_scale=False)
    assert m["abs_rel"] == pytest.approx((0.1 * 12 + 1.0 * 12) / 117)
    assert m["delta1"] == pytest.approx(105 / 117)
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[1:3] = False  # masked out: exact again
    assert G.depth_metrics(pred, gt, mask=mask, median_scale=False)["abs_rel"] == pytest.approx(0.0)
    assert math.isnan(G.depth_metrics(gt, torch.zeros_like(gt))["abs_rel"])


# --------------------------------------------------------------------------------------------
# two-view depth consistency
# --------------------------------------------------------------------------------------------


def test_warp_depth_consistency_on_a_plane():
    """Fronto-parallel wall at z = 2 in camera a; camera b is 0.5 m closer and 0.2 m to the right,
    so its depth is 1.5 everywhere: with the true pose every co-visible pixel agrees exactly,
    with the identity pose every pixel is off by |2 - 1.5| / 1.5 = 1/3."""
    H, W = 24, 32
    K = K_of(30.0, 30.0, 15.5, 11.5)
    c2w_a = torch.eye(4, dtype=D)
    c2w_b = G.make_pose(torch.eye(3, dtype=D), torch.tensor([0.2, 0.0, 0.5], dtype=D))
    da = torch.full((H, W), 2.0, dtype=D)
    db = torch.full((H, W), 1.5, dtype=D)
    T = G.relative_pose(c2w_a, c2w_b)
    rel, valid = G.warp_depth_consistency(da, db, K, K, T)
    assert valid.any()
    torch.testing.assert_close(rel[valid], torch.zeros(int(valid.sum()), dtype=D))
    # valid = the projection lands inside b: compare with the closed form u_b = fx (x - 0.2) / 1.5 + cx
    uv = G.pixel_grid(H, W, D)
    x = (uv[..., 0] - 15.5) / 30.0 * 2.0
    y = (uv[..., 1] - 11.5) / 30.0 * 2.0
    ub = 30.0 * (x - 0.2) / 1.5 + 15.5
    vb = 30.0 * y / 1.5 + 11.5
    inside = (torch.round(ub) >= 0) & (torch.round(ub) <= W - 1) & (torch.round(vb) >= 0) & (torch.round(vb) <= H - 1)
    assert torch.equal(valid, inside)
    rel_id, valid_id = G.warp_depth_consistency(da, db, K, K, torch.eye(4, dtype=D))
    assert bool(valid_id.all())
    torch.testing.assert_close(rel_id, torch.full((H, W), 1 / 3, dtype=D))
    # holes in either depth map are never valid; covisibility counts a's valid pixels
    da2 = da.clone()
    da2[:, :4] = 0
    rel2, valid2 = G.warp_depth_consistency(da2, db, K, K, T)
    assert not valid2[:, :4].any()
    cov = G.covisibility(da2, db, K, K, T, tol=0.01)
    assert cov == pytest.approx(float((valid2 & (rel2 < 0.01)).sum()) / float((da2 > 0).sum()))
    assert G.covisibility(da, db, K, K, torch.eye(4, dtype=D)) == 0.0
