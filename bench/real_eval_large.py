"""Compare reconstruction checkpoints on real pairs with enough pairs to tell them apart.

The fixed lists of ``../shared/data/real/eval-pairs`` hold 100 (7-Scenes) and 42 (TUM) pairs: AUC@10 of two
near-identical checkpoints differs by up to ±4 on them, which is larger than most effects this project
measures. This script adds a larger list drawn by the same rule from the same held-out frames — 7-Scenes
redkitchen frames 500–996 (never used for training or preference data), pairs 12–60 frames apart, the
list's K = 585 as in the fixed list — and evaluates every checkpoint on it, on the fixed TUM list and on the
held-out synthetic pairs (128 px, mutual NN + USAC, as everywhere in bench/).

Names ``group/member`` (e.g. ``sim/s0 … sim/s4``) are averaged per group; every row and group gets a paired
bootstrap interval of its AUC@10 difference to the first ``--ckpt`` (the same resampled pairs for both, 2000
resamples, 90 %), so a difference is only called one when its interval excludes 0.

    .venv/bin/python bench/real_eval_large.py --ckpt sft=weights/recon-base --ckpt sim/s1=DIR ... --ckpt warp/s0=DIR ...

Per-pair errors are cached in ``--cache`` by checkpoint content, so re-running with more checkpoints only
evaluates the new ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.config import load_config  # noqa: E402
from vibe3r.eval.pairs import evaluate_pairs  # noqa: E402
from vibe3r.geometry import pose_auc  # noqa: E402
from vibe3r.loop.stage import file_sha256  # noqa: E402
from vibe3r.loop.stages import capture_pair_list, capture_pairs_seed  # noqa: E402
from vibe3r.recon.pose import make_model_estimator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def large_7scenes_list(n_pairs: int) -> tuple[Path, Path]:
    """``n_pairs`` pairs of 7-Scenes frames 500–996, 3–15 frames of the 4-frame-strided capture apart
    (= 12–60 original frames, the fixed list's rule), seeded; written once under bench/pairs/."""
    path = ROOT / "bench" / "pairs" / f"7scenes-redkitchen-second-half-{n_pairs}.txt"
    if not path.is_file():  # the list the loop draws for loop.real_captures (same capture, count and seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        capture_pair_list(f"{REAL / '7scenes-redkitchen'}@125:250", n_pairs, capture_pairs_seed(load_config(None)), path, "--pairs")
    return path, REAL / "7scenes-redkitchen"


def pair_errors(ckpt: Path, weights: str, lst: Path, root: Path | None, cache: Path, size: int) -> np.ndarray:
    """max(rot, tdir) per pair (inf = failure), cached by (weights hash, list, size)."""
    key = cache / f"{weights[:16]}-{lst.stem}-{file_sha256(lst)[:8]}-{size}.json"
    if key.is_file():
        return np.array(json.loads(key.read_text()), dtype=np.float64)
    ev = evaluate_pairs(lst, make_model_estimator(ckpt, threads=1, ransac="usac_accurate"), size, root=root)
    err = [r.err for r in ev.results]
    cache.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps([e if np.isfinite(e) else 1e9 for e in err]))
    return np.array(err, dtype=np.float64)


def auc10(err: np.ndarray) -> float:
    return pose_auc(err, (10,))[0]


def paired_interval(ref: np.ndarray, members: list[np.ndarray], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """90 % interval of mean-over-members AUC@10 minus the reference's, resampling pairs jointly."""
    rng = np.random.default_rng(seed)
    d = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, len(ref), len(ref))
        d[b] = np.mean([auc10(m[i]) for m in members]) - auc10(ref[i])
    return float(np.quantile(d, 0.05)), float(np.quantile(d, 0.95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", action="append", required=True, help="NAME=CHECKPOINT_DIR (first = reference); NAME group/member averages a group")
    ap.add_argument("--pairs", type=int, default=500, help="pairs of the large 7-Scenes list")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--no-synthetic", action="store_true", help="skip the held-out synthetic pairs")
    ap.add_argument("--only", action="append", default=None, help="evaluate only these lists (7S-500, 7S-100, TUM-42, synthetic-320)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "real_eval_large")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ckpts = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in a.ckpt]
    lists = {"7S-500": large_7scenes_list(a.pairs),
             "7S-100": (REAL / "eval-pairs" / "7scenes-redkitchen-second-half.txt", None),
             "TUM-42": (REAL / "eval-pairs" / "tum-fr3-long-office-sequence.txt", None)}
    syn = ROOT / "data" / "synthetic-heldout-128" / "superglue" / "pairs.txt"
    if not a.no_synthetic and syn.is_file():
        lists["synthetic-320"] = (syn, syn.parent)
    if a.only:
        lists = {k: v for k, v in lists.items() if k in a.only}
    errs = {}
    for name, ck in ckpts:
        weights = file_sha256(ck / "model.safetensors")  # once per checkpoint, not per list
        errs[name] = {ln: pair_errors(ck, weights, lst, root, a.cache, a.size) for ln, (lst, root) in lists.items()}
    ref = ckpts[0][0]
    groups: dict[str, list[str]] = defaultdict(list)
    for name, _ in ckpts:
        groups[name.split("/")[0]].append(name)
    out: dict[str, dict] = {}
    print(f"AUC@10 at {a.size} px (USAC); [90 % paired-bootstrap interval of the difference to {ref}]")
    print(f"{'model':<18}" + "".join(f"{ln:>30}" for ln in lists))
    rows = [(n, [n]) for n, _ in ckpts] + [(f"{g} (mean of {len(m)})", m) for g, m in groups.items() if len(m) > 1]
    for label, members in rows:
        cells, rec = [], {}
        for ln in lists:
            vals = [auc10(errs[m][ln]) for m in members]
            v = float(np.mean(vals))
            if members == [ref]:
                cells.append(f"{v:6.2f}{'':>24}")
                rec[ln] = {"auc10": v}
            else:
                lo, hi = paired_interval(errs[ref][ln], [errs[m][ln] for m in members])
                cells.append(f"{v:6.2f} {v - auc10(errs[ref][ln]):+6.2f} [{lo:+6.2f},{hi:+6.2f}]")
                rec[ln] = {"auc10": v, "delta": v - auc10(errs[ref][ln]), "interval90": [lo, hi]}
        print(f"{label:<18}" + "".join(f"{c:>30}" for c in cells), flush=True)
        out[label] = rec
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
