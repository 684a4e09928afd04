"""Bench of the learned video generator: speed, and camera accuracy before/after preference training.

    # speed: training steps/s and sampled videos/s at the default size and step count
    python bench/video.py speed --ckpt runs/gen-base
    # camera accuracy on held-out prompts (first frames + clip cameras from held-out scenes), SFT vs others
    python bench/video.py accuracy --judge runs/recon-base --model sft=runs/gen-base --model dpo=runs/gen-dpo/model \\
        --model grpo=runs/gen-grpo/model --n 40 --grid bench/out/video_grid.png --json bench/out/video_accuracy.json

Held-out prompts come from ``data/synthetic-heldout-128`` (scene seeds 900-919, never trained on): the first
frame and the ground-truth cameras of an 8-frame clip at stride 3; the rendered clip is the renderer's answer
for the same cameras, so PSNR-to-render is a judge-independent check of both camera and appearance. Camera
errors come from two judges: the reconstruction model (the one preference training optimises against) and
DIS optical flow + essential RANSAC (no learned part). The rows "render" and "frozen" score the rendered
clip itself and the first frame repeated — the floor and the ceiling of the judges on these prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HELDOUT = Path("data/synthetic-heldout-128/videos")


def speed(args: argparse.Namespace) -> None:
    from vibe3r.config import Config
    from vibe3r.video_gen.diffusion import VideoGenerator

    torch.set_num_threads(args.threads)
    cfg = Config().generator
    model = VideoGenerator.from_pretrained(args.ckpt) if args.ckpt else VideoGenerator(cfg.model)
    mc = model.config
    n_par = sum(p.numel() for p in model.parameters())
    B = cfg.train.batch_size
    x0 = torch.rand(B, mc.frames, 3, mc.height, mc.width) * 2 - 1
    cond = torch.randn(B, mc.frames, 13, mc.height, mc.width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    times = []
    for _ in range(args.reps + 1):
        t0 = time.perf_counter()
        loss = model.denoising_error(x0, cond, torch.randint(0, 1000, (B,)), torch.randn_like(x0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    tr = float(np.median(times[1:]))
    model.eval()
    st = []
    for _ in range(max(1, args.reps // 2)):
        t0 = time.perf_counter()
        model.sample(cond[:1], steps=cfg.sample.steps, generator=torch.Generator().manual_seed(0))
        st.append(time.perf_counter() - t0)
    sv = float(np.median(st))
    print(f"generator {n_par / 1e6:.2f} M params, {mc.width}x{mc.height}x{mc.frames}, patch {mc.patch_size}, {args.threads} threads")
    print(f"training: {1 / tr:.2f} steps/s at batch {B} ({B / tr:.1f} clips/s)")
    print(f"sampling: {1 / sv:.2f} videos/s at {cfg.sample.steps} DDIM steps ({sv:.2f} s/video)")


def _grid(rows: list[tuple[str, np.ndarray]], path: Path) -> None:
    import cv2

    pad = 60
    body = []
    for label, vid in rows:
        strip = np.concatenate(list(vid), 1)
        lab = np.full((strip.shape[0], pad, 3), 255, np.uint8)
        cv2.putText(lab, label, (2, strip.shape[0] // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        body.append(np.concatenate([lab, strip], 1))
    g = np.concatenate(body, 0)
    g = cv2.resize(g, (g.shape[1] * 2, g.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), g[..., ::-1])


def accuracy(args: argparse.Namespace) -> None:
    from vibe3r.video_gen.diffusion import VideoGenerator
    from vibe3r.video_gen.judge import FlowJudge, ReconJudge, judge_video
    from vibe3r.video_gen.prefer import clip_prompts, evaluate_generator, psnr, sample_videos

    torch.set_num_threads(args.threads)
    models = dict(m.split("=", 1) for m in args.model)
    first = VideoGenerator.from_pretrained(next(iter(models.values())))
    mc = first.config
    dirs = sorted(p for p in Path(args.videos).iterdir() if p.is_dir())
    prompts = clip_prompts(dirs, mc.frames, mc.width, mc.height, per_video=max(1, -(-args.n // len(dirs))), stride=args.stride)
    prompts = prompts[:args.n]
    judges = {"recon": ReconJudge(args.judge), "flow": FlowJudge()}
    results: dict[str, dict] = {}
    for name, j in judges.items():  # the judges' floor (true frames) and a frozen video
        for label, fn in (("render", lambda p: p.reference), ("frozen", lambda p: np.repeat(p.reference[:1], mc.frames, 0))):
            sc = [judge_video(j, fn(p), p.K, p.c2w) for p in prompts]
            results.setdefault(label, {"n": len(prompts)})[name] = {
                "rot_err": float(np.mean([s.rot_err for s in sc])), "trans_err": float(np.nanmean([s.trans_err for s in sc])),
                "cam_mc": float(np.mean([s.cam_mc for s in sc])), "rot_err_median": float(np.median([s.rot_err for s in sc]))}
    results["frozen"]["psnr_to_render"] = float(np.mean([psnr(np.repeat(p.reference[:1], mc.frames - 1, 0), p.reference[1:])
                                                         for p in prompts]))
    grid_rows = []
    with_depth = clip_prompts(dirs, mc.frames, mc.width, mc.height, per_video=max(1, -(-args.n // len(dirs))),
                              stride=args.stride, with_depth=True)[:args.n] if args.render else []
    with_est = []
    if args.recon_depth:  # the user's path from a single image: depth estimated by the reconstruction model, median 2 m
        import dataclasses

        from vibe3r.recon.model import ReconModel
        from vibe3r.video_gen.generate import first_frame_depth
        from vibe3r.video_gen.video_io import read_video

        recon = ReconModel.from_pretrained(args.recon_depth).eval()
        for p in prompts:
            img = read_video(p.meta["video"])[0][p.meta["start"]]  # the rendered frame at its own size (128x96)
            with_est.append(dataclasses.replace(p, depth0=first_frame_depth(recon, img, mc.width, mc.height, 2.0)))
    flats = {}
    for m in args.plane_depth:  # prompt only: the first frame as a fronto-parallel plane m metres away (no model, no GT)
        import dataclasses

        flats[m] = [dataclasses.replace(p, depth0=np.full((mc.height, mc.width), m, np.float32)) for p in prompts]
    for name, path in models.items():
        model = VideoGenerator.from_pretrained(path)
        for m, fp in flats.items():
            results[f"{name}+plane{m:g}"] = evaluate_generator(model, fp, judges, steps=args.steps, seed=args.seed, n_seeds=args.n_seeds)
        for w in [1.0, *args.guidance]:  # w != 1: camera guidance against the same prompt held still
            sfx = "" if w == 1.0 else f"@g{w:g}"
            results[name + sfx] = evaluate_generator(model, prompts, judges, steps=args.steps, seed=args.seed, guidance=w, n_seeds=args.n_seeds)
            if with_depth:  # Gen3C mode: the first frame's geometry rendered into every commanded camera is given too
                results[f"{name}+render{sfx}"] = evaluate_generator(model, with_depth, judges, steps=args.steps, seed=args.seed,
                                                                    guidance=w, n_seeds=args.n_seeds)
        if with_est:
            results[f"{name}+est"] = evaluate_generator(model, with_est, judges, steps=args.steps, seed=args.seed, n_seeds=args.n_seeds)
        for k in range(min(3, len(prompts))):
            grid_rows.append((f"{name} #{k}", sample_videos(model, prompts[k], [args.seed * 7919 + k], args.steps)[0][0]))
    for k in range(min(3, len(prompts))):
        grid_rows.append((f"render #{k}", prompts[k].reference))
    grid_rows.sort(key=lambda r: int(r[0].split("#")[1]))
    print(f"{len(prompts)} held-out prompts ({mc.width}x{mc.height}, {mc.frames} frames, stride {args.stride}), {args.steps} DDIM steps")
    print(f"{'model':12s} {'recon rot':>9s} {'recon tr':>8s} {'recon mc':>8s} {'flow rot':>8s} {'flow tr':>7s} {'flow mc':>7s} "
          f"{'PSNR':>5s} {'mean':>5s} {'std':>5s} {'dt':>5s}")
    for name, r in results.items():
        rr, fr = r["recon"], r["flow"]
        extra = (f"{r.get('psnr_to_render', float('nan')):5.2f} {r.get('pixel_mean', float('nan')):5.1f} "
                 f"{r.get('pixel_std', float('nan')):5.1f} {r.get('temporal_change', float('nan')):5.1f}")
        print(f"{name:12s} {rr['rot_err']:9.2f} {rr['trans_err']:8.1f} {rr['cam_mc']:8.3f} {fr['rot_err']:8.2f} "
              f"{fr['trans_err']:7.1f} {fr['cam_mc']:7.3f} {extra}")
    if args.grid:
        _grid(grid_rows, Path(args.grid))
        print(f"grid: {args.grid}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--ckpt", default=None)
    s.add_argument("--reps", type=int, default=6)
    s.add_argument("--threads", type=int, default=2)
    a = sub.add_parser("accuracy")
    a.add_argument("--judge", required=True)
    a.add_argument("--model", action="append", required=True, help="name=checkpoint (repeatable)")
    a.add_argument("--n", type=int, default=40)
    a.add_argument("--videos", default=str(HELDOUT), help="folder of held-out rendered videos the prompts are cut from "
                   "(e.g. a loop run's RUN/heldout-*/pairs/videos)")
    a.add_argument("--stride", type=int, default=3)
    a.add_argument("--steps", type=int, default=25)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--n-seeds", type=int, default=1, help="sampled videos per prompt, errors averaged per prompt (4: a model's mean "
                   "error stops moving by about ±0.2 deg with the sampling seed)")
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--grid", default=None)
    a.add_argument("--render", action="store_true", help="also evaluate with the render conditioning (first frame's GT depth)")
    a.add_argument("--recon-depth", default=None, help="reconstruction checkpoint: also evaluate with the first frame's depth "
                   "estimated by it (`vibe3r video generate --recon`), the render conditioning without ground truth")
    a.add_argument("--plane-depth", type=float, action="append", default=[], help="also evaluate with the render of the first frame "
                   "as a fronto-parallel plane this many metres away (repeatable; 1000: a rotation-only warp)")
    a.add_argument("--guidance", type=float, action="append", default=[],
                   help="also evaluate every model with this camera guidance scale (repeatable; 1 = none)")
    a.add_argument("--json", default=None)
    args = ap.parse_args()
    {"speed": speed, "accuracy": accuracy}[args.cmd](args)


if __name__ == "__main__":
    main()
