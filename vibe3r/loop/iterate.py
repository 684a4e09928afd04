"""Rounds of the loop over a run directory: one process at a time, resumable at the first unfinished stage.

Run directory::

    RUN/registry.sqlite        the registry (vibe3r.loop.registry)
    RUN/.lock                  held (flock) by the process working on the run
    RUN/rounds/NNNN/           config.yaml (the round's resolved config), captures.json (its real captures,
                               vibe3r.loop.pool) and one folder per stage
    RUN/heldout-<hash>/        the fixed evaluation set
    RUN/eval-cache/            metrics per (checkpoint, evaluation set)
    RUN/live                   symlink to the live (last promoted) recon checkpoint
    RUN/metrics.json           every round's metrics (rewritten after each stage)
    RUN/tb/                    TensorBoard scalars per round (x axis = round)
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vibe3r.config import Config, save_config
from vibe3r.errors import Vibe3rError
from vibe3r.loop.pool import freeze_captures
from vibe3r.loop.registry import Registry
from vibe3r.loop.stage import Stage, config_hash, run_stage, stage_seed, write_json_atomic
from vibe3r.loop.stages import CAPTURE_STAGES, RUN_INPUTS, STAGES, ensure_heldout, live_recon


class RunLocked(Vibe3rError):
    """Another process works on the run."""


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` (released by the kernel when the process dies)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLocked(f"run {self.path.parent} is in use by another vibe3r loop process (pid {pid}); "
                            "wait for it to finish or pass another --run") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def select_stages(names: list[str] | None) -> list[Stage]:
    """The registered stages named in ``loop.stages`` (registry order), or all of them."""
    if names is None:
        return list(STAGES)
    known = [s.name for s in STAGES]
    bad = [n for n in names if n not in known]
    if bad:
        raise Vibe3rError(f"unknown loop stage {bad[0]!r}; registered stages: {', '.join(known)}")
    return [s for s in STAGES if s.name in names]


def _resolver(reg: Registry, cfg: Config, rnd: int) -> Callable[[str], Any]:
    def resolve(name: str) -> Any:
        for row in reversed(reg.stages(rnd)):  # latest output of that name in this round
            if row["state"] == "done" and name in json.loads(row["outputs_json"] or "{}"):
                return reg.run_dir / json.loads(row["outputs_json"])[name]
        if name in RUN_INPUTS:
            return RUN_INPUTS[name](reg, cfg, rnd)
        raise Vibe3rError(f"round {rnd}: no earlier stage produced {name!r} and it is no run-level input "
                          f"({', '.join(RUN_INPUTS)})")
    return resolve


def update_live_link(reg: Registry, cfg: Config) -> Path | None:
    """Point ``RUN/live`` at the live recon checkpoint (atomic symlink replacement)."""
    target = live_recon(reg, cfg, rnd=1 << 30)
    link = reg.run_dir / "live"
    if target is None:
        return None
    tmp = reg.run_dir / ".live.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    rel = os.path.relpath(target, reg.run_dir)
    tmp.symlink_to(rel, target_is_directory=True)
    os.replace(tmp, link)
    return target


def write_metrics(reg: Registry) -> None:
    """``RUN/metrics.json``: per round its state, metrics and promotion."""
    ckpts = {r["round"]: dict(r) for r in reg.checkpoints()}
    metrics = reg.metrics()
    data = [{"round": r["round"], "state": r["state"], "metrics": metrics.get(r["round"], {}),
             "checkpoint": ckpts.get(r["round"])} for r in reg.rounds()]
    write_json_atomic(reg.run_dir / "metrics.json", data)


ProgressFn = Callable[[int, str, str, float, float | None, str], None]  # round, stage, event, done, total, info


def run_round(cfg: Config, reg: Registry, rnd: int, stages: list[Stage], on_event: ProgressFn | None = None) -> None:
    """Run the stages of round ``rnd`` that are not done yet, then mark the round done."""
    from torch.utils.tensorboard import SummaryWriter

    ev = on_event or (lambda *a: None)
    round_dir = reg.run_dir / "rounds" / f"{rnd:04d}"
    round_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, round_dir)
    if any(s.name in CAPTURE_STAGES for s in stages):
        freeze_captures(cfg, reg.run_dir, rnd)  # the round's real captures, pooled uploads included, fixed once
    resolve = _resolver(reg, cfg, rnd)
    for idx, stage in enumerate(stages):
        ev(rnd, stage.name, "start", 0, None, stage.help)
        args = {"cfg": cfg, "run_dir": reg.run_dir, "round": rnd, "registry": reg, "seed": stage_seed(cfg.loop.seed, rnd, stage.name)}
        rec = run_stage(stage, idx, args, resolve, progress=lambda d, t, i, s=stage.name: ev(rnd, s, "progress", d, t, i))
        ev(rnd, stage.name, "skipped" if rec["skipped"] else "done", rec["seconds"], rec["peak_rss_mb"], _summary(rec["metrics"]))
        if not rec["skipped"]:
            with SummaryWriter(str(reg.run_dir / "tb")) as tb:
                for k, v in rec["metrics"].items():
                    if v is not None:
                        tb.add_scalar(f"{stage.name}/{k}", v, rnd)
                tb.add_scalar(f"time/{stage.name}_s", rec["seconds"], rnd)
            write_metrics(reg)
    reg.finish_round(rnd)
    update_live_link(reg, cfg)
    write_metrics(reg)


def _summary(metrics: dict[str, float | None]) -> str:
    keys = ("videos", "pairs", "steps", "final_loss", "heldout_auc10", "real_auc10", "heldout_loss", "promoted")
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if metrics.get(k) is not None)


def same_config(stored_json: str, chash: str) -> bool:
    """Whether a round's recorded config is the one hashing to ``chash`` under the current code: a key added
    to the code since the round started takes its default, so upgrading vibe3r does not strand a run
    mid-round (a key that no longer exists makes it a different config)."""
    from pydantic import ValidationError

    try:
        return config_hash(Config.model_validate(json.loads(stored_json))) == chash
    except ValidationError:
        return False


def iterate(cfg: Config, run_dir: str | Path, rounds: int | None = None, on_event: ProgressFn | None = None) -> list[int]:
    """Run ``rounds`` (default ``loop.rounds``) rounds on ``run_dir``: an unfinished round is finished first
    (counting as one), then new rounds start. Returns the rounds worked on."""
    run_dir = Path(run_dir)
    n = rounds if rounds is not None else cfg.loop.rounds
    if n < 1:
        raise Vibe3rError(f"--rounds must be at least 1, got {n}")
    stages = select_stages(cfg.loop.stages)
    with RunLock(run_dir), Registry(run_dir) as reg:
        chash = config_hash(cfg)
        worked = []
        last = reg.last_round()
        if last is not None and last["state"] != "done":
            if last["config_hash"] != chash and not same_config(last["config_json"], chash):
                raise Vibe3rError(f"round {last['round']} of {run_dir} was started with another config (see "
                                  f"{run_dir}/rounds/{last['round']:04d}/config.yaml); finish it with that config")
            names = json.loads(last["stages_json"])
            run_round(cfg, reg, last["round"], [s for s in STAGES if s.name in names], on_event)
            worked.append(last["round"])
        if len(worked) < n and any(s.name == "evaluate" for s in stages):
            ensure_heldout(cfg, run_dir)  # a held-out config that gives no pose pair fails here, before a round starts
        while len(worked) < n:
            rnd = (reg.last_round()["round"] if reg.last_round() else 0) + 1
            reg.start_round(rnd, chash, json.loads(cfg.model_dump_json()), [s.name for s in stages])
            run_round(cfg, reg, rnd, stages, on_event)
            worked.append(rnd)
        return worked


def status(run_dir: str | Path) -> dict[str, Any]:
    """Rounds, stages, metrics and the live checkpoint of a run (read-only; works while a run is active)."""
    run_dir = Path(run_dir)
    if not (run_dir / "registry.sqlite").is_file():
        raise Vibe3rError(f"{run_dir} is not a loop run (no registry.sqlite)")
    with Registry(run_dir) as reg:
        ckpts = {r["round"]: dict(r) for r in reg.checkpoints()}
        metrics = reg.metrics()
        live = reg.live_checkpoint()
        rounds = []
        for r in reg.rounds():
            st = [{"name": s["name"], "state": s["state"], "seconds": s["seconds"], "attempts": s["attempts"],
                   "peak_rss_mb": s["peak_rss_mb"], "outputs": json.loads(s["outputs_json"] or "{}")} for s in reg.stages(r["round"])]
            planned = json.loads(r["stages_json"])
            st += [{"name": n, "state": "pending", "seconds": None, "attempts": 0, "peak_rss_mb": None, "outputs": {}}
                   for n in planned if n not in {s["name"] for s in st}]
            rounds.append({"round": r["round"], "state": r["state"], "config_hash": r["config_hash"], "stages": st,
                           "metrics": metrics.get(r["round"], {}), "checkpoint": ckpts.get(r["round"])})
        link = run_dir / "live"
        return {"run": str(run_dir), "rounds": rounds,
                "live": {"round": live["round"], "path": live["path"]} if live is not None
                else {"round": 0, "path": os.path.realpath(link) if link.is_symlink() else None}}
