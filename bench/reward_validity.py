"""Do the self-supervised rewards track the true error? Spearman ρ between each reward term and the
ground-truth relative-pose error of sampled reconstructions of real pairs (GT only checks, never scores).

Pairs: 7-Scenes redkitchen frames 0–496 (the preference-training side; ordinal frames 0–124, every 4th
original frame), 12–60 original frames apart. For each pair the policy draws ``--n`` reconstructions
plus its mode; each is scored by ``preference.rewards``; the true error is max(rotation, translation
direction) in degrees (translation sign kept). ρ is reported pooled over all samples and as the mean of
per-pair ρ (what DPO/GRPO use: rankings *within* a pair's group), sign-flipped so that + means "higher
reward, lower error".

    .venv/bin/python bench/reward_validity.py --pairs 24 --n 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.captures import load_capture  # noqa: E402
from vibe3r.preference.rewards import TERMS, RewardConfig  # noqa: E402
from vibe3r.preference.sampling import CaptureSampler, choose_pairs, set_focal  # noqa: E402
from vibe3r.recon.model import ReconModel  # noqa: E402
from vibe3r.recon.policy import MatchPolicy  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def pose_error(T: np.ndarray | None, T_gt: np.ndarray) -> float:
    if T is None:
        return 180.0
    c = np.clip((np.trace(T[:3, :3].T @ T_gt[:3, :3]) - 1) / 2, -1, 1)
    eR = np.degrees(np.arccos(c))
    t, tg = T[:3, 3], T_gt[:3, 3]
    et = np.degrees(np.arccos(np.clip(t @ tg / (np.linalg.norm(t) * np.linalg.norm(tg) + 1e-12), -1, 1)))
    return float(max(eR, et))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", default=str(REAL / "7scenes-redkitchen") + "@0:125")
    ap.add_argument("--ckpt", default=str(Path(__file__).resolve().parents[1] / "weights" / "recon-base"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--min-gap", type=int, default=3)
    ap.add_argument("--max-gap", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--focal", default="518,532", help="fx,fy of the 640x480 colour frames ('' = the capture's own K). "
                    "7-Scenes documents 585 (its depth camera); the colour camera's epipolar geometry fits ~518,532")
    ap.add_argument("--json", type=Path, default=None, help="write all rows here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    small = load_capture(a.capture, size=a.size)
    full = load_capture(a.capture)
    if a.focal:
        fx, fy = (float(v) for v in a.focal.split(","))
        for c in (small, full):
            set_focal(c, fx, fy)
    policy = MatchPolicy(ReconModel.from_pretrained(a.ckpt), temperature=a.temperature)
    sampler = CaptureSampler(policy, small, full, RewardConfig())
    pairs = choose_pairs(len(small.images), a.pairs, a.min_gap, a.max_gap, a.seed)
    rows = []
    t0 = time.time()
    for k, (i, j) in enumerate(pairs):
        sp = sampler.sample_pair(i, j, a.n, seed=1000 * k)
        T_gt = np.linalg.inv(small.cam2world[j]) @ small.cam2world[i]
        for s, r in zip(sp.samples, sp.rewards):
            rows.append({"pair": k, "i": i, "j": j, "seed": s.seed, "mode": s.is_mode, "n_inliers": s.n_inliers,
                         "T21": None if s.T21 is None else s.T21.tolist(), "T_gt": T_gt.tolist(),
                         "cycle_R": [R.tolist() for R in sp.ctx.cycle_R],
                         "err": pose_error(s.T21, T_gt), **r})
        print(f"pair {k + 1}/{len(pairs)} ({i},{j}) {time.time() - t0:.0f}s  errs "
              + " ".join(f"{x['err']:.1f}" for x in rows[-len(sp.samples):]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows))
    print(f"\n{len(pairs)} pairs x {a.n + 1} samples, {time.time() - t0:.0f} s; capture {a.capture}, size {a.size}")
    err = np.array([r["err"] for r in rows])
    mode_err = np.array([r["err"] for r in rows if r["mode"]])
    best = [min(r["err"] for r in rows if r["pair"] == k) for k in range(len(pairs))]
    print(f"median error: mode {np.median(mode_err):.2f} deg, all samples {np.median(err):.2f}, "
          f"best-of-group (oracle) {np.median(best):.2f}")
    chosen = []
    for k in range(len(pairs)):
        g = [r for r in rows if r["pair"] == k]
        chosen.append(max(g, key=lambda r: r["combined"])["err"])
    print(f"reward-chosen sample per pair: median error {np.median(chosen):.2f} deg "
          f"(mode {np.median(mode_err):.2f}); better than mode on "
          f"{sum(c < m - 1e-9 for c, m in zip(chosen, mode_err))}/{len(pairs)} pairs, worse on "
          f"{sum(c > m + 1e-9 for c, m in zip(chosen, mode_err))}")
    print(f"degenerate samples: {sum(r['degenerate'] is not None for r in rows)}/{len(rows)}")
    print(f"\n{'term':<12} {'pooled rho':>10} {'within-pair rho':>16} {'pairs':>6}")
    for term in (*TERMS, "combined"):
        ok = [r for r in rows if term in r]
        if len(ok) < 5:
            continue
        pooled = -spearmanr([r[term] for r in ok], [r["err"] for r in ok]).statistic
        per = []
        for k in range(len(pairs)):
            g = [r for r in ok if r["pair"] == k]
            if len(g) >= 3 and np.ptp([r["err"] for r in g]) > 0 and np.ptp([r[term] for r in g]) > 0:
                per.append(-spearmanr([r[term] for r in g], [r["err"] for r in g]).statistic)
        print(f"{term:<12} {pooled:>10.3f} {np.mean(per) if per else float('nan'):>16.3f} {len(per):>6}")


if __name__ == "__main__":
    main()
