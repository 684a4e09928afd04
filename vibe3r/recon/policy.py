"""The reconstruction model as a *policy*: draw coherent alternative reconstructions of a pair, and
score the exact log-likelihood of any of them under the model (and under a frozen reference).

Which distribution, and why
---------------------------
The issue lists three workable forms: a low-rank Gaussian over the pointmaps, a mixture over
relative-pose hypotheses on top of per-view geometry, and the dual-softmax distribution of a matching
head from which match sets are drawn and turned into poses (DISK). We take the third, because

* it is the distribution the network is *trained* to be: MASt3R's InfoNCE loss is the cross-entropy
  of exactly ``p(j | i) = softmax_j(<d_i, e_j> / τ)``; nothing new has to be learned before the
  policy is meaningful, and its mode (arg-max draws, kept when mutual) is the mutual-nearest-neighbour
  matching the deterministic pipeline uses;
* on this CPU the matching head is the part that learned something that transfers to real video
  (bench/learning_curves.md); a Gaussian over pointmaps would put the preference signal on the
  pointmap heads, whose poses are useless on real pairs (PnP 14.5°);
* a sample is *coherent*: a match set goes through essential-matrix RANSAC, so one draw changes the
  relative rotation, the translation direction and the baseline of the whole pair at once — never
  independent per-pixel noise;
* the log-likelihood is exact, cheap and differentiable (a sum of log-softmax entries), which is what
  DPO (log-ratios against a reference) and GRPO (per-draw clipped ratios) need.

The sample space
----------------
For descriptor maps ``D1, D2`` (h·w cells each) and temperature τ:

* forward draws  ``j_i ~ Cat(softmax_j(<D1_i, D2_j>/τ))`` for every cell i of view 1;
* backward draws ``i_j ~ Cat(softmax_i(<D2_j, D1_i>/τ))`` for every cell j of view 2.

A sample *is* the pair of draw fields ``(fwd (h·w,), bwd (h·w,))``; its log-likelihood is
``Σ_i log p(j_i | i) + Σ_j log p(i_j | j)``, exact (the draws are independent given the pair).
The reconstruction is a deterministic function of the sample (DISK's cycle-consistent matches):
matches = {(i, j_i) : i_{j_i} = i} → sub-cell refinement → essential-matrix RANSAC (OpenCV's is
deterministic) → (R, t̂) → the baseline λ from view 1's pointmap (``inference.baseline_from_matches``)
→ ``T_21 = [R | λ t̂]`` in the units of X^{1,1}. The per-view geometry (X^{1,1}, X^{2,1}, confidences)
is the network's mode and is shared by all samples; the pair's relative camera, its scale and the
match set are what vary. The *mode* (τ → 0: arg-max draws) has the highest log-likelihood of all
samples and is the model's deterministic prediction.

``reduction="mean"`` divides the log-likelihood by the number of draws (the per-token average that
IPO-style losses use); ``"sum"`` is the exact joint log-probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from vibe3r.recon.inference import baseline_from_matches
from vibe3r.recon.matching import subpixel_refine
from vibe3r.recon.pose import RANSAC_METHODS, crop_to_multiple, estimate_pose_essential, to_tensor

REDUCTIONS = ("sum", "mean")
DRAWS = ("all", "matches")


@dataclass
class PairSample:
    """One reconstruction of a pair drawn from the policy (see the module docstring).

    ``T21`` (4,4) maps camera-1 coordinates to camera-2 coordinates, in the units of ``pts11``;
    it is None when RANSAC found no pose (the sample is then a failed reconstruction). ``kp1, kp2``
    (M,2) are the sample's matches in pixels of the (cropped) input, ``inliers`` (M,) RANSAC's mask.
    """

    seed: int
    fwd: np.ndarray  # h*w int32 forward draws (view-1 cell -> view-2 cell)
    bwd: np.ndarray  # h*w int32 backward draws (view-2 cell -> view-1 cell)
    logp: float  # log-likelihood under the policy that drew it (sum over draws)
    kp1: np.ndarray
    kp2: np.ndarray
    inliers: np.ndarray
    T21: np.ndarray | None
    is_mode: bool = False

    @property
    def n_matches(self) -> int:
        return len(self.kp1)

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum()) if len(self.inliers) else 0


@dataclass
class PairInput:
    """A pair prepared for the policy: images cropped to the patch multiple, K following the crop."""

    img1: torch.Tensor  # 1,3,H,W in [0, 1]
    img2: torch.Tensor
    K1: np.ndarray
    K2: np.ndarray

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.img1.shape[-2:])

    @classmethod
    def from_uint8(cls, img1: np.ndarray, img2: np.ndarray, K1: np.ndarray, K2: np.ndarray, patch: int) -> PairInput:
        a, K1 = crop_to_multiple(img1, np.asarray(K1, np.float64), patch)
        b, K2 = crop_to_multiple(img2, np.asarray(K2, np.float64), patch)
        return cls(to_tensor(a), to_tensor(b), K1, K2)


def match_logits(desc1: torch.Tensor, desc2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Similarity logits (h·w, h·w) between two descriptor maps (h, w, D): ``<d1_i, d2_j> / τ``."""
    D = desc1.shape[-1]
    return desc1.reshape(-1, D).float() @ desc2.reshape(-1, D).float().T / temperature


