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
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.config import load_config  # noqa: E402
from vibe3r.eval.pairs import evaluate_pairs, make_sift_estimator  # noqa: E402
from vibe3r.geometry import pose_auc  # noqa: E402
from vibe3r.loop.stage import file_sha256  # noqa: E402
from vibe3r.loop.stages import capture_pair_list, capture_pairs_seed  # noqa: E402
from vibe3r.recon.matching import SIM_DTYPES  # noqa: E402
from vibe3r.recon.pose import make_model_estimator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def large_7scenes_list(n_pairs: int, gaps: tuple[int, int] = (3, 15)) -> tuple[Path, Path]:
    """``n_pairs`` pairs of 7-Scenes frames 500–996, ``gaps`` frames of the 4-frame-strided capture apart
    (3–15 = 12–60 original frames, the fixed list's rule; 15–25 = 60–100 frames, median rotation 17 deg and
    baseline 0.5 m, close to the TUM list's 12 deg and 0.6 m), seeded; written once under bench/pairs/."""
    tag = "" if gaps == (3, 15) else f"-gap{gaps[0]}-{gaps[1]}"
    path = ROOT / "bench" / "pairs" / f"7scenes-redkitchen-second-half-{n_pairs}{tag}.txt"
    if not path.is_file():  # the list the loop draws for loop.real_captures (same capture, count and seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        capture_pair_list(f"{REAL / '7scenes-redkitchen'}@125:250", n_pairs, capture_pairs_seed(load_config(None)), path, "--pairs", gaps)
    return path, REAL / "7scenes-redkitchen"


def pair_errors(ckpt: Path | str, weights: str, lst: Path, root: Path | None, cache: Path, size: int,
                coarse: int = 1, precision: str = "fp32") -> np.ndarray:
    """(rotation, translation-direction) error per pair in degrees, shape (n, 2) (inf = failure), cached by
    (weights hash, list, size, coarse factor, precision). ``ckpt`` ``"sift"`` is OpenCV SIFT at ``size`` (the
    README reference); ``coarse`` > 1 matches the model's descriptors coarse-to-fine, ``precision`` "bf16"
    on bf16 similarities (``match_descriptors``)."""
    tag = "" if ckpt == "sift" else (f"-c{coarse}" if coarse > 1 else "") + ("-bf16" if precision == "bf16" else "")
    key = cache / f"{weights[:16]}-{lst.stem}-{file_sha256(lst)[:8]}-{size}{tag}-rt.json"
    if key.is_file():
        return np.array(json.loads(key.read_text()), dtype=np.float64).reshape(-1, 2)
    est = (make_sift_estimator(ransac="usac_accurate") if ckpt == "sift"
           else make_model_estimator(ckpt, threads=1, ransac="usac_accurate", coarse_factor=coarse, precision=precision))
    t0 = time.perf_counter()
    ev = evaluate_pairs(lst, est, size, root=root)
    print(f"  {ckpt} on {lst.name} at {size} px{tag}: {(time.perf_counter() - t0) / max(len(ev.results), 1):.2f} s/pair", flush=True)
    rt = np.array([[r.rot_err, r.tdir_err] for r in ev.results], dtype=np.float64)
    cache.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(np.where(np.isfinite(rt), rt, 1e9).tolist()))
    return rt


def auc10(rt: np.ndarray) -> float:
    """AUC@10 of max(rotation, translation direction), percent."""
    return pose_auc(rt.max(1), (10,))[0]


def auc5(rt: np.ndarray) -> float:
    return pose_auc(rt.max(1), (5,))[0]


def auc20(rt: np.ndarray) -> float:
    return pose_auc(rt.max(1), (20,))[0]


def med_rot(rt: np.ndarray) -> float:
    """Median rotation error, degrees (failures count as infinite)."""
    return float(np.median(rt[:, 0]))


METRICS = {"auc5": auc5, "auc10": auc10, "auc20": auc20, "med_rot": med_rot}
LABELS = {"auc5": "AUC@5", "auc10": "AUC@10", "auc20": "AUC@20", "med_rot": "Median rotation error (deg)"}


def paired_interval(ref: np.ndarray, members: list[np.ndarray], metric=auc10, n_boot: int = 2000,  # noqa: ANN001
                    seed: int = 0) -> tuple[float, float]:
    """90 % interval of mean-over-members ``metric`` minus the reference's, resampling pairs jointly."""
    rng = np.random.default_rng(seed)
    d = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, len(ref), len(ref))
        d[b] = np.mean([metric(m[i]) for m in members]) - metric(ref[i])
    return float(np.quantile(d, 0.05)), float(np.quantile(d, 0.95))


def gt_baselines(lst: Path) -> np.ndarray:
    """|t| of each pair's GT T_0to1 (the list's last 16 fields; metres for the real lists)."""
    rows = [line.split() for line in lst.read_text().splitlines() if line.strip()]
    return np.array([np.linalg.norm(np.array(r[-16:], dtype=np.float64).reshape(4, 4)[:3, 3]) for r in rows])


