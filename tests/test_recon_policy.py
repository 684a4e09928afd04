"""The reconstruction model as a policy: coherent samples, exact log-likelihoods, the mode on top."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _common import TINY_MODEL

from vibe3r import geometry
from vibe3r.config import ReconModelConfig
from vibe3r.recon.model import build_model
from vibe3r.recon.policy import (
    MatchPolicy,
    PairInput,
    categorical_draws,
    cycle_matches,
    draw_log_likelihood,
    match_draw_mask,
    match_logits,
    per_draw_log_probs,
    row_cdfs,
)
from vibe3r.recon.synthetic import box_room_video

H, W = 24, 32


def _oracle_outputs(noise: float = 0.15, seed: int = 0):
    """Network outputs an ideal matcher would give on a box-room pair: each pixel's descriptor is a
    random-Fourier feature of the world point it sees (so corresponding pixels agree up to ``noise``),
    X^{1,1} is the exact camera-1 pointmap. Returns (out, K, T21 ground truth)."""
    gt = box_room_video(seed, n_frames=3, H=H, W=W, step=0.12)
    g = torch.Generator().manual_seed(seed)
    Wf = torch.randn(3, 32, generator=g, dtype=torch.float64) * 6.0
    bf = torch.rand(32, generator=g, dtype=torch.float64) * 2 * np.pi

    def desc(i):
        Xc = geometry.unproject_depth(gt.depth[i], gt.K[i])
        Xw = geometry.transform_points(torch.as_tensor(gt.c2w[i]), Xc)
        d = torch.cat([torch.cos(Xw @ Wf + bf), torch.sin(Xw @ Wf + bf)], -1)
        d = d + noise * torch.randn(d.shape, generator=g, dtype=torch.float64)
        return F.normalize(d, dim=-1).float()

    out = {"desc1": desc(0)[None], "desc2": desc(2)[None],
           "pts11": geometry.unproject_depth(gt.depth[0], gt.K[0]).float()[None]}
    T21 = (np.linalg.inv(gt.c2w[2]) @ gt.c2w[0])
    return out, gt.K[0], T21


@pytest.fixture(scope="module")
def oracle():
    out, K, T21 = _oracle_outputs()
    pair = PairInput(torch.zeros(1, 3, H, W), torch.zeros(1, 3, H, W), K, K)
    policy = MatchPolicy(torch.nn.Identity(), temperature=0.1, ransac="usac_accurate")
    samples = policy.sample(pair, 8, seed=0, include_mode=True, out=out)
    return policy, pair, out, T21, samples


def _rot_err(T, T_gt):
    return float(geometry.rotation_error_deg(torch.as_tensor(T[:3, :3]), torch.as_tensor(T_gt[:3, :3])))


def test_samples_are_distinct_whole_reconstructions_near_the_truth(oracle):
    policy, pair, out, T21, samples = oracle
    mode, draws = samples[0], samples[1:]
    assert mode.is_mode and all(s.T21 is not None for s in samples)
    # different seeds: different match sets and different relative cameras
    assert len({tuple(s.fwd[:50]) for s in draws}) == len(draws)
    rots = np.array([s.T21[:3, :3] for s in draws])
    assert np.ptp(rots.reshape(len(draws), -1), axis=0).max() > 1e-4
    # every sample is a plausible reconstruction of this pair, not noise
    errs = [_rot_err(s.T21, T21) for s in samples]
    assert max(errs) < 10.0 and np.median(errs) < 4.0, errs
    # the baseline is in X^{1,1}'s metric units here: close to the true one
    lens = np.array([np.linalg.norm(s.T21[:3, 3]) for s in samples])
    assert np.all(np.abs(lens / np.linalg.norm(T21[:3, 3]) - 1) < 0.3), lens


def test_a_sample_is_coherent_its_pose_explains_its_own_matches_best(oracle):
    """Coherent, not per-pixel noise: each sample's camera fits its own inlier matches better than the
    other samples' cameras fit them (the match set and the pose move together)."""
    _, pair, _, _, samples = oracle
    K = pair.K1
    Kinv = np.linalg.inv(K)

    def sampson(T, kp1, kp2):
        t = T[:3, 3]
        E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ T[:3, :3]
        Fm = Kinv.T @ E @ Kinv
        x1 = np.c_[kp1, np.ones(len(kp1))]
        x2 = np.c_[kp2, np.ones(len(kp2))]
        Fx1, Ftx2 = x1 @ Fm.T, x2 @ Fm
        num = np.sum(x2 * Fx1, 1) ** 2
        return float(np.mean(num / (Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2)))

    wins = 0
    draws = samples[1:]
    for a in draws:
        own = sampson(a.T21, a.kp1[a.inliers], a.kp2[a.inliers])
        others = [sampson(b.T21, a.kp1[a.inliers], a.kp2[a.inliers]) for b in draws if b is not a]
        wins += own <= np.median(others)
    assert wins == len(draws)


