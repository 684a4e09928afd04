"""The loop: registry transactions, the stage contract, kill -9 and resume equal to an uninterrupted round,
the run lock, promotion, replay mixing, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _common import REAL, TINY_MODEL, needs_real
from safetensors.torch import save_file
from typer.testing import CliRunner

from vibe3r import geometry
from vibe3r.config import ConfigError, load_config
from vibe3r.errors import Vibe3rError
from vibe3r.loop.cli import app
from vibe3r.loop.iterate import RunLock, RunLocked, iterate, select_stages, status
from vibe3r.loop.registry import Registry
from vibe3r.loop.stage import Stage, StageContext, StageResult, run_stage
from vibe3r.loop.stages import STAGES, live_recon, mix_dataset, promote, recipe

ROOT = Path(__file__).resolve().parents[1]


TINY_GENERATOR = {"width": 32, "height": 24, "frames": 4, "patch_size": 4, "layers": 1, "heads": 2, "head_dim": 16,
                  "train_timesteps": 100}


def tiny_generator(tmp_path: Path) -> Path:
    import torch

    from vibe3r.config import GeneratorModelConfig
    from vibe3r.video_gen.diffusion import VideoGenerator

    out = tmp_path / "gen-tiny"
    if not (out / "model.safetensors").is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            VideoGenerator(GeneratorModelConfig(**TINY_GENERATOR)).save_pretrained(out)
    return out


def tiny_config(tmp_path: Path) -> Path:
    """Two 12-frame 32x24 videos per round, a 12-step fine-tune of the smallest model, 2 real pairs per list."""
    cfg = {
        "render": {"width": 32, "height": 24, "supersample": 1, "adaptive_supersample": 0},
        "loop": {"max_frames": 12, "base_checkpoint": None, "recipe": "config", "image_size": [32, 24], "videos_per_round": 2,
                 "pairs_per_video": 8, "train_steps": 12, "warmup_steps": 1, "lr": 0.002, "heldout_videos": 1,
                 "heldout_pairs_per_video": 6, "heldout_min_baseline": 0.0,  # this draw's one held-out video is a pan
                 "real_pairs_per_list": 2 if REAL.is_dir() else 0, "eval_size": 32,
                 "val_pairs": 2 if REAL.is_dir() else 0,
                 "real_capture_pairs": 2 if REAL.is_dir() else 0,
                 "real_pairs": [str(REAL / "eval-pairs" / "tum-fr3-long-office-sequence.txt")],
                 "stages": None if REAL.is_dir() else ["generate", "train_recon", "evaluate", "promote"]},
        # the preference stages on 7 frames of 7-Scenes' preference side; without the shared data they are left out
        "preference": {"captures": [str(REAL / "7scenes-redkitchen") + "@0:125:20"], "size": 32, "pairs": 2, "n": 2,
                       "min_gap": 1, "max_gap": 2, "steps": 2, "min_margin": 0.0},
        "warp": {"views_per_frame": 1, "min_valid": 0.0},  # an untrained model's depth: keep every render
        "recon": {"model": TINY_MODEL, "loss": {"match_samples": 64, "neg_samples": 128},
                  "train": {"batch_size": 2, "ckpt_every": 2, "threads": 1, "log_every": 2}},
        # the generator stage: a tiny untrained generator judged on 2 prompts, 2 Diffusion-DPO steps
        "generator": {"model": TINY_GENERATOR, "sample": {"steps": 2},
                      "prefer": {"n": 2, "steps": 2, "sample_steps": 2, "batch_size": 1, "min_margin": 0.0, "stride": 2}},
    }
    cfg["loop"].update(generator_checkpoint=str(tiny_generator(tmp_path)), generator_prompts=2, generator_eval_prompts=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(cfg: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vibe3r.cli", "loop", "iterate", "--config", str(cfg), "--run", str(run), "--no-progress", *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _fingerprint(run: Path) -> dict:
    """Everything a round produced that must be replayable: artifact hashes, metrics, promotions."""
    with Registry(run) as reg:
        return {
            "artifacts": [(a["round"], a["stage"], a["name"], a["path"], a["sha256"]) for a in reg.artifacts()],
            "metrics": reg.metrics(),
            "checkpoints": [(c["round"], c["path"], c["sha256"], c["promoted"], c["metric"]) for c in reg.checkpoints()],
            "stages": [(s["round"], s["name"], s["state"]) for s in reg.stages()],
        }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    cfg = tiny_config(tmp)
    run = tmp / "full"
    iterate(load_config(cfg), run)  # in this process; the killed run below works in subprocesses
    return cfg, run


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    t0 = time.time()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run finished before the kill point: {proc.stderr.read().decode()[-2000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("kill point not reached")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill9_mid_stage_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    cfg, full = uninterrupted
    run = tmp_path / "killed"
    rd = run / "rounds" / "0001"
    # 1) kill -9 while generate is rendering (a video folder exists, the stage is unfinished)
    proc = subprocess.Popen(_cmd(cfg, run), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _kill_when(proc, lambda: (rd / ".generate.tmp" / "pairs" / "videos" / "00000" / "meta.json").is_file())
    # 2) resume, then kill -9 in the middle of fine-tuning (after a training snapshot, before the end)
    proc = subprocess.Popen(_cmd(cfg, run), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _kill_when(proc, lambda: any(p.name >= "step-000004" for p in (rd / ".train_recon.tmp" / "snapshots").glob("step-*")))
    with Registry(run) as reg:
        assert reg.stage(1, "generate")["state"] == "done" and reg.stage(1, "generate")["attempts"] == 2
        assert reg.stage(1, "train_recon")["state"] == "running"
        assert reg.last_round()["state"] == "running"
    # 3) resume to the end
    out = subprocess.run(_cmd(cfg, run), env=ENV, cwd=ROOT, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert "train_recon: done" in out.stdout.decode() and "generate: skipped" in out.stdout.decode()
    with Registry(run) as reg:
        assert reg.stage(1, "train_recon")["attempts"] == 2
    assert _fingerprint(run) == _fingerprint(full)
    assert not list(rd.glob(".*.tmp"))


def test_second_process_on_a_run_is_refused(tmp_path):
    cfg = tiny_config(tmp_path)
    run = tmp_path / "run"
    with RunLock(run):
        out = subprocess.run(_cmd(cfg, run), env=ENV, cwd=ROOT, capture_output=True, timeout=120)
        with pytest.raises(RunLocked, match="in use by another vibe3r loop process"):
            with RunLock(run):
                pass
    assert out.returncode == 2
    err = out.stderr.decode().strip()
    assert err.startswith("error: run ") and f"(pid {os.getpid()})" in err and "\n" not in err


def test_status_shows_rounds_stages_metrics_and_live_checkpoint(uninterrupted):
    cfg, run = uninterrupted
    st = status(run)
    (r,) = st["rounds"]
    planned = yaml.safe_load(Path(cfg).read_text())["loop"]["stages"]  # None: all; without the shared data the tiny four
    assert [s["name"] for s in r["stages"]] == [s.name for s in STAGES if planned is None or s.name in planned]
    assert all(s["state"] == "done" for s in r["stages"])
    assert r["metrics"]["evaluate/heldout_loss"] > 0 and "evaluate/heldout_auc10" in r["metrics"]
    last = "prefer_recon" if REAL.is_dir() else "train_recon"  # the round's last recon-producing stage
    assert st["live"] == {"round": 1, "path": f"rounds/0001/{last}/ckpt"}
    assert (run / "live" / "model.safetensors").is_file()
    assert json.loads((run / "metrics.json").read_text())[0]["metrics"] == r["metrics"]
    assert any((run / "tb").iterdir())
    res = CliRunner().invoke(app, ["status", "--run", str(run)])
    assert res.exit_code == 0 and "live recon checkpoint: round 1" in res.output


@pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")
def test_the_rounds_real_captures_join_its_training_pairs(uninterrupted):
    """warp_real re-renders the round's real frames through the live model's depth; train_recon trains on them."""
    _, run = uninterrupted
    m = status(run)["rounds"][0]["metrics"]
    assert m["warp_real/pairs"] == m["warp_real/frames"] == 7  # 7 frames of the capture, one render each
    assert m["train_recon/new_pairs"] == m["generate/pairs"] + m["warp_real/pairs"]


@pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")
def test_the_reported_real_pairs_include_a_draw_from_the_held_out_capture(uninterrupted):
    """loop.real_captures adds pairs of never-trained frames (GT poses, gaps 3-15) to the fixed real lists."""
    _, run = uninterrupted
    m = status(run)["rounds"][0]["metrics"]
    (held,) = run.glob("heldout-*")
    roots = json.loads((held / "real_roots.json").read_text())
    drawn = [n for n in roots if n.startswith("real-7scenes-redkitchen-125-250-")]
    assert len(drawn) == 1 and f"evaluate/real_{Path(drawn[0]).stem.removeprefix('real-')}_auc10" in m
    lines = (held / drawn[0]).read_text().split("\n")[:-1]
    frames = [int(n.split("-")[1].split(".")[0]) for ln in lines for n in ln.split()[:2]]
    assert len(lines) == 2 and min(frames) >= 500  # 7-Scenes 500-996: never in the training half 0-496
    for ln in lines:
        gap = abs(int(ln.split()[1].split("-")[1].split(".")[0]) - int(ln.split()[0].split("-")[1].split(".")[0]))
        assert 12 <= gap <= 60


@pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")
def test_a_round_records_the_validation_frames_it_trains_on(uninterrupted):
    """The tiny run trains on 7 frames of 7-Scenes 0-496 (every 20th capture frame) and validates on the default's
    frames 400-496, two of which (400, 480) it trains on: evaluate counts them once (metric and eval.json), promote
    says so."""
    _, run = uninterrupted
    assert status(run)["rounds"][0]["metrics"]["evaluate/val_train_overlap"] == 2
    assert json.loads((run / "rounds/0001/evaluate/eval.json").read_text())["val_train_overlap"] == 2
    assert "shares 2 frames" in json.loads((run / "rounds/0001/promote/decision.json").read_text())["reason"]


def test_a_round_whose_generator_samples_tie_keeps_the_parent(tmp_path):
    """When the judge tells no prompt's videos apart (every margin below min_margin), prefer_video records a round
    without a candidate and the parent generator stays: the round does not stop (it did, in a 3-round default run)."""
    cfg = tiny_config(tmp_path)
    run = tmp_path / "run"
    iterate(load_config(cfg, ["generator.prefer.min_margin=1000", "loop.stages=[generate,train_recon,prefer_video]",
                              "loop.generator_eval_seeds=2"]), run)
    out = run / "rounds/0001/prefer_video/model"
    gj = json.loads((out / "generator.json").read_text())
    assert gj["kept_candidate"] is False and gj["candidate"] is None and gj["summary"]["pairs"] == 0
    assert gj["parent_eval"]["n_seeds"] == 2  # each held-out prompt judged over two sampled videos
    assert gj["parent_eval"]["recon"]["rot_err"] >= 0
    m = status(run)["rounds"][0]["metrics"]
    assert m["prefer_video/gen_kept"] == 0 and m["prefer_video/gen_dpo_pairs"] == 0 and "prefer_video/gen_candidate_rot_err" not in m
    parent = tiny_generator(tmp_path)
    assert (out / "model.safetensors").read_bytes() == (parent / "model.safetensors").read_bytes()


@needs_real
def test_capture_gaps_set_the_motion_of_the_validation_pairs(tmp_path):
    """loop.capture_gaps [15, 25] on 7-Scenes' every-4th-frame capture: every validation pair is 60-100 frames apart."""
    from vibe3r.loop.stages import _write_val_list

    cfg = load_config(None, ["loop.capture_gaps=[15, 25]", "loop.val_pairs=20",
                             f"loop.val_capture={REAL / '7scenes-redkitchen'}@0:125"])
    roots = _write_val_list(cfg, tmp_path / "val.txt")
    assert list(roots) == ["val.txt"]
    lines = (tmp_path / "val.txt").read_text().split("\n")[:-1]
    frame = lambda name: int(name.split("-")[1].split(".")[0])  # noqa: E731
    gaps = [abs(frame(ln.split()[1]) - frame(ln.split()[0])) for ln in lines]
    assert len(lines) == 20 and min(gaps) >= 60 and max(gaps) <= 100


