"""The loop's generator stage: the reconstruction model judges the learned video generator.

``prefer_video``  the live generator (the last round's ``generator``, else ``loop.generator_checkpoint``)
                  makes ``generator.prefer.n`` videos per prompt — first frames and clip cameras cut from
                  this round's procedural videos — the round's reconstruction candidate judges how well
                  each follows its cameras, and Diffusion-DPO (or GRPO) trains LoRA adapters on the
                  verdicts (``vibe3r.video_gen.prefer``). The merged candidate and its parent are then
                  measured on prompts from the run's held-out videos (never trained on) by two fixed
                  judges — the base reconstruction checkpoint and DIS flow + essential RANSAC, so rounds
                  compare — and the candidate becomes the round's ``generator`` only if the base judge's
                  rotation error is lower with ``loop.generator_keep_confidence`` (a paired bootstrap over
                  the prompts); otherwise the parent passes through (recorded).

A run without a generator (``loop.generator_checkpoint: null``) skips the stage's work and says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from vibe3r.errors import InputError
from vibe3r.loop.registry import Registry
from vibe3r.loop.stage import Stage, StageContext, StageResult


def live_generator(reg: Registry, cfg, rnd: int) -> Path | None:  # noqa: ANN001
    """The last earlier round's ``generator`` artifact, else ``loop.generator_checkpoint`` (None: no generator)."""
    from vibe3r.loop.stages import resolve_path

    rows = [a for a in reg.artifacts(name="generator") if a["round"] < rnd]
    if rows:
        return reg.run_dir / rows[-1]["path"]
    if cfg.loop.generator_checkpoint is None:
        return None
    base = resolve_path(cfg.loop.generator_checkpoint)
    if not (base / "model.safetensors").is_file():
        raise InputError(f"loop.generator_checkpoint {cfg.loop.generator_checkpoint} is not a generator checkpoint folder")
    return base.resolve()


def _heldout_prompts(ctx: StageContext, mc):  # noqa: ANN001, ANN202
    from vibe3r.loop.stages import ensure_heldout
    from vibe3r.video_gen.gen_train import find_videos
    from vibe3r.video_gen.prefer import clip_prompts

    heldout = ensure_heldout(ctx.cfg, ctx.run_dir)
    dirs = find_videos(heldout / "pairs")
    n = ctx.cfg.loop.generator_eval_prompts
    prompts = clip_prompts(dirs, mc.frames, mc.width, mc.height, per_video=max(1, -(-n // len(dirs))),
                           stride=ctx.cfg.generator.prefer.stride, with_depth=ctx.cfg.generator.prefer.with_render,
                           plane_depth=ctx.cfg.generator.sample.plane_depth)
    return prompts[:n]


def keep_generator(cand: list[float], parent: list[float], confidence: float, seed: int) -> tuple[bool, list[float] | None]:
    """Does the candidate generator replace its parent? ``cand``/``parent``: per-prompt rotation errors on the same
    prompts and noise. With ``confidence`` > 0 only when the ``confidence`` quantile of a paired bootstrap of
    mean(cand − parent) is below 0 (confidently better); 0: when the mean is not higher. Prompts either judge
    failed on (NaN) are left out. -> (keep, 90 % interval)."""
    d = np.asarray(cand, float) - np.asarray(parent, float)
    d = d[np.isfinite(d)]
    if not len(d):
        return False, None
    if confidence <= 0 or len(d) < 2:
        return bool(d.mean() <= 0), None
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), (2000, len(d)))].mean(1)
    lo, hi = (float(x) for x in np.quantile(boot, [0.05, 0.95]))
    return bool(np.quantile(boot, confidence) < 0), [lo, hi]


