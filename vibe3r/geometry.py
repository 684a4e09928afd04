"""Camera conventions, poses, projection, Plücker rays and metrics — the one place they live.

Conventions (used by every module of vibe3r):

* Camera axes are OpenCV: x right, y down, z forward.
* A pose is **camera-to-world**, a 4x4 matrix ``c2w`` with ``X_world = R @ X_cam + t``.
  float64 on disk, float32 in tensors.
* ``relative_pose(c2w_a, c2w_b)`` is ``T_b_a = inv(c2w_b) @ c2w_a``: it maps points in camera *a*
  coordinates into camera *b* coordinates (the SuperGlue pairs format calls it ``T_0to1``).
* Intrinsics ``K`` are 3x3 in pixels of the image they belong to; pixel centres sit at integer
  coordinates (pixel (0, 0) covers [-0.5, 0.5]^2). ``scale_intrinsics`` keeps that convention.
* Pointmaps are (..., H, W, 3) tensors, depth maps (..., H, W) with 0 meaning "no value".

Functions accept torch tensors (any leading batch shape). Numpy inputs are converted with
``torch.as_tensor`` and returned as tensors; call ``.numpy()`` on the result if needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import roma
import torch
import torch.nn.functional as F

Tensorish = torch.Tensor | np.ndarray


def _t(x: Tensorish, dtype: torch.dtype | None = None) -> torch.Tensor:
    x = torch.as_tensor(x)
    if dtype is not None:
        x = x.to(dtype)
    elif not torch.is_floating_point(x):
        x = x.float()
    return x


# --------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------


def make_pose(R: Tensorish, t: Tensorish) -> torch.Tensor:
    """Stack rotation (..., 3, 3) and translation (..., 3) into a 4x4 rigid transform."""
    R, t = _t(R), _t(t)
    T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype)
    T[..., :3, :3] = R
    T[..., :3, 3] = t.to(R.dtype)
    T[..., 3, 3] = 1
    return T


def inv_pose(T: Tensorish) -> torch.Tensor:
    """Inverse of rigid transforms (..., 4, 4) using R^T (exact, no general matrix inverse)."""
    T = _t(T)
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = R.transpose(-1, -2)
    return make_pose(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1))


def relative_pose(c2w_a: Tensorish, c2w_b: Tensorish) -> torch.Tensor:
    """``T_b_a = inv(c2w_b) @ c2w_a``: maps camera-a coordinates to camera-b coordinates."""
    return inv_pose(c2w_b) @ _t(c2w_a)


def transform_points(T: Tensorish, X: Tensorish) -> torch.Tensor:
    """Apply 4x4 transforms T (..., 4, 4) to points X (..., N, 3) or pointmaps (..., H, W, 3).

    T's batch shape must broadcast against X's leading dims (without the point dims).
    """
    T, X = _t(T), _t(X)
    X = X.to(T.dtype)
    if X.dim() >= 3 and X.dim() == T.dim() + 1:  # (..., H, W, 3) with T (..., 4, 4)
        R = T[..., None, None, :3, :3]
        t = T[..., None, None, :3, 3]
        return (R @ X.unsqueeze(-1)).squeeze(-1) + t
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    return X @ R.transpose(-1, -2) + t.unsqueeze(-2)


def look_at(eye: Tensorish, target: Tensorish, up: Sequence[float] = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """Camera-to-world pose at ``eye`` whose +z axis points at ``target`` (OpenCV axes).

    ``up`` is the world direction the image's *up* should follow. vibe3r's simulated worlds are
    z-up (floor at z = 0), hence the default; real captures bring their own world frame.
    """
    eye = _t(eye, torch.float64)
    target = _t(target, torch.float64)
    up_v = torch.as_tensor(up, dtype=torch.float64).expand_as(eye)
    z = F.normalize(target - eye, dim=-1)
    x = torch.linalg.cross(z, up_v)  # camera x (right) = down × forward = forward × up
    bad = x.norm(dim=-1) < 1e-8
    if bad.any():  # looking straight along up: pick any perpendicular
        alt = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand_as(eye)
        x = torch.where(bad[..., None], torch.linalg.cross(z, alt), x)
    x = F.normalize(x, dim=-1)
    y = torch.linalg.cross(z, x)  # camera y (down)
    R = torch.stack([x, y, z], dim=-1)
    return make_pose(R, eye)


# --------------------------------------------------------------------------------------------
# Intrinsics, projection, unprojection
# --------------------------------------------------------------------------------------------


def intrinsics_from_fov(fov_x_deg: float, width: int, height: int) -> torch.Tensor:
    """Pinhole K (float64) for a horizontal field of view, principal point at the image centre."""
    fx = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor(
        [[fx, 0.0, (width - 1) / 2], [0.0, fx, (height - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


def scale_intrinsics(K: Tensorish, sx: float, sy: float | None = None) -> torch.Tensor:
    """Rescale K for an image resized by (sx, sy), keeping pixel centres at integers.

    A pixel centre u maps to (u + 0.5) * s - 0.5.
    """
    sy = sx if sy is None else sy
    K = _t(K).clone()
    K[..., 0, 0] *= sx
    K[..., 0, 1] *= sx
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 1] *= sy
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def pixel_grid(H: int, W: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel coordinates (u, v) of pixel centres."""
    v, u = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    return torch.stack([u, v], dim=-1)


