"""Training pairs from videos with ground truth: co-visibility pair selection, shards, streaming.

Layout written by :func:`build_dataset` (``vibe3r video dataset``)::

    DIR/
      config.yaml          the resolved config
      index.json           shards, counts, image size, the prompts and seeds used
      videos/00000/        one rendered video per scene seed (DESIGN.md folder format)
      shards/shard-00000.npz

A shard stores *frames once* and pairs as indices into them, so a frame used by many pairs costs
its bytes once::

    images (F,H,W,3) uint8   depth (F,H,W) float32 m   K (F,3,3) float32   c2w (F,4,4) float64
    video (F,) int32   frame (F,) int32   scene_seed (F,) int64
    pairs (P,2) int32 (rows into the frame arrays)   covis (P,) float32

:class:`PairShardDataset` streams pairs and derives the supervision on the fly (DUSt3R notation):
``pts11`` = X^{1,1}, view-1 points in camera-1 coordinates; ``pts21`` = X^{2,1}, view-2 points in
camera-1 coordinates; ``T21`` = ``relative_pose(c2w1, c2w2)``, mapping camera-1 to camera-2 coordinates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vibe3r import geometry
from vibe3r.config import Config, DatasetConfig, save_config
from vibe3r.errors import InputError

SHARD_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Pair selection
# --------------------------------------------------------------------------------------------


def covisibility_matrix(
    depth: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    tol: float = 0.02,
    max_gap: int | None = None,
    stride: int = 1,
) -> np.ndarray:
    """(N, N) matrix C[a, b] = fraction of frame a's valid pixels seen unoccluded by frame b.

    A pixel of a is seen by b when its 3D point projects inside b, in front of it, and b's depth
    at the nearest pixel agrees within ``tol`` relative error — the batched form of
    ``geometry.covisibility`` (tested equal), one row at a time. Pairs more than ``max_gap``
    frames apart are left at 0 (not computed). ``stride`` > 1 estimates the fraction from every
    stride-th pixel of a (in both directions); b's depth is always used at full resolution.
    """
    n, H, W = depth.shape
    D = torch.as_tensor(depth, dtype=torch.float32)
    Ks = torch.as_tensor(K, dtype=torch.float64)
    P = torch.as_tensor(c2w, dtype=torch.float64)
    w2c = geometry.inv_pose(P)
    C = np.zeros((n, n), np.float32)
    for a in range(n):
        lo, hi = (0, n) if max_gap is None else (max(0, a - max_gap), min(n, a + max_gap + 1))
        valid_a = torch.zeros(H, W, dtype=torch.bool)
        valid_a[::stride, ::stride] = D[a, ::stride, ::stride] > 0
        X = geometry.unproject_depth(D[a].double(), Ks[a])[valid_a]  # M,3 camera a
        Xw = X @ P[a, :3, :3].T + P[a, :3, 3]  # M,3 world
        T = w2c[lo:hi]  # B,4,4
        Xb = (Xw[None] @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]).float()  # B,M,3
        z = Xb[..., 2]
        Kb = Ks[lo:hi].float()
        zs = z.clamp_min(1e-6)
        u = Kb[:, None, 0, 0] * Xb[..., 0] / zs + Kb[:, None, 0, 1] * Xb[..., 1] / zs + Kb[:, None, 0, 2]
        v = Kb[:, None, 1, 1] * Xb[..., 1] / zs + Kb[:, None, 1, 2]
        ui, vi = torch.round(u).long(), torch.round(v).long()
        inside = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H) & (z > 1e-6)
        flat = (vi.clamp(0, H - 1) * W + ui.clamp(0, W - 1))  # B,M
        d_b = torch.gather(D[lo:hi].reshape(hi - lo, -1), 1, flat)  # B,M
        seen = inside & (d_b > 0) & ((z - d_b).abs() < tol * d_b)
        C[a, lo:hi] = (seen.sum(1).float() / max(int(valid_a.sum()), 1)).numpy()
        C[a, a] = 1.0
    return C


def select_pairs(C: np.ndarray, cfg: DatasetConfig, rng: np.random.Generator) -> list[tuple[int, int, float]]:
    """Draw up to ``cfg.pairs_per_video`` pairs (i, j), i != j, whose symmetric co-visibility
    min(C[i,j], C[j,i]) lies in [covis_min, covis_max].

    Candidates are drawn uniformly over co-visibility *bins* (then uniformly within a bin) so that
    wide-baseline pairs, which are rarer in a video, are not drowned by near neighbours. Both
    orders (i, j) and (j, i) are candidates: the model is not symmetric.
    """
    n = len(C)
    sym = np.minimum(C, C.T)
    cand = [(i, j) for i in range(n) for j in range(n) if i != j and cfg.covis_min <= sym[i, j] <= cfg.covis_max]
    if not cand:
        return []
    cov = np.array([sym[i, j] for i, j in cand])
    n_bins = 5
    edges = np.linspace(cfg.covis_min, cfg.covis_max + 1e-9, n_bins + 1)
    bins = np.clip(np.digitize(cov, edges) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    w = np.where(counts[bins] > 0, 1.0 / counts[bins], 0.0)
    w /= w.sum()
    k = min(cfg.pairs_per_video, len(cand))
    picks = rng.choice(len(cand), size=k, replace=False, p=w)
    return [(cand[p][0], cand[p][1], float(cov[p])) for p in sorted(picks)]


# --------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------


@dataclass
class VideoGT:
    """The parts of a video folder that pairs need."""

    images: np.ndarray  # N,H,W,3 uint8
    depth: np.ndarray  # N,H,W float32
    K: np.ndarray  # N,3,3
    c2w: np.ndarray  # N,4,4
    scene_seed: int


class ShardWriter:
    """Accumulates videos and their pairs; writes a shard when ``shard_size`` pairs are buffered."""

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.shards: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self._frames: dict[str, list[np.ndarray]] = {k: [] for k in ("images", "depth", "K", "c2w", "video", "frame", "scene_seed")}
        self._pairs: list[tuple[int, int]] = []
        self._covis: list[float] = []
        self._n_frames = 0

    def add(self, video_id: int, gt: VideoGT, pairs: list[tuple[int, int, float]]) -> None:
        used = sorted({i for i, _, _ in pairs} | {j for _, j, _ in pairs})
        row = {f: self._n_frames + r for r, f in enumerate(used)}
        self._frames["images"].append(gt.images[used])
        self._frames["depth"].append(gt.depth[used].astype(np.float32))
        self._frames["K"].append(gt.K[used].astype(np.float32))
        self._frames["c2w"].append(gt.c2w[used].astype(np.float64))
        self._frames["video"].append(np.full(len(used), video_id, np.int32))
        self._frames["frame"].append(np.asarray(used, np.int32))
        self._frames["scene_seed"].append(np.full(len(used), gt.scene_seed, np.int64))
        self._n_frames += len(used)
        for i, j, c in pairs:
            self._pairs.append((row[i], row[j]))
            self._covis.append(c)
        if len(self._pairs) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._pairs:
            return
        idx = len(self.shards)
        name = f"shard-{idx:05d}.npz"
        arrays = {k: np.concatenate(v) for k, v in self._frames.items()}
        arrays["pairs"] = np.asarray(self._pairs, np.int32)
        arrays["covis"] = np.asarray(self._covis, np.float32)
        tmp = self.out_dir / f".{name}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.rename(self.out_dir / name)
        self.shards.append({"file": name, "pairs": len(self._pairs), "frames": self._n_frames})
        self._reset()


def read_video_gt(video_dir: Path) -> VideoGT:
    """Load frames + GT of a rendered video folder (DESIGN.md format)."""
    from vibe3r.video_gen.video_io import read_video

    frames, K, c2w, depth, meta = read_video(video_dir)
    return VideoGT(images=frames, depth=depth, K=K, c2w=c2w, scene_seed=int(meta.get("scene_seed", -1)))


def build_dataset(cfg: Config, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Render ``cfg.dataset.n_videos`` videos from written prompts and write pair shards.

    Resumable: a video folder that is already complete is not rendered again. Returns the index.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from vibe3r.video_gen.prompts import write_prompts
    from vibe3r.video_gen.render import render_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    dc = cfg.dataset
    specs = write_prompts(
        cfg.prompts.task, dc.n_videos, seed=cfg.prompts.seed, lm_path=cfg.prompts.lm_path, max_frames=cfg.prompts.max_frames
    )
    writer = ShardWriter(out / "shards", dc.shard_size)
    rng = np.random.default_rng(dc.seed)
    videos = []
    with Progress(
        TextColumn("[bold]dataset"), BarColumn(), TextColumn("{task.completed}/{task.total} videos"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress,
    ) as bar:
        task = bar.add_task("render", total=len(specs))
        for k, spec in enumerate(specs):
            seed = dc.scene_seed_start + k
            vdir = out / "videos" / f"{k:05d}"
            if not (vdir / "meta.json").is_file():
                render_video(spec.prompt, seed, cfg, vdir, traj_seed=spec.seed)
            gt = read_video_gt(vdir)
            C = covisibility_matrix(gt.depth, gt.K, gt.c2w, dc.covis_tol, dc.max_gap, dc.covis_stride)
            pairs = select_pairs(C, dc, rng)
            writer.add(k, gt, pairs)
            videos.append({"dir": str(vdir.relative_to(out)), "prompt": spec.prompt, "scene_seed": seed, "pairs": len(pairs)})
            bar.advance(task)
    writer.flush()
    H, W = gt.images.shape[1:3]
    index = {
        "format_version": SHARD_FORMAT_VERSION,
        "height": int(H),
        "width": int(W),
        "n_pairs": sum(s["pairs"] for s in writer.shards),
        "shards": writer.shards,
        "videos": videos,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


def pair_item(shard: dict[str, np.ndarray], p: int) -> dict[str, torch.Tensor]:
    """Supervision for pair ``p`` of a loaded shard (see the module docstring for the keys)."""
    a, b = (int(x) for x in shard["pairs"][p])
    K1 = torch.from_numpy(shard["K"][a])
    K2 = torch.from_numpy(shard["K"][b])
    d1 = torch.from_numpy(shard["depth"][a])
    d2 = torch.from_numpy(shard["depth"][b])
    c1 = torch.from_numpy(shard["c2w"][a])
    c2 = torch.from_numpy(shard["c2w"][b])
    T21 = geometry.relative_pose(c1, c2)  # cam1 -> cam2, float64
    T12 = geometry.inv_pose(T21)
    pts11 = geometry.unproject_depth(d1, K1)  # H,W,3
    pts21 = geometry.transform_points(T12, geometry.unproject_depth(d2.double(), K2.double())).float()  # H,W,3
    img1 = torch.from_numpy(shard["images"][a]).permute(2, 0, 1).float() / 255
    img2 = torch.from_numpy(shard["images"][b]).permute(2, 0, 1).float() / 255
    return {
        "img1": img1, "img2": img2,  # 3,H,W
        "depth1": d1, "depth2": d2,  # H,W
        "pts11": pts11.float(), "pts21": pts21,  # H,W,3
        "valid1": d1 > 0, "valid2": d2 > 0,  # H,W
        "K1": K1, "K2": K2, "T21": T21.float(),
        "covis": torch.tensor(float(shard["covis"][p])),
        "video": torch.tensor(int(shard["video"][a])),
        "frame1": torch.tensor(int(shard["frame"][a])),
        "frame2": torch.tensor(int(shard["frame"][b])),
        "scene_seed": torch.tensor(int(shard["scene_seed"][a])),
    }


class PairShardDataset(IterableDataset):
    """Streams pairs from the shards of a dataset folder, one shard in memory per worker.

    Shuffling is two-level (shard order, then pairs within a shard), seeded by ``seed`` and the
    epoch (``set_epoch``) so a resumed run sees the same order. DataLoader workers split shards.
    """

    def __init__(self, root: str | Path, shuffle: bool = True, seed: int = 0) -> None:
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise InputError(f"not a vibe3r pair dataset (no index.json): {self.root}")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format_version") != SHARD_FORMAT_VERSION:
            raise InputError(f"pair dataset {self.root} has format {self.index.get('format_version')}, expected {SHARD_FORMAT_VERSION}")
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.index["n_pairs"])

    def load_shard(self, i: int) -> dict[str, np.ndarray]:
        with np.load(self.root / "shards" / self.index["shards"][i]["file"]) as z:
            return {k: z[k] for k in z.files}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.arange(len(self.index["shards"]))
        if self.shuffle:
            rng.shuffle(order)
        info = get_worker_info()
        if info is not None:
            order = order[info.id :: info.num_workers]
        for s in order:
            shard = self.load_shard(int(s))
            idx = np.arange(len(shard["pairs"]))
            if self.shuffle:
                np.random.default_rng([self.seed, self.epoch, int(s)]).shuffle(idx)
            for p in idx:
                yield pair_item(shard, int(p))
