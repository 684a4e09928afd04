"""A small loop run for the evaluator tests: three tiny checkpoints (base, round 1, round 2) in a real
registry, one tiny rendered capture as the run's real capture (frozen in round 2's captures.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import TINY_MODEL
from PIL import Image

from vibe3r.config import ReconModelConfig, load_config, save_config
from vibe3r.loop.pool import freeze_captures
from vibe3r.loop.registry import Registry
from vibe3r.recon.model import build_model
from vibe3r.recon.synthetic import box_room_video


def tiny_capture(folder: Path, seed: int = 3, n: int = 6) -> Path:
    gt = box_room_video(seed, n_frames=n, H=48, W=64, step=0.12)
    (folder / "frames").mkdir(parents=True)
    for k, img in enumerate(gt.images):
        Image.fromarray(img).save(folder / "frames" / f"{k:05d}.png")
    np.savez(folder / "gt.npz", K=gt.K, cam2world=gt.c2w, depth=gt.depth)
    return folder


def tiny_run(root: Path, rounds: int = 2) -> Path:
    """``root/run`` with rounds 1..rounds done, each a ``train_recon`` stage whose ``recon`` is a tiny model."""
    run = root / "run"
    cap = tiny_capture(root / "capture")
    build_model(ReconModelConfig(**TINY_MODEL), seed=0).save_pretrained(root / "base")
    cfg = load_config(None, [f"loop.base_checkpoint={root / 'base'}", f"preference.captures=['{cap}']", "preference.focal=null"])
    with Registry(run) as reg:
        for rnd in range(1, rounds + 1):
            reg.start_round(rnd, "h", {}, ["train_recon"])
            save_config(cfg, run / "rounds" / f"{rnd:04d}")
            freeze_captures(cfg, run, rnd)
            rel = f"rounds/{rnd:04d}/train_recon/ckpt"
            build_model(ReconModelConfig(**TINY_MODEL), seed=rnd).save_pretrained(run / rel)
            reg.start_stage(rnd, "train_recon", 0, "h", {})
            reg.finish_stage(rnd, "train_recon", {"recon": rel}, {"final_loss": 1.0}, [], 1.0, 10.0, None)
            reg.finish_round(rnd)
    return run