def draw_log_likelihood(logits: torch.Tensor, fwd: torch.Tensor, bwd: torch.Tensor, reduction: str = "sum",
                        draws: str = "all") -> torch.Tensor:
    """Exact log-likelihood of draw fields under the policy with these logits (differentiable).

    ``logits`` (N1, N2); ``fwd`` (N1,) or (B, N1) indices into view 2; ``bwd`` (N2,) or (B, N2)
    indices into view 1. Returns a scalar (or (B,)). ``draws="matches"`` counts only the draws that
    form the sample's cycle-consistent matches (``match_draw_mask``): the reconstruction is a function
    of those alone, the other draws are nuisance randomness that a preference cannot be credited to.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if draws not in DRAWS:
        raise ValueError(f"draws must be one of {DRAWS}, got {draws!r}")
    lp = per_draw_log_probs(logits, fwd, bwd)
    if draws == "all":
        return lp.mean(-1) if reduction == "mean" else lp.sum(-1)
    m = match_draw_mask(fwd, bwd).to(lp.dtype)
    tot = (lp * m).sum(-1)
    return tot / m.sum(-1).clamp(min=1) if reduction == "mean" else tot


def match_draw_mask(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    """Which draws, forward then backward (…, N1 + N2), are part of a cycle-consistent match:
    forward draw i when ``bwd[fwd[i]] == i``, backward draw j when ``fwd[bwd[j]] == j``."""
    fwd, bwd = fwd.long(), bwd.long()
    mf = torch.gather(bwd, -1, fwd) == torch.arange(fwd.shape[-1])
    mb = torch.gather(fwd, -1, bwd) == torch.arange(bwd.shape[-1])
    return torch.cat([mf, mb], -1)


def per_draw_log_probs(logits: torch.Tensor, fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    """Log-probability of every single draw, forward then backward: (…, N1 + N2) — GRPO's "tokens".
    ``logits`` (N1, N2) is shared by a batch of draw fields ``fwd`` (B, N1), ``bwd`` (B, N2)."""
    fwd, bwd = fwd.long(), bwd.long()
    lsf = torch.log_softmax(logits, -1)  # N1,N2: row i is p(· | i)
    lsb = torch.log_softmax(logits, -2)  # N1,N2: column j is p(· | j)
    lp_f = lsf[torch.arange(lsf.shape[0]), fwd]  # …,N1
    lp_b = lsb[bwd, torch.arange(lsb.shape[1])]  # …,N2
    return torch.cat([lp_f, lp_b], -1)


def categorical_draws(cdf: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One categorical draw per row by inverting the row's cumulative distribution ``cdf`` (N, M),
    unnormalised: O(N log M) per draw once the cdf is built (the cdf is shared by all samples of a pair)."""
    u = torch.rand(len(cdf), 1, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[1] - 1)


