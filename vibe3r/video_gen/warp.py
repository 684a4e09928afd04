"""Reconstruction-conditioned rendering: training pairs of a real room from its own frames.

A real frame and a depth map of it (the reconstruction model's, or a sensor's where one exists) are turned
into a surface — one triangle pair per 2x2 pixel quad, torn at depth discontinuities — and re-rendered
from new cameras near the original one with open3d's ``RaycastingScene``. The new view's colours are
sampled from the *full-resolution* frame at the points the rays hit (4x4 supersampled, area-averaged), so
the render keeps the capture's real texture, sensor noise and lighting; only the viewpoint is new.

Every pair (real frame, render) has exact supervision by construction: the render's depth is the ray
length and its pixels are the frame's pixels, wherever the depth came from. An error in the depth bends
the room's shape, not the pair's consistency — which is why this works with the model's own depth and
no ground truth (the self-supervised loop), and why it sidesteps 7-Scenes' unregistered depth camera.

Holes (rays that leave the surface: disocclusions, outside the frame) are filled by inpainting so the
image looks like a photograph, and are marked invalid (depth 0) so they carry no supervision. The render
then goes through a mild camera model (gain, gamma, blur, noise) so the two views never share exact
pixel values.

Output is the pair-shard format of :mod:`vibe3r.video_gen.dataset` (``vibe3r video warp-pairs``); the loop's
generate stage adds it to a round's training data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import roma
import torch

from vibe3r import geometry
from vibe3r.config import WarpConfig
from vibe3r.errors import InputError
from vibe3r.video_gen.dataset import SHARD_FORMAT_VERSION, ShardWriter, VideoGT

if TYPE_CHECKING:
    from vibe3r.captures import Capture

SUPERSAMPLE = 4


def depth_mesh(depth: np.ndarray, K: np.ndarray, max_grazing_deg: float = 84.0):
    """An open3d tensor triangle mesh of a depth map (camera frame): two triangles per 2x2 quad whose
    corners are all valid and whose depth step is one a surface seen less obliquely than ``max_grazing_deg``
    would make over one pixel (relative step tan(angle) / focal); None if empty."""
    import open3d as o3d

    H, W = depth.shape
    X = geometry.unproject_depth(torch.from_numpy(depth.astype(np.float32)), torch.from_numpy(K.astype(np.float32))).numpy()
    idx = np.arange(H * W).reshape(H, W)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    z = depth.reshape(-1)
    tris = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    zt = z[tris]
    zmin, zmax = zt.min(1), zt.max(1)
    max_rel_jump = math.tan(math.radians(max_grazing_deg)) / float(min(K[0, 0], K[1, 1]))
    keep = (zmin > 0) & (zmax <= zmin * (1 + max_rel_jump))
    if not keep.any():
        return None
    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(X.reshape(-1, 3).astype(np.float32))
    mesh.triangle.indices = o3d.core.Tensor(tris[keep].astype(np.int32))
    return mesh


def raycasting_scene(mesh):
    """An open3d ``RaycastingScene`` holding the mesh (build once, cast many times)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh)
    return scene


def cast(scene, K: np.ndarray, T_ba: np.ndarray, width: int, height: int) -> np.ndarray:
    """Z-depth (H, W) of the scene (given in camera a's frame) seen by a pinhole camera b with ``T_ba`` =
    camera-a -> camera-b; 0 where a ray misses. Rays of ``create_rays_pinhole`` are not unit length:
    ``t_hit`` is already the z-depth."""
    import open3d as o3d

    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(K.astype(np.float64)), o3d.core.Tensor(T_ba.astype(np.float64)), int(width), int(height))
    t = scene.cast_rays(rays)["t_hit"].numpy()
    return np.where(np.isfinite(t), t, 0.0).astype(np.float32)


def novel_camera(median_depth: float, cfg: WarpConfig, rng: np.random.Generator) -> np.ndarray:
    """T_ba (4x4, camera a -> new camera b): an orbit about the point at the median depth on a's optical
    axis by an angle in ``cfg.orbit_deg`` about a random axis in the image plane, a dolly, and a little
    extra pan/tilt/roll. The pivot stays near the middle of the new view, so most of the frame stays in it."""
    ang = math.radians(rng.uniform(*cfg.orbit_deg))
    phi = rng.uniform(0, 2 * math.pi)
    axis = np.array([math.cos(phi), math.sin(phi), 0.0])
    R_orbit = roma.rotvec_to_rotmat(torch.from_numpy(axis * ang)).numpy()
    pivot = np.array([0.0, 0.0, median_depth])
    # new camera-to-a: rotate the camera about the pivot, then move along its own axis
    c2a = np.eye(4)
    c2a[:3, :3] = R_orbit
    c2a[:3, 3] = pivot - R_orbit @ pivot
    extra = np.array([rng.normal(0, cfg.look_jitter_deg), rng.normal(0, cfg.look_jitter_deg), rng.normal(0, cfg.roll_deg)])
    R_extra = roma.rotvec_to_rotmat(torch.from_numpy(np.radians(extra))).numpy()
    c2a[:3, :3] = c2a[:3, :3] @ R_extra
    c2a[:3, 3] += c2a[:3, :3] @ np.array([0.0, 0.0, rng.uniform(-cfg.dolly, cfg.dolly) * median_depth])
    return np.linalg.inv(c2a)


