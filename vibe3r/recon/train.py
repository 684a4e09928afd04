"""Training of the pairwise model on pair shards (``vibe3r video dataset``).

A tiny CPU run (seconds)::

    vibe3r recon train --config configs/recon-tiny.yaml --data runs/pairs --out runs/recon-tiny

The loop, written out in full: stream batches (``PairShardDataset``, deterministic order, resumable
position), swap the two views of a random half of the pairs (DUSt3R's symmetrisation), optional colour
jitter, forward under autocast (bf16 when ``train.bf16``), the weighted loss of ``recon.losses``,
AdamW with linear warm-up then cosine decay, global-norm clipping. Runs under 🤗 accelerate (the same
script on a GPU or several with ``accelerate launch``); on this CPU it is a single process.

Outputs in ``--out`` (also a checkpoint usable as ``--ckpt``): ``config.json`` + ``model.safetensors``
(the latest weights), ``optimizer.safetensors`` + ``train_state.json`` (resume), ``train_config.yaml``
(the resolved config), ``tb/`` (TensorBoard scalars), ``evals.jsonl`` (real-pair evaluations against
training CPU-minutes). Nothing is pickled.

Every random choice derives from ``train.seed`` and the step number, so a run resumed from a
checkpoint is identical to an uninterrupted one (``max_cpu_minutes`` excepted: time is not replayable).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import default_collate

from vibe3r import geometry
from vibe3r.config import Config, save_config
from vibe3r.errors import InputError
from vibe3r.recon.losses import build_loss
from vibe3r.recon.model import ReconModel, build_model

STATE_NAME = "train_state.json"
OPTIM_NAME = "optimizer.safetensors"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class PairStream:
    """Endless, deterministic batches from a ``PairShardDataset``: the state is (epoch, position)."""

    def __init__(self, root: str | Path, batch_size: int, seed: int) -> None:
        from vibe3r.video_gen.dataset import PairShardDataset

        self.ds = PairShardDataset(root, shuffle=True, seed=seed)
        if len(self.ds) == 0:
            raise InputError(f"pair dataset {root} has no pairs")
        self.batch_size = batch_size
        self.epoch, self.pos = 0, 0
        self._it = None

    def seek(self, epoch: int, pos: int) -> None:
        """Continue from item ``pos`` of epoch ``epoch`` (items before it are read and dropped)."""
        self.epoch, self.pos = epoch, 0
        self.ds.set_epoch(epoch)
        self._it = iter(self.ds)
        for _ in range(pos):
            next(self._it)
            self.pos += 1

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            self.seek(self.epoch, self.pos)
        items = []
        while len(items) < self.batch_size:
            try:
                items.append(next(self._it))
                self.pos += 1
            except StopIteration:
                self.epoch, self.pos = self.epoch + 1, 0
                self.ds.set_epoch(self.epoch)
                self._it = iter(self.ds)
        return default_collate(items)


def swap_views(batch: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exchange views 1 and 2 of the pairs where ``mask`` (B,) is True.

    With T21 the camera-1 → camera-2 transform: X^{2,2} = T21 X^{2,1} becomes the new X^{1,1},
    X^{1,2} = T21 X^{1,1} the new X^{2,1}, and the new T21 is T21^{-1}.
    """
    if not mask.any():
        return batch
    out = dict(batch)
    m = mask
    mk = lambda t: m.view(-1, *([1] * (t.dim() - 1)))  # noqa: E731
    T = batch["T21"].double()
    new11 = geometry.transform_points(T, batch["pts21"].double()).float()
    new21 = geometry.transform_points(T, batch["pts11"].double()).float()
    out["pts11"] = torch.where(mk(new11), new11, batch["pts11"])
    out["pts21"] = torch.where(mk(new21), new21, batch["pts21"])
    out["T21"] = torch.where(mk(T), geometry.inv_pose(T), T).to(batch["T21"].dtype)
    for a, b in (("img1", "img2"), ("depth1", "depth2"), ("valid1", "valid2"), ("K1", "K2"), ("frame1", "frame2")):
        if a in batch:
            out[a] = torch.where(mk(batch[a]), batch[b], batch[a])
            out[b] = torch.where(mk(batch[b]), batch[a], batch[b])
    return out


