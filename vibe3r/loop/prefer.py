"""The loop's preference stages: the real world as the judge of the reconstruction model.

``sample_real``  the round's candidate checkpoint (after ``train_recon``) draws ``preference.n``
                 reconstructions + its mode of ``preference.pairs`` pairs of every real capture
                 (``vibe3r.loop.pool``: ``preference.captures`` and the web app's capture pool); the
                 self-supervised rewards score them; the best samples are preferred over the worst. All
                 of it goes into the round's preference store ``sample_real/preferences.sqlite`` — inside
                 the stage folder, so it appears atomically with the stage (a killed attempt leaves no
                 half-written store behind; the stage is re-run from scratch and, seeded, gives the
                 same rows).
``prefer_recon`` DPO (or GRPO, or the exact objective of ``preference.exact``) of LoRA adapters on that checkpoint with the round's preferences, a
                 supervised anchor on the round's simulator pairs; the merged model becomes the round's
                 ``recon`` checkpoint, which ``evaluate`` and ``promote`` then judge like any other.
                 Resumable: the trainer's own checkpoints live in the stage's work folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from vibe3r.errors import InputError
from vibe3r.loop.stage import Stage, StageContext, StageResult


def load_captures(ctx: StageContext, size: int | None, max_frames: int | None = None):  # noqa: ANN202
    """``(spec, Capture)`` of the round's real captures (``vibe3r.loop.pool``: the configured ones and the
    pooled uploads, frozen per round) at ``size`` (None: full resolution, pooled ones at most
    ``pool.FULL_MAX_SIDE``), with the focal length each is to be scored with; at most ``max_frames`` frames of
    each (evenly spread, as the loader does), on top of a pooled capture's own limit."""
    from vibe3r import geometry
    from vibe3r.captures import load_capture
    from vibe3r.loop.pool import DEFAULT_FOV_DEG, FULL_MAX_SIDE, round_captures
    from vibe3r.preference.sampling import set_focal

    pc = ctx.cfg.preference
    out = []
    for rc in round_captures(ctx.cfg, ctx.run_dir, ctx.round):
        load_size = size
        if size is None and rc.origin == "pool":
            from vibe3r.captures import open_source, parse_spec

            if max(open_source(parse_spec(rc.spec)[0]).hw) > FULL_MAX_SIDE:
                load_size = FULL_MAX_SIDE
        limits = [m for m in (rc.max_frames, max_frames) if m is not None]
        cap = load_capture(rc.spec, size=load_size, max_frames=min(limits) if limits else None)
        focal = rc.focal if rc.origin == "pool" else pc.focal
        if focal is not None and cap.K is not None:
            set_focal(cap, *focal)
        elif cap.K is None:  # a phone video: the focal the web app estimated, else a 60 degree field of view
            H, W = cap.hw
            K = geometry.intrinsics_from_fov(DEFAULT_FOV_DEG, W, H).numpy().astype(np.float64)
            cap.K = np.repeat(K[None], len(cap.images), axis=0)
            if focal is not None:
                set_focal(cap, *focal)
        out.append((rc.spec, cap))
    return out


def sfm_alignment(ctx: StageContext, fulls: dict) -> dict[str, dict[int, np.ndarray]]:
    """With ``preference.teacher: sfm``, each capture's structure from motion ({spec: {frame: cam2world}}; once per run,
    cached in RUN/sfm): the global alignment the rewards' alignment term compares samples with, and the exact trainer's
    teacher. Otherwise empty. A capture SfM cannot register goes without (its pairs get no alignment term, no exact pairs)."""
    if ctx.cfg.preference.teacher != "sfm":
        return {}
    from vibe3r.preference.sfm import teacher_poses

    return teacher_poses(fulls, ctx.run_dir / "sfm", log=lambda m: ctx.progress(0, None, m), skip_failed=True)