def row_cdfs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward log-probabilities and cumulative distributions of a pair's logits (N1, N2):
    ``(lsf (N1,N2), lsb (N2,N1), cdf_f, cdf_b)``, rows of lsf are p(· | i), rows of lsb are p(· | j)."""
    lsf = torch.log_softmax(logits, -1)
    lsb = torch.log_softmax(logits.T.contiguous(), -1)
    return lsf, lsb, lsf.exp().cumsum(-1), lsb.exp().cumsum(-1)


def cells_to_px(cells_xy: np.ndarray, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """Descriptor-cell coordinates (M, 2) (x, y; fractional after sub-cell refinement) to pixel
    coordinates of the image: cell centres, pixel centres at integers."""
    (h, w), (H, W) = grid_hw, image_hw
    c = np.asarray(cells_xy, np.float64)
    return np.stack([(c[:, 0] + 0.5) * (W / w) - 0.5, (c[:, 1] + 0.5) * (H / h) - 0.5], -1)


def cycle_matches(fwd: torch.Tensor, bwd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DISK's cycle-consistent matches of two draw fields: cells (i, j) with j = fwd[i] and bwd[j] = i."""
    i = torch.arange(len(fwd))
    keep = bwd[fwd] == i
    return i[keep], fwd[keep]


