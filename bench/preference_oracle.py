"""Do the preference trainers move the policy where a reward points? An oracle check on synthetic pairs.

The reward here reads ground truth (minus the rotation error plus the translation-direction error of a
sampled reconstruction to the true relative pose; no pose = -60): it is *not* a usable reward, only a
known-good signal that isolates the optimisers from reward quality. Starting from the shipped
checkpoint, GRPO (reward in the loop) and DPO (best-vs-worst of n samples per pair, scored once) train
LoRA adapters on box-room pairs; the table compares held-out box-room pairs before and after: the
policy's expected reward (n samples with fixed seeds) and the mode's errors.

    OMP_NUM_THREADS=1 .venv/bin/python bench/preference_oracle.py --out runs/pref-oracle --pairs 8 --steps 20
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vibe3r import geometry  # noqa: E402
from vibe3r.preference.dpo import DPOConfig, DPOTrainer, Preference  # noqa: E402
from vibe3r.preference.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from vibe3r.preference.lora import LoRAConfig, LoraReconModel  # noqa: E402
from vibe3r.recon.model import ReconModel  # noqa: E402
from vibe3r.recon.policy import MatchPolicy, PairInput  # noqa: E402
from vibe3r.recon.synthetic import box_room_video  # noqa: E402


def make_pairs(seeds, H, W, gap, patch):
    pairs, gts = [], {}
    for s in seeds:
        gt = box_room_video(s, n_frames=gap + 1, H=H, W=W, step=0.12, turn_deg=5.0)
        p = PairInput.from_uint8(gt.images[0], gt.images[gap], gt.K[0], gt.K[gap], patch)
        pairs.append(p)
        gts[id(p)] = np.linalg.inv(gt.c2w[gap]) @ gt.c2w[0]
    return pairs, gts


def errors(T, T_gt):
    if T is None:
        return 60.0, 60.0
    r = float(geometry.rotation_error_deg(torch.as_tensor(T[:3, :3]), torch.as_tensor(T_gt[:3, :3])))
    a, b = T[:3, 3], T_gt[:3, 3]
    t = float(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12), -1, 1))))
    return r, t


def evaluate(model, pairs, gts, n, temperature):
    pol = MatchPolicy(model, temperature)
    rew, mode_r, mode_t, fails = [], [], [], []
    for p in pairs:
        ss = pol.sample(p, n, seed=12345, include_mode=True)
        e = [errors(s.T21, gts[id(p)]) for s in ss]
        rew.append(-np.mean([r + t for r, t in e[1:]]))
        mode_r.append(e[0][0])
        mode_t.append(e[0][1])
        fails.append(np.mean([s.T21 is None for s in ss[1:]]))
    return {"exp_reward": float(np.mean(rew)), "mode_rot_med": float(np.median(mode_r)), "mode_tdir_med": float(np.median(mode_t)),
            "fail": float(np.mean(fails))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/pref-oracle"))
    ap.add_argument("--ckpt", type=Path, default=Path(__file__).resolve().parents[1] / "weights" / "recon-base")
    ap.add_argument("--pairs", type=int, default=8, help="training pairs (held-out: the same number)")
    ap.add_argument("--size", type=str, default="48x64", help="HxW")
    ap.add_argument("--gap", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--methods", type=str, default="grpo,dpo")
    a = ap.parse_args()
    torch.set_num_threads(1)
    H, W = map(int, a.size.split("x"))
    base = ReconModel.from_pretrained(a.ckpt)
    p = base.config.patch_size
    train, gt_train = make_pairs(range(a.pairs), H, W, a.gap, p)
    held, gt_held = make_pairs(range(1000, 1000 + a.pairs), H, W, a.gap, p)
    gts = {**gt_train, **gt_held}

    def reward(pair, samples):
        return np.array([-sum(errors(s.T21, gts[id(pair)])) for s in samples])

    results = {"SFT": {"train": evaluate(base, train, gts, a.n, a.temperature), "held": evaluate(base, held, gts, a.n, a.temperature)}}
    print("SFT", json.dumps(results["SFT"]), flush=True)
    lora = LoRAConfig(r=8, alpha=16)
    for method in a.methods.split(","):
        t0 = time.time()
        model = LoraReconModel(copy.deepcopy(base), lora)
        out = a.out / method
        if method == "grpo":
            cfg = GRPOConfig(n=a.n, steps=a.steps, batch_size=2, num_iterations=2, lr=a.lr, beta=0.04, temperature=a.temperature,
                             save_merged=False)
            last = GRPOTrainer(model, cfg, out, progress=False).train(train, reward, resume=(out / "trainer_state.json").is_file())
        else:
            pol = MatchPolicy(base, a.temperature)
            prefs = []
            for pair in train:
                ss = pol.sample(pair, a.n, seed=0)
                order = np.argsort(-reward(pair, ss))
                prefs += [Preference(pair, ss[order[k]], ss[order[-1 - k]]) for k in range(2)]
            cfg = DPOConfig(steps=a.steps, batch_size=4, lr=a.lr, beta=0.1, anchor_weight=0.0, save_merged=False)
            last = DPOTrainer(model, a.temperature, cfg, out, progress=False).train(prefs, resume=(out / "trainer_state.json").is_file())
        results[method] = {"train": evaluate(model, train, gts, a.n, a.temperature), "held": evaluate(model, held, gts, a.n, a.temperature),
                           "minutes": round((time.time() - t0) / 60, 2), "last": {k: round(v, 4) for k, v in last.items()}}
        print(method, json.dumps(results[method]), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n| model | split | expected reward | mode rot med (°) | mode t-dir med (°) | fail |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        for split in ("train", "held"):
            s = r[split]
            print(f"| {name} | {split} | {s['exp_reward']:.2f} | {s['mode_rot_med']:.2f} | {s['mode_tdir_med']:.2f} | {s['fail']:.2f} |")


if __name__ == "__main__":
    main()
