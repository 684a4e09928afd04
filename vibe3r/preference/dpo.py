"""Direct Preference Optimisation of the reconstruction model's match policy (config + trainer).

The policy is ``recon.policy``'s: a sample of a pair is a pair of draw fields (``fwd``, ``bwd``) and
its log-likelihood ``log π(y | x)`` is exact. A preference record is ``(pair, chosen, rejected)``
(samples carry their draws). The policy is a ``LoraReconModel``; the reference ``π_ref`` is the same
network with its adapters disabled, scored once, under ``no_grad``, before training.

With ``h = (log π(y_c) − log π(y_r)) − (log π_ref(y_c) − log π_ref(y_r))`` (Rafailov et al. 2023):

* ``sigmoid`` — DPO, eq. 7: ``−log σ(β h)``; with ``label_smoothing`` ε > 0 the conservative DPO
  ``−(1 − ε) log σ(β h) − ε log σ(−β h)`` (labels flipped with probability ε);
* ``robust``  — robust DPO (Chowdhury et al. 2024, eq. 8): ``[−(1 − ε) log σ(β h) + ε log σ(−β h)] / (1 − 2ε)``,
  an unbiased loss under label noise ε;
* ``ipo``     — IPO (Azar et al. 2023, eq. 17): ``(h − 1 / (2β))²``; meant for ``reduction: mean``
  (per-draw average log-likelihoods), as TRL does.

Logged per step (TRL's names): the loss, the implicit rewards ``β (log π − log π_ref)`` of the chosen
and rejected samples, their margin, the implicit accuracy (chosen reward > rejected reward), the exact
KL(π ‖ π_ref) of the match distributions of the batch's pairs (a sum of per-row categorical KLs, in
the units of ``reduction``), and the anchor's supervised loss.

Anchor: ``w · L_sup`` on simulator pair batches (the SFT objective of ``recon.losses``, batches as
``recon.train.PairStream`` gives them) keeps the adapted model from drifting away from geometry.

A tiny CPU run (seconds; see tests/test_preference_dpo.py)::

    model = LoraReconModel(ReconModel.from_pretrained("weights/recon-base"), LoRAConfig(r=8))
    DPOTrainer(model, 0.07, DPOConfig(steps=50), "runs/dpo").train(prefs, anchor_batches=stream)

Every random choice (record order, LoRA dropout, the anchor loss's correspondence sampling) derives
from ``seed`` and the step number, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from vibe3r.config import ReconLossConfig
from vibe3r.errors import InputError
from vibe3r.preference.lora import LoRAConfig, LoraReconModel
from vibe3r.preference.trainer_common import (
    STATE_NAME,
    AdapterTrainConfig,
    RunLog,
    end_step,
    epoch_batch,
    finish_run,
    lr_at,
    start_session,
)
from vibe3r.recon.model import ReconModel
from vibe3r.recon.policy import REDUCTIONS, PairInput, PairSample, draw_log_likelihood, match_logits

LOSS_TYPES = ("sigmoid", "robust", "ipo")


class DPOConfig(AdapterTrainConfig):
    """DPO of the reconstruction model's match policy (``preference.dpo``)."""

    beta: float = Field(0.1, gt=0, description="DPO β: strength of the implicit KL to the reference (larger = stay closer)")
    loss_type: Literal["sigmoid", "robust", "ipo"] = Field("sigmoid", description="sigmoid (DPO) | robust (robust DPO) | ipo (IPO)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed preference-label noise ε (conservative / robust DPO)")
    reduction: Literal["sum", "mean"] = Field("sum", description="sample log-likelihood: sum over draws (exact joint) | mean per draw")
    draws: Literal["all", "matches"] = Field("all", description="draws a sample's log-likelihood counts: all | only those forming its "
                                             "cycle-consistent matches (the reconstruction depends on these alone)")
    steps: int = Field(100, ge=1, description="optimiser steps")
    batch_size: int = Field(4, ge=1, description="preference records per step")
    ckpt_every: int = Field(50, ge=1, description="steps between checkpoints (and at the end)")
    preference_weight: float = Field(1.0, ge=0, description="weight of the DPO loss; 0 trains the anchor alone (the control run)")

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if self.loss_type == "ipo" and self.label_smoothing > 0:
            raise ValueError("label_smoothing applies to the sigmoid and robust losses, not to ipo")
        return self