@needs_real
def test_val_gaps_give_a_short_validation_segment_its_own_motion(tmp_path):
    """A 25-frame validation segment split off the training frames holds only 55 pairs 15-25 apart:
    loop.val_gaps [3, 15] draws all 208 of its pairs 12-60 frames apart, and the real captures keep capture_gaps."""
    from vibe3r.loop.stages import _heldout_key, _write_val_list

    cfg = load_config(None, ["loop.capture_gaps=[15, 25]", "loop.val_gaps=[3, 15]", "loop.val_pairs=208",
                             f"loop.val_capture={REAL / '7scenes-redkitchen'}@100:125"])
    _write_val_list(cfg, tmp_path / "val.txt")
    lines = (tmp_path / "val.txt").read_text().split("\n")[:-1]
    frame = lambda name: int(name.split("-")[1].split(".")[0])  # noqa: E731
    pairs = {tuple(sorted((frame(ln.split()[0]), frame(ln.split()[1])))) for ln in lines}
    gaps = [b - a for a, b in pairs]
    assert len(lines) == len(pairs) == 208 and min(gaps) == 12 and max(gaps) == 60
    assert min(min(p) for p in pairs) >= 400 and max(max(p) for p in pairs) <= 496
    assert _heldout_key(cfg)["val_gaps"] == [3, 15] and "val_gaps" not in _heldout_key(load_config(None))


