"""Scene graphs: which frame pairs of a video go through the pairwise network.

A graph is a sorted list of undirected pairs ``(i, j)`` with ``i < j`` (frame indices of the capture).
The pairwise inference runs each pair in one or both orders.

* ``complete``  every pair: n (n - 1) / 2 pairs. Best for a handful of frames (DUSt3R's default).
* ``swin``      sliding window + keyframes, for long videos: each frame with its next ``window``
  frames (local overlap, the chain the alignment walks along), and every ``keyframe_every``-th
  frame connected to every other keyframe (loop closures across the video). With
  ``keyframe_every = ceil(sqrt(n))`` (the default) there are about sqrt(n) keyframes and hence
  about n / 2 keyframe pairs, so the total is about n (window + 1/2): **linear in n**, never n².
  ``random_per_frame`` > 0 adds that many extra pairs per frame to uniformly drawn frames further
  than the window (seeded by ``seed``), which strengthens the graph for a fixed linear budget.
* ``auto``      complete for at most ``complete_max`` frames, swin otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from vibe3r.errors import InputError

GRAPHS = ("auto", "complete", "swin")


def complete_graph(n: int) -> list[tuple[int, int]]:
    """All n (n - 1) / 2 pairs (i, j), i < j."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def default_keyframe_every(n: int, window: int) -> int:
    """ceil(sqrt(n)), at least window + 1 (keyframes closer than the window add nothing)."""
    return max(window + 1, math.ceil(math.sqrt(max(n, 1))))


def swin_graph(n: int, window: int = 3, keyframe_every: int | None = None, random_per_frame: int = 0,
               seed: int = 0) -> list[tuple[int, int]]:
    """Sliding window + keyframes (+ optional seeded random long-range pairs); see the module docstring.

    Pair count <= n * window + k (k - 1) / 2 + n * random_per_frame with k = ceil(n / keyframe_every)
    keyframes; with the default ``keyframe_every`` that is about n (window + 1/2 + random_per_frame).
    """
    if window < 1:
        raise InputError(f"graph window must be >= 1, got {window}")
    every = default_keyframe_every(n, window) if keyframe_every is None else keyframe_every
    if every < 1:
        raise InputError(f"keyframe_every must be >= 1, got {every}")
    pairs = {(i, j) for i in range(n) for j in range(i + 1, min(n, i + window + 1))}
    keys = list(range(0, n, every))
    if n - 1 not in keys and n > 1:
        keys.append(n - 1)  # the last frame closes the loop with the first
    pairs |= {(a, b) for ai, a in enumerate(keys) for b in keys[ai + 1 :]}
    if random_per_frame > 0 and n > window + 1:
        rng = np.random.default_rng(seed)
        for i in range(n):
            far = np.array([j for j in range(n) if abs(j - i) > window])
            if len(far) == 0:
                continue
            for j in rng.choice(far, size=min(random_per_frame, len(far)), replace=False):
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def make_graph(n: int, kind: str = "auto", *, window: int = 3, keyframe_every: int | None = None,
               random_per_frame: int = 0, complete_max: int = 10, seed: int = 0) -> list[tuple[int, int]]:
    """The scene graph of ``n`` frames: ``kind`` is one of ``GRAPHS`` (see the module docstring)."""
    if kind not in GRAPHS:
        raise InputError(f"unknown scene graph {kind!r}; valid: {', '.join(GRAPHS)}")
    if n < 2:
        raise InputError(f"a reconstruction needs at least 2 frames, got {n}")
    if kind == "complete" or (kind == "auto" and n <= complete_max):
        return complete_graph(n)
    return swin_graph(n, window, keyframe_every, random_per_frame, seed)


def is_connected(n: int, pairs: list[tuple[int, int]]) -> bool:
    """Whether the pairs connect all n frames (union-find)."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs:
        parent[find(i)] = find(j)
    return len({find(i) for i in range(n)}) == 1
