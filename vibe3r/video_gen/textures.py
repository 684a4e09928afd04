"""Textures with natural-image statistics, image textures cut from photos, mip-mapped sampling.

Why not checkers and smooth noise: a feature matcher (SIFT) finds almost nothing on repeating
patterns and band-limited noise, while real rooms are full of occlusion edges at every scale. The
generators here reproduce the statistics that matter:

* **dead leaves** (Matheron; Lee, Mumford & Huang 2001): opaque random shapes whose radius has the
  density ``p(r) ∝ r^-3`` between ``r_min`` and ``r_max``, stacked back to front. This is the model
  that explains the ``1/f²`` power spectrum and the scale invariance of natural images, and it
  produces sharp corners and T-junctions where SIFT finds keypoints.
* **1/f (pink) noise**: white noise filtered in the Fourier domain with amplitude ``|f|^-alpha``
  (``alpha = 1`` for natural images), used for mottling, dirt and turbulence.
* **materials**: wood grain and marble veins (phase-turbulence), planks, tiles and bricks with
  grout and per-tile variation, fabric weaves, carpet, paint, cardboard, printed posters (dead
  leaves + text-like strokes), an outdoor view for windows.
* **image textures** cut from user photos or real capture frames: random crops, scaled and colour
  jittered (``WorldConfig.texture_dirs``).

All procedural textures are *tileable* (periodic in both axes), so a surface can repeat them with
world-scale texel density; image crops use mirror addressing instead. Textures are stored in
linear RGB (the renderer shades in linear light) as one :class:`TextureBank` with a mip pyramid
(2x2 box filter) and sampled trilinearly at a level of detail chosen from the pixel footprint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from vibe3r.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------
# colour helpers
# --------------------------------------------------------------------------------------------


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB OETF inverse (IEC 61966-2-1) on values in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB OETF on linear values in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def hsv_colour(h: np.ndarray | float, s: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """sRGB colours (..., 3) in [0, 1] from hue in [0, 1) (wraps), saturation and value (vectorised)."""
    h, s, v = np.broadcast_arrays(np.asarray(h, np.float64) % 1.0, np.clip(s, 0, 1), np.clip(v, 0, 1))
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def _jitter(c: np.ndarray, rng: np.random.Generator, amount: float, n: int | None = None) -> np.ndarray:
    shape = (3,) if n is None else (n, 3)
    return np.clip(c * (1 + amount * rng.standard_normal(shape)), 0, 1)


# Palettes in sRGB: what rooms are made of.
WOODS = np.array([[0.62, 0.43, 0.26], [0.75, 0.58, 0.38], [0.45, 0.29, 0.17], [0.83, 0.70, 0.50],
                  [0.36, 0.22, 0.13], [0.70, 0.50, 0.32]])
PAINTS = np.array([[0.93, 0.92, 0.88], [0.90, 0.88, 0.82], [0.85, 0.88, 0.90], [0.88, 0.84, 0.76],
                   [0.78, 0.82, 0.76], [0.94, 0.90, 0.84], [0.80, 0.78, 0.76], [0.72, 0.80, 0.86]])
NEUTRALS = np.array([[0.92, 0.92, 0.90], [0.15, 0.15, 0.16], [0.55, 0.55, 0.56], [0.35, 0.36, 0.38],
                     [0.80, 0.78, 0.74], [0.25, 0.22, 0.20]])


def accent_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) saturated object colours (sRGB) as on books, toys, cups, upholstery."""
    return hsv_colour(rng.random(n), rng.uniform(0.35, 0.95, n), rng.uniform(0.35, 0.95, n))


