"""Self-supervised rewards for sampled pair reconstructions — the real world as the judge, no ground truth.

A sampled reconstruction of a pair (``recon.policy.PairSample``) is view 1's geometry X^{1,1} (the
model's mode, shared by every sample of the pair) and a relative camera ``T21 = [R | λ t̂]`` in the
same units. Each term returns one score per sample, **higher is better**, plus details:

* ``photometric`` warp image 2 into view 1 through the depth of X^{1,1} and T21 (kornia's
  ``warp_frame_depth``), SSIM + L1 (0.85 / 0.15, Monodepth2's photometric error); pixels that match
  better *unwarped* are auto-masked (a static or textureless region says nothing about the pose), as
  are pixels whose confidence is in the lowest ``conf_quantile`` and pixels warped outside image 2.
* ``classical``   disagreement (degrees, rotation + translation direction) with the classical two-view
  pose of the full-resolution frames: RootSIFT (Arandjelović & Zisserman 2012) + Lowe's ratio test +
  essential-matrix USAC at 1 px (``recon.pose.estimate_pose_essential``) — a signal that owes nothing
  to the model. Absent when the classical estimate has fewer than ``min_classical_inliers`` inliers.
* ``epipolar``    mean Sampson distance (pixels, full resolution) of the classical pose's *inlier* matches
  under the sample's essential matrix, truncated at ``epi_trunc_px``. Using RANSAC-verified matches
  (not all ratio-test matches with a 2 px truncation) keeps the residual growing with the pose error
  instead of saturating: 5-20° off, nearly every raw match is past 2 px and only outliers are left to rank.
* ``cycle``       rotation disagreement (degrees) with the chain of the model's mode poses through a
  third frame k, ``R_ji ≈ R_jk R_ki`` (translations of different pairs have different scales, so
  only rotations close a cycle).
* ``alignment``   disagreement with the capture's global alignment — its structure from motion
  (``preference.sfm``, handed to ``sampling.CaptureSampler`` as ``poses``): rotation error plus
  translation-direction error (degrees) against ``inv(c2w_j) c2w_i``. The most valid term where it exists
  (within-pair ρ 0.87 at 256 px on wide pairs, bench/reward_validity.md).
* guards          a failed pose, fewer than ``min_inliers`` RANSAC inliers, a collapsed or exploded
  baseline (λ outside ``[min_baseline, max_baseline]`` times the median depth), or inliers that all lie
  on one plane (a homography explains ≥ ``planar_ratio`` of them: the essential matrix is then
  ambiguous) — such a sample gets the worst combined score of its group, minus one.

``combined = Σ_k w_k · term_k`` over the available terms, with weights in ``RewardConfig`` (units:
photometric error ×100, pixels, degrees). The defaults come from bench/reward_validity.py on 7-Scenes
frames 0–496 (selected on one draw of pairs, confirmed on another): classical + 0.25 · cycle ranks
samples best; the epipolar and photometric terms are reported with weight 0 (the first adds nothing on
top of the classical pose, the second — with the model's own depth — does not track the true error);
with the capture's SfM, + 1 · alignment (within-pair ρ 0.66 → 0.75 at 256 px on wide pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import kornia
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vibe3r.geometry import sampson_px, sampson_table_px
from vibe3r.recon.policy import PairInput, PairSample, cells_to_px

TERMS = ("photometric", "epipolar", "classical", "cycle", "alignment")


class RewardConfig(BaseModel):
    """Weights and thresholds of the self-supervised rewards (preference.rewards)."""

    model_config = ConfigDict(extra="forbid")

    w_photometric: float = Field(0.0, ge=0, description="weight of the photometric term (error x100); 0 by default: with the "
                                 "model's own depth on real frames it does not track pose error (bench/reward_validity.md)")
    w_epipolar: float = Field(0.0, ge=0, description="weight of the epipolar term (truncated Sampson distance of the "
                              "classical inliers, px); 0 by default: it adds nothing on top of the classical term")
    w_classical: float = Field(1.0, ge=0, description="weight of the classical-pose term (rotation + translation direction, degrees)")
    w_cycle: float = Field(0.25, ge=0, description="weight of the rotation cycle term (degrees)")
    w_alignment: float = Field(1.0, ge=0, description="weight of the global-alignment term (degrees; only when the sampler has "
                               "the capture's alignment, e.g. its SfM: within-pair rho 0.75 with it at 1, 0.66 without; bench/reward_validity.md)")
    ssim_weight: float = Field(0.85, ge=0, le=1, description="SSIM share of the photometric error (rest is L1)")
    ssim_window: int = Field(5, ge=3, description="SSIM window (odd)")
    conf_quantile: float = Field(0.2, ge=0, lt=1, description="pixels below this confidence quantile are masked")
    automask: bool = Field(True, description="mask pixels whose unwarped error is lower than the warped one")
    epi_trunc_px: float = Field(16.0, gt=0, description="Sampson distances are truncated here (pixels, full resolution)")
    sift_features: int = Field(16000, ge=0, description="SIFT features per full-resolution frame (0: no cap)")
    sift_contrast: float = Field(0.005, ge=0, description="SIFT contrast threshold (OpenCV's default 0.04 finds too few "
                                 "keypoints on low-texture indoor frames: the classical pose is then 1° worse)")
    sift_ratio: float = Field(0.8, gt=0, le=1, description="Lowe's ratio test")
    root_sift: bool = Field(True, description="RootSIFT descriptors (L1-normalise, square root) for the classical matches")
    classical_px: float = Field(1.0, gt=0, description="RANSAC threshold of the classical pose (pixels, full resolution)")
    min_classical_inliers: int = Field(15, ge=5, description="fewer inliers: no classical pose, its terms are skipped")
    min_inliers: int = Field(15, ge=5, description="fewer RANSAC inliers: degenerate sample")
    min_baseline: float = Field(1e-3, gt=0, description="baseline / median depth below this: collapsed scale")
    max_baseline: float = Field(5.0, gt=0, description="baseline / median depth above this: exploded scale")
    planar_ratio: float = Field(0.97, gt=0, le=1, description="share of inliers a homography explains that flags a planar sample")
    draw_trunc_px: float = Field(4.0, gt=0, description="per-draw rewards (``draw_rewards``): Sampson distances are truncated "
                                 "here (pixels at the policy's resolution)")


@dataclass
class Classical:
    """The classical two-view estimate of a pair at full resolution: ratio-test matches ``kp1, kp2``
    (M, 2), the essential-matrix pose ``T21`` (unit translation; None if RANSAC failed or kept fewer
    than ``min_classical_inliers``) and its inlier mask (M,)."""

    kp1: np.ndarray
    kp2: np.ndarray
    T21: np.ndarray | None
    inliers: np.ndarray


def classical_pose(img1: np.ndarray, img2: np.ndarray, K1: np.ndarray, K2: np.ndarray, cfg: RewardConfig) -> Classical:
    """(Root)SIFT + Lowe's ratio test + essential-matrix USAC on full-resolution uint8 frames (deterministic)."""
    from vibe3r.eval.pairs import ratio_matches
    from vibe3r.recon.pose import estimate_pose_essential

    sift = cv2.SIFT_create(nfeatures=cfg.sift_features, contrastThreshold=cfg.sift_contrast)

    def features(img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        kp, d = sift.detectAndCompute(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), None)
        if cfg.root_sift and d is not None:
            d = np.sqrt(d / (d.sum(1, keepdims=True) + 1e-7)).astype(np.float32)
        return np.array([k.pt for k in kp], dtype=np.float64).reshape(-1, 2), d

    (k1, d1), (k2, d2) = features(img1), features(img2)
    m = ratio_matches(d1, d2, cfg.sift_ratio)
    kp1, kp2 = k1[m[:, 0]].reshape(-1, 2), k2[m[:, 1]].reshape(-1, 2)
    cv2.setRNGSeed(0)
    res = estimate_pose_essential(kp1, kp2, K1, K2, cfg.classical_px, method="usac_accurate")
    if res is None or res[2].sum() < cfg.min_classical_inliers:
        return Classical(kp1, kp2, None, np.zeros(len(kp1), bool))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = res[0], res[1]
    return Classical(kp1, kp2, T, res[2])


