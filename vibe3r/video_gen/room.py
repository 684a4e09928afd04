"""Reconstruction-conditioned videos — "image pairs of your room" (``vibe3r video room``).

A real capture (a phone video, a folder of photos, a capture spec) is reconstructed frame by frame with
the pairwise model: a key frame and a partner a few frames away give the key frame's pointmap X^{1,1},
whose z is its depth. That geometry is re-rendered along a new trajectory from the motion language
(the first frame splatted into every commanded camera, ``diffusion.splat_first_frame``) and the learned
generator refines the render — fills the holes, restores appearance — conditioned on the render and its
validity mask, as Gen3C does with its 3D cache. Each output is a video folder in the renderer's format:
frames, the commanded cameras in ``gt.npz`` (and the key frame's depth as frame 0's depth), ``meta.json``
saying it is generated, from which capture and frame. These are training pairs of the user's own room
with known relative transforms.

Scale: a pairwise pointmap is up to scale; the depth is rescaled so its median is ``median_depth_m``
(a room seen from its inside; 2 m by default), so the prompt's translations read as metres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vibe3r.errors import InputError
from vibe3r.video_gen.diffusion import VideoGenerator, resize_depth, resize_frames
from vibe3r.video_gen.generate import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    commanded_cameras,
    scale_to_median,
    write_generated,
)


def crop_to_aspect(img: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop an image (and its K) to the aspect ratio width:height."""
    H, W = img.shape[:2]
    K = K.copy()
    if W * height > H * width:
        w = int(round(H * width / height))
        x0 = (W - w) // 2
        img, K[0, 2] = img[:, x0:x0 + w], K[0, 2] - x0
    elif W * height < H * width:
        h = int(round(W * height / width))
        y0 = (H - h) // 2
        img, K[1, 2] = img[y0:y0 + h], K[1, 2] - y0
    return np.ascontiguousarray(img), K


@torch.no_grad()
def key_frame_depth(recon: torch.nn.Module, img: np.ndarray, partner: np.ndarray, size: int = 128) -> tuple[np.ndarray, float]:
    """Depth (H, W) of ``img`` at ``size`` (longer side) from the pair (img, partner): z of X^{1,1}; and the focal
    (pixels at that size) the pointmap implies."""
    import cv2

    from vibe3r.recon.inference import estimate_focal

    p = recon.config.patch_size
    H, W = img.shape[:2]
    s = size / max(H, W)
    h, w = max(p, int(round(H * s / p)) * p), max(p, int(round(W * s / p)) * p)
    to = lambda x: torch.from_numpy(cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    out = recon(to(img), to(partner))
    pts = out["pts11"][0]
    return pts[..., 2].clamp_min(0).numpy(), estimate_focal(pts, out.get("conf1", [None])[0])


def room_videos(capture_spec: str, recon_ckpt: str | Path, gen: VideoGenerator, prompts: list[str], out: str | Path,
                keys: int = 4, partner_gap: int = 5, steps: int = 25, seed: int = 0, median_depth_m: float = 2.0,
                gen_ckpt: str | Path | None = None) -> list[Path]:
    """For ``keys`` evenly spread key frames of the capture and every prompt: a refined re-render video folder."""
    from vibe3r.captures import load_capture
    from vibe3r.recon.model import ReconModel
    from vibe3r.video_gen.generate import checkpoint_id

    cap = load_capture(capture_spec)
    if len(cap) < 2:
        raise InputError(f"capture {capture_spec} has {len(cap)} frame(s); a key frame needs a partner to reconstruct it")
    recon = ReconModel.from_pretrained(recon_ckpt).eval()
    mc = gen.config
    out = Path(out)
    gap = min(partner_gap, len(cap) - 1)
    key_idx = np.linspace(0, len(cap) - 1 - gap, keys).round().astype(int)
    written = []
    for ki, i in enumerate(key_idx):
        img, partner = cap.images[i], cap.images[i + gap]
        depth, f_model = key_frame_depth(recon, img, partner)
        if cap.K is not None:
            K_img = cap.K[i]
        else:  # no intrinsics: the focal the pointmap implies, principal point at the centre
            H, W = img.shape[:2]
            f = f_model * max(H, W) / max(depth.shape) if np.isfinite(f_model) else 0.8 * max(H, W)
            K_img = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
        img_c, K_c = crop_to_aspect(img, K_img, mc.width, mc.height)
        depth_full = resize_depth(depth, img.shape[1], img.shape[0])
        depth_c, _ = crop_to_aspect(depth_full, K_img, mc.width, mc.height)
        frame0, K0 = resize_frames(img_c[None], K_c[None], mc.width, mc.height)
        d0 = scale_to_median(resize_depth(depth_c, mc.width, mc.height), median_depth_m, f"frame {i} of {capture_spec}")
        for pi, prompt in enumerate(prompts):
            cmd = commanded_cameras(prompt, mc.frames, mc.width, mc.height, seed=seed)
            zoom = cmd.K[:, 0, 0] / cmd.K[0, 0, 0]  # keep the prompt's zoom, on the capture's intrinsics
            cmd.K = np.repeat(K0, mc.frames, 0)
            cmd.K[:, 0, 0] *= zoom
            cmd.K[:, 1, 1] *= zoom
            vid_seed = seed * 1_000_003 + ki * 101 + pi
            frames = gen.generate(frame0[0], cmd.K, cmd.c2w, depth0=d0, steps=steps, seed=vid_seed)
            meta = {"generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION,
                                  "checkpoint": None if gen_ckpt is None else str(gen_ckpt),
                                  "checkpoint_id": None if gen_ckpt is None else checkpoint_id(gen_ckpt)},
                    "conditioned_on": {"capture": str(capture_spec), "frame": int(i), "partner": int(i + gap),
                                       "recon": str(recon_ckpt), "median_depth_m": median_depth_m},
                    "seed": int(vid_seed), "steps": int(steps)}
            depth = np.zeros((mc.frames, mc.height, mc.width), np.float32)
            depth[0] = d0  # frame 0's depth is known: the reconstruction's, rescaled
            written.append(write_generated(out / f"key{ki:02d}-p{pi:02d}", frames, cmd, meta, depth=depth))
    return written
