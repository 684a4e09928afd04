"""GRPO of the match policy: group-relative advantages, the clipped surrogate, high-reward draws gain
log-probability, only the adapters move, the reference never does, resume equals an uninterrupted run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _common import TINY_MODEL

from vibe3r import geometry
from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.preference.grpo import GRPOConfig, GRPOTrainer, group_advantages, grpo_token_loss
from vibe3r.preference.lora import LoRAConfig, LoraReconModel
from vibe3r.recon.model import ReconModel, build_model
from vibe3r.recon.policy import PairInput, per_draw_log_probs
from vibe3r.recon.synthetic import box_pair_batch, box_room_video

BASE = Path(__file__).resolve().parents[1] / "weights" / "recon-base"


def test_advantages_are_zero_mean_per_group():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(5, 8, generator=g) * torch.tensor([0.1, 1, 10, 100, 1e3])[:, None] + 3.0
    a = group_advantages(r)
    assert torch.allclose(a.mean(-1), torch.zeros(5), atol=1e-5)
    std = r.std(-1)
    assert torch.allclose(a.std(-1), std / (std + 1e-4), atol=1e-5)  # unit std up to ε
    assert torch.equal(group_advantages(torch.full((1, 4), 2.5)), torch.zeros(1, 4))  # no signal, no update
    c = group_advantages(r, scale=False)
    assert torch.allclose(c, r - r.mean(-1, keepdim=True), atol=1e-4)
    assert torch.equal(torch.argsort(a, -1), torch.argsort(r, -1))  # order kept within each group


def test_clipped_surrogate_and_k3_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    logp = torch.log(torch.tensor([[0.8, 0.5], [0.2, 0.5]])).requires_grad_()
    adv = torch.tensor([1.0, -1.0])
    loss, d = grpo_token_loss(logp, old, old, adv, clip_eps=0.2, beta=0.5)
    # ratios [[1.6, 1], [0.4, 1]]; A>0 clips 1.6 at 1.2; A<0 clips 0.4 at 0.8 (min picks the clipped, larger loss)
    pg = [-1.2, -1.0, 0.8, 1.0]
    k3 = [np.exp(np.log(0.5 / 0.8)) - np.log(0.5 / 0.8) - 1, 0.0, np.exp(np.log(0.5 / 0.2)) - np.log(0.5 / 0.2) - 1, 0.0]
    assert loss.item() == pytest.approx(np.mean(pg) + 0.5 * np.mean(k3), abs=1e-5)
    assert d["clip_frac"] == 0.5 and d["kl_k3"] == pytest.approx(np.mean(k3), abs=1e-5)
    loss.backward()
    # clipped draws carry no policy gradient; what is left on them is the KL pull towards the reference
    dk3 = lambda p, q: (1 - q / p) * 0.5 / 4  # noqa: E731  d/dlogp of β·(q/p − log(q/p) − 1)/4 … times p
    assert logp.grad[0, 0].item() == pytest.approx(dk3(0.8, 0.5), abs=1e-5)
    assert logp.grad[1, 0].item() == pytest.approx(dk3(0.2, 0.5), abs=1e-5)
    assert logp.grad[0, 1].item() == pytest.approx(-1.0 / 4, abs=1e-5)  # unclipped: −A ρ / T


def test_masked_surrogate_credits_only_the_masked_draws():
    """``draws="matches"``: the advantage reaches only the draws in the mask (a sample's matches);
    the KL still covers every draw."""
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    logp = old.clone().requires_grad_()
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    loss, _ = grpo_token_loss(logp, old, None, adv, clip_eps=0.2, beta=0.0, mask=mask)
    assert loss.item() == pytest.approx((-1 - 1 + 1) / 3, abs=1e-6)  # −A·ρ averaged over the 3 masked draws
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1 / 3, 0.0, -1 / 3], [0.0, 0.0, 1 / 3]]))


# ---- the shipped checkpoint on box-room pairs: a pose reward -------------------------------------


@pytest.fixture(scope="module")
def posed():
    base = ReconModel.from_pretrained(BASE)
    pairs, T_gt = [], {}
    for s in range(2):
        gt = box_room_video(s, n_frames=3, H=32, W=32, step=0.12)
        pair = PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], base.config.patch_size)
        pairs.append(pair)
        T_gt[id(pair)] = np.linalg.inv(gt.c2w[2]) @ gt.c2w[0]

    def reward(pair, samples):
        """Toy reward: minus the rotation error (degrees) to the known relative pose; no pose = −30."""
        T = torch.as_tensor(T_gt[id(pair)][:3, :3])
        return np.array([-30.0 if s.T21 is None else -float(geometry.rotation_error_deg(torch.as_tensor(s.T21[:3, :3]), T))
                         for s in samples])

    return base, pairs, reward


def test_a_few_steps_raise_the_log_prob_of_high_reward_draws(posed, tmp_path):
    base, pairs, reward = posed
    model = LoraReconModel(copy.deepcopy(base), LoRAConfig(r=4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = GRPOConfig(n=8, steps=2, batch_size=2, num_iterations=2, lr=3e-3, beta=0.04)
    trainer = GRPOTrainer(model, cfg, tmp_path, progress=False)
    first = trainer.rollout(pairs, reward, step=0)  # exactly the groups train() draws at its first step
    assert all(np.ptp(g.rewards) > 0 for g in first)
    res = trainer.train(pairs, reward)
    assert res["step"] == 2 and res["kl"] > 0 and res["kl_k3"] > 0
    with torch.no_grad():
        for g in first:
            new = per_draw_log_probs(trainer._logits(pairs[g.pair_index]), g.fwd, g.bwd).mean(-1)  # n
            gain = (new - g.old_logp.mean(-1)).numpy()
            assert float((g.adv.numpy() * gain).sum()) > 0  # the surrogate went up
            assert np.corrcoef(g.rewards, gain)[0, 1] > 0.5  # better reconstructions became likelier
            assert gain[np.argmax(g.rewards)] > gain[np.argmin(g.rewards)]
    # only the adapters moved; the reference is the shipped model, bit for bit
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    with model.reference():
        ref = model(pairs[0].img1, pairs[0].img2)
    want = base(pairs[0].img1, pairs[0].img2)
    assert all(torch.equal(ref[k], want[k]) for k in want)
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"reward_mean", "reward_std", "fail_frac", "loss", "pg_loss", "kl_k3", "kl", "clip_frac", "ratio"} <= set(rows[0])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    merged = ReconModel.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(merged(pairs[0].img1, pairs[0].img2)["desc1"], model(pairs[0].img1, pairs[0].img2)["desc1"],
                               atol=1e-5, rtol=1e-4)


def test_per_draw_credit_makes_the_rewarded_draws_likelier(posed):
    """``draw_weight`` > 0: each draw gets its own advantage from ``draw_reward_fn``; after a few steps
    the draws with the higher per-draw reward gained log-probability against the others of their cell."""
    base, pairs, reward = posed
    model = LoraReconModel(copy.deepcopy(base), LoRAConfig(r=4))

    def draw_reward(pair, samples):
        """Toy per-draw reward: 1 for a forward draw into the left half of view 2, else 0 (backward: 0)."""
        w = pair.img2.shape[-1] // 2  # descriptor cells at stride 2
        fwd = np.stack([s.fwd for s in samples])
        r = np.zeros((len(samples), 2 * fwd.shape[1]))
        r[:, : fwd.shape[1]] = (fwd % w < w // 2).astype(float)
        return r

    cfg = GRPOConfig(n=8, steps=3, batch_size=2, num_iterations=2, lr=3e-3, beta=0.0, draw_weight=4.0)
    trainer = GRPOTrainer(model, cfg, None, progress=False)
    first = trainer.rollout(pairs, reward, step=0, draw_reward_fn=draw_reward)
    assert all(g.adv.shape == g.old_logp.shape and g.mask is None for g in first)
    trainer.train(pairs, reward, draw_reward_fn=draw_reward)
    with torch.no_grad():
        for g in first:
            new = per_draw_log_probs(trainer._logits(pairs[g.pair_index]), g.fwd, g.bwd)
            gain = (new - g.old_logp)[:, : g.fwd.shape[1]]
            left = torch.from_numpy(np.stack([s.fwd for s in g.samples]) % (pairs[0].img2.shape[-1] // 2)
                                    < pairs[0].img2.shape[-1] // 4)
            assert gain[left].mean() > gain[~left].mean() + 0.05


# ---- the tiny model: resume and errors ------------------------------------------------------------


def _tiny_pairs():
    pairs = []
    for s in range(2):
        gt = box_room_video(s, n_frames=3, H=32, W=32, step=0.12)
        pairs.append(PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], TINY_MODEL["patch_size"]))
    return pairs


def _matches(pair, samples):
    return np.array([s.n_matches for s in samples], float)


def test_resume_equals_uninterrupted(tmp_path):
    pairs = _tiny_pairs()
    anchors = [box_pair_batch(B=1, H=32, W=32, seed=k) for k in range(8)]
    cfg = GRPOConfig(n=4, steps=4, num_iterations=2, lr=3e-3, anchor_weight=0.5, ckpt_every=2, save_merged=False)
    base = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    a = GRPOTrainer(copy.deepcopy(base), cfg, tmp_path / "a", progress=False)
    a.train(pairs, _matches, anchor_batches=anchors)
    b = GRPOTrainer(copy.deepcopy(base), cfg, tmp_path / "b", progress=False)
    b.train(pairs, _matches, anchor_batches=anchors, stop_at=2)
    b2 = GRPOTrainer(copy.deepcopy(base), cfg, tmp_path / "b", progress=False)
    b2.train(pairs, _matches, anchor_batches=anchors, resume=True)
    for (n, p), (_, q) in zip(a.model.named_lora_parameters(), b2.model.named_lora_parameters()):
        assert torch.equal(p, q), n
    drop = lambda d: [{k: v for k, v in json.loads(r).items() if k != "cpu_min"} for r in (d / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert drop(tmp_path / "a") == drop(tmp_path / "b")


def test_a_bad_reward_fn_is_a_clear_error():
    model = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    trainer = GRPOTrainer(model, GRPOConfig(n=3, steps=1), progress=False)
    with pytest.raises(InputError, match="3 finite rewards"):
        trainer.train(_tiny_pairs(), lambda pair, samples: np.zeros(2))
    with pytest.raises(InputError, match="non-finite"):
        trainer.train(_tiny_pairs(), lambda pair, samples: np.array([0.0, np.nan, 1.0]))