@dataclass
class PairContext:
    """Everything the rewards may look at for one pair — never ground truth.

    ``pair`` is what the model saw; ``out`` its outputs (pts11, conf1 at the model's resolution);
    ``full1``/``full2`` the frames at full resolution with ``K_full1``/``K_full2`` (for classical
    matches); ``cycle_R`` rotations R_ji predicted by chaining mode poses through third frames;
    ``align_T`` the relative pose from the capture's global alignment (camera i → camera j);
    ``classical`` the classical estimate, computed on first use (or handed in from a cache).
    """

    pair: PairInput
    out: dict[str, torch.Tensor]
    full1: np.ndarray | None = None
    full2: np.ndarray | None = None
    K_full1: np.ndarray | None = None
    K_full2: np.ndarray | None = None
    cycle_R: list[np.ndarray] = field(default_factory=list)
    align_T: np.ndarray | None = None
    classical: Classical | None = None

    def classical_estimate(self, cfg: RewardConfig) -> Classical:
        """The classical two-view estimate of the full-resolution frames (cached: every sample uses it)."""
        if self.classical is None:
            self.classical = classical_pose(self.full1, self.full2, self.K_full1, self.K_full2, cfg)
        return self.classical


# --------------------------------------------------------------------------------------------
# terms
# --------------------------------------------------------------------------------------------


