"""How often does a camera film bare room shell (walls, floor, ceiling) instead of things?

Geometry only, no rendering: :meth:`Scene.view_content` (a 5x4 ray grid per view) gives the
fraction of a view on objects. A view is *bare* when that fraction is below ``--min-thing`` (0.25,
the realism bench's threshold); *looking up* when the optical axis is more than 30° above the horizon.

* dataset: every frame of the training videos ``vibe3r video dataset`` would render for a config
  (same prompts, scene seeds, placement and trajectories as :func:`render_video`), and the frames of
  a random sample of frame pairs within ``dataset.max_gap``;
* realism bench: camera 0 and 1 of the pairs :func:`bench.realism.sample_pair` draws with the real
  relative poses, with the content criterion off (the old bench) and on.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bare_views.py --videos 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realism  # noqa: E402

from vibe3r.config import load_config  # noqa: E402
from vibe3r.video_gen.motion import parse_prompt  # noqa: E402
from vibe3r.video_gen.prompts import write_prompts  # noqa: E402
from vibe3r.video_gen.render import make_intrinsics  # noqa: E402
from vibe3r.video_gen.world import build_scene  # noqa: E402


def dataset_trajectories(cfg, n_videos: int):  # noqa: ANN001, ANN201 - bench helper
    """(scene, c2w (N,4,4)) of the first ``n_videos`` dataset videos, exactly as render_video places them."""
    specs = write_prompts(cfg.prompts.task, n_videos, seed=cfg.prompts.seed, lm_path=cfg.prompts.lm_path,
                          max_frames=cfg.prompts.max_frames)
    for k, spec in enumerate(specs):
        sid = cfg.dataset.scene_seed_start + k
        program = parse_prompt(spec.prompt)
        scene = build_scene(sid, cfg.world)
        rng = np.random.default_rng([cfg.seed, sid, spec.seed, 1])
        rc, wc = cfg.render, cfg.world
        K = make_intrinsics(rc, rng)
        start, scale = scene.fit_trajectory(program, rng, wc.clearance, wc.camera_height, wc.min_path_scale, seed=spec.seed)
        c2w = program.trajectory(start, K, rc.width, rc.height, seed=spec.seed).c2w.copy()
        if scale < 1:
            c2w[:, :3, 3] = start[:3, 3] + scale * (c2w[:, :3, 3] - start[:3, 3])
        yield scene, c2w


def content(scene, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(thing fraction (N,), looking-up (N,) bool) of camera poses (N,4,4)."""
    thing = scene.view_content(c2w[:, :3, 3], c2w[:, :3, :3])["thing"]
    up = c2w[:, 2, 2] > np.sin(np.radians(30))  # optical axis z-component in the z-up world
    return thing, up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=40, help="dataset videos (scene seeds 1000+)")
    ap.add_argument("--bench-pairs", type=int, default=142, help="realism-bench pairs per setting")
    ap.add_argument("--min-thing", type=float, default=0.25)
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    cfg = load_config(args.config, [])
    rng = np.random.default_rng(0)
    th, up, pair_bare, per_video = [], [], [], []
    for scene, c2w in dataset_trajectories(cfg, args.videos):
        t, u = content(scene, c2w)
        th.append(t)
        up.append(u)
        per_video.append(float(np.mean(t < args.min_thing)))
        i = rng.integers(len(c2w), size=200)  # random frame pairs within the dataset's max gap
        j = np.clip(i + rng.integers(-cfg.dataset.max_gap, cfg.dataset.max_gap + 1, size=200), 0, len(c2w) - 1)
        pair_bare.append(np.minimum(t[i], t[j]) < args.min_thing)
    th, up = np.concatenate(th), np.concatenate(up)
    print(f"dataset ({args.videos} videos, {len(th)} frames, default prompts): bare frames {100 * np.mean(th < args.min_thing):.1f}%  "
          f"(thing fraction 0: {100 * np.mean(th == 0):.1f}%), looking up >30°: {100 * np.mean(up):.1f}%, "
          f"frame pairs with a bare view {100 * np.mean(np.concatenate(pair_bare)):.1f}%; "
          f"videos with >25% bare frames: {sum(v > 0.25 for v in per_video)}/{len(per_video)}; "
          f"thing fraction p10/p50 {np.percentile(th, 10):.2f}/{np.percentile(th, 50):.2f}")
    motions = realism.real_motions()
    for min_thing in (0.0, args.min_thing):
        stats: dict = {}
        th, up = [], []
        scenes: dict = {}
        for k in range(args.bench_pairs):
            sid = 500 + k % 30
            if sid not in scenes:
                scenes[sid] = build_scene(sid, cfg.world)
            pair = realism.sample_pair(scenes[sid], np.random.default_rng([0, k]), motions[k % len(motions)],
                                       min_thing=min_thing, stats=stats)
            if pair is not None:
                t, u = content(scenes[sid], np.stack(pair))
                th.append(t.min())
                up.append(u.any())
        th, up = np.array(th), np.array(up)
        rej = f", content rejections {stats.get('rejected', 0)}/{stats.get('candidates', 0)}" if min_thing > 0 else ""
        print(f"realism bench, min_thing {min_thing:.2f} ({len(th)} pairs): pairs with a bare view {100 * np.mean(th < args.min_thing):.1f}%  "
              f"(thing 0: {100 * np.mean(th == 0):.1f}%), a view looking up >30°: {100 * np.mean(up):.1f}%{rej}")


if __name__ == "__main__":
    main()