def sample_real(ctx: StageContext) -> StageResult:
    from vibe3r.preference.cli import model_version
    from vibe3r.preference.sampling import CaptureSampler, choose_pairs
    from vibe3r.preference.store import PreferenceStore
    from vibe3r.recon.model import ReconModel
    from vibe3r.recon.policy import MatchPolicy

    pc = ctx.cfg.preference
    ckpt = Path(ctx.inputs["recon"])
    version = model_version(ckpt)
    policy = MatchPolicy(ReconModel.from_pretrained(ckpt), temperature=pc.temperature)
    store_path = ctx.out("store")
    if store_path.exists():  # a killed attempt: start the store again (seeded: the same rows)
        store_path.unlink()
    smalls, fulls = load_captures(ctx, pc.size), load_captures(ctx, None)
    # the exact objective sums over every candidate match of a pair itself: only the mode is drawn and scored
    # (the store and the report keep its rewards), not pc.n samples (8-13 min per round at 256 px)
    n_draws = 0 if pc.method == "exact" else pc.n
    total = len(smalls) * pc.pairs
    done = 0
    poses = sfm_alignment(ctx, dict(fulls))
    with PreferenceStore(store_path) as store:
        for c, ((spec, small), (_, full)) in enumerate(zip(smalls, fulls)):
            sampler = CaptureSampler(policy, small, full, poses=poses.get(spec))
            cap_id = store.add_capture(spec, small.name, len(small.images))
            for k, (i, j) in enumerate(choose_pairs(len(small.images), pc.pairs, pc.min_gap, pc.max_gap, ctx.seed + c)):
                ctx.progress(done, total, f"capture {c + 1}/{len(smalls)} pair {k + 1}")
                sp = sampler.sample_pair(i, j, n_draws, seed=ctx.seed + 1000 * (c * pc.pairs + k))
                store.add_samples(store.add_pair(cap_id, i, j), sp.samples, sp.rewards, version, ctx.round)
                done += 1
        n_pref = store.prefer_by_reward(ctx.round, version, pc.min_margin, pc.per_pair)
        rows = store.samples(round=ctx.round)
    ctx.progress(total, total, "scored")
    modes = [s for s in rows if s.is_mode]
    return StageResult({
        "pairs": float(total), "samples": float(len(rows)), "preferences": float(n_pref),
        "degenerate_frac": float(np.mean([s.degenerate is not None for s in rows])) if rows else None,
        "mean_reward": float(np.mean([s.combined for s in rows])) if rows else None,
        "mode_reward": float(np.mean([s.combined for s in modes])) if modes else None,
    })


