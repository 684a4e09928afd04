"""Exact KL-regularised optimisation of the match policy: the loss is the RL objective in closed form,
training raises the expected per-match reward under the true pose, only the adapters move, the
reference never does, resume equals an uninterrupted run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from _common import TINY_MODEL
from test_preference_grpo import BASE

from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.preference.exact import (
    ExactConfig,
    ExactItem,
    ExactTrainer,
    exact_loss,
    expected_reward,
    sampled_exact_loss,
)
from vibe3r.preference.lora import LoRAConfig, LoraReconModel
from vibe3r.preference.rewards import epipolar_match_rewards
from vibe3r.recon.model import ReconModel, build_model
from vibe3r.recon.policy import PairInput, match_logits
from vibe3r.recon.synthetic import box_pair_batch, box_room_video


def test_reverse_loss_is_the_kl_regularised_objective_by_hand():
    """Per row: β·KL(π ‖ π*) = −E_π[r] + β·KL(π ‖ π_ref) + β·log Σ_j π_ref(j) e^{r_j/β}."""
    g = torch.Generator().manual_seed(0)
    logits, ref, r = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), -torch.rand(3, 4, generator=g) * 4
    beta = 0.7
    loss, d = exact_loss(logits, ref, r, beta)
    total = []
    for L, R, RR in ((logits, ref, r), (logits.T, ref.T, r.T)):  # rows: forward draws; columns: backward draws
        p, q = torch.softmax(L, -1), torch.softmax(R, -1)
        kl_ref = (p * (p.log() - q.log())).sum(-1)
        logz = torch.log((q * torch.exp(RR / beta)).sum(-1))
        total.append((-(p * RR).sum(-1) + beta * kl_ref + beta * logz) / beta)
    assert loss.item() == pytest.approx(torch.cat(total).mean().item(), abs=1e-5)
    assert d["reward"] == pytest.approx(torch.cat([(torch.softmax(logits, -1) * r).sum(-1),
                                                   (torch.softmax(logits, 0) * r).sum(0)]).mean().item(), abs=1e-5)
    # the optimum is the tilted reference itself: loss 0 there, in both divergences
    tilted = ref + r / beta
    for div in ("reverse", "forward"):
        assert exact_loss(tilted, ref, r, beta, div)[0].item() == pytest.approx(0.0, abs=1e-5)
        assert exact_loss(logits, ref, r, beta, div)[0].item() > 0.01


def test_epipolar_match_rewards_are_highest_on_the_true_correspondences():
    gt = box_room_video(0, n_frames=3, H=32, W=32, step=0.12)
    T21 = np.linalg.inv(gt.c2w[2]) @ gt.c2w[0]
    R = epipolar_match_rewards(T21, gt.K[0], gt.K[2], (16, 16), (32, 32), 4.0)
    assert R.shape == (256, 256) and R.max() <= 0 and R.min() == pytest.approx(-4.0)
    # a cell's true partner (by the rendered depth) lies on its epipolar line: reward near 0, far above the row's mean
    hits = 0
    for i in (5 * 16 + 5, 8 * 16 + 8, 10 * 16 + 6):
        x, y = (i % 16 + 0.5) * 2 - 0.5, (i // 16 + 0.5) * 2 - 0.5
        X = np.linalg.inv(gt.K[0]) @ np.array([x, y, 1.0]) * gt.depth[0][int(round(y)), int(round(x))]
        x2 = gt.K[2] @ (T21[:3, :3] @ X + T21[:3, 3])
        u, v = x2[:2] / x2[2]
        if not (0 <= u < 32 and 0 <= v < 32):
            continue
        j = int((v + 0.5) // 2) * 16 + int((u + 0.5) // 2)
        assert R[i, j] > -1.5 and R[i, j] > R[i].mean() + 1.0
        assert (R[i] > -0.5).sum() < 0.5 * 256  # the line is a band, not the whole image
        hits += 1
    assert hits >= 2


@pytest.fixture(scope="module")
def posed():
    base = ReconModel.from_pretrained(BASE)
    items = []
    for s in range(2):
        gt = box_room_video(s, n_frames=3, H=32, W=32, step=0.12)
        pair = PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], base.config.patch_size)
        items.append(ExactItem(pair, np.linalg.inv(gt.c2w[2]) @ gt.c2w[0]))
    return base, items


def _expected_reward(trainer: ExactTrainer, item: ExactItem) -> float:
    with torch.no_grad():
        out = trainer.model(item.pair.img1, item.pair.img2)
        logits = match_logits(out["desc1"][0], out["desc2"][0], trainer.cfg.temperature)
        return expected_reward(logits, trainer.rewards(item, out))


def test_training_raises_the_expected_reward_and_moves_only_the_adapters(posed, tmp_path):
    base, items = posed
    model = LoraReconModel(copy.deepcopy(base), LoRAConfig(r=4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = ExactTrainer(model, ExactConfig(steps=6, batch_size=2, lr=3e-3, beta=1.0), tmp_path, progress=False)
    r0 = [_expected_reward(trainer, it) for it in items]
    res = trainer.train(items)
    r1 = [_expected_reward(trainer, it) for it in items]
    assert res["step"] == 6 and res["kl"] > 0
    assert all(b > a + 0.05 for a, b in zip(r0, r1)), (r0, r1)  # matches moved towards their epipolar lines
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    with model.reference():
        ref = model(items[0].pair.img1, items[0].pair.img2)
    want = base(items[0].pair.img1, items[0].pair.img2)
    assert all(torch.equal(ref[k], want[k]) for k in want)
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"loss", "exact_loss", "reward", "reward_ref", "kl", "grad_norm"} <= set(rows[0])
    assert rows[-1]["reward"] > rows[0]["reward"]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def _tiny_items():
    items = []
    for s in range(2):
        gt = box_room_video(s, n_frames=3, H=32, W=32, step=0.12)
        items.append(ExactItem(PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], TINY_MODEL["patch_size"]),
                               np.linalg.inv(gt.c2w[2]) @ gt.c2w[0]))
    return items


def test_resume_equals_uninterrupted(tmp_path):
    items = _tiny_items()
    anchors = [box_pair_batch(B=1, H=32, W=32, seed=k) for k in range(8)]
    cfg = ExactConfig(steps=4, batch_size=2, lr=3e-3, anchor_weight=0.5, ckpt_every=2, save_merged=False)
    base = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    a = ExactTrainer(copy.deepcopy(base), cfg, tmp_path / "a", progress=False)
    a.train(items, anchor_batches=anchors)
    b = ExactTrainer(copy.deepcopy(base), cfg, tmp_path / "b", progress=False)
    b.train(items, anchor_batches=anchors, stop_at=2)
    b2 = ExactTrainer(copy.deepcopy(base), cfg, tmp_path / "b", progress=False)
    b2.train(items, anchor_batches=anchors, resume=True)
    for (n, p), (_, q) in zip(a.model.named_lora_parameters(), b2.model.named_lora_parameters()):
        assert torch.equal(p, q), n
    drop = lambda d: [{k: v for k, v in json.loads(r).items() if k != "cpu_min"} for r in (d / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert drop(tmp_path / "a") == drop(tmp_path / "b")


def test_no_items_is_a_clear_error():
    trainer = ExactTrainer(build_model(ReconModelConfig(**TINY_MODEL), seed=0), ExactConfig(steps=1), progress=False)
    with pytest.raises(InputError, match="no pairs"):
        trainer.train([])


def test_sampled_draws_are_the_exact_loss_split_into_parts():
    """With every draw sampled the sampled loss is the exact loss; over a partition of the draws into equal
    parts, the mean of the parts' losses is the exact loss again (so a random part is an unbiased estimate)."""
    g = torch.Generator().manual_seed(1)
    n, D, beta, tau = 12, 5, 0.8, 0.3
    d1, d2, r1, r2 = (torch.randn(n, D, generator=g) for _ in range(4))
    R = -torch.rand(n, n, generator=g) * 4
    full, dfull = exact_loss(match_logits(d1, d2, tau), match_logits(r1, r2, tau), R, beta)
    perm = torch.randperm(n, generator=g)
    every, d = sampled_exact_loss((d1, d2), (r1, r2), (R[perm], R.T[perm]), (perm, perm), beta, tau)
    assert every.item() == pytest.approx(full.item(), abs=1e-5)
    assert d["reward"] == pytest.approx(dfull["reward"], abs=1e-5)
    assert d["reward_ref"] == pytest.approx(expected_reward(match_logits(r1, r2, tau), R), abs=1e-5)
    parts = [sampled_exact_loss((d1, d2), (r1, r2), (R[i], R.T[j]), (i, j), beta, tau)[0].item()
             for i, j in zip(perm.chunk(3), torch.randperm(n, generator=g).chunk(3))]
    assert np.mean(parts) == pytest.approx(full.item(), abs=1e-5)
    assert np.std(parts) > 1e-4  # the parts differ: it is an estimate, not the same number three times


