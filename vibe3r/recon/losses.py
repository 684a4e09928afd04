"""Training losses: small composable modules, each ``forward(pred, batch) -> (loss, details)``.

``pred`` is the model output (``pts11``, ``conf1``, ``pts21``, ``conf2``, ``desc1``, ``desc2``) and
``batch`` a collated ``PairShardDataset`` batch (``pts11``, ``pts21``, ``valid1``, ``valid2``,
``depth1``, ``depth2``, ``K1``, ``K2``, ``T21``). The DUSt3R objective is written as in its paper:

    ConfLoss(Regr3D(L21, norm='avg_dis'), alpha=0.2)
      = Σ_v Σ_{i ∈ valid_v} C_i^v · ‖X̂_i^v / ẑ − X_i^v / z‖ − α log C_i^v   (DUSt3R eqs. 2–4)

with ẑ, z the mean distance of the valid points of both views to the origin of view 1, and
MASt3R's matching term (eq. 10, InfoNCE over ground-truth correspondences)

    L_match = − Σ_{(i,j) ∈ M} [ log softmax_j( s_τ(D_i^1, D_·^2) ) + log softmax_i( s_τ(D_·^1, D_j^2) ) ] / 2
    s_τ(a, b) = aᵀb / τ,

where the candidates of a query are the true partners of all sampled correspondences plus
negatives drawn from every descriptor position of the other view (MASt3R's dense negatives,
optionally sub-sampled), with positions within one descriptor cell of the true partner masked out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from vibe3r import geometry
from vibe3r.config import ReconLossConfig

Details = dict[str, float]


def L21(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance along the last axis (DUSt3R's ``L21``): (..., 3), (..., 3) -> (...)."""
    return (a - b).norm(dim=-1)


def avg_dis_scale(pts1: torch.Tensor, pts2: torch.Tensor, valid1: torch.Tensor, valid2: torch.Tensor) -> torch.Tensor:
    """DUSt3R's ``avg_dis`` normaliser per pair: mean ‖X‖ over the valid points of both views -> (B,)."""
    d = (pts1.norm(dim=-1) * valid1).flatten(1).sum(1) + (pts2.norm(dim=-1) * valid2).flatten(1).sum(1)
    n = valid1.flatten(1).sum(1) + valid2.flatten(1).sum(1)
    return (d / n.clamp_min(1)).clamp_min(1e-8)