def print_by_baseline(ln: str, lst: Path, errs: dict[str, np.ndarray], edges=(0.0, 0.1, 0.15, 0.25, 0.4, np.inf)) -> None:  # noqa: ANN001
    """Median rotation / translation-direction error per baseline bin: a short baseline makes the direction
    of translation ill-conditioned for any method, which caps AUC@10 of max(rot, tdir) on such pairs."""
    b = gt_baselines(lst)
    bins = [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    print(f"\n{ln}: median rotation / translation-direction error (deg) per GT baseline (m)")
    print(f"{'model':<18}" + "".join(f"{f'{lo:.2f}-{hi:.2f} (n={int(((b >= lo) & (b < hi)).sum())})':>22}" for lo, hi in bins))
    for name, rt in errs.items():
        cells = []
        for lo, hi in bins:
            m = (b >= lo) & (b < hi)
            cells.append(f"{np.median(rt[m, 0]):6.2f} / {np.median(rt[m, 1]):6.2f}" if m.any() else "-")
        print(f"{name:<18}" + "".join(f"{c:>22}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", action="append", required=True,
                    help="NAME=CHECKPOINT_DIR[,coarse=F][,bf16] (first = reference); NAME group/member averages a group; DIR "
                         "'sift' = OpenCV SIFT at --size; coarse=F overrides --coarse for this checkpoint, bf16 --precision")
    ap.add_argument("--metric", action="append", choices=sorted(METRICS), default=None,
                    help="auc10: AUC@10 of max(rot, tdir) (percent); med_rot: median rotation error (degrees); default both")
    ap.add_argument("--pairs", type=int, default=500, help="pairs of the large 7-Scenes list")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--coarse", type=int, default=1,
                    help="coarse-to-fine factor of the model's descriptor matching (1 = dense mutual NN over every cell)")
    ap.add_argument("--precision", choices=tuple(SIM_DTYPES), default="fp32",
                    help="similarity precision of the model's descriptor matching (bf16: 1.6-1.9x faster at 256 px)")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the held-out synthetic pairs")
    ap.add_argument("--wide-pairs", type=int, default=300, help="pairs of the wide 7-Scenes list (60-100 frames apart)")
    ap.add_argument("--only", action="append", default=None,
                    help="evaluate only these lists (7S-500, 7S-100, TUM-42, synthetic-320, 7S-wide-300); default all but 7S-wide")
    ap.add_argument("--list", action="append", default=[], metavar="NAME=FILE[@ROOT]",
                    help="also evaluate this SuperGlue list (e.g. bench/sfm_pseudo_gt.py's SfM pseudo-GT list; ROOT = its images)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "real_eval_large")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--by-baseline", action="store_true",
                    help="also print median rotation / translation-direction error per GT baseline bin of each list")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ckpts, coarse, precision = [], {}, {}
    for spec in a.ckpt:
        name, _, d = spec.partition("=")
        d, *opts = d.split(",")
        ckpts.append((name, d if d == "sift" else Path(d)))
        coarse[name], precision[name] = a.coarse, a.precision
        for o in opts:
            if o == "bf16":
                precision[name] = "bf16"
            elif o.startswith("coarse="):
                coarse[name] = int(o.removeprefix("coarse="))
            else:
                ap.error(f"--ckpt {spec}: unknown option {o!r} (coarse=F or bf16)")
    lists = {"7S-500": large_7scenes_list(a.pairs),
             "7S-100": (REAL / "eval-pairs" / "7scenes-redkitchen-second-half.txt", None),
             "TUM-42": (REAL / "eval-pairs" / "tum-fr3-long-office-sequence.txt", None)}
    wide = f"7S-wide-{a.wide_pairs}"
    if a.only and wide in a.only:
        lists[wide] = large_7scenes_list(a.wide_pairs, (15, 25))
    syn = ROOT / "data" / "synthetic-heldout-128" / "superglue" / "pairs.txt"
    if not a.no_synthetic and syn.is_file():
        lists["synthetic-320"] = (syn, syn.parent)
    if a.only:
        lists = {k: v for k, v in lists.items() if k in a.only}
    for spec in a.list:
        name, _, where = spec.partition("=")
        file, _, root = where.partition("@")
        lists[name] = (Path(file), Path(root) if root else None)
    errs = {}
    for name, ck in ckpts:
        weights = "sift-usac-8000-r0.8" if ck == "sift" else file_sha256(ck / "model.safetensors")  # once per checkpoint
        errs[name] = {ln: pair_errors(ck, weights, lst, root, a.cache, a.size, coarse[name], precision[name])
                      for ln, (lst, root) in lists.items()}
    ref = ckpts[0][0]
    groups: dict[str, list[str]] = defaultdict(list)
    for name, _ in ckpts:
        groups[name.split("/")[0]].append(name)
    out: dict[str, dict] = defaultdict(dict)
    rows = [(n, [n]) for n, _ in ckpts] + [(f"{g} (mean of {len(m)})", m) for g, m in groups.items() if len(m) > 1]
    for mname in a.metric or ["auc10", "med_rot"]:
        metric = METRICS[mname]
        print(f"\n{LABELS[mname]} at {a.size} px (USAC); [90 % paired-bootstrap interval of the difference to {ref}]")
        print(f"{'model':<18}" + "".join(f"{ln:>30}" for ln in lists))
        for label, members in rows:
            cells = []
            for ln in lists:
                v = float(np.mean([metric(errs[m][ln]) for m in members]))
                rec = out[label].setdefault(ln, {})
                rec[mname] = v
                if members == [ref]:
                    cells.append(f"{v:6.2f}{'':>24}")
                    continue
                lo, hi = paired_interval(errs[ref][ln], [errs[m][ln] for m in members], metric)
                cells.append(f"{v:6.2f} {v - metric(errs[ref][ln]):+6.2f} [{lo:+6.2f},{hi:+6.2f}]")
                rec[f"{mname}_delta"], rec[f"{mname}_interval90"] = v - metric(errs[ref][ln]), [lo, hi]
            print(f"{label:<18}" + "".join(f"{c:>30}" for c in cells), flush=True)
    if a.by_baseline:
        for ln, (lst, _) in lists.items():
            print_by_baseline(ln, lst, {n: errs[n][ln] for n, _ in ckpts})
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
