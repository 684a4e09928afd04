"""DPO of the match policy: the loss by hand, every loss type trains only the adapters, accuracy rises,
the reference never moves, resume equals an uninterrupted run."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from _common import TINY_MODEL

from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.preference.dpo import DPOConfig, DPOLoss, DPOTrainer, Preference, match_kl
from vibe3r.preference.lora import LoRAConfig, LoraReconModel
from vibe3r.recon.model import build_model
from vibe3r.recon.policy import MatchPolicy, PairInput, draw_log_likelihood
from vibe3r.recon.synthetic import box_pair_batch, box_room_video

LOSS_TYPES = ["sigmoid", "robust", "ipo"]


def _sp(z):  # softplus = -log sigmoid(-z)
    return math.log1p(math.exp(z))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dpo_loss_equals_the_hand_computed_value_on_a_toy_policy(loss_type, reduction):
    """2 cells per view. Policy logits [[1, 0], [0, 2]], reference uniform. Chosen draws fwd (0, 1),
    bwd (0, 1); rejected fwd (1, 1), bwd (0, 0). By hand: log π(c) − log π(r) = 3 (sum over the 4 draws),
    the reference gives both 4·log ½, so h = 3 (sum) or 3/4 (mean)."""
    beta, eps = 0.5, (0.1 if loss_type == "robust" else 0.0)
    pi = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ref = torch.zeros(2, 2)
    fwd = torch.tensor([[0, 1], [1, 1]])
    bwd = torch.tensor([[0, 1], [0, 0]])
    lp, lr = draw_log_likelihood(pi, fwd, bwd, reduction), draw_log_likelihood(ref, fwd, bwd, reduction)
    L1, L2 = math.log1p(math.e), math.log1p(math.e**2)
    n = 4 if reduction == "mean" else 1
    assert lp[0].item() == pytest.approx((6 - 2 * L1 - 2 * L2) / n, abs=1e-5)
    assert lp[1].item() == pytest.approx((3 - 2 * L1 - 2 * L2) / n, abs=1e-5)
    h = 3.0 / n
    want = {"sigmoid": _sp(-beta * h),
            "robust": ((1 - eps) * _sp(-beta * h) - eps * _sp(beta * h)) / (1 - 2 * eps),
            "ipo": (h - 1 / (2 * beta)) ** 2}[loss_type]
    loss, d = DPOLoss(beta, loss_type, eps)(lp[:1], lp[1:], lr[:1], lr[1:])
    assert loss.item() == pytest.approx(want, abs=1e-5)
    ref_lp = 4 * math.log(0.5) / n
    assert d["chosen_reward"] == pytest.approx(beta * ((6 - 2 * L1 - 2 * L2) / n - ref_lp), abs=1e-5)
    assert d["margin"] == pytest.approx(beta * h, abs=1e-5) and d["accuracy"] == 1.0


def test_match_kl_is_the_exact_kl_of_the_draw_distribution():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    assert match_kl(a, a).item() == pytest.approx(0.0, abs=1e-6)
    # brute force over the forward draws of a 1-row policy: Σ_j p_j log(p_j / q_j)
    p, q = torch.softmax(a[:1], -1)[0], torch.softmax(b[:1], -1)[0]
    fwd_kl = float((p * (p / q).log()).sum())
    col_kl = sum(float((pc * (pc / qc).log()).sum()) for pc, qc in zip(torch.softmax(a[:1], -2).T, torch.softmax(b[:1], -2).T))
    assert match_kl(a[:1], b[:1]).item() == pytest.approx(fwd_kl + col_kl, abs=1e-5)
    assert match_kl(a, b, "mean").item() == pytest.approx(match_kl(a, b).item() / 7, rel=1e-6)


def test_unknown_loss_type_lists_the_valid_ones():
    with pytest.raises(ValueError, match="sigmoid, robust, ipo"):
        DPOLoss(0.1, "hinge")
    with pytest.raises(ValueError):
        DPOConfig(loss_type="hinge")
    with pytest.raises(ValueError):
        DPOConfig(betaa=0.1)


# ---- training on a tiny model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    """Two box-room pairs (32x32), 6 samples each from the tiny model, 3 records per pair."""
    base = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    policy = MatchPolicy(base, temperature=0.07)
    prefs = []
    for s in range(2):
        gt = box_room_video(s, n_frames=3, H=32, W=32, step=0.12)
        pair = PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], base.config.patch_size)
        samples = policy.sample(pair, 6, seed=10 * s)
        prefs += [Preference(pair, samples[k], samples[k + 3]) for k in range(3)]
    anchors = [box_pair_batch(B=1, H=32, W=32, seed=k) for k in range(4)]
    return base, prefs, anchors


def _lora(base):
    return LoraReconModel(copy.deepcopy(base), LoRAConfig(r=4, seed=0))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_training_changes_only_the_adapters_and_the_reference_never_moves(data, loss_type):
    base, prefs, anchors = data
    model = _lora(base)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pair = prefs[0].pair
    want = base(pair.img1, pair.img2)
    cfg = DPOConfig(steps=3, batch_size=3, lr=3e-3, loss_type=loss_type, reduction="mean" if loss_type == "ipo" else "sum",
                    beta=0.5 if loss_type == "ipo" else 0.1, label_smoothing=0.1 if loss_type == "robust" else 0.0)
    res = DPOTrainer(model, 0.07, cfg, progress=False).train(prefs, anchor_batches=anchors)
    assert res["step"] == 3 and math.isfinite(res["loss"]) and "anchor_loss" in res
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    with model.reference():
        ref = model(pair.img1, pair.img2)
    assert all(torch.equal(ref[k], want[k]) for k in want)


@pytest.mark.parametrize("draws", ["all", "matches"])
def test_a_few_steps_raise_the_implicit_accuracy_and_margin(data, tmp_path, draws):
    base, prefs, _ = data
    trainer = DPOTrainer(_lora(base), 0.07, DPOConfig(steps=6, batch_size=3, lr=3e-3, anchor_weight=0.0, draws=draws), tmp_path,
                         progress=False)
    start = trainer.evaluate(prefs)
    assert start["margin"] == 0.0 and start["kl"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at the start
    trainer.train(prefs)
    end = trainer.evaluate(prefs)
    assert end["accuracy"] == 1.0 and end["margin"] > 1.0 and end["dpo_loss"] < 0.5 * start["dpo_loss"]
    assert end["kl"] > 0
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"loss", "margin", "accuracy", "chosen_reward", "rejected_reward", "kl"} <= set(rows[0])
    assert rows[-1]["margin"] > rows[0]["margin"]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file() and (tmp_path / "merged" / "model.safetensors").is_file()


def test_the_control_run_trains_the_anchor_alone(data, tmp_path, monkeypatch):
    """preference_weight 0 is the matched control: the anchor's steps without the policy's or the reference's
    pass over the preference records (minutes a step at 256 px); without an anchor there is nothing to train."""
    base, prefs, anchors = data

    def untouchable(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the control run scored a preference record")

    monkeypatch.setattr(DPOTrainer, "_policy_terms", untouchable)
    monkeypatch.setattr(DPOTrainer, "reference_log_probs", untouchable)
    cfg = DPOConfig(steps=2, batch_size=2, lr=3e-3, anchor_weight=1.0, preference_weight=0.0, save_merged=False)
    trainer = DPOTrainer(_lora(base), 0.07, cfg, tmp_path / "a", progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_lora_parameters()}
    res = trainer.train(prefs, anchor_batches=anchors)
    assert res["step"] == 2 and res["anchor_loss"] > 0 and res["kl"] == 0.0
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_lora_parameters())
    with pytest.raises(InputError, match="nothing to train"):
        DPOTrainer(_lora(base), 0.07, cfg, tmp_path / "b", progress=False).train(prefs)


def test_resume_equals_uninterrupted(data, tmp_path):
    base, prefs, anchors = data
    cfg = DPOConfig(steps=4, batch_size=2, lr=3e-3, anchor_weight=0.5, ckpt_every=2, save_merged=False)
    a = DPOTrainer(_lora(base), 0.07, cfg, tmp_path / "a", progress=False)
    a.train(prefs, anchor_batches=anchors)
    b = DPOTrainer(_lora(base), 0.07, cfg, tmp_path / "b", progress=False)
    b.train(prefs, anchor_batches=anchors, stop_at=2)
    with pytest.raises(InputError, match="already holds"):
        DPOTrainer(_lora(base), 0.07, cfg, tmp_path / "b", progress=False).train(prefs, anchor_batches=anchors)
    b2 = DPOTrainer(_lora(base), 0.07, cfg, tmp_path / "b", progress=False)
    b2.train(prefs, anchor_batches=anchors, resume=True)
    for (n, p), (_, q) in zip(a.model.named_lora_parameters(), b2.model.named_lora_parameters()):
        assert torch.equal(p, q), n
    la = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    drop = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "cpu_min"} for r in rows]  # noqa: E731
    assert drop(la) == drop(lb)
    assert np.isfinite([json.loads(r)["anchor_loss"] for r in la]).all()
    again = DPOTrainer(_lora(base), 0.07, cfg, tmp_path / "b", progress=False).train(prefs, anchor_batches=anchors, resume=True)
    assert again["step"] == 4 and again["margin"] == json.loads(lb[-1])["margin"]  # finished: its last row
