"""`vibe3r recon run` on a phone-like video of a real room, against ground truth.

The 250 frames of ../shared/data/real/7scenes-redkitchen (every 4th frame of a 30 Hz Kinect walk, so
7.5 fps) are encoded as an mp4 (``write_capture_video``); ``vibe3r recon run`` reconstructs N evenly
spread frames of it **without intrinsics** (a video file has none: the focal comes from the pointmaps).
The same N frames of the 7-Scenes folder give the ground truth: ATE of the camera centres after Sim(3)
(Umeyama) alignment, rotation RPE between consecutive used frames, and depth AbsRel / δ<1.25 of the
exported depth maps (``recon run --depth``, default triangulated+pointmap) after one median scale for the
whole video and, as ``eval sequence`` reports it, after a median scale per frame; coverage = fraction of
the GT-valid pixels with a depth (7-Scenes depth comes from the depth camera, which is not perfectly
registered to the colour one). Time and peak memory
(``ru_maxrss`` of the run) come from its report.json.

It also measures the network alone: pairs/s at the run's resolution, its FLOPs per pair
(``torch.utils.flop_counter``), the achieved GFLOP/s, and that as a fraction of a plain float32 matmul's
GFLOP/s measured in the same process with the same threads.

    .venv/bin/python bench/recon.py --frames 50            # one thread, ~minutes
    .venv/bin/python bench/recon.py --frames 50 250 --ckpt weights/recon-base
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO.parent / "shared" / "data" / "real" / "7scenes-redkitchen"


def default_ckpt() -> Path:
    for d in (REPO / "weights" / "recon-base", REPO / "runs" / "recon-base"):
        if (d / "model.safetensors").is_file():
            return d
    sys.exit("no checkpoint: pass --ckpt (weights/recon-base and runs/recon-base are missing)")


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    """GFLOP/s of a float32 n x n matmul (2 n³ FLOPs) with the current torch threads."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