def test_the_held_out_pose_list_leaves_out_pairs_without_baseline(tmp_path):
    """A pan or a tilt has no translation direction to score: such held-out pairs stay out of synthetic.txt
    (they failed every model), the rest are written with their GT, and the loss/depth set keeps them all."""
    from vibe3r.loop.stages import _baseline_ratio, _heldout_key, ensure_heldout

    base = ["render.width=32", "render.height=24", "render.supersample=1", "render.adaptive_supersample=0",
            "loop.max_frames=12", "loop.image_size=[32, 24]", "loop.heldout_videos=4", "loop.heldout_pairs_per_video=8",
            "loop.real_pairs_per_list=0", "loop.real_capture_pairs=0", "loop.val_pairs=0"]
    kept = {}
    for thr in (0.0, 0.02):
        cfg = load_config(None, [*base, f"loop.heldout_min_baseline={thr}"])
        held = ensure_heldout(cfg, tmp_path / str(thr))
        kept[thr] = (held / "synthetic.txt").read_text().split("\n")[:-1]
        pairs, ratios = 0, []
        for f in sorted((held / "pairs" / "shards").iterdir()):
            with np.load(f) as z:
                pairs += len(z["pairs"])
                ratios += [_baseline_ratio(z["c2w"][a], z["c2w"][b], z["depth"][a]) for a, b in z["pairs"]]
        assert pairs == 32  # the loss and depth evaluation keeps every pair
        assert len(kept[thr]) == sum(r >= thr for r in ratios)
        for ln in kept[thr]:  # the written GT: T_0to1's translation is the baseline
            assert np.linalg.norm(np.array(ln.split()[-16:], float).reshape(4, 4)[:3, 3]) > (1e-6 if thr else -1)
    left = json.loads(next((tmp_path / "0.02").glob("heldout-*/synthetic_left_out.json")).read_text())
    assert left["pairs"] == len(kept[0.0]) - len(kept[0.02]) > 0  # this draw has pans: some pairs are left out
    assert set(kept[0.02]) < set(kept[0.0])
    assert "min_baseline" not in _heldout_key(load_config(None, ["loop.heldout_min_baseline=0"]))


