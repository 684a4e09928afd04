"""An analytic world for fast tests and smoke runs of the reconstruction stage (no renderer needed).

A camera moves inside a z-up box room (floor at z = 0) with a few boxes on the floor; every face
carries a procedural texture: per face and channel, ``0.5 + sum_k a_k sin(2π f_k · (u, v) + φ_k)`` with (u, v) the face's
in-plane world coordinates. Rays are intersected with the room and the boxes in closed form (slab
test of axis-aligned boxes), so depth, poses and images are exact. The output is a
``video_gen.dataset.VideoGT`` and can be written as pair shards with the project's ``ShardWriter``,
which makes it a drop-in training set for ``PairShardDataset``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vibe3r import geometry
from vibe3r.video_gen.dataset import SHARD_FORMAT_VERSION, ShardWriter, VideoGT, covisibility_matrix, select_pairs


def _face_texture(rng: np.random.Generator, n_waves: int = 10, max_freq: float = 3.0) -> np.ndarray:
    """Random sinusoid parameters (3 channels, n_waves, 4: fu, fv, phase, amplitude)."""
    f = rng.uniform(-max_freq, max_freq, (3, n_waves, 2))
    ph = rng.uniform(0, 2 * np.pi, (3, n_waves, 1))
    amp = rng.uniform(0.2, 1.0, (3, n_waves, 1)) / np.sqrt(n_waves)
    return np.concatenate([f, ph, amp], -1)


def _slabs(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slab test of rays (H,W,3) against an axis-aligned box: entry/exit distances and their axes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - o) / d
        t2 = (hi - o) / d
    t1 = np.where(np.isnan(t1), -np.inf, t1)
    t2 = np.where(np.isnan(t2), np.inf, t2)
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    return tmin.max(-1), tmax.min(-1), tmin.argmax(-1), tmax.argmin(-1)


def box_room_video(seed: int, n_frames: int = 8, H: int = 48, W: int = 64, fov_deg: float = 60.0,
                   step: float = 0.08, turn_deg: float = 3.0, n_boxes: int = 4) -> VideoGT:
    """A short handheld-like video inside a textured box room with ``n_boxes`` textured boxes on the
    floor along the walls (so that views are not planar, which would make the essential matrix
    ambiguous).

    The camera starts near the room centre at eye height, looks horizontally in a random direction
    and then walks ``step`` metres and turns up to ``turn_deg`` degrees (yaw) per frame, with a little
    pitch jitter. Returns images (N,H,W,3) uint8, depth (N,H,W) m, K (N,3,3), c2w (N,4,4).
    """
    rng = np.random.default_rng(seed)
    half = np.array([rng.uniform(1.8, 3.0), rng.uniform(1.8, 3.0)])
    height = rng.uniform(2.4, 3.0)
    lo = np.array([-half[0], -half[1], 0.0])
    hi = np.array([half[0], half[1], height])
    boxes = []
    for _ in range(n_boxes):  # a box against a random wall, leaving the centre free for the camera
        size = rng.uniform([0.3, 0.3, 0.3], [0.9, 0.9, 1.4])
        c = rng.uniform(-half + size[:2] / 2, half - size[:2] / 2)
        a = int(rng.integers(2))
        c[a] = np.sign(rng.uniform(-1, 1)) * (half[a] - size[a] / 2 - rng.uniform(0, 0.3))
        boxes.append((np.array([c[0] - size[0] / 2, c[1] - size[1] / 2, 0.0]), np.array([c[0] + size[0] / 2, c[1] + size[1] / 2, size[2]])))
    tex = [_face_texture(rng) for _ in range(6 * (1 + n_boxes))]  # 6 faces per room / box: -x, +x, -y, +y, -z, +z
    K = geometry.intrinsics_from_fov(fov_deg, W, H).numpy()

    yaw = rng.uniform(0, 2 * np.pi)
    pos = np.array([rng.uniform(-0.2, 0.2) * half[0], rng.uniform(-0.2, 0.2) * half[1], rng.uniform(1.5, 1.8)])
    walk = rng.uniform(0, 2 * np.pi)
    c2ws = []
    for _ in range(n_frames):
        pitch = rng.normal(-0.15, 0.05)  # slightly down, to see the boxes
        d = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
        c2ws.append(geometry.look_at(torch.tensor(pos), torch.tensor(pos + d)).numpy())
        yaw += np.radians(rng.uniform(-turn_deg, turn_deg))
        walk += rng.normal(0, 0.3)
        pos = pos + step * np.array([np.cos(walk), np.sin(walk), rng.normal(0, 0.1)])
        pos = np.clip(pos, np.r_[-0.4 * half, 1.5], np.r_[0.4 * half, 1.8])
    c2w = np.stack(c2ws)

    images, depths = [], []
    for T in c2w:
        o, d = geometry.camera_rays(K, T, H, W)  # H,W,3 z-normalised directions (t = z-depth)
        o, d = o.numpy(), d.numpy()
        _, depth, _, axis = _slabs(o, d, lo, hi)  # leaving the room
        sign = np.take_along_axis(d, axis[..., None], -1)[..., 0] > 0
        face = 2 * axis + sign.astype(int)
        for k, (blo, bhi) in enumerate(boxes):
            t_in, t_out, ax_in, _ = _slabs(o, d, blo, bhi)
            hit = (t_in <= t_out) & (t_in > 1e-6) & (t_in < depth)
            entering_neg = np.take_along_axis(d, ax_in[..., None], -1)[..., 0] > 0  # entering through the -face
            depth = np.where(hit, t_in, depth)
            face = np.where(hit, 6 * (k + 1) + 2 * ax_in + (~entering_neg).astype(int), face)
        X = o + depth[..., None] * d  # H,W,3 world points
        img = np.zeros((H, W, 3))
        for fi in np.unique(face):
            m = face == fi
            uv = np.delete(X[m], (fi % 6) // 2, axis=1)  # N,2 in-plane coordinates
            p = tex[fi]  # 3,n,4
            phase = 2 * np.pi * (uv[None, :, None, 0] * p[:, None, :, 0] + uv[None, :, None, 1] * p[:, None, :, 1]) + p[:, None, :, 2]
            img[m] = (0.5 + (p[:, None, :, 3] * np.sin(phase)).sum(-1)).T
        images.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
        depths.append(depth.astype(np.float32))
    return VideoGT(images=np.stack(images), depth=np.stack(depths), K=np.stack([K] * n_frames), c2w=c2w, scene_seed=seed)


def write_box_dataset(out_dir: str | Path, n_videos: int = 2, n_frames: int = 8, H: int = 48, W: int = 64,
                      pairs_per_video: int = 16, seed: int = 0, shard_size: int = 32) -> Path:
    """Render ``n_videos`` box-room videos and write them as a ``PairShardDataset`` folder."""
    from vibe3r.config import DatasetConfig

    out = Path(out_dir)
    writer = ShardWriter(out / "shards", shard_size)
    cfg = DatasetConfig(pairs_per_video=pairs_per_video, covis_min=0.3, covis_max=0.98, shard_size=shard_size)
    rng = np.random.default_rng(seed)
    n = 0
    for v in range(n_videos):
        gt = box_room_video(seed * 1000 + v, n_frames, H, W)
        pairs = select_pairs(covisibility_matrix(gt.depth, gt.K, gt.c2w), cfg, rng)
        writer.add(v, gt, pairs)
        n += len(pairs)
    writer.flush()
    index = {"format_version": SHARD_FORMAT_VERSION, "height": H, "width": W, "n_pairs": n, "shards": writer.shards,
             "videos": [{"dir": None, "prompt": "box room", "scene_seed": seed * 1000 + v, "pairs": None} for v in range(n_videos)]}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return out


def box_pair_batch(B: int = 2, H: int = 48, W: int = 64, seed: int = 0, gap: int = 2) -> dict[str, torch.Tensor]:
    """A collated batch of B pairs (frames 0 and ``gap`` of B box-room videos), as PairShardDataset gives."""
    from vibe3r.video_gen.dataset import pair_item

    items = []
    for b in range(B):
        gt = box_room_video(seed * 1000 + b, gap + 1, H, W)
        shard = {"images": gt.images, "depth": gt.depth, "K": gt.K.astype(np.float32), "c2w": gt.c2w,
                 "video": np.zeros(gap + 1, np.int32), "frame": np.arange(gap + 1, dtype=np.int32),
                 "scene_seed": np.full(gap + 1, gt.scene_seed), "pairs": np.array([[0, gap]]), "covis": np.ones(1, np.float32)}
        items.append(pair_item(shard, 0))
    return torch.utils.data.default_collate(items)