@torch.no_grad()
def network_throughput(ckpt: Path, hw: tuple[int, int], batch: int = 8, reps: int = 3) -> dict[str, float]:
    """Pairs/s of the forward pass alone, FLOPs per pair, achieved GFLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode

    from vibe3r.recon.model import ReconModel

    model = ReconModel.from_pretrained(ckpt).eval()
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(batch, 3, *hw, generator=g), torch.rand(batch, 3, *hw, generator=g)
    with FlopCounterMode(display=False) as fc:
        model(x1, x2)
    flops = fc.get_total_flops() / batch
    t = time.perf_counter()
    for _ in range(reps):
        model(x1, x2)
    pairs_s = batch * reps / (time.perf_counter() - t)
    return {"pairs_per_s": pairs_s, "gflop_per_pair": flops / 1e9, "gflop_s": pairs_s * flops / 1e9,
            "params_m": model.num_parameters / 1e6}


def evaluate(out: Path, n: int, size: int) -> dict[str, float]:
    """ATE / RPE / depth of the run in ``out`` against the same n frames of the 7-Scenes folder."""
    from vibe3r import geometry
    from vibe3r.captures import load_capture
    from vibe3r.eval.sequence import depth_per_frame
    from vibe3r.recon.export import read_colmap_text

    gt = load_capture(SCENE, max_frames=n, size=size)
    cams = json.loads((out / "cameras.json").read_text())["frames"]
    c2w = np.array([f["cam2world"] for f in cams])
    names, _, c2w_colmap, _ = read_colmap_text(out / "colmap")
    assert np.allclose(c2w, c2w_colmap, atol=1e-6), "cameras.json and the COLMAP model disagree"
    depth = np.stack([np.load(out / "depth" / f"{i:05d}.npy") for i in range(len(cams))])
    H, W = depth.shape[1:]
    y0, x0 = (gt.hw[0] - H) // 2, (gt.hw[1] - W) // 2  # the run centre-crops to the patch size
    gt_depth = gt.depth[:, y0 : y0 + H, x0 : x0 + W]
    d = geometry.depth_metrics(depth, gt_depth)
    dpf = depth_per_frame(depth, gt_depth)
    r = geometry.rpe(c2w, gt.cam2world)
    return {"ate_sim3_m": geometry.ate(c2w, gt.cam2world, "sim3"), "gt_path_m": float(np.linalg.norm(np.diff(gt.cam2world[:, :3, 3], axis=0), axis=1).sum()),
            "rpe_rot_deg": r["rpe_rot_deg"], "rpe_tdir_deg": r["rpe_tdir_deg"], "depth_abs_rel": d["abs_rel"], "depth_delta1": d["delta1"],
            "depth_abs_rel_per_frame": dpf["abs_rel"], "depth_delta1_per_frame": dpf["delta1"], "depth_coverage": dpf["coverage"],
            "depth_source": json.loads((out / "report.json").read_text()).get("depth_source", "pointmap")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[50, 250])
    ap.add_argument("--ckpt", type=Path, default=None)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "recon")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `vibe3r recon run` options")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = args.ckpt or default_ckpt()
    args.out.mkdir(parents=True, exist_ok=True)

    from vibe3r.captures import load_capture, write_capture_video

    mp4 = args.out / "7scenes-redkitchen.mp4"
    if not mp4.is_file():
        write_capture_video(load_capture(SCENE), mp4, fps=7.5)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results = {"checkpoint": str(ckpt), "video": str(mp4), "threads": args.threads, "size": args.size, "runs": []}
    prev = args.out / "results.json"  # keep the rows of other frame counts from earlier invocations
    if prev.is_file():
        results["runs"] = [r for r in json.loads(prev.read_text()).get("runs", []) if r["frames"] not in args.frames]
    for n in args.frames:
        out = args.out / f"run-{n}"
        cmd = [sys.executable, "-m", "vibe3r.cli", "recon", "run", str(mp4), "--ckpt", str(ckpt), "--out", str(out),
               "--max-frames", str(n), "--size", str(args.size), "--iters", str(args.iters), "--threads", str(args.threads),
               "--no-progress", "--json", *args.extra]
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"recon run failed ({n} frames): {proc.stderr.strip()}")
        report = json.loads((out / "report.json").read_text())
        row = {"frames": n, "pairs": report["graph"]["pairs"], "edges": report["graph"]["edges"], "wall_s": wall,
               "run_s": report["timings_s"]["total"], "timings_s": report["timings_s"], "peak_rss_mb": report["peak_rss_mb"],
               "pairwise_mb": report["pairwise_mb"], "focal_px": report["focal_px"], "intrinsics_from": report["intrinsics_from"],
               "pose_methods": report["pose_methods"], "inference_edges_per_s": report["graph"]["edges"] / report["timings_s"]["inference"],
               **evaluate(out, n, args.size)}
        results["runs"].append(row)
        print(f"{n:4d} frames {row['pairs']:5d} pairs | ATE {row['ate_sim3_m']:.3f} m (path {row['gt_path_m']:.2f} m) | "
              f"RPE rot {row['rpe_rot_deg']:.2f} deg | depth ({row['depth_source']}) AbsRel {row['depth_abs_rel']:.3f} d1 {row['depth_delta1']:.3f}, "
              f"per-frame scale {row['depth_abs_rel_per_frame']:.3f} / {row['depth_delta1_per_frame']:.3f}, coverage {100 * row['depth_coverage']:.0f}% | "
              f"{row['run_s']:.0f} s, peak {row['peak_rss_mb']:.0f} MB | inference {row['inference_edges_per_s']:.1f} pairs/s "
              f"(with matching)", flush=True)
    H = args.size * 3 // 4 // 8 * 8  # 4:3 video at --size, cropped to the patch size (8 for the shipped configs)
    net = network_throughput(ckpt, (H, args.size))
    mm = matmul_gflops()
    net["matmul_gflop_s"] = mm
    net["fraction_of_matmul"] = net["gflop_s"] / mm
    results["network"] = net
    print(f"network {args.size}x{H}: {net['pairs_per_s']:.1f} pairs/s, {net['gflop_per_pair']:.2f} GFLOP/pair -> "
          f"{net['gflop_s']:.1f} GFLOP/s = {100 * net['fraction_of_matmul']:.0f}% of a 1024² matmul ({mm:.1f} GFLOP/s), "
          f"{args.threads} thread(s)")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
