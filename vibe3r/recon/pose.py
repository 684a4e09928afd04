"""Relative pose of an image pair from the model's outputs.

Every solver returns ``(R (3,3), t (3,))`` with ``X_2 = R X_1 + t`` (camera-1 coordinates to
camera-2 coordinates, the SuperGlue ``T_0to1``), or None when it cannot decide.

* ``essential``   dense descriptors → mutual nearest neighbours → 5-point essential-matrix RANSAC
  (known K) + cheirality (``recoverPose``); t is a unit vector (scale unknown).
* ``pnp``         PnP-RANSAC on X^{2,1}: view-2 pixels v and their 3D points X^{2,1}(v) in camera-1
  coordinates give the camera-1 → camera-2 transform directly (DUSt3R); the most confident pixels.
* ``pnp_matches`` PnP-RANSAC on descriptor matches (p, q): 3D X^{1,1}(p) ↔ pixel q of view 2 (MASt3R).
* ``procrustes``  weighted rigid alignment (roma, with scale): X^{2,1}(v) ≈ s R' X^{2,2}(v) + t'
  where X^{2,2} comes from a second forward pass with the views swapped; then (R', t') is the
  camera-2 → camera-1 transform and the answer its inverse. Weights = C^{2,1} · C^{2,2}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import roma
import torch

from vibe3r.errors import InputError
from vibe3r.recon.matching import match_descriptors, sim_dtype

SOLVERS = ("essential", "pnp", "pnp_matches", "procrustes")
# Robust estimators for the essential matrix. ``ransac`` is the SuperGlue/LoFTR protocol (the README's
# reference figures): it returns the best *minimal* 5-point model, whose error at low resolution is
# dominated by keypoint noise. The USAC variants add local optimisation on the inliers (GC-RANSAC /
# MAGSAC++): on 1000 synthetic matches at 96 px with 0.3 px noise, rotation error 1.6° -> 0.15°.
RANSAC_METHODS = {"ransac": cv2.RANSAC, "usac_accurate": cv2.USAC_ACCURATE, "magsac": cv2.USAC_MAGSAC}


def estimate_pose_essential(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    thresh_px: float = 1.0,
    conf: float = 0.99999,
    method: str = "ransac",
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Relative pose from pixel matches (N, 2) by essential-matrix RANSAC + cheirality check.

    Keypoints are normalised by K, so the pixel threshold becomes ``thresh_px / mean(f)`` with f the
    focal lengths of both cameras (SuperGlue's ``estimate_pose``). Every E candidate returned by
    the 5-point solver is passed to ``recoverPose`` and the one with most inliers wins.
    Returns ``(R (3,3), t (3,) unit, inlier mask (N,))`` with ``X_1 = R X_0 + t``, or None when
    fewer than 5 matches or RANSAC finds no model. (OpenCV's RANSAC here is deterministic.)
    ``method`` is a key of ``RANSAC_METHODS``.
    """
    if method not in RANSAC_METHODS:
        raise InputError(f"unknown RANSAC method {method!r}; valid: {', '.join(RANSAC_METHODS)}")
    kpts0 = np.asarray(kpts0, np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, np.float64).reshape(-1, 2)
    if len(kpts0) < 5:
        return None
    k0 = (kpts0 - K0[[0, 1], [2, 2]][None]) / K0[[0, 1], [0, 1]][None]
    k1 = (kpts1 - K1[[0, 1], [2, 2]][None]) / K1[[0, 1], [0, 1]][None]
    norm_thresh = thresh_px / np.mean([K0[0, 0], K1[1, 1], K0[0, 0], K1[1, 1]])
    try:
        E, mask = cv2.findEssentialMat(k0, k1, np.eye(3), threshold=norm_thresh, prob=conf, method=RANSAC_METHODS[method])
    except cv2.error:  # degenerate input (e.g. every match has zero motion): OpenCV 5's solver asserts instead of failing
        return None
    if E is None or E.shape[0] < 3:
        return None
    best = None
    best_n = 0
    for _E in np.split(E, len(E) // 3):
        n, R, t, m = cv2.recoverPose(_E, k0, k1, np.eye(3), 1e9, mask=mask)
        if n > best_n:
            best_n = n
            best = (R, t[:, 0], m.ravel() > 0)
    return best


def pose_pnp(pts3d: np.ndarray, pix: np.ndarray, K: np.ndarray, thresh_px: float = 2.0,
             iters: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """PnP-RANSAC (EPnP minimal sets, LM refinement on inliers): 3D points (N, 3) in frame A, their
    pixels (N, 2) in camera B with intrinsics K -> the A → B transform (R, t) and the inlier mask."""
    pts3d = np.ascontiguousarray(pts3d, np.float64).reshape(-1, 3)
    pix = np.ascontiguousarray(pix, np.float64).reshape(-1, 2)
    ok = np.isfinite(pts3d).all(1) & np.isfinite(pix).all(1)
    pts3d, pix = pts3d[ok], pix[ok]
    if len(pts3d) < 6:
        return None
    good, rvec, tvec, inl = cv2.solvePnPRansac(pts3d, pix, K.astype(np.float64), None, iterationsCount=iters,
                                               reprojectionError=thresh_px, confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
    if not good or inl is None or len(inl) < 6:
        return None
    inl = inl.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(pts3d[inl], pix[inl], K.astype(np.float64), None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    mask = np.zeros(len(ok), bool)
    mask[np.flatnonzero(ok)[inl]] = True
    return R, tvec.ravel(), mask


def pose_procrustes(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted similarity ``dst ≈ s R src + t`` for points (N, 3) (roma's weighted Umeyama)."""
    w = weights.double().clamp_min(0)
    w = w / w.sum().clamp_min(1e-12)
    R, t, s = roma.rigid_points_registration(src.double(), dst.double(), weights=w, compute_scaling=True)
    return R.numpy(), t.numpy(), float(s)


def top_confidence(conf: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the k most confident pixels of a (H, W) map."""
    flat = conf.reshape(-1)
    return torch.topk(flat, min(k, len(flat))).indices


def crop_to_multiple(img: np.ndarray, K: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop an (H, W, 3) image to sides divisible by m; K's principal point follows."""
    H, W = img.shape[:2]
    H2, W2 = H - H % m, W - W % m
    y0, x0 = (H - H2) // 2, (W - W2) // 2
    K = K.copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    return img[y0 : y0 + H2, x0 : x0 + W2], K


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255


class ModelPoseEstimator:
    """Relative pose of a pair with a ``ReconModel``: the ``PoseEstimator`` signature of
    ``vibe3r.eval.pairs`` — ``(img0 uint8, img1 uint8, K0, K1) -> (R, t, n_matches) | None``."""

    def __init__(self, model: torch.nn.Module, solver: str = "essential", ransac_px: float = 1.0,
                 coarse_factor: int = 1, n_points: int = 4000, pnp_px: float = 2.0, subpixel: bool = True,
                 ransac: str = "ransac", precision: str = "fp32") -> None:
        if solver not in SOLVERS:
            raise InputError(f"unknown pose solver {solver!r}; valid: {', '.join(SOLVERS)}")
        self.model = model.eval()
        self.solver = solver
        self.ransac_px = ransac_px
        self.coarse_factor = coarse_factor
        self.n_points = n_points
        self.pnp_px = pnp_px
        self.subpixel = subpixel
        if ransac not in RANSAC_METHODS:
            raise InputError(f"unknown RANSAC method {ransac!r}; valid: {', '.join(RANSAC_METHODS)}")
        self.ransac = ransac
        sim_dtype(precision)  # an unknown precision is refused here, not at the first pair
        self.precision = precision

    @torch.no_grad()
    def __call__(self, img0: np.ndarray, img1: np.ndarray, K0: np.ndarray, K1: np.ndarray):  # noqa: ANN204
        p = self.model.config.patch_size
        img0, K0 = crop_to_multiple(img0, K0, p)
        img1, K1 = crop_to_multiple(img1, K1, p)
        x0, x1 = to_tensor(img0), to_tensor(img1)
        out = self.model(x0, x1)
        H, W = img0.shape[:2]
        if self.solver in ("essential", "pnp_matches"):
            kp0, kp1, _ = match_descriptors(out["desc1"][0], out["desc2"][0], (H, W), coarse_factor=self.coarse_factor,
                                            subpixel=self.subpixel, precision=self.precision)
            if self.solver == "essential":
                res = estimate_pose_essential(kp0.numpy(), kp1.numpy(), K0, K1, self.ransac_px, method=self.ransac)
                return None if res is None else (res[0], res[1], len(kp0))
            ij = kp0.round().long()
            X = out["pts11"][0][ij[:, 1].clamp(0, H - 1), ij[:, 0].clamp(0, W - 1)]
            res = pose_pnp(X.numpy(), kp1.numpy(), K1, self.pnp_px)
            return None if res is None else (res[0], res[1], len(kp0))
        if self.solver == "pnp":
            idx = top_confidence(out["conf2"][0], self.n_points)
            X = out["pts21"][0].reshape(-1, 3)[idx]
            uv = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")[::-1], -1).reshape(-1, 2)[idx]
            res = pose_pnp(X.numpy(), uv.float().numpy(), K1, self.pnp_px)
            return None if res is None else (res[0], res[1], len(idx))
        # procrustes: swap the views to get X^{2,2} for the same pixels as X^{2,1}
        swapped = self.model(x1, x0)
        w = out["conf2"][0] * swapped["conf1"][0]  # H,W
        idx = top_confidence(w, self.n_points)
        src = swapped["pts11"][0].reshape(-1, 3)[idx]  # X^{2,2}: view-2 points, camera-2 frame
        dst = out["pts21"][0].reshape(-1, 3)[idx]  # X^{2,1}: the same points, camera-1 frame
        R21, t21, _ = pose_procrustes(src, dst, w.reshape(-1)[idx])  # camera 2 -> camera 1
        return R21.T, -R21.T @ t21, len(idx)


def make_model_estimator(ckpt: str | Path, solver: str = "essential", threads: int = 1, **kw) -> Callable:  # noqa: ANN003
    """Load a checkpoint folder and wrap it as a pair pose estimator (``vibe3r eval pairs --method model``)."""
    from vibe3r.recon.model import ReconModel

    torch.set_num_threads(threads)
    return ModelPoseEstimator(ReconModel.from_pretrained(ckpt), solver=solver, **kw)
