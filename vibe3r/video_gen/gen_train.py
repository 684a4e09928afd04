"""Denoising training of the video generator on simulator videos (``vibe3r video train``).

Clips are cut from video folders (DESIGN.md format: frames, ``gt.npz`` with K / cam2world / depth):
``frames`` frames at a random stride from ``generator.train.strides`` (more camera motion per clip),
played backwards and mirrored left-right at random — the cameras are mirrored with the images
(``c2w' = M c2w M``, M = diag(-1, 1, 1, 1)), so the Plücker conditioning stays true. A clip's first
frame is the condition; its ground-truth depth gives the render channels for ``p_render`` of the clips.

Every random draw of step s comes from ``(seed, s)`` alone, so a resumed run is the run that was never
interrupted. The checkpoint folder holds the EMA weights as the model (``save_pretrained``), and the raw
weights, optimizer, EMA and loop state to resume (``train/``). TensorBoard scalars in ``tb/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vibe3r.config import Config, GeneratorModelConfig, GeneratorTrainConfig, save_config
from vibe3r.errors import InputError
from vibe3r.video_gen.diffusion import (
    VideoGenerator,
    conditioning,
    plane_depth_map,
    resize_depth,
    resize_frames,
    to_model_images,
)

RESUME_DIR = "train"
STATE_NAME = "train_state.json"


def find_videos(data: str | Path | list[str | Path]) -> list[Path]:
    """Every video folder (has ``meta.json`` and ``gt.npz``) at or under ``data`` (one folder or several), sorted."""
    roots = [Path(d) for d in (data if isinstance(data, list | tuple) else [data])]
    found: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise InputError(f"no such data folder: {root}")
        found |= {p.parent for p in root.rglob("gt.npz")
                  if (p.parent / "meta.json").is_file() and not p.parent.name.startswith(".")}  # not half-written
    if not found:
        raise InputError(f"no video folders (meta.json + gt.npz + frames/) under {', '.join(map(str, roots))}")
    return sorted(found)


@dataclass
class Clip:
    frames: np.ndarray  # uint8 (F, H, W, 3)
    K: np.ndarray  # (F, 3, 3)
    c2w: np.ndarray  # (F, 4, 4)
    depth0: np.ndarray  # (H, W) depth of frame 0 (0 = unknown)


class ClipSource:
    """Video folders resized to the generator's size, held in memory (64x48 frames are small)."""

    def __init__(self, dirs: list[Path], cfg: GeneratorModelConfig) -> None:
        from vibe3r.video_gen.video_io import read_video

        self.cfg = cfg
        self.videos: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for d in dirs:
            frames, K, c2w, depth, _ = read_video(d)
            if len(frames) < cfg.frames:
                continue
            frames, K = resize_frames(frames, K, cfg.width, cfg.height)
            depth = np.stack([resize_depth(x, cfg.width, cfg.height) for x in depth]).astype(np.float16)
            self.videos.append((frames, K, c2w, depth))
        if not self.videos:
            raise InputError(f"no video has {cfg.frames} frames or more among {len(dirs)} folders")

    def __len__(self) -> int:
        return len(self.videos)

    def clip(self, rng: np.random.Generator, strides: list[int], flip: bool, reverse: bool) -> Clip:
        n_f = self.cfg.frames
        frames, K, c2w, depth = self.videos[int(rng.integers(len(self.videos)))]
        n = len(frames)
        ok = [s for s in strides if s * (n_f - 1) < n] or [1]
        s = int(rng.choice(ok))
        start = int(rng.integers(n - s * (n_f - 1)))
        idx = start + s * np.arange(n_f)
        if reverse and rng.random() < 0.5:
            idx = idx[::-1]
        clip = Clip(frames[idx].copy(), K[idx].copy(), c2w[idx].copy(), depth[idx[0]].astype(np.float32))
        if flip and rng.random() < 0.5:
            clip = mirror(clip)
        return clip