def _rot_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _dir_deg(ta: np.ndarray, tb: np.ndarray) -> float:
    na, nb = np.linalg.norm(ta), np.linalg.norm(tb)
    if na < 1e-12 or nb < 1e-12:
        return 90.0
    return float(np.degrees(np.arccos(np.clip(ta @ tb / (na * nb), -1.0, 1.0))))


def photometric_error(ctx: PairContext, T21s: list[np.ndarray], cfg: RewardConfig) -> tuple[np.ndarray, dict]:
    """Masked SSIM + L1 error of image 2 warped into view 1, one value per pose (lower is better)."""
    K1, K2 = ctx.pair.K1, ctx.pair.K2
    if not np.allclose(K1, K2, rtol=1e-3):
        raise ValueError("the photometric reward warps with one camera matrix: the pair's intrinsics differ")
    img1, img2 = ctx.pair.img1, ctx.pair.img2  # 1,3,H,W
    depth = ctx.out["pts11"][0, ..., 2].float()[None, None]  # 1,1,H,W
    conf = ctx.out["conf1"][0].float()
    keep = (depth[0, 0] > 0) & (conf >= torch.quantile(conf.flatten(), cfg.conf_quantile))
    n = len(T21s)
    T = torch.as_tensor(np.stack(T21s), dtype=torch.float32)  # n,4,4: camera 1 -> camera 2 (kornia's src_trans_dst)
    Kt = torch.as_tensor(K1, dtype=torch.float32)[None].expand(n, 3, 3)
    warped = kornia.geometry.depth.warp_frame_depth(img2.expand(n, -1, -1, -1), depth.expand(n, -1, -1, -1), T, Kt)
    # inside image 2: warp a ones image; bilinear sampling with zero padding leaves < 1 outside
    inside = kornia.geometry.depth.warp_frame_depth(torch.ones_like(depth).expand(n, -1, -1, -1),
                                                    depth.expand(n, -1, -1, -1), T, Kt)[:, 0] > 0.999

    def err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ssim = kornia.metrics.ssim(a, b, cfg.ssim_window)  # n,3,H,W
        return (cfg.ssim_weight * (1 - ssim) / 2 + (1 - cfg.ssim_weight) * (a - b).abs()).mean(1)  # n,H,W

    e = err(img1.expand(n, -1, -1, -1), warped)
    mask = keep[None] & inside
    if cfg.automask:
        e_id = err(img1, img2)[0]
        mask &= e < e_id[None]
    frac = mask.float().mean((1, 2))
    out = torch.where(frac > 0.02, (e * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1), torch.full_like(frac, 1.0))
    return out.numpy().astype(np.float64), {"valid_fraction": frac.numpy().round(4).tolist()}


def epipolar_error(ctx: PairContext, T21s: list[np.ndarray], cfg: RewardConfig) -> tuple[np.ndarray, dict]:
    """Mean truncated Sampson distance of the classical pose's inlier matches, per pose (lower is better)."""
    c = ctx.classical_estimate(cfg)
    kp1, kp2 = c.kp1[c.inliers], c.kp2[c.inliers]
    if c.T21 is None:
        return np.full(len(T21s), np.nan), {"classical_inliers": 0}
    errs = np.array([np.minimum(sampson_px(T, kp1, kp2, ctx.K_full1, ctx.K_full2), cfg.epi_trunc_px).mean()
                     for T in T21s])
    return errs, {"classical_inliers": len(kp1)}


