"""Group Relative Policy Optimisation of the reconstruction model's match policy (config + trainer).

Each step, for every pair of the step (Shao et al. 2024, DeepSeekMath §4.1):

1. *rollout* — draw a group of ``n`` reconstructions ``y_1..y_n`` from the current policy
   (``MatchPolicy.sample``) and keep the per-draw log-probabilities ``log π_old(y_k,t)`` of every draw
   t ("token": one forward draw per view-1 cell, one backward draw per view-2 cell);
2. *reward* — ``r = reward_fn(pair, samples)`` (n,), e.g. ``preference.rewards``; failed samples
   (no pose) are the reward's business;
3. *advantages* — group-relative: ``A_k = (r_k − mean(r)) / (std(r) + ε)`` (eq. in §4.1.2; the same A_k
   for every draw of sample k; ``scale_rewards: false`` drops the std, as Dr. GRPO does); with
   ``draws: matches`` only the draws forming the sample's cycle-consistent matches are credited, and
   with ``draw_weight`` > 0 every draw t also gets its own advantage from a per-draw reward
   (``preference.rewards.draw_rewards``: is that one match consistent with the classical pose?),
   centred over the group's draws of the same cell — process-level credit for a 6000-draw sample;
4. *update* — ``μ`` optimiser steps on the clipped surrogate, token level (averaged over all draws of
   the group, which all have the same length here), with the k3 KL estimator to the reference::

       ρ = π(y_k,t) / π_old(y_k,t)
       L = mean_{k,t} [ −min(ρ A_k, clip(ρ, 1 − ε_clip, 1 + ε_clip) A_k) + β (e^{Δ} − Δ − 1) ],  Δ = log π_ref − log π

   (Schulman's k3 = ``e^Δ − Δ − 1`` ≥ 0, an unbiased estimate of KL(π ‖ π_ref) per draw.) The
   reference is the base model with its adapters disabled; its logits are computed once per pair.

Seed experience: the KL term is what keeps it stable; without a good reward the policy hacks it.

Logged per step (TensorBoard ``grpo/…``, ``log.jsonl``): reward mean / std / max, failure rate
(samples without a pose), advantage magnitude, loss, policy-gradient loss, the k3 KL per draw, the exact
KL(π ‖ π_ref) of the match distributions per draw, clip fraction, mean ratio, and the anchor loss.

A tiny CPU run (see tests/test_preference_grpo.py)::

    model = LoraReconModel(ReconModel.from_pretrained("weights/recon-base"), LoRAConfig(r=8))
    GRPOTrainer(model, GRPOConfig(n=8, steps=20), "runs/grpo").train(pairs, reward_fn)

Every random choice (pair order, the groups' draws, dropout, the anchor's sampling) derives from
``seed`` and the step number, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from vibe3r.config import ReconLossConfig
from vibe3r.errors import InputError
from vibe3r.preference.dpo import anchor_loss_step, match_kl, wrap_model
from vibe3r.preference.lora import LoraReconModel
from vibe3r.preference.trainer_common import (
    AdapterTrainConfig,
    RunLog,
    end_step,
    epoch_batch,
    finish_run,
    lr_at,
    start_session,
)
from vibe3r.recon.model import ReconModel
from vibe3r.recon.policy import MatchPolicy, PairInput, PairSample, match_draw_mask, match_logits, per_draw_log_probs

RewardFn = Callable[[PairInput, list[PairSample]], np.ndarray]
DrawRewardFn = Callable[[PairInput, list[PairSample]], "np.ndarray | None"]


class GRPOConfig(AdapterTrainConfig):
    """GRPO of the reconstruction model's match policy (``preference.grpo``)."""

    n: int = Field(8, ge=2, description="group size: samples drawn per pair and step")
    temperature: float = Field(0.07, gt=0, description="policy temperature of the match distribution (the model's InfoNCE one)")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="PPO clip range of the likelihood ratio: [1 - eps, 1 + eps]")
    beta: float = Field(0.04, ge=0, description="weight of the k3 KL estimator to the reference per draw (0 = no KL term)")
    num_iterations: int = Field(1, ge=1, description="μ: optimiser steps per rollout (>1 makes the ratio and the clip matter)")
    adv_eps: float = Field(1e-4, gt=0, description="ε in (r - mean) / (std + ε)")
    scale_rewards: bool = Field(True, description="divide advantages by the group's reward std (false: Dr. GRPO)")
    steps: int = Field(50, ge=1, description="rollouts (each followed by num_iterations optimiser steps)")
    batch_size: int = Field(1, ge=1, description="pairs (groups) per rollout")
    ckpt_every: int = Field(10, ge=1, description="rollouts between checkpoints (and at the end)")
    draws: Literal["all", "matches"] = Field("all", description="draws a sample's advantage is credited to: all | only those forming "
                                             "its cycle-consistent matches (the reconstruction depends on these alone)")
    draw_weight: float = Field(0.0, ge=0, description="weight of the per-draw advantages from ``draw_reward_fn`` (each draw's "
                               "reward centred over the group's draws of the same cell); 0 = sample-level credit only")


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """Group-relative advantages (…, n): ``(r − mean) / (std + ε)`` over the last axis (unbiased std,
    as TRL); ``scale=False`` only centres."""
    r = rewards.double()
    a = r - r.mean(-1, keepdim=True)
    if scale:
        a = a / (r.std(-1, keepdim=True) + eps)
    return a.float()


