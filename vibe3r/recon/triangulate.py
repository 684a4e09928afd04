"""Depth by triangulating the pairwise matches with the recovered camera poses.

The alternative to the pointmap heads' depth: every edge e = (a, b) of the scene graph carries matches
(p_k in frame a ↔ q_k in frame b, the essential-RANSAC inliers of ``inference.estimate_pair_poses``);
with the aligned poses the two pixel rays meet (nearly) at the matched 3D point. Midpoint
triangulation, in camera a's frame with T_b_a = (R, t) = inv(c2w_b) c2w_a:

    ray a:  λ_a d_a,            d_a = K_a⁻¹ [p, 1]              (z-normalised, so λ_a is z-depth in a)
    ray b:  c_b + λ_b d_b,      c_b = −Rᵀ t,  d_b = Rᵀ K_b⁻¹ [q, 1]  (λ_b is z-depth in b)

    (λ_a, λ_b) = argmin ‖λ_a d_a − c_b − λ_b d_b‖²   (2x2 normal equations)
    X = (λ_a d_a + c_b + λ_b d_b) / 2

A match is kept when both depths are positive, the parallax angle ∠(d_a, d_b) is at least
``min_angle_deg`` (near-parallel rays give unbounded depth error) and X reprojects within
``max_reproj_px`` of both pixels. Frame n's depth at pixel round(p) is the median over all edges that
observe it (as view a or as view b); pixels without a triangulated match stay 0 (sparse, in the
alignment's world units).

Measured (``bench/sequence.md``): on 7-Scenes the triangulated depth of the shipped checkpoint's matches
is much closer to the ground truth than its pointmap depth on the same pixels, so ``recon run`` exports
``triangulated+pointmap`` by default (``select_depth``; ``RunConfig.depth``).
"""

from __future__ import annotations

import numpy as np

from vibe3r.errors import InputError
from vibe3r.recon.inference import PairwisePredictions


