"""Depth of the pointmap head on real frames with a depth camera: AbsRel and δ<1.25 per checkpoint.

The pose benches (``bench/real_eval_large.py``) judge only the matches. This one judges the geometry the
pointmap head regresses, X^{1,1}: for each pair, view 1's predicted depth (the z of ``pts11``) against the
frame's depth-camera image, median-scaled per frame (``geometry.depth_metrics``; pointmaps are up to scale),
on the pixels where the depth camera has a value. A flat wall (a constant depth) is printed beside the models.

Captures (never in any training or preference data of this project):

* ``7S-wide-300``: the held-out wide 7-Scenes pairs (frames 500–996, 60–100 frames apart), view 1 of each.
  7-Scenes' depth camera is not registered with the colour one (``bench/gt_quality.py``: 4.7 px at 640 px,
  about 1.9 px at 256 px), so edges carry an error every model shares.
* ``3DMatch-studyroom`` and ``slambook2-dining``: two other rooms, 5 RGB-D frames each, all 20 ordered pairs.

Every row gets a paired-bootstrap 90 % interval of its mean-AbsRel difference to the first ``--ckpt``.

    .venv/bin/python bench/real_depth.py --ckpt sft=weights/recon-base --ckpt sfmft/s0=DIR ... [--size 256]
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

from real_eval_large import paired_interval  # noqa: E402  (bench/, the script's own folder)

from vibe3r.captures import load_capture, load_pairs  # noqa: E402
from vibe3r.geometry import depth_metrics  # noqa: E402
from vibe3r.loop.stage import file_sha256  # noqa: E402
from vibe3r.recon.model import ReconModel  # noqa: E402
from vibe3r.recon.pose import crop_to_multiple, to_tensor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
WIDE = ROOT / "bench" / "pairs" / "7scenes-redkitchen-second-half-300-gap15-25.txt"


def capture_pairs(name: str, size: int) -> tuple:
    """(capture at ``size``, [(i, j), …]) of one evaluation set."""
    if name == "7S-wide-300":
        cap = load_capture(f"{REAL / '7scenes-redkitchen'}@125:250", size=size)
        index = {n: k for k, n in enumerate(cap.frame_names)}
        stem = lambda n: n.removesuffix(".color.jpg")  # noqa: E731 - the list names files, the capture frames
        pairs = [(index[stem(p.name0)], index[stem(p.name1)]) for p in load_pairs(WIDE, REAL / "7scenes-redkitchen")]
        return cap, pairs
    cap = load_capture(REAL / {"3DMatch-studyroom": "3dmatch-studyroom", "slambook2-dining": "slambook2-dining"}[name], size=size)
    n = len(cap)
    return cap, [(i, j) for i in range(n) for j in range(n) if i != j]


@torch.no_grad()
def pair_depth(ckpt: str, cap, pairs: list[tuple[int, int]], cache: Path, tag: str) -> np.ndarray:  # noqa: ANN001
    """(AbsRel, δ1) of view 1's pointmap depth per pair, shape (n, 2); cached by weights and set. ``ckpt`` "flat"
    is a constant depth (the static prior)."""
    weights = "flat" if ckpt == "flat" else file_sha256(Path(ckpt) / "model.safetensors")[:16]
    key = cache / f"{weights}-{tag}-depth.json"
    if key.is_file():
        return np.array(json.loads(key.read_text()), dtype=np.float64).reshape(-1, 2)
    model = None if ckpt == "flat" else ReconModel.from_pretrained(ckpt).eval()
    p = 1 if model is None else model.config.patch_size
    rows, t0 = [], time.perf_counter()
    for i, j in pairs:
        img1, K1 = crop_to_multiple(cap.images[i], cap.K[i], p)
        img2, _ = crop_to_multiple(cap.images[j], cap.K[j], p)
        gt = crop_to_multiple(cap.depth[i], cap.K[i], p)[0]  # the same centre crop as the image
        if model is None:
            z = np.ones_like(gt)
        else:
            z = model(to_tensor(img1), to_tensor(img2))["pts11"][0, ..., 2].float().numpy()
        m = depth_metrics(z, gt)
        rows.append([m["abs_rel"], m["delta1"]])
    print(f"  {ckpt} on {tag}: {(time.perf_counter() - t0) / max(len(pairs), 1):.2f} s/pair", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(rows))
    return np.array(rows, dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", action="append", required=True, help="NAME=CHECKPOINT_DIR (first = reference); group/member averages")
    ap.add_argument("--only", action="append", choices=["7S-wide-300", "3DMatch-studyroom", "slambook2-dining"], default=None)
    ap.add_argument("--size", type=int, default=256, help="longer image side the model sees")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "real_depth")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ckpts = dict(c.split("=", 1) for c in a.ckpt)
    ckpts["flat wall"] = "flat"
    for name in a.only or ["7S-wide-300", "3DMatch-studyroom", "slambook2-dining"]:
        cap, pairs = capture_pairs(name, a.size)
        tag = f"{name}-{a.size}" + (f"-{file_sha256(WIDE)[:8]}" if name == "7S-wide-300" else "")
        res = {n: pair_depth(c, cap, pairs, a.cache, tag) for n, c in ckpts.items()}
        groups: dict[str, list[str]] = defaultdict(list)
        for n in res:
            if "/" in n:
                groups[n.split("/")[0]].append(n)
        ref_name = next(iter(res))
        ref = res[ref_name]
        print(f"\n{name} ({len(pairs)} pairs, {cap.images.shape[2]}x{cap.images.shape[1]}): view-1 pointmap depth, median-scaled per frame")
        print(f"{'model':<20}{'AbsRel':>8}{'δ<1.25':>9}   AbsRel − {ref_name} [90 % interval]")
        rows = [(n, [res[n]]) for n in res] + [(f"{g} (mean of {len(m)})", [res[k] for k in m]) for g, m in groups.items() if len(m) > 1]
        for label, members in rows:
            absrel = np.mean([np.nanmean(m[:, 0]) for m in members])
            d1 = np.mean([np.nanmean(m[:, 1]) for m in members])
            diff = ""
            if members[0] is not ref:
                lo, hi = paired_interval(ref, members, metric=lambda m: np.nanmean(m[:, 0]))
                diff = f"   {absrel - np.nanmean(ref[:, 0]):+.4f} [{lo:+.4f}, {hi:+.4f}]"
            print(f"{label:<20}{absrel:8.4f}{d1:9.3f}{diff}", flush=True)


if __name__ == "__main__":
    main()
