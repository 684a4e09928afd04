"""Exact KL-regularised policy optimisation of the match policy under a dense per-match reward.

DPO and GRPO both optimise the same objective from *samples* — the expected reward with a KL leash to
the reference,

    max_π  E_{y∼π}[ r(y) ] − β · KL(π ‖ π_ref),

whose optimum is the reference tilted by the reward, ``π*(y) ∝ π_ref(y) · exp(r(y)/β)`` (Rafailov et
al. 2023, eq. 4; DPO's derivation starts from it). For the match policy (``recon.policy``) the
"tokens" are independent categorical draws, one per cell, over the cells of the other view, and the
per-match reward of ``preference.rewards.match_rewards`` — minus the truncated Sampson distance of the
match under the classical full-resolution pose, never ground truth — is available for *every*
candidate, not only for drawn ones. The objective then decomposes per cell and needs no sampling at all:

    E_{j∼π(·|i)}[ r(i, j) ] − β · KL(π(·|i) ‖ π_ref(·|i))  =  −β · KL(π(·|i) ‖ π*(·|i)) + β · log Z_i,

so the loss is the exact reverse KL to the tilted reference, averaged over the forward draws (rows)
and the backward draws (columns) of the pair — GRPO's expectation computed in closed form, with no
variance from drawing 8 samples out of 3072^3072 (``divergence: forward`` gives the mass-covering
``KL(π* ‖ π)`` instead: distillation of the tilted reference). β is in the reward's units (pixels):
a match ``β`` pixels further from the epipolar line loses a factor e of probability against the
reference. The loss is a mean over draws, so ``draws_per_pair`` samples that many forward and backward draws
per pair and step, each still against every candidate: an unbiased estimate of the same loss that never
forms the (N1, N2) table — at 256x192 a pair has 12288 draws of 12288 candidates, 16x the 128-px work.
As in DPO/GRPO the policy trains LoRA adapters, the reference is the base with adapters
disabled, and an optional supervised anchor on simulator pairs is added.

Logged per step (TensorBoard ``exact/…``, ``log.jsonl``): loss, the expected per-match reward under
the policy and under the reference, KL(π ‖ π_ref) per draw, the anchor loss.

    ExactTrainer(ReconModel.from_pretrained("weights/recon-base"), ExactConfig(steps=100), "runs/exact").train(items)

Every random choice (pair order, LoRA dropout, the anchor's sampling) derives from ``seed`` and the
step number, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import time
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
from vibe3r.preference.rewards import epipolar_match_rewards, point_match_rewards
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
from vibe3r.recon.policy import PairInput, match_logits


class ExactConfig(AdapterTrainConfig):
    """Exact KL-regularised optimisation of the match policy (``preference.exact``)."""

    beta: float = Field(1.0, gt=0, description="KL weight β in the reward's units (pixels of Sampson distance)")
    divergence: Literal["reverse", "forward"] = Field("reverse", description="reverse: KL(π ‖ π*), the RL objective itself; "
                                                      "forward: KL(π* ‖ π), distillation of the tilted reference")
    temperature: float = Field(0.07, gt=0, description="policy temperature of the match distribution (the model's InfoNCE one)")
    trunc_px: float = Field(4.0, gt=0, description="Sampson distances are truncated here (pixels at the policy's resolution)")
    draws_per_pair: int | None = Field(None, ge=1, description="forward and backward draws (cells) sampled per pair and step, "
                                       "each against every candidate; None: all of them. The loss is a mean over draws, so a "
                                       "sample of them is an unbiased estimate of it — what makes large inputs affordable "
                                       "(at 256x192 a pair has 12288 draws of 12288 candidates each)")
    steps: int = Field(100, ge=1, description="optimiser steps")
    batch_size: int = Field(4, ge=1, description="pairs per step")
    ckpt_every: int = Field(20, ge=1, description="steps between checkpoints (and at the end)")
    preference_weight: float = Field(1.0, ge=0, description="weight of the exact loss; 0 trains the anchor alone (the control run)")


@dataclass
class ExactItem:
    """A training pair and the relative pose its reward is measured against (camera 1 → camera 2;
    the classical full-resolution estimate — its translation's scale does not matter). With the cells'
    depths ``depth1``/``depth2`` (h, w of the descriptor grid, 0 = unknown, in the units of ``T21``'s
    translation: the capture's SfM points, ``SfmStructure.cell_depth``) a cell with a depth is rewarded
    point to point (``rewards.point_match_rewards``), the others by their Sampson distance."""

    pair: PairInput
    T21: np.ndarray
    depth1: np.ndarray | None = None
    depth2: np.ndarray | None = None

    def reward_tables(self, grid_hw: tuple[int, int], trunc_px: float, rows: np.ndarray | None = None,
                      cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The forward table (view-1 cells ``rows`` over every view-2 cell) and the backward one (view-2
        cells ``cols`` over every view-1 cell), each (draws, candidates)."""
        hw, K1, K2 = tuple(self.pair.hw), self.pair.K1, self.pair.K2
        if self.depth1 is None or self.depth2 is None:
            return (epipolar_match_rewards(self.T21, K1, K2, grid_hw, hw, trunc_px, rows=rows),
                    np.ascontiguousarray(epipolar_match_rewards(self.T21, K1, K2, grid_hw, hw, trunc_px, cols=cols).T))
        T12 = np.linalg.inv(self.T21)
        return (point_match_rewards(self.T21, K1, K2, grid_hw, hw, trunc_px, self.depth1, rows=rows),
                point_match_rewards(T12, K2, K1, grid_hw, hw, trunc_px, self.depth2, rows=cols))


def draw_losses(logits: torch.Tensor, ref_logits: torch.Tensor, rewards: torch.Tensor, beta: float,
                divergence: str = "reverse") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per draw (one row = one draw over its candidates): the KL to the tilted reference, the expected
    reward under the policy, and the policy's log-probabilities (detached). logits, ref_logits, rewards (M, N)."""
    lp = torch.log_softmax(logits, -1)
    with torch.no_grad():
        lt = torch.log_softmax(ref_logits + rewards / beta, -1)
    p = lp.exp()
    kl = (p * (lp - lt)).sum(-1) if divergence == "reverse" else (lt.exp() * (lt - lp)).sum(-1)
    return kl, (p.detach() * rewards).sum(-1), lp.detach()


def _fwd_bwd(rewards: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward (N1, N2), backward (N2, N1)) reward tables: one table serves both ways when the reward is
    symmetric (the Sampson distance), the point reward gives two."""
    return tuple(rewards) if isinstance(rewards, tuple | list) else (rewards, rewards.T)


def exact_loss(logits: torch.Tensor, ref_logits: torch.Tensor, rewards: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
               beta: float, divergence: str = "reverse") -> tuple[torch.Tensor, dict[str, float]]:
    """KL between the policy and the tilted reference ``π* ∝ π_ref · exp(r/β)``, per draw (the mean over
    the rows — forward draws — and the columns — backward draws). logits, ref_logits (N1, N2); rewards
    (N1, N2), or a (forward (N1, N2), backward (N2, N1)) pair of tables."""
    r_fwd, r_bwd = _fwd_bwd(rewards)
    parts = [draw_losses(lg, rf, r, beta, divergence) for lg, rf, r in ((logits, ref_logits, r_fwd),
                                                                        (logits.T, ref_logits.T, r_bwd))]
    loss = torch.cat([kl for kl, _, _ in parts]).mean()
    return loss, {"exact_loss": float(loss.detach()), "reward": float(torch.cat([r for _, r, _ in parts]).mean())}


def sampled_exact_loss(desc: tuple[torch.Tensor, torch.Tensor], ref_desc: tuple[torch.Tensor, torch.Tensor],
                       rewards: tuple[torch.Tensor, torch.Tensor], draws: tuple[torch.Tensor, torch.Tensor], beta: float,
                       temperature: float, divergence: str = "reverse") -> tuple[torch.Tensor, dict[str, float]]:
    """``exact_loss`` on a sample of the draws: forward draws ``draws[0]`` (view-1 cells, each over every
    view-2 cell) and backward draws ``draws[1]`` (view-2 cells over every view-1 cell), equally many.
    ``desc``/``ref_desc``: the policy's and the reference's descriptors (h·w, D) of both views;
    ``rewards``: (len(draws[0]), N2) and (len(draws[1]), N1). With every cell drawn it equals ``exact_loss``;
    the full (N1, N2) table is never formed. Also returns the expected reward under the reference and
    the mean KL(π ‖ π_ref) of the sampled draws."""
    d1, d2 = desc
    r1, r2 = ref_desc
    kls, exp_r, exp_r_ref, kl_ref = [], [], [], []
    for (q, other), (rq, rother), rw, idx in (((d1, d2), (r1, r2), rewards[0], draws[0]),
                                              ((d2, d1), (r2, r1), rewards[1], draws[1])):
        with torch.no_grad():
            rf = match_logits(rq[idx], rother, temperature)
        kl, er, lp = draw_losses(match_logits(q[idx], other, temperature), rf, rw, beta, divergence)
        kls.append(kl)
        exp_r.append(er)
        with torch.no_grad():
            lq = torch.log_softmax(rf, -1)
            kl_ref.append((lp.exp() * (lp - lq)).sum(-1))
            exp_r_ref.append((lq.exp() * rw).sum(-1))
    loss = torch.cat(kls).mean()
    return loss, {"exact_loss": float(loss.detach()), "reward": float(torch.cat(exp_r).mean()),
                  "reward_ref": float(torch.cat(exp_r_ref).mean()), "kl": float(torch.cat(kl_ref).mean())}


def expected_reward(logits: torch.Tensor, rewards: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> float:
    """The per-draw expected reward of a match policy (mean over its forward and backward draws); rewards as
    in ``exact_loss``."""
    r_fwd, r_bwd = _fwd_bwd(rewards)
    with torch.no_grad():
        return float(torch.cat([(torch.softmax(logits, -1) * r_fwd).sum(-1), (torch.softmax(logits.T, -1) * r_bwd).sum(-1)]).mean())


class ExactTrainer:
    """Exact KL-regularised optimisation of a ``LoraReconModel`` (a plain ReconModel is wrapped with
    ``cfg.lora``); logs and checkpoints go to ``out_dir`` (None: nothing written, no resume)."""

    def __init__(self, model: ReconModel | LoraReconModel, cfg: ExactConfig, out_dir: str | Path | None = None, *,
                 anchor_loss: ReconLossConfig | None = None, progress: bool = True) -> None:
        from vibe3r.recon.losses import build_loss

        self.model = wrap_model(model, cfg.lora)
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.anchor_loss = build_loss(anchor_loss or ReconLossConfig())
        self.opt = torch.optim.AdamW(self.model.lora_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._ref: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # item index -> reference descriptors
        self._ref_reward: dict[int, float] = {}  # item index -> expected reward under the reference

    @torch.no_grad()
    def reference_desc(self, k: int, pair: PairInput) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's descriptor maps (h, w, D) of item ``k`` (adapters disabled; cached)."""
        if k not in self._ref:
            was = self.model.training
            self.model.eval()
            with self.model.reference():
                out = self.model(pair.img1, pair.img2)
            self.model.train(was)
            self._ref[k] = (out["desc1"][0], out["desc2"][0])
        return self._ref[k]

    def reference_logits(self, k: int, pair: PairInput) -> torch.Tensor:
        """The reference's match logits of item ``k``."""
        return match_logits(*self.reference_desc(k, pair), self.cfg.temperature)

    def sampled_pair_loss(self, k: int, item: ExactItem, out: dict[str, torch.Tensor], step: int
                          ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one pair on ``draws_per_pair`` forward and backward draws, drawn from (seed, step, item)."""
        cfg = self.cfg
        h, w = out["desc1"].shape[1:3]
        n = h * w
        g = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + step) * 10_007 + k) % 2**63)  # the loop's 31-bit seeds overflow int64
        draws = (torch.randperm(n, generator=g)[:cfg.draws_per_pair], torch.randperm(n, generator=g)[:cfg.draws_per_pair])
        r_fwd, r_bwd = item.reward_tables((h, w), cfg.trunc_px, rows=draws[0].numpy(), cols=draws[1].numpy())
        D = out["desc1"].shape[-1]
        ref = tuple(d.reshape(-1, D) for d in self.reference_desc(k, item.pair))
        return sampled_exact_loss((out["desc1"][0].reshape(-1, D), out["desc2"][0].reshape(-1, D)), ref,
                                  (torch.from_numpy(r_fwd), torch.from_numpy(r_bwd)), draws,
                                  cfg.beta, cfg.temperature, cfg.divergence)

    def rewards(self, item: ExactItem, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The full forward (N1, N2) and backward (N2, N1) reward tables of an item."""
        h, w = out["desc1"].shape[1:3]
        fwd, bwd = item.reward_tables((h, w), self.cfg.trunc_px)
        return torch.from_numpy(fwd), torch.from_numpy(bwd)

    def train(self, items: list[ExactItem], anchor_batches: Any = None, resume: bool = False,
              stop_at: int | None = None) -> dict[str, float]:
        """Optimise on ``items``; ``anchor_batches`` as in ``DPOTrainer.train``; ``stop_at`` ends this
        session after that step (with a checkpoint). Returns the last step's metrics."""
        cfg = self.cfg
        items = list(items)
        if not items:
            raise InputError("no pairs to train on")
        state, anchor = start_session(self.out, self.model, self.opt, cfg, anchor_batches, resume, {"step": 0, "cpu_s": 0.0})
        log = RunLog(self.out, "exact", {"exact": cfg.model_dump(), "lora": self.model.lora_config.model_dump()},
                     cfg.steps, state["step"], self.progress)
        last = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        metrics: dict[str, float] = {}
        try:
            while state["step"] < last:
                step = state["step"]
                c0 = time.process_time()
                lr = lr_at(step, cfg.lr, cfg.warmup_steps)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                self.model.train()
                parts = []
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed * 1_000_003 + step)  # LoRA dropout
                    self.opt.zero_grad(set_to_none=True)
                    idx = epoch_batch(cfg.seed, step, cfg.batch_size, len(items)) if cfg.preference_weight > 0 else []
                    for k in idx:  # one backward per pair: memory of one pair at a time
                        item = items[k]
                        out = self.model(item.pair.img1, item.pair.img2)
                        if cfg.draws_per_pair is not None and cfg.draws_per_pair < out["desc1"].shape[1] * out["desc1"].shape[2]:
                            loss, d = self.sampled_pair_loss(k, item, out, step)
                            (cfg.preference_weight * loss / len(idx)).backward()
                            parts.append(d)
                            continue
                        ref = self.reference_logits(k, item.pair)
                        logits = match_logits(out["desc1"][0], out["desc2"][0], cfg.temperature)
                        rewards = self.rewards(item, out)
                        loss, d = exact_loss(logits, ref, rewards, cfg.beta, cfg.divergence)
                        if k not in self._ref_reward:
                            self._ref_reward[k] = expected_reward(ref, rewards)
                        d["reward_ref"] = self._ref_reward[k]
                        (cfg.preference_weight * loss / len(idx)).backward()
                        d["kl"] = float(match_kl(logits.detach(), ref, "mean"))
                        parts.append(d)
                    if anchor is not None:
                        la, ad = anchor_loss_step(self.model, self.anchor_loss, anchor.next(),
                                                  torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
                        (cfg.anchor_weight * la).backward()
                gnorm = torch.nn.utils.clip_grad_norm_(self.model.lora_parameters(),
                                                       cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                self.opt.step()
                metrics = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]} if parts else {"exact_loss": 0.0}
                metrics |= {"loss": cfg.preference_weight * metrics["exact_loss"] + (cfg.anchor_weight * float(la.detach()) if anchor is not None else 0.0),
                            "lr": lr, "grad_norm": float(gnorm)}
                if anchor is not None:
                    metrics |= {"anchor_loss": float(la.detach()), **{f"anchor_{k}": v for k, v in ad.items() if k != "loss"}}
                end_step(self.out, self.model, self.opt, cfg, state, step, c0, metrics, anchor, log, last,
                         f"reward {metrics['reward']:.3f} (ref {metrics['reward_ref']:.3f}) kl {metrics['kl']:.4f}" if parts
                         else f"anchor {metrics.get('anchor_loss', 0.0):.3f}")
        finally:
            log.close()
        return finish_run(self.out, self.model, cfg, state, metrics)