# --------------------------------------------------------------------------------------------
# The stage contract on toy stages (no rendering)
# --------------------------------------------------------------------------------------------


def _args(reg: Registry, tmp_path: Path) -> dict:
    return {"cfg": load_config(None), "run_dir": tmp_path, "round": 1, "registry": reg, "seed": 0}


def test_a_stage_is_recorded_only_when_complete(tmp_path):
    calls = []

    def fn(ctx: StageContext) -> StageResult:
        calls.append(sorted(p.name for p in ctx.work.iterdir()))
        (ctx.work / "partial").write_text("x")
        if len(calls) == 1:
            raise RuntimeError("killed")
        ctx.out("thing").write_text("done")
        return StageResult({"m": 1.5})

    stage = Stage("toy", fn, inputs=(), outputs=(("thing", "thing.txt"),))
    with Registry(tmp_path) as reg:
        with pytest.raises(RuntimeError):
            run_stage(stage, 0, _args(reg, tmp_path), lambda n: None)
        assert reg.stage(1, "toy")["state"] == "running" and reg.metrics() == {}
        assert not (tmp_path / "rounds" / "0001" / "toy").exists()
        rec = run_stage(stage, 0, _args(reg, tmp_path), lambda n: None)
        assert calls == [[], []]  # not resumable: the second attempt starts from an empty folder
        assert rec["metrics"] == {"m": 1.5} and reg.stage(1, "toy")["attempts"] == 2
        assert reg.metrics() == {1: {"toy/m": 1.5}}
        (a,) = reg.artifacts()
        assert a["path"] == "rounds/0001/toy/thing.txt" and len(a["sha256"]) == 64
        assert run_stage(stage, 0, _args(reg, tmp_path), lambda n: None)["skipped"]
        assert len(calls) == 2