class MatchPolicy:
    """Samples and scores pair reconstructions of a ``ReconModel`` (see the module docstring).

    ``temperature`` defaults to the InfoNCE temperature the model was trained with; ``ransac`` and
    ``ransac_px`` are the pose solver's (``recon.pose``); ``subpixel`` refines view-2 match positions.
    """

    def __init__(self, model: torch.nn.Module, temperature: float = 0.07, ransac: str = "usac_accurate",
                 ransac_px: float = 1.0, subpixel: bool = True, min_inliers: int = 8) -> None:
        if ransac not in RANSAC_METHODS:
            raise ValueError(f"unknown RANSAC method {ransac!r}; valid: {', '.join(RANSAC_METHODS)}")
        self.model = model
        self.temperature = temperature
        self.ransac = ransac
        self.ransac_px = ransac_px
        self.subpixel = subpixel
        self.min_inliers = min_inliers

    @property
    def patch(self) -> int:
        return self.model.config.patch_size

    def forward(self, pair: PairInput) -> dict[str, torch.Tensor]:
        """The network's outputs for the pair (batch of one), with gradients if enabled."""
        return self.model(pair.img1, pair.img2)

    def logits(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return match_logits(out["desc1"][0], out["desc2"][0], self.temperature)

    # ---- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, pair: PairInput, n: int, seed: int = 0, include_mode: bool = False,
               out: dict[str, torch.Tensor] | None = None) -> list[PairSample]:
        """``n`` reconstructions drawn with seeds ``seed, seed+1, …`` (the same seed redraws the same
        sample from the same model); with ``include_mode`` the arg-max reconstruction comes first."""
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.forward(pair) if out is None else out
        finally:
            self.model.train(was_training)
        logits = self.logits(out)
        samples = []
        if n == 0:  # the mode alone: arg-max and log-normalisers, without the (N1, N2) probability and cdf tables
            if include_mode:  # (at 256 px those are 4 x 600 MB and most of a pair's sampling time)
                lt = logits.T.contiguous()  # column reductions of a row-major matrix are several times slower
                fwd, bwd = logits.argmax(1), lt.argmax(1)
                logp = float((logits.gather(1, fwd[:, None])[:, 0] - torch.logsumexp(logits, 1)).sum()
                             + (lt.gather(1, bwd[:, None])[:, 0] - torch.logsumexp(lt, 1)).sum())
                samples.append(self._reconstruct(pair, out, fwd, bwd, logp, -1, is_mode=True))
            return samples
        lsf, lsb, cdf_f, cdf_b = row_cdfs(logits)

        def logp_of(fwd: torch.Tensor, bwd: torch.Tensor) -> float:
            return float(lsf[torch.arange(len(fwd)), fwd].sum() + lsb[torch.arange(len(bwd)), bwd].sum())

        if include_mode:
            fwd, bwd = lsf.argmax(1), lsb.argmax(1)
            samples.append(self._reconstruct(pair, out, fwd, bwd, logp_of(fwd, bwd), -1, is_mode=True))
        for k in range(n):
            g = torch.Generator().manual_seed(seed + k)
            fwd = categorical_draws(cdf_f, g)
            bwd = categorical_draws(cdf_b, g)
            samples.append(self._reconstruct(pair, out, fwd, bwd, logp_of(fwd, bwd), seed + k))
        return samples

    @torch.no_grad()
    def redraw(self, pair: PairInput, seed: int) -> PairSample:
        """The sample with this seed (``seed = -1``: the mode)."""
        return self.sample(pair, 0, include_mode=True)[0] if seed < 0 else self.sample(pair, 1, seed)[0]

    def _reconstruct(self, pair: PairInput, out: dict, fwd: torch.Tensor, bwd: torch.Tensor, logp: float, seed: int,
                     is_mode: bool = False) -> PairSample:
        desc1, desc2 = out["desc1"][0], out["desc2"][0]
        h, w, _ = desc1.shape
        i1, i2 = cycle_matches(fwd, bwd)
        c1 = torch.stack([i1 % w, i1 // w], -1)
        c2 = torch.stack([i2 % w, i2 // w], -1)
        c2f = subpixel_refine(desc1, desc2, c1, c2) if self.subpixel and len(c1) else c2.float()
        H, W = out["pts11"].shape[1:3]
        kp1, kp2 = cells_to_px(c1.float().numpy(), (h, w), (H, W)), cells_to_px(c2f.numpy(), (h, w), (H, W))
        K1, K2 = pair.K1, pair.K2
        T21, inl = None, np.zeros(len(kp1), bool)
        cv2.setRNGSeed(seed & 0x7FFFFFFF)  # OpenCV's RANSAC draws from a process-wide generator: reseed, so a
        res = estimate_pose_essential(kp1, kp2, K1, K2, self.ransac_px, method=self.ransac)  # sample is a function of its draws
        if res is not None and res[2].sum() >= self.min_inliers:
            R, t, inl = res
            ij = np.round(kp1[inl]).astype(np.int64)
            X = out["pts11"][0][np.clip(ij[:, 1], 0, H - 1), np.clip(ij[:, 0], 0, W - 1)].double().numpy()
            lam = baseline_from_matches(X, kp2[inl], K2, R, t)
            if np.isfinite(lam) and lam > 0:
                T21 = np.eye(4)
                T21[:3, :3], T21[:3, 3] = R, lam * t
        return PairSample(seed=seed, fwd=fwd.numpy().astype(np.int32), bwd=bwd.numpy().astype(np.int32), logp=logp,
                          kp1=kp1, kp2=kp2, inliers=inl, T21=T21, is_mode=is_mode)

    # ---- scoring -------------------------------------------------------------------------------

    def log_likelihood(self, pair: PairInput, samples: list[PairSample], reduction: str = "sum",
                       out: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Log-likelihood (n,) of stored samples under the *current* model, differentiable w.r.t. its
        parameters (call under ``torch.no_grad()`` or with adapters disabled for the reference)."""
        out = self.forward(pair) if out is None else out
        logits = self.logits(out)
        fwd = torch.from_numpy(np.stack([s.fwd for s in samples])).long()
        bwd = torch.from_numpy(np.stack([s.bwd for s in samples])).long()
        return draw_log_likelihood(logits, fwd, bwd, reduction)
