"""The video folder format (DESIGN.md): write atomically, read back.

::

    DIR/
      video.mp4           H.264 (yuv420p) at meta["fps"]; odd sizes are edge-padded to even
      frames/00000.png    the exact frames, RGB uint8
      gt.npz              K (N,3,3) float64, cam2world (N,4,4) float64, depth (N,H,W) float32 m (0 = no hit)
      meta.json           prompt, scene_seed, generator {name, version}, n_frames, width, height, fps, ...
      config.yaml         the resolved config (when given)

The folder is written under a temporary name beside ``DIR`` and renamed into place, so a reader
never sees a half-written video (``meta.json`` present means complete).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from pydantic import BaseModel

from vibe3r.errors import InputError


def encode_mp4(path: Path, frames: np.ndarray, fps: float, qp: int = 18) -> None:
    """H.264 mp4 (constant quantiser ``qp``) of uint8 RGB frames (N,H,W,3); odd H or W are padded
    by edge replication. The PNG frames are the exact data; the mp4 is for viewing and tools."""
    N, H, W, _ = frames.shape
    ph, pw = H % 2, W % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = W + pw, H + ph
        stream.pix_fmt = "yuv420p"
        # Bit-exact output for the same frames: one thread, constant QP, and none of x264's
        # floating-point-driven decisions (adaptive quantisation, mb-tree, psy-rd, weighted
        # prediction, adaptive B-frames, scene cuts), whose results change with the process's
        # floating-point state (ray-casting libraries set flush-to-zero modes).
        params = (f"threads=1:qp={qp}:aq-mode=0:mbtree=0:psy=0:rc-lookahead=0:weightp=0:b-adapt=0:scenecut=0")
        stream.options = {"preset": "medium", "x264-params": params}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(
    out_dir: str | Path,
    frames: np.ndarray,
    K: np.ndarray,
    cam2world: np.ndarray,
    depth: np.ndarray,
    meta: dict[str, Any],
    cfg: BaseModel | None = None,
) -> Path:
    """Write a video folder atomically; returns its path. ``K`` may be (3,3) (same for all frames)."""
    from vibe3r.config import save_config

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be uint8 (N,H,W,3), got {frames.dtype} {frames.shape}")
    N, H, W, _ = frames.shape
    K = np.broadcast_to(np.asarray(K, np.float64), (N, 3, 3)).copy()
    c2w = np.asarray(cam2world, np.float64)
    depth = np.asarray(depth, np.float32)
    if c2w.shape != (N, 4, 4) or depth.shape != (N, H, W):
        raise InputError(f"cam2world {c2w.shape} / depth {depth.shape} do not match {N} frames of {H}x{W}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / "frames").mkdir()
        for i, f in enumerate(frames):
            cv2.imwrite(str(tmp / "frames" / f"{i:05d}.png"), f[..., ::-1])
        np.savez_compressed(tmp / "gt.npz", K=K, cam2world=c2w, depth=depth)
        fps = float(meta.get("fps", 10.0))
        encode_mp4(tmp / "video.mp4", frames, fps)
        if cfg is not None:
            save_config(cfg, tmp)
        full = {"n_frames": N, "width": W, "height": H, "fps": fps, **meta}
        (tmp / "meta.json").write_text(json.dumps(full, indent=2))
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_video(video_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a video folder: ``(frames uint8 (N,H,W,3), K (N,3,3), cam2world (N,4,4), depth (N,H,W), meta)``."""
    d = Path(video_dir)
    for name in ("meta.json", "gt.npz", "frames"):
        if not (d / name).exists():
            raise InputError(f"not a vibe3r video folder (missing {name}): {d}")
    meta = json.loads((d / "meta.json").read_text())
    files = sorted((d / "frames").glob("*.png"))
    frames = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot read frame {f}")
        frames.append(img[..., ::-1])
    with np.load(d / "gt.npz") as gt:
        K, c2w, depth = gt["K"], gt["cam2world"], gt["depth"]
    if len(frames) != len(c2w):
        raise InputError(f"{d}: {len(frames)} frames but {len(c2w)} poses in gt.npz")
    return np.stack(frames), K, c2w, depth, meta
