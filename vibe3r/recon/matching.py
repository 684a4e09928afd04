"""Dense descriptor matching: mutual nearest neighbours (chunked, batched torch), coarse-to-fine.

Descriptors are L2-normalised maps (h, w, D) at stride s of an (H, W) image; cell (x, y) is centred
on pixel ((x + 0.5) s − 0.5, (y + 0.5) s − 0.5) of the full image (pixel centres at integers).

Mutual nearest neighbours (MASt3R's ``fast_reciprocal_NNs`` without its iterations): i ↔ j is kept
when j = argmax_k ⟨a_i, b_k⟩ and i = argmax_k ⟨a_k, b_j⟩. The similarity matrix is never held
in full: rows of a (then of b) are processed in chunks. With ``dtype=torch.bfloat16`` the
nearest neighbours are found on bf16 similarities (1.6-1.9x faster at 256 px on this CPU, where the
search is memory-bound) and the kept pairs' similarities are recomputed in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vibe3r.errors import InputError


def cell_centres(h: int, w: int, H: int, W: int) -> torch.Tensor:
    """Full-resolution pixel coordinates (h*w, 2) of the centres of an (h, w) grid covering (H, W)."""
    sy, sx = H / h, W / w
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([(x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5], -1).reshape(-1, 2)


def _row_max(a: torch.Tensor, b: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """max_k <a_i, b_k> and its argmax for every row of a, in row chunks (reductions along the
    contiguous axis are an order of magnitude faster on CPU than column reductions)."""
    vals, idx = [], []
    for s in range(0, len(a), chunk):
        v, i = (a[s : s + chunk] @ b.T).max(1)
        vals.append(v)
        idx.append(i)
    return torch.cat(vals), torch.cat(idx)


SIM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sim_dtype(name: str) -> torch.dtype:
    """The similarity dtype called ``name`` ("fp32" or "bf16")."""
    if name not in SIM_DTYPES:
        raise InputError(f"unknown matching precision {name!r}; valid: {', '.join(SIM_DTYPES)}")
    return SIM_DTYPES[name]


@torch.no_grad()
def mutual_nn(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024, dtype: torch.dtype = torch.float32
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours between descriptor sets a (N, D) and b (M, D).

    ``dtype`` is the precision of the neighbour search (bf16: near-ties may pick the other
    neighbour); the returned similarities are always fp32.
    Returns ``(ia (K,), ib (K,), sim (K,))``: indices of mutual pairs and their cosine similarity.
    """
    N, M = len(a), len(b)
    if N == 0 or M == 0:
        e = torch.zeros(0, dtype=torch.long)
        return e, e, torch.zeros(0)
    la, lb = a.to(dtype), b.to(dtype)
    best_ab, nn_ab = _row_max(la, lb, chunk)
    _, nn_ba = _row_max(lb, la, chunk)
    ia = torch.arange(N)
    keep = nn_ba[nn_ab] == ia
    ia, ib = ia[keep], nn_ab[keep]
    sims = best_ab[keep] if dtype == torch.float32 else (a[ia].float() * b[ib].float()).sum(-1)
    return ia, ib, sims