def draw_advantages(rewards: torch.Tensor, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """Per-draw advantages (n, T) from per-draw rewards: each draw's reward minus the mean over the
    group's n draws of the same cell (a cell where every sample drew the same match gets none), divided
    by the std of the centred rewards over the whole group (``scale=False`` only centres)."""
    r = rewards.double()
    a = r - r.mean(0, keepdim=True)
    if scale:
        a = a / (a.std() + eps)
    return a.float()


def grpo_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor,
                    clip_eps: float, beta: float, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate + β·k3 of the module docstring, averaged over every draw.

    logp, old_logp, ref_logp (n, T) per-draw log-probabilities under the policy (differentiable), the
    rollout policy and the reference; adv (n,) per sample or (n, T) per draw. ``mask`` (n, T) bool: the draws the advantage is
    credited to (``recon.policy.match_draw_mask``; None: all); the surrogate is averaged over those
    draws of the whole group, the KL over every draw."""
    ratio = torch.exp(logp - old_logp)  # n,T
    A = adv if adv.dim() == 2 else adv[:, None]
    pg = -torch.minimum(ratio * A, ratio.clamp(1 - clip_eps, 1 + clip_eps) * A)  # n,T
    if mask is None:
        loss = pg.mean()
    else:
        m = mask.to(pg.dtype)
        loss = (pg * m).sum() / m.sum().clamp(min=1)
    d = {"pg_loss": float(loss.detach()), "ratio": float(ratio.mean().detach()),
         "clip_frac": float(((ratio - 1).abs() > clip_eps).float().mean())}
    if ref_logp is not None:
        delta = ref_logp - logp
        k3 = torch.exp(delta) - delta - 1  # n,T, ≥ 0
        d["kl_k3"] = float(k3.mean().detach())
        if beta > 0:
            loss = loss + beta * k3.mean()
    return loss, d


@dataclass
class Group:
    """One rollout: a pair, its n samples, their rewards and advantages, per-draw rollout log-probs."""

    pair_index: int
    samples: list[PairSample]
    rewards: np.ndarray  # n
    adv: torch.Tensor  # n, or n,N1+N2 with per-draw credit
    fwd: torch.Tensor  # n,N1
    bwd: torch.Tensor  # n,N2
    old_logp: torch.Tensor  # n,N1+N2
    mask: torch.Tensor | None = None  # n,N1+N2: the draws the loss averages over (None: all)


class GRPOTrainer:
    """GRPO of a ``LoraReconModel`` (a plain ReconModel is wrapped with ``cfg.lora``); logs and
    checkpoints go to ``out_dir`` (None: nothing written, no resume)."""

    def __init__(self, model: ReconModel | LoraReconModel, cfg: GRPOConfig, out_dir: str | Path | None = None, *,
                 anchor_loss: ReconLossConfig | None = None, progress: bool = True, **policy_kw: Any) -> None:
        from vibe3r.recon.losses import build_loss

        self.model = wrap_model(model, cfg.lora)
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.policy = MatchPolicy(self.model, temperature=cfg.temperature, **policy_kw)
        self.anchor_loss = build_loss(anchor_loss or ReconLossConfig())
        self.opt = torch.optim.AdamW(self.model.lora_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._ref: dict[int, tuple] = {}  # id(pair) -> (pair, reference descriptors); holding the pair keeps its id unique

    # ---- pieces --------------------------------------------------------------------------------

    def _logits(self, pair: PairInput, out: dict | None = None) -> torch.Tensor:
        out = self.model(pair.img1, pair.img2) if out is None else out
        return match_logits(out["desc1"][0], out["desc2"][0], self.cfg.temperature)  # N1,N2

    @torch.no_grad()
    def reference_logits(self, pair: PairInput) -> torch.Tensor:
        """The reference's match logits (adapters disabled); its descriptors are cached per pair."""
        key = id(pair)
        if key not in self._ref:
            was = self.model.training
            self.model.eval()
            with self.model.reference():
                out = self.model(pair.img1, pair.img2)
            self.model.train(was)
            self._ref[key] = (pair, out["desc1"][0], out["desc2"][0])
        _, d1, d2 = self._ref[key]
        return match_logits(d1, d2, self.cfg.temperature)

    @torch.no_grad()
    def rollout(self, pairs: list[PairInput], reward_fn: RewardFn, step: int, draw_reward_fn: DrawRewardFn | None = None) -> list[Group]:
        """The groups of rollout ``step`` under the current policy (what ``train`` draws at that step)."""
        cfg = self.cfg
        groups = []
        was = self.model.training
        self.model.eval()
        try:
            for k, pi in enumerate(epoch_batch(cfg.seed, step, cfg.batch_size, len(pairs))):
                pair = pairs[pi]
                out = self.model(pair.img1, pair.img2)
                seed = (cfg.seed * 1_000_003 + step * cfg.batch_size + k) * cfg.n
                samples = self.policy.sample(pair, cfg.n, seed=seed, out=out)
                r = np.asarray(reward_fn(pair, samples), dtype=np.float64)
                if r.shape != (cfg.n,) or not np.isfinite(r).all():
                    raise InputError(f"reward_fn must return {cfg.n} finite rewards, got shape {r.shape}"
                                     + ("" if r.shape != (cfg.n,) else f" with non-finite values {r}"))
                fwd = torch.from_numpy(np.stack([s.fwd for s in samples])).long()
                bwd = torch.from_numpy(np.stack([s.bwd for s in samples])).long()
                old = per_draw_log_probs(self._logits(pair, out), fwd, bwd)  # n,T
                adv = group_advantages(torch.from_numpy(r), cfg.adv_eps, cfg.scale_rewards)
                mask = match_draw_mask(fwd, bwd) if cfg.draws == "matches" else None
                rd = draw_reward_fn(pair, samples) if draw_reward_fn is not None and cfg.draw_weight > 0 else None
                if rd is not None:  # per-draw credit: the sample's advantage on its (matched) draws + each draw's own
                    if rd.shape != tuple(old.shape):
                        raise InputError(f"draw_reward_fn must return {tuple(old.shape)} rewards, got {rd.shape}")
                    ad = draw_advantages(torch.from_numpy(rd), cfg.adv_eps, cfg.scale_rewards)
                    adv = adv[:, None] * (mask.float() if mask is not None else 1.0) + cfg.draw_weight * ad
                    mask = None
                groups.append(Group(pi, samples, r, adv, fwd, bwd, old, mask))
        finally:
            self.model.train(was)
        return groups

    # ---- training ------------------------------------------------------------------------------

    def train(self, pairs: list[PairInput], reward_fn: RewardFn, anchor_batches: Any = None, resume: bool = False,
              stop_at: int | None = None, draw_reward_fn: DrawRewardFn | None = None) -> dict[str, float]:
        """GRPO on ``pairs`` with ``reward_fn(pair, samples) -> (n,)``; ``anchor_batches`` as in
        ``DPOTrainer.train``; ``stop_at`` ends this session after that rollout (with a checkpoint);
        ``draw_reward_fn(pair, samples) -> (n, N1 + N2)`` per-draw rewards, used with ``draw_weight`` > 0.
        Returns the last step's metrics."""
        cfg = self.cfg
        pairs = list(pairs)
        if not pairs:
            raise InputError("no pairs to train on")
        state, anchor = start_session(self.out, self.model, self.opt, cfg, anchor_batches, resume, {"step": 0, "opt_step": 0, "cpu_s": 0.0})
        log = RunLog(self.out, "grpo", {"grpo": cfg.model_dump(), "lora": self.model.lora_config.model_dump()},
                     cfg.steps, state["step"], self.progress)
        last = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        metrics: dict[str, float] = {}
        try:
            while state["step"] < last:
                step = state["step"]
                c0 = time.process_time()
                groups = self.rollout(pairs, reward_fn, step, draw_reward_fn)
                self.model.train()
                for it in range(cfg.num_iterations):
                    lr = lr_at(state["opt_step"], cfg.lr, cfg.warmup_steps)
                    for g in self.opt.param_groups:
                        g["lr"] = lr
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed((cfg.seed * 1_000_003 + step) * 97 + it)  # LoRA dropout
                        self.opt.zero_grad(set_to_none=True)
                        parts: list[dict[str, float]] = []
                        total = 0.0
                        for grp in groups:  # one backward per group: memory of one pair at a time
                            pair = pairs[grp.pair_index]
                            logits = self._logits(pair)
                            logp = per_draw_log_probs(logits, grp.fwd, grp.bwd)  # n,T
                            ref_logits = self.reference_logits(pair) if cfg.beta > 0 or it == 0 else None
                            ref_logp = per_draw_log_probs(ref_logits, grp.fwd, grp.bwd) if ref_logits is not None else None
                            loss, d = grpo_token_loss(logp, grp.old_logp, ref_logp, grp.adv, cfg.clip_eps, cfg.beta, grp.mask)
                            (loss / len(groups)).backward()
                            total += float(loss.detach()) / len(groups)
                            if ref_logits is not None:
                                d["kl"] = float(match_kl(logits.detach(), ref_logits, "mean"))
                            parts.append(d)
                        if anchor is not None:
                            gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * 97 + it)
                            la, ad = anchor_loss_step(self.model, self.anchor_loss, anchor.next(), gen)
                            (cfg.anchor_weight * la).backward()
                            total += cfg.anchor_weight * float(la.detach())
                    gnorm = torch.nn.utils.clip_grad_norm_(self.model.lora_parameters(),
                                                           cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                    self.opt.step()
                    state["opt_step"] += 1
                    if it == 0:  # the rollout's own statistics (ratio = 1 at the first iteration)
                        metrics = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
                        metrics["first_loss"] = total
                r = np.stack([g.rewards for g in groups])  # G,n
                metrics |= {"loss": total, "reward_mean": float(r.mean()), "reward_std": float(r.std(-1).mean()),
                            "reward_max": float(r.max(-1).mean()),
                            "fail_frac": float(np.mean([s.T21 is None for g in groups for s in g.samples])),
                            "adv_abs": float(torch.stack([g.adv for g in groups]).abs().mean()),
                            "lr": lr, "grad_norm": float(gnorm)}
                if anchor is not None:
                    metrics |= {"anchor_loss": float(la.detach()), **{f"anchor_{k}": v for k, v in ad.items() if k != "loss"}}
                end_step(self.out, self.model, self.opt, cfg, state, step, c0, metrics, anchor, log, last,
                         f"reward {metrics['reward_mean']:.3f} kl {metrics.get('kl', 0.0):.4f} fail {metrics['fail_frac']:.2f}")
        finally:
            log.close()
        return finish_run(self.out, self.model, cfg, state, metrics)
