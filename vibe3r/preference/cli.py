"""``vibe3r preference``: sample reconstructions of real captures, score them, prefer, train.

    vibe3r preference sample --capture ../shared/data/real/7scenes-redkitchen@0:125 --run runs/pref --n 8
    vibe3r preference score --run runs/pref --round 1
    vibe3r preference train --run runs/pref --round 1 --method dpo --out runs/pref/dpo
    vibe3r preference show --run runs/pref
    vibe3r preference export --run runs/pref --out prefs.parquet

The store is ``RUN/preferences.sqlite``. Every command can be re-run: sampling skips pairs already
sampled by the same model in the same round, preferences are not added twice, training resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, get_args

import typer

from vibe3r.config import PreferenceConfig
from vibe3r.errors import InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="rewards, preference store, DPO/GRPO")

RunOpt = Annotated[Path, typer.Option("--run", help="run directory holding preferences.sqlite")]


@app.callback()
def _group() -> None:
    """Preference data from real captures and preference training of the reconstruction model."""


def model_version(ckpt: Path) -> str:
    """Hash of a checkpoint's tensors (not of the file's bytes, whose safetensors header order varies
    from process to process): which model drew a sample."""
    from vibe3r.loop.stage import safetensors_sha256

    w = Path(ckpt) / "model.safetensors"
    if not w.is_file():
        raise InputError(f"no model.safetensors in checkpoint folder {ckpt}")
    return safetensors_sha256(w)[:12]


def _ckpt(ckpt: Path | None) -> Path:
    from vibe3r.recon.run import default_checkpoint

    return Path(ckpt) if ckpt is not None else default_checkpoint()


def _override_focal(caps: list, focal: str) -> None:
    if not focal:
        return
    try:
        fx, fy = (float(v) for v in focal.split(","))
    except ValueError:
        raise InputError(f"--focal must be 'fx,fy' in pixels of the native frames, got {focal!r}") from None
    from vibe3r.preference.sampling import set_focal

    for c in caps:
        set_focal(c, fx, fy)


@app.command("sample")
def sample_cmd(
    capture: Annotated[str, typer.Option("--capture", help="capture spec with intrinsics, optionally PATH@START:STOP:STEP")],
    run: RunOpt,
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="policy checkpoint; default: the shipped weights/recon-base")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="samples per pair (the mode is added)")] = 8,
    pairs: Annotated[int, typer.Option("--pairs", min=1, help="pairs drawn from the capture")] = 24,
    min_gap: Annotated[int, typer.Option("--min-gap", min=1, help="smallest frame gap of a pair")] = 3,
    max_gap: Annotated[int, typer.Option("--max-gap", min=1, help="largest frame gap of a pair")] = 15,
    exact_beta: Annotated[float, typer.Option("--exact-beta", help="exact: KL weight in pixels of Sampson distance")] = 1.0,
    size: Annotated[int, typer.Option("--size", help="longer image side the model sees")] = 128,
    round_: Annotated[int, typer.Option("--round", help="round the samples belong to")] = 1,
    temperature: Annotated[float, typer.Option("--temperature", help="policy temperature (the InfoNCE one by default)")] = 0.07,
    focal: Annotated[str, typer.Option("--focal", help="override fx,fy of the native frames (e.g. 518,532 for 7-Scenes colour)")] = "",
    seed: Annotated[int, typer.Option("--seed", help="seed of the pair choice and of the samples")] = 0,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads")] = 1,
    align: Annotated[str, typer.Option("--align", help="none | sfm: score every sample also against the capture's structure from "
                                       "motion (the alignment reward term; pycolmap, cached in the run folder; no ground truth)")] = "none",
) -> None:
    """Draw n reconstructions (+ the mode) of pairs of a real capture and store them with their rewards."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from vibe3r.captures import load_capture
    from vibe3r.preference.sampling import CaptureSampler, choose_pairs
    from vibe3r.preference.store import PreferenceStore
    from vibe3r.recon.model import ReconModel
    from vibe3r.recon.policy import MatchPolicy

    if align not in ("none", "sfm"):
        raise InputError(f"unknown --align {align!r}; valid: none, sfm")
    torch.set_num_threads(threads)
    ck = _ckpt(ckpt)
    version = model_version(ck)
    small, full = load_capture(capture, size=size), load_capture(capture)
    _override_focal([small, full], focal)
    poses = None
    if align == "sfm":
        from vibe3r.preference.sfm import capture_poses

        poses = capture_poses(full, run / "sfm", capture, threads=threads, log=typer.echo)
    sampler = CaptureSampler(MatchPolicy(ReconModel.from_pretrained(ck), temperature=temperature), small, full, poses=poses)
    chosen = choose_pairs(len(small.images), pairs, min_gap, max_gap, seed)
    with PreferenceStore(run / "preferences.sqlite") as store:
        cap = store.add_capture(capture, small.name, len(small.images))
        done = {s.pair_id for s in store.samples(round=round_) if s.model_version == version}
        with Progress(TextColumn("sampling"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn()) as prog:
            task = prog.add_task("pairs", total=len(chosen))
            for k, (i, j) in enumerate(chosen):
                pid = store.add_pair(cap, i, j)
                if pid not in done:
                    sp = sampler.sample_pair(i, j, n, seed=seed * 100_000 + 1000 * k)
                    store.add_samples(pid, sp.samples, sp.rewards, version, round_)
                prog.advance(task)
        typer.echo(json.dumps(store.summary()["samples_per_round"].get(round_, {})))


@app.command("score")
def score_cmd(
    run: RunOpt,
    round_: Annotated[int, typer.Option("--round", help="round whose samples are compared")] = 1,
    min_margin: Annotated[float, typer.Option("--min-margin", help="smallest reward difference that makes a preference")] = 0.05,
    per_pair: Annotated[int, typer.Option("--per-pair", min=1, help="preferences per pair (best samples vs worst ones)")] = 2,
) -> None:
    """Turn the stored rewards of a round into chosen/rejected preferences (source ``reward``)."""
    from vibe3r.preference.store import PreferenceStore

    with PreferenceStore(run / "preferences.sqlite") as store:
        versions = {s.model_version for s in store.samples(round=round_)}
        if not versions:
            raise InputError(f"no samples in round {round_} of {run}; run `vibe3r preference sample` first")
        added = sum(store.prefer_by_reward(round_, v, min_margin, per_pair) for v in sorted(versions))
        typer.echo(f"{added} preferences added for round {round_} ({len(store.preferences(round=round_))} in total)")


@app.command("train")
def train_cmd(
    run: RunOpt,
    out: Annotated[Path, typer.Option("--out", help="trainer folder (adapters, logs, merged checkpoint)")],
    method: Annotated[str, typer.Option("--method", help="dpo | grpo | exact (the KL-regularised objective in closed form "
                                        "over every candidate match, per-match epipolar rewards; preference.exact)")] = "dpo",
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="SFT checkpoint the adapters are added to")] = None,
    round_: Annotated[int, typer.Option("--round", help="round whose preferences (dpo) or pairs (grpo) are used")] = 1,
    steps: Annotated[int, typer.Option("--steps", min=1, help="optimiser steps (dpo) or rollouts (grpo)")] = 80,
    group: Annotated[int, typer.Option("--group", min=2, help="grpo: samples per pair and rollout")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="adapter learning rate (the best measured DPO setting by default)")] = 1e-3,
    beta: Annotated[float, typer.Option("--beta", help="dpo: beta")] = 0.1,
    reduction: Annotated[str, typer.Option("--reduction", help="dpo: sample log-likelihood, mean per draw | sum")] = "mean",
    draws: Annotated[str, typer.Option("--draws", help="draws a sample's likelihood (dpo) or advantage (grpo) counts: all | matches "
                                       "(those forming its cycle-consistent matches)")] = "all",
    draw_weight: Annotated[float, typer.Option("--draw-weight", min=0, help="grpo: weight of per-draw advantages (each drawn match's "
                                               "epipolar distance under the classical pose); 0 = sample-level credit only")] = 0.0,
    exact_beta: Annotated[float, typer.Option("--exact-beta", help="exact: KL weight in pixels of Sampson distance")] = 1.0,
    exact_draws: Annotated[int, typer.Option("--exact-draws", min=0, help="exact: forward and backward draws sampled per pair and "
                                             "step (0: all; about 1024 makes 256 px affordable)")] = 0,
    teacher: Annotated[str, typer.Option("--teacher", help="exact: the pose matches are rewarded under: classical (two-view "
                                         "RootSIFT per pair) | sfm (the capture's structure from motion, cached in the run folder)")] = "classical",
    size: Annotated[int, typer.Option("--size", help="longer image side the model sees")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", help="policy temperature the samples were drawn at")] = 0.07,
    anchor_data: Annotated[Path | None, typer.Option("--anchor-data", help="simulator pair dataset for the supervised anchor")] = None,
    focal: Annotated[str, typer.Option("--focal", help="override fx,fy (grpo's rewards), as for sample")] = "",
    resume: Annotated[bool, typer.Option("--resume", help="continue the run saved in --out")] = False,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads")] = 1,
) -> None:
    """DPO on the stored preferences, or GRPO / exact with the rewards on the stored pairs; LoRA adapters on the SFT model."""
    import torch

    from vibe3r.captures import load_capture
    from vibe3r.preference.store import PreferenceStore
    from vibe3r.recon.model import ReconModel
    from vibe3r.recon.policy import PairInput

    if method not in ("dpo", "grpo", "exact"):
        raise InputError(f"unknown preference method {method!r}; valid: dpo, grpo, exact")
    if draws not in ("all", "matches"):
        raise InputError(f"unknown --draws {draws!r}; valid: all, matches")
    teachers = get_args(PreferenceConfig.model_fields["teacher"].annotation)
    if teacher not in teachers:
        raise InputError(f"unknown --teacher {teacher!r}; valid: {', '.join(teachers)}")
    torch.set_num_threads(threads)
    model = ReconModel.from_pretrained(_ckpt(ckpt))
    anchor = None
    if anchor_data is not None:
        from vibe3r.recon.train import PairStream

        anchor = PairStream(anchor_data, batch_size=4, seed=0)
    caps: dict[str, object] = {}

    def cap(spec: str):  # noqa: ANN202
        if spec not in caps:
            caps[spec] = load_capture(spec, size=size)
        return caps[spec]

    with PreferenceStore(run / "preferences.sqlite") as store:
        if method == "dpo":
            from vibe3r.preference.dpo import DPOConfig, DPOTrainer

            prefs = store.preferences(round=round_)
            if not prefs:
                raise InputError(f"no preferences in round {round_}; run `vibe3r preference score` first")
            recs = []
            for p in prefs:
                c = cap(p.capture_spec)
                pair = PairInput.from_uint8(c.images[p.i], c.images[p.j], c.K[p.i], c.K[p.j], model.config.patch_size)
                recs.append((pair, p.chosen.as_pair_sample(), p.rejected.as_pair_sample()))
            cfg = DPOConfig(steps=steps, lr=lr, beta=beta, reduction=reduction, anchor_weight=0.1 if anchor is not None else 0.0,
                            threads=threads, draws=draws)
            last = DPOTrainer(model, temperature, cfg, out).train(recs, anchor_batches=anchor, resume=resume)
        else:
            from vibe3r.preference.grpo import GRPOConfig, GRPOTrainer
            from vibe3r.preference.sampling import CaptureSampler
            from vibe3r.recon.policy import MatchPolicy

            rows = store.db.execute("SELECT c.spec, p.i, p.j FROM pairs p JOIN captures c ON c.id = p.capture_id"
                                    " WHERE p.id IN (SELECT pair_id FROM samples WHERE round=?)", (round_,)).fetchall()
            if not rows:
                raise InputError(f"no sampled pairs in round {round_}; run `vibe3r preference sample` first")
            from vibe3r.preference.sampling import grpo_pairs

            samplers, fulls = {}, {}
            for spec in {r[0] for r in rows}:
                small, fulls[spec] = load_capture(spec, size=size), load_capture(spec)
                _override_focal([small, fulls[spec]], focal)
                samplers[spec] = CaptureSampler(MatchPolicy(model, temperature=temperature), small, fulls[spec], cycle=False)
            if method == "exact":
                from vibe3r.preference.exact import ExactConfig, ExactTrainer
                from vibe3r.preference.sampling import exact_items

                poses = None
                if teacher == "sfm":
                    from vibe3r.preference.sfm import teacher_poses

                    poses = teacher_poses(fulls, run / "sfm", threads=threads, log=typer.echo)
                items = exact_items(samplers, rows, poses=poses)
                if not items:
                    raise InputError(f"none of the {len(rows)} sampled pairs of round {round_} has a {teacher} pose to reward matches with")
                cfg = ExactConfig(steps=steps, lr=lr, beta=exact_beta, temperature=temperature, draws_per_pair=exact_draws or None,
                                  anchor_weight=0.1 if anchor is not None else 0.0, threads=threads)
                last = ExactTrainer(model, cfg, out).train(items, anchor_batches=anchor, resume=resume)
                typer.echo(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in last.items()}))
                return
            pairs, reward_fn, draw_reward_fn = grpo_pairs(samplers, rows)

            cfg = GRPOConfig(steps=steps, n=group, lr=lr, temperature=temperature, anchor_weight=0.1 if anchor is not None else 0.0,
                             threads=threads, draws=draws, draw_weight=draw_weight)
            last = GRPOTrainer(model, cfg, out).train(pairs, reward_fn, anchor_batches=anchor, resume=resume, draw_reward_fn=draw_reward_fn)
    typer.echo(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in last.items()}))


@app.command("show")
def show_cmd(run: RunOpt, as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Counts per round and source, degenerate samples, mean rewards and margins."""
    from vibe3r.preference.store import PreferenceStore

    db = run / "preferences.sqlite"
    if not db.is_file():
        raise InputError(f"no preference store in {run}")
    with PreferenceStore(db) as store:
        s = store.summary()
    if as_json:
        typer.echo(json.dumps(s))
        return
    typer.echo(f"{s['captures']} captures, {s['pairs']} pairs")
    for r, v in sorted(s["samples_per_round"].items()):
        typer.echo(f"round {r}: {v['samples']} samples ({v['degenerate']} degenerate), mean reward {v['mean_reward']:.3f}")
    for p in s["preferences"]:
        typer.echo(f"round {p['round']} {p['source']}: {p['n']} preferences, mean margin {p['mean_margin']:.3f}")


@app.command("export")
def export_cmd(run: RunOpt, out: Annotated[Path, typer.Option("--out", help="parquet file")]) -> None:
    """Preferences as a Hugging Face datasets parquet file."""
    from vibe3r.preference.store import PreferenceStore

    with PreferenceStore(run / "preferences.sqlite") as store:
        typer.echo(str(store.export(out)))
