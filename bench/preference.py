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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.captures import load_capture  # noqa: E402
from vibe3r.eval.pairs import evaluate_pairs, format_summary  # noqa: E402
from vibe3r.preference.dpo import DPOConfig, DPOTrainer  # noqa: E402
from vibe3r.preference.rewards import RewardConfig  # noqa: E402
from vibe3r.preference.sampling import CaptureSampler, choose_pairs  # noqa: E402
from vibe3r.preference.store import PreferenceStore  # noqa: E402
from vibe3r.recon.model import ReconModel  # noqa: E402
from vibe3r.recon.policy import MatchPolicy  # noqa: E402
from vibe3r.recon.pose import make_model_estimator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
EVAL = {"7scenes": REAL / "eval-pairs" / "7scenes-redkitchen-second-half.txt",
        "tum": REAL / "eval-pairs" / "tum-fr3-long-office-sequence.txt"}


def colour_focal(*caps, fx: float = 518.0, fy: float = 532.0) -> None:
    for c in caps:
        s = c.images.shape[2] / 640
        c.K[:, 0, 0], c.K[:, 1, 1] = fx * s, fy * s


def sample_stage(store: PreferenceStore, ckpt: Path, a: argparse.Namespace) -> None:
    spec = str(REAL / "7scenes-redkitchen") + "@0:125"
    small, full = load_capture(spec, size=a.size), load_capture(spec)
    colour_focal(small, full)
    policy = MatchPolicy(ReconModel.from_pretrained(ckpt), temperature=a.temperature)
    sampler = CaptureSampler(policy, small, full, RewardConfig())
    cap = store.add_capture(spec, "7scenes-redkitchen first half", len(small.images))
    pairs = choose_pairs(len(small.images), a.pairs, 3, 15, a.seed)
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


def evaluate(ckpt: Path, label: str, a: argparse.Namespace) -> dict:
    res = {}
    for name, lst in EVAL.items():
        est = make_model_estimator(ckpt, threads=a.threads, ransac="usac_accurate")
        ev = evaluate_pairs(lst, est, a.size, method_name=label)
        print(f"[{label}] {name}: {format_summary(ev)}", flush=True)
        js = ev.to_json()
        res[name] = {k: v for k, v in js.items() if k != "per_pair"}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "pref-bench")
    ap.add_argument("--ckpt", type=Path, default=ROOT / "weights" / "recon-base")
    ap.add_argument("--anchor-data", type=Path, default=ROOT / "data" / "sim-pairs-128")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--dpo-steps", type=int, default=80)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--per-pair", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-eval-sft", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    results = {}
    with PreferenceStore(a.out / "preferences.sqlite") as store:
        sample_stage(store, a.ckpt, a)
        if not store.preferences(round=1):
            store.reweight(1, RewardConfig())  # samples drawn before a change of the default weights
            n = store.prefer_by_reward(round=1, model_version="sft", min_margin=0.05, per_pair=a.per_pair)
            print(f"{n} reward preferences", flush=True)
        print(json.dumps(store.summary(), indent=1))
        recs = records(store, a)
    if not a.skip_eval_sft:
        results["sft"] = evaluate(a.ckpt, "SFT", a)
    cfg = DPOConfig(beta=a.beta, lr=a.lr, steps=a.dpo_steps, batch_size=4, anchor_weight=0.1 if a.anchor_data.is_dir() else 0.0,
                    threads=a.threads, seed=a.seed, ckpt_every=20)
    anchor = None
    if cfg.anchor_weight > 0:
        from vibe3r.recon.train import PairStream

        anchor = PairStream(a.anchor_data, batch_size=4, seed=a.seed)
    t0 = time.time()
    trainer = DPOTrainer(ReconModel.from_pretrained(a.ckpt), a.temperature, cfg, a.out / "dpo")
    last = trainer.train(recs, anchor_batches=anchor, resume=(a.out / "dpo").is_dir())
    print(f"DPO {cfg.steps} steps in {time.time() - t0:.0f}s: {last}", flush=True)
    merged = next((p for p in (a.out / "dpo").rglob("config.json") if (p.parent / "model.safetensors").is_file()), None)
    results["dpo"] = evaluate(merged.parent, "SFT+DPO", a)
    (a.out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
