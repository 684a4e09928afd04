"""Pairwise inference over a scene graph: pointmaps, confidences, matches and a relative pose per pair.

For every directed edge e = (a, b) of the graph (both orders of each pair when ``symmetric``) the
network sees view 1 = frame a, view 2 = frame b and gives, in camera a's frame and at the pair's own
(unknown) scale,

    X^{a,e} = X^{1,1}  (H,W,3)  frame a's pixels,     C^{a,e}  (H,W)
    X^{b,e} = X^{2,1}  (H,W,3)  frame b's pixels,     C^{b,e}  (H,W)

pointmaps stored as float16, confidences as float32 (the alignment reads them chunk by chunk; memory is linear in the number of edges),
plus the mutual-nearest-neighbour matches of the dense descriptors (pixels of a ↔ pixels of b).

Then ``estimate_pair_poses`` gives each edge a relative pose ``T_b_a`` (camera a → camera b) **in the
pair's pointmap units**, by one of ``pose.py``'s solvers:

* ``essential``  (K known) R and the direction t̂ from 5-point RANSAC on the descriptor matches; the
  baseline length λ from the pointmap: a match (p, q) with 3D point X = X^{a,e}(p) must project to q
  in camera b, i.e. with x_q = K_b⁻¹ q and Y = R X + λ t̂:  Y_x − x_q,x Y_z = 0 and Y_y − x_q,y Y_z = 0,
  which is linear in λ:  λ (t̂_x − x_q,x t̂_z) = x_q,x (RX)_z − (RX)_x  (same for y). λ is the
  least-squares solution over the RANSAC inliers.
* ``pnp``        PnP-RANSAC of X^{b,e} (view b's pixels, 3D in camera a) against b's pixel grid (DUSt3R).
* ``procrustes`` (both orders) weighted similarity X^{b,(a,b)} ≈ s R X^{b,(b,a)} + t between the two
  predictions of frame b's pixels: (R, t) is camera b → camera a in the (a, b) pair's units.

When K is unknown the focal of each frame is estimated from its X^{a,e} first (``estimate_focal``,
principal point at the centre). ``ground_truth_pairwise`` builds the same structure from exact depth
and poses (the oracle used to test alignment without a network).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vibe3r import geometry
from vibe3r.errors import InputError
from vibe3r.recon.matching import match_descriptors
from vibe3r.recon.pose import RANSAC_METHODS, estimate_pose_essential, pose_pnp, pose_procrustes, top_confidence

POSE_SOLVERS = ("auto", "essential", "pnp", "procrustes")
Progress = Callable[[int, int], None]


@dataclass
class PairwisePredictions:
    """Per directed edge e = (a, b): pointmaps, confidences, matches and relative pose (see module doc).

    ``rel_pose`` (E,4,4) float64 is T_b_a in the pair's units; ``pose_method`` names the solver that
    produced it ("essential", "pnp", "procrustes", "gt" or "none" when every solver failed, then T = I).
    ``focal`` (E,) is the focal of frame a estimated from X^{a,e} (pixels, principal point at the centre).
    """

    edges: np.ndarray  # E,2 int64 (a, b)
    pts_a: torch.Tensor  # E,H,W,3 float16  X^{a,e}
    pts_b: torch.Tensor  # E,H,W,3 float16  X^{b,e}
    conf_a: torch.Tensor  # E,H,W float32
    conf_b: torch.Tensor  # E,H,W float32
    matches: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per edge: kp_a (M,2), kp_b (M,2) pixels
    rel_pose: np.ndarray | None = None  # E,4,4 float64
    pose_method: list[str] = field(default_factory=list)
    n_inliers: np.ndarray | None = None  # E int
    inlier_masks: list[np.ndarray] = field(default_factory=list)  # per edge: (M,) bool, essential-RANSAC inliers of ``matches``
    focal: np.ndarray | None = None  # E float64

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.pts_a.shape[1]), int(self.pts_a.shape[2])

    def nbytes(self) -> int:
        """Bytes held by the dense per-edge tensors and the matches."""
        dense = sum(t.numel() * t.element_size() for t in (self.pts_a, self.pts_b, self.conf_a, self.conf_b))
        return dense + sum(a.nbytes + b.nbytes for a, b in self.matches)

    def edge_score(self) -> np.ndarray:
        """Edge strength (E,): DUSt3R's mean(C^{a,e}) · mean(C^{b,e}), times the number of
        essential-matrix inliers + 1 when the poses come from matches (the confidence of a network
        trained mostly for matching says little about its poses; the inlier count does)."""
        s = (self.conf_a.float().mean((1, 2)) * self.conf_b.float().mean((1, 2))).numpy().astype(np.float64)
        if self.n_inliers is not None and self.n_inliers.any():
            s = s * (self.n_inliers + 1)
        return s


def directed_edges(pairs: list[tuple[int, int]], symmetric: bool = True) -> np.ndarray:
    """Undirected pairs -> directed edges (E,2): (i, j) and, when ``symmetric``, (j, i) too."""
    e = [(i, j) for i, j in pairs]
    if symmetric:
        e += [(j, i) for i, j in pairs]
    return np.asarray(e, dtype=np.int64).reshape(-1, 2)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float32 (N,3,H,W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def run_pairs(model: torch.nn.Module, images: np.ndarray, edges: np.ndarray, batch_size: int = 8,
              match: bool = True, progress: Progress | None = None) -> PairwisePredictions:
    """Run the network over directed edges (E,2) of frames ``images`` (N,H,W,3) uint8, in batches.

    H and W must be multiples of the model's patch size. Returns float16 pointmaps, float32 confidences and,
    with ``match``, the descriptor matches of every edge (mutual NN + sub-cell refinement).
    """
    model = model.eval()
    x = images_to_tensor(images)  # N,3,H,W
    N, _, H, W = x.shape
    E = len(edges)
    pts_a = torch.empty(E, H, W, 3, dtype=torch.float16)
    pts_b = torch.empty_like(pts_a)
    # confidences in float32: a checkpoint whose C sits just above conf_min (1 + 1e-4) would round to
    # exactly 1 in float16, i.e. zero weight (log C) everywhere in the alignment's pointmap term
    conf_a = torch.empty(E, H, W, dtype=torch.float32)
    conf_b = torch.empty_like(conf_a)
    matches: list[tuple[np.ndarray, np.ndarray]] = []
    for s in range(0, E, batch_size):
        e = edges[s : s + batch_size]
        out = model(x[torch.from_numpy(e[:, 0])], x[torch.from_numpy(e[:, 1])])
        pts_a[s : s + len(e)] = out["pts11"].half()
        pts_b[s : s + len(e)] = out["pts21"].half()
        conf_a[s : s + len(e)] = out["conf1"].float()
        conf_b[s : s + len(e)] = out["conf2"].float()
        if match:
            for k in range(len(e)):
                kp_a, kp_b, _ = match_descriptors(out["desc1"][k], out["desc2"][k], (H, W), subpixel=True)
                matches.append((kp_a.numpy().astype(np.float32), kp_b.numpy().astype(np.float32)))
        if progress is not None:
            progress(min(s + batch_size, E), E)
    return PairwisePredictions(edges=np.asarray(edges, np.int64), pts_a=pts_a, pts_b=pts_b, conf_a=conf_a, conf_b=conf_b,
                               matches=matches)


# --------------------------------------------------------------------------------------------
# Intrinsics from pointmaps
# --------------------------------------------------------------------------------------------


def estimate_focal(pts: torch.Tensor, conf: torch.Tensor | None = None, pp: tuple[float, float] | None = None,
                   iters: int = 5) -> float:
    """Focal (pixels) of a camera-frame pointmap (H,W,3), principal point ``pp`` (default the centre).

    A pixel (u, v) sees X with u − c_x = f X/Z and v − c_y = f Y/Z. With a = X/Z, b = Y/Z the weighted
    least-squares focal is f = Σ w (u' a + v' b) / Σ w (a² + b²) (u' = u − c_x, v' = v − c_y). It is
    refined by ``iters`` Weiszfeld steps (IRLS with weights w / |residual|), DUSt3R's robust L1 fit.
    Points with Z <= 0 are ignored; returns NaN when none is left.
    """
    H, W = pts.shape[:2]
    cx, cy = ((W - 1) / 2, (H - 1) / 2) if pp is None else pp
    P = pts.reshape(-1, 3).double()
    w = torch.ones(len(P), dtype=torch.float64) if conf is None else conf.reshape(-1).double()
    uv = geometry.pixel_grid(H, W, torch.float64).reshape(-1, 2) - torch.tensor([cx, cy], dtype=torch.float64)
    ok = (P[:, 2] > 1e-6) & torch.isfinite(P).all(1) & (w > 0)
    if ok.sum() < 3:
        return float("nan")
    ab = P[ok, :2] / P[ok, 2:]  # M,2
    uv, w = uv[ok], w[ok]
    wi = w
    f = float("nan")
    for _ in range(iters + 1):
        f = float((wi[:, None] * uv * ab).sum() / (wi[:, None] * ab * ab).sum().clamp_min(1e-12))
        res = (uv - f * ab).norm(dim=1)
        wi = w / res.clamp_min(1e-3)
    return f


def frame_intrinsics(pred: PairwisePredictions, n_frames: int, shared: bool = True) -> np.ndarray:
    """K (N,3,3) from the per-edge focal estimates of ``pred`` (principal point at the centre).

    Frame n's focal is the median of the estimates from the edges where it is view 1; ``shared`` uses
    the median over all edges for every frame (one camera, e.g. a phone video).
    """
    if pred.focal is None:
        pred.focal = np.array([estimate_focal(pred.pts_a[e].float(), pred.conf_a[e].float()) for e in range(pred.n_edges)])
    H, W = pred.hw
    f_all = pred.focal[np.isfinite(pred.focal) & (pred.focal > 0)]
    if len(f_all) == 0:
        raise InputError("could not estimate a focal length from the pointmaps (no points in front of the cameras)")
    f_med = float(np.median(f_all))
    K = np.zeros((n_frames, 3, 3))
    for n in range(n_frames):
        f = pred.focal[(pred.edges[:, 0] == n) & np.isfinite(pred.focal) & (pred.focal > 0)]
        K[n] = [[f_med if shared or len(f) == 0 else float(np.median(f)), 0, (W - 1) / 2], [0, 0, (H - 1) / 2], [0, 0, 1]]
        K[n, 1, 1] = K[n, 0, 0]
    return K


# --------------------------------------------------------------------------------------------
# Relative poses per edge
# --------------------------------------------------------------------------------------------


def baseline_from_matches(X: np.ndarray, kp_b: np.ndarray, K_b: np.ndarray, R: np.ndarray, t_dir: np.ndarray) -> float:
    """Least-squares baseline λ so that R X + λ t̂ projects onto kp_b (see the module docstring).

    X (M,3) points of view a in camera a (pair units), kp_b (M,2) their pixels in b. NaN if degenerate.
    """
    q = (kp_b - K_b[[0, 1], [2, 2]]) / K_b[[0, 1], [0, 1]]  # M,2 normalised coordinates in b
    RX = X @ R.T  # M,3
    a = np.concatenate([t_dir[0] - q[:, 0] * t_dir[2], t_dir[1] - q[:, 1] * t_dir[2]])
    b = np.concatenate([q[:, 0] * RX[:, 2] - RX[:, 0], q[:, 1] * RX[:, 2] - RX[:, 1]])
    ok = np.isfinite(a) & np.isfinite(b)
    den = float((a[ok] ** 2).sum())
    if den < 1e-12:
        return float("nan")
    return float((a[ok] * b[ok]).sum() / den)


def _sample_points(pts: torch.Tensor, kp: np.ndarray) -> np.ndarray:
    """Nearest-pixel lookup of a pointmap (H,W,3) at pixel positions (M,2) -> (M,3) float64."""
    H, W = pts.shape[:2]
    ij = np.round(kp).astype(np.int64)
    return pts[np.clip(ij[:, 1], 0, H - 1), np.clip(ij[:, 0], 0, W - 1)].double().numpy()


def _pose_pnp_edge(pred: PairwisePredictions, e: int, K_b: np.ndarray, n_points: int, px: float) -> np.ndarray | None:
    H, W = pred.hw
    idx = top_confidence(pred.conf_b[e].float(), n_points)
    X = pred.pts_b[e].float().reshape(-1, 3)[idx].numpy()
    uv = geometry.pixel_grid(H, W).reshape(-1, 2)[idx].numpy()
    res = pose_pnp(X, uv, K_b, px)
    return None if res is None else geometry.make_pose(torch.from_numpy(res[0]), torch.from_numpy(res[1])).numpy()


def estimate_pair_poses(pred: PairwisePredictions, K: np.ndarray, solver: str = "auto", ransac_px: float = 1.0,
                        ransac: str = "usac_accurate", pnp_px: float = 2.0, n_points: int = 2000,
                        progress: Progress | None = None) -> PairwisePredictions:
    """Fill ``pred.rel_pose`` (T_b_a in pair units), ``pose_method`` and ``n_inliers`` for every edge.

    ``solver``: ``essential`` (needs matches), ``pnp``, ``procrustes`` (needs the reverse edge), or
    ``auto`` = essential when matches exist, else procrustes when the reverse edge exists, else pnp.
    A failing solver falls back to pnp, then procrustes; if all fail the edge gets T = I and method "none".
    """
    if solver not in POSE_SOLVERS:
        raise InputError(f"unknown pose solver {solver!r}; valid: {', '.join(POSE_SOLVERS)}")
    if ransac not in RANSAC_METHODS:
        raise InputError(f"unknown RANSAC method {ransac!r}; valid: {', '.join(RANSAC_METHODS)}")
    E = pred.n_edges
    reverse = {(int(a), int(b)): k for k, (a, b) in enumerate(pred.edges)}
    rel = np.tile(np.eye(4), (E, 1, 1))
    methods: list[str] = []
    inliers = np.zeros(E, np.int64)
    masks: list[np.ndarray] = []
    for e in range(E):
        a, b = (int(v) for v in pred.edges[e])
        r = reverse.get((b, a))
        order = {"essential": ["essential", "pnp", "procrustes"], "pnp": ["pnp", "procrustes"],
                 "procrustes": ["procrustes", "pnp"]}.get(solver)
        if order is None:  # auto
            order = ["essential", "pnp", "procrustes"] if pred.matches else ["procrustes", "pnp"]
        T = None
        mask = np.zeros(len(pred.matches[e][0]) if pred.matches else 0, bool)
        for m in order:
            if m == "essential" and pred.matches:
                kp_a, kp_b = pred.matches[e]
                res = estimate_pose_essential(kp_a, kp_b, K[a], K[b], ransac_px, method=ransac)
                if res is None or res[2].sum() < 8:
                    continue
                R, t, inl = res
                lam = baseline_from_matches(_sample_points(pred.pts_a[e].float(), kp_a[inl]), kp_b[inl], K[b], R, t)
                if not np.isfinite(lam) or lam <= 0:
                    continue
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, lam * t
                inliers[e] = int(inl.sum())
                mask = inl
            elif m == "pnp":
                T = _pose_pnp_edge(pred, e, K[b], n_points, pnp_px)
            elif m == "procrustes" and r is not None:
                w = pred.conf_b[e].float() * pred.conf_a[r].float()  # H,W
                idx = top_confidence(w, n_points)
                src = pred.pts_a[r].float().reshape(-1, 3)[idx]  # X^{b,b}: frame b's pixels, camera b
                dst = pred.pts_b[e].float().reshape(-1, 3)[idx]  # X^{b,a}: the same pixels, camera a
                R_ab, t_ab, s = pose_procrustes(src, dst, w.reshape(-1)[idx])  # camera b -> camera a
                if not (np.isfinite(R_ab).all() and np.isfinite(t_ab).all() and s > 0):
                    continue
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R_ab.T, -R_ab.T @ t_ab
            if T is not None:
                methods.append(m)
                break
        if T is None:
            methods.append("none")
            T = np.eye(4)
        rel[e] = T
        masks.append(mask)
        if progress is not None:
            progress(e + 1, E)
    pred.rel_pose, pred.pose_method, pred.n_inliers, pred.inlier_masks = rel, methods, inliers, masks
    return pred


# --------------------------------------------------------------------------------------------
# The ground-truth oracle
# --------------------------------------------------------------------------------------------


def ground_truth_pairwise(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, edges: np.ndarray,
                          conf: float = math.e + 1) -> PairwisePredictions:
    """Exact pairwise predictions from depth (N,H,W), K (N,3,3), c2w (N,4,4): what a perfect network
    returns. Each edge is scale-normalised like DUSt3R's ``avg_dis`` (mean ‖X‖ over the valid points
    of both views = 1); pixels without depth get X = 0 and confidence 1 (zero weight after log).
    ``rel_pose`` is the exact T_b_a in the pair's units."""
    d = torch.as_tensor(depth, dtype=torch.float64)
    Xc = geometry.unproject_depth(d, torch.as_tensor(K, dtype=torch.float64))  # N,H,W,3 camera frames
    valid = d > 0
    E = len(edges)
    H, W = d.shape[1:]
    pts_a = torch.empty(E, H, W, 3, dtype=torch.float16)
    pts_b = torch.empty_like(pts_a)
    conf_a = torch.empty(E, H, W, dtype=torch.float16)
    conf_b = torch.empty_like(conf_a)
    rel = np.zeros((E, 4, 4))
    for e, (a, b) in enumerate(np.asarray(edges)):
        T_ab = geometry.relative_pose(torch.as_tensor(c2w[b]), torch.as_tensor(c2w[a]))  # camera b -> camera a
        Xa = Xc[a]
        Xb = geometry.transform_points(T_ab, Xc[b])
        va, vb = valid[a], valid[b]
        s = torch.cat([Xa[va].norm(dim=-1), Xb[vb].norm(dim=-1)]).mean()
        pts_a[e] = torch.where(va[..., None], Xa / s, 0).half()
        pts_b[e] = torch.where(vb[..., None], Xb / s, 0).half()
        conf_a[e] = torch.where(va, conf, 1.0).half()
        conf_b[e] = torch.where(vb, conf, 1.0).half()
        T = geometry.inv_pose(T_ab).numpy()
        T[:3, 3] /= float(s)
        rel[e] = T
    return PairwisePredictions(edges=np.asarray(edges, np.int64), pts_a=pts_a, pts_b=pts_b, conf_a=conf_a, conf_b=conf_b,
                               rel_pose=rel, pose_method=["gt"] * E, n_inliers=np.zeros(E, np.int64))