def test_same_seed_redraws_the_same_sample(oracle):
    policy, pair, out, _, samples = oracle
    again = policy.sample(pair, 2, seed=3, out=out)
    s3 = next(s for s in samples if s.seed == 3)
    assert np.array_equal(again[0].fwd, s3.fwd) and np.array_equal(again[0].bwd, s3.bwd)
    assert np.allclose(again[0].T21, s3.T21) and again[0].logp == s3.logp
    assert not np.array_equal(again[1].fwd, s3.fwd)


def test_the_mode_has_the_highest_log_likelihood(oracle):
    policy, pair, out, _, samples = oracle
    lls = policy.log_likelihood(pair, samples, out=out)
    assert torch.allclose(lls, torch.tensor([s.logp for s in samples]), rtol=1e-5)
    assert int(lls.argmax()) == 0 and samples[0].is_mode
    # and the mode's matches are the mutual nearest neighbours
    logits = match_logits(out["desc1"][0], out["desc2"][0], 0.1)
    i1, i2 = cycle_matches(logits.argmax(1), logits.argmax(0))
    assert len(i1) == samples[0].n_matches


def test_log_likelihood_matches_a_monte_carlo_estimate_on_a_toy_case():
    """2x2 descriptor maps: the frequency of a draw field over many draws equals exp(log-likelihood)."""
    g = torch.Generator().manual_seed(0)
    d1 = F.normalize(torch.randn(2, 2, 3, generator=g), dim=-1)
    d2 = F.normalize(d1 + 0.6 * torch.randn(2, 2, 3, generator=g), dim=-1)
    logits = match_logits(d1, d2, 0.5)  # 4 x 4
    S = 100_000
    _, _, cdf_f, cdf_b = row_cdfs(logits)  # the sampler's own procedure
    fwd = categorical_draws(cdf_f.repeat(S, 1), g).reshape(S, 4)
    bwd = categorical_draws(cdf_b.repeat(S, 1), g).reshape(S, 4)
    fields, counts = torch.unique(torch.cat([fwd, bwd], 1), dim=0, return_counts=True)
    top = torch.argsort(counts, descending=True)[:5]
    for k in top:
        f = fields[k]
        p = float(draw_log_likelihood(logits, f[:4], f[4:]).exp())
        freq = float(counts[k]) / S
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / S) + 1e-4, (freq, p)
    # the per-draw decomposition sums to the joint
    f = fields[top[0]]
    assert torch.isclose(per_draw_log_probs(logits, f[:4], f[4:]).sum(), draw_log_likelihood(logits, f[:4], f[4:]))
    assert torch.isclose(draw_log_likelihood(logits, f[:4], f[4:], "mean"), draw_log_likelihood(logits, f[:4], f[4:]) / 8)


def test_log_likelihood_of_stored_samples_is_differentiable_in_the_model():
    """What DPO needs: re-scoring stored samples under the model gives the sampling log-probs, with
    gradients reaching the descriptor head (and through it the shared trunk)."""
    gt = box_room_video(1, n_frames=3, H=32, W=32, step=0.12)
    model = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    pair = PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], model.config.patch_size)
    policy = MatchPolicy(model, temperature=0.07)
    samples = policy.sample(pair, 3, seed=5)
    assert np.array_equal(policy.redraw(pair, 6).fwd, samples[1].fwd)  # a stored (seed, model) redraws its sample
    model.train()
    ll = policy.log_likelihood(pair, samples)
    assert torch.allclose(ll.detach(), torch.tensor([s.logp for s in samples]), rtol=1e-4)
    ll.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("desc_heads") for n in grads) and any(n.startswith("enc") for n in grads)
    assert not any(n.startswith("pts_heads") for n in grads)  # the pose samples don't involve the pointmap heads


