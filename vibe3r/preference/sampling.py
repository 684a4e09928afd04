"""From a real capture to scored samples: choose pairs, draw n reconstructions of each with the policy,
score them with the self-supervised rewards.

The model sees frames resized so the longer side is ``size`` (its training resolution); the epipolar
reward uses the capture's full-resolution frames. Intrinsics come from the capture when it knows them
(7-Scenes, TUM, rendered videos); a phone video without them gets the focal estimated from the model's
own pointmaps (``recon.inference.estimate_focal``) — never from ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vibe3r.captures import Capture
from vibe3r.errors import InputError
from vibe3r.preference.rewards import Classical, PairContext, RewardConfig, classical_pose, draw_rewards, score_samples
from vibe3r.recon.policy import MatchPolicy, PairInput, PairSample


def choose_pairs(n_frames: int, n_pairs: int, min_gap: int, max_gap: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n_pairs`` distinct frame pairs (i, j), i < j, with ``min_gap <= j - i <= max_gap``, drawn
    uniformly with a seeded generator (sorted, so the list is stable)."""
    if n_frames < 2 or min_gap < 1 or max_gap < min_gap:
        raise InputError(f"cannot choose pairs from {n_frames} frames with gaps {min_gap}..{max_gap}")
    cand = [(i, j) for i in range(n_frames) for j in range(i + min_gap, min(n_frames, i + max_gap + 1))]
    if not cand:
        raise InputError(f"no pair of {n_frames} frames is {min_gap}..{max_gap} frames apart")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(cand), size=min(n_pairs, len(cand)), replace=False)
    return sorted(cand[k] for k in pick)


@dataclass
class ScoredPair:
    """One pair of a capture with its samples and their rewards."""

    i: int
    j: int
    ctx: PairContext
    samples: list[PairSample]
    rewards: list[dict]


class CaptureSampler:
    """Draws and scores reconstructions of pairs of one capture.

    ``small`` is the capture at the model's resolution, ``full`` the same frames at full resolution
    (None: the epipolar term is skipped). ``cycle``: add the rotation-cycle reward through the middle
    frame k = (i + j) // 2 (two more mode forward passes per pair). ``poses`` ({frame: cam2world}, e.g. the
    capture's structure from motion, ``preference.sfm.capture_poses``): the capture's global alignment, which
    the ``alignment`` reward term compares every sample with (pairs with an unregistered frame go without it).
    """

    def __init__(self, policy: MatchPolicy, small: Capture, full: Capture | None = None,
                 reward_cfg: RewardConfig | None = None, cycle: bool = True,
                 poses: dict[int, np.ndarray] | None = None) -> None:
        if small.K is None:
            raise InputError(f"{small.name}: no intrinsics; estimate them first (recon run writes cameras.json)")
        if full is not None and len(full.images) != len(small.images):
            raise InputError("the full-resolution capture must hold the same frames as the small one")
        self.policy = policy
        self.small = small
        self.full = full
        self.cfg = reward_cfg or RewardConfig()
        self.cycle = cycle
        self.poses = poses
        self._mode_cache: dict[tuple[int, int], np.ndarray | None] = {}
        self._classical: dict[tuple[int, int], Classical] = {}

    def pair_input(self, i: int, j: int) -> PairInput:
        c = self.small
        return PairInput.from_uint8(c.images[i], c.images[j], c.K[i], c.K[j], self.policy.patch)

    @torch.no_grad()
    def mode_pose(self, i: int, j: int) -> np.ndarray | None:
        """The model's deterministic relative pose camera i → camera j (cached)."""
        if (i, j) not in self._mode_cache:
            self._mode_cache[(i, j)] = self.policy.sample(self.pair_input(i, j), 0, include_mode=True)[0].T21
        return self._mode_cache[(i, j)]

    def classical(self, i: int, j: int) -> Classical:
        """The classical full-resolution estimate of pair (i, j) (``rewards.classical_pose``; cached)."""
        if self.full is None or self.full.K is None:
            raise InputError(f"{self.small.name}: the classical pose needs the full-resolution frames and their intrinsics")
        if (i, j) not in self._classical:  # SIFT at full resolution: once per pair, not once per scoring
            self._classical[(i, j)] = classical_pose(self.full.images[i], self.full.images[j], self.full.K[i], self.full.K[j], self.cfg)
        return self._classical[(i, j)]

    @torch.no_grad()
    def context(self, i: int, j: int, pair: PairInput | None = None, out: dict | None = None) -> PairContext:
        pair = pair or self.pair_input(i, j)
        if out is None:
            self.policy.model.eval()
            out = self.policy.forward(pair)
        ctx = PairContext(pair=pair, out=out)
        if self.full is not None and self.full.K is not None:
            ctx.full1, ctx.full2 = self.full.images[i], self.full.images[j]
            ctx.K_full1, ctx.K_full2 = self.full.K[i], self.full.K[j]
            ctx.classical = self.classical(i, j)
        if self.cycle and j - i >= 2:
            k = (i + j) // 2
            Tki, Tjk = self.mode_pose(i, k), self.mode_pose(k, j)
            if Tki is not None and Tjk is not None:
                ctx.cycle_R = [Tjk[:3, :3] @ Tki[:3, :3]]
        if self.poses is not None:
            from vibe3r.preference.sfm import relative_pose

            ctx.align_T = relative_pose(self.poses, i, j)
        return ctx

    @torch.no_grad()
    def sample_pair(self, i: int, j: int, n: int, seed: int, include_mode: bool = True) -> ScoredPair:
        """``n`` samples (seeds ``seed…seed+n-1``, plus the mode first) of pair (i, j), scored."""
        pair = self.pair_input(i, j)
        self.policy.model.eval()
        out = self.policy.forward(pair)
        samples = self.policy.sample(pair, n, seed=seed, include_mode=include_mode, out=out)
        ctx = self.context(i, j, pair, out)
        return ScoredPair(i, j, ctx, samples, score_samples(ctx, samples, self.cfg))


