"""Relative-pose evaluation on image pairs with ground truth, with the classical peer in the same run.

A pair list is the SuperGlue/LoFTR format (one pair per line, 38 fields):
``name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)`` where ``T_0to1 = inv(c2w_1) @ c2w_0`` maps camera-0
coordinates to camera-1 coordinates and K is for the native image size.

For each pair a *method* estimates ``(R, t)`` with ``X_1 = R X_0 + t`` from the two images (resized
to ``size`` pixels wide, K rescaled). Errors follow SuperGlue's ``compute_pose_error``:

* rotation error  e_R = arccos((tr(R_gt^T R) - 1) / 2)                          (degrees)
* translation-direction error e_t = min(∠(t, t_gt), 180° - ∠(t, t_gt))   (sign ambiguous for E)
* pose error e = max(e_R, e_t); AUC@{5,10,20} of e (``geometry.pose_auc``); a failed pair counts
  as infinite error in every metric (and in the medians).

Methods:

* ``identity`` the no-motion prior (R = I, t undefined → e_t = 90°),
* ``sift``     OpenCV SIFT (8000 features) + Lowe ratio 0.8 + ``findEssentialMat`` RANSAC with a
  1 px threshold (in pixels of the resized image, divided by the mean focal length because the
  keypoints are normalised by K) + ``recoverPose``, exactly SuperGlue's ``estimate_pose``
  (``--ransac usac_accurate|magsac`` swaps in a locally optimised estimator for every method),
* ``model``    a vibe3r reconstruction checkpoint: dense descriptors → mutual nearest neighbours →
  the same essential-matrix RANSAC (``vibe3r.recon.pose``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vibe3r import geometry
from vibe3r.captures import load_pair_images, load_pairs
from vibe3r.recon.pose import estimate_pose_essential

METHODS = ("identity", "sift", "model")
THRESHOLDS = (5.0, 10.0, 20.0)


# --------------------------------------------------------------------------------------------
# Pose from matches
# --------------------------------------------------------------------------------------------


def sift_features(img: np.ndarray, n_features: int = 8000) -> tuple[np.ndarray, np.ndarray | None]:
    """OpenCV SIFT on an RGB uint8 image -> keypoints (K, 2) pixels and descriptors (K, 128) (None if none)."""
    sift = cv2.SIFT_create(nfeatures=n_features)
    kp, d = sift.detectAndCompute(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), None)
    return np.array([k.pt for k in kp], dtype=np.float64).reshape(-1, 2), d


def ratio_matches(d0: np.ndarray | None, d1: np.ndarray | None, ratio: float = 0.8) -> np.ndarray:
    """Brute-force L2 matches passing Lowe's ratio test -> (M, 2) index pairs (into d0, into d1)."""
    if d0 is None or d1 is None or len(d0) < 2 or len(d1) < 2:
        return np.zeros((0, 2), np.int64)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d0, d1, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    return np.array([(m.queryIdx, m.trainIdx) for m in good], dtype=np.int64).reshape(-1, 2)


def sift_matches(img0: np.ndarray, img1: np.ndarray, n_features: int = 8000, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV SIFT keypoints matched by brute force with Lowe's ratio test -> two (M, 2) arrays."""
    (kp0, d0), (kp1, d1) = sift_features(img0, n_features), sift_features(img1, n_features)
    m = ratio_matches(d0, d1, ratio)
    return kp0[m[:, 0]].reshape(-1, 2), kp1[m[:, 1]].reshape(-1, 2)


# A pose estimator: (img0 uint8 H,W,3, img1, K0, K1 at that resolution) -> (R, t, n_matches) or None.
PoseEstimator = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray, int] | None"]


def identity_estimator(img0, img1, K0, K1):  # noqa: ANN001 - PoseEstimator signature
    """The no-motion prior: R = I and no translation direction (scored as 90°)."""
    return np.eye(3), np.zeros(3), 0


def make_sift_estimator(n_features: int = 8000, ratio: float = 0.8, thresh_px: float = 1.0, ransac: str = "ransac") -> PoseEstimator:
    """SIFT + ratio test + essential-matrix RANSAC, as SuperGlue's classical baseline
    (``ransac`` picks the robust estimator, see ``recon.pose.RANSAC_METHODS``)."""

    def run(img0, img1, K0, K1):  # noqa: ANN001
        p0, p1 = sift_matches(img0, img1, n_features, ratio)
        res = estimate_pose_essential(p0, p1, K0, K1, thresh_px, method=ransac)
        if res is None:
            return None
        return res[0], res[1], len(p0)

    return run


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class PairResult:
    name0: str
    name1: str
    rot_err: float  # degrees, inf on failure
    tdir_err: float  # degrees, inf on failure
    baseline: float  # GT |t| in metres
    gt_rot: float  # GT rotation angle, degrees
    n_matches: int
    failed: bool

    @property
    def err(self) -> float:
        return max(self.rot_err, self.tdir_err)


