"""The classical peer of the pairwise network for whole sequences: SIFT pairs in the alignment's format.

For every directed edge e = (a, b) of the scene graph: OpenCV SIFT keypoints of each frame (computed
once per frame, so a keypoint of frame k is the same pixel in every edge that uses k), Lowe's ratio
test, essential-matrix RANSAC + cheirality with the known K (``recon.pose.estimate_pose_essential``,
as ``eval pairs --method sift``) → R and the unit direction t̂; then the RANSAC inliers are
triangulated (``recon.triangulate.triangulate_midpoint``) in camera a at the pair's unit baseline.

That gives a ``PairwisePredictions`` the global alignment (``recon.align.global_align``) accepts
unchanged, with *sparse* pointmaps in place of the network's dense ones:

* X^{a,e} at the pixels around each triangulated keypoint p of frame a (its depth z copied onto the
  ``splat`` x ``splat`` pixel block around round(p): ``z K_a⁻¹ [u, 1]``, a fronto-parallel patch, so
  the alignment's bilinear depth lookups at sub-pixel keypoints read triangulated values),
  X^{b,e} likewise around q, expressed in camera a (``Rᵀ (z_b K_b⁻¹ [u, 1] − t̂)``);
* confidence e (log-weight 1) on those pixels, 1 (weight 0) everywhere else, where X^{a,e} = 0 and
  X^{b,e} is a point behind camera b (z_b = −1), so that both read as "no depth" (z ≤ 0);
* ``rel_pose`` = (R, t̂) (pair units = unit baseline), matches = the ratio-test matches with the
  RANSAC inlier mask, so the alignment's match reprojection term, spanning tree (pair scales from the
  keypoints two edges share in a frame) and outlier test all run as for the network.

Alignment on these inputs should use ``depth_stride=1`` (``SIFT_ALIGN_STRIDE``) so the sparse pixels are
on the optimised depth grid, and ``fuse_min_weight=0`` so that depth is fused only near keypoints (a
few % of the pixels).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vibe3r.eval.pairs import ratio_matches, sift_features
from vibe3r.recon.inference import PairwisePredictions
from vibe3r.recon.pose import estimate_pose_essential
from vibe3r.recon.triangulate import triangulate_midpoint

SIFT_ALIGN_STRIDE = 1
KEYPOINT_CONF = math.e  # log-weight 1 in the alignment


def _splat(pts: torch.Tensor, conf: torch.Tensor, kp: np.ndarray, z: np.ndarray, K: np.ndarray,
           T_a_v: np.ndarray, splat: int) -> None:
    """Write z K⁻¹[u,1] (mapped by T_a_v into camera a) at the splat x splat pixels around each kp."""
    H, W = conf.shape
    r = splat // 2
    Kinv = np.linalg.inv(K)
    c = np.round(kp).astype(np.int64)
    for dy in range(-r, splat - r):
        for dx in range(-r, splat - r):
            u, v = c[:, 0] + dx, c[:, 1] + dy
            ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
            X = z[ok, None] * (np.c_[u[ok], v[ok], np.ones(int(ok.sum()))] @ Kinv.T)  # camera v
            X = X @ T_a_v[:3, :3].T + T_a_v[:3, 3]
            pts[v[ok], u[ok]] = torch.from_numpy(X).to(pts.dtype)
            conf[v[ok], u[ok]] = KEYPOINT_CONF


def sift_pairwise(images: np.ndarray, edges: np.ndarray, K: np.ndarray, n_features: int = 8000, ratio: float = 0.8,
                  ransac_px: float = 1.0, ransac: str = "ransac", min_inliers: int = 8, min_angle_deg: float = 0.5,
                  splat: int = 3) -> PairwisePredictions:
    """SIFT + ratio + essential RANSAC on every directed edge (E,2) of frames ``images`` (N,H,W,3) uint8
    with intrinsics ``K`` (N,3,3) -> sparse ``PairwisePredictions`` with relative poses (module doc).
    An edge with fewer than ``min_inliers`` inliers gets T = I, method "none" and no points."""
    N, H, W = images.shape[:3]
    feats = [sift_features(im, n_features) for im in images]
    E = len(edges)
    pts_a = torch.zeros(E, H, W, 3, dtype=torch.float16)
    pts_b = torch.zeros_like(pts_a)
    conf_a = torch.ones(E, H, W, dtype=torch.float16)
    conf_b = torch.ones_like(conf_a)
    rel = np.tile(np.eye(4), (E, 1, 1))
    methods, matches, masks = [], [], []
    inliers = np.zeros(E, np.int64)
    for e, (a, b) in enumerate(np.asarray(edges)):
        (kp_a, d_a), (kp_b, d_b) = feats[a], feats[b]
        m = ratio_matches(d_a, d_b, ratio)
        p, q = kp_a[m[:, 0]].astype(np.float32), kp_b[m[:, 1]].astype(np.float32)
        matches.append((p, q))
        res = estimate_pose_essential(p, q, K[a], K[b], ransac_px, method=ransac)
        if res is None or res[2].sum() < min_inliers:
            methods.append("none")
            masks.append(np.zeros(len(p), bool))
            continue
        R, t, inl = res
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        X, za, zb, ang = triangulate_midpoint(p[inl], q[inl], K[a], K[b], T)
        ok = (za > 0) & (zb > 0) & (ang >= min_angle_deg) & np.isfinite(X).all(1)
        if ok.sum() < min_inliers:
            methods.append("none")
            masks.append(np.zeros(len(p), bool))
            continue
        rel[e], inliers[e] = T, int(inl.sum())
        methods.append("essential")
        masks.append(inl)
        _splat(pts_a[e], conf_a[e], p[inl][ok], za[ok], K[a], np.eye(4), splat)
        T_a_b = np.eye(4)
        T_a_b[:3, :3], T_a_b[:3, 3] = R.T, -R.T @ t
        pts_b[e] = torch.from_numpy(R.T @ (np.array([0.0, 0.0, -1.0]) - t)).to(pts_b.dtype)  # empty pixels: behind camera b
        _splat(pts_b[e], conf_b[e], q[inl][ok], zb[ok], K[b], T_a_b, splat)
    return PairwisePredictions(edges=np.asarray(edges, np.int64), pts_a=pts_a, pts_b=pts_b, conf_a=conf_a, conf_b=conf_b,
                               matches=matches, rel_pose=rel, pose_method=methods, n_inliers=inliers, inlier_masks=masks)
