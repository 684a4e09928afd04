"""Global alignment of pairwise pointmaps into one scene (DUSt3R's cloud optimiser, on the CPU).

Unknowns, for N frames and E directed edges e = (a, b) (``inference.PairwisePredictions``):

* per frame n: a depth map D_n (H',W') (parametrised as log-depth, optionally on a strided grid of
  pixels u = r k + ⌊r/2⌋), a camera-to-world pose P_n = (R_n, t_n) (R_n from an unnormalised unit
  quaternion, roma's xyzw), a focal f_n (log-parametrised, shared by all frames or per frame;
  principal point fixed at the image centre, or everything fixed when K is known);
* per edge e: a similarity (σ_e, R_e, t_e) taking the pair's frame (camera a at the pair's scale) into
  the world.

World points of frame n: χ_n(p) = R_n D_n(p) K_n⁻¹ [p, 1] + t_n. The objective (DUSt3R eq. 5) asks
every pair's two pointmaps to land on those world points, confidence-weighted:

    L = Σ_e Σ_{v ∈ {a, b}} Σ_p  w_{v,e}(p) ‖ χ_v(p) − σ_e (R_e X^{v,e}(p) + t_e) ‖ / Σ w

with w = log C (C ≥ 1 is the network's confidence). ‖·‖ is the Euclidean norm (robust, not squared).
Gauge: camera 0 is the identity (not optimised) and the mean of log σ_e stays at its initial value
(σ_e = exp(s_e − mean(s) + s̄₀)); together they fix the 7 degrees of freedom of a similarity.

When the pairs carry descriptor matches with essential-RANSAC inliers (``estimate_pair_poses``), a
second term ties the poses to them, a depth-parametrised bundle adjustment: frame a's world point at a
matched pixel p, reprojected into frame b, must land on the matched pixel q (normalised image units),

    L_m = mean_k ‖ π(R_bᵀ (χ_a(p_k) − t_b)) − π(K_b⁻¹ [q_k, 1]) ‖,  π(X) = (X/Z, Y/Z),   L = w_p L + λ_m L_m

with D_a(p) read bilinearly from the (strided) depth grid. On real video with a network trained mostly
for matching this term is what keeps the trajectory: on 20 frames of 7-Scenes redkitchen (frames 0-99,
recon-small checkpoint, 128x96, capture K) ATE went 0.169 m (pointmaps only) -> 0.125 m (λ_m = 10) ->
0.112 m (λ_m = 100) -> 0.108 m (matches only), rotation RPE 7.4° -> 2.9° (the spanning-tree
initialisation alone: 0.129 m, 1.5°: joint optimisation spreads the error of consecutive pairs over the
whole path). Exact pointmaps (no matches) are unaffected.

Edges whose relative pose contradicts the spanning-tree initialisation (rotation off by more than
``outlier_deg``) are outliers — wrong matches or a wrong pointmap — and get zero weight in both terms.

Optimisation: Adam with a linear warm-up and a cosine learning-rate schedule. The loss is evaluated in
chunks of edges with gradient accumulation, so memory is O(chunk · H' · W') for activations plus the float16 pairwise
predictions, O(E · H · W): linear in the number of pairs, never in frames².

Initialisation (DUSt3R's ``minimum_spanning_tree``, with relative poses): a maximum spanning tree of
the frames over edge strength mean(C^a) · mean(C^b) (times the essential-RANSAC inliers + 1 when
there are matches, ``PairwisePredictions.edge_score``); from frame 0 (identity, depth = X^{0,0}_z), each
tree edge to a new frame m from a known frame k takes its pair scale σ from the overlapping pointmap,
σ = median(D_k / Z_k^{pair}) (frame k's depth against its depth in the pair), then chains the edge's
relative pose T_b_a with its translation scaled by σ, and sets D_m = σ Z_m^{pair}. Every edge's
similarity is then the weighted Procrustes fit of its pointmaps onto the initial world points, and the
depth maps are re-estimated from all edges (``fuse_depth``).

Output depth at full resolution: with poses and pair similarities fixed, the depth d along a pixel's
ray c + d r (r = R K⁻¹[p, 1], so d is z-depth) minimising Σ_e w ‖c + d r − y_e‖² over the edges'
predictions y_e = σ_e (R_e X + t_e) is closed form: d = Σ w r·(y_e − c) / Σ w ‖r‖² (``fuse_depth``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import roma
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

from vibe3r import geometry
from vibe3r.errors import InputError
from vibe3r.recon.inference import PairwisePredictions

Progress = Callable[[int, int, float], None]  # (iteration, total, loss)


@dataclass
class AlignConfig:
    """Knobs of ``global_align``."""

    iters: int = 300  # Adam iterations (DUSt3R: 300)
    lr: float = 0.01  # peak learning rate (log-depth, quaternions, translations, log-scales)
    lr_min_ratio: float = 0.01  # cosine schedule ends at lr * lr_min_ratio
    warmup: float = 0.1  # fraction of iterations with a linear learning-rate warm-up (Adam's first steps are lr-sized)
    focal_lr_scale: float = 0.3  # the focal moves slower (DUSt3R's focal_break)
    depth_stride: int = 0  # r: optimise depth on pixels r k + r//2; 0 = auto (<= max_points per iteration)
    max_points: int = 3_000_000  # auto stride: E * 2 * H' * W' below this
    shared_focal: bool = True  # one focal for all frames (one camera) when optimising intrinsics
    optimize_focal: bool = True  # ignored (fixed) when K is known
    chunk: int = 64  # edges per gradient-accumulation chunk
    pts_weight: float = 1.0  # weight of DUSt3R's pointmap term
    match_weight: float = 100.0  # λ_m of the match reprojection term (0 = DUSt3R's objective only)
    max_matches: int = 128  # essential-RANSAC inliers kept per edge for that term (evenly subsampled)
    outlier_deg: float = 5.0  # edges whose relative rotation disagrees with the initialisation by more are dropped (0 = keep all)
    fuse_min_weight: float = 1e-3  # output depth: added to every pixel's log C, so pixels at minimum confidence still get a depth
    eps: float = 1e-12


@dataclass
class Alignment:
    """A globally aligned reconstruction: camera-to-world poses, intrinsics and depth of every frame."""

    c2w: np.ndarray  # N,4,4 float64, frame 0 = identity
    K: np.ndarray  # N,3,3 float64
    depth: np.ndarray  # N,H,W float32 z-depth (world units), 0 = no prediction
    conf: np.ndarray  # N,H,W float32: max confidence of the frame's pixels over its edges
    pair_scale: np.ndarray  # E σ_e
    pair_pose: np.ndarray  # E,4,4 (R_e, t_e)
    losses: list[float] = field(default_factory=list)
    init_loss: float = float("nan")
    edges_kept: int = 0  # edges that survived the rotation-consistency check
    stride: int = 1
    seconds: dict[str, float] = field(default_factory=dict)

    def points(self) -> np.ndarray:
        """World points (N,H,W,3) of every pixel (zeros where depth is 0)."""
        X = geometry.unproject_depth(torch.from_numpy(self.depth).double(), torch.from_numpy(self.K))  # N,H,W,3
        return geometry.transform_points(torch.from_numpy(self.c2w), X).numpy()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _log_weights(conf: torch.Tensor) -> torch.Tensor:
    """w = log C (C >= 1 by construction; clamp guards against half-precision rounding)."""
    return conf.float().clamp_min(1.0).log()


def _grid(H: int, W: int, r: int) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """Pixel coordinates (h,w) u, v of the strided grid and the slice selecting it."""
    o = r // 2
    sl = slice(o, None, r)
    uv = geometry.pixel_grid(H, W)[sl, sl]  # h,w,2
    return uv[..., 0], uv[..., 1], sl


def _rays(u: torch.Tensor, v: torch.Tensor, f: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """z-normalised camera rays (C,h,w,3) of pixels (h,w) for per-item focal/principal point (C,)."""
    x = (u[None] - cx[:, None, None]) / f[:, None, None]
    y = (v[None] - cy[:, None, None]) / f[:, None, None]
    return torch.stack([x, y, torch.ones_like(x)], -1)


def _rotate(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """R X for maps X (C,h,w,3) and rotations R (C,3,3), as one bmm (broadcast matmuls of 3x3 blocks
    are an order of magnitude slower on CPU)."""
    C, h, w, _ = X.shape
    return torch.bmm(X.reshape(C, h * w, 3), R.transpose(-1, -2)).reshape(C, h, w, 3)


def auto_stride(n_edges: int, hw: tuple[int, int], max_points: int) -> int:
    """Smallest stride r with n_edges * 2 * ceil(H/r) * ceil(W/r) <= max_points."""
    H, W = hw
    r = 1
    while n_edges * 2 * math.ceil(H / r) * math.ceil(W / r) > max_points and r < min(H, W):
        r += 1
    return r


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------


def maximum_spanning_tree(pred: PairwisePredictions, n_frames: int) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], int]]:
    """BFS order (N,) and parents (N,) of the maximum spanning tree over edge strength, rooted at frame 0,
    and the strongest directed edge of each frame pair. Raises InputError if the graph is disconnected."""
    score = pred.edge_score()
    if pred.pose_method:
        score = score * np.where(np.asarray(pred.pose_method) == "none", 1e-6, 1.0)
    best: dict[tuple[int, int], int] = {}
    for e, (a, b) in enumerate(pred.edges):
        key = (int(min(a, b)), int(max(a, b)))
        if key not in best or score[e] > score[best[key]]:
            best[key] = e
    keys = list(best)
    s = np.array([score[best[k]] for k in keys])
    cost = (s.max() + 1.0) - s  # > 0: the minimum spanning tree of cost is the maximum one of score
    M = csr_matrix((cost, ([k[0] for k in keys], [k[1] for k in keys])), shape=(n_frames, n_frames))
    tree = minimum_spanning_tree(M)
    order, parents = breadth_first_order(tree, 0, directed=False)
    if len(order) < n_frames:
        missing = sorted(set(range(n_frames)) - set(order.tolist()))
        raise InputError(f"the scene graph does not connect all frames (e.g. frame {missing[0]} is unreachable)")
    return order, parents, best


def mst_init(pred: PairwisePredictions, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial camera-to-world poses (N,4,4) and depth maps (N,H,W) by chaining the spanning tree (see
    the module docstring). Frame 0 is the identity; the world scale is that of frame 0's pair."""
    if pred.rel_pose is None:
        raise ValueError("pairwise predictions need relative poses (inference.estimate_pair_poses) before alignment")
    H, W = pred.hw
    order, parents, best = maximum_spanning_tree(pred, n_frames)
    c2w = np.zeros((n_frames, 4, 4))
    depth = np.zeros((n_frames, H, W))
    c2w[0] = np.eye(4)
    own = np.flatnonzero(pred.edges[:, 0] == 0)
    if len(own):  # frame 0 as view 1 of its most confident edge: its depth in its own frame
        e0 = own[np.argmax(pred.conf_a[torch.from_numpy(own)].float().mean((1, 2)).numpy())]
        depth[0] = pred.pts_a[e0, ..., 2].double().clamp_min(0).numpy()
    else:  # only as view 2: bring X^{0,e} into camera 0
        e0 = int(np.flatnonzero(pred.edges[:, 1] == 0)[0])
        z = geometry.transform_points(torch.from_numpy(pred.rel_pose[e0]), pred.pts_b[e0].double())[..., 2]
        depth[0] = z.clamp_min(0).numpy()
    for m in order[1:]:
        k = int(parents[m])
        e = best[(min(k, int(m)), max(k, int(m)))]
        a, b = (int(v) for v in pred.edges[e])
        T = pred.rel_pose[e]  # T_b_a, pair units
        za = pred.pts_a[e, ..., 2].double().numpy()
        zb = geometry.transform_points(torch.from_numpy(T), pred.pts_b[e].double())[..., 2].numpy()  # b's pixels in camera b
        z_k, z_m = (za, zb) if k == a else (zb, za)
        ok = (z_k > 1e-6) & (depth[k] > 0)
        sigma = float(np.median(depth[k][ok] / z_k[ok])) if ok.any() else 1.0
        Ts = T.copy()
        Ts[:3, 3] *= sigma
        if k == a:
            c2w[b] = c2w[a] @ geometry.inv_pose(torch.from_numpy(Ts)).numpy()
        else:
            c2w[a] = c2w[b] @ Ts
        depth[m] = np.clip(sigma * z_m, 0, None)
    return c2w, depth


