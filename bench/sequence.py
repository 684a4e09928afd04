"""`vibe3r eval sequence` on the real captures with ground truth: model vs SIFT, and which depth to use.

Captures (../shared/data/real, see its README for which frames are for evaluation):

* 7-Scenes redkitchen, the evaluation half (ordinal frames 125-249 = frames 500-996), N evenly spread;
* TUM fr3 long office: ``sequence/`` (17 frames ~1 s apart, 16 with a GT pose: the first one
  precedes the motion-capture trajectory) has no depth, so the first and last posed frames of
  ``static-rgbd/`` (0.45 s apart, the 0.5 s before the sequence's second frame, with depth) are put in
  front: 18 frames, depth measured on the first 2.

For each capture and method (model = the shipped checkpoint, sift = SIFT + ratio + essential RANSAC into
the same alignment) it prints ATE (Sim(3)), RPE, and the depth metrics of the pointmap depth and of the
triangulated depth (per-frame median scaling), with the static prior.

    OMP_NUM_THREADS=1 .venv/bin/python bench/sequence.py --frames 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
SEVEN = f"{REAL / '7scenes-redkitchen'}@125:"
TUM = REAL / "tum-fr3-long-office"


def tum_capture(size: int):  # noqa: ANN201
    """The TUM sequence preceded by the first and last posed frames of static-rgbd (with their depth)."""
    from vibe3r.captures import Capture, load_capture

    seq = load_capture(TUM / "sequence", size=size)
    static = load_capture(TUM / "static-rgbd", size=size)
    st = static.subset([0, len(static) - 1])
    assert st.timestamps[-1] < seq.timestamps[0]
    depth = np.zeros((len(st) + len(seq), *seq.hw), np.float32)
    depth[: len(st)] = st.depth
    cat = lambda a, b: np.concatenate([a, b])  # noqa: E731
    return Capture(name="tum-fr3-long-office", images=cat(st.images, seq.images), frame_names=st.frame_names + seq.frame_names,
                   K=cat(st.K, seq.K), cam2world=cat(st.cam2world, seq.cam2world), depth=depth,
                   timestamps=cat(st.timestamps, seq.timestamps), source="tum", meta={"path": str(TUM), "source_index": None})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30, help="7-Scenes frames (TUM: all 17)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--ckpt", type=Path, default=None)
    ap.add_argument("--methods", nargs="+", default=["model", "sift"])
    ap.add_argument("--captures", nargs="+", default=["7scenes", "tum"])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "sequence.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from vibe3r.captures import load_capture
    from vibe3r.eval import sequence as S
    from vibe3r.recon.align import AlignConfig
    from vibe3r.recon.model import ReconModel
    from vibe3r.recon.run import RunConfig, default_checkpoint

    model = ReconModel.from_pretrained(args.ckpt or default_checkpoint())
    cfg = RunConfig(size=args.size, max_frames=args.frames, align=AlignConfig(iters=args.iters))
    caps = {"7scenes": lambda: load_capture(SEVEN, size=args.size, max_frames=args.frames), "tum": lambda: tum_capture(args.size)}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.captures:
        cap = caps[name]()
        for method in args.methods:
            res = S.evaluate_sequence(cap, method, model=model if method == "model" else None, cfg=cfg)
            print(S.format_summary(res), flush=True)
            results[f"{name}/{method}"] = res
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1, default=float))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