def prefer_recon(ctx: StageContext) -> StageResult:
    from vibe3r.preference.store import PreferenceStore
    from vibe3r.preference.trainer_common import STATE_NAME
    from vibe3r.recon.model import ReconModel
    from vibe3r.recon.policy import PairInput

    pc = ctx.cfg.preference
    ckpt = Path(ctx.inputs["recon"])
    model = ReconModel.from_pretrained(ckpt)
    caps = dict(load_captures(ctx, pc.size))
    anchor = None
    if pc.anchor_weight > 0 and ctx.inputs.get("pairs"):
        from vibe3r.recon.train import PairStream

        anchor = PairStream(ctx.inputs["pairs"], batch_size=4, seed=ctx.seed)
    out = ctx.out("recon")
    trainer_dir = ctx.work / "trainer"
    resume = (trainer_dir / STATE_NAME).is_file()
    if trainer_dir.exists() and not resume:  # killed before the trainer's first checkpoint: start it over
        shutil.rmtree(trainer_dir)
    extra: dict[str, float] = {}
    with PreferenceStore(Path(ctx.inputs["store"])) as store:
        prefs = store.preferences(round=ctx.round)
        pair_rows = store.db.execute("SELECT c.spec, p.i, p.j FROM pairs p JOIN captures c ON c.id = p.capture_id ORDER BY p.id").fetchall()
    if pc.method == "dpo":
        from vibe3r.preference.dpo import DPOConfig, DPOTrainer

        if not prefs:  # every sample of every pair scored alike: nothing to prefer, the checkpoint passes through
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(ckpt, out)
            return StageResult({"dpo_preferences": 0.0})
        recs = []
        for p in prefs:
            c = caps[p.capture_spec]
            pair = PairInput.from_uint8(c.images[p.i], c.images[p.j], c.K[p.i], c.K[p.j], model.config.patch_size)
            recs.append((pair, p.chosen.as_pair_sample(), p.rejected.as_pair_sample()))
        cfg = DPOConfig(beta=pc.beta, reduction=pc.reduction, lr=pc.lr, steps=pc.steps, anchor_weight=pc.anchor_weight if anchor else 0.0,
                        seed=ctx.seed, ckpt_every=max(1, pc.steps // 4), draws=pc.draws)
        last = DPOTrainer(model, pc.temperature, cfg, trainer_dir, progress=False).train(recs, anchor_batches=anchor, resume=resume)
    else:
        from vibe3r.preference.grpo import GRPOConfig, GRPOTrainer
        from vibe3r.preference.sampling import CaptureSampler, grpo_pairs
        from vibe3r.recon.policy import MatchPolicy

        fulls = dict(load_captures(ctx, None))
        used = {r[0] for r in pair_rows}
        poses = sfm_alignment(ctx, {s: c for s, c in fulls.items() if s in used}) if pc.teacher == "sfm" else None
        samplers = {spec: CaptureSampler(MatchPolicy(model, temperature=pc.temperature), caps[spec], fulls[spec], cycle=False,
                                         poses=None if poses is None else poses.get(spec))
                    for spec in caps}
        if pc.method == "exact":
            from vibe3r.preference.exact import ExactConfig, ExactTrainer
            from vibe3r.preference.sampling import exact_items

            cfg = ExactConfig(beta=pc.exact_beta, temperature=pc.temperature, lr=pc.lr, steps=pc.steps, seed=ctx.seed,
                              draws_per_pair=pc.exact_draws or None,
                              anchor_weight=pc.anchor_weight if anchor else 0.0, ckpt_every=max(1, pc.steps // 4))
            items = exact_items(samplers, pair_rows, poses=poses)
            if not items:
                raise InputError(f"none of the round's {len(pair_rows)} real pairs has a {pc.teacher} pose to reward matches with")
            extra["exact_pairs"] = float(len(items))
            if poses is not None:
                extra["sfm_registered_frac"] = float(np.mean([len(poses[s]) / len(fulls[s].images) for s in poses]))
            last = ExactTrainer(model, cfg, trainer_dir, progress=False).train(items, anchor_batches=anchor, resume=resume)
        else:
            pairs, reward_fn, draw_reward_fn = grpo_pairs(samplers, pair_rows)
            cfg = GRPOConfig(n=pc.n, temperature=pc.temperature, lr=pc.lr, steps=pc.steps, anchor_weight=pc.anchor_weight if anchor else 0.0,
                             seed=ctx.seed, ckpt_every=max(1, pc.steps // 4), draws=pc.draws, draw_weight=pc.draw_weight)
            last = GRPOTrainer(model, cfg, trainer_dir, progress=False).train(pairs, reward_fn, anchor_batches=anchor,
                                                                             resume=resume, draw_reward_fn=draw_reward_fn)
    merged = trainer_dir / "merged"
    if not (merged / "model.safetensors").is_file():
        raise InputError(f"the {pc.method} trainer wrote no merged checkpoint in {merged}")
    if out.exists():
        shutil.rmtree(out)
    merged.rename(out)
    if (ckpt / "train_config.yaml").is_file():  # the recipe travels with the weights: the next round fine-tunes with it
        shutil.copyfile(ckpt / "train_config.yaml", out / "train_config.yaml")
    parent = ckpt.relative_to(ctx.run_dir) if ckpt.is_relative_to(ctx.run_dir) else ckpt.name
    keep_last = {k: v for k, v in last.items() if not k.endswith(("_s", "_min", "wall", "time"))}
    (out / "preference.json").write_text(json.dumps({"method": pc.method, "parent": str(parent), "last": keep_last}, default=str))
    keep = ("loss", "dpo_loss", "margin", "accuracy", "kl", "reward_mean", "kl_k3", "chosen_reward", "rejected_reward", "reward", "reward_ref")
    metrics = {f"{pc.method}_{k}": float(v) for k, v in last.items() if k in keep and isinstance(v, (int, float))}
    return StageResult({**metrics, **extra, f"{pc.method}_preferences": float(len(prefs))})


PREFERENCE_STAGES = [
    Stage("sample_real", sample_real, inputs=("recon",), outputs=(("store", "preferences.sqlite"),),
          help="sample + score reconstructions of real captures with the candidate; reward preferences"),
    Stage("prefer_recon", prefer_recon, inputs=("recon", "store", "pairs"), outputs=(("recon", "ckpt"),), resumable=True,
          help="DPO/GRPO (LoRA) of the candidate on the round's preferences; the merged model is the new candidate"),
]