def test_a_renamed_but_unrecorded_stage_is_recorded_from_its_result(tmp_path):
    """Killed between the atomic rename and the registry transaction: the next run records it without rerunning."""
    calls = []

    def fn(ctx):  # noqa: ANN001, ANN202
        calls.append(1)
        ctx.out("thing").write_text("done")
        return StageResult({"m": 2.0})

    stage = Stage("toy", fn, inputs=(), outputs=(("thing", "thing.txt"),))
    with Registry(tmp_path) as reg:
        run_stage(stage, 0, _args(reg, tmp_path), lambda n: None)
        with reg.transaction() as db:  # forget the record, as if killed before it
            db.execute("UPDATE stages SET state='running'")
            db.execute("DELETE FROM metrics")
        assert run_stage(stage, 0, _args(reg, tmp_path), lambda n: None)["skipped"] is False
        assert calls == [1] and reg.metrics() == {1: {"toy/m": 2.0}} and reg.stage(1, "toy")["state"] == "done"


def test_missing_declared_output_fails_the_stage(tmp_path):
    stage = Stage("toy", lambda ctx: StageResult(), inputs=(), outputs=(("thing", "thing.txt"),))
    with Registry(tmp_path) as reg, pytest.raises(Vibe3rError, match="without its declared outputs: thing"):
        run_stage(stage, 0, _args(reg, tmp_path), lambda n: None)


def test_registry_is_wal_and_transactions_roll_back(tmp_path):
    with Registry(tmp_path) as reg:
        assert reg.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        reg.start_round(1, "h", {}, ["a"])
        with pytest.raises(RuntimeError), reg.transaction() as db:
            db.execute("UPDATE rounds SET state='done'")
            raise RuntimeError
        assert reg.last_round()["state"] == "running"


def test_stage_selection_is_data_driven():
    assert [s.name for s in select_stages(None)] == ["generate", "warp_real", "sfm_real", "train_recon", "sample_real", "prefer_recon", "prefer_video", "evaluate", "promote"]
    assert [s.name for s in select_stages(["promote", "generate"])] == ["generate", "promote"]
    with pytest.raises(Vibe3rError, match="registered stages: generate, warp_real, sfm_real, train_recon"):
        select_stages(["dpo"])


# --------------------------------------------------------------------------------------------
# Promotion and replay
# --------------------------------------------------------------------------------------------


def _promote(tmp_path: Path, reg: Registry, rnd: int, new: float, old: float, tol: float) -> StageResult:
    ckpt = tmp_path / "rounds" / f"{rnd:04d}" / "train_recon" / "ckpt"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.full((2,), float(rnd))}, str(ckpt / "model.safetensors"))
    ev = tmp_path / f"eval{rnd}.json"
    ev.write_text(json.dumps({"candidate": {"mean_auc10": new}, "parent": {"mean_auc10": old}}))
    cfg = load_config(None, [f"loop.promote_tolerance={tol}"])
    stage = next(s for s in STAGES if s.name == "promote")
    args = {**_args(reg, tmp_path), "cfg": cfg, "round": rnd}
    resolve = {"recon": ckpt, "eval": ev}.get
    return run_stage(stage, 3, args, resolve)


def test_a_regressing_round_is_recorded_but_not_promoted(tmp_path):
    with Registry(tmp_path) as reg:
        assert _promote(tmp_path, reg, 1, new=30.0, old=29.0, tol=1.0)["checkpoint"]["promoted"]
        rec = _promote(tmp_path, reg, 2, new=27.5, old=30.0, tol=1.0)
        assert not rec["checkpoint"]["promoted"] and "regressed beyond tolerance 1" in rec["checkpoint"]["reason"]
        assert _promote(tmp_path, reg, 3, new=29.5, old=30.0, tol=1.0)["checkpoint"]["promoted"]  # within tolerance
        assert [c["promoted"] for c in reg.checkpoints()] == [1, 0, 1]
        cfg = load_config(None)
        assert live_recon(reg, cfg, 3) == tmp_path / "rounds/0001/train_recon/ckpt"  # round 3 starts from round 1's
        assert live_recon(reg, cfg, 4) == tmp_path / "rounds/0003/train_recon/ckpt"
    assert promote.__doc__


@pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")
def test_the_gate_says_when_its_validation_frames_are_trained_on(tmp_path):
    """loop.val_capture frames that preference.captures also holds (the frames warp_real, sfm_real and the
    preference stages train on) are counted, and promotion on val_auc10 says its figure is optimistic."""
    from vibe3r.loop.stages import validation_overlap

    seven = REAL / "7scenes-redkitchen"
    over = lambda val, caps, *more: validation_overlap(load_config(None, [  # noqa: E731
        f"loop.val_capture={val}", f"preference.captures={json.dumps(caps)}", *more]))
    assert over(f"{seven}@0:125", [f"{seven}@0:125"]) == 125
    assert over(f"{seven}@100:125", [f"{seven}@0:100"]) == 0  # a disjoint split of the same capture
    assert over(f"{seven}@100:125", [f"{seven}@0:110", f"{seven}@120:125"]) == 15
    assert over(f"{seven}@0:125", [str(REAL / "slambook2-dining")]) == 0  # another source
    assert over(f"{seven}@0:125", [f"{seven}@0:125"], "loop.stages=[generate,train_recon,evaluate,promote]") == 0
    assert validation_overlap(load_config(None)) == 0  # the embedded default splits the capture (relative paths resolved)
    assert validation_overlap(load_config(None, ["loop.val_capture=../shared/data/real/7scenes-redkitchen@0:125"])) == 100

    ckpt = tmp_path / "rounds" / "0001" / "train_recon" / "ckpt"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(ckpt / "model.safetensors"))
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"candidate": {"val_auc10": 30.0}, "parent": {"val_auc10": 29.0}, "val_train_overlap": 125}))
    with Registry(tmp_path) as reg:  # the evaluate stage records the overlap in eval.json
        args = {**_args(reg, tmp_path), "cfg": load_config(None, [f"loop.val_capture={seven}@0:125",
                                                                   f"preference.captures={json.dumps([f'{seven}@0:125'])}"])}
        rec = run_stage(next(s for s in STAGES if s.name == "promote"), 3, args, {"recon": ckpt, "eval": ev}.get)
    assert rec["checkpoint"]["promoted"] and "shares 125 frames" in rec["checkpoint"]["reason"]
    decision = json.loads((tmp_path / "rounds" / "0001" / "promote" / "decision.json").read_text())
    assert decision["val_train_overlap"] == 125


def test_the_generator_is_kept_only_when_confidently_better():
    """``loop.generator_keep_confidence``: a candidate better on every held-out prompt replaces its parent; one
    whose lower mean error comes from a few prompts (the rest worse) does not, though the old rule (0) kept it."""
    from vibe3r.loop.video import keep_generator

    rng = np.random.default_rng(0)
    parent = list(rng.uniform(1.0, 3.0, 16))
    better = [e - 0.3 for e in parent]
    lucky = [e + (-2.0 if k < 3 else 0.25) for k, e in enumerate(parent)]  # mean -0.17, 13 of 16 prompts worse
    assert np.mean(lucky) < np.mean(parent)
    keep, interval = keep_generator(better, parent, 0.9, seed=0)
    assert keep and interval[1] < 0
    keep, interval = keep_generator(lucky, parent, 0.9, seed=0)
    assert not keep and interval[0] < 0 < interval[1]
    assert keep_generator(lucky, parent, 0.0, seed=0) == (True, None)
    assert keep_generator(parent, parent, 0.0, seed=0)[0] and not keep_generator(parent, parent, 0.9, seed=0)[0]
    assert keep_generator([*better, float("nan")], [*parent, 2.0], 0.9, seed=0)[0]  # a failed prompt is left out


