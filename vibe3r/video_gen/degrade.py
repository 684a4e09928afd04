"""Phone-camera image formation on rendered linear radiance: exposure, vignetting, noise, tone curve, JPEG.

Degradations act on colour only; depth and poses stay exact. Order (as in a camera pipeline)::

    radiance --(auto-exposure · smooth drift)--> --(lens blur)--> sensor signal --(vignetting)--> --(shot + read noise)-->
    --(filmic tone curve, sRGB OETF)--> uint8 --(optional JPEG round trip)--> frames

Motion blur is not applied here but in the renderer, physically: colour samples are spread over
the exposure time, at poses interpolated by :func:`shutter_poses`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import roma
import torch

from vibe3r.config import DegradeConfig
from vibe3r.video_gen.textures import linear_to_srgb


def shutter_poses(c2w: np.ndarray, fraction: float, bins: int) -> np.ndarray:
    """Poses (N, bins, 4, 4) at the centres of ``bins`` equal time bins of each frame's exposure.

    Frame i is exposed over times ``[i - fraction/2, i + fraction/2]`` (in frame units, so
    ``fraction`` = exposure time / frame interval = blur length as a fraction of the inter-frame
    motion). A time τ between frames j and j+1 gets the geodesic interpolation
    ``R = R_j exp(a log(R_jᵀ R_{j+1}))``, ``t = (1-a) t_j + a t_{j+1}`` with ``a = τ - j``; times
    outside the video are clamped to its ends. ``bins = 1`` or ``fraction = 0`` gives the frame poses.
    """
    c2w = np.asarray(c2w, np.float64)
    N = len(c2w)
    if fraction <= 0 or bins <= 1 or N < 2:
        return np.repeat(c2w[:, None], max(bins, 1), 1)
    tau = np.arange(N)[:, None] + fraction * ((np.arange(bins)[None] + 0.5) / bins - 0.5)  # N,bins
    tau = np.clip(tau, 0, N - 1)
    j = np.minimum(np.floor(tau).astype(int), N - 2)
    a = tau - j
    Ra = torch.as_tensor(c2w[j, :3, :3])
    Rb = torch.as_tensor(c2w[j + 1, :3, :3])
    rel = roma.rotmat_to_rotvec(Ra.transpose(-1, -2) @ Rb)  # N,bins,3
    R = Ra @ roma.rotvec_to_rotmat(rel * torch.as_tensor(a)[..., None])
    out = np.repeat(np.eye(4)[None, None], N, 0).repeat(bins, 1)
    out[..., :3, :3] = R.numpy()
    out[..., :3, 3] = (1 - a[..., None]) * c2w[j, :3, 3] + a[..., None] * c2w[j + 1, :3, 3]
    return out


def blur_bins(c2w: np.ndarray, K: np.ndarray, fraction: float, step_px: float, max_bins: int) -> int:
    """Shutter time bins so that consecutive bins move the image by at most ~``step_px`` pixels.

    Image motion of frame i over its exposure is estimated as ``fraction · f · (θ_i + |Δt_i| / 1.5 m)``
    (rotation angle θ and translation Δt to the next frame; 1.5 m a typical indoor depth). Returns
    1 (no blur) up to ``max_bins``. The renderer spreads every pixel's samples over the bins
    (stratified in time), so the cost does not grow with the number of bins.
    """
    c2w = np.asarray(c2w, np.float64)
    if fraction <= 0 or len(c2w) < 2:
        return 1
    R = c2w[:, :3, :3]
    rel = np.einsum("nji,njk->nik", R[:-1], R[1:])
    theta = np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))
    trans = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1)
    f = float(np.max(np.asarray(K)[..., 0, 0]))
    px = fraction * f * (theta + trans / 1.5)
    return int(np.clip(math.ceil(float(px.max()) / step_px), 1, max_bins))


def luminance(x: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance of linear RGB (..., 3)."""
    return x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722


def _smooth_walk(rng: np.random.Generator, n: int, sigma_frames: float = 6.0) -> np.ndarray:
    """Zero-mean, unit-std smooth random sequence (Gaussian-filtered white noise)."""
    pad = int(4 * sigma_frames)
    w = rng.standard_normal(n + 2 * pad)
    k = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma_frames) ** 2)
    x = np.convolve(w, k / np.sqrt((k**2).sum()), mode="valid")[:n]
    return x