def prefer_video(ctx: StageContext) -> StageResult:
    from vibe3r.video_gen.diffusion import VideoGenerator
    from vibe3r.video_gen.judge import FlowJudge, ReconJudge
    from vibe3r.video_gen.prefer import NoPreferencePairs, evaluate_generator, run_prefer

    out = ctx.out("generator")
    parent = ctx.inputs["generator"]
    if parent is None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "SKIPPED").write_text("no generator: loop.generator_checkpoint is null\n")
        return StageResult({})
    lc, gp = ctx.cfg.loop, ctx.cfg.generator.prefer
    pcfg = gp.model_copy(update={"seed": ctx.seed, "prompts": lc.generator_prompts})
    train_dir = ctx.work / "train"
    if train_dir.exists():  # a killed attempt: start the (seeded) stage over
        shutil.rmtree(train_dir)
    ctx.progress(0, None, f"generator {pcfg.method}: sampling + judging {pcfg.prompts} prompts")
    try:
        summary = run_prefer(pcfg, parent, ctx.inputs["recon"], ctx.inputs["pairs"], train_dir, round=ctx.round, progress=False,
                             plane_depth=ctx.cfg.generator.sample.plane_depth)
        cand_model = VideoGenerator.from_pretrained(train_dir / "model")
    except NoPreferencePairs as e:  # the judge could not tell this round's samples apart: no candidate, the parent stays
        summary, cand_model = {"method": pcfg.method, "pairs": 0, "skipped": str(e)}, None
    ctx.progress(0, None, "generator: held-out camera accuracy, candidate vs parent")
    par_model = VideoGenerator.from_pretrained(parent)
    prompts = _heldout_prompts(ctx, par_model.config)
    from vibe3r.loop.stages import resolve_path

    # a fixed judge across rounds: the base reconstruction checkpoint (a run from scratch: this round's candidate)
    base_judge = resolve_path(ctx.cfg.loop.base_checkpoint) if ctx.cfg.loop.base_checkpoint else ctx.inputs["recon"]
    judges = {"recon": ReconJudge(base_judge), "flow": FlowJudge()}
    steps = ctx.cfg.generator.sample.steps
    # one evaluation seed for every round: the same model measures the same in round 1 and round 5
    ev = dict(steps=steps, seed=lc.seed, trans_weight=pcfg.trans_weight, n_seeds=lc.generator_eval_seeds)
    cand = None if cand_model is None else evaluate_generator(cand_model, prompts, judges, **ev)
    par = evaluate_generator(par_model, prompts, judges, **ev)
    keep, interval = (False, None) if cand is None else \
        keep_generator(cand["recon"]["rot_errs"], par["recon"]["rot_errs"], lc.generator_keep_confidence, ctx.seed)
    if out.exists():
        shutil.rmtree(out)
    if keep:
        shutil.copytree(train_dir / "model", out)
    else:
        shutil.copytree(parent, out)
    chosen = cand if keep else par
    # the folder is content-hashed: no timings, no paths that depend on where the run lives
    timeless = lambda d: {k: v for k, v in d.items() if k not in ("seconds", "base", "judge")}  # noqa: E731
    rel = lambda p: str(Path(p).relative_to(ctx.run_dir)) if Path(p).is_relative_to(ctx.run_dir) else Path(p).name  # noqa: E731
    (out / "generator.json").write_text(json.dumps({"kept_candidate": keep, "rot_err_difference_interval": interval, "parent": rel(parent), "judge": rel(ctx.inputs["recon"]),
                                                    "summary": timeless(summary),
                                                    "candidate": timeless(cand) if cand else None, "parent_eval": timeless(par)}, indent=1, default=str))
    metrics = {
        "gen_rot_err": chosen["recon"]["rot_err"], "gen_trans_err": chosen["recon"]["trans_err"],
        "gen_cam_mc": chosen["recon"]["cam_mc"], "gen_rot_err_flow": chosen["flow"]["rot_err"],
        "gen_psnr": chosen.get("psnr_to_render", float("nan")),
        **({"gen_candidate_rot_err": cand["recon"]["rot_err"], "gen_candidate_rot_err_flow": cand["flow"]["rot_err"]} if cand else {}),
        "gen_parent_rot_err": par["recon"]["rot_err"], "gen_parent_rot_err_flow": par["flow"]["rot_err"],
        **({"gen_rot_diff_lo": interval[0], "gen_rot_diff_hi": interval[1]} if interval else {}),
        "gen_kept": float(keep), f"gen_{pcfg.method}_pairs": float(summary.get("pairs", summary.get("groups", 0))),
    }
    return StageResult(metrics)


VIDEO_STAGES = [
    Stage("prefer_video", prefer_video, inputs=("generator", "recon", "pairs"), outputs=(("generator", "model"),),
          help="the reconstruction candidate judges the generator's camera control; Diffusion-DPO/GRPO (LoRA); kept if confidently better on held-out prompts"),
]