def test_bootstrap_gate_holds_back_only_a_confident_regression(tmp_path):
    """``loop.promote_confidence``: a small AUC drop that per-pair noise explains (some pairs better, some
    worse) promotes, although it exceeds the tolerance; a drop of every pair does not; the bootstrap
    recomputes the metric exactly."""
    from vibe3r.loop.stages import auc_metric_from_errors, bootstrap_regression

    rng = np.random.default_rng(0)
    parent = {"heldout": list(rng.uniform(0, 30, 48)), "real_a": list(rng.uniform(0, 30, 100)), "real_b": list(rng.uniform(0, 30, 42))}
    noise = np.random.default_rng(1)
    noisy = {k: list(np.array(v) * 1.3 * np.exp(noise.normal(0, 0.5, len(v)))) for k, v in parent.items()}
    shifted = {k: [e * 1.25 for e in v] for k, v in parent.items()}  # every pair 25% worse
    arr = lambda d: {k: np.array([np.inf if e is None else e for e in v]) for k, v in d.items()}  # noqa: E731
    held, ra, rb = (geometry.pose_auc(arr(parent)[k], (10,))[0] for k in ("heldout", "real_a", "real_b"))
    assert auc_metric_from_errors("heldout_auc10", arr(parent)) == pytest.approx(held)
    assert auc_metric_from_errors("real_auc10", arr(parent)) == pytest.approx((100 * ra + 42 * rb) / 142)
    assert auc_metric_from_errors("mean_auc10", arr(parent)) == pytest.approx((held + (100 * ra + 42 * rb) / 142) / 2)
    plain = auc_metric_from_errors("mean_auc10", arr(parent)) - auc_metric_from_errors("mean_auc10", arr(noisy))
    assert plain > 0.5  # the plain rule would hold this round back
    boot = bootstrap_regression("mean_auc10", noisy, parent, 500, 0)
    assert np.isclose(np.median(boot), auc_metric_from_errors("mean_auc10", arr(parent))
                      - auc_metric_from_errors("mean_auc10", arr(noisy)), atol=1.5)

    def decide(rnd, cand):
        ckpt = tmp_path / "rounds" / f"{rnd:04d}" / "train_recon" / "ckpt"
        ckpt.mkdir(parents=True)
        save_file({"w": torch.full((2,), float(rnd))}, str(ckpt / "model.safetensors"))
        ev = tmp_path / f"eval{rnd}.json"
        c, p = arr(cand), arr(parent)
        ev.write_text(json.dumps({"candidate": {"mean_auc10": auc_metric_from_errors("mean_auc10", c), "pair_errors": cand},
                                  "parent": {"mean_auc10": auc_metric_from_errors("mean_auc10", p), "pair_errors": parent}}))
        cfg = load_config(None, ["loop.promote_tolerance=0.5", "loop.promote_confidence=0.9"])
        stage = next(s for s in STAGES if s.name == "promote")
        return run_stage(stage, 3, {**_args(reg, tmp_path), "cfg": cfg, "round": rnd}, {"recon": ckpt, "eval": ev}.get)

    with Registry(tmp_path) as reg:
        rec = decide(1, noisy)
        assert rec["checkpoint"]["promoted"] and "paired-bootstrap bound" in rec["checkpoint"]["reason"]
        rec = decide(2, shifted)
        assert not rec["checkpoint"]["promoted"] and "beyond tolerance 0.5" in rec["checkpoint"]["reason"]
        d = json.loads((tmp_path / "rounds/0002/promote/decision.json").read_text())
        assert d["regression_interval"][0] > 0.5 and d["regression"] > 2


def test_a_round_within_noise_of_its_parent_but_confidently_below_the_base_is_held_back(tmp_path):
    """``loop.promote_against_base``: small steps inside the noise cannot add up to a drift away from the
    base; ``val_auc10`` (the validation capture's pairs) decides."""
    from vibe3r.loop.stages import auc_metric_from_errors

    rng = np.random.default_rng(0)
    base = {"heldout": list(rng.uniform(0, 30, 48)), "val": list(rng.uniform(0, 30, 100))}
    cand = {k: [e * 1.3 for e in v] for k, v in base.items()}  # every pair 30% worse than the base
    noise = np.random.default_rng(2)
    parent = {k: list(np.array(v) * np.exp(noise.normal(0, 0.5, len(v)))) for k, v in cand.items()}  # as good, noisily
    arr = lambda d: {k: np.array(v, float) for k, v in d.items()}  # noqa: E731
    row = lambda d: {"val_auc10": auc_metric_from_errors("val_auc10", arr(d)), "pair_errors": d}  # noqa: E731
    ckpt = tmp_path / "rounds" / "0002" / "train_recon" / "ckpt"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(ckpt / "model.safetensors"))
    stage = next(s for s in STAGES if s.name == "promote")
    with Registry(tmp_path) as reg:
        for k, with_base in enumerate((False, True)):
            ev = tmp_path / f"eval{k}.json"
            ev.write_text(json.dumps({"candidate": row(cand), "parent": row(parent), **({"base": row(base)} if with_base else {})}))
            cfg = load_config(None, ["loop.promote_tolerance=0.5", "loop.promote_confidence=0.9"])
            rec = run_stage(stage, 3 + k, {**_args(reg, tmp_path), "cfg": cfg, "round": 2 + k}, {"recon": ckpt, "eval": ev}.get)
            assert rec["checkpoint"]["promoted"] == (not with_base), rec["checkpoint"]["reason"]
        assert "val_auc10" in rec["checkpoint"]["reason"] and "but val_auc10" in rec["checkpoint"]["reason"] \
            and "vs base" in rec["checkpoint"]["reason"]