def room_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) muted colours typical of furniture and fabrics (sRGB)."""
    r = rng.random(n)[:, None]
    neutral = _jitter(NEUTRALS[rng.integers(len(NEUTRALS), size=n)], rng, 0.08, n)
    woods = _jitter(WOODS[rng.integers(len(WOODS), size=n)], rng, 0.1, n)
    other = hsv_colour(rng.random(n), rng.uniform(0.15, 0.6, n), rng.uniform(0.3, 0.85, n))
    return np.where(r < 0.4, neutral, np.where(r < 0.7, woods, other))


def accent_colour(rng: np.random.Generator) -> np.ndarray:
    """One saturated object colour (3,), sRGB."""
    return accent_colours(rng, 1)[0]


def room_colour(rng: np.random.Generator) -> np.ndarray:
    """One muted furniture colour (3,), sRGB."""
    return room_colours(rng, 1)[0]


# --------------------------------------------------------------------------------------------
# noise primitives (all periodic on an R x R grid)
# --------------------------------------------------------------------------------------------


def _freq(R: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.fft.fftfreq(R) * R  # cycles per tile
    return np.meshgrid(f, f, indexing="xy")  # fx varies along columns, fy along rows


def pink_noise(
    R: int, rng: np.random.Generator, alpha: float = 1.0, aniso: float = 1.0, fmin: float = 1.0, fmax: float | None = None
) -> np.ndarray:
    """Tileable noise (R, R) with amplitude spectrum ``|f|^-alpha``, zero mean, unit std.

    ``aniso > 1`` stretches features along x (wood grain, brushed metal): the radial frequency is
    ``sqrt((aniso * fx)^2 + fy^2)``. Frequencies below ``fmin`` / above ``fmax`` cycles per tile are cut.
    """
    fx, fy = _freq(R)
    f = np.sqrt((aniso * fx) ** 2 + fy**2)
    amp = np.where(f >= fmin, 1.0 / np.maximum(f, 1e-6) ** alpha, 0.0)
    if fmax is not None:
        amp *= f <= fmax
    spec = amp * (rng.standard_normal((R, R)) + 1j * rng.standard_normal((R, R)))
    x = np.fft.ifft2(spec).real
    x -= x.mean()
    return (x / max(x.std(), 1e-8)).astype(np.float32)


def blur_wrap(x: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur of an (R, R) field (keeps a texture tileable)."""
    fx, fy = _freq(x.shape[0])
    g = np.exp(-2 * (np.pi * sigma / x.shape[0]) ** 2 * (fx**2 + fy**2))
    return np.fft.ifft2(np.fft.fft2(x) * g).real.astype(np.float32)


def dead_leaves(
    R: int,
    rng: np.random.Generator,
    colours: Callable[[np.random.Generator, int], np.ndarray],
    r_min: float = 2.0,
    r_max: float | None = None,
    coverage: float = 4.0,
    shapes: tuple[str, ...] = ("disk", "rect", "ellipse"),
    shade: float = 0.08,
) -> np.ndarray:
    """Tileable dead-leaves image (R, R, 3) in sRGB [0, 1].

    Shapes with radius ``r ~ p(r) ∝ r^-3`` on ``[r_min, r_max]`` (texels) are drawn back to front
    until their total area is ``coverage`` times the canvas (the canvas is then covered with
    probability ~1 - e^-coverage; the rest shows the first colour). Drawn at 2x and box-filtered
    down: anti-aliased edges. Shapes crossing the border are also drawn at their periodic copies.
    Leaf i gets the flat colour ``colours(rng, n)[i]``; ``shade`` adds 1/f shading inside leaves.
    """
    S = 2 * R
    r_max = R / 3 if r_max is None else r_max
    a, b = (2 * r_min) ** -2, (2 * r_max) ** -2
    mean_area = math.pi * 2 / (a - b) * math.log(r_max / r_min)
    n = int(coverage * S * S / mean_area) + 1
    img = np.zeros((S, S, 3), np.float32)
    img[:] = colours(rng, 1)[0]
    radii = (a - rng.random(n) * (a - b)) ** -0.5  # in 2x-canvas pixels
    xs, ys = rng.random(n) * S, rng.random(n) * S
    kinds = rng.integers(len(shapes), size=n)
    angles = rng.random(n) * 180
    aspect = rng.uniform(0.3, 1.0, n)
    cols = [tuple(c) for c in colours(rng, n).astype(float).tolist()]
    F = 4  # cv2 fixed-point coordinates with 2 fractional bits
    for i in range(n):
        r, c, kind = float(radii[i]), cols[i], shapes[kinds[i]]
        x, y = float(xs[i]), float(ys[i])
        reach = 1.5 * r
        cx = [x] + ([x + S] if x < reach else []) + ([x - S] if x > S - reach else [])
        cy = [y] + ([y + S] if y < reach else []) + ([y - S] if y > S - reach else [])
        for xx in cx:
            for yy in cy:
                if kind == "disk":
                    cv2.circle(img, (int(xx * F), int(yy * F)), max(int(r * F), 1), c, -1, cv2.LINE_8, 2)
                elif kind == "ellipse":
                    axes = (max(int(r * F), 1), max(int(r * aspect[i] * F), 1))
                    cv2.ellipse(img, (int(xx * F), int(yy * F)), axes, float(angles[i]), 0, 360, c, -1, cv2.LINE_8, 2)
                else:
                    box = cv2.boxPoints(((xx, yy), (2 * r, 2 * r * float(aspect[i])), float(angles[i])))
                    cv2.fillConvexPoly(img, (box * F).astype(np.int32), c, cv2.LINE_8, 2)
    out = cv2.resize(img, (R, R), interpolation=cv2.INTER_AREA)
    if shade > 0:
        out = out * (1 + shade * pink_noise(R, rng, 1.0, fmin=2))[..., None]
    return np.clip(out, 0, 1)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def _mix(c0: np.ndarray, c1: np.ndarray, t: np.ndarray) -> np.ndarray:
    return c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]


