"""Do the self-supervised rewards track the true error? Spearman ρ between each reward term and the
ground-truth relative-pose error of sampled reconstructions of real pairs (GT only checks, never scores).

Pairs: 7-Scenes redkitchen frames 0–496 (the preference-training side; ordinal frames 0–124, every 4th
original frame), 12–60 original frames apart. For each pair the policy draws ``--n`` reconstructions
plus its mode; each is scored by ``preference.rewards``; the true error is max(rotation, translation
direction) in degrees (translation sign kept). ρ is reported pooled over all samples and as the mean of
per-pair ρ (what DPO/GRPO use: rankings *within* a pair's group), sign-flipped so that + means "higher
reward, lower error".

Also printed: 95% bootstrap intervals over pairs; the classical (RootSIFT) pose's own error against the
GT; and a ceiling: ρ between the error against the GT and against the GT perturbed by ~``--gt-noise``
degrees (7-Scenes poses are good to ~2-4°), i.e. how well a perfect reward could rank against this GT.

    OMP_NUM_THREADS=1 .venv/bin/python bench/reward_validity.py --pairs 24 --n 8
    OMP_NUM_THREADS=1 .venv/bin/python bench/reward_validity.py --size 256 --min-gap 15 --max-gap 25 --align sfm   # + alignment
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import roma
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.captures import load_capture  # noqa: E402
from vibe3r.preference.rewards import TERMS, RewardConfig, combine  # noqa: E402
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


def rho(rows: list[dict], key: str, err: str = "err") -> tuple[float, float, int]:
    """Pooled Spearman ρ (sign-flipped: + = higher value, lower error) and the mean of per-pair ρ."""
    ok = [r for r in rows if r.get(key) is not None]
    if len(ok) < 5:
        return float("nan"), float("nan"), 0
    pooled = -spearmanr([r[key] for r in ok], [r[err] for r in ok]).statistic
    per = []
    for k in sorted({r["pair"] for r in ok}):
        g = [r for r in ok if r["pair"] == k]
        if len(g) >= 3 and np.ptp([r[err] for r in g]) > 0 and np.ptp([r[key] for r in g]) > 0:
            per.append(-spearmanr([r[key] for r in g], [r[err] for r in g]).statistic)
    return float(pooled), float(np.mean(per)) if per else float("nan"), len(per)


def bootstrap(rows: list[dict], key: str, reps: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% intervals of (pooled, within-pair) ρ, resampling pairs with replacement."""
    rng = np.random.default_rng(seed)
    by = {}
    for r in rows:
        by.setdefault(r["pair"], []).append(r)
    keys = sorted(by)
    stats = []
    for _ in range(reps):
        pick = rng.choice(len(keys), len(keys))
        rr = [dict(r, pair=n) for n, q in enumerate(pick) for r in by[keys[q]]]
        stats.append(rho(rr, key)[:2])
    st = np.array(stats)
    return np.nanpercentile(st[:, 0], [2.5, 97.5]), np.nanpercentile(st[:, 1], [2.5, 97.5])


