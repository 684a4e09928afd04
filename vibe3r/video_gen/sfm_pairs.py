"""Training pairs of a real capture's own frames, supervised by its structure from motion.

The capture is registered by COLMAP (``preference.sfm``: SIFT, sequential matching, bundle adjustment; no
ground truth is read). Each registered frame then gets a *sparse* depth map: the SfM points it observes,
projected with its SfM camera into the output size, the nearest point winning a pixel and each point
widened to its (2r+1)² neighbourhood (``radius``) so that a point seen in two frames lands on a valid pixel
of both after rounding. Pairs are frames ``min_gap``..``max_gap`` apart that share at least ``min_common``
points. The result is the pair-shard format of :mod:`vibe3r.video_gen.dataset`, so the supervised
objective trains on it unchanged: DUSt3R's regression on the valid (sparse) pixels — scale-free, so the
SfM's arbitrary scale does not matter — and MASt3R's matching on the correspondences the two depth maps
and the relative pose imply.

This is the real-image counterpart of :mod:`vibe3r.video_gen.warp`: there, a real frame and a render of the
model's own depth (exact by construction, but one real image); here, two real photographs with real
changes of viewpoint, lighting and blur between them, and geometry only where SfM triangulated it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vibe3r import geometry
from vibe3r.captures import Capture, load_capture
from vibe3r.errors import InputError
from vibe3r.video_gen.dataset import SHARD_FORMAT_VERSION, ShardWriter, VideoGT
from vibe3r.video_gen.room import crop_to_aspect


def sparse_depth(xyz_cam: np.ndarray, K: np.ndarray, hw: tuple[int, int], radius: int = 1) -> np.ndarray:
    """Depth map (H, W) of camera-frame points (P, 3) under K: z at each point's pixel and its
    (2·radius+1)² neighbourhood, the nearest point winning; 0 elsewhere."""
    H, W = hw
    z = xyz_cam[:, 2]
    front = z > 1e-9
    uv = (K @ (xyz_cam[front] / z[front, None]).T).T[:, :2]
    z = z[front]
    u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
    depth = np.full((H, W), np.inf)
    for dv in range(-radius, radius + 1):
        for du in range(-radius, radius + 1):
            uu, vv = u + du, v + dv
            ok = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
            np.minimum.at(depth, (vv[ok], uu[ok]), z[ok])
    depth[~np.isfinite(depth)] = 0
    return depth.astype(np.float32)


def choose_sfm_pairs(frames: Sequence[int], common: Any, min_gap: int, max_gap: int,
                     min_common: int) -> list[tuple[int, int, int]]:
    """(i, j, n_common) of the registered frames ``min_gap`` ≤ j − i ≤ ``max_gap`` apart whose common point
    count ``common(i, j)`` is at least ``min_common``."""
    have = set(frames)
    out = []
    for i in sorted(have):
        for j in range(i + min_gap, i + max_gap + 1):
            if j in have:
                n = int(common(i, j))
                if n >= min_common:
                    out.append((i, j, n))
    return out


def build_sfm_pairs(captures: Sequence[str | tuple[str, Capture]], out: str | Path, *, size: tuple[int, int] = (128, 96),
                    cache_dir: str | Path, min_gap: int = 1, max_gap: int = 25, min_common: int = 50, radius: int = 1,
                    max_pairs: int = 0, shard_size: int = 64, seed: int = 0, skip_failed: bool = False, threads: int = 1,
                    log=print) -> dict[str, Any]:  # noqa: ANN001
    """Pair shards (``size`` = (width, height)) of real captures' frames with SfM geometry (module docstring).

    ``captures``: capture specs, or (spec, full-resolution Capture) when already loaded; each needs intrinsics.
    The SfM of each is cached in ``cache_dir`` under its spec (the loop reuses it across rounds); with
    ``skip_failed`` a capture SfM cannot register is recorded as failed instead of raising. Frames are
    centre-cropped to the output's aspect ratio.
    The qualifying pairs are shuffled (``seed``), cut to ``max_pairs`` per capture (0: all) and written
    ``shard_size`` to a shard, so a trainer streaming shards sees the whole capture, not one stretch of it.
    Returns the index; raises ``InputError`` when no pair qualifies."""
    from vibe3r.preference.sfm import capture_structure

    W, H = size
    out = Path(out)
    writer = ShardWriter(out / "shards", shard_size)
    per_capture = []
    for ci, item in enumerate(captures):
        spec, cap = (str(item), load_capture(item)) if isinstance(item, (str, Path)) else (str(item[0]), item[1])
        if len(cap) < 2:
            raise InputError(f"capture {spec} has fewer than two frames")
        try:
            st = capture_structure(cap, Path(cache_dir), spec, threads=threads, log=log)
        except InputError as e:
            if not skip_failed:
                raise
            per_capture.append({"capture": spec, "frames": len(cap), "registered": 0, "pairs": 0, "failed": str(e)})
            continue
        pairs = choose_sfm_pairs(sorted(st.c2w), lambda i, j, st=st: len(st.common(i, j)), min_gap, max_gap, min_common)
        order = np.random.default_rng([seed, ci]).permutation(len(pairs))
        pairs = [pairs[k] for k in order[: max_pairs or None]]
        used = sorted({i for i, _, _ in pairs} | {j for _, j, _ in pairs})
        if not used:
            per_capture.append({"capture": spec, "frames": len(cap), "registered": len(st.c2w), "pairs": 0})
            continue
        # indexed by capture frame, so the shards' ``frame`` field names the real frames (only used ones are written)
        n = used[-1] + 1
        gt = VideoGT(images=np.zeros((n, H, W, 3), np.uint8), depth=np.zeros((n, H, W), np.float32),
                     K=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)), c2w=np.tile(np.eye(4), (n, 1, 1)), scene_seed=-1)
        for f in used:
            img, K = crop_to_aspect(cap.images[f], cap.K[f], W, H)
            K = geometry.scale_intrinsics(torch.from_numpy(K), W / img.shape[1], H / img.shape[0]).numpy()
            gt.images[f] = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
            w2c = np.linalg.inv(st.c2w[f])
            gt.depth[f] = sparse_depth(st.xyz[st.obs[f]] @ w2c[:3, :3].T + w2c[:3, 3], K, (H, W), radius)
            gt.K[f], gt.c2w[f] = K, st.c2w[f]
        for k in range(0, len(pairs), shard_size):
            writer.add(ci * 100_000, gt, [(i, j, m / max(len(st.obs[i]), 1)) for i, j, m in pairs[k:k + shard_size]])
        per_capture.append({"capture": spec, "frames": len(cap), "registered": len(st.c2w), "pairs": len(pairs),
                            "points": len(st.xyz), "valid_frac": float(np.mean([(gt.depth[f] > 0).mean() for f in used]))})
    writer.flush()
    if not writer.shards:
        raise InputError(f"no frame pair {min_gap}-{max_gap} apart shares {min_common} structure-from-motion points")
    index = {"format_version": SHARD_FORMAT_VERSION, "height": H, "width": W,
             "n_pairs": sum(sh["pairs"] for sh in writer.shards), "shards": writer.shards, "videos": [],
             "sfm": {"captures": per_capture, "min_gap": min_gap, "max_gap": max_gap, "min_common": min_common, "radius": radius, "seed": seed}}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index