def color_jitter(img: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Per-image brightness (×), contrast (around the mean) and saturation (around grey) jitter,
    factors uniform in [1 − s, 1 + s]. img (B, 3, H, W) in [0, 1]."""
    if strength <= 0:
        return img
    B = img.shape[0]
    f = 1 + strength * (2 * torch.rand(3, B, 1, 1, 1, generator=gen) - 1).to(img.device)  # 3,B,1,1,1
    x = img * f[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * f[1] + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * f[2] + grey
    return x.clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Optimiser, schedule, checkpoints
# --------------------------------------------------------------------------------------------


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices/kernels only (not on biases, norms, 1-D parameters)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def lr_at(progress: float, step: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from lr to min_lr as progress goes 0 → 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def save_training_state(out: Path, opt: torch.optim.Optimizer, state: dict[str, Any], state_name: str = STATE_NAME) -> None:
    """Optimizer tensors (safetensors) and the loop state + param groups (JSON, written last and
    atomically): a checkpoint is complete whenever ``state_name`` names its step. Shared by every trainer."""
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": (v.detach().clone() if torch.is_tensor(v) else torch.tensor(v))
               for i, st in sd["state"].items() for k, v in st.items()}
    tmp = out / f".{OPTIM_NAME}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / OPTIM_NAME)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in sd["param_groups"]]
    tmp = out / f".{state_name}.tmp"
    tmp.write_text(json.dumps({**state, "param_groups": groups}, indent=1))
    os.replace(tmp, out / state_name)


def load_training_state(out: Path, opt: torch.optim.Optimizer, state_name: str = STATE_NAME) -> dict[str, Any]:
    """Restore the optimizer saved by ``save_training_state``; returns the loop state."""
    state = json.loads((out / state_name).read_text())
    per: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in load_file(str(out / OPTIM_NAME)).items():
        i, name = key.split(".", 1)
        per.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": per, "param_groups": state.pop("param_groups")})
    return state


def save_checkpoint(out: Path, model: ReconModel, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Model (config.json + model.safetensors), then optimizer and loop state (``save_training_state``)."""
    model.save_pretrained(out)
    save_training_state(out, opt, state)


def load_checkpoint(out: Path, model: ReconModel, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights and optimizer from ``out``; returns the loop state."""
    model.load_weights(out / "model.safetensors")
    return load_training_state(out, opt)


# --------------------------------------------------------------------------------------------
# Evaluation during training
# --------------------------------------------------------------------------------------------


def evaluate_real(model: ReconModel, pair_lists: list[str], size: int, ransac: list[str] = ("ransac",)) -> dict[str, dict[str, float]]:
    """AUC / median errors of the model (mutual NN + essential RANSAC) on SuperGlue pair lists.

    Keys are the pair lists' stems, suffixed ``|<method>`` for every estimator after the first.
    """
    from vibe3r.eval.pairs import evaluate_pairs
    from vibe3r.recon.pose import ModelPoseEstimator

    was_training = model.training
    out = {}
    try:
        for i, method in enumerate(ransac):
            est = ModelPoseEstimator(model, "essential", ransac=method)
            for pl in pair_lists:
                ev = evaluate_pairs(pl, est, size, method_name="model")
                key = Path(pl).stem + ("" if i == 0 else f"|{method}")
                out[key] = {**{k: round(v, 3) for k, v in ev.summary.items()},
                            **{f"wide_{k}": round(v, 3) for k, v in ev.summary_wide.items()}}
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(cfg: Config, data: str | Path, out: str | Path, resume: bool = False, progress: bool = True,
          stop_at: int | None = None) -> dict[str, Any]:
    """Train ``cfg.recon`` on the pair dataset ``data``; checkpoints and logs into ``out``.

    ``stop_at`` ends this session after that step (with a checkpoint) without changing the schedule,
    so that a long run can be split into sessions continued with ``resume=True``.
    """
    from accelerate import Accelerator
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from torch.utils.tensorboard import SummaryWriter

    rc, tc = cfg.recon, cfg.recon.train
    out = Path(out)
    if (out / STATE_NAME).is_file() and not resume:
        raise InputError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not (out / STATE_NAME).is_file():
        raise InputError(f"--resume: no checkpoint in {out} ({STATE_NAME} missing)")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(tc.threads)

    # mixed precision through torch.autocast rather than Accelerator(mixed_precision=...): accelerate's
    # state is a process-wide singleton that refuses a second, different setting in one process
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    model = build_model(rc.model, seed=tc.seed)
    loss_fn = build_loss(rc.loss)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.95))
    stream = PairStream(data, tc.batch_size, tc.seed)
    H, W = int(stream.ds.index["height"]), int(stream.ds.index["width"])
    p = rc.model.patch_size
    if H % p or W % p:
        raise InputError(f"dataset images are {W}x{H}, not a multiple of the model's patch size {p}")

    state: dict[str, Any] = {"step": 0, "epoch": 0, "pos": 0, "cpu_s": 0.0, "wall_s": 0.0, "next_eval_cpu_s": 0.0}
    if resume:
        state = load_checkpoint(out, model, opt)
    stream.seek(state["epoch"], state["pos"])
    save_config(cfg, out, "train_config.yaml")
    model, opt = accelerator.prepare(model, opt)
    raw_model: ReconModel = accelerator.unwrap_model(model)
    writer = SummaryWriter(str(out / "tb"), purge_step=state["step"] or None)
    writer.add_text("config", "```\n" + json.dumps(json.loads(cfg.model_dump_json()), indent=1) + "\n```", state["step"])
    evals_path = out / "evals.jsonl"

    def run_eval() -> None:
        if not tc.eval_pairs or tc.eval_every_min <= 0:
            return
        res = evaluate_real(raw_model, tc.eval_pairs, tc.eval_size, tc.eval_ransac)
        row = {"step": state["step"], "cpu_min": round(state["cpu_s"] / 60, 3), "wall_min": round(state["wall_s"] / 60, 3), **res}
        with evals_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for name, s in res.items():
            for k in ("auc5", "auc10", "auc20", "median_rot", "median_tdir", "fail_pct"):
                if math.isfinite(s[k]):
                    writer.add_scalar(f"eval/{name}/{k}", s[k], state["step"])
        state["next_eval_cpu_s"] = state["cpu_s"] + tc.eval_every_min * 60
        state["last_eval_step"] = state["step"]

    if state["step"] == 0:
        run_eval()
    model.train()
    details: dict[str, float] = {}
    cols = [TextColumn("[bold]recon train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    budget_s = tc.max_cpu_minutes * 60
    with Progress(*cols, disable=not progress) as bar:
        task = bar.add_task("train", total=tc.steps, completed=state["step"], info="")
        last = min(tc.steps, stop_at) if stop_at is not None else tc.steps
        while state["step"] < last and not (budget_s and state["cpu_s"] >= budget_s):
            step = state["step"]
            c0, w0 = time.process_time(), time.perf_counter()
            gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
            batch = {k: v.to(device) for k, v in stream.next_batch().items()}
            batch = swap_views(batch, (torch.rand(tc.batch_size, generator=gen) < tc.swap_prob).to(device))
            img1 = color_jitter(batch["img1"], tc.color_jitter, gen)
            img2 = color_jitter(batch["img2"], tc.color_jitter, gen)
            progress_frac = max(step / tc.steps, state["cpu_s"] / budget_s if budget_s else 0.0)
            lr = lr_at(progress_frac, step, tc.warmup_steps, tc.lr, tc.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.bf16):
                pred = model(img1, img2)
            loss, details = loss_fn(pred, batch, generator=gen)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            gnorm = accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else torch.tensor(0.0)
            opt.step()
            state["step"] = step + 1
            state["epoch"], state["pos"] = stream.epoch, stream.pos
            state["cpu_s"] += time.process_time() - c0
            state["wall_s"] += time.perf_counter() - w0
            if state["step"] % tc.log_every == 0 or state["step"] == tc.steps:
                for k, v in details.items():
                    writer.add_scalar(f"train/{k}", v, state["step"])
                writer.add_scalar("train/lr", lr, state["step"])
                writer.add_scalar("train/grad_norm", float(gnorm), state["step"])
                writer.add_scalar("train/cpu_min", state["cpu_s"] / 60, state["step"])
            info = f"loss {details['loss']:.3f}" + (f" acc {details['match_acc']:.2f}" if "match_acc" in details else "")
            bar.update(task, completed=state["step"], info=info)
            if tc.eval_every_min > 0 and state["cpu_s"] >= state["next_eval_cpu_s"]:
                run_eval()
            if state["step"] % tc.ckpt_every == 0:
                save_checkpoint(out, raw_model, opt, state)
    save_checkpoint(out, raw_model, opt, state)
    if state.get("last_eval_step") != state["step"]:
        run_eval()
    writer.close()
    return {"step": state["step"], "cpu_min": state["cpu_s"] / 60, "wall_min": state["wall_s"] / 60,
            "params": raw_model.num_parameters, **{k: details[k] for k in details}}