def _world_points(c2w: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """χ (C,h,w,3) of frames with c2w (C,4,4), depth (C,h,w), K (C,3,3) on pixel grid u, v (h,w)."""
    rays = _rays(u, v, K[:, 0, 0], K[:, 0, 2], K[:, 1, 2])
    rays = rays * torch.stack([torch.ones_like(K[:, 0, 0]), K[:, 0, 0] / K[:, 1, 1], torch.ones_like(K[:, 0, 0])], -1)[:, None, None]
    X = rays * depth[..., None]
    return _rotate(X, c2w[:, :3, :3]) + c2w[:, None, None, :3, 3]


def init_pair_similarities(pred: PairwisePredictions, c2w: np.ndarray, depth: np.ndarray, K: np.ndarray,
                           stride: int = 4, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """σ_e (E,) and (R_e, t_e) as 4x4 (E,4,4): weighted Procrustes (roma, with scale) of each edge's two
    pointmaps onto the world points of its frames (weights log C, pixels with depth only)."""
    H, W = pred.hw
    u, v, sl = _grid(H, W, stride)
    c2w_t, K_t = torch.from_numpy(c2w).double(), torch.from_numpy(K).double()
    D = torch.from_numpy(depth).double()[:, sl, sl]
    E = pred.n_edges
    sig = np.ones(E)
    P = np.tile(np.eye(4), (E, 1, 1))
    for s in range(0, E, chunk):
        idx = slice(s, min(s + chunk, E))
        a = torch.from_numpy(pred.edges[idx, 0])
        b = torch.from_numpy(pred.edges[idx, 1])
        src = torch.cat([pred.pts_a[idx][:, sl, sl], pred.pts_b[idx][:, sl, sl]], 1).double().flatten(1, 2)  # C,M,3
        dst = torch.cat([_world_points(c2w_t[a], D[a], K_t[a], u.double(), v.double()),
                         _world_points(c2w_t[b], D[b], K_t[b], u.double(), v.double())], 1).flatten(1, 2)
        w = torch.cat([_log_weights(pred.conf_a[idx][:, sl, sl]) * (D[a] > 0),
                       _log_weights(pred.conf_b[idx][:, sl, sl]) * (D[b] > 0)], 1).double().flatten(1)  # C,M
        w = w + 1e-9
        w = w / w.sum(1, keepdim=True)
        R, t, sc = roma.rigid_points_registration(src, dst, weights=w, compute_scaling=True)
        bad = ~(torch.isfinite(sc) & torch.isfinite(R).flatten(1).all(1) & torch.isfinite(t).all(1))  # degenerate (e.g. empty) pointmaps
        R[bad], t[bad], sc[bad] = torch.eye(3, dtype=R.dtype), 0.0, 1.0
        sc = sc.clamp_min(1e-9)
        sig[idx] = sc.numpy()
        P[idx, :3, :3] = R.numpy()
        P[idx, :3, 3] = (t / sc[:, None]).numpy()  # dst = σ (R src + t_e)  =>  t_e = t / σ
    return sig, P


def fuse_depth(pred: PairwisePredictions, c2w: np.ndarray | torch.Tensor, K: np.ndarray | torch.Tensor,
               sigma: np.ndarray | torch.Tensor, P: np.ndarray | torch.Tensor, n_frames: int, stride: int = 1,
               chunk: int = 128, keep: np.ndarray | None = None, min_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form per-pixel depth (N,h,w) from the edges ``keep`` (E,) bool (default all) with fixed
    poses and pair similarities (see the module docstring), and the max confidence (N,h,w) of each
    pixel over those edges. Weights are log C + ``min_weight``: with 0, a pixel whose confidence is
    1 on every edge gets no depth (a checkpoint trained mostly for matching has C = 1 + ~1e-4, which
    float16 storage rounds to exactly 1 almost everywhere)."""
    H, W = pred.hw
    u, v, sl = _grid(H, W, stride)
    u, v = u.double(), v.double()
    c2w, K = torch.as_tensor(c2w).double(), torch.as_tensor(K).double()
    sigma, P = torch.as_tensor(sigma).double(), torch.as_tensor(P).double()
    h, w = u.shape
    num = torch.zeros(n_frames, h, w, dtype=torch.float64)
    den = torch.zeros_like(num)
    cmax = torch.ones(n_frames, h, w, dtype=torch.float64)
    rays_all = _world_points(c2w, torch.ones(n_frames, h, w, dtype=torch.float64), K, u, v) - c2w[:, None, None, :3, 3]  # N,h,w,3
    E = pred.n_edges
    for s in range(0, E, chunk):
        idx = slice(s, min(s + chunk, E))
        for role, pts, conf in ((0, pred.pts_a, pred.conf_a), (1, pred.pts_b, pred.conf_b)):
            fr = torch.from_numpy(pred.edges[idx, role])
            X = pts[idx][:, sl, sl].double()  # C,h,w,3
            y = sigma[idx, None, None, None] * (_rotate(X, P[idx, :3, :3]) + P[idx, None, None, :3, 3])
            r = rays_all[fr]
            wgt = _log_weights(conf[idx][:, sl, sl]).double() + min_weight
            if keep is not None:
                wgt = wgt * torch.from_numpy(keep[idx])[:, None, None]
            num.index_add_(0, fr, wgt * (r * (y - c2w[fr, None, None, :3, 3])).sum(-1))
            den.index_add_(0, fr, wgt * (r * r).sum(-1))
            cm = conf[idx][:, sl, sl].double()
            for k in range(len(fr)):  # max over edges (index_reduce would need float32 copies)
                if keep is not None and not keep[s + k]:
                    continue
                cmax[fr[k]] = torch.maximum(cmax[fr[k]], cm[k])
    d = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)).clamp_min(0)
    return d.float().numpy(), cmax.float().numpy()


# --------------------------------------------------------------------------------------------
# The optimisation
# --------------------------------------------------------------------------------------------


@dataclass
class _Matches:
    """Flattened inlier matches of all edges: frame a pixel p ↔ frame b pixel q."""

    a: torch.Tensor  # M frame of p
    b: torch.Tensor  # M frame of q
    p: torch.Tensor  # M,2 pixels in a
    q: torch.Tensor  # M,2 pixels in b


def edge_disagreement_deg(pred: PairwisePredictions, c2w: np.ndarray) -> np.ndarray:
    """Angle (E,) between each edge's relative rotation and the one implied by the poses c2w (N,4,4)."""
    R = torch.from_numpy(c2w[:, :3, :3])
    a, b = torch.from_numpy(pred.edges[:, 0]), torch.from_numpy(pred.edges[:, 1])
    R_ba = R[b].transpose(-1, -2) @ R[a]  # camera a -> camera b
    return geometry.rotation_error_deg(torch.from_numpy(pred.rel_pose[:, :3, :3]), R_ba).numpy()


def collect_matches(pred: PairwisePredictions, max_per_edge: int, keep: np.ndarray | None = None) -> _Matches | None:
    """Up to ``max_per_edge`` RANSAC-inlier matches per edge (evenly spaced in the inlier list) of the
    edges ``keep`` (E,) bool, or None when there are none."""
    if not pred.matches or not pred.inlier_masks:
        return None
    A, B, P, Q = [], [], [], []
    for e, ((kp_a, kp_b), mask) in enumerate(zip(pred.matches, pred.inlier_masks)):
        idx = np.flatnonzero(mask)
        if len(idx) == 0 or (keep is not None and not keep[e]):
            continue
        if len(idx) > max_per_edge:
            idx = idx[np.round(np.linspace(0, len(idx) - 1, max_per_edge)).astype(int)]
        A.append(np.full(len(idx), pred.edges[e, 0]))
        B.append(np.full(len(idx), pred.edges[e, 1]))
        P.append(kp_a[idx])
        Q.append(kp_b[idx])
    if not A:
        return None
    cat = lambda xs, dt: torch.from_numpy(np.concatenate(xs)).to(dt)  # noqa: E731
    return _Matches(cat(A, torch.long), cat(B, torch.long), cat(P, torch.float32), cat(Q, torch.float32))


def _bilinear(maps: torch.Tensor, frame: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (M,) of maps (N,h,w) at grid coordinates (x, y) (M,) of frames (M,), clamped to the grid."""
    _, h, w = maps.shape
    x = x.clamp(0, w - 1)
    y = y.clamp(0, h - 1)
    x0 = x.floor().long().clamp(max=w - 2) if w > 1 else x.floor().long()
    y0 = y.floor().long().clamp(max=h - 2) if h > 1 else y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    fx, fy = x - x0, y - y0
    return ((1 - fx) * (1 - fy) * maps[frame, y0, x0] + fx * (1 - fy) * maps[frame, y0, x1]
            + (1 - fx) * fy * maps[frame, y1, x0] + fx * fy * maps[frame, y1, x1])


def _match_loss(prm: "_Params", R: torch.Tensor, t: torch.Tensor, m: _Matches, stride: int, eps: float) -> torch.Tensor:
    """Mean ‖π_b(χ_a(p)) − q‖ / f_b over the matches: frame a's world point at p (depth sampled
    bilinearly from its log-depth grid) reprojected into frame b, in normalised image units."""
    o = stride // 2
    d = _bilinear(prm.log_depth, m.a, (m.p[:, 0] - o) / stride, (m.p[:, 1] - o) / stride).exp()  # M
    f = prm.focal()
    fa, fb = f[m.a], f[m.b]
    ray = torch.stack([(m.p[:, 0] - prm.pp[m.a, 0]) / fa, (m.p[:, 1] - prm.pp[m.a, 1]) / (fa * prm.aspect[m.a]),
                       torch.ones_like(fa)], -1)  # M,3
    chi = (R[m.a] @ (ray * d[:, None])[..., None])[..., 0] + t[m.a]  # M,3 world
    Xb = (R[m.b].transpose(-1, -2) @ (chi - t[m.b])[..., None])[..., 0]  # M,3 camera b
    z = Xb[:, 2].clamp_min(1e-3 * d.detach().median())
    res = torch.stack([Xb[:, 0] / z - (m.q[:, 0] - prm.pp[m.b, 0]) / fb,
                       Xb[:, 1] / z - (m.q[:, 1] - prm.pp[m.b, 1]) / (fb * prm.aspect[m.b])], -1)
    return ((res**2).sum(-1) + eps).sqrt().mean()


class _Params(torch.nn.Module):
    """The unknowns of the objective (see the module docstring)."""

    def __init__(self, c2w: np.ndarray, log_depth: np.ndarray, K: np.ndarray, sigma: np.ndarray, P: np.ndarray,
                 optimize_focal: bool, shared_focal: bool) -> None:
        super().__init__()
        c2w_t = torch.from_numpy(c2w).float()
        self.q = torch.nn.Parameter(roma.rotmat_to_unitquat(c2w_t[1:, :3, :3]))  # N-1,4 (frame 0 fixed)
        self.t = torch.nn.Parameter(c2w_t[1:, :3, 3].clone())  # N-1,3
        self.log_depth = torch.nn.Parameter(torch.from_numpy(log_depth).float())  # N,h,w
        K_t = torch.from_numpy(K).float()
        self.register_buffer("pp", K_t[:, :2, 2].clone())  # N,2
        self.register_buffer("aspect", K_t[:, 1, 1] / K_t[:, 0, 0])  # fy / fx
        f = K_t[:, 0, 0].log()
        if optimize_focal:
            self.log_f = torch.nn.Parameter(f.mean()[None] if shared_focal else f.clone())  # 1 or N
        else:
            self.register_buffer("log_f", f.clone())
        P_t = torch.from_numpy(P).float()
        self.qe = torch.nn.Parameter(roma.rotmat_to_unitquat(P_t[:, :3, :3]))  # E,4
        self.te = torch.nn.Parameter(P_t[:, :3, 3].clone())  # E,3
        s = torch.from_numpy(np.log(sigma)).float()
        self.log_s = torch.nn.Parameter(s.clone())  # E
        self.register_buffer("s_mean0", s.mean())
        self.n = len(c2w)

    def frame_poses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """R (N,3,3), t (N,3) with frame 0 the identity."""
        R = roma.unitquat_to_rotmat(torch.nn.functional.normalize(self.q, dim=-1))
        R = torch.cat([torch.eye(3)[None], R])
        t = torch.cat([torch.zeros(1, 3), self.t])
        return R, t

    def focal(self) -> torch.Tensor:
        """fx (N,)."""
        return self.log_f.exp().expand(self.n)

    def sigma(self) -> torch.Tensor:
        """σ_e (E,) with the gauge mean(log σ) = its initial value."""
        return (self.log_s - self.log_s.mean() + self.s_mean0).exp()

    def edge_poses(self, idx: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return roma.unitquat_to_rotmat(torch.nn.functional.normalize(self.qe[idx], dim=-1)), self.te[idx]


def _chunk_loss(prm: _Params, R: torch.Tensor, t: torch.Tensor, sig: torch.Tensor, idx: slice, edges: torch.Tensor,
                pts: tuple[torch.Tensor, torch.Tensor], wts: tuple[torch.Tensor, torch.Tensor], u: torch.Tensor,
                v: torch.Tensor, eps: float, rays_all: torch.Tensor | None) -> torch.Tensor:
    """Σ w ‖χ_v − σ_e (R_e X + t_e)‖ over the edges ``idx`` and both of their views (unnormalised).

    World points χ are computed once per distinct frame of the chunk; ``rays_all`` (N,h,w,3) are the
    fixed camera rays when the intrinsics are not optimised (None: computed from the current focal).
    """
    Re, te = prm.edge_poses(idx)  # C,3,3 / C,3
    fa, fb = edges[idx, 0], edges[idx, 1]
    C = len(fa)
    uniq, inv = torch.unique(torch.cat([fa, fb]), return_inverse=True)
    if rays_all is None:
        f = prm.focal()[uniq]
        rays = _rays(u, v, f, prm.pp[uniq, 0], prm.pp[uniq, 1])  # U,h,w,3 (x, y from fx)
        rays = rays * torch.stack([torch.ones_like(f), 1 / prm.aspect[uniq], torch.ones_like(f)], -1)[:, None, None]  # y uses fy
    else:
        rays = rays_all[uniq]
    chi = _rotate(rays * prm.log_depth[uniq].exp()[..., None], R[uniq]) + t[uniq, None, None]  # U,h,w,3 world
    total = torch.zeros(())
    for role, fr_inv in ((0, inv[:C]), (1, inv[C:])):
        y = sig[idx, None, None, None] * (_rotate(pts[role][idx], Re) + te[:, None, None])  # C,h,w,3 world
        d = ((chi[fr_inv] - y) ** 2).sum(-1)
        total = total + (wts[role][idx] * (d + eps).sqrt()).sum()
    return total


def global_align(pred: PairwisePredictions, n_frames: int, K: np.ndarray, known_K: bool = True,
                 cfg: AlignConfig | None = None, init: tuple[np.ndarray, np.ndarray] | None = None,
                 progress: Progress | None = None) -> Alignment:
    """Align the pairwise predictions into one scene (module docstring): MST init (or ``init`` =
    (c2w (N,4,4), depth (N,H,W))), then Adam. ``K`` (N,3,3) is the known (``known_K``) or initial
    intrinsics. Returns an ``Alignment`` with full-resolution depth."""
    cfg = cfg or AlignConfig()
    if n_frames < 2:
        raise InputError(f"alignment needs at least 2 frames, got {n_frames}")
    missing = set(range(n_frames)) - set(pred.edges.reshape(-1).tolist())
    if missing:
        raise InputError(f"frame {min(missing)} is in no pair of the scene graph")
    H, W = pred.hw
    t0 = time.perf_counter()
    c2w0, depth0 = mst_init(pred, n_frames) if init is None else init
    keep = np.ones(pred.n_edges, bool)
    if cfg.outlier_deg > 0 and pred.rel_pose is not None:  # edges the spanning tree contradicts
        keep = edge_disagreement_deg(pred, c2w0) <= cfg.outlier_deg
        covered = set(pred.edges[keep].reshape(-1).tolist())
        if keep.sum() < n_frames - 1 or len(covered) < n_frames:  # too few left to hold every frame: keep all
            keep[:] = True
    r = cfg.depth_stride or auto_stride(pred.n_edges, (H, W), cfg.max_points)
    sig0, P0 = init_pair_similarities(pred, c2w0, depth0, K)
    d_init, _ = fuse_depth(pred, c2w0, K, sig0, P0, n_frames, stride=r, keep=keep)
    fallback = depth0[:, r // 2 :: r, r // 2 :: r]
    d_init = np.where(d_init > 0, d_init, fallback)
    pos = d_init[d_init > 0]
    floor = float(np.median(pos)) * 1e-2 if len(pos) else 1.0
    log_d = np.log(np.maximum(d_init, floor))
    t_init = time.perf_counter() - t0

    prm = _Params(c2w0, log_d, K, sig0, P0, cfg.optimize_focal and not known_K, cfg.shared_focal)
    u, v, sl = _grid(H, W, r)
    pts = (pred.pts_a[:, sl, sl].float(), pred.pts_b[:, sl, sl].float())  # E,h,w,3 (<= max_points x 12 bytes)
    wts = (_log_weights(pred.conf_a[:, sl, sl]), _log_weights(pred.conf_b[:, sl, sl]))  # E,h,w float32
    wts = (wts[0] * torch.from_numpy(keep)[:, None, None], wts[1] * torch.from_numpy(keep)[:, None, None])
    w_total = float(wts[0].sum() + wts[1].sum())
    if w_total <= 0:
        raise InputError("all pairwise confidences are at their minimum: nothing to align")
    wts = (wts[0] / w_total, wts[1] / w_total)
    edges = torch.from_numpy(pred.edges)
    matches = collect_matches(pred, cfg.max_matches, keep) if cfg.match_weight > 0 else None
    groups = [{"params": [prm.q, prm.t, prm.log_depth, prm.qe, prm.te, prm.log_s], "lr_scale": 1.0}]
    if isinstance(prm.log_f, torch.nn.Parameter):
        groups.append({"params": [prm.log_f], "lr_scale": cfg.focal_lr_scale})
    opt = torch.optim.Adam([{**g, "lr": cfg.lr * g["lr_scale"]} for g in groups], betas=(0.9, 0.9))
    rays_all = None
    if not isinstance(prm.log_f, torch.nn.Parameter):  # fixed intrinsics: rays once
        rays_all = _world_points(torch.eye(4).expand(n_frames, 4, 4), torch.ones(n_frames, *u.shape), torch.from_numpy(K).float(), u, v)
    E = pred.n_edges
    losses: list[float] = []
    init_loss = float("nan")
    for it in range(cfg.iters + 1):
        lr = cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * it / max(cfg.iters, 1))))
        lr *= min(1.0, (it + 1) / max(cfg.warmup * cfg.iters, 1))
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for s in range(0, E if cfg.pts_weight > 0 else 0, cfg.chunk):
            R, t = prm.frame_poses()
            sig = prm.sigma()
            loss = cfg.pts_weight * _chunk_loss(prm, R, t, sig, slice(s, min(s + cfg.chunk, E)), edges, pts, wts, u, v, cfg.eps, rays_all)
            if it < cfg.iters:
                loss.backward()
            total += float(loss.detach())
        if matches is not None:
            R, t = prm.frame_poses()
            loss = cfg.match_weight * _match_loss(prm, R, t, matches, r, cfg.eps)
            if it < cfg.iters:
                loss.backward()
            total += float(loss.detach())
        if it == 0:
            init_loss = total
        if it == cfg.iters:  # the last pass only measures the final loss
            losses.append(total)
            break
        opt.step()
        losses.append(total)
        if progress is not None:
            progress(it + 1, cfg.iters, total)
    t_opt = time.perf_counter() - t0 - t_init

    with torch.no_grad():
        R, t = prm.frame_poses()
        c2w = np.tile(np.eye(4), (n_frames, 1, 1))
        c2w[:, :3, :3], c2w[:, :3, 3] = R.double().numpy(), t.double().numpy()
        f = prm.focal().double().numpy()
        K_out = np.array(K, dtype=np.float64, copy=True)
        K_out[:, 0, 0] = f
        K_out[:, 1, 1] = f * prm.aspect.double().numpy()
        Re, te = prm.edge_poses(slice(None))
        P = np.tile(np.eye(4), (E, 1, 1))
        P[:, :3, :3], P[:, :3, 3] = Re.double().numpy(), te.double().numpy()
        sig = prm.sigma().double().numpy()
    depth, conf = fuse_depth(pred, c2w, K_out, sig, P, n_frames, stride=1, keep=keep, min_weight=cfg.fuse_min_weight)
    t_fuse = time.perf_counter() - t0 - t_init - t_opt
    return Alignment(c2w=c2w, K=K_out, depth=depth, conf=conf, pair_scale=sig, pair_pose=P, losses=losses,
                     init_loss=init_loss, edges_kept=int(keep.sum()), stride=r, seconds={"init": t_init, "optimize": t_opt, "fuse_depth": t_fuse})
