"""Renderer throughput: full frames/s (shading, degradations, writing) vs raw ``cast_rays`` on the same cameras.

For each size a procedural room is built once, a handheld path is placed in it, and its frames are
rendered with the default config. "raw" casts one pixel-centre ray per pixel of the same cameras
in one ``cast_rays`` call (the floor any ray caster pays); the ratio full/raw time is what shading,
anti-aliasing (supersampling + adaptive edge samples), shadows, AO, degradations and writing cost.

    .venv/bin/python bench/render.py
    .venv/bin/python bench/render.py --sizes 64 128 --frames 48 --set render.supersample=1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r.config import load_config  # noqa: E402
from vibe3r.video_gen import degrade  # noqa: E402
from vibe3r.video_gen.motion import parse_prompt  # noqa: E402
from vibe3r.video_gen.render import make_intrinsics, pixel_centre_rays, render_frames  # noqa: E402
from vibe3r.video_gen.video_io import write_video  # noqa: E402
from vibe3r.video_gen.world import build_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256], help="widths (height = 3/4 width)")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--scene-seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides")
    ap.add_argument("--sheet", default=None, help="also save a contact sheet PNG: 6 rooms x 3 frames of rendered videos")
    ap.add_argument("--sheet-width", type=int, default=192)
    args = ap.parse_args()
    cfg = load_config(None, args.set)
    t0 = time.perf_counter()
    scene = build_scene(args.scene_seed, cfg.world)
    _ = scene.raycaster
    t_scene = time.perf_counter() - t0
    prog = parse_prompt(f"handheld walk 1.5 frames {args.frames - 1}")
    rng = np.random.default_rng(0)
    start, scale = scene.fit_trajectory(prog, rng, cfg.world.clearance, cfg.world.camera_height, cfg.world.min_path_scale)
    print(f"scene build (textures, meshes, BVH): {t_scene:.2f} s, {len(scene.parts)} parts, "
          f"{sum(len(p.mesh.triangles) for p in scene.parts)} triangles; path scale {scale:.2f}")
    print(f"{'size':>9} {'frames':>6} {'full fps':>9} {'render':>8} {'degrade':>8} {'write':>7} {'raw fps':>9} "
          f"{'raw Mrays/s':>11} {'full/raw':>8}")
    for W in args.sizes:
        H = max(2, int(round(W * 0.75 / 2)) * 2)
        rc = cfg.render.model_copy(update={"width": W, "height": H})
        K = make_intrinsics(rc, np.random.default_rng(1))
        traj = prog.trajectory(start, K, W, H)
        c2w = traj.c2w
        N = len(c2w)
        # raw: one pixel-centre ray per pixel, one cast for all frames
        o, d = zip(*(pixel_centre_rays(traj.K[i], c2w[i], H, W) for i in range(N)), strict=True)
        O = np.concatenate([x.reshape(-1, 3) for x in o])
        D = np.concatenate([x.reshape(-1, 3) for x in d])
        scene.cast(O[:1000], D[:1000])  # warm-up
        t = time.perf_counter()
        scene.cast(O, D)
        t_raw = time.perf_counter() - t
        # full: render (AA, motion blur, shading) + degradations + writing the video folder
        dc = rc.degrade
        t = time.perf_counter()
        bins = degrade.blur_bins(c2w, traj.K, dc.motion_blur, dc.blur_step_px, dc.blur_max_bins)
        hdr, depth = render_frames(scene, c2w, traj.K, W, H, rc, seed=0, shutter_c2w=degrade.shutter_poses(c2w, dc.motion_blur, bins))
        t_render = time.perf_counter() - t
        t = time.perf_counter()
        rgb = degrade.apply(hdr, dc, seed=0)
        t_deg = time.perf_counter() - t
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            write_video(Path(tmp) / "v", rgb, traj.K, c2w, depth, {"prompt": traj.prompt, "scene_seed": args.scene_seed}, cfg)
        t_write = time.perf_counter() - t
        full = t_render + t_deg + t_write
        print(f"{W:>4}x{H:<4} {N:>6} {N / full:>9.2f} {t_render:>7.2f}s {t_deg:>7.2f}s {t_write:>6.2f}s {N / t_raw:>9.1f} "
              f"{len(O) / t_raw / 1e6:>11.1f} {full / t_raw:>8.0f}x", flush=True)
    if args.sheet:
        contact_sheet(args.sheet, args.sheet_width, args.set)


def contact_sheet(path: str, width: int, overrides: list[str]) -> None:
    """First, middle and last frame of videos in 6 rooms with varied prompts, one room per row."""
    import cv2

    from vibe3r.video_gen.render import render_video
    from vibe3r.video_gen.video_io import read_video

    prompts = ["handheld walk 1.5 frames 16", "orbit left 60 radius 1.2 frames 16", "pan left 50 frames 16",
               "dolly forward 1.0 frames 16", "tilt down 20 frames 6 then truck right 0.8 frames 10",
               "handheld walk 2.0 frames 16"]
    h = max(2, int(round(width * 0.75 / 2)) * 2)
    cfg = load_config(None, [*overrides, f"render.width={width}", f"render.height={h}"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, prompt in enumerate(prompts):
            frames = read_video(render_video(prompt, k, cfg, Path(tmp) / f"v{k}"))[0]
            rows.append(np.hstack([frames[0], frames[len(frames) // 2], frames[-1]]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(path, np.vstack(rows)[..., ::-1])
    print(f"contact sheet: {path}")


if __name__ == "__main__":
    main()