class Regr3D(nn.Module):
    """Scale-normalised pointmap regression of X^{1,1} and X^{2,1} (both in view 1's frame).

    ``per_pixel`` gives the distances (B,H,W) per view for ``ConfLoss``; ``forward`` their mean
    over valid pixels. With ``norm_mode='avg_dis'`` prediction and GT are each divided by their own
    mean distance, so the loss is invariant to the prediction's global scale.
    """

    def __init__(self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = L21, norm_mode: str = "avg_dis") -> None:
        super().__init__()
        if norm_mode not in ("avg_dis", "none"):
            raise ValueError(f"unknown norm_mode {norm_mode!r}; valid: avg_dis, none")
        self.criterion = criterion
        self.norm_mode = norm_mode

    def per_pixel(self, pred: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        g1, g2 = batch["pts11"].float(), batch["pts21"].float()  # B,H,W,3
        v1, v2 = batch["valid1"].bool(), batch["valid2"].bool()  # B,H,W
        p1, p2 = pred["pts11"].float(), pred["pts21"].float()
        if self.norm_mode == "avg_dis":
            sg = avg_dis_scale(g1, g2, v1, v2)[:, None, None, None]
            sp = avg_dis_scale(p1, p2, v1, v2)[:, None, None, None]
            g1, g2, p1, p2 = g1 / sg, g2 / sg, p1 / sp, p2 / sp
        return self.criterion(p1, g1), self.criterion(p2, g2), v1, v2

    def forward(self, pred: dict, batch: dict) -> tuple[torch.Tensor, Details]:
        l1, l2, v1, v2 = self.per_pixel(pred, batch)
        a, b = l1[v1].mean() if v1.any() else l1.sum() * 0, l2[v2].mean() if v2.any() else l2.sum() * 0
        loss = a + b
        return loss, {"regr_1": float(a.detach()), "regr_2": float(b.detach())}


class ConfLoss(nn.Module):
    """Confidence-weighted pixel loss: mean_i (C_i l_i − α log C_i) per view, summed over views."""

    def __init__(self, pixel_loss: Regr3D, alpha: float = 0.2) -> None:
        super().__init__()
        self.pixel_loss = pixel_loss
        self.alpha = alpha

    def forward(self, pred: dict, batch: dict) -> tuple[torch.Tensor, Details]:
        l1, l2, v1, v2 = self.pixel_loss.per_pixel(pred, batch)
        total = l1.sum() * 0
        details: Details = {}
        for name, l, v, c in (("1", l1, v1, pred["conf1"]), ("2", l2, v2, pred["conf2"])):
            if not v.any():
                continue
            c = c.float()[v]
            term = (c * l[v] - self.alpha * torch.log(c)).mean()
            total = total + term
            details[f"conf_{name}"] = float(term.detach())
            details[f"regr_{name}"] = float(l[v].mean().detach())
        return total, details


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def gt_correspondences(batch: dict, b: int, tol: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """All ground-truth correspondences of pair ``b``: view-1 pixels p (M, 2) with a valid depth
    whose 3D point, moved to camera 2 by T21 and projected with K2, lands inside image 2 in front
    of the camera with |z − depth2(nearest pixel)| < tol · depth2 (visible in both), and their
    sub-pixel partners q (M, 2) in view 2. Pixel coordinates (u, v), centres at integers."""
    X1 = batch["pts11"][b].double()  # H,W,3 camera-1 points
    valid = batch["valid1"][b].bool()
    H, W = valid.shape
    X2 = geometry.transform_points(batch["T21"][b].double(), X1)  # H,W,3 in camera 2
    uv, z = geometry.project(X2, batch["K2"][b].double())  # H,W,2 ; H,W
    d2 = batch["depth2"][b].double()
    Hb, Wb = d2.shape
    ui, vi = uv[..., 0].round().long(), uv[..., 1].round().long()
    inside = valid & (z > 1e-6) & (ui >= 0) & (ui < Wb) & (vi >= 0) & (vi < Hb)
    # keep q strictly inside the image so bilinear sampling stays in range
    inside &= (uv[..., 0] >= 0) & (uv[..., 0] <= Wb - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= Hb - 1)
    dz = torch.zeros_like(z)
    dz[inside] = d2[vi[inside], ui[inside]]
    vis = inside & (dz > 0) & ((z - dz).abs() < tol * dz)
    p = geometry.pixel_grid(H, W, torch.float64).to(vis.device)[vis]  # M,2
    q = uv[vis]  # M,2
    return p.float(), q.float()


def sample_desc(desc: torch.Tensor, uv: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample a descriptor map (h, w, D) at full-resolution pixel coords uv (N, 2) -> (N, D),
    re-normalised. Works for any descriptor stride (the map covers the same field of view)."""
    H, W = image_hw
    grid = torch.stack([(uv[:, 0] + 0.5) / W * 2 - 1, (uv[:, 1] + 0.5) / H * 2 - 1], -1)  # N,2 in [-1,1]
    out = F.grid_sample(desc.permute(2, 0, 1)[None], grid[None, None].to(desc.dtype), mode="bilinear",
                        padding_mode="border", align_corners=False)  # 1,D,1,N
    return F.normalize(out[0, :, 0].T, dim=-1)


class InfoNCEMatching(nn.Module):
    """MASt3R's matching loss on exact correspondences (see the module docstring).

    Per pair: sample ``n_samples`` correspondences (p_i, q_i); for the direction 1→2 the query is
    D^1(p_i) and the candidates are {D^2(q_j)} ∪ {D^2 at ``n_neg`` random cells (all cells if 0)};
    candidates closer than one descriptor cell to q_i (other than the positive) are masked out.
    The 2→1 direction is symmetric. Sampling uses a seeded ``torch.Generator``.
    """

    def __init__(self, temperature: float = 0.07, n_samples: int = 512, n_neg: int = 0, tol: float = 0.05) -> None:
        super().__init__()
        self.temperature = temperature
        self.n_samples = n_samples
        self.n_neg = n_neg
        self.tol = tol

    def _direction(self, dq: torch.Tensor, dpos: torch.Tensor, pos_uv: torch.Tensor, other: torch.Tensor,
                   image_hw: tuple[int, int], gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries dq (N,D) whose partners are dpos (N,D) at pos_uv (N,2); negatives from ``other`` (h,w,D)."""
        h, w, D = other.shape
        H, W = image_hw
        sx, sy = W / w, H / h
        dev = other.device
        N = len(dq)
        # candidates closer than one cell to the true partner are not negatives. Positives part:
        dx = pos_uv[:, 0, None] - pos_uv[None, :, 0]  # N,N
        dy = pos_uv[:, 1, None] - pos_uv[None, :, 1]
        close_pos = (dx.abs() < sx) & (dy.abs() < sy)
        diag = torch.arange(N, device=dev)
        close_pos[diag, diag] = False
        # dense negatives: cell (x, y) has its centre at ((x + .5) sx - .5, (y + .5) sy - .5); test each
        # axis separately (N,w) and (N,h) and take the outer product -> (N, h*w) without float temporaries
        cx = (torch.arange(w, device=dev) + 0.5) * sx - 0.5
        cy = (torch.arange(h, device=dev) + 0.5) * sy - 0.5
        mx = (pos_uv[:, 0, None] - cx[None]).abs() < sx  # N,w
        my = (pos_uv[:, 1, None] - cy[None]).abs() < sy  # N,h
        close_neg = (my[:, :, None] & mx[:, None, :]).reshape(N, h * w)
        neg = other.reshape(-1, D)
        if self.n_neg and self.n_neg < len(neg):
            idx = torch.randperm(len(neg), generator=gen)[: self.n_neg].to(dev)
            neg, close_neg = neg[idx], close_neg[:, idx]
        logits = torch.cat([dq @ dpos.T, dq @ neg.T], 1) / self.temperature  # N,N+M
        logits = logits.masked_fill(torch.cat([close_pos, close_neg], 1), float("-inf"))
        loss = F.cross_entropy(logits, diag)
        with torch.no_grad():
            acc = (logits.argmax(1) == diag).float().mean()
        return loss, acc

    def forward(self, pred: dict, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Details]:
        d1, d2 = pred["desc1"].float(), pred["desc2"].float()  # B,h,w,D
        H, W = batch["valid1"].shape[-2:]
        losses, accs, n_used = [], [], 0
        for b in range(d1.shape[0]):
            p, q = gt_correspondences(batch, b, self.tol)
            if len(p) < 2:
                continue
            if len(p) > self.n_samples:
                idx = torch.randperm(len(p), generator=generator)[: self.n_samples].to(p.device)
                p, q = p[idx], q[idx]
            n_used += len(p)
            f1, f2 = sample_desc(d1[b], p, (H, W)), sample_desc(d2[b], q, (H, W))  # N,D
            l12, a12 = self._direction(f1, f2, q, d2[b], (H, W), generator)
            l21, a21 = self._direction(f2, f1, p, d1[b], (H, W), generator)
            losses.append((l12 + l21) / 2)
            accs.append((a12 + a21) / 2)
        if not losses:
            return d1.sum() * 0, {"match": 0.0, "match_acc": 0.0, "match_n": 0.0}
        loss = torch.stack(losses).mean()
        return loss, {"match": float(loss.detach()), "match_acc": float(torch.stack(accs).mean()), "match_n": n_used / len(losses)}


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


class Sum(nn.Module):
    """Weighted sum of named losses: Σ_k w_k L_k; details gathered with each term's own keys plus
    ``<name>`` (the unweighted term) and ``loss`` (the total)."""

    def __init__(self, terms: dict[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {k: float(w) for k, (w, _) in terms.items()}
        self.terms = nn.ModuleDict({k: m for k, (_, m) in terms.items()})

    def forward(self, pred: dict, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Details]:
        total = None
        details: Details = {}
        for name, module in self.terms.items():
            if isinstance(module, InfoNCEMatching):
                loss, d = module(pred, batch, generator=generator)
            else:
                loss, d = module(pred, batch)
            details.update(d)
            details[f"{name}_loss"] = float(loss.detach())
            term = self.weights[name] * loss
            total = term if total is None else total + term
        details["loss"] = float(total.detach())
        return total, details


def build_loss(cfg: ReconLossConfig) -> Sum:
    """The training objective of a config: w_regr · ConfLoss(Regr3D(L21, norm)) + w_match · InfoNCE."""
    terms: dict[str, tuple[float, nn.Module]] = {}
    if cfg.regr_weight > 0:
        terms["regr"] = (cfg.regr_weight, ConfLoss(Regr3D(L21, cfg.norm_mode), alpha=cfg.conf_alpha))
    if cfg.match_weight > 0:
        terms["match"] = (cfg.match_weight, InfoNCEMatching(cfg.temperature, cfg.match_samples, cfg.neg_samples, cfg.match_tol))
    if not terms:
        raise ValueError("both loss weights are 0: nothing to train")
    return Sum(terms)