def summarize(results: Sequence[PairResult]) -> dict[str, float]:
    """AUC@5/10/20 (percent) of max(rot, tdir), median rotation / translation-direction error
    (failures = +inf) and failure rate (percent)."""
    if not results:
        return {"n": 0}
    err = np.array([r.err for r in results])
    rot = np.array([r.rot_err for r in results])
    tdir = np.array([r.tdir_err for r in results])
    auc = geometry.pose_auc(err, THRESHOLDS)
    return {
        "n": len(results),
        "auc5": auc[0],
        "auc10": auc[1],
        "auc20": auc[2],
        "median_rot": float(np.median(rot)),
        "median_tdir": float(np.median(tdir)),
        "median_err": float(np.median(err)),
        "fail_pct": 100.0 * float(np.mean([r.failed for r in results])),
    }


@dataclass
class PairEval:
    method: str
    size: tuple[int, int]
    pairs: str
    results: list[PairResult]
    seconds: float
    min_baseline: float = 0.15
    summary: dict[str, float] = field(default_factory=dict)
    summary_wide: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.summary = summarize(self.results)
        self.summary_wide = summarize([r for r in self.results if r.baseline >= self.min_baseline])

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "size": list(self.size),
            "pairs": self.pairs,
            "seconds": round(self.seconds, 2),
            "all": self.summary,
            f"baseline>={self.min_baseline}": self.summary_wide,
            "per_pair": [asdict(r) for r in self.results],
        }


def evaluate_pairs(
    pairs_path: str | Path,
    estimator: PoseEstimator,
    width: int,
    root: str | Path | None = None,
    method_name: str = "custom",
    min_baseline: float = 0.15,
    progress: Callable[[int, int], None] | None = None,
) -> PairEval:
    """Run ``estimator`` on every pair of a SuperGlue-format list, images resized so their longer
    side is ``width`` pixels (0 = native); ``root`` defaults to the folder found next to the list."""
    pairs = load_pairs(pairs_path, root)
    results = []
    size = (0, 0)
    t0 = time.perf_counter()
    for i, p in enumerate(pairs):
        img0, img1, K0, K1, T_0to1 = load_pair_images(p, size=width or None)
        size = (img0.shape[1], img0.shape[0])
        est = estimator(img0, img1, K0, K1)
        R_gt, t_gt = T_0to1[:3, :3], T_0to1[:3, 3]
        gt_rot = float(geometry.rotation_error_deg(R_gt, np.eye(3)))
        if est is None:
            results.append(PairResult(p.name0, p.name1, math.inf, math.inf, float(np.linalg.norm(t_gt)), gt_rot, 0, True))
        else:
            R, t, n = est
            e_r = float(geometry.rotation_error_deg(R, R_gt))
            e_t = float(geometry.translation_direction_error_deg(t, t_gt, ignore_sign=True))
            results.append(PairResult(p.name0, p.name1, e_r, e_t, float(np.linalg.norm(t_gt)), gt_rot, int(n), False))
        if progress is not None:
            progress(i + 1, len(pairs))
    return PairEval(method_name, size, str(pairs_path), results, time.perf_counter() - t0, min_baseline)


def format_summary(ev: PairEval) -> str:
    """Human-readable lines: all pairs and the wide-baseline subset."""
    lines = [f"{ev.method} at {ev.size[0]}x{ev.size[1]} on {Path(ev.pairs).name} ({ev.seconds:.1f} s)"]
    for label, s in (("all", ev.summary), (f"baseline>={ev.min_baseline} m", ev.summary_wide)):
        if not s.get("n"):
            lines.append(f"  {label:>18}: no pairs")
            continue
        lines.append(
            f"  {label:>18}: n={s['n']:3d}  AUC@5/10/20 {s['auc5']:5.1f} / {s['auc10']:5.1f} / {s['auc20']:5.1f}"
            f"  median rot {s['median_rot']:5.2f}°  tdir {s['median_tdir']:5.2f}°  fail {s['fail_pct']:4.1f}%"
        )
    return "\n".join(lines)


def dumps(ev: PairEval) -> str:
    """One-line JSON summary (no per-pair rows), inf written as null."""
    d = ev.to_json()
    d.pop("per_pair")
    return json.dumps(_nan_to_none(d))


def _nan_to_none(d):  # noqa: ANN001, ANN202
    if isinstance(d, dict):
        return {k: _nan_to_none(v) for k, v in d.items()}
    if isinstance(d, float) and not math.isfinite(d):
        return None
    return d