def subpixel_refine(desc1: torch.Tensor, desc2: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """Sub-cell positions in view 2 for matches c1 -> c2 (integer cells (K, 2) as (x, y)).

    Per axis, a parabola through the similarities of desc1[c1] with desc2 at c2 - 1, c2, c2 + 1 puts
    the peak at offset (s₋ − s₊) / (2 (s₋ − 2 s₀ + s₊)), clamped to ±0.5 cell; at the border or
    when the centre is not a maximum the offset is 0. Returns float cells (K, 2).
    """
    h, w, _ = desc2.shape
    a = desc1[c1[:, 1], c1[:, 0]].float()  # K,D
    out = c2.float().clone()
    for axis, n in ((0, w), (1, h)):
        lo, hi = c2.clone(), c2.clone()
        lo[:, axis] = (c2[:, axis] - 1).clamp(0, n - 1)
        hi[:, axis] = (c2[:, axis] + 1).clamp(0, n - 1)
        s0 = (a * desc2[c2[:, 1], c2[:, 0]]).sum(-1)
        sm = (a * desc2[lo[:, 1], lo[:, 0]]).sum(-1)
        sp = (a * desc2[hi[:, 1], hi[:, 0]]).sum(-1)
        den = sm - 2 * s0 + sp
        ok = (den < -1e-6) & (c2[:, axis] > 0) & (c2[:, axis] < n - 1)
        off = torch.where(ok, (sm - sp) / (2 * den.where(ok, torch.ones_like(den))), torch.zeros_like(den))
        out[:, axis] += off.clamp(-0.5, 0.5)
    return out


@torch.no_grad()
def match_descriptors(desc1: torch.Tensor, desc2: torch.Tensor, image_hw: tuple[int, int], min_sim: float = -1.0,
                      coarse_factor: int = 1, window: int = 1, subpixel: bool = False, precision: str = "fp32"
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches between two descriptor maps (h, w, D) -> pixel coordinates kp1 (K, 2), kp2 (K, 2) in the
    full (H, W) image, and their similarities (K,).

    ``coarse_factor`` f > 1 matches coarse-to-fine: mutual NN on f x f average-pooled descriptors, then
    each coarse match (c1, c2) is refined by a mutual NN between the f² fine cells of c1 and the fine
    cells of the (2 window + 1)² coarse cells around c2 — full-resolution matches at the cost of
    (h w / f²)² + h w (2 window + 1)² similarities instead of (h w)².
    ``subpixel`` moves each view-2 match to the parabolic peak of its 3x3 similarities
    (``subpixel_refine``): descriptors at stride s otherwise quantise matches to s pixels.
    ``precision`` "bf16" runs the dense (or coarse) neighbour search on bf16 similarities (``mutual_nn``).
    """
    H, W = image_hw
    h, w, D = desc1.shape
    if coarse_factor <= 1:
        i1, i2, sims = mutual_nn(desc1.reshape(-1, D).float(), desc2.reshape(-1, D).float(), dtype=sim_dtype(precision))
        k1 = torch.stack([i1 % w, i1 // w], -1)  # K,2 cells (x, y)
        k2 = torch.stack([i2 % w, i2 // w], -1)
    else:
        k1, k2, sims = _coarse_to_fine(desc1, desc2, coarse_factor, window, sim_dtype(precision))
    keep = sims >= min_sim
    k1, k2, sims = k1[keep], k2[keep], sims[keep]
    k2f = subpixel_refine(desc1, desc2, k1, k2) if subpixel and len(k1) else k2.float()
    sy, sx = H / h, W / w
    to_px = lambda c: torch.stack([(c[:, 0] + 0.5) * sx - 0.5, (c[:, 1] + 0.5) * sy - 0.5], -1)  # noqa: E731
    return to_px(k1.float()), to_px(k2f), sims


def _coarse_to_fine(desc1: torch.Tensor, desc2: torch.Tensor, f: int, window: int, dtype: torch.dtype = torch.float32
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coarse-to-fine mutual NN (see ``match_descriptors``) -> cells k1 (K,2), k2 (K,2) as (x, y), sims (K,).

    All coarse matches are refined in one batched product: for match k, A_k holds the f² fine
    descriptors of its view-1 coarse cell and B_k the ((2 window + 1) f)² fine descriptors around its
    view-2 coarse cell (positions outside the image masked); mutual NN is taken inside each (A_k, B_k).
    """
    h, w, D = desc1.shape
    if h % f or w % f:
        raise ValueError(f"descriptor map {h}x{w} is not divisible by coarse_factor {f}")
    pool = lambda d: F.normalize(F.avg_pool2d(d.permute(2, 0, 1)[None].float(), f)[0].permute(1, 2, 0), dim=-1)  # noqa: E731
    c1, c2 = pool(desc1), pool(desc2)  # h/f,w/f,D
    wc = c1.shape[1]
    ci1, ci2, _ = mutual_nn(c1.reshape(-1, D), c2.reshape(-1, D), dtype=dtype)
    if len(ci1) == 0:
        e = torch.zeros(0, 2, dtype=torch.long)
        return e, e, torch.zeros(0)
    offs = torch.arange(f)
    # view-1 fine cells of each coarse match: K, f*f
    ya, xa = ci1 // wc, ci1 % wc
    ay = (ya[:, None] * f + offs[None]).repeat_interleave(f, 1)  # K,f*f (row-major over the f x f block)
    ax = (xa[:, None] * f + offs[None]).repeat(1, f)
    # view-2 fine cells of the window around each coarse match: K, n*n with n = (2 window + 1) f
    n = (2 * window + 1) * f
    wo = torch.arange(n) - window * f
    yb, xb = ci2 // wc, ci2 % wc
    by = (yb[:, None] * f + wo[None]).repeat_interleave(n, 1)  # K,n*n
    bx = (xb[:, None] * f + wo[None]).repeat(1, n)
    inside = (by >= 0) & (by < h) & (bx >= 0) & (bx < w)
    A = desc1.float()[ay, ax]  # K,f*f,D
    B = desc2.float()[by.clamp(0, h - 1), bx.clamp(0, w - 1)]  # K,n*n,D
    sim = torch.einsum("kad,kbd->kab", A, B).masked_fill(~inside[:, None, :], -float("inf"))  # K,f*f,n*n
    best_b = sim.argmax(2)  # K,f*f
    best_a = sim.argmax(1)  # K,n*n
    mutual = torch.gather(best_a, 1, best_b) == torch.arange(f * f)[None]  # K,f*f
    k_idx, a_idx = mutual.nonzero(as_tuple=True)
    b_idx = best_b[k_idx, a_idx]
    sims = sim[k_idx, a_idx, b_idx]
    kp1 = torch.stack([ax[k_idx, a_idx], ay[k_idx, a_idx]], -1)
    kp2 = torch.stack([bx[k_idx, b_idx], by[k_idx, b_idx]], -1)
    # a fine cell of view 2 may be claimed by two neighbouring coarse matches: keep the most similar
    order = torch.argsort(sims, descending=True)
    key = (kp2[:, 1] * w + kp2[:, 0])[order]
    srt, perm = torch.sort(key, stable=True)
    dup = torch.zeros(len(order), dtype=torch.bool)
    dup[1:] = srt[1:] == srt[:-1]
    first = torch.ones(len(order), dtype=torch.bool)
    first[perm[dup]] = False
    keep = order[first]
    return kp1[keep], kp2[keep], sims[keep]