def test_training_on_sampled_draws_raises_the_expected_reward(posed, tmp_path):
    base, items = posed
    model = LoraReconModel(copy.deepcopy(base), LoRAConfig(r=4))
    trainer = ExactTrainer(model, ExactConfig(steps=6, batch_size=2, lr=3e-3, beta=1.0, draws_per_pair=64), tmp_path,
                           progress=False)
    r0 = [_expected_reward(trainer, it) for it in items]
    res = trainer.train(items)
    r1 = [_expected_reward(trainer, it) for it in items]
    assert res["step"] == 6 and res["kl"] > 0
    assert all(b > a + 0.05 for a, b in zip(r0, r1)), (r0, r1)  # measured on every draw, trained on 64 of 256


def test_the_control_run_trains_the_anchor_alone(tmp_path):
    """preference_weight 0 is the matched control: the same anchor batches and steps, no exact loss — the
    preference pairs are never touched."""

    class Untouchable:
        @property
        def pair(self):  # noqa: ANN202
            raise AssertionError("the control run touched a preference pair")

    anchors = [box_pair_batch(B=1, H=32, W=32, seed=k) for k in range(4)]
    model = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    trainer = ExactTrainer(model, ExactConfig(steps=2, batch_size=2, lr=3e-3, anchor_weight=1.0, preference_weight=0.0,
                                              save_merged=False), tmp_path, progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_lora_parameters()}
    res = trainer.train([Untouchable()], anchor_batches=anchors)
    assert res["exact_loss"] == 0.0 and res["anchor_loss"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_lora_parameters())


