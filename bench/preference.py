"""The improvement table: SFT vs SFT+DPO (vs SFT+GRPO) on real pairs never seen in preference data.

Preference data: 7-Scenes redkitchen frames 0–496 (ordinal 0–124), pairs 12–60 frames apart; the policy
(``recon.policy``) draws ``--n`` reconstructions + its mode per pair, ``preference.rewards`` scores them
(no ground truth), the store turns rewards into best-vs-worst preferences, DPO trains LoRA adapters with
a supervised anchor on simulator pairs. Evaluation: ``eval-pairs`` lists (7-Scenes frames 500–996, the
TUM sequence) at 128 px, SIFT beside. The rewards use the colour camera's focal (518, 532) for the
7-Scenes frames; evaluation keeps the pair lists' K, as every other report.

    .venv/bin/python bench/preference.py --out runs/pref-bench --pairs 48 --n 8 --dpo-steps 80
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.captures import load_capture  # noqa: E402
from vibe3r.eval.pairs import evaluate_pairs, format_summary  # noqa: E402
from vibe3r.preference.dpo import DPOConfig, DPOTrainer  # noqa: E402
from vibe3r.preference.rewards import RewardConfig  # noqa: E402
from vibe3r.preference.sampling import CaptureSampler, choose_pairs, grpo_pairs, set_focal  # noqa: E402
from vibe3r.preference.store import PreferenceStore  # noqa: E402
from vibe3r.recon.model import ReconModel  # noqa: E402
from vibe3r.recon.policy import MatchPolicy  # noqa: E402
from vibe3r.recon.pose import make_model_estimator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
EVAL = {"7scenes": REAL / "eval-pairs" / "7scenes-redkitchen-second-half.txt",
        "tum": REAL / "eval-pairs" / "tum-fr3-long-office-sequence.txt"}


def colour_focal(*caps) -> None:
    for c in caps:
        set_focal(c, 518.0, 532.0)


def reward_config(a: argparse.Namespace) -> RewardConfig:
    """The rewards' weights: ``--reward-weights CLASSICAL CYCLE ALIGNMENT`` (default: the library's)."""
    if not a.reward_weights:
        return RewardConfig()
    wc, wy, wa = a.reward_weights
    return RewardConfig(w_classical=wc, w_cycle=wy, w_alignment=wa)


def alignment(a: argparse.Namespace) -> dict[int, np.ndarray] | None:
    """``--align sfm``: the capture's SfM ({frame ordinal: cam2world}, ``--sfm-poses``), which the rewards' alignment
    term compares every sample with."""
    if a.align != "sfm":
        return None
    d = json.loads(Path(a.sfm_poses).read_text())
    return {int(k): np.asarray(v) for k, v in d.get("cam2world", d).items()}  # bench/sfm_pseudo_gt.py's or sfm.capture_poses' file


def sample_stage(store: PreferenceStore, ckpt: Path, a: argparse.Namespace) -> None:
    spec = str(REAL / "7scenes-redkitchen") + "@0:125"
    small, full = load_capture(spec, size=a.size), load_capture(spec)
    colour_focal(small, full)
    policy = MatchPolicy(ReconModel.from_pretrained(ckpt), temperature=a.temperature)
    sampler = CaptureSampler(policy, small, full, reward_config(a), poses=alignment(a))
    cap = store.add_capture(spec, "7scenes-redkitchen first half", len(small.images))
    pairs = choose_pairs(len(small.images), a.pairs, *a.pair_gap, a.seed)
    done = {(s.pair_id) for s in store.samples(round=1)}
    t0 = time.time()
    for k, (i, j) in enumerate(pairs):
        pid = store.add_pair(cap, i, j)
        if pid in done:
            continue
        sp = sampler.sample_pair(i, j, a.n, seed=1000 * k)
        store.add_samples(pid, sp.samples, sp.rewards, model_version="sft", round=1)
        print(f"sampled pair {k + 1}/{len(pairs)} ({i},{j}) {time.time() - t0:.0f}s", flush=True)


def records(store: PreferenceStore, a: argparse.Namespace):
    spec = str(REAL / "7scenes-redkitchen") + "@0:125"
    small = load_capture(spec, size=a.size)
    from vibe3r.recon.policy import PairInput

    out = []
    for p in store.preferences(round=1):
        pair = PairInput.from_uint8(small.images[p.i], small.images[p.j], small.K[p.i], small.K[p.j], 8)
        out.append((pair, p.chosen.as_pair_sample(), p.rejected.as_pair_sample()))
    return out


def evaluate(ckpt: Path, label: str, a: argparse.Namespace, cache: Path) -> dict:
    """Real eval pairs (and the held-out synthetic list when given) with usac_accurate; cached per checkpoint."""
    if cache.is_file():
        return json.loads(cache.read_text())
    lists = dict(EVAL)
    if a.synthetic_list:
        lists["synthetic"] = Path(a.synthetic_list)
    res = {}
    for name, lst in lists.items():
        est = make_model_estimator(ckpt, threads=a.threads, ransac="usac_accurate")
        ev = evaluate_pairs(lst, est, a.size, root=a.synthetic_root if name == "synthetic" else None, method_name=label)
        print(f"[{label}] {name}: {format_summary(ev)}", flush=True)
        res[name] = {k: v for k, v in ev.to_json().items() if k != "per_pair"}
    cache.write_text(json.dumps(res, indent=1, default=str))
    return res


def gap_suffix(a: argparse.Namespace) -> str:
    """``-gapMIN-MAX`` in file names when ``--exact-gap`` is not the default 3 15 (so older runs keep their names)."""
    return "" if a.exact_gap == [3, 15] else f"-gap{a.exact_gap[0]}-{a.exact_gap[1]}"


def exact_items(a: argparse.Namespace) -> list:
    """``--exact-pairs`` pairs of frames 0-496 with their classical full-resolution pose (cached in
    ``exact-pairs.json``: the SIFT of 100+ full-resolution pairs takes minutes)."""
    from vibe3r.preference.exact import ExactItem

    spec = str(REAL / "7scenes-redkitchen") + "@0:125"
    small = load_capture(spec, size=a.size)
    colour_focal(small)
    gap = a.exact_gap
    cache = a.out / f"exact-pairs-{a.exact_pairs}-s{a.seed}{gap_suffix(a)}.json"
    if cache.is_file():
        rows = json.loads(cache.read_text())
    else:
        full = load_capture(spec)
        colour_focal(full)
        sampler = CaptureSampler(MatchPolicy(ReconModel.from_pretrained(a.ckpt), temperature=a.temperature), small, full)
        rows = []
        t0 = time.time()
        for k, (i, j) in enumerate(choose_pairs(len(small.images), a.exact_pairs, gap[0], gap[1], a.seed + 11)):
            c = sampler.classical(i, j)
            rows.append({"i": i, "j": j, "inliers": int(c.inliers.sum()), "T21": None if c.T21 is None else c.T21.tolist()})
            print(f"classical pose {k + 1}/{a.exact_pairs} ({i},{j}) inliers {rows[-1]['inliers']} {time.time() - t0:.0f}s", flush=True)
        cache.write_text(json.dumps(rows))
    from vibe3r.recon.policy import PairInput

    mcfg = ReconModel.from_pretrained(a.ckpt).config
    keep = [r for r in rows if r["T21"] is not None and r["inliers"] >= a.exact_min_inliers]
    print(f"exact: {len(keep)} of {len(rows)} pairs have a classical pose with >= {a.exact_min_inliers} inliers", flush=True)
    st = None
    if a.exact_teacher in ("gt", "sfm", "sfm-points"):  # gt: an upper bound of the method, never a method — the same pairs under the true pose
        if a.exact_teacher == "gt":
            c2w = small.cam2world
        elif a.exact_teacher == "sfm":  # the capture's own structure from motion (no ground truth): {frame: cam2world}
            c2w = {int(k): np.asarray(v) for k, v in json.loads(Path(a.sfm_poses).read_text()).items()}
        else:  # the SfM's poses and, per cell, its points: rewards point to point where a point lands
            from vibe3r.preference.sfm import capture_structure

            full = load_capture(spec)
            colour_focal(full)  # the SfM's camera is the policy's (rescaled): its points project onto the frames' content
            st = capture_structure(full, Path(a.sfm_cache), spec, threads=1)
            c2w = st.c2w
        keep = [r for r in keep if r["i"] in c2w and r["j"] in c2w] if isinstance(c2w, dict) else keep
        for r in keep:
            r["T21"] = (np.linalg.inv(c2w[r["j"]]) @ c2w[r["i"]]).tolist()
    items = [ExactItem(PairInput.from_uint8(small.images[r["i"]], small.images[r["j"]], small.K[r["i"]], small.K[r["j"]],
                                            mcfg.patch_size), np.asarray(r["T21"])) for r in keep]
    if st is not None:
        for r, it in zip(keep, items):
            grid = (it.pair.hw[0] // mcfg.desc_stride, it.pair.hw[1] // mcfg.desc_stride)  # the descriptor grid
            it.depth1 = st.cell_depth(r["i"], small.K[r["i"]], grid, tuple(it.pair.hw))
            it.depth2 = st.cell_depth(r["j"], small.K[r["j"]], grid, tuple(it.pair.hw))
        cover = np.mean([(it.depth1 > 0).mean() for it in items])
        print(f"exact: {len(items)} pairs with SfM points on {100 * cover:.1f} % of their cells ({grid[1]}x{grid[0]} grid)", flush=True)
    return items


def train_variant(method: str, recs: list, pairs_for_grpo: list, reward_fn, a: argparse.Namespace, draw_fn=None) -> Path:
    """Train one preference variant; returns its merged checkpoint folder."""
    tag = {"dpo": f"dpo-{a.reduction}-b{a.beta}" + ("-matches" if a.draws == "matches" else ""), "anchor": "anchor-only", "grpo": f"grpo-n{a.group}" + ("-matches" if a.draws == "matches" else "")
           + (f"-dw{a.draw_weight:g}" if a.draw_weight else ""),
           "exact": ("exact-" if a.exact_teacher == "classical" else f"exact-{a.exact_teacher}-") + f"{a.divergence}-b{a.exact_beta:g}-p{a.exact_pairs}-aw{a.anchor_weight:g}-st{a.steps}-lr{a.lr:g}"
           + (f"-q{a.draws_per_pair}" if a.draws_per_pair else "") + gap_suffix(a),
           "exact-anchor": f"exact-anchor-only-p{a.exact_pairs}-aw{a.anchor_weight:g}-st{a.steps}-lr{a.lr:g}"}[method] \
        + (f"-{a.size}px" if a.size != 128 else "") + (f"-s{a.train_seed}" if a.train_seed != a.seed else "") + a.tag
    out = a.out / tag
    anchor = None
    if a.anchor_data.is_dir():
        from vibe3r.recon.train import PairStream

        anchor = PairStream(a.anchor_data, batch_size=4, seed=a.train_seed)
    t0 = time.time()
    if method in ("dpo", "anchor"):  # anchor: the control, the same run without the preference loss
        cfg = DPOConfig(beta=a.beta, lr=a.lr, steps=a.steps, batch_size=4, reduction=a.reduction, draws=a.draws,
                        anchor_weight=a.anchor_weight if anchor else 0.0, threads=a.threads, seed=a.train_seed, ckpt_every=20,
                        preference_weight=0.0 if method == "anchor" else 1.0)
        last = DPOTrainer(ReconModel.from_pretrained(a.ckpt), a.temperature, cfg, out).train(recs, anchor_batches=anchor, resume=out.is_dir())
    elif method in ("exact", "exact-anchor"):  # exact-anchor: its control, the same run with the exact loss weighted 0
        from vibe3r.preference.exact import ExactConfig, ExactTrainer

        cfg = ExactConfig(beta=a.exact_beta, divergence=a.divergence, temperature=a.temperature, lr=a.lr, steps=a.steps,
                          batch_size=4, anchor_weight=a.anchor_weight if anchor else 0.0, threads=a.threads, seed=a.train_seed,
                          draws_per_pair=a.draws_per_pair or None, preference_weight=0.0 if method == "exact-anchor" else 1.0)
        last = ExactTrainer(ReconModel.from_pretrained(a.ckpt), cfg, out).train(exact_items(a), anchor_batches=anchor, resume=out.is_dir())
    else:
        from vibe3r.preference.grpo import GRPOConfig, GRPOTrainer

        cfg = GRPOConfig(n=a.group, temperature=a.temperature, lr=a.lr, steps=a.steps, draws=a.draws, draw_weight=a.draw_weight, anchor_weight=a.anchor_weight if anchor else 0.0,
                         threads=a.threads, seed=a.train_seed, ckpt_every=10)
        last = GRPOTrainer(ReconModel.from_pretrained(a.ckpt), cfg, out).train(pairs_for_grpo, reward_fn, anchor_batches=anchor,
                                                                               resume=out.is_dir(), draw_reward_fn=draw_fn)
    print(f"{tag}: {cfg.steps} steps, {time.time() - t0:.0f}s wall; last {json.dumps(last, default=str)}", flush=True)
    return out / "merged"


def row(label: str, res: dict) -> str:
    cells = []
    for name in ("7scenes", "tum", "synthetic"):
        if name in res:
            s = res[name]["all"]
            cells.append(f"{s['auc5']:.1f}/{s['auc10']:.1f}/{s['auc20']:.1f}, {s['median_rot']:.2f}°")
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "pref-bench")
    ap.add_argument("--ckpt", type=Path, default=ROOT / "weights" / "recon-base")
    ap.add_argument("--anchor-data", type=Path, default=ROOT / "data" / "sim-pairs-128")
    ap.add_argument("--synthetic-list", default="", help="held-out synthetic SuperGlue list (bench/synthetic_pairs.py)")
    ap.add_argument("--synthetic-root", default=None)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--methods", default="dpo", help="comma list of dpo, grpo, anchor (the control: the anchor loss alone), "
                    "exact, exact-anchor (its control)")
    ap.add_argument("--anchor-weight", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--reduction", default="sum")
    ap.add_argument("--draw-weight", type=float, default=0.0, help="grpo: weight of the per-draw advantages (rewards.draw_rewards)")
    ap.add_argument("--draws", default="all", help="all | matches: the draws a sample's DPO log-likelihood counts")
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--grpo-pairs", type=int, default=0, help="GRPO on this many fresh pairs of frames 0-496 (0: the preference pairs)")
    ap.add_argument("--exact-pairs", type=int, default=120, help="exact: pairs of frames 0-496 (with a classical pose) to train on")
    ap.add_argument("--exact-gap", type=int, nargs=2, default=[3, 15], metavar=("MIN", "MAX"),
                    help="exact: frame distance of the pairs in the 4-frame-strided capture (3 15 = 12-60 frames apart; "
                         "15 25 = 60-100 frames, TUM-like motion)")
    ap.add_argument("--exact-min-inliers", type=int, default=50, help="exact: pairs whose classical pose has fewer inliers are dropped")
    ap.add_argument("--exact-beta", type=float, default=1.0, help="exact: KL weight β in pixels of Sampson distance")
    ap.add_argument("--exact-teacher", default="classical", help="exact: the pose the rewards use: classical (two-view RootSIFT) | "
                    "sfm (--sfm-poses) | sfm-points (the capture's SfM, run here and cached in --sfm-cache: its poses, and "
                    "point-to-point rewards on the cells its points land on) | "
                    "gt (ground truth: an upper bound of the method, for the record only)")
    ap.add_argument("--sfm-cache", default="runs/sfm", help="exact --exact-teacher sfm-points: folder of the SfM cache")
    ap.add_argument("--sfm-poses", default="", help="exact --exact-teacher sfm, --align sfm: JSON {frame ordinal: cam2world} of the "
                    "capture's SfM (bench/sfm_pseudo_gt.py --out-poses, or a preference.sfm.capture_poses cache file)")
    ap.add_argument("--divergence", default="reverse", help="exact: reverse (the RL objective) | forward (distillation)")
    ap.add_argument("--draws-per-pair", type=int, default=0, help="exact: forward and backward draws sampled per pair and step "
                    "(0: all; 1024 makes 256 px affordable)")
    ap.add_argument("--pair-gap", type=int, nargs=2, default=[3, 15], metavar=("MIN", "MAX"),
                    help="dpo, grpo: frame gap of the sampled pairs (ordinal frames; 15 25 = the wide pairs)")
    ap.add_argument("--align", choices=["none", "sfm"], default="none", help="dpo, grpo: sfm = score every sample also against "
                    "the capture's SfM (--sfm-poses), the rewards' alignment term")
    ap.add_argument("--reward-weights", type=float, nargs=3, default=None, metavar=("CLASSICAL", "CYCLE", "ALIGNMENT"),
                    help="dpo, grpo: weights of the combined reward (default: preference.rewards.RewardConfig's)")
    ap.add_argument("--no-eval", action="store_true", help="train only (evaluate with bench/real_eval_large.py)")
    ap.add_argument("--tag", default="", help="suffix of the variant's folder")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--per-pair", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the preference pairs")
    ap.add_argument("--train-seed", type=int, default=None, help="seed of the training run (record order, draws, anchor); "
                    "default --seed. Repeat a variant over training seeds to see the run-to-run spread")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    a.train_seed = a.seed if a.train_seed is None else a.train_seed
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in a.methods.split(",") if m]
    recs, pair_ij = [], []
    if {"dpo", "anchor"} & set(methods) or ("grpo" in methods and not a.grpo_pairs):  # exact needs no samples
        with PreferenceStore(a.out / "preferences.sqlite") as store:
            sample_stage(store, a.ckpt, a)
            if not store.preferences(round=1):
                store.reweight(1, reward_config(a))  # samples drawn before a change of the weights
                n = store.prefer_by_reward(round=1, model_version="sft", min_margin=0.05, per_pair=a.per_pair)
                print(f"{n} reward preferences", flush=True)
            print(json.dumps(store.summary(), indent=1))
            recs = records(store, a)
            pair_ij = sorted({(p.i, p.j) for p in store.preferences(round=1)})
    table = [] if a.no_eval else [row("SFT (weights/recon-base)", evaluate(a.ckpt, "SFT", a, a.out / "eval-sft.json"))]
    reward_fn, grpo_pairs_, draw_fn = None, [], None
    if "grpo" in methods:
        spec = str(REAL / "7scenes-redkitchen") + "@0:125"
        small, full = load_capture(spec, size=a.size), load_capture(spec)
        colour_focal(small, full)
        sampler = CaptureSampler(MatchPolicy(ReconModel.from_pretrained(a.ckpt), temperature=a.temperature), small, full,
                                 reward_config(a), poses=alignment(a))
        if a.grpo_pairs:
            pair_ij = choose_pairs(len(small.images), a.grpo_pairs, *a.pair_gap, a.seed + 7)
        grpo_pairs_, reward_fn, draw_fn = grpo_pairs({"7scenes": sampler}, [("7scenes", i, j) for i, j in pair_ij])

    for method in methods:
        merged = train_variant(method, recs, grpo_pairs_, reward_fn, a, draw_fn)
        tag = merged.parent.name
        if a.no_eval:
            continue
        table.append(row(f"SFT+{tag}", evaluate(merged, tag, a, a.out / f"eval-{tag}.json")))
    print("\n| model | 7-Scenes AUC@5/10/20, med rot | TUM | synthetic |\n|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