def test_replay_mix_draws_about_the_requested_share_of_older_pairs(tmp_path):
    from vibe3r.recon.synthetic import write_box_dataset
    from vibe3r.video_gen.dataset import PairShardDataset

    old = [write_box_dataset(tmp_path / f"old{k}", n_videos=3, n_frames=5, H=16, W=24, pairs_per_video=4, seed=k, shard_size=4) for k in range(2)]
    new = write_box_dataset(tmp_path / "new", n_videos=2, n_frames=5, H=16, W=24, pairs_per_video=4, seed=9, shard_size=4)
    n_new = json.loads((Path(new) / "index.json").read_text())["n_pairs"]
    idx = mix_dataset(Path(new), [Path(o) for o in old], 0.5, seed=0, out=tmp_path / "mix")
    assert idx["new_pairs"] == n_new and n_new <= idx["replay_pairs"] <= 2 * n_new
    assert len(PairShardDataset(tmp_path / "mix")) == idx["n_pairs"] == n_new + idx["replay_pairs"]
    assert mix_dataset(Path(new), [Path(o) for o in old], 0.5, seed=0, out=tmp_path / "mix2")["shards"] == idx["shards"]
    assert mix_dataset(Path(new), [], 0.5, seed=0, out=tmp_path / "mix3")["replay_pairs"] == 0
    assert np.isclose(mix_dataset(Path(new), [Path(o) for o in old], 0.0, 0, tmp_path / "mix4")["n_pairs"], n_new)


@pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")
def test_a_capture_pair_list_keeps_its_frame_gaps_and_ground_truth(tmp_path):
    from vibe3r.captures import load_capture
    from vibe3r.loop.stages import capture_pair_list

    spec = str(REAL / "7scenes-redkitchen") + "@0:40"
    cap = load_capture(spec)
    path = tmp_path / "wide.txt"
    (name, root), = capture_pair_list(spec, 12, 3, path, "--pairs", gaps=(10, 14)).items()
    rows = [line.split() for line in path.read_text().splitlines()]
    assert name == "wide.txt" and Path(root) == (REAL / "7scenes-redkitchen").resolve() and len(rows) == 12
    index = {n: k for k, n in enumerate(cap.frame_names)}
    for r in rows:
        i, j = (index[f.split(".")[0]] for f in r[:2])
        assert 10 <= j - i <= 14
        T = np.array(r[-16:], dtype=np.float64).reshape(4, 4)
        np.testing.assert_allclose(T, np.linalg.inv(cap.cam2world[j]) @ cap.cam2world[i], atol=1e-5)


def test_lr_decay_shrinks_later_rounds_fine_tuning():
    """``loop.lr_decay``: round r fine-tunes at lr * decay**(r-1); the default keeps every round alike."""
    cfg = load_config(None, ["loop.lr=4e-4", "loop.lr_decay=0.5", "loop.base_checkpoint=null"])
    assert [recipe(cfg, None, r).train.lr for r in (1, 2, 3)] == pytest.approx([4e-4, 2e-4, 1e-4])
    assert recipe(load_config(None, ["loop.base_checkpoint=null"]), None, 3).train.lr == load_config(None).loop.lr
    with pytest.raises(ConfigError, match="lr_decay"):
        load_config(None, ["loop.lr_decay=1.5"])


def test_a_round_resumes_under_code_that_added_a_config_key():
    """A round started before a config key existed resumes (the key takes its default); a key the code no
    longer knows, or a changed value, is another config."""
    from vibe3r.loop.iterate import same_config
    from vibe3r.loop.stage import config_hash

    cfg = load_config(None)
    old = json.loads(cfg.model_dump_json())
    del old["generator"]["sample"]["plane_depth"]  # as recorded by a version without it
    assert same_config(json.dumps(old), config_hash(cfg))
    assert not same_config(json.dumps({**old, "loop": {**old["loop"], "gone": 1}}), config_hash(cfg))
    assert not same_config(json.dumps({**old, "seed": 7}), config_hash(cfg))


def test_a_held_out_set_without_pose_pairs_is_refused_before_a_round_starts(tmp_path):
    """The tiny config's one held-out video is a pan: with the default baseline floor it has no pose pair to score,
    and the loop says so before any stage runs."""
    cfg = load_config(tiny_config(tmp_path), ["loop.heldout_min_baseline=0.02"])
    with pytest.raises(Vibe3rError, match="heldout_min_baseline 0.02: none of the 6 held-out synthetic pairs"):
        iterate(cfg, tmp_path / "run", rounds=1)
    with Registry(tmp_path / "run") as reg:
        assert reg.last_round() is None