def set_focal(cap: Capture, fx: float, fy: float) -> Capture:
    """Replace a capture's focal lengths (given in pixels of its native frames) in place, rescaled to the
    loaded size — e.g. 7-Scenes' colour camera (518, 532) instead of its documented depth camera (585)."""
    if cap.K is None:
        raise InputError(f"{cap.name}: no intrinsics to correct")
    s = cap.images.shape[2] / cap.meta["native_size"][1]
    cap.K[:, 0, 0], cap.K[:, 1, 1] = fx * s, fy * s
    return cap


def grpo_pairs(samplers: dict[str, CaptureSampler], rows: list[tuple[str, int, int]]):  # noqa: ANN201
    """GRPO's inputs for pairs ``(capture spec, i, j)``: the ``PairInput`` list, the reward function
    ``reward_fn(pair, samples) -> (n,)`` scoring samples of those very pair objects with the rewards, and
    the per-draw reward function ``draw_reward_fn(pair, samples) -> (n, N1 + N2) | None``
    (``rewards.draw_rewards``)."""
    pairs, keys = [], {}
    for spec, i, j in rows:
        pair = samplers[spec].pair_input(i, j)
        keys[id(pair)] = (spec, i, j)
        pairs.append(pair)

    last: dict[tuple[int, int], PairContext] = {}  # reward_fn's context, handed once to draw_reward_fn on the same group

    def reward_fn(pair: PairInput, samples: list[PairSample]) -> np.ndarray:
        spec, i, j = keys[id(pair)]
        last.clear()
        ctx = last[(id(pair), id(samples))] = samplers[spec].context(i, j, pair)
        return np.array([r["combined"] for r in score_samples(ctx, samples, samplers[spec].cfg)])

    def draw_reward_fn(pair: PairInput, samples: list[PairSample]) -> np.ndarray | None:
        spec, i, j = keys[id(pair)]
        ctx = last.pop((id(pair), id(samples)), None) or samplers[spec].context(i, j, pair)
        return draw_rewards(ctx, samples, samplers[spec].cfg)

    return pairs, reward_fn, draw_reward_fn


def exact_items(samplers: dict[str, CaptureSampler], rows: list[tuple[str, int, int]], min_inliers: int = 0,
                poses: dict[str, dict[int, np.ndarray]] | None = None) -> list:
    """The exact trainer's inputs (``preference.exact.ExactItem``) for pairs ``(capture spec, i, j)``: the
    pair as the policy sees it and its teacher pose — the classical full-resolution two-view pose, or with
    ``poses`` ({spec: {frame: cam2world}}, e.g. ``preference.sfm.capture_poses``) the relative pose of the
    capture's structure from motion. Pairs without a teacher pose (no classical pose, fewer than
    ``min_inliers`` inliers, a frame the SfM did not register) are left out."""
    from vibe3r.preference.exact import ExactItem
    from vibe3r.preference.sfm import relative_pose

    items = []
    for spec, i, j in rows:
        if poses is not None:
            T21 = relative_pose(poses.get(spec, {}), i, j)
        else:
            c = samplers[spec].classical(i, j)
            T21 = c.T21 if c.T21 is not None and int(c.inliers.sum()) >= min_inliers else None
        if T21 is not None:
            items.append(ExactItem(samplers[spec].pair_input(i, j), T21))
    return items
