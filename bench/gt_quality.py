"""How well do a capture's ground-truth depth and poses explain its own colour frames?

For pairs of frames (gaps ``--gaps``), the classical full-resolution RootSIFT matches that survive
essential-matrix USAC are projected from frame i into frame j through the GT depth of frame i and the GT
relative pose; the distance to the matched keypoint is the GT's reprojection error at that feature
(pixels of the native frames). A GT good enough to supervise or evaluate 128-px matching should put it
well under the 5 px that one 128-px pixel spans at 640 px.

    .venv/bin/python bench/gt_quality.py --capture ../shared/data/real/7scenes-redkitchen@0:125 --focal 518,532
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.captures import load_capture  # noqa: E402
from vibe3r.preference.rewards import RewardConfig, classical_pose  # noqa: E402
from vibe3r.preference.sampling import set_focal  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", required=True)
    ap.add_argument("--focal", default="", help="fx,fy of the native frames ('' keeps the capture's K)")
    ap.add_argument("--gaps", default="3,8", help="frame gaps of the pairs")
    ap.add_argument("--every", type=int, default=6, help="first frames of pairs: every this many")
    ap.add_argument("--pairs", type=int, default=24)
    a = ap.parse_args()
    cap = load_capture(a.capture)
    if cap.depth is None or cap.cam2world is None:
        raise SystemExit(f"{a.capture}: no GT depth and poses")
    if a.focal:
        set_focal(cap, *(float(x) for x in a.focal.split(",")))
    gaps = [int(g) for g in a.gaps.split(",")]
    rows = [(i, i + g) for i in range(0, len(cap) - max(gaps), a.every) for g in gaps][: a.pairs]
    per_pair = []
    for i, j in rows:
        c = classical_pose(cap.images[i], cap.images[j], cap.K[i], cap.K[j], RewardConfig())
        if c.T21 is None:
            continue
        k1, k2 = c.kp1[c.inliers], c.kp2[c.inliers]
        u = np.round(k1).astype(int)
        d = cap.depth[i][u[:, 1], u[:, 0]]
        ok = d > 0
        X = (np.linalg.inv(cap.K[i]) @ np.c_[k1[ok], np.ones(ok.sum())].T) * d[ok]
        T = np.linalg.inv(cap.cam2world[j]) @ cap.cam2world[i]
        Y = cap.K[j] @ (T[:3, :3] @ X + T[:3, 3:4])
        per_pair.append(float(np.median(np.linalg.norm((Y[:2] / Y[2]).T - k2[ok], axis=1))))
    p = np.array(per_pair)
    print(f"{a.capture} (focal {a.focal or 'as given'}): {len(p)} pairs; GT reprojection error of the classical inlier matches, "
          f"per-pair median: median {np.median(p):.2f} px, p25 {np.percentile(p, 25):.2f}, p75 {np.percentile(p, 75):.2f} "
          f"(native {cap.meta['native_size'][1]} px wide)")


if __name__ == "__main__":
    main()