def exposure(hdr: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-frame exposure multipliers (N,).

    Auto-exposure: ``e_i = key / Lavg_i`` with ``Lavg`` the log-average luminance of the frame
    (Reinhard et al. 2002) ignoring the brightest 2% (windows, lamps), followed by an exponential
    lag ``log e'_i = log e'_{i-1} + (1 - ae_lag)(log e_i - log e'_{i-1})`` like a phone's AE. Then
    ``exposure_drift · w_i`` is added to the log-exposure, w a smooth unit-std random walk.
    """
    N = len(hdr)
    lum = luminance(hdr).reshape(N, -1)
    le = np.zeros(N)
    for i in range(N):
        lv = lum[i]
        cut = np.quantile(lv, 0.98)
        lv = lv[lv <= cut]
        lavg = float(np.exp(np.mean(np.log(lv + 1e-4)))) if len(lv) else 1.0
        le[i] = np.log(cfg.exposure_key / max(lavg, 1e-6))
    for i in range(1, N):
        le[i] = le[i - 1] + (1 - cfg.ae_lag) * (le[i] - le[i - 1])
    if cfg.exposure_drift > 0:
        le = le + cfg.exposure_drift * _smooth_walk(rng, N)
    return np.exp(le)


def vignette(H: int, W: int, strength: float) -> np.ndarray:
    """(H, W) gain ``1 - strength · (r / r_corner)²`` (1 at the centre, 1 - strength at the corners)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((u - (W - 1) / 2) ** 2 + (v - (H - 1) / 2) ** 2) / (((W - 1) / 2) ** 2 + ((H - 1) / 2) ** 2)
    return (1 - strength * r2).astype(np.float32)


def tone_map(x: np.ndarray) -> np.ndarray:
    """Filmic curve (ACES fit of Narkowicz 2015) then the sRGB OETF: linear signal -> display [0, 1]."""
    x = np.maximum(x, 0)
    y = (x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14)
    return linear_to_srgb(np.clip(y, 0, 1))


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode an (H, W, 3) uint8 RGB image as JPEG at ``quality`` and decode it."""
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def apply(hdr: np.ndarray, cfg: DegradeConfig, seed: int = 0) -> np.ndarray:
    """Linear radiance (N, H, W, 3) -> degraded uint8 sRGB frames (N, H, W, 3); deterministic in ``seed``.

    Noise is added to the exposed linear signal x: ``x + g · sqrt(shot_noise · x + noise_std²) · n``,
    n ~ N(0, 1) per pixel and channel (photon shot noise + read noise). The strengths are those of a
    ``noise_ref_width``-pixel-wide sensor image; a frame of width W < ref is that image downscaled,
    which averages (ref/W)² sensor pixels, so ``g = W / ref`` (g = 1 for W ≥ ref).
    """
    hdr = np.asarray(hdr, np.float32)
    N, H, W, _ = hdr.shape
    rng = np.random.default_rng([seed, 5])
    e = exposure(hdr, cfg, rng) if cfg.auto_exposure else np.exp(cfg.exposure_drift * _smooth_walk(rng, N))
    x = hdr * e[:, None, None, None].astype(np.float32)
    if cfg.lens_blur > 0:  # optics: a Gaussian point-spread function before the sensor
        x = np.stack([cv2.GaussianBlur(f, (0, 0), cfg.lens_blur, borderType=cv2.BORDER_REFLECT) for f in x])
    if cfg.vignetting > 0:
        x = x * vignette(H, W, cfg.vignetting)[None, :, :, None]
    out = np.empty((N, H, W, 3), np.uint8)
    for i in range(N):
        xi = x[i]
        if cfg.noise_std > 0 or cfg.shot_noise > 0:
            g = min(1.0, W / cfg.noise_ref_width)
            sd = g * np.sqrt(cfg.shot_noise * np.maximum(xi, 0) + cfg.noise_std**2)
            xi = xi + sd * np.random.default_rng([seed, 6, i]).standard_normal(xi.shape, dtype=np.float32)
        img = np.round(tone_map(xi) * 255).astype(np.uint8)
        if cfg.jpeg_quality > 0:
            img = jpeg_roundtrip(img, cfg.jpeg_quality)
        out[i] = img
    return out
