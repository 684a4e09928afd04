"""Structure from motion of a real capture (``vibe3r.preference.sfm``: COLMAP through pycolmap, SIFT, sequential
matching, incremental mapping with bundle adjustment, intrinsics fixed) — a second opinion on its ground-truth poses.

Two uses:

* ``--pairs LIST --out-list NEW``: the pair list again, with the SfM's relative poses as pseudo ground
  truth (MegaDepth-style) and the intrinsics SfM used. On 7-Scenes the KinectFusion poses belong to the
  depth camera, which is not perfectly registered with the colour camera the frames come from: two
  independent image-based estimates (two-view RootSIFT and this SfM) agree with each other far better
  than either agrees with the GT (numbers in bench/preference.md). The pseudo-GT list shows how much
  of an evaluation's error is the GT's. It favours SIFT-like estimators; use it beside, never instead of,
  the shipped lists. Its translations have unit length (SfM has no metric scale), so the reports'
  "baseline ≥ 0.15 m" subset is every pair there.
* ``--out-poses FILE``: ``{frame ordinal: cam2world}`` of the capture frames — the exact trainer's teacher
  (``bench/preference.py --exact-teacher sfm``; the loop computes its own with ``preference.teacher: sfm``),
  no ground truth involved.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/sfm_pseudo_gt.py --capture ../shared/data/real/7scenes-redkitchen@125:250 \\
        --pairs ../shared/data/real/eval-pairs/7scenes-redkitchen-second-half.txt --out-list runs/sfm/7s-second-half-sfm.txt

Frames are written to a scratch folder (``--work``, default a temporary directory), never into the project.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.captures import load_capture  # noqa: E402
from vibe3r.preference.sampling import set_focal  # noqa: E402
from vibe3r.preference.sfm import run_sfm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", required=True, help="capture spec (frames in capture order)")
    ap.add_argument("--focal", default="518,532", help="fx,fy of the native frames ('' keeps the capture's K); 7-Scenes' colour camera")
    ap.add_argument("--pairs", default="", help="a SuperGlue-format pair list over frames of this capture")
    ap.add_argument("--out-list", default="", help="write the pair list with SfM poses (and the SfM intrinsics) here")
    ap.add_argument("--out-list-gt", default="", help="also write the pair list with its own GT poses but the --focal intrinsics")
    ap.add_argument("--out-poses", default="", help="write {frame ordinal: cam2world} here")
    ap.add_argument("--overlap", type=int, default=15, help="sequential matching: neighbours per frame")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    a = ap.parse_args()
    cap = load_capture(a.capture)
    if a.focal:
        set_focal(cap, *(float(x) for x in a.focal.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        c2w = run_sfm(cap.images, cap.K[0], Path(a.work or tmp), a.overlap, a.threads)
    if a.out_poses:
        Path(a.out_poses).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out_poses).write_text(json.dumps({str(k): v.tolist() for k, v in sorted(c2w.items())}))
    if a.pairs and a.out_list:
        from vibe3r.geometry import rotation_error_deg, translation_direction_error_deg

        index = {n: k for k, n in enumerate(cap.frame_names)}
        lines, gt_lines, errs, missing = [], [], [], 0
        for line in Path(a.pairs).read_text().splitlines():
            f = line.split()
            if not f:
                continue
            i, j = index.get(f[0].split(".")[0]), index.get(f[1].split(".")[0])
            if i not in c2w or j not in c2w:
                missing += 1
                continue
            T = np.linalg.inv(c2w[j]) @ c2w[i]
            T[:3, 3] /= np.linalg.norm(T[:3, 3]) + 1e-12  # SfM has no metric scale: unit baseline
            G = np.asarray(f[22:38], float).reshape(4, 4)
            errs.append((float(rotation_error_deg(T[:3, :3], G[:3, :3])),
                         float(translation_direction_error_deg(T[:3, 3], G[:3, 3], ignore_sign=True))))
            K = cap.K[i]
            lines.append(" ".join(f[:4] + [f"{x:.6f}" for x in K.reshape(-1)] * 2 + [f"{x:.9f}" for x in T.reshape(-1)]))
            gt_lines.append(" ".join(f[:4] + [f"{x:.6f}" for x in K.reshape(-1)] * 2 + f[22:38]))
        Path(a.out_list).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out_list).write_text("\n".join(lines) + "\n")
        if a.out_list_gt:
            Path(a.out_list_gt).write_text("\n".join(gt_lines) + "\n")
        e = np.array(errs)
        print(f"{len(lines)} pairs written to {a.out_list} ({missing} not registered); SfM vs the list's GT: "
              f"median rotation {np.median(e[:, 0]):.2f}°, translation direction {np.median(e[:, 1]):.2f}°", flush=True)


if __name__ == "__main__":
    main()