def triangulate_midpoint(p_a: np.ndarray, p_b: np.ndarray, K_a: np.ndarray, K_b: np.ndarray,
                         T_b_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Midpoint triangulation of pixel matches (M,2) ↔ (M,2) (module docstring).

    Returns X (M,3) in camera a, z-depths λ_a (M,), λ_b (M,) and the parallax angle (M,) in degrees.
    """
    p_a, p_b = np.asarray(p_a, np.float64).reshape(-1, 2), np.asarray(p_b, np.float64).reshape(-1, 2)
    R, t = T_b_a[:3, :3], T_b_a[:3, 3]
    d_a = np.c_[p_a, np.ones(len(p_a))] @ np.linalg.inv(K_a).T  # M,3 (z = 1)
    d_b = np.c_[p_b, np.ones(len(p_b))] @ np.linalg.inv(K_b).T @ R  # M,3 = (Rᵀ K_b⁻¹ q)ᵀ
    c_b = -R.T @ t
    # normal equations of min |λ_a d_a − λ_b d_b − c_b|²
    aa, bb, ab = (d_a * d_a).sum(1), (d_b * d_b).sum(1), (d_a * d_b).sum(1)
    ac, bc = d_a @ c_b, d_b @ c_b
    det = aa * bb - ab * ab
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_a = (bb * ac - ab * bc) / det
        lam_b = (ab * ac - aa * bc) / det
        cos = ab / np.sqrt(aa * bb)
    X = 0.5 * (lam_a[:, None] * d_a + c_b + lam_b[:, None] * d_b)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return X, lam_a, lam_b, angle


def _reproj_px(X: np.ndarray, K: np.ndarray, p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (X @ K.T)[:, :2] / X[:, 2:3]
    return np.linalg.norm(uv - p, axis=1)


def triangulated_depth(pred: PairwisePredictions, c2w: np.ndarray, K: np.ndarray, n_frames: int,
                       min_angle_deg: float = 1.0, max_reproj_px: float = 2.0,
                       inliers_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sparse depth (N,H,W) float32 (0 = none) from the matches of every edge of ``pred`` and the
    camera-to-world poses ``c2w`` (N,4,4) with intrinsics ``K`` (N,3,3); and the number of
    observations per pixel (N,H,W) int32. ``inliers_only`` keeps the essential-RANSAC inliers only."""
    H, W = pred.hw
    if not pred.matches:
        return np.zeros((n_frames, H, W), np.float32), np.zeros((n_frames, H, W), np.int32)
    w2c = np.linalg.inv(c2w)
    frames, pix, depth = [], [], []
    for e, (kp_a, kp_b) in enumerate(pred.matches):
        if inliers_only and pred.inlier_masks:
            keep = pred.inlier_masks[e]
            kp_a, kp_b = kp_a[keep], kp_b[keep]
        if len(kp_a) == 0:
            continue
        a, b = (int(v) for v in pred.edges[e])
        T = w2c[b] @ c2w[a]  # T_b_a
        X, za, zb, ang = triangulate_midpoint(kp_a, kp_b, K[a], K[b], T)
        Xb = X @ T[:3, :3].T + T[:3, 3]
        ok = (za > 0) & (zb > 0) & (ang >= min_angle_deg) & np.isfinite(X).all(1)
        ok &= (_reproj_px(X, K[a], kp_a) <= max_reproj_px) & (_reproj_px(Xb, K[b], kp_b) <= max_reproj_px)
        for f, kp, z in ((a, kp_a, za), (b, kp_b, zb)):
            ij = np.round(kp[ok]).astype(np.int64)
            inside = (ij[:, 0] >= 0) & (ij[:, 0] < W) & (ij[:, 1] >= 0) & (ij[:, 1] < H)
            frames.append(np.full(int(inside.sum()), f))
            pix.append(ij[inside, 1] * W + ij[inside, 0])
            depth.append(z[ok][inside])
    out = np.zeros(n_frames * H * W, np.float32)
    count = np.zeros(n_frames * H * W, np.int32)
    if frames:
        key = np.concatenate(frames) * (H * W) + np.concatenate(pix)
        z = np.concatenate(depth)
        order = np.lexsort((z, key))
        key, z = key[order], z[order]
        uniq, start, cnt = np.unique(key, return_index=True, return_counts=True)
        lo, hi = z[start + (cnt - 1) // 2], z[start + cnt // 2]  # median of each sorted run
        out[uniq] = 0.5 * (lo + hi)
        count[uniq] = cnt
    return out.reshape(n_frames, H, W), count.reshape(n_frames, H, W)


DEPTH_SOURCES = ("pointmap", "triangulated", "triangulated+pointmap")


def select_depth(source: str, pointmap_depth: np.ndarray, pred: PairwisePredictions, c2w: np.ndarray,
                 K: np.ndarray) -> np.ndarray:
    """The depth (N,H,W) the pipeline exports: ``pointmap`` (the alignment's fused pointmap depth),
    ``triangulated`` (sparse, ``triangulated_depth``) or ``triangulated+pointmap``: triangulated where a
    match gives a depth, elsewhere the pointmap depth times s_n = median(tri / pointmap) over frame n's
    pixels that have both (the two are nominally in the same world units, but on 7-Scenes s_n ranges
    0.9-1.5 from frame to frame; filling without it made the depth worse than either)."""
    if source not in DEPTH_SOURCES:
        raise InputError(f"unknown depth source {source!r}; valid: {', '.join(DEPTH_SOURCES)}")
    if source == "pointmap":
        return pointmap_depth
    tri, _ = triangulated_depth(pred, c2w, K, len(c2w))
    if source == "triangulated":
        return tri
    out = np.empty_like(tri)
    for n in range(len(tri)):
        both = (tri[n] > 0) & (pointmap_depth[n] > 0)
        s = float(np.median(tri[n][both] / pointmap_depth[n][both])) if both.any() else 1.0
        out[n] = np.where(tri[n] > 0, tri[n], s * pointmap_depth[n])
    return out