def _camera_model(img: np.ndarray, cfg: WarpConfig, rng: np.random.Generator) -> np.ndarray:
    """Mild photometric change of a uint8 RGB render: gain, gamma, blur, noise."""
    x = img.astype(np.float32) / 255
    x = np.clip(x * rng.uniform(1 - cfg.gain, 1 + cfg.gain), 0, 1) ** rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)
    s = rng.uniform(0, cfg.blur_sigma)
    if s > 0.05:
        x = cv2.GaussianBlur(x, (0, 0), s)
    x = x * 255 + rng.normal(0, cfg.noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def render_view(image_full: np.ndarray, K_full: np.ndarray, scene, K: np.ndarray, T_ba: np.ndarray, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray]:
    """Render (uint8 (H, W, 3), z-depth (H, W), 0 = no supervision) of camera b: colours sampled from the
    full-resolution frame a at the hit points of 4x4 rays per pixel; a pixel is valid when all its rays hit."""
    s = SUPERSAMPLE
    Ks = np.asarray(geometry.scale_intrinsics(torch.from_numpy(K), s), np.float64)
    z_hi = cast(scene, Ks, T_ba, width * s, height * s)
    hit = z_hi > 0
    # hit points in camera a: unproject in b, map b -> a
    Xb = geometry.unproject_depth(torch.from_numpy(z_hi).double(), torch.from_numpy(Ks))
    uv, _ = geometry.project(geometry.transform_points(geometry.inv_pose(T_ba), Xb), K_full, eps=1e-6)
    mx, my = uv[..., 0].float().numpy(), uv[..., 1].float().numpy()
    col = cv2.remap(image_full, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    col *= hit[..., None]
    cover = cv2.resize(hit.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    img = cv2.resize(col, (width, height), interpolation=cv2.INTER_AREA) / np.maximum(cover, 1e-6)[..., None]
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    valid = cover > 0.999
    holes = (~valid).astype(np.uint8)
    if holes.any():
        img = cv2.inpaint(img, holes, 3, cv2.INPAINT_TELEA)
    z = cast(scene, K, T_ba, width, height)
    return img, np.where(valid, z, 0.0).astype(np.float32)


def warp_frame(image_full: np.ndarray, K_full: np.ndarray, depth: np.ndarray, K_depth: np.ndarray, size_hw: tuple[int, int],
               cfg: WarpConfig, rng: np.random.Generator) -> VideoGT | None:
    """One real frame and ``cfg.views_per_frame`` renders of it as a little "video": frame 0 is the real frame
    (area-resized to ``size_hw``), frames 1.. the renders; c2w in frame 0's camera coordinates. None when the
    depth is empty or no render covers ``cfg.min_valid`` of its area."""
    H, W = size_hw
    mesh = depth_mesh(depth, K_depth, cfg.max_grazing_deg)
    if mesh is None:
        return None
    scene = raycasting_scene(mesh)
    Hf, Wf = image_full.shape[:2]
    K = np.asarray(geometry.scale_intrinsics(torch.from_numpy(K_full), W / Wf, H / Hf), np.float64)
    med = float(np.median(depth[depth > 0]))
    img0 = cv2.resize(image_full, (W, H), interpolation=cv2.INTER_AREA)
    d0 = cast(scene, K, np.eye(4), W, H)  # frame 0's own depth at the output size, on the same surface
    images, depths, c2ws = [img0], [d0], [np.eye(4)]
    for _ in range(cfg.views_per_frame):
        T_ba = novel_camera(med, cfg, rng)
        img, z = render_view(image_full, K_full, scene, K, T_ba, W, H)
        if (z > 0).mean() < cfg.min_valid:
            continue
        images.append(_camera_model(img, cfg, rng))
        depths.append(z)
        c2ws.append(np.linalg.inv(T_ba))
    if len(images) < 2:
        return None
    n = len(images)
    return VideoGT(np.stack(images), np.stack(depths), np.repeat(K[None], n, 0).astype(np.float32), np.stack(c2ws), -1)


def model_depth(recon: torch.nn.Module, images: list[np.ndarray], gap: int, size: int = 128) -> list[np.ndarray]:
    """Depth of every frame from the reconstruction model: z of X^{1,1} of the pair (i, i + gap) (i - gap at the
    end), at the model's input size, median- then Gaussian-filtered (a patch-8 ViT's depth is rough from pixel
    to pixel, and every rough step would tear the surface). Scale is the model's own; the pair renders are
    consistent whatever it is. A single frame is paired with itself (DUSt3R's monocular mode)."""
    from vibe3r.video_gen.room import key_frame_depth

    n = len(images)
    out = []
    for i in range(n):
        j = i + gap if i + gap < n else max(0, i - gap)
        d = key_frame_depth(recon, images[i], images[j], size)[0].astype(np.float32)
        out.append(cv2.GaussianBlur(cv2.medianBlur(d, 5), (0, 0), 1.0))
    return out


def build_warp_pairs(captures: Sequence[str | Capture], out: str | Path, *, recon: str | Path | torch.nn.Module | None = None,
                     size: tuple[int, int] = (128, 96), cfg: WarpConfig | None = None, seed: int = 0, partner_gap: int = 3,
                     shard_size: int = 256, focal: tuple[float, float] | None = None, progress: bool = True) -> dict[str, Any]:
    """Pair shards (``size`` = (width, height)) of real captures' frames and their renders.

    ``captures``: capture specs or loaded captures at full resolution. Frames are centre-cropped to the
    output's aspect ratio. Depth: the reconstruction model ``recon``'s (checkpoint or module; self-supervised,
    the loop's choice) or, when None, each capture's own depth (a sensor's; an error if it has none).
    Intrinsics: the capture's K (``focal`` overrides its fx, fy at native size), else a 60 degree field of
    view. Every render is paired with its real frame; the trainer's view swap gives both orders."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from vibe3r.captures import load_capture
    from vibe3r.video_gen.room import crop_to_aspect

    cfg = cfg or WarpConfig()
    W, H = size
    caps = [load_capture(c) if isinstance(c, (str, Path)) else c for c in captures]
    for c, cap in zip(captures, caps):
        if len(cap) < 1:
            raise InputError(f"capture {getattr(c, 'name', c)} has no frames")
        if recon is None and cap.depth is None:
            raise InputError(f"capture {getattr(c, 'name', c)} has no depth; give a reconstruction checkpoint to estimate it")
    if isinstance(recon, (str, Path)):
        from vibe3r.recon.model import ReconModel

        recon = ReconModel.from_pretrained(recon).eval()
    out = Path(out)
    writer = ShardWriter(out / "shards", shard_size)
    rng = np.random.default_rng(seed)
    n_frames = n_views = 0
    per_capture = []
    with Progress(TextColumn("[bold]warp pairs"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress) as bar:
        task = bar.add_task("warp", total=sum(len(c) for c in caps))
        for ci, cap in enumerate(caps):
            Hn, Wn = cap.hw
            if cap.K is None:
                from vibe3r.loop.pool import DEFAULT_FOV_DEG

                K = geometry.intrinsics_from_fov(DEFAULT_FOV_DEG, Wn, Hn).numpy().astype(np.float64)
                Ks = np.repeat(K[None], len(cap), 0)
            else:
                Ks = cap.K.astype(np.float64).copy()
            if focal is not None:
                Ks[:, 0, 0], Ks[:, 1, 1] = focal
            crops = [crop_to_aspect(img, K, W, H) for img, K in zip(cap.images, Ks)]
            if recon is not None:
                depths = model_depth(recon, [im for im, _ in crops], partner_gap, max(W, H))
                K_depth = [np.asarray(geometry.scale_intrinsics(torch.from_numpy(K), d.shape[1] / im.shape[1], d.shape[0] / im.shape[0]),
                                      np.float64) for (im, K), d in zip(crops, depths)]
            else:
                depths, K_depth = [crop_to_aspect(d, K, W, H)[0] for d, K in zip(cap.depth, Ks)], [K for _, K in crops]
            n_before = n_views
            for i, ((img, K), d, Kd) in enumerate(zip(crops, depths, K_depth)):
                gt = warp_frame(img, K, d, Kd, (H, W), cfg, rng)
                bar.advance(task)
                if gt is None:
                    continue
                writer.add(ci * 100_000 + i, gt, [(0, k, float((gt.depth[k] > 0).mean())) for k in range(1, len(gt.images))])
                n_frames += 1
                n_views += len(gt.images) - 1
            per_capture.append({"capture": cap.meta.get("path", cap.name), "frames": len(cap), "pairs": n_views - n_before})
    writer.flush()
    if not writer.shards:
        raise InputError("no frame of the capture(s) gave a usable render (depth empty, or the views mostly holes)")
    index = {"format_version": SHARD_FORMAT_VERSION, "height": H, "width": W,
             "n_pairs": sum(sh["pairs"] for sh in writer.shards), "shards": writer.shards, "videos": [],
             "warp": {"captures": per_capture, "depth": "model" if recon is not None else "capture", "frames": n_frames,
                      "views": n_views, "seed": seed}}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index