def test_the_mode_alone_is_the_mode_drawn_beside_samples():
    """``sample(pair, 0, include_mode=True)`` (the loop's exact and cycle path) skips the probability tables but gives
    the same mode as when samples are drawn beside it: the same matches, pose and log-likelihood."""
    gt = box_room_video(1, n_frames=3, H=32, W=32, step=0.12)
    model = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    pair = PairInput.from_uint8(gt.images[0], gt.images[2], gt.K[0], gt.K[2], model.config.patch_size)
    policy = MatchPolicy(model, temperature=0.07)
    alone, beside = policy.sample(pair, 0, include_mode=True)[0], policy.sample(pair, 2, seed=3, include_mode=True)[0]
    assert alone.is_mode and beside.is_mode
    assert np.array_equal(alone.fwd, beside.fwd) and np.array_equal(alone.bwd, beside.bwd)
    assert (alone.T21 is None and beside.T21 is None) or np.allclose(alone.T21, beside.T21)
    assert np.isclose(alone.logp, beside.logp, rtol=1e-5)
    assert np.isclose(alone.logp, float(policy.log_likelihood(pair, [alone]).detach()), rtol=1e-4)
    assert policy.sample(pair, 0) == []


def test_matches_likelihood_counts_exactly_the_draws_of_the_cycle_consistent_matches():
    """``draws="matches"``: the log-likelihood of a sample's match set, the part of the sample its
    reconstruction depends on; a draw outside the matches gets no gradient."""
    g = torch.Generator().manual_seed(1)
    d1 = F.normalize(torch.randn(3, 4, 8, generator=g), dim=-1)
    d2 = F.normalize(d1 + 0.5 * torch.randn(3, 4, 8, generator=g), dim=-1)
    logits = match_logits(d1, d2, 0.3).requires_grad_(True)
    _, _, cdf_f, cdf_b = row_cdfs(logits.detach())
    fwd = torch.stack([categorical_draws(cdf_f, g) for _ in range(5)])  # 5 samples, 12 draws each way
    bwd = torch.stack([categorical_draws(cdf_b, g) for _ in range(5)])
    mask = match_draw_mask(fwd, bwd)
    for b in range(5):
        i1, i2 = cycle_matches(fwd[b], bwd[b])
        assert set(torch.nonzero(mask[b, :12]).flatten().tolist()) == set(i1.tolist())
        assert set(torch.nonzero(mask[b, 12:]).flatten().tolist()) == set(i2.tolist())
    lp = per_draw_log_probs(logits, fwd, bwd)
    want = torch.stack([lp[b][mask[b]].sum() for b in range(5)])
    got = draw_log_likelihood(logits, fwd, bwd, "sum", draws="matches")
    assert torch.allclose(got, want)
    mean = draw_log_likelihood(logits, fwd, bwd, "mean", draws="matches")
    assert torch.allclose(mean, want / mask.sum(-1).clamp(min=1))
    # two samples with the same matches that differ in a draw outside them: the same match likelihood
    b = int(torch.nonzero(~mask[:, :12].all(-1))[0])
    i = int(torch.nonzero(~mask[b, :12])[0])
    j = next(j for j in range(12) if j != int(fwd[b, i]) and int(bwd[b, j]) != i)
    fwd2 = fwd[b].clone()
    fwd2[i] = j
    assert torch.equal(match_draw_mask(fwd2, bwd[b]), mask[b])
    assert torch.isclose(draw_log_likelihood(logits, fwd2, bwd[b], draws="matches"), got[b])
    assert not torch.isclose(draw_log_likelihood(logits, fwd2, bwd[b]), draw_log_likelihood(logits, fwd[b], bwd[b]))
    with pytest.raises(ValueError, match="draws must be one of"):
        draw_log_likelihood(logits, fwd, bwd, "sum", draws="inliers")