def mirror(clip: Clip) -> Clip:
    """Left-right mirror of the images and of the world: pixel u -> W-1-u, cameras M c2w M."""
    W = clip.frames.shape[2]
    K = clip.K.copy()
    K[:, 0, 2] = W - 1 - K[:, 0, 2]
    M = np.diag([-1.0, 1.0, 1.0, 1.0])
    return Clip(clip.frames[:, :, ::-1].copy(), K, M @ clip.c2w @ M, clip.depth0[:, ::-1].copy())


def clip_tensors(clip: Clip, use_render: bool, plane_m: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 (F, 3, H, W) in [-1, 1] and its conditioning (F, 13, H, W); ``plane_m``: the render is of the first
    frame as a plane that far, not of its depth."""
    x0 = to_model_images(clip.frames)
    H, W = clip.depth0.shape
    depth0 = clip.depth0 if plane_m is None else plane_depth_map(W, H, plane_m)
    cond = conditioning(x0[0], torch.from_numpy(clip.K), torch.from_numpy(clip.c2w), torch.from_numpy(depth0),
                        use_render=use_render or plane_m is not None)
    return x0, cond


def make_batch(src: ClipSource, tc: GeneratorTrainConfig, seed: int, step: int, batch_size: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of step ``step``: a pure function of (seed, step)."""
    rng, plane_rng = np.random.default_rng([seed, step, 7]), np.random.default_rng([seed, step, 13])
    xs, cs = [], []
    for _ in range(batch_size or tc.batch_size):
        clip = src.clip(rng, tc.strides, tc.flip, tc.reverse)
        u = rng.random()  # one draw decides: true-depth render | plane render | none
        plane_m = float(plane_rng.uniform(*tc.plane_range))  # its own stream: p_plane never changes which clips are drawn
        plane = plane_m if tc.p_render <= u < tc.p_render + tc.p_plane else None
        x0, cond = clip_tensors(clip, use_render=bool(u < tc.p_render), plane_m=plane)
        xs.append(x0)
        cs.append(cond)
    return torch.stack(xs), torch.stack(cs)


def noise_draw(model: VideoGenerator, x0: torch.Tensor, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t (B,), noise like x0) of step ``step``."""
    g = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 11]).integers(2**62)))
    t = torch.randint(0, model.config.train_timesteps, (x0.shape[0],), generator=g)
    return t, torch.randn(x0.shape, generator=g)


def _save(out: Path, model: VideoGenerator, ema: Any, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from vibe3r.recon.train import save_training_state

    rd = out / RESUME_DIR
    rd.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(rd / ".raw.tmp"))
    os.replace(rd / ".raw.tmp", rd / "raw.safetensors")
    if ema is not None:
        save_file({f"{i}": p.detach().contiguous() for i, p in enumerate(ema.shadow_params)}, str(rd / ".ema.tmp"))
        os.replace(rd / ".ema.tmp", rd / "ema.safetensors")
    save_training_state(rd, opt, state, STATE_NAME)
    export_model(out, model, ema)


@contextlib.contextmanager
def sampling_weights(model: VideoGenerator, ema: Any) -> Iterator[None]:
    """Inside: the model holds the weights it samples with (the EMA when on); the training weights after."""
    if ema is None:
        yield
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())


def export_model(out: Path, model: VideoGenerator, ema: Any) -> None:
    """The sampling weights as ``out``'s ``save_pretrained`` checkpoint."""
    with sampling_weights(model, ema):
        model.save_pretrained(out)


def _load(out: Path, model: VideoGenerator, ema: Any, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from vibe3r.recon.train import load_training_state

    rd = out / RESUME_DIR
    model.load_state_dict(load_file(str(rd / "raw.safetensors")))
    if ema is not None:
        sh = load_file(str(rd / "ema.safetensors"))
        ema.shadow_params = [sh[f"{i}"] for i in range(len(sh))]
    state = load_training_state(rd, opt, STATE_NAME)
    if ema is not None:
        ema.optimization_step = state["step"]
    return state


@torch.no_grad()
def validation_loss(model: VideoGenerator, batch: tuple[torch.Tensor, torch.Tensor], seed: int) -> float:
    """Denoising loss on a fixed batch at fixed (t, noise): comparable across steps and runs."""
    x0, cond = batch
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(20, model.config.train_timesteps - 20, x0.shape[0]).long()
    noise = torch.randn(x0.shape, generator=g)
    was = model.training
    model.eval()
    v = float(model.denoising_error(x0, cond, t, noise).mean())
    model.train(was)
    return v


def train_generator(cfg: Config, data: str | Path | list[str | Path], out: str | Path, resume: bool = False, progress: bool = True,
                    init_from: str | Path | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Train (or resume) the generator on the video folders under ``data``; returns the final state.

    ``stop_at``: leave after that step (saved, resumable) although the schedule runs to ``train.steps``.
    """
    from diffusers.training_utils import EMAModel
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from torch.utils.tensorboard import SummaryWriter

    from vibe3r.recon.train import lr_at, param_groups

    out = Path(out)
    gc, tc = cfg.generator, cfg.generator.train
    if (out / RESUME_DIR / STATE_NAME).is_file() and not resume:
        raise InputError(f"{out} already holds a generator run; pass --resume to continue it or choose another --out")
    torch.manual_seed(tc.seed)
    if init_from is not None:
        model = VideoGenerator.from_pretrained(init_from)
        if model.config != gc.model:
            raise InputError(f"--init-from {init_from} has another generator config than generator.model")
    else:
        model = VideoGenerator(gc.model)
    model.train()
    dirs = find_videos(data)
    src = ClipSource(dirs, gc.model)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.99))
    ema = EMAModel(model.parameters(), decay=tc.ema_decay) if tc.ema_decay > 0 else None
    state: dict[str, Any] = {"step": 0, "cpu_s": 0.0, "val": []}
    if resume and (out / RESUME_DIR / STATE_NAME).is_file():
        state = _load(out, model, ema, opt)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    (out / "data.json").write_text(json.dumps({"data": [str(d) for d in (data if isinstance(data, list | tuple) else [data])], "videos": len(src)}, indent=1))
    val_batch = make_batch(src, tc, tc.seed + 1, 0, batch_size=8)
    writer = SummaryWriter(str(out / "tb"), purge_step=state["step"] or None)
    cols = (TextColumn("[bold]generator"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    losses: list[float] = []
    with Progress(*cols, disable=not progress) as bar:
        task = bar.add_task("train", total=tc.steps, completed=state["step"], info="")
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        while state["step"] < end:
            step = state["step"]
            t0 = time.process_time()
            lr = lr_at(step / tc.steps, step, tc.warmup_steps, tc.lr, tc.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            x0, cond = make_batch(src, tc, tc.seed, step)
            t, noise = noise_draw(model, x0, tc.seed, step)
            loss = model.denoising_error(x0, cond, t, noise).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip))
            opt.step()
            if ema is not None:
                ema.step(model.parameters())
            losses.append(float(loss.detach()))
            state["step"] = step + 1
            state["cpu_s"] += time.process_time() - t0
            if state["step"] % tc.log_every == 0 or state["step"] == tc.steps:
                writer.add_scalar("train/loss", float(np.mean(losses)), state["step"])
                writer.add_scalar("train/lr", lr, state["step"])
                writer.add_scalar("train/grad_norm", gn, state["step"])
                bar.update(task, info=f"loss {np.mean(losses):.4f}")
                losses = []
            if state["step"] % tc.save_every == 0 or state["step"] == end:
                with sampling_weights(model, ema):
                    v = validation_loss(model, val_batch, tc.seed + 2)
                state["val"].append([state["step"], v])
                writer.add_scalar("val/loss", v, state["step"])
                _save(out, model, ema, opt, state)
            bar.update(task, completed=state["step"])
    writer.close()
    return state