def _grid(R: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:R, 0:R].astype(np.float32)
    return x, y


# --------------------------------------------------------------------------------------------
# material generators: (R, rng, **kw) -> (R, R, 3) sRGB in [0, 1], tileable
# --------------------------------------------------------------------------------------------


def wood(R: int, rng: np.random.Generator, base: np.ndarray | None = None) -> np.ndarray:
    """Wood grain: growth rings as phase-modulated stripes along x, fine anisotropic fibres."""
    base = _jitter(WOODS[rng.integers(len(WOODS))], rng, 0.08) if base is None else base
    dark = base * rng.uniform(0.55, 0.75)
    x, y = _grid(R)
    turb = pink_noise(R, rng, 1.6, aniso=4.0)
    k = int(rng.integers(3, 9))  # rings across the tile (integer: periodic)
    phase = k * y / R + 0.35 * turb + 0.15 * pink_noise(R, rng, 2.0, aniso=8.0)
    ring = np.abs(np.sin(np.pi * phase)) ** rng.uniform(2, 6)
    fibres = pink_noise(R, rng, 0.8, aniso=12.0, fmin=4)
    t = np.clip(0.75 * ring + 0.08 * fibres, 0, 1)
    img = _mix(base, dark, t) * (1 + 0.06 * pink_noise(R, rng, 1.2))[..., None]
    return np.clip(img, 0, 1)