def gt_noise_ceiling(rows: list[dict], deg: float, reps: int = 20, seed: int = 0) -> tuple[float, float]:
    """ρ between the error against the GT and against the GT with its rotation and translation direction
    each turned by |N(0, deg)| degrees about a random axis (per pair), averaged over ``reps`` draws."""
    rng = np.random.default_rng(seed)

    def turn() -> np.ndarray:
        v = rng.normal(size=3)
        return roma.rotvec_to_rotmat(torch.tensor(v / np.linalg.norm(v) * np.radians(abs(rng.normal()) * deg))).numpy()

    ok = [r for r in rows if r["T21"] is not None and r["degenerate"] is None]
    out = []
    for _ in range(reps):
        noisy = {}
        for r in ok:
            if r["pair"] not in noisy:
                N = np.array(r["T_gt"])
                N[:3, :3], N[:3, 3] = turn() @ N[:3, :3], turn() @ N[:3, 3]
                noisy[r["pair"]] = N
        rr = [dict(r, err2=pose_error(np.array(r["T21"]), noisy[r["pair"]]), neg=-r["err"]) for r in ok]
        out.append(rho(rr, "neg", "err2")[:2])
    return tuple(np.mean(out, 0))


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
    ap.add_argument("--rows", type=Path, default=None, help="only summarise rows written earlier by --json")
    ap.add_argument("--gt-noise", type=float, default=3.0, help="degrees of GT noise for the ceiling")
    ap.add_argument("--align", choices=["none", "sfm"], default="none", help="sfm: the capture's structure from motion (pycolmap, "
                    "no ground truth) is the global alignment the 'alignment' term compares samples with")
    ap.add_argument("--sfm-cache", type=Path, default=Path(__file__).resolve().parent / "out" / "sfm",
                    help="--align sfm: folder caching the capture's SfM")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    if a.rows:
        rows = json.loads(a.rows.read_text())
        pairs = sorted({(r["i"], r["j"]) for r in rows}, key=lambda ij: min(r["pair"] for r in rows if (r["i"], r["j"]) == ij))
        rows = [dict(r, T_classical=r.get("T_classical")) for r in rows]
    else:
        small = load_capture(a.capture, size=a.size)
        full = load_capture(a.capture)
        if a.focal:
            fx, fy = (float(v) for v in a.focal.split(","))
            for c in (small, full):
                set_focal(c, fx, fy)
        policy = MatchPolicy(ReconModel.from_pretrained(a.ckpt), temperature=a.temperature)
        poses = None
        if a.align == "sfm":
            from vibe3r.preference.sfm import capture_poses

            poses = capture_poses(full, a.sfm_cache, a.capture, threads=a.threads)
            print(f"SfM: {len(poses)} of {len(full.images)} frames registered", flush=True)
        sampler = CaptureSampler(policy, small, full, RewardConfig(), poses=poses)
        pairs = choose_pairs(len(small.images), a.pairs, a.min_gap, a.max_gap, a.seed)
        rows = []
        for k, (i, j) in enumerate(pairs):
            sp = sampler.sample_pair(i, j, a.n, seed=1000 * k)
            T_gt = np.linalg.inv(small.cam2world[j]) @ small.cam2world[i]
            for s, r in zip(sp.samples, sp.rewards):
                rows.append({"pair": k, "i": i, "j": j, "seed": s.seed, "mode": s.is_mode, "n_inliers": s.n_inliers,
                             "T21": None if s.T21 is None else s.T21.tolist(), "T_gt": T_gt.tolist(),
                             "cycle_R": [R.tolist() for R in sp.ctx.cycle_R],
                             "T_classical": None if sp.ctx.classical is None or sp.ctx.classical.T21 is None
                             else sp.ctx.classical.T21.tolist(),
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
    cl = {r["pair"]: pose_error(np.array(r["T_classical"]), np.array(r["T_gt"])) for r in rows if r["T_classical"]}
    if cl:
        print(f"classical (RootSIFT) pose vs GT: median error {np.median(list(cl.values())):.2f} deg over {len(cl)} pairs "
              f"(no classical pose on {len(pairs) - len(cl)})")
    c_pool, c_in = gt_noise_ceiling(rows, a.gt_noise)
    print(f"ceiling under ~{a.gt_noise:g} deg GT noise: pooled {c_pool:.3f}, within-pair {c_in:.3f}")
    print(f"\n{'term':<12} {'pooled rho':>10} {'95% CI':>15} {'within-pair rho':>16} {'95% CI':>15} {'pairs':>6}")
    for term in (*TERMS, "combined"):
        pooled, within, n_per = rho(rows, term)
        if n_per == 0:
            continue
        ci_p, ci_w = bootstrap(rows, term)
        print(f"{term:<12} {pooled:>10.3f} {f'[{ci_p[0]:.2f}, {ci_p[1]:.2f}]':>15} {within:>16.3f} "
              f"{f'[{ci_w[0]:.2f}, {ci_w[1]:.2f}]':>15} {n_per:>6}")
    if any("alignment" in r for r in rows):  # re-weigh the stored terms: how much of the alignment term to take
        print("\ncombined reward under other weights (classical, cycle, alignment), stored terms re-weighed:")
        for wc, wy, wa in ((1, 0.25, 0), (0, 0, 1), (1, 0.25, 0.25), (1, 0.25, 1), (1, 0.25, 4), (1, 0, 1)):
            cfg = RewardConfig(w_classical=wc, w_cycle=wy, w_alignment=wa)
            rew = []
            for k in sorted({r["pair"] for r in rows}):
                rew += combine([dict(r) for r in rows if r["pair"] == k], cfg)
            (pooled, within, _), (ci_p, ci_w) = rho(rew, "combined"), bootstrap(rew, "combined")
            print(f"  {wc:g}, {wy:g}, {wa:g}: pooled {pooled:.3f} [{ci_p[0]:.2f}, {ci_p[1]:.2f}], within-pair {within:.3f} "
                  f"[{ci_w[0]:.2f}, {ci_w[1]:.2f}]")


if __name__ == "__main__":
    main()
