"""Prompt + first frame -> a generated video folder (``vibe3r video generate``).

The motion prompt is parsed by the same motion language as the renderer and turned into a trajectory
from a level camera at the origin (world z-up, looking along +y); its poses are subsampled evenly to the
generator's frame count. The folder has the renderer's format, with the *commanded* cameras in
``gt.npz`` (depth all 0: unknown) and ``meta.json`` saying the frames are generated, by which
checkpoint, from which prompt, seed and step count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vibe3r.errors import InputError
from vibe3r.video_gen.diffusion import VideoGenerator, plane_depth_map

GENERATOR_NAME = "vibe3r-videogen"
GENERATOR_VERSION = "1.0"
START_HEIGHT_M = 1.4


@dataclass
class Commanded:
    K: np.ndarray  # (F, 3, 3)
    c2w: np.ndarray  # (F, 4, 4)
    frame_index: np.ndarray  # (F,) which frames of the prompt's trajectory
    prompt: str


def commanded_cameras(prompt: str, frames: int, width: int, height: int, fov_deg: float = 60.0,
                      start_c2w: np.ndarray | None = None, seed: int = 0) -> Commanded:
    """The prompt's trajectory subsampled to ``frames`` cameras (first = ``start_c2w``, default a level
    camera at the origin looking along +y)."""
    from vibe3r.geometry import intrinsics_from_fov, look_at
    from vibe3r.video_gen.motion import parse_prompt

    program = parse_prompt(prompt)
    K = intrinsics_from_fov(fov_deg, width, height).numpy()
    if start_c2w is None:
        start_c2w = look_at([0.0, 0.0, START_HEIGHT_M], [0.0, 1.0, START_HEIGHT_M]).numpy()
    traj = program.trajectory(start_c2w, K, width, height, seed=seed)
    n = len(traj.c2w)
    if n < 2:
        raise InputError(f"prompt {prompt!r} has a single frame: nothing to generate")
    idx = np.round(np.linspace(0, n - 1, frames)).astype(int)
    return Commanded(K=traj.K[idx], c2w=traj.c2w[idx], frame_index=idx, prompt=traj.prompt)


def load_first_frame(path: str | Path, width: int, height: int) -> np.ndarray:
    """Read an image, centre-crop it to the generator's aspect ratio and area-resize it: uint8 (H, W, 3)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read the first frame {path} (not an image, or missing)")
    img = img[..., ::-1]
    H, W = img.shape[:2]
    target = width / height
    if W / H > target:  # too wide: crop columns
        w = int(round(H * target))
        img = img[:, (W - w) // 2:(W - w) // 2 + w]
    else:
        h = int(round(W / target))
        img = img[(H - h) // 2:(H - h) // 2 + h]
    return np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))


def checkpoint_id(path: str | Path) -> str:
    """Which generator made a video: the hash of its checkpoint's tensors (``preference.cli.model_version``;
    not of the file's bytes, whose header order varies between processes)."""
    from vibe3r.preference.cli import model_version

    return model_version(Path(path))


def write_generated(out: str | Path, frames: np.ndarray, cmd: Commanded, meta: dict, depth: np.ndarray | None = None) -> Path:
    """A generated video folder in the renderer's format; ``gt.npz`` holds the commanded cameras (depth 0 = unknown)."""
    from vibe3r.video_gen.video_io import write_video

    n, H, W = frames.shape[:3]
    full = {"prompt": cmd.prompt, "generated": True, "frame_index": [int(i) for i in cmd.frame_index],
            "fps": 4.0, **meta}
    return write_video(out, frames, cmd.K, cmd.c2w, np.zeros((n, H, W), np.float32) if depth is None else depth, full)


def first_frame_depth(recon, image: np.ndarray, width: int, height: int, median_depth_m: float = 2.0,  # noqa: ANN001
                      size: int = 128) -> np.ndarray:
    """Depth (height, width) of a single image from the pairwise reconstruction model, the image paired
    with itself (DUSt3R's monocular mode): z of X^{1,1} at ``size`` (longer side), nearest-resized to the
    generator's size and rescaled so its median is ``median_depth_m`` (a pointmap is up to scale; the
    prompt's translations then read as metres in a room seen from inside). ``image``: uint8 (H, W, 3)
    with the generator's aspect ratio, ideally at ``size`` or more (``load_first_frame``)."""
    from vibe3r.video_gen.diffusion import resize_depth
    from vibe3r.video_gen.room import key_frame_depth

    d, _ = key_frame_depth(recon, image, image, size=size)
    return scale_to_median(resize_depth(d, width, height), median_depth_m, "the first frame")


def scale_to_median(depth: np.ndarray, median_depth_m: float, what: str) -> np.ndarray:
    """Up-to-scale depth (0 = none) rescaled so its median is ``median_depth_m``; an error when the
    reconstruction covers less than half of ``what``."""
    valid = depth > 0
    if valid.mean() < 0.5:
        raise InputError(f"{what}: the reconstruction has depth on only {valid.mean():.0%} of it")
    return (depth * (median_depth_m / float(np.median(depth[valid])))).astype(np.float32)


def generate_video(model: VideoGenerator, first_frame: np.ndarray, prompt: str, out: str | Path, steps: int = 25,
                   eta: float = 0.0, seed: int = 0, fov_deg: float = 60.0, ckpt: str | Path | None = None,
                   depth0: np.ndarray | None = None, depth_meta: dict | None = None, guidance: float = 1.0,
                   plane_depth: float | None = None) -> Path:
    """Generate one video of ``prompt`` from ``first_frame`` (uint8 at the model's size) into ``out``.
    ``depth0`` (H, W): the first frame's depth, splatted into every commanded camera (the render
    conditioning; ``first_frame_depth`` estimates it), written as frame 0's depth; ``depth_meta`` says
    where it came from. Without it, ``plane_depth`` (metres) conditions on the first frame as a
    fronto-parallel plane that far (not written as depth: it is a proxy, not a measurement)."""
    cfg = model.config
    cmd = commanded_cameras(prompt, cfg.frames, cfg.width, cfg.height, fov_deg, seed=seed)
    cond_depth = depth0 if depth0 is not None or plane_depth is None else plane_depth_map(cfg.width, cfg.height, plane_depth)
    frames = model.generate(first_frame, cmd.K, cmd.c2w, depth0=cond_depth, steps=steps, eta=eta, seed=seed, guidance=guidance)
    meta = {"generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION,
                          "checkpoint": None if ckpt is None else str(ckpt),
                          "checkpoint_id": None if ckpt is None else checkpoint_id(ckpt)},
            "seed": int(seed), "steps": int(steps), "eta": float(eta), "fov_deg": float(fov_deg),
            "guidance": float(guidance)}
    depth = None
    if depth0 is None and plane_depth is not None:
        meta["first_frame_depth"] = {"source": "plane", "depth_m": float(plane_depth)}
    if depth0 is not None:
        meta["first_frame_depth"] = depth_meta or {"source": "given"}
        depth = np.zeros((cfg.frames, cfg.height, cfg.width), np.float32)
        depth[0] = depth0
    return write_generated(out, frames, cmd, meta, depth=depth)
