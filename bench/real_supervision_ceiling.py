"""An upper bound, never a method: fine-tune the shipped base on 7-Scenes frames 0-496 *supervised with their
ground-truth depth and poses* (half of each batch; the other half simulator pairs), against the same
fine-tune on simulator pairs alone. If real-domain supervision of the same room cannot lift the evaluation
half, no reward computed from those frames can either. Evaluation: 7-Scenes frames 500-996 against the
shipped GT and against the SfM pseudo-GT (bench/sfm_pseudo_gt.py), TUM, held-out synthetic; 128 px, USAC.

    .venv/bin/python bench/real_supervision_ceiling.py --mode real --steps 120 --lr 2e-4
    .venv/bin/python bench/real_supervision_ceiling.py --mode sim --steps 120 --lr 2e-4

``--mode sfm`` is a method, not a bound: the real half of each batch is pairs of frames 0-496 supervised by
their own structure from motion (``vibe3r video sfm-pairs``: sparse SfM depth and SfM poses, no ground
truth read); ``--no-eval`` skips the 128-px evaluation below (use bench/real_eval_large.py at 256 px).

The real pairs (they hold 7-Scenes frames) are written to --work, outside the project.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.captures import load_capture  # noqa: E402
from vibe3r.config import DatasetConfig, load_config  # noqa: E402
from vibe3r.eval.pairs import evaluate_pairs, format_summary  # noqa: E402
from vibe3r.loop.stages import _init_checkpoint, mix_dataset, recipe  # noqa: E402
from vibe3r.preference.sampling import set_focal  # noqa: E402
from vibe3r.recon.pose import make_model_estimator  # noqa: E402
from vibe3r.recon.train import train  # noqa: E402
from vibe3r.video_gen.dataset import SHARD_FORMAT_VERSION, ShardWriter, VideoGT, covisibility_matrix, select_pairs  # noqa: E402
from vibe3r.video_gen.sfm_pairs import build_sfm_pairs  # noqa: E402
from vibe3r.video_gen.warp import WarpConfig, build_warp_pairs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def real_pairs(out: Path, n_pairs: int) -> Path:
    """Co-visible pairs of 7-Scenes frames 0-496 at 128x96 with GT depth and poses (colour focal 518, 532)."""
    if (out / "index.json").is_file():
        return out
    cap = load_capture(str(REAL / "7scenes-redkitchen") + "@0:125", size=128)
    set_focal(cap, 518.0, 532.0)
    gt = VideoGT(cap.images, cap.depth.astype(np.float32), cap.K, cap.cam2world, -1)
    dc = DatasetConfig()
    C = covisibility_matrix(gt.depth, gt.K, gt.c2w, dc.covis_tol, 15, 1)
    pairs = select_pairs(C, dc.model_copy(update={"pairs_per_video": n_pairs}), np.random.default_rng(0))
    wr = ShardWriter(out / "shards", 64)
    wr.add(0, gt, pairs)
    wr.flush()
    H, W = cap.images.shape[1:3]
    (out / "index.json").write_text(json.dumps({"format_version": SHARD_FORMAT_VERSION, "height": H, "width": W,
                                                "n_pairs": sum(s["pairs"] for s in wr.shards), "shards": wr.shards, "videos": []}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("real", "sim", "warp-gt", "warp-model", "sfm"), required=True)
    ap.add_argument("--seed", type=int, default=0, help="training seed (batch order, view swaps)")
    ap.add_argument("--views", type=int, default=4, help="warp modes: renders per real frame")
    ap.add_argument("--warp-capture", action="append", default=None,
                    help="warp modes: capture spec to re-render (repeatable; default 7-Scenes frames 0-496)")
    ap.add_argument("--eval-size", type=int, default=128, help="longer image side of the evaluation (the fine-tune trains at --sim's size)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--real-pairs", type=int, default=600, help="real: pairs drawn; sfm: at most this many SfM pairs")
    ap.add_argument("--sfm-gap", type=int, nargs=2, default=(1, 25), metavar=("MIN", "MAX"), help="sfm: frame gaps of the pairs")
    ap.add_argument("--sfm-cache", type=Path, default=ROOT / "runs" / "sfm", help="sfm: where the capture's SfM is cached")
    ap.add_argument("--sim-fraction", type=float, default=0.5, help="share of simulator pairs in the mix (not sim mode)")
    ap.add_argument("--no-eval", action="store_true", help="train only")
    ap.add_argument("--ckpt", type=Path, default=ROOT / "weights" / "recon-base")
    ap.add_argument("--sim", type=Path, default=ROOT / "data" / "sim-pairs-128")
    ap.add_argument("--synthetic-list", default=str(ROOT / "data" / "synthetic-heldout-128" / "superglue" / "pairs.txt"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/vibe3r-real-ceiling"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(None)
    cfg = cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"train_steps": a.steps, "lr": a.lr})})
    rc = recipe(cfg, a.ckpt)
    rc.train.seed = a.seed
    cfg = cfg.model_copy(update={"recon": rc})
    a.work.mkdir(parents=True, exist_ok=True)
    tag = ""
    if a.mode == "real":
        new = real_pairs(a.work / "real-7s-128", a.real_pairs)
    elif a.mode == "sfm":
        sim_idx = json.loads((a.sim / "index.json").read_text())
        size = (sim_idx["width"], sim_idx["height"])
        tag = f"-{size[0]}-g{a.sfm_gap[0]}-{a.sfm_gap[1]}-n{a.real_pairs}"
        new = a.work / f"sfm{tag}"
        if not (new / "index.json").is_file():
            idx = build_sfm_pairs([str(REAL / "7scenes-redkitchen") + "@0:125"], new, size=size, cache_dir=a.sfm_cache,
                                  min_gap=a.sfm_gap[0], max_gap=a.sfm_gap[1], max_pairs=a.real_pairs)
            print(f"sfm pairs: {idx['n_pairs']} ({json.dumps(idx['sfm']['captures'])})", flush=True)
    elif a.mode.startswith("warp"):
        caps = a.warp_capture or [str(REAL / "7scenes-redkitchen") + "@0:125"]
        tag = "" if a.warp_capture is None else "-" + hashlib.sha1("|".join(caps).encode()).hexdigest()[:8]
        new = a.work / f"{a.mode}-v{a.views}{tag}"
        if not (new / "index.json").is_file():
            t0 = time.time()
            idx = build_warp_pairs(caps, new, cfg=WarpConfig(views_per_frame=a.views),
                                   recon=a.ckpt if a.mode == "warp-model" else None,
                                   focal=(518.0, 532.0) if a.mode == "warp-gt" else None, progress=False)
            print(f"warp pairs ({idx['warp']['depth']}): {idx['n_pairs']} from {idx['warp']['frames']} frames in {time.time() - t0:.0f} s", flush=True)
    if a.mode != "sim":
        tag += "" if a.sim_fraction == 0.5 else f"-sf{a.sim_fraction:g}"
        data = a.work / f"mix-{a.mode}-s{a.seed}{tag}"
        mix = mix_dataset(new, [a.sim], a.sim_fraction, 0, data)
        print(f"{mix['new_pairs']} {a.mode} pairs + {mix['replay_pairs']} simulator pairs", flush=True)
    else:
        data = a.sim
    out = a.work / f"ft-{a.mode}-{a.steps}-{a.lr:g}-s{a.seed}{tag}"
    if out.exists():
        shutil.rmtree(out)
    _init_checkpoint(out, a.ckpt, rc)
    s = train(cfg, data, out, resume=True, progress=False)
    print(f"{a.mode}: {s['step']} steps, final loss {s['loss']:.3f} -> {out}", flush=True)
    if a.no_eval:
        return
    lists = {"7-Scenes (GT)": (REAL / "eval-pairs" / "7scenes-redkitchen-second-half.txt", None),
             "7-Scenes (SfM pseudo-GT)": (ROOT / "bench" / "pairs" / "7scenes-redkitchen-second-half-sfm.txt", REAL / "7scenes-redkitchen"),
             "TUM": (REAL / "eval-pairs" / "tum-fr3-long-office-sequence.txt", None),
             "synthetic": (Path(a.synthetic_list), Path(a.synthetic_list).parent)}
    for name, (lst, root) in lists.items():
        if lst.is_file():
            ev = evaluate_pairs(lst, make_model_estimator(out, threads=1, ransac="usac_accurate"), a.eval_size, root=root, method_name=a.mode)
            print(f"[{name}] {format_summary(ev)}", flush=True)


if __name__ == "__main__":
    main()
