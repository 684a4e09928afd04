"""Does the per-draw reward (``preference.rewards.draw_rewards``) track whether a drawn match is right?

For pairs of 7-Scenes redkitchen frames 0-496 (the preference side), the shipped checkpoint draws 4 samples
+ its mode; every draw's reward (truncated Sampson distance under the *classical* pose, no ground truth) is
compared with the same quantity under the GT pose (ground truth only to check): Pearson correlation over
all draws and over the drawn matches, and the share of matches within 1 px of each::

    .venv/bin/python bench/draw_reward_validity.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vibe3r.captures import load_capture
from vibe3r.preference.rewards import Classical, PairContext, RewardConfig, draw_rewards
from vibe3r.preference.sampling import CaptureSampler, choose_pairs, set_focal
from vibe3r.recon.model import ReconModel
from vibe3r.recon.policy import MatchPolicy, match_draw_mask

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT.parent / "shared" / "data" / "real" / "7scenes-redkitchen") + "@0:125"


def main() -> None:
    torch.set_num_threads(1)
    small, full = load_capture(SPEC, size=128), load_capture(SPEC)
    for c in (small, full):
        set_focal(c, 518.0, 532.0)
    policy = MatchPolicy(ReconModel.from_pretrained(ROOT / "weights" / "recon-base"), 0.07)
    sampler = CaptureSampler(policy, small, full, cycle=False)
    cfg = RewardConfig()
    for i, j in choose_pairs(len(small.images), 12, 3, 15, 7):
        pair = sampler.pair_input(i, j)
        out = policy.forward(pair)
        samples = policy.sample(pair, 4, seed=0, include_mode=True, out=out)
        ctx = sampler.context(i, j, pair, out)
        r = draw_rewards(ctx, samples, cfg)
        if r is None:
            print(f"pair {i},{j}: no classical pose")
            continue
        T_gt = np.linalg.inv(small.cam2world[j]) @ small.cam2world[i]
        gt_ctx = PairContext(pair=pair, out=out, classical=Classical(np.zeros((0, 2)), np.zeros((0, 2)), T_gt, np.zeros(0, bool)))
        rg = draw_rewards(gt_ctx, samples, cfg)
        m = match_draw_mask(torch.from_numpy(np.stack([s.fwd for s in samples])),
                            torch.from_numpy(np.stack([s.bwd for s in samples]))).numpy()
        print(f"pair {i},{j}: Pearson(reward, GT reward) all draws {np.corrcoef(r.ravel(), rg.ravel())[0, 1]:.2f}, "
              f"matches {np.corrcoef(r[m], rg[m])[0, 1]:.2f}; matches within 1 px: GT {(-rg[m] < 1).mean():.2f}, "
              f"classical {(-r[m] < 1).mean():.2f}", flush=True)


if __name__ == "__main__":
    main()