class Preference(NamedTuple):
    """One preference record: two samples of the same pair, the first preferred."""

    pair: PairInput
    chosen: PairSample
    rejected: PairSample


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def dpo_losses(pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor, beta: float,
               loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-record DPO losses (B,) and the implicit rewards of the chosen and rejected samples (B,) from
    log-likelihoods under the policy (``pi_*``) and the reference (``ref_*``). See the module docstring."""
    h = (pi_c - pi_r) - (ref_c - ref_r)  # B
    eps = label_smoothing
    if loss_type == "sigmoid":  # Rafailov et al. eq. 7; cDPO with eps > 0
        losses = -F.logsigmoid(beta * h) * (1 - eps) - F.logsigmoid(-beta * h) * eps
    elif loss_type == "robust":  # Chowdhury et al. eq. 8
        losses = (-F.logsigmoid(beta * h) * (1 - eps) + F.logsigmoid(-beta * h) * eps) / (1 - 2 * eps)
    elif loss_type == "ipo":  # Azar et al. eq. 17
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
    return losses, beta * (pi_c - ref_c).detach(), beta * (pi_r - ref_r).detach()


class DPOLoss(nn.Module):
    """``dpo_losses`` averaged over the batch; returns ``(loss, details)``."""

    def __init__(self, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> None:
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown DPO loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing

    def forward(self, pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        losses, rc, rr = dpo_losses(pi_c, pi_r, ref_c, ref_r, self.beta, self.loss_type, self.label_smoothing)
        loss = losses.mean()
        return loss, {"dpo_loss": float(loss.detach()), "chosen_reward": float(rc.mean()), "rejected_reward": float(rr.mean()),
                      "margin": float((rc - rr).mean()), "accuracy": float((rc > rr).float().mean())}


def match_kl(logits: torch.Tensor, ref_logits: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Exact KL(π ‖ π_ref) of two match policies on one pair: the draws are independent categoricals,
    so the joint KL is Σ_rows KL(softmax_j) + Σ_cols KL(softmax_i). ``reduction="mean"`` divides by
    the number of draws. logits (N1, N2)."""
    kl = 0.0
    for dim in (-1, -2):  # forward draws (rows), backward draws (columns)
        lp, lq = torch.log_softmax(logits, dim), torch.log_softmax(ref_logits, dim)
        kl = kl + (lp.exp() * (lp - lq)).sum()
    return kl / sum(logits.shape) if reduction == "mean" else kl


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


def wrap_model(model: ReconModel | LoraReconModel, lora: LoRAConfig) -> LoraReconModel:
    """A LoraReconModel as is; a plain ReconModel wrapped with ``lora`` adapters (in place)."""
    return model if isinstance(model, LoraReconModel) else LoraReconModel(model, lora)


def anchor_loss_step(model: LoraReconModel, loss_fn: nn.Module, batch: dict[str, torch.Tensor],
                     gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """The supervised objective of ``recon.losses`` on one simulator batch, under the adapted model."""
    pred = model(batch["img1"], batch["img2"])
    return loss_fn(pred, batch, generator=gen)


class DPOTrainer:
    """DPO of a ``LoraReconModel`` (a plain ReconModel is wrapped with ``cfg.lora``) whose match policy
    has ``temperature`` (the one the preference samples were drawn at); logs and checkpoints go to
    ``out_dir`` (None: nothing written, no resume)."""

    def __init__(self, model: ReconModel | LoraReconModel, temperature: float, cfg: DPOConfig, out_dir: str | Path | None = None,
                 *, anchor_loss: ReconLossConfig | None = None, progress: bool = True) -> None:
        from vibe3r.recon.losses import build_loss

        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if cfg.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}")
        self.model = wrap_model(model, cfg.lora)
        self.temperature = temperature
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.loss = DPOLoss(cfg.beta, cfg.loss_type, cfg.label_smoothing)
        self.anchor_loss = build_loss(anchor_loss or ReconLossConfig())
        self.opt = torch.optim.AdamW(self.model.lora_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    # ---- scoring -------------------------------------------------------------------------------

    def _logits(self, pair: PairInput, out: dict | None = None) -> torch.Tensor:
        out = self.model(pair.img1, pair.img2) if out is None else out
        return match_logits(out["desc1"][0], out["desc2"][0], self.temperature)  # N1,N2

    def _score(self, pair: PairInput, samples: list[PairSample], logits: torch.Tensor) -> torch.Tensor:
        fwd = torch.from_numpy(np.stack([s.fwd for s in samples])).long()
        bwd = torch.from_numpy(np.stack([s.bwd for s in samples])).long()
        return draw_log_likelihood(logits, fwd, bwd, self.cfg.reduction, self.cfg.draws)

    @torch.no_grad()
    def reference_log_probs(self, prefs: list[Preference]) -> tuple[torch.Tensor, torch.Tensor, dict[int, tuple]]:
        """Reference log-likelihoods of the chosen and rejected samples (N,), (N,), computed once with
        the adapters disabled, and the reference descriptors per pair (keyed by ``id(pair)``, for the
        KL; descriptors rather than the (N1, N2) logits, which would not fit for many large pairs)."""
        ref_c, ref_r = torch.zeros(len(prefs)), torch.zeros(len(prefs))
        descs: dict[int, tuple] = {}
        was = self.model.training
        self.model.eval()
        with self.model.reference():
            for pid, idx in _group_by_pair(prefs, range(len(prefs))).items():
                pair = prefs[idx[0]][0]
                out = self.model(pair.img1, pair.img2)
                descs[pid] = (out["desc1"][0], out["desc2"][0])
                lp = self._score(pair, [prefs[i][1] for i in idx] + [prefs[i][2] for i in idx], self._logits(pair, out))
                ref_c[idx], ref_r[idx] = lp[: len(idx)], lp[len(idx):]
        self.model.train(was)
        return ref_c, ref_r, descs

    def _policy_terms(self, prefs: list[Preference], idx: list[int], ref_descs: dict[int, tuple]):
        """Policy log-likelihoods (differentiable) of the records ``idx`` and the mean exact KL of their pairs."""
        parts_c, parts_r, pos_all, kls = [], [], [], []
        for pid, pos in _group_by_pair(prefs, idx).items():
            recs = [prefs[idx[p]] for p in pos]
            lg = self._logits(recs[0][0])
            lp = self._score(recs[0][0], [r[1] for r in recs] + [r[2] for r in recs], lg)
            parts_c.append(lp[: len(recs)])
            parts_r.append(lp[len(recs):])
            pos_all.extend(pos)
            ref_logits = match_logits(*ref_descs[pid], self.temperature)
            kls.append(float(match_kl(lg.detach(), ref_logits, self.cfg.reduction)))
        order = torch.tensor(pos_all)
        pi_c = torch.zeros(len(idx)).index_put((order,), torch.cat(parts_c))
        pi_r = torch.zeros(len(idx)).index_put((order,), torch.cat(parts_r))
        return pi_c, pi_r, float(np.mean(kls))

    @torch.no_grad()
    def evaluate(self, prefs: list[Preference]) -> dict[str, float]:
        """The DPO loss and its diagnostics over all records under the current adapters (no update)."""
        prefs = [Preference(*p) for p in prefs]
        ref_c, ref_r, ref_descs = self.reference_log_probs(prefs)
        was = self.model.training
        self.model.eval()
        pi_c, pi_r, kl = self._policy_terms(prefs, list(range(len(prefs))), ref_descs)
        self.model.train(was)
        _, d = self.loss(pi_c, pi_r, ref_c, ref_r)
        return {**d, "kl": kl}

    # ---- training ------------------------------------------------------------------------------

    def train(self, prefs: Iterable[Preference | tuple], anchor_batches: Any = None, resume: bool = False,
              stop_at: int | None = None) -> dict[str, float]:
        """Train on the records; ``anchor_batches``: a ``recon.train.PairStream`` or an iterable of
        simulator batches (None, or ``anchor_weight`` 0: no anchor). ``stop_at`` ends this session after
        that step (with a checkpoint) without changing the run. Returns the last step's metrics."""
        cfg = self.cfg
        prefs = [Preference(*p) for p in prefs]
        if not prefs:
            raise InputError("no preference records to train on")
        for p in prefs:
            if p.chosen.fwd.shape != p.rejected.fwd.shape:
                raise InputError("a preference record's chosen and rejected samples have different draw shapes")
        state, anchor = start_session(self.out, self.model, self.opt, cfg, anchor_batches, resume, {"step": 0, "cpu_s": 0.0})
        pref_on = cfg.preference_weight > 0  # 0: the control run, the anchor alone (no policy or reference pass)
        if not pref_on and anchor is None:
            raise InputError("preference_weight 0 and no anchor batches: nothing to train")
        ref_c, ref_r, ref_descs = self.reference_log_probs(prefs) if pref_on else (None, None, None)
        log = RunLog(self.out, "dpo", {"dpo": cfg.model_dump(), "temperature": self.temperature,
                                         "lora": self.model.lora_config.model_dump()}, cfg.steps, state["step"], self.progress)
        self.model.train()
        last = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        metrics: dict[str, float] = {}
        try:
            while state["step"] < last:
                step = state["step"]
                c0 = time.process_time()
                lr = lr_at(step, cfg.lr, cfg.warmup_steps)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                idx = epoch_batch(cfg.seed, step, cfg.batch_size, len(prefs))
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed * 1_000_003 + step)  # LoRA dropout
                    if pref_on:
                        pi_c, pi_r, kl = self._policy_terms(prefs, idx, ref_descs)
                        loss, metrics = self.loss(pi_c, pi_r, ref_c[idx], ref_r[idx])
                        loss = cfg.preference_weight * loss
                    else:
                        loss, metrics, kl = torch.zeros(()), {}, 0.0
                    if anchor is not None:
                        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                        la, d = anchor_loss_step(self.model, self.anchor_loss, anchor.next(), gen)
                        loss = loss + cfg.anchor_weight * la
                        metrics |= {"anchor_loss": float(la.detach()), **{f"anchor_{k}": v for k, v in d.items() if k != "loss"}}
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(self.model.lora_parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                self.opt.step()
                metrics |= {"loss": float(loss.detach()), "kl": kl, "lr": lr, "grad_norm": float(gnorm)}
                end_step(self.out, self.model, self.opt, cfg, state, step, c0, metrics, anchor, log, last,
                         f"loss {metrics['loss']:.3f} acc {metrics['accuracy']:.2f} margin {metrics['margin']:.3f} kl {kl:.3f}"
                         if pref_on else f"anchor {metrics['anchor_loss']:.3f}")
        finally:
            log.close()
        return finish_run(self.out, self.model, cfg, state, metrics)


def _group_by_pair(prefs: list, idx: Iterable[int]) -> dict[int, list[int]]:
    """Positions in ``idx`` grouped by the record's pair object (one forward pass per pair)."""
    groups: dict[int, list[int]] = {}
    for p, i in enumerate(idx):
        groups.setdefault(id(prefs[i][0]), []).append(p)
    return groups


__all__ = ["DPOConfig", "DPOLoss", "DPOTrainer", "Preference", "dpo_losses", "match_kl", "STATE_NAME"]
