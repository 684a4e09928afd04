"""A picture of warp pairs: real TUM frames (CC BY 4.0, TUM RGB-D fr3/long_office_household) and their renders
from new cameras through the shipped model's own depth, at the loop's 128x96, enlarged 2x.

    .venv/bin/python bench/warp_pairs_picture.py --out bench/warp_pairs_tum.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from vibe3r import geometry
from vibe3r.captures import load_capture
from vibe3r.config import WarpConfig
from vibe3r.recon.model import ReconModel
from vibe3r.video_gen.warp import model_depth, warp_frame

ROOT = Path(__file__).resolve().parents[1]
TUM = ROOT.parent / "shared" / "data" / "real" / "tum-fr3-long-office" / "sequence"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "warp_pairs_tum.jpg")
    ap.add_argument("--frames", default="0,6,12")
    a = ap.parse_args()
    cap = load_capture(TUM)
    recon = ReconModel.from_pretrained(ROOT / "weights" / "recon-base").eval()
    idx = [int(x) for x in a.frames.split(",")]
    depths = model_depth(recon, list(cap.images), 2)
    rng = np.random.default_rng(0)
    rows = []
    for i in idx:
        d = depths[i]
        Kd = geometry.scale_intrinsics(torch.from_numpy(cap.K[i]), d.shape[1] / cap.images.shape[2]).numpy()
        gt = warp_frame(cap.images[i], cap.K[i], d, Kd, (96, 128), WarpConfig(views_per_frame=3), rng)
        rows.append(np.concatenate(list(gt.images), 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    img = cv2.resize(np.concatenate(rows, 0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(a.out), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"{a.out}: rows = frames {idx}; first column the real frame, then renders from new cameras")


if __name__ == "__main__":
    main()