def unproject_depth(depth: Tensorish, K: Tensorish) -> torch.Tensor:
    """Depth (..., H, W) (z-depth) and K (..., 3, 3) -> pointmap (..., H, W, 3) in the camera frame."""
    depth, K = _t(depth), _t(K)
    K = K.to(depth.dtype)
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, depth.dtype)  # H,W,2
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)


def project(X: Tensorish, K: Tensorish, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points (..., 3) with K (3x3 or broadcastable) -> (uv (..., 2), z (...))."""
    X, K = _t(X), _t(K)
    K = K.to(X.dtype)
    z = X[..., 2]
    zs = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    if K.dim() > 2:  # batch of K: align with X's batch dims, leaving point dims for broadcasting
        extra = X.dim() - 1 - (K.dim() - 2)
        K = K.reshape(*K.shape[:-2], *([1] * extra), 3, 3)
    u = K[..., 0, 0] * X[..., 0] / zs + K[..., 0, 1] * X[..., 1] / zs + K[..., 0, 2]
    v = K[..., 1, 1] * X[..., 1] / zs + K[..., 1, 2]
    return torch.stack([u, v], dim=-1), z


def camera_rays(K: Tensorish, c2w: Tensorish, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and *z-normalised* directions (H, W, 3) of every pixel centre.

    A point at z-depth d along pixel (u, v) is ``origin + d * direction``.
    """
    K, c2w = _t(K, torch.float64), _t(c2w, torch.float64)
    ones = torch.ones(H, W, dtype=torch.float64)
    d_cam = unproject_depth(ones, K)  # H,W,3 with z = 1
    d_world = d_cam @ c2w[:3, :3].T
    o = c2w[:3, 3].expand(H, W, 3)
    return o, d_world


def plucker_rays(K: Tensorish, c2w: Tensorish, H: int, W: int) -> torch.Tensor:
    """Plücker coordinates (6, H, W) of every pixel ray: (d, o × d) with unit world direction d.

    Accepts a batch of cameras: K (..., 3, 3), c2w (..., 4, 4) -> (..., 6, H, W).
    """
    K, c2w = _t(K), _t(c2w)
    batch = c2w.shape[:-2]
    Kb = K.expand(*batch, 3, 3) if K.dim() == 2 else K
    ones = torch.ones(*batch, H, W, dtype=c2w.dtype)
    d_cam = unproject_depth(ones, Kb.to(c2w.dtype))  # ...,H,W,3
    R = c2w[..., None, None, :3, :3]
    d = F.normalize((R @ d_cam.unsqueeze(-1)).squeeze(-1), dim=-1)
    o = c2w[..., None, None, :3, 3].expand_as(d)
    m = torch.linalg.cross(o, d, dim=-1)
    return torch.cat([d, m], dim=-1).movedim(-1, -3)


# --------------------------------------------------------------------------------------------
# Two-view depth consistency (ground-truth checks, co-visibility)
# --------------------------------------------------------------------------------------------


def warp_depth_consistency(
    depth_a: Tensorish,
    depth_b: Tensorish,
    K_a: Tensorish,
    K_b: Tensorish,
    T_b_a: Tensorish,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp view a's depth into view b and compare with b's own depth.

    Returns ``(rel_err (H_a, W_a), valid (H_a, W_a))`` where ``rel_err = |z_ab - d_b| / d_b``:
    z_ab is the depth of a's point in b's camera, d_b is b's depth sampled at the nearest pixel
    to the projection (nearest avoids mixing across depth edges). ``valid`` marks
    pixels with depth in a that land inside b in front of the camera with depth in b.
    Occluded pixels are valid but have large ``rel_err``; callers threshold it.
    """
    depth_a, depth_b = _t(depth_a, torch.float64), _t(depth_b, torch.float64)
    X_a = unproject_depth(depth_a, _t(K_a, torch.float64))
    X_b = transform_points(_t(T_b_a, torch.float64), X_a)
    uv, z = project(X_b, _t(K_b, torch.float64))
    Hb, Wb = depth_b.shape[-2:]
    ui = torch.round(uv[..., 0]).long()
    vi = torch.round(uv[..., 1]).long()
    inside = (ui >= 0) & (ui < Wb) & (vi >= 0) & (vi < Hb) & (z > 1e-6) & (depth_a > 0)
    d_b = torch.zeros_like(z)
    d_b[inside] = depth_b[vi[inside], ui[inside]]
    valid = inside & (d_b > 0)
    rel = torch.where(valid, (z - d_b).abs() / d_b.clamp_min(1e-9), torch.full_like(z, float("inf")))
    return rel, valid


def covisibility(
    depth_a: Tensorish, depth_b: Tensorish, K_a: Tensorish, K_b: Tensorish, T_b_a: Tensorish, tol: float = 0.02
) -> float:
    """Fraction of a's valid pixels that are seen (not occluded, within ``tol`` relative depth) by b."""
    rel, valid = warp_depth_consistency(depth_a, depth_b, K_a, K_b, T_b_a)
    n = int((_t(depth_a) > 0).sum())
    return float(((rel < tol) & valid).sum()) / max(n, 1)


# --------------------------------------------------------------------------------------------
# Pose metrics
# --------------------------------------------------------------------------------------------


def rotation_error_deg(R_pred: Tensorish, R_gt: Tensorish) -> torch.Tensor:
    """Geodesic angle (degrees) between rotations (..., 3, 3)."""
    R_pred, R_gt = _t(R_pred, torch.float64), _t(R_gt, torch.float64)
    return torch.rad2deg(roma.rotmat_geodesic_distance(R_pred, R_gt))


def translation_direction_error_deg(t_pred: Tensorish, t_gt: Tensorish, ignore_sign: bool = False) -> torch.Tensor:
    """Angle (degrees) between translation directions (..., 3).

    ``ignore_sign=True`` takes min(e, 180 - e), as SuperGlue does for an essential matrix whose
    translation sign is ambiguous. A zero-length vector gives 90° (no direction information).
    """
    t_pred, t_gt = _t(t_pred, torch.float64), _t(t_gt, torch.float64)
    n = t_pred.norm(dim=-1) * t_gt.norm(dim=-1)
    cos = (t_pred * t_gt).sum(-1) / n.clamp_min(1e-12)
    err = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    err = torch.where(n < 1e-12, torch.full_like(err, 90.0), err)
    if ignore_sign:
        err = torch.minimum(err, 180 - err)
    return err


def pose_auc(errors: Sequence[float] | np.ndarray, thresholds: Sequence[float] = (5, 10, 20)) -> list[float]:
    """Area under the recall curve of pose errors up to each threshold, in percent.

    The curve is recall(e) = fraction of pairs with error <= e; failed pairs count as infinite
    error. This is the definition used by SuperGlue/LoFTR (exact trapezoid over sorted errors).
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64))
    n = len(errors)
    if n == 0:
        return [0.0 for _ in thresholds]
    recall = (np.arange(n) + 1) / n
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    aucs = []
    for thr in thresholds:
        last = np.searchsorted(errors, thr)
        r = np.concatenate([recall[:last], [recall[last - 1]]])
        e = np.concatenate([errors[:last], [thr]])
        aucs.append(float(np.trapezoid(r, x=e) / thr * 100))
    return aucs


def umeyama_alignment(src: Tensorish, dst: Tensorish, with_scale: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Least-squares similarity (R, t, s) with ``dst ≈ s R src + t`` (Umeyama 1991), via roma."""
    src, dst = _t(src, torch.float64), _t(dst, torch.float64)
    if with_scale:
        R, t, s = roma.rigid_points_registration(src, dst, compute_scaling=True)
        return R, t, float(s)
    R, t = roma.rigid_points_registration(src, dst)
    return R, t, 1.0


def ate(pred_c2w: Tensorish, gt_c2w: Tensorish, align: str = "sim3") -> float:
    """Absolute trajectory error: RMSE of camera centres after alignment (``sim3``, ``se3`` or ``none``)."""
    p = _t(pred_c2w, torch.float64)[:, :3, 3]
    g = _t(gt_c2w, torch.float64)[:, :3, 3]
    if align == "none":
        aligned = p
    elif align in ("sim3", "se3"):
        R, t, s = umeyama_alignment(p, g, with_scale=align == "sim3")
        aligned = s * p @ R.T + t
    else:
        raise ValueError(f"unknown alignment {align!r}; valid: sim3, se3, none")
    return float(((aligned - g) ** 2).sum(-1).mean().sqrt())


def rpe(pred_c2w: Tensorish, gt_c2w: Tensorish, delta: int = 1) -> dict[str, float]:
    """Relative pose error between frames ``delta`` apart: mean rotation (deg) and translation
    direction (deg) error, and translation magnitude error after a global median scale."""
    P, G = _t(pred_c2w, torch.float64), _t(gt_c2w, torch.float64)
    rp = relative_pose(P[delta:], P[:-delta])
    rg = relative_pose(G[delta:], G[:-delta])
    rot = rotation_error_deg(rp[:, :3, :3], rg[:, :3, :3])
    tdir = translation_direction_error_deg(rp[:, :3, 3], rg[:, :3, 3])
    np_, ng = rp[:, :3, 3].norm(dim=-1), rg[:, :3, 3].norm(dim=-1)
    s = (ng.median() / np_.median().clamp_min(1e-12)) if len(np_) else torch.tensor(1.0)
    tmag = ((s * rp[:, :3, 3] - rg[:, :3, 3]).norm(dim=-1)).mean()
    return {"rpe_rot_deg": float(rot.mean()), "rpe_tdir_deg": float(tdir.mean()), "rpe_trans": float(tmag)}


# --------------------------------------------------------------------------------------------
# Depth metrics
# --------------------------------------------------------------------------------------------


def depth_metrics(pred: Tensorish, gt: Tensorish, mask: Tensorish | None = None, median_scale: bool = True) -> dict[str, float]:
    """AbsRel and δ<1.25 of a depth map against ground truth on valid pixels (gt > 0, pred > 0).

    ``median_scale=True`` first multiplies pred by median(gt)/median(pred) (scale-free methods).
    """
    pred, gt = _t(pred, torch.float64), _t(gt, torch.float64)
    valid = (gt > 0) & (pred > 0) & torch.isfinite(pred)
    if mask is not None:
        valid &= torch.as_tensor(mask, dtype=torch.bool)
    if valid.sum() == 0:
        return {"abs_rel": float("nan"), "delta1": float("nan"), "scale": float("nan")}
    p, g = pred[valid], gt[valid]
    s = float(g.median() / p.median()) if median_scale else 1.0
    p = p * s
    ratio = torch.maximum(p / g, g / p)
    return {"abs_rel": float(((p - g).abs() / g).mean()), "delta1": float((ratio < 1.25).double().mean()), "scale": s}


def _fundamental(T21: np.ndarray, K1: np.ndarray, K2: np.ndarray) -> np.ndarray:
    t = T21[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    Fm = np.linalg.inv(K2).T @ tx @ T21[:3, :3] @ np.linalg.inv(K1)
    return Fm / (np.linalg.norm(Fm) + 1e-30)


def sampson_px(T21: np.ndarray, kp1: np.ndarray, kp2: np.ndarray, K1: np.ndarray, K2: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of matches under the fundamental matrix of pose T21 and intrinsics."""
    Fm = _fundamental(T21, K1, K2)
    x1 = np.c_[kp1, np.ones(len(kp1))]
    x2 = np.c_[kp2, np.ones(len(kp2))]
    Fx1, Ftx2 = x1 @ Fm.T, x2 @ Fm
    num = np.sum(x2 * Fx1, 1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-30))


def sampson_table_px(T21: np.ndarray, kp1: np.ndarray, kp2: np.ndarray, K1: np.ndarray, K2: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of *every* pairing (M1, M2) of points ``kp1`` (M1,2) with ``kp2`` (M2,2)."""
    Fm = _fundamental(T21, K1, K2)
    x1 = np.c_[kp1, np.ones(len(kp1))]
    x2 = np.c_[kp2, np.ones(len(kp2))]
    Fx1, Ftx2 = x1 @ Fm.T, x2 @ Fm  # M1,3 and M2,3
    num = (Fx1 @ x2.T) ** 2
    den = (Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2)[:, None] + (Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2)[None]
    return np.sqrt(num / np.maximum(den, 1e-30))
