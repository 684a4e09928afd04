"""Ray-cast renderer for procedural scenes, and the prompt -> video pipeline (:func:`render_video`).

Image formation, per frame (all in linear light, OpenCV camera, ``c2w`` camera-to-world):

* **depth**: one ray through each pixel *centre* ``(u, v)`` with direction ``R K^-1 [u, v, 1]^T``
  (z-normalised in the camera frame), so open3d's ``t_hit`` *is* the z-depth. Depth is never averaged
  across samples or across the shutter; a miss is 0.
* **colour**: ``s x s`` stratified sub-pixel samples per pixel (``RenderConfig.supersample``) at
  fixed cell centres (``jitter=False``, default: a static scene renders without frame-to-frame
  sampling noise, like a sensor) or jittered; pixels whose samples disagree (edges, shadow
  boundaries) get ``a x a`` more (``adaptive_supersample``). With motion blur each of a pixel's
  samples takes its own stratum of the exposure and the interpolated pose of that time
  (``degrade.shutter_poses``): colour integrates over the exposure like a global shutter.
* **shading** of a hit at point p with normal n (facing the ray), albedo ``ρ`` from the material's
  mip-mapped texture (level of detail from the sample footprint ``z / (f s)`` projected on the surface):

      L = ρ · Σ_k E_k V_k max(n·l_k, 0) + k_s Σ_k E_k V_k (n·h_k)^m (m+8)/8 + ρ · A · (0.85 + 0.15 n_z) · (1 - a·O)

  with ``E_k = I_k c_k P_k / (d_k² + ε)`` from disc area lights with emission profile ``P_k``
  (mostly downwards, :class:`~vibe3r.video_gen.world.Light`), ``V_k`` the visibility averaged over
  ``shadow_samples`` points of the disc (soft shadows), ``A`` the ambient (bounce) irradiance,
  ``O`` the occluded fraction of ``ao_samples`` short cosine-weighted hemisphere rays (ambient
  occlusion) and ``a`` its strength; light and AO directions form a lattice over a pixel's
  samples (no noise without jitter). Emissive surfaces return ``emission · ρ``.

The result is a linear HDR radiance image; :mod:`vibe3r.video_gen.degrade` exposes, tone-maps and
degrades it like a phone camera.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d

from vibe3r.config import Config, RenderConfig
from vibe3r.video_gen.world import CYLINDER, FLAT, SPHERE, Scene

GENERATOR_NAME = "vibe3r-sim"
GENERATOR_VERSION = "1.0"


# --------------------------------------------------------------------------------------------
# rays
# --------------------------------------------------------------------------------------------


def subpixel_offsets(H: int, W: int, s: int, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
    """(H, W, s*s, 2) stratified sub-pixel offsets in [-0.5, 0.5)² (pixel centre at 0).

    ``jitter=True``: a uniform random point in each of the s x s cells; ``False``: the cell centres
    (the same pattern in every pixel and frame, like a sensor's fixed pixel footprint). s=1 -> centre.
    """
    if s == 1:
        return np.zeros((H, W, 1, 2), np.float32)
    gy, gx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    cells = np.stack([gx.ravel(), gy.ravel()], -1).astype(np.float32)  # S,2
    if not jitter:
        return np.broadcast_to((cells + 0.5) / s - 0.5, (H, W, s * s, 2)).astype(np.float32)
    jit = rng.random((H, W, s * s, 2), dtype=np.float32)
    return (cells + jit) / s - 0.5


def time_strata(n_pix: int, S: int, T: int, rng: np.random.Generator, jitter: bool, pix: np.ndarray) -> np.ndarray:
    """Shutter time bin (n_pix, S) of each of a pixel's S samples, one time stratum per sample.

    Sample k of pixel p takes stratum ``π_p(k)`` of the S equal strata of the exposure and the
    bin of T containing a point in it: a random permutation and point (``jitter``) or the fixed
    dither ``(k + p) mod S`` at the stratum centre (``pix`` (n_pix,) pixel indices).
    """
    if jitter:
        perm = np.argsort(rng.random((n_pix, S)), -1)
        u = rng.random((n_pix, S))
    else:
        perm = (np.arange(S)[None] + pix[:, None] * 3) % S
        u = np.full((n_pix, S), 0.5)
    return np.minimum(((perm + u) * T / S).astype(np.int64), T - 1)


def pixel_centre_rays(K: np.ndarray, c2w: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Origins and z-normalised world directions (H, W, 3) of pixel centres (float64 maths)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    Kinv = np.linalg.inv(K)
    d_cam = np.stack([u, v, np.ones_like(u)], -1) @ Kinv.T  # z = 1
    d = d_cam @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], d.shape), d


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.sqrt(_dot(x, x))[..., None], 1e-12)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (..., 3) arrays."""
    return np.einsum("...i,...i->...", a, b)


# --------------------------------------------------------------------------------------------
# shading
# --------------------------------------------------------------------------------------------


def _uv(c: np.ndarray, axis: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planar projection along local ``axis`` (0/1/2) of texture coords c (M,3) -> (u, v) in repeats.

    Oriented so that a face seen from outside reads left-to-right and top-to-bottom
    (image rows go down with world z on vertical faces).
    """
    pos = sign > 0
    u = np.where(axis == 0, np.where(pos, c[:, 1], 1 - c[:, 1]),
                 np.where(axis == 1, np.where(pos, 1 - c[:, 0], c[:, 0]), c[:, 0]))
    v = np.where(axis == 2, np.where(pos, 1 - c[:, 1], c[:, 1]), 1 - c[:, 2])
    return u, v


def _albedo(scene: Scene, g: np.ndarray, p: np.ndarray, n: np.ndarray, foot: np.ndarray, lod_bias: float = 0.0) -> np.ndarray:
    """Texture-mapped albedo (M,3) of hits on geometries g at world points p with normals n.

    ``foot`` is the world-space footprint (m) of one sample on the surface; the mip level is
    ``log2(foot · texels per metre) + lod_bias``. Flat parts use a planar
    projection along the dominant local axis of the normal; curved parts (spheres, cylinders) blend
    the three projections with weights ``|n_k|^4`` (triplanar mapping).
    """
    A = scene.arrays
    bank = scene.textures
    R = bank.res
    mat = A["geo_mat"][g]
    tex = A["mat_tex"][mat]
    Rw = A["geo_R"][g]  # M,3,3
    pl = np.einsum("mij,mj->mi", Rw, p) + A["geo_t"][g]
    nl = np.einsum("mij,mj->mi", Rw, n)
    scale = A["geo_scale"][g]
    c = (pl + A["geo_offset"][g]) / scale
    an = np.abs(nl)
    curved = A["geo_normal"][g] != FLAT
    dom = np.argmax(an, -1)
    out = np.zeros((len(g), 3), np.float32)
    wsum = np.zeros((len(g), 1), np.float32)
    w4 = an**4
    w4 /= w4.sum(-1, keepdims=True)
    for axis in range(3):
        w = np.where(curved, w4[:, axis], (dom == axis).astype(np.float32))
        m = w > 0.02
        if not m.any():
            continue
        idx = np.flatnonzero(m)
        u, v = _uv(c[idx], np.full(len(idx), axis), np.sign(nl[idx, axis]))
        others = [k for k in range(3) if k != axis]
        dens = R / np.sqrt(scale[idx, others[0]] * scale[idx, others[1]])  # texels per metre
        lod = np.log2(np.maximum(foot[idx] * dens, 1e-6)) + lod_bias
        out[idx] += w[idx, None] * bank.sample(tex[idx], u * R, v * R, lod)
        wsum[idx] += w[idx, None]
    out /= np.maximum(wsum, 1e-6)
    # non-periodic grime at an incommensurate scale (detail > 0)
    det = A["mat_detail"][mat]
    dm = det > 0
    if dm.any():
        idx = np.flatnonzero(dm)
        gs = 2.718 * np.sqrt(scale[idx, 0] * scale[idx, 1])
        cg = (pl[idx] + 0.37 * A["geo_offset"][g[idx]]) / gs[:, None]
        sgn = np.sign(np.take_along_axis(nl[idx], dom[idx, None], 1)[:, 0])
        u, v = _uv(cg, dom[idx], sgn)
        lod = np.log2(np.maximum(foot[idx] * R / gs, 1e-6))
        grime = bank.sample(np.full(len(idx), scene.grime_tex), u * R, v * R, lod)[:, 0]
        out[idx] *= (1 + det[idx] * (2 * grime - 1))[:, None]  # grime is 0.5 + n/6 in linear units
    return out * A["mat_tint"][mat]


def _normals(scene: Scene, g: np.ndarray, p: np.ndarray, prim_n: np.ndarray) -> np.ndarray:
    """Shading normals: flat triangle normals; analytic ones for spheres and cylinder sides."""
    A = scene.arrays
    kind = A["geo_normal"][g]
    n = prim_n.astype(np.float32).copy()
    sph = kind == SPHERE
    if sph.any():
        i = np.flatnonzero(sph)
        centre = -np.einsum("mji,mj->mi", A["geo_R"][g[i]], A["geo_t"][g[i]])  # local origin in world
        n[i] = _unit(p[i] - centre)
    cyl = kind == CYLINDER
    if cyl.any():
        i = np.flatnonzero(cyl)
        Rw = A["geo_R"][g[i]]
        nl = np.einsum("mij,mj->mi", Rw, prim_n[i])
        side = np.abs(nl[:, 2]) < 0.9
        pl = np.einsum("mij,mj->mi", Rw, p[i]) + A["geo_t"][g[i]]
        radial = pl * np.array([1, 1, 0], np.float32)
        nw = np.einsum("mji,mj->mi", Rw, _unit(radial))
        n[i[side]] = nw[side]
    return n


def _strata(rng: np.random.Generator, M: int, k: int, q: np.ndarray | None = None, period: int = 1
            ) -> tuple[np.ndarray, np.ndarray]:
    """k stratified 2D samples in [0,1)² for each of M points: (u1, u2) each (M, k).

    Random (``q`` None): u1 in k strata, u2 on a golden-ratio lattice, both randomly shifted per
    point (Cranley-Patterson rotation). Deterministic (``q`` (M,) = the sample's index within its
    pixel, of ``period``): the pixel's ``period · k`` samples form one Fibonacci lattice
    ``((n + ½) / N, frac(n φ))``, n = q k + j, the same in every frame (no sampling noise).
    """
    j = np.arange(k, dtype=np.float32)[None]
    if q is not None:
        n = q.astype(np.float32)[:, None] * k + j
        N = np.float32(period * k)
        return ((n + 0.5) / N).astype(np.float32), ((n * np.float32(0.618034)) % 1.0).astype(np.float32)
    u1 = (j + rng.random((M, k), dtype=np.float32)) / k
    u2 = (j * np.float32(0.618034) + rng.random((M, 1), dtype=np.float32)) % 1.0
    return u1, u2.astype(np.float32)


def shade(scene: Scene, o: np.ndarray, d: np.ndarray, hit: dict[str, np.ndarray], focal: np.ndarray,
          rcfg: RenderConfig, rng: np.random.Generator, period: int = 1) -> np.ndarray:
    """Radiance (M,3) float32 of rays (o, d) (d z-normalised in its camera) given open3d hits.

    ``focal`` (M,) is f·s: the focal length in pixels times the supersampling factor, so that
    ``t / focal`` is the sample's footprint at z-depth t. Rays come in groups of ``period``
    samples per pixel; without ``rcfg.jitter`` the light-disc and ambient-occlusion directions
    follow a fixed lattice over each pixel's samples (:func:`_strata`).
    """
    M = len(o)
    out = np.zeros((M, 3), np.float32)
    t = hit["t_hit"]
    ok = np.isfinite(t)
    if not ok.any():
        return out
    i = np.flatnonzero(ok)
    g = hit["geometry_ids"][i].astype(np.int64)
    dd = d[i]
    p = o[i] + t[i, None] * dd
    du = _unit(dd)
    n = _normals(scene, g, p, hit["primitive_normals"][i])
    ndu = _dot(n, du)
    flip = ndu > 0
    n[flip] *= -1
    cos_v = np.abs(ndu)
    foot = t[i] / focal[i] / np.sqrt(np.maximum(cos_v, 0.05))
    A = scene.arrays
    mat = A["geo_mat"][g]
    albedo = _albedo(scene, g, p, n, foot, rcfg.texture_lod_bias)
    emit = A["mat_emit"][mat]
    lit = emit <= 0
    rad = np.zeros((len(i), 3), np.float32)
    rad[~lit] = albedo[~lit] * emit[~lit, None]
    li = np.flatnonzero(lit)
    if len(li):
        P, N, Alb, V = p[li], n[li], albedo[li], -du[li]
        spec = A["mat_spec"][mat[li]]
        shin = A["mat_shin"][mat[li]]
        origin = P + N * 2e-3
        acc = np.zeros((len(li), 3), np.float32)
        rays = []
        contrib = []
        M_ = len(li)
        q = None if rcfg.jitter else i[li] % period  # sample index within the pixel
        ks = rcfg.shadow_samples
        for L in scene.lights:
            Lv = L.pos[None].astype(np.float32) - origin
            dist2 = _dot(Lv, Lv)
            l = Lv / np.sqrt(dist2)[:, None]
            cos = np.maximum(_dot(N, l), 0)
            profile = 1 - L.down + L.down * np.maximum(l[:, 2], 0)  # l points up to the light: -ω_z = l_z
            E = (L.intensity * profile / (dist2 + 0.01) * cos)[:, None] * L.colour[None]
            h = _unit(l + V)
            sp = spec * (shin + 8) / 8 * np.maximum(_dot(N, h), 0) ** shin
            contrib.append(E * (Alb + sp[:, None]))
            # ks stratified points on the light's disc (soft shadows): visibility is their mean
            u1, u2 = _strata(rng, M_, ks, q, period)
            r = L.radius * np.sqrt(u1)
            phi = u2 * np.float32(2 * math.pi)
            lp = L.pos[None, None].astype(np.float32) + np.stack([r * np.cos(phi), r * np.sin(phi), np.zeros_like(r)], -1)
            rays.append(np.concatenate([np.broadcast_to(origin[:, None], lp.shape), (lp - origin[:, None]) * 0.999], -1))
        if rcfg.shadows:
            allr = np.concatenate([r_.reshape(-1, 6) for r_ in rays]).astype(np.float32)
            occl = scene.raycaster.test_occlusions(o3d.core.Tensor(allr), 0.0, 1.0).numpy()
            vis = 1 - occl.reshape(len(scene.lights), M_, ks).mean(-1)
        else:
            vis = np.ones((len(scene.lights), M_), np.float32)
        for k in range(len(scene.lights)):
            acc += contrib[k] * vis[k][:, None]
        amb = scene.ambient[None] * (0.85 + 0.15 * N[:, 2:3])
        if rcfg.ao_strength > 0 and rcfg.ao_samples > 0:
            # ka stratified cosine-weighted hemisphere directions around N (Malley's method)
            ka = rcfg.ao_samples
            u1, u2 = _strata(rng, M_, ka, q, period)
            phi = u2 * np.float32(2 * math.pi)
            tmp = np.where(np.abs(N[:, :1]) < 0.9, np.array([[1, 0, 0]], np.float32), np.array([[0, 1, 0]], np.float32))
            T1 = _unit(np.cross(N, tmp))
            T2 = np.cross(N, T1)
            rr = np.sqrt(u1)[..., None]
            dirn = (T1[:, None] * (rr * np.cos(phi)[..., None]) + T2[:, None] * (rr * np.sin(phi)[..., None])
                    + N[:, None] * np.sqrt(1 - u1)[..., None])
            ao_rays = np.concatenate([np.broadcast_to(origin[:, None], dirn.shape), dirn * rcfg.ao_distance], -1)
            occ = scene.raycaster.test_occlusions(o3d.core.Tensor(ao_rays.reshape(-1, 6).astype(np.float32)), 0.0, 1.0).numpy()
            amb = amb * (1 - rcfg.ao_strength * occ.reshape(M_, ka).mean(-1))[:, None]
        acc += Alb * amb
        rad[li] = acc
    out[i] = rad
    return out


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------


def render_frames(
    scene: Scene,
    c2w: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    rcfg: RenderConfig,
    seed: int = 0,
    shutter_c2w: np.ndarray | None = None,
    progress: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render frames: ``(hdr (N,H,W,3) float32 linear radiance, depth (N,H,W) float32 z-depth m)``.

    ``c2w`` (N,4,4) are the frames' poses (depth is cast from them), ``K`` (3,3) or (N,3,3).
    ``shutter_c2w`` (N,T,4,4) optional poses at the centres of T equal shutter time bins (motion
    blur); a pixel's samples are stratified over the exposure (:func:`time_strata`). With
    ``rcfg.jitter`` off (default) sub-pixel positions and time strata are a fixed pattern, so a
    static scene renders without frame-to-frame sampling noise. Frame i's random numbers come from ``default_rng([seed, i])``, so a frame
    renders identically whatever other frames are rendered with it. ``progress(n_done)`` is
    called after each chunk.
    """
    c2w = np.asarray(c2w, np.float64).reshape(-1, 4, 4)
    N, H, W = len(c2w), int(height), int(width)
    K = np.broadcast_to(np.asarray(K, np.float64), (N, 3, 3))
    s = rcfg.supersample
    S = s * s
    if shutter_c2w is None:
        shutter_c2w = c2w[:, None]
    shutter_c2w = np.asarray(shutter_c2w, np.float64)
    T = shutter_c2w.shape[1]
    hdr = np.zeros((N, H, W, 3), np.float32)
    depth = np.zeros((N, H, W), np.float32)
    per_frame = H * W * (S + 1)
    chunk = max(1, rcfg.max_rays // per_frame)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    for f0 in range(0, N, chunk):
        fr = range(f0, min(N, f0 + chunk))
        # ---- depth: pixel-centre rays from the frame pose
        o_list, d_list = [], []
        for f in fr:
            o_, d_ = pixel_centre_rays(K[f], c2w[f], H, W)
            o_list.append(o_.reshape(-1, 3))
            d_list.append(d_.reshape(-1, 3))
        res = scene.cast(np.concatenate(o_list), np.concatenate(d_list))
        t = res["t_hit"].reshape(len(fr), H, W)
        depth[f0:f0 + len(fr)] = np.where(np.isfinite(t), t, 0)
        # ---- colour: jittered sub-pixel samples over the shutter
        O, D, F, rngs = [], [], [], []
        for f in fr:
            rng = np.random.default_rng([seed, f])
            off = subpixel_offsets(H, W, s, rng, rcfg.jitter)  # H,W,S,2
            Kinv = np.linalg.inv(K[f])
            uu = u[..., None] + off[..., 0]
            vv = v[..., None] + off[..., 1]
            d_cam = np.stack([uu, vv, np.ones_like(uu)], -1) @ Kinv.T  # H,W,S,3
            if T == 1:
                Rb = shutter_c2w[f, 0, :3, :3]
                d_w = d_cam @ Rb.T
                o_w = np.broadcast_to(shutter_c2w[f, 0, :3, 3], d_w.shape)
            else:
                bins = time_strata(H * W, S, T, rng, rcfg.jitter, np.arange(H * W)).reshape(H, W, S)
                Rb = shutter_c2w[f, bins, :3, :3]  # H,W,S,3,3
                d_w = np.einsum("hwsij,hwsj->hwsi", Rb, d_cam)
                o_w = shutter_c2w[f, bins, :3, 3]
            O.append(o_w.reshape(-1, 3))
            D.append(d_w.reshape(-1, 3))
            F.append(np.full(H * W * S, K[f, 0, 0] * s, np.float32))
            rngs.append(rng)
        O_, D_ = np.concatenate(O).astype(np.float32), np.concatenate(D).astype(np.float32)
        hit = scene.cast(O_, D_)  # one cast for the whole chunk
        focal = np.concatenate(F)
        n_px = H * W * S

        def shade_frame(k: int) -> None:  # frame k's randomness is its own: independent of chunking/threads
            f = fr[k]
            sl = slice(k * n_px, (k + 1) * n_px)
            rad = shade(scene, O_[sl], D_[sl], {kk: vv_[sl] for kk, vv_ in hit.items()}, focal[sl], rcfg, rngs[k], S)
            rad = rad.reshape(H, W, S, 3)
            hdr[f] = rad.mean(2)
            if rcfg.adaptive_supersample > 1:
                hdr[f] = _refine(scene, hdr[f], rad, hit["geometry_ids"][sl].reshape(H, W, S), K[f], shutter_c2w[f], s,
                                 rcfg, rngs[k])

        if rcfg.threads > 1 and len(fr) > 1:
            with ThreadPoolExecutor(rcfg.threads) as ex:
                list(ex.map(shade_frame, range(len(fr))))
        else:
            for k in range(len(fr)):
                shade_frame(k)
        if progress is not None:
            progress(len(fr))
    return hdr, depth


def _refine(scene: Scene, img: np.ndarray, samples: np.ndarray, gids: np.ndarray, K: np.ndarray, shutter: np.ndarray,
            s: int, rcfg: RenderConfig, rng: np.random.Generator) -> np.ndarray:
    """Adaptive supersampling: pixels whose samples disagree get ``a x a`` more (``a`` =
    ``adaptive_supersample``), stratified in the pixel and spread over the shutter bins.

    A pixel is refined when its samples hit different geometries or their luminance range exceeds
    ``adaptive_threshold`` x (mean + 0.05). Edges, soft-shadow boundaries and motion-blurred
    contours are then integrated with ``s² + a²`` samples, so they do not flicker from frame to
    frame (a feature matcher sees stable edges).
    """
    H, W, S, _ = samples.shape
    lum = samples @ np.array([0.2126, 0.7152, 0.0722], np.float32)  # H,W,S
    mixed = (gids != gids[..., :1]).any(-1)
    contrast = (lum.max(-1) - lum.min(-1)) > rcfg.adaptive_threshold * (lum.mean(-1) + 0.05)
    ys, xs = np.nonzero(mixed | contrast)
    if len(ys) == 0:
        return img
    a = rcfg.adaptive_supersample
    E = a * a
    off = subpixel_offsets(1, len(ys), a, rng, rcfg.jitter)[0]  # P,E,2
    uu = xs[:, None] + off[..., 0]
    vv = ys[:, None] + off[..., 1]
    d_cam = np.stack([uu, vv, np.ones_like(uu)], -1) @ np.linalg.inv(K).T  # P,E,3
    T = shutter.shape[0]
    bins = time_strata(len(ys), E, T, rng, rcfg.jitter, ys * W + xs)
    Rb, tb = shutter[bins, :3, :3], shutter[bins, :3, 3]
    d_w = np.einsum("peij,pej->pei", Rb, d_cam).reshape(-1, 3).astype(np.float32)
    o_w = tb.reshape(-1, 3).astype(np.float32)
    hit = scene.cast(o_w, d_w)
    # many samples per pixel already: one shadow / AO ray per sample suffices
    lean = rcfg.model_copy(update={"ao_samples": min(rcfg.ao_samples, 1), "shadow_samples": 1})
    extra = shade(scene, o_w, d_w, hit, np.full(len(o_w), K[0, 0] * a, np.float32), lean, rng, E).reshape(len(ys), E, 3)
    out = img.copy()
    out[ys, xs] = (samples[ys, xs].sum(1) + extra.sum(1)) / (S + E)
    return out


# --------------------------------------------------------------------------------------------
# prompt -> video folder
# --------------------------------------------------------------------------------------------


def make_intrinsics(rcfg: RenderConfig, rng: np.random.Generator) -> np.ndarray:
    """K (3,3) float64 for a horizontal field of view drawn from ``rcfg.fov_deg``."""
    from vibe3r.geometry import intrinsics_from_fov

    fov = float(rng.uniform(*rcfg.fov_deg))
    return intrinsics_from_fov(fov, rcfg.width, rcfg.height).numpy()


def render_video(prompt: str, scene_seed: int, cfg: Config, out_dir: str | Path, traj_seed: int | None = None,
                 progress: Any = None) -> Path:
    """Render the motion ``prompt`` in the procedural room ``scene_seed`` into a video folder.

    World (``cfg.world``) -> path placement in free space (shrunk if needed) -> ray-cast frames
    (``cfg.render``) -> phone degradations (``cfg.render.degrade``) -> ``out_dir`` written
    atomically in the DESIGN.md format. ``scene_seed`` alone decides the room; ``traj_seed``
    (default: ``scene_seed``) and ``cfg.seed`` drive the random parts of the motion, the field of
    view, the placement and the image noise. Returns ``out_dir``.
    """
    from vibe3r.video_gen import degrade
    from vibe3r.video_gen.motion import parse_prompt
    from vibe3r.video_gen.video_io import write_video
    from vibe3r.video_gen.world import build_scene

    traj_seed = scene_seed if traj_seed is None else int(traj_seed)
    program = parse_prompt(prompt)
    scene = build_scene(scene_seed, cfg.world)
    rng = np.random.default_rng([cfg.seed, scene_seed, traj_seed, 1])
    rc = cfg.render
    K = make_intrinsics(rc, rng)
    wc = cfg.world
    start, scale = scene.fit_trajectory(program, rng, wc.clearance, wc.camera_height, wc.min_path_scale, seed=traj_seed)
    traj = program.trajectory(start, K, rc.width, rc.height, seed=traj_seed)
    c2w = traj.c2w.copy()
    if scale < 1:
        c2w[:, :3, 3] = start[:3, 3] + scale * (c2w[:, :3, 3] - start[:3, 3])
    dc = rc.degrade
    bins = degrade.blur_bins(c2w, traj.K, dc.motion_blur, dc.blur_step_px, dc.blur_max_bins)
    shutter = degrade.shutter_poses(c2w, dc.motion_blur, bins)
    seed = int(np.random.default_rng([cfg.seed, scene_seed, traj_seed, 2]).integers(2**31))
    hdr, depth = render_frames(scene, c2w, traj.K, rc.width, rc.height, rc, seed=seed, shutter_c2w=shutter, progress=progress)
    rgb = degrade.apply(hdr, rc.degrade, seed=seed)
    meta = {
        "prompt": traj.prompt,
        "scene_seed": int(scene_seed),
        "traj_seed": int(traj_seed),
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION},
        "n_frames": int(len(c2w)),
        "width": int(rc.width),
        "height": int(rc.height),
        "fps": float(rc.fps),
        "path_scale": float(scale),
        "room_size_m": [round(float(x), 4) for x in scene.size],
        "segment_frames": [list(x) for x in traj.segment_frames],
    }
    return write_video(out_dir, rgb, traj.K, c2w, depth, meta, cfg=cfg)
