"""What the DPO and GRPO trainers share: their checkpoint (adapter + optimizer + loop state, no pickle),
their run log (TensorBoard scalars + a jsonl row per step + a rich progress bar) and the learning rate.

A trainer's output folder::

    adapter/                  lora_config.json + adapter_model.safetensors (the latest adapter)
    optimizer.safetensors     AdamW moments
    trainer_state.json        step, data position, optimizer hyper-parameters, the config (written last)
    log.jsonl                 one row of metrics per step
    tb/                       TensorBoard scalars
    merged/                   the adapted model merged into a plain ReconModel checkpoint (at the end)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from vibe3r.config import Section
from vibe3r.errors import InputError
from vibe3r.preference.lora import LoRAConfig, LoraReconModel

STATE_NAME = "trainer_state.json"
ADAPTER_DIR = "adapter"
LOG_NAME = "log.jsonl"


class AdapterTrainConfig(Section):
    """What the DPO and GRPO trainers share: the AdamW schedule of the LoRA adapters, the supervised
    anchor, logging and checkpoints."""

    lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the adapters")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the adapters")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up (optimiser steps; then constant)")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0 disables")
    anchor_weight: float = Field(0.1, ge=0, description="weight of the supervised anchor loss on simulator pairs (0 = off)")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="adapters added when the trainer is given a plain ReconModel")
    log_every: int = Field(1, ge=1, description="steps between log rows")
    save_merged: bool = Field(True, description="also write the merged model (a plain ReconModel checkpoint) at the end")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 leaves torch's setting")
    seed: int = Field(0, description="seed of record/pair order, draws, dropout and the anchor's sampling")


def epoch_batch(seed: int, step: int, batch_size: int, n: int) -> list[int]:
    """Item indices of a step: consecutive epochs of seeded permutations of ``range(n)``, a pure
    function of the step (so a resumed run sees the same items)."""
    perms: dict[int, np.ndarray] = {}
    out = []
    for p in range(step * batch_size, (step + 1) * batch_size):
        e, i = divmod(p, n)
        if e not in perms:
            perms[e] = np.random.default_rng([seed, e]).permutation(n)
        out.append(int(perms[e][i]))
    return out


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then constant (preference runs are short)."""
    return lr * (step + 1) / warmup if step < warmup else lr