def planks(R: int, rng: np.random.Generator) -> np.ndarray:
    """Floor boards: rows of wood planks with staggered joints, per-plank tone, dark seams."""
    rows = int(rng.choice([4, 6, 8]))
    edges = [r * R // rows for r in range(rows + 1)]
    grain = wood(R, rng)
    img = np.empty_like(grain)
    x, y = _grid(R)
    for r in range(rows):
        y0, y1 = edges[r], edges[r + 1]
        shift = int(rng.integers(R))
        band = np.roll(grain, (int(rng.integers(R)), shift), axis=(0, 1))[y0:y1]
        joints = int(rng.choice([1, 2]))
        tones = 1 + 0.12 * rng.standard_normal(joints)
        seg = ((x[y0:y1] + shift) % R) * joints // R
        img[y0:y1] = band * tones[seg.astype(int)][..., None]
        jx = (np.arange(joints) * R // joints + shift) % R
        img[y0:y1, jx] *= 0.45
        img[y0] *= 0.4  # seam between rows
    return np.clip(img, 0, 1)


def marble(R: int, rng: np.random.Generator) -> np.ndarray:
    """Marble / stone: veins from |sin| of a turbulent phase, soft 1/f clouding."""
    base = _jitter(np.array(PAINTS[rng.integers(len(PAINTS))]), rng, 0.05)
    vein = base * rng.uniform(0.3, 0.6)
    x, y = _grid(R)
    k = int(rng.integers(1, 4))
    phase = k * (x + y) / R + 0.8 * pink_noise(R, rng, 1.5)
    v = 1 - np.abs(np.sin(np.pi * phase)) ** 0.15
    img = _mix(base, vein, np.clip(v * 1.4, 0, 1)) * (1 + 0.05 * pink_noise(R, rng, 1.0))[..., None]
    return np.clip(img, 0, 1)


def tiles(R: int, rng: np.random.Generator, bricks: bool = False) -> np.ndarray:
    """Tiles or bricks: a grid with grout lines, per-tile colour variation and surface noise."""
    nx = int(rng.choice([2, 4])) if bricks else int(rng.choice([2, 3, 4, 6, 8]))
    ny = nx * 2 if bricks else nx
    if bricks:
        base = _jitter(np.array([0.62, 0.32, 0.22]) if rng.random() < 0.7 else np.array([0.8, 0.75, 0.65]), rng, 0.1)
        grout = np.array([0.75, 0.73, 0.68])
    else:
        base = room_colour(rng) if rng.random() < 0.5 else _jitter(PAINTS[rng.integers(len(PAINTS))], rng, 0.05)
        grout = base * rng.uniform(0.4, 0.8) if rng.random() < 0.5 else np.array([0.8, 0.8, 0.78])
    x, y = _grid(R)
    row = np.floor(y * ny / R).astype(int)
    xs = x + (row % 2) * (R / nx / 2 if bricks else 0)
    col = np.floor(xs * nx / R).astype(int) % nx
    # per-tile variation: mostly brightness, a little hue
    vary = 1 + (0.12 if bricks else 0.06) * rng.standard_normal((ny, nx, 1)) + 0.03 * rng.standard_normal((ny, nx, 3))
    img = base[None, None] * vary[row, col] * (1 + 0.05 * pink_noise(R, rng, 1.0, fmin=3))[..., None]
    gw = max(R / 128, 1.0) * rng.uniform(0.8, 2.0)
    fx = (xs * nx / R) % 1 * R / nx
    fy = (y * ny / R) % 1 * R / ny
    d = np.minimum(np.minimum(fx, R / nx - fx), np.minimum(fy, R / ny - fy))
    g = _smoothstep(gw * 0.5, gw * 1.2, d)
    img = img * g[..., None] + grout[None, None] * (1 - g[..., None])
    return np.clip(img, 0, 1)


def fabric(R: int, rng: np.random.Generator, base: np.ndarray | None = None) -> np.ndarray:
    """Woven fabric: over/under warp and weft threads, two yarn colours, 1/f mottling."""
    base = room_colour(rng) if base is None else base
    other = _jitter(base, rng, 0.25)
    n = int(rng.choice([32, 48, 64]))
    x, y = _grid(R)
    tx, ty = x * n / R, y * n / R
    ix, iy = np.floor(tx).astype(int), np.floor(ty).astype(int)
    over = ((ix + iy * int(rng.choice([1, 2]))) % 2) == 0
    prof_x = np.sin(np.pi * (tx % 1)) ** 0.7
    prof_y = np.sin(np.pi * (ty % 1)) ** 0.7
    lum = np.where(over, prof_y, prof_x) * 0.35 + 0.65
    t = np.where(over, 0.0, 1.0).astype(np.float32)
    img = _mix(base, other, t * 0.6) * lum[..., None] * (1 + 0.08 * pink_noise(R, rng, 1.0))[..., None]
    return np.clip(img, 0, 1)


def carpet(R: int, rng: np.random.Generator) -> np.ndarray:
    """Carpet: fine pile (blurred white noise) over 1/f mottling, sometimes a dead-leaves rug pattern."""
    base = room_colour(rng)
    pile = blur_wrap(rng.standard_normal((R, R)), 0.7)
    if rng.random() < 0.4:
        pattern = dead_leaves(R, rng, lambda g, n: _jitter(base, g, 0.25, n), r_min=3, r_max=R / 4, shade=0.0)
    else:
        pattern = np.broadcast_to(base, (R, R, 3))
    img = pattern * (1 + 0.12 * pile + 0.06 * pink_noise(R, rng, 1.0))[..., None]
    return np.clip(img, 0, 1)


def paint(R: int, rng: np.random.Generator, base: np.ndarray | None = None) -> np.ndarray:
    """Painted plaster: a flat colour with faint 1/f unevenness (walls, ceilings)."""
    base = _jitter(PAINTS[rng.integers(len(PAINTS))], rng, 0.04) if base is None else base
    img = base[None, None] * (1 + 0.035 * pink_noise(R, rng, 1.0) + 0.015 * pink_noise(R, rng, 0.3, fmin=8))[..., None]
    return np.clip(img, 0, 1)


def wallpaper(R: int, rng: np.random.Generator) -> np.ndarray:
    """Patterned wallpaper: low-contrast dead leaves or stripes with printed texture."""
    base = _jitter(PAINTS[rng.integers(len(PAINTS))], rng, 0.05)
    if rng.random() < 0.5:
        img = dead_leaves(R, rng, lambda g, n: _jitter(base, g, 0.12, n), r_min=2, r_max=R / 6, shade=0.03)
    else:
        x, _ = _grid(R)
        k = int(rng.choice([4, 8, 16]))
        stripe = (np.sin(2 * np.pi * k * x / R) > rng.uniform(-0.5, 0.5)).astype(np.float32)
        stripe = blur_wrap(stripe, 0.8)
        img = _mix(base, _jitter(base, rng, 0.2), stripe) * (1 + 0.03 * pink_noise(R, rng, 1.0))[..., None]
    return np.clip(img, 0, 1)


def cardboard(R: int, rng: np.random.Generator) -> np.ndarray:
    """Cardboard / kraft paper with fibres, stains and occasional printed marks."""
    base = _jitter(np.array([0.68, 0.52, 0.34]), rng, 0.08)
    img = base[None, None] * (1 + 0.06 * pink_noise(R, rng, 1.2) + 0.03 * pink_noise(R, rng, 0.5, aniso=3, fmin=8))[..., None]
    if rng.random() < 0.6:
        img = _text_block(img, rng, np.array([0.15, 0.12, 0.1]), rows=int(rng.integers(2, 6)))
    return np.clip(img, 0, 1)


def metal(R: int, rng: np.random.Generator) -> np.ndarray:
    """Brushed metal: grey with strongly anisotropic fine noise."""
    base = np.full(3, rng.uniform(0.45, 0.8))
    img = base[None, None] * (1 + 0.08 * pink_noise(R, rng, 0.7, aniso=20, fmin=2))[..., None]
    return np.clip(img, 0, 1)


def plastic(R: int, rng: np.random.Generator, base: np.ndarray | None = None) -> np.ndarray:
    """Painted / plastic surface: a flat colour with slight unevenness and specks."""
    base = accent_colour(rng) if base is None else base
    specks = (rng.random((R, R)) < 0.002).astype(np.float32)
    img = base[None, None] * (1 + 0.04 * pink_noise(R, rng, 1.0) - 0.3 * specks)[..., None]
    return np.clip(img, 0, 1)


def foliage(R: int, rng: np.random.Generator) -> np.ndarray:
    """Leaves of a house plant: small dead leaves in greens."""
    hue = rng.uniform(0.22, 0.4)
    return dead_leaves(R, rng, lambda g, n: hsv_colour(hue + 0.05 * g.standard_normal(n), g.uniform(0.4, 0.9, n),
                                                       g.uniform(0.15, 0.7, n)), r_min=2.0, r_max=R / 10,
                       shapes=("ellipse",), shade=0.1)


def _text_block(img: np.ndarray, rng: np.random.Generator, ink: np.ndarray, rows: int,
                x0: float | None = None, y0: float | None = None, width: float | None = None, size: float | None = None
                ) -> np.ndarray:
    """Draw text-like strokes: rows of 'words' made of short vertical/curved strokes."""
    R = img.shape[0]
    out = cv2.resize(img, (2 * R, 2 * R), interpolation=cv2.INTER_LINEAR)
    size = rng.uniform(R / 40, R / 14) if size is None else size
    x0 = rng.uniform(0.05, 0.4) * R if x0 is None else x0
    width = rng.uniform(0.3, 0.9) * (R - x0) if width is None else width
    y = rng.uniform(0.05, 0.6) * R if y0 is None else y0
    c = tuple(float(v) for v in ink)
    th = max(int(round(size * 0.18 * 2)), 1)
    for _ in range(rows):
        if y + size > R:
            break
        x = x0
        while x < x0 + width:
            wl = int(rng.integers(2, 9))
            for _k in range(wl):
                if x >= x0 + width:
                    break
                kind = rng.integers(4)
                px, py, s2 = int(2 * x), int(2 * y), int(2 * size)
                if kind == 0:
                    cv2.line(out, (px, py), (px, py + s2), c, th, cv2.LINE_AA)
                elif kind == 1:
                    cv2.ellipse(out, (px + s2 // 4, py + s2 // 2), (max(s2 // 4, 1), s2 // 2 // 2 + 1), 0, 0, 360, c, th, cv2.LINE_AA)
                elif kind == 2:
                    cv2.line(out, (px, py + s2), (px + s2 // 2, py), c, th, cv2.LINE_AA)
                    cv2.line(out, (px + s2 // 2, py), (px + s2 // 2, py + s2), c, th, cv2.LINE_AA)
                else:
                    cv2.ellipse(out, (px + s2 // 4, py + s2 // 2), (max(s2 // 4, 1), s2 // 2), 0, 90, 360, c, th, cv2.LINE_AA)
                x += size * rng.uniform(0.45, 0.7)
            x += size * 0.7
        y += size * rng.uniform(1.5, 2.0)
    return cv2.resize(out, (R, R), interpolation=cv2.INTER_AREA)


def poster(R: int, rng: np.random.Generator) -> np.ndarray:
    """A printed poster, picture or book cover: dead-leaves artwork, title and text lines, margin.

    Not tileable: meant to be mapped once onto a face.
    """
    kind = rng.random()
    if kind < 0.45:  # artwork: saturated dead leaves
        hue0 = rng.random()
        art = dead_leaves(R, rng, lambda g, n: hsv_colour(hue0 + g.normal(0, 0.15, n), g.uniform(0.2, 0.9, n), g.uniform(0.1, 0.95, n)),
                          r_min=1.5, r_max=R / 3)
    elif kind < 0.75:  # photo-like: large soft shapes over a gradient
        hue0 = rng.random()
        art = dead_leaves(R, rng, lambda g, n: hsv_colour(hue0 + g.normal(0, 0.08, n), g.uniform(0.1, 0.6, n), g.uniform(0.2, 0.9, n)),
                          r_min=2.0, r_max=R / 2, coverage=4.0, shade=0.15)
    else:  # a text page / notice
        art = np.broadcast_to(_jitter(np.array([0.95, 0.94, 0.9]), rng, 0.03), (R, R, 3)).copy()
    ink = np.array([0.05, 0.05, 0.06]) if rng.random() < 0.7 else accent_colour(rng) * 0.5
    if kind >= 0.75 or rng.random() < 0.5:
        art = _text_block(art, rng, ink, rows=int(rng.integers(2, 12)))
    if rng.random() < 0.6:  # title
        art = _text_block(art, rng, ink, rows=1, size=rng.uniform(R / 14, R / 8), y0=R * 0.05, x0=R * 0.08, width=R * 0.7)
    m = int(R * rng.uniform(0.0, 0.08))
    if m > 0:  # paper margin
        margin = _jitter(np.array([0.95, 0.95, 0.93]), rng, 0.03)
        art = art.copy()
        art[:m], art[-m:], art[:, :m], art[:, -m:] = margin, margin, margin, margin
    return np.clip(art, 0, 1)


def keys(R: int, rng: np.random.Generator) -> np.ndarray:
    """A keyboard / control panel: a grid of light keys with glyphs on a dark body (face-mapped)."""
    body = np.full(3, rng.uniform(0.05, 0.25))
    key = np.full(3, rng.uniform(0.6, 0.9)) if rng.random() < 0.5 else np.full(3, rng.uniform(0.1, 0.2))
    ink = np.full(3, 0.95) if key[0] < 0.4 else np.full(3, 0.1)
    img = np.broadcast_to(body, (R, R, 3)).copy()
    rows, cols = 5, 14
    kh, kw = R / (rows + 0.5), R / (cols + 0.5)
    for r in range(rows):
        off = 0.25 * kw * (r % 3)
        for c in range(cols):
            x0, y0 = int(0.25 * kw + c * kw + off), int(0.25 * kh + r * kh)
            x1, y1 = int(x0 + 0.85 * kw), int(y0 + 0.85 * kh)
            if x1 >= R:
                continue
            img[y0:y1, x0:x1] = key * (1 + 0.05 * rng.standard_normal())
            if rng.random() < 0.8:
                g = rng.integers(3)
                cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
                sz = max(int(0.2 * kw), 1)
                if g == 0:
                    cv2.line(img, (cx - sz, cy), (cx + sz, cy - sz), ink.tolist(), max(R // 128, 1), cv2.LINE_AA)
                elif g == 1:
                    cv2.circle(img, (cx, cy), sz, ink.tolist(), max(R // 128, 1), cv2.LINE_AA)
                else:
                    cv2.line(img, (cx, cy - sz), (cx, cy + sz), ink.tolist(), max(R // 128, 1), cv2.LINE_AA)
    return np.clip(img, 0, 1)


def rug(R: int, rng: np.random.Generator) -> np.ndarray:
    """A patterned rug: saturated dead-leaves field inside bordered bands, with pile texture (face-mapped)."""
    hue = rng.random()
    field = dead_leaves(R, rng, lambda g, n: hsv_colour(hue + g.normal(0, 0.12, n), g.uniform(0.3, 0.8, n), g.uniform(0.2, 0.8, n)),
                        r_min=2.0, r_max=R / 6, shade=0.05)
    band = hsv_colour(hue + 0.5, rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.6))
    img = field.copy()
    for k, w in enumerate((0.04, 0.07, 0.1)):
        m = int(R * w)
        if k % 2 == 0:
            img[m:m + 3], img[-m - 3:-m], img[:, m:m + 3], img[:, -m - 3:-m] = band, band, band, band
    pile = 1 + 0.08 * blur_wrap(rng.standard_normal((R, R)), 0.6)
    return np.clip(img * pile[..., None], 0, 1)


def outdoor(R: int, rng: np.random.Generator) -> np.ndarray:
    """What a window shows: sky on top, trees / buildings as dead leaves near the horizon."""
    x, y = _grid(R)
    sky = _mix(np.array([0.55, 0.7, 0.95]), np.array([0.85, 0.9, 0.98]), y / R) * (1 + 0.05 * pink_noise(R, rng, 1.5))[..., None]
    ground = dead_leaves(R, rng, lambda g, n: hsv_colour(g.uniform(0.1, 0.4, n), g.uniform(0.2, 0.7, n), g.uniform(0.1, 0.7, n)),
                         r_min=2.0, r_max=R / 5)
    horizon = R * rng.uniform(0.35, 0.6) + R * 0.08 * pink_noise(R, rng, 2.0)[0][None, :]
    t = _smoothstep(-1.5, 1.5, y - horizon)
    return np.clip(sky * (1 - t[..., None]) + ground * t[..., None], 0, 1)


# --------------------------------------------------------------------------------------------
# image textures from photos / capture frames
# --------------------------------------------------------------------------------------------


def find_images(paths: list[str]) -> list[Path]:
    """Image files in the given folders (recursively) or files, sorted; raises on a missing path."""
    out: list[Path] = []
    for p in paths:
        q = Path(p).expanduser()
        if q.is_dir():
            out += sorted(f for f in q.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES:
            out.append(q)
        else:
            raise InputError(f"texture source not found or not an image: {p}")
    return out


@lru_cache(maxsize=256)
def _load_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read texture image: {path}")
    if img.ndim == 2:  # 16-bit or grey images
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.dtype != np.uint8:
        img = (img / max(float(img.max()), 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(img[..., ::-1])  # RGB


def image_crop(R: int, rng: np.random.Generator, files: list[Path]) -> np.ndarray:
    """A random crop of a random photo, resized to R x R (area filter), colour jittered (sRGB [0,1])."""
    img = _load_image(str(files[int(rng.integers(len(files)))]))
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.25, 0.8))
    side = max(side, 8)
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[y0:y0 + side, x0:x0 + side].astype(np.float32) / 255.0
    crop = cv2.resize(crop, (R, R), interpolation=cv2.INTER_AREA if side > R else cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = np.exp(rng.normal(0, 0.15, 3) + rng.normal(0, 0.2))
    mean = crop.mean((0, 1), keepdims=True)
    contrast = np.exp(rng.normal(0, 0.15))
    grey = crop.mean(-1, keepdims=True)
    sat = np.exp(rng.normal(0, 0.2))
    crop = grey + (crop - grey) * sat
    crop = (mean + (crop - mean) * contrast) * gain
    return np.clip(crop, 0, 1)


# --------------------------------------------------------------------------------------------
# texture bank: stacked textures + mip pyramid + trilinear sampling
# --------------------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "wood": wood, "planks": planks, "marble": marble, "tiles": tiles, "bricks": lambda R, rng: tiles(R, rng, bricks=True),
    "fabric": fabric, "carpet": carpet, "paint": paint, "wallpaper": wallpaper, "cardboard": cardboard, "metal": metal,
    "plastic": plastic, "foliage": foliage, "poster": poster, "outdoor": outdoor, "keys": keys, "rug": rug,
    "dead_leaves": lambda R, rng: dead_leaves(R, rng, room_colours),
}


@dataclass
class TextureBank:
    """All textures of a scene: ``levels[l]`` is (T, R>>l, R>>l, 3) linear RGB float32.

    ``mirror[t]`` selects mirror addressing (image crops, prints) instead of wrap-around
    repetition. For sampling, all levels are also kept, padded by one texel, in one flat
    (Σ_l T (R>>l + 2)², 3) array so a batch of lookups at mixed levels is one gather.
    """

    levels: list[np.ndarray]
    mirror: np.ndarray
    names: list[str]
    flat: np.ndarray = field(init=False, repr=False)
    base: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # every level padded by one texel on each side (wrap-around for repeating textures, edge
        # copies for mirrored ones) so bilinear lookups never need index wrapping
        padded = []
        for lv in self.levels:
            wrap = np.pad(lv, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
            edge = np.pad(lv, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
            padded.append(np.where(self.mirror[:, None, None, None], edge, wrap).reshape(-1, 3))
        self.flat = np.concatenate(padded).astype(np.float32)
        sizes = [len(p_) for p_ in padded]
        self.base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    @classmethod
    def build(cls, images_srgb: list[np.ndarray], mirror: list[bool], names: list[str]) -> TextureBank:
        """Stack (R, R, 3) sRGB textures, convert to linear and build the mip pyramid (2x2 box)."""
        base = srgb_to_linear(np.stack(images_srgb).astype(np.float32))
        levels = [base]
        while levels[-1].shape[1] > 1:
            a = levels[-1]
            levels.append(0.25 * (a[:, 0::2, 0::2] + a[:, 1::2, 0::2] + a[:, 0::2, 1::2] + a[:, 1::2, 1::2]))
        return cls(levels, np.asarray(mirror, bool), list(names))

    @property
    def res(self) -> int:
        return self.levels[0].shape[1]

    def _bilinear(self, level: np.ndarray, tex: np.ndarray, u: np.ndarray, v: np.ndarray, mir: np.ndarray) -> np.ndarray:
        """Bilinear lookups (M,3) at per-point integer mip ``level`` (M,), level-0 texel coords (u, v).

        Repeating textures: the coordinate is reduced modulo the level size S. Mirrored ones: it is
        folded into [0, S] (``S - |t mod 2S - S|``), which is mirror addressing. Either way the two
        bilinear taps fall inside the padded level.
        """
        S = (self.res >> level).astype(np.int64)
        Sf = S.astype(np.float32)
        scale = Sf / np.float32(self.res)

        def coord(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t = t * scale
            t = np.where(mir, Sf - np.abs(np.mod(t, 2 * Sf) - Sf), np.mod(t, Sf)) - 0.5  # texel centres at +0.5
            i0 = np.floor(t)
            return i0.astype(np.int64) + 1, (t - i0)[:, None]  # +1: padding

        x0, fx = coord(u)
        y0, fy = coord(v)
        P = S + 2
        b = self.base[level] + tex * P * P + y0 * P + x0
        f = self.flat
        c00, c01 = f[b], f[b + 1]
        c10, c11 = f[b + P], f[b + P + 1]
        return (c00 * (1 - fx) + c01 * fx) * (1 - fy) + (c10 * (1 - fx) + c11 * fx) * fy

    def sample(self, tex: np.ndarray, u: np.ndarray, v: np.ndarray, lod: np.ndarray) -> np.ndarray:
        """Trilinear sample (M, 3) of textures ``tex`` (M,) at level-0 texel coords (u, v) (M,).

        ``lod = log2(texels per pixel footprint)``: level ``floor(lod)`` and the next are sampled
        bilinearly and blended by ``frac(lod)`` (standard mip-mapping; Williams 1983).
        """
        L = len(self.levels) - 1
        tex = np.asarray(tex, np.int64)
        u = np.asarray(u, np.float32)
        v = np.asarray(v, np.float32)
        lod = np.clip(np.asarray(lod, np.float32), 0, L)
        l0 = np.minimum(np.floor(lod).astype(np.int64), L)
        f = (lod - l0).astype(np.float32)[:, None]
        mir = self.mirror[tex]
        a = self._bilinear(l0, tex, u, v, mir)
        b = self._bilinear(np.minimum(l0 + 1, L), tex, u, v, mir)
        return a * (1 - f) + b * f