def match_rewards(ctx: PairContext, cfg: RewardConfig) -> np.ndarray | None:
    """The per-match reward of *every* candidate match (N1, N2): minus the truncated Sampson distance
    (pixels of the pair the policy saw, cell centres) of view-1 cell i and view-2 cell j under the
    classical pose — whether that one match is geometrically plausible, never ground truth. None when
    the pair has no classical pose. ``draw_rewards`` reads drawn matches from it; the exact trainer
    (``preference.exact``) uses all of it."""
    c = ctx.classical_estimate(cfg)
    if c.T21 is None:
        return None
    return epipolar_match_rewards(c.T21, ctx.pair.K1, ctx.pair.K2, tuple(ctx.out["desc1"].shape[1:3]),
                                  tuple(ctx.out["pts11"].shape[1:3]), cfg.draw_trunc_px)


def epipolar_match_rewards(T21: np.ndarray, K1: np.ndarray, K2: np.ndarray, grid_hw: tuple[int, int],
                           image_hw: tuple[int, int], trunc_px: float, rows: np.ndarray | None = None,
                           cols: np.ndarray | None = None) -> np.ndarray:
    """Reward (N1, N2) of matching view-1 cell i with view-2 cell j: minus the Sampson distance of the
    cell centres (pixels of the image, truncated at ``trunc_px``) under pose ``T21``. ``rows`` / ``cols``
    (cell indices) restrict the table to those view-1 / view-2 cells."""
    h, w = grid_hw
    cells = np.arange(h * w)
    centres = cells_to_px(np.stack([cells % w, cells // w], -1), grid_hw, image_hw)
    c1 = centres if rows is None else centres[np.asarray(rows)]
    c2 = centres if cols is None else centres[np.asarray(cols)]
    return -np.minimum(sampson_table_px(T21, c1, c2, K1, K2), trunc_px).astype(np.float32)


def point_match_rewards(T_ba: np.ndarray, Ka: np.ndarray, Kb: np.ndarray, grid_hw: tuple[int, int],
                        image_hw: tuple[int, int], trunc_px: float, depth_a: np.ndarray,
                        rows: np.ndarray | None = None) -> np.ndarray:
    """Reward (len(rows), N) of matching query cell i of view a with cell j of view b, where view a's cells
    have a depth ``depth_a`` (h, w; 0 = unknown, in the units of ``T_ba``'s translation — e.g. the points of
    the capture's structure from motion, never ground truth). A cell with a depth is a 3D point: its reward
    is minus the distance (image pixels, truncated at ``trunc_px``) from j's centre to where that point
    projects in view b — the point-to-point counterpart of the Sampson distance, which only asks j to lie
    on an epipolar line. Cells without a depth keep the epipolar reward. ``rows``: the query cells
    (default all). With ``a, b = 1, 2`` this is the forward table of ``epipolar_match_rewards``; with
    ``T_ba = inv(T21)`` and view 2's depth, the transposed backward one."""
    h, w = grid_hw
    cells = np.arange(h * w) if rows is None else np.asarray(rows)
    centres_b = cells_to_px(np.stack([np.arange(h * w) % w, np.arange(h * w) // w], -1), grid_hw, image_hw)
    out = epipolar_match_rewards(T_ba, Ka, Kb, grid_hw, image_hw, trunc_px, rows=cells)
    z = np.asarray(depth_a, np.float64).reshape(-1)[cells]
    known = z > 0
    if known.any():
        ca = cells_to_px(np.stack([cells[known] % w, cells[known] // w], -1), grid_hw, image_hw)
        X = (np.linalg.inv(Ka) @ np.c_[ca, np.ones(len(ca))].T).T * z[known, None]  # M,3 in camera a
        Xb = X @ T_ba[:3, :3].T + T_ba[:3, 3]
        uvw = Xb @ Kb.T
        front = uvw[:, 2] > 1e-9
        uv = uvw[:, :2] / np.where(front, uvw[:, 2], 1.0)[:, None]
        d = np.sqrt(((uv[:, None, :] - centres_b[None]) ** 2).sum(-1))  # M,N
        d[~front] = trunc_px  # a point behind camera b: nothing there is its match
        out[known] = -np.minimum(d, trunc_px)
    return out.astype(np.float32)


def draw_rewards(ctx: PairContext, samples: list, cfg: RewardConfig) -> np.ndarray | None:
    """Per-draw rewards (n, N1 + N2), forward then backward draws as ``recon.policy.per_draw_log_probs``:
    the ``match_rewards`` entry of every drawn match (cell i of view 1, cell j of view 2) — the dense
    counterpart of the classical term. None when the pair has no classical pose."""
    M = match_rewards(ctx, cfg)
    if M is None:
        return None
    fwd = np.stack([np.asarray(s.fwd, np.int64) for s in samples])  # n,N1: view-2 cell of view-1 cell i
    bwd = np.stack([np.asarray(s.bwd, np.int64) for s in samples])  # n,N2: view-1 cell of view-2 cell j
    rf = M[np.arange(M.shape[0])[None], fwd]
    rb = M[bwd, np.arange(M.shape[1])[None]]
    return np.concatenate([rf, rb], 1).astype(np.float64)


def classical_error(ctx: PairContext, T21s: list[np.ndarray], cfg: RewardConfig) -> tuple[np.ndarray, dict]:
    """Rotation + translation-direction disagreement (degrees) with the classical pose (lower is better)."""
    c = ctx.classical_estimate(cfg)
    if c.T21 is None:
        return np.full(len(T21s), np.nan), {"classical_inliers": 0}
    A = c.T21
    return (np.array([_rot_deg(T[:3, :3], A[:3, :3]) + _dir_deg(T[:3, 3], A[:3, 3]) for T in T21s]),
            {"classical_inliers": int(c.inliers.sum())})


def degenerate_reason(s: PairSample, ctx: PairContext, cfg: RewardConfig) -> str | None:
    """Why a sample cannot be trusted as a reconstruction (reward hacking guards), or None."""
    if s.T21 is None:
        return "no pose"
    if s.n_inliers < cfg.min_inliers:
        return f"{s.n_inliers} inliers"
    depth = ctx.out["pts11"][0, ..., 2]
    med = float(depth[depth > 0].median()) if bool((depth > 0).any()) else 0.0
    b = float(np.linalg.norm(s.T21[:3, 3])) / max(med, 1e-12)
    if not (cfg.min_baseline <= b <= cfg.max_baseline):
        return f"baseline/depth {b:.2g}"
    p1, p2 = s.kp1[s.inliers], s.kp2[s.inliers]
    if len(p1) >= 8:
        Hm, m = cv2.findHomography(p1, p2, cv2.RANSAC, 1.0)
        if Hm is not None and m is not None and m.mean() >= cfg.planar_ratio:
            return "planar"
    return None


def score_samples(ctx: PairContext, samples: list[PairSample], cfg: RewardConfig | None = None) -> list[dict]:
    """Reward terms and the combined reward of every sample of one pair (higher is better).

    Returns one dict per sample: ``{"combined": float, "photometric": …, "epipolar": …, "classical": …,
    "cycle": …, "alignment": …, "degenerate": reason | None}``; a term is absent when its input is not in ``ctx``.
    """
    cfg = cfg or RewardConfig()
    n = len(samples)
    reasons = [degenerate_reason(s, ctx, cfg) for s in samples]
    ok = [i for i in range(n) if reasons[i] is None]
    rows: list[dict] = [{"degenerate": r} for r in reasons]
    terms: dict[str, np.ndarray] = {}
    if ok:
        Ts = [samples[i].T21 for i in ok]
        terms["photometric"] = -100 * photometric_error(ctx, Ts, cfg)[0]
        if ctx.full1 is not None and ctx.K_full1 is not None:
            for name, fn in (("epipolar", epipolar_error), ("classical", classical_error)):
                e = fn(ctx, Ts, cfg)[0]
                if np.isfinite(e).all():
                    terms[name] = -e
        if ctx.cycle_R:
            terms["cycle"] = -np.array([np.mean([_rot_deg(T[:3, :3], R) for R in ctx.cycle_R]) for T in Ts])
        if ctx.align_T is not None:
            A = ctx.align_T
            terms["alignment"] = -np.array([_rot_deg(T[:3, :3], A[:3, :3]) + _dir_deg(T[:3, 3], A[:3, 3]) for T in Ts])
    for j, i in enumerate(ok):
        for k, v in terms.items():
            rows[i][k] = float(v[j])
    return combine(rows, cfg)


def combine(rows: list[dict], cfg: RewardConfig) -> list[dict]:
    """Set ``combined = Σ_k w_k · term_k`` on one group's rows (in place); degenerate rows get the
    group's worst minus one. Re-weighting stored terms goes through here too."""
    weights = {k: getattr(cfg, f"w_{k}") for k in TERMS}
    for r in rows:
        if r.get("degenerate") is None:
            r["combined"] = float(sum(w * r[k] for k, w in weights.items() if k in r))
    good = [r["combined"] for r in rows if r.get("degenerate") is None]
    worst = (min(good) - 1.0) if good else -1e3
    for r in rows:
        if r.get("degenerate") is not None:
            r["combined"] = worst
    return rows