def save_checkpoint(out: Path, model: LoraReconModel, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Adapter, then optimizer tensors and the loop state (``recon.train.save_training_state``: the state
    JSON is written last, so a checkpoint is complete whenever ``trainer_state.json`` names its step)."""
    from vibe3r.recon.train import save_training_state

    model.save_adapter(out / ADAPTER_DIR)
    save_training_state(out, opt, state, STATE_NAME)


def load_checkpoint(out: Path, model: LoraReconModel, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore adapter weights and optimizer from ``out``; returns the loop state."""
    from vibe3r.recon.train import load_training_state

    model.load_adapter_weights(out / ADAPTER_DIR / "adapter_model.safetensors")
    return load_training_state(out, opt, STATE_NAME)


def check_out_dir(out: Path, resume: bool) -> None:
    if (out / STATE_NAME).is_file() and not resume:
        raise InputError(f"{out} already holds a preference run; pass resume=True (--resume) to continue it or choose another output")
    if resume and not (out / STATE_NAME).is_file():
        raise InputError(f"resume: no checkpoint in {out} ({STATE_NAME} missing)")


def last_logged(out: Path | None) -> dict[str, float]:
    """The last row of ``log.jsonl`` without its step ({} if none)."""
    path = None if out is None else out / LOG_NAME
    if path is None or not path.is_file():
        return {}
    rows = [r for r in path.read_text().splitlines() if r]
    return {k: v for k, v in json.loads(rows[-1]).items() if k != "step"} if rows else {}


class RunLog:
    """TensorBoard scalars ``<name>/<metric>``, ``log.jsonl`` rows and a rich progress bar.
    With ``out`` None only the progress bar (if enabled) is kept."""

    def __init__(self, out: Path | None, name: str, config: dict[str, Any], total: int, start: int, progress: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.name = name
        self.writer = None
        self.jsonl = None
        if out is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=start or None)
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", start)
            self.jsonl = out / LOG_NAME
            if start == 0 and self.jsonl.exists():
                self.jsonl.unlink()
            elif start and self.jsonl.exists():  # drop rows past the checkpoint (a crash after it)
                rows = [r for r in self.jsonl.read_text().splitlines() if r and json.loads(r)["step"] <= start]
                self.jsonl.write_text("".join(r + "\n" for r in rows))
        cols = [TextColumn(f"[bold]{name}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
        self.bar = Progress(*cols, disable=not progress)
        self.task = self.bar.add_task(name, total=total, completed=start, info="")
        self.bar.start()

    def log(self, step: int, metrics: dict[str, float], info: str = "") -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{self.name}/{k}", v, step)
        if self.jsonl is not None:
            with self.jsonl.open("a") as f:
                f.write(json.dumps({"step": step, **{k: round(float(v), 6) for k, v in metrics.items()}}) + "\n")
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        self.bar.stop()
        if self.writer is not None:
            self.writer.close()


def finish_run(out: Path | None, model: LoraReconModel, cfg: AdapterTrainConfig, state: dict[str, Any],
               metrics: dict[str, float]) -> dict[str, float]:
    """End of a DPO/GRPO session: the merged checkpoint once the run is complete, and the last metrics
    (those of the last logged row when a finished run was resumed and did nothing)."""
    if out is not None and state["step"] == cfg.steps and cfg.save_merged:
        model.merge_and_save(out / "merged")
    if not metrics:
        metrics = last_logged(out)
    return {**metrics, "step": state["step"]}


class AnchorSource:
    """Supervised anchor batches from a ``PairStream`` (``next_batch``, resumable by (epoch, pos)) or any
    iterable of batch dicts (resumed by re-reading and dropping the batches already used)."""

    def __init__(self, src: Any) -> None:
        self.src, self.used = src, 0
        self._it: Iterator | None = None if hasattr(src, "next_batch") else iter(src)

    def restore(self, st: dict[str, Any]) -> None:
        self.used = st.get("used", 0)
        if self._it is None:
            self.src.seek(st["epoch"], st["pos"])
        else:
            for _ in range(self.used):
                next(self._it)

    def state(self) -> dict[str, Any]:
        st = {"used": self.used}
        if self._it is None:
            st |= {"epoch": self.src.epoch, "pos": self.src.pos}
        return st

    def next(self) -> dict[str, torch.Tensor]:
        self.used += 1
        if self._it is None:
            return self.src.next_batch()
        try:
            return next(self._it)
        except StopIteration:
            raise InputError(f"the anchor batches ran out after {self.used - 1} batches") from None


def start_session(out: Path | None, model: LoraReconModel, opt: torch.optim.Optimizer, cfg: AdapterTrainConfig,
                  anchor_batches: Any, resume: bool, state: dict[str, Any]) -> tuple[dict[str, Any], AnchorSource | None]:
    """What every trainer does before its first step: torch threads, the output folder (refused when it
    holds a run and ``resume`` is off), the checkpoint of a resumed run (else ``state``), and the anchor
    source positioned where the checkpoint left it (None without anchor batches or weight)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    anchor = AnchorSource(anchor_batches) if anchor_batches is not None and cfg.anchor_weight > 0 else None
    if out is not None:
        check_out_dir(out, resume)
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            state = load_checkpoint(out, model, opt)
    if anchor is not None and "anchor" in state:
        anchor.restore(state["anchor"])
    return state, anchor


def end_step(out: Path | None, model: LoraReconModel, opt: torch.optim.Optimizer, cfg: Any, state: dict[str, Any],
             step: int, cpu0: float, metrics: dict[str, float], anchor: AnchorSource | None, log: RunLog, last: int,
             info: str) -> None:
    """What every trainer does after optimiser step ``step`` (begun at process time ``cpu0``): advance the
    state (step, CPU time, anchor position), log every ``cfg.log_every`` steps and checkpoint every
    ``cfg.ckpt_every`` steps and at ``last``."""
    state["step"] = step + 1
    state["cpu_s"] += time.process_time() - cpu0
    metrics["cpu_min"] = state["cpu_s"] / 60
    if anchor is not None:
        state["anchor"] = anchor.state()
    if state["step"] % cfg.log_every == 0 or state["step"] == last:
        log.log(state["step"], metrics, info)
    if out is not None and (state["step"] % cfg.ckpt_every == 0 or state["step"] == last):
        save_checkpoint(out, model, opt, {**state, "config": cfg.model_dump()})