def test_sampled_draws_take_the_loops_31_bit_seeds(posed, tmp_path):
    """The loop seeds each stage with a 31-bit number; the draws' generator seed must not overflow int64."""
    base, items = posed
    model = LoraReconModel(copy.deepcopy(base), LoRAConfig(r=4))
    cfg = ExactConfig(steps=1, batch_size=2, lr=3e-3, beta=1.0, draws_per_pair=64, seed=2**31 - 2)
    assert ExactTrainer(model, cfg, tmp_path, progress=False).train(items)["step"] == 1


def _cell_depth(depth: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """The rendered depth at each cell centre (cells 2x2 pixels)."""
    h, w = grid_hw
    ys, xs = (np.arange(h) * 2 + 0.5).round().astype(int), (np.arange(w) * 2 + 0.5).round().astype(int)
    return depth[np.ix_(ys, xs)].astype(np.float32)


def test_point_rewards_pick_the_true_match_off_the_epipolar_line():
    """With a cell's depth, the reward peaks where its point projects; the Sampson reward is flat along the
    whole epipolar line. Cells without a depth keep the Sampson reward; the backward table uses view 2's depth."""
    from vibe3r.preference.rewards import point_match_rewards

    gt = box_room_video(0, n_frames=3, H=32, W=32, step=0.12)
    T21 = np.linalg.inv(gt.c2w[2]) @ gt.c2w[0]
    d1, d2 = _cell_depth(gt.depth[0], (16, 16)), _cell_depth(gt.depth[2], (16, 16))
    d1_half = d1.copy()
    d1_half[:, 8:] = 0  # the right half has no points
    S = epipolar_match_rewards(T21, gt.K[0], gt.K[2], (16, 16), (32, 32), 4.0)
    P = point_match_rewards(T21, gt.K[0], gt.K[2], (16, 16), (32, 32), 4.0, d1_half)
    assert P.shape == S.shape and np.array_equal(P.reshape(16, 16, -1)[:, 8:], S.reshape(16, 16, -1)[:, 8:])
    checked = 0
    for i in (5 * 16 + 5, 8 * 16 + 3, 10 * 16 + 6):
        x, y = (i % 16 + 0.5) * 2 - 0.5, (i // 16 + 0.5) * 2 - 0.5
        x2 = gt.K[2] @ (T21[:3, :3] @ (np.linalg.inv(gt.K[0]) @ np.array([x, y, 1.0]) * d1[i // 16, i % 16]) + T21[:3, 3])
        u, v = x2[:2] / x2[2]
        if not (0 <= u < 32 and 0 <= v < 32):
            continue
        j = int((v + 0.5) // 2) * 16 + int((u + 0.5) // 2)
        assert P[i].argmax() == j and P[i, j] > -1.5
        assert (S[i] > -0.5).sum() > 3 * (P[i] > -1.5).sum()  # the epipolar band admits many cells, the point few
        checked += 1
    assert checked >= 2
    # backward: view-2 cells over view-1 cells, from view 2's depth; true partners agree both ways
    item = ExactItem(PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], 4), T21, d1, d2)
    fwd, bwd = item.reward_tables((16, 16), 4.0)
    assert fwd.shape == bwd.shape == (256, 256) and not np.array_equal(bwd, fwd.T)
    j_of_i = fwd.argmax(1)
    mutual = bwd.argmax(1)[j_of_i] == np.arange(256)
    assert mutual.mean() > 0.3  # a cycle-consistent correspondence field, not two unrelated ones
    cols = np.arange(0, 256, 7)
    assert np.array_equal(item.reward_tables((16, 16), 4.0, rows=cols, cols=cols)[1], bwd[cols])


def test_cell_depth_puts_each_sfm_point_on_its_cell():
    from vibe3r.preference.sfm import SfmStructure

    K = np.array([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])  # a 64x48 image, grid 32x24
    c2w = np.eye(4)
    c2w[:3, 3] = [0.1, -0.2, 0.3]
    cam = np.array([[0.0, 0.0, 2.0], [0.5, 0.25, 4.0], [0.375, 0.1875, 3.0], [0.0, 0.0, -1.0]])  # camera frame; one behind
    st = SfmStructure({7: c2w}, cam + c2w[:3, 3], {7: np.arange(4)})
    d = st.cell_depth(7, K, (24, 32), (48, 64))
    # pixel (31.5, 23.5) -> cell ((31.5 + 0.5) / 2 - 0.5, ...) = (15.5, 11.5): rounds to (16, 12)
    assert d.shape == (24, 32) and d[12, 16] == pytest.approx(2.0)
    u, v = 40 * 0.5 / 4 + 31.5, 40 * 0.25 / 4 + 23.5  # both off-centre points share a ray: the nearest wins
    assert d[int(round((v + 0.5) / 2 - 0.5)), int(round((u + 0.5) / 2 - 0.5))] == pytest.approx(3.0)
    assert (d > 0).sum() == 2
    assert st.cell_depth(8, K, (24, 32), (48, 64)).max() == 0  # a frame without points


def test_training_on_point_rewards_raises_the_expected_reward(posed, tmp_path):
    base, items = posed
    pitems = []
    for s, it in enumerate(items):
        gt = box_room_video(s, n_frames=3, H=32, W=32, step=0.12)
        grid = tuple(base(it.pair.img1, it.pair.img2)["desc1"].shape[1:3])
        assert grid == (16, 16)
        pitems.append(ExactItem(it.pair, it.T21, _cell_depth(gt.depth[0], grid), _cell_depth(gt.depth[2], grid)))
    model = LoraReconModel(copy.deepcopy(base), LoRAConfig(r=4))
    trainer = ExactTrainer(model, ExactConfig(steps=6, batch_size=2, lr=3e-3, beta=1.0, draws_per_pair=64), tmp_path,
                           progress=False)
    r0 = [_expected_reward(trainer, it) for it in pitems]
    trainer.train(pitems)
    r1 = [_expected_reward(trainer, it) for it in pitems]
    assert all(b > a + 0.05 for a, b in zip(r0, r1)), (r0, r1)
