"""Read any capture into one :class:`Capture`: videos, image folders, RGB-D datasets, pair lists.

Supported formats (``detect_format`` decides from the path):

* ``video``     mp4/mov/webm/mkv/avi/m4v through PyAV; the display matrix (or a legacy ``rotate`` tag)
  is applied so phone videos come out upright; decoding streams, only sampled frames are kept.
* ``images``    a folder of jpg/png images, natural sort order (``img2`` before ``img10``).
* ``vibe3r``    a rendered video folder: ``frames/NNNNN.png`` + ``gt.npz`` (K, cam2world, depth).
* ``7scenes``   7-Scenes / 3DMatch / SUN3D layout: ``frame-NNNNNN.color.{jpg,png}``, ``.pose.txt``
  (4x4 camera-to-world, rotation projected onto SO(3)), ``.depth.png`` (uint16 mm; 65535 and 0
  invalid), ``camera-intrinsics.txt``. In 7-Scenes colour and depth come from two uncalibrated
  cameras: K (585) fits the depth; the colour images fit K ~ (518, 532, 314, 239) at 640x480
  (measured in tests/test_real_gt.py). 3DMatch/SUN3D depth is registered to colour.
* ``slambook``  slambook2 ``ch5/rgbd``: ``pose.txt`` (``tx ty tz qx qy qz qw`` per line), ``color/N.png``,
  ``depth/N.pgm`` (uint16 mm).
* ``tum``       TUM RGB-D: ``rgb.txt`` [+ ``depth.txt``], or a folder of timestamp-named pngs, with a
  ``groundtruth.txt`` (``t tx ty tz qx qy qz qw``, camera-to-world) here or one level up; the
  nearest pose within 20 ms, frames without one are dropped (listed in ``meta``); K from the
  fr1/fr2/fr3 name in the path, depth / 5000 = m.
* ``nerfstudio`` ``transforms.json`` (OpenGL camera axes, converted to OpenCV; its cx, cy put pixel
  centres at +0.5, so vibe3r's are 0.5 smaller).
* ``llff``      ``poses_bounds.npy`` + ``images/`` (camera axes [down, right, back], converted to OpenCV).

Conventions of the result: OpenCV camera axes, camera-to-world poses, K in pixels of the returned
images with pixel centres at integer coordinates, depth z-depth in metres with 0 = invalid.

Frame selection, in this order: the frame range (``PATH@START:STOP:STEP`` or ``frames=``; ordinal
indices into the format's frame list), then ``stride``, then ``fps`` (needs timestamps: nearest
frame to every 1/fps step), then ``max_frames`` (evenly spread, first and last kept). ``size``
resizes so the longer side has ``size`` pixels (aspect kept; K rescaled, depth nearest-neighbour).

SuperGlue/LoFTR pair lists: :func:`load_pairs` and :func:`load_pair_images`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import roma
import torch

from vibe3r import geometry
from vibe3r.errors import InputError

VIDEO_EXTS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
FORMATS = {
    "video": "video file (" + "/".join(e[1:] for e in VIDEO_EXTS) + ")",
    "images": "folder of jpg/png images",
    "vibe3r": "vibe3r rendered video folder (gt.npz + frames/)",
    "7scenes": "7-Scenes / 3DMatch / SUN3D folder (frame-NNNNNN.color/.pose.txt/.depth.png)",
    "slambook": "slambook2 rgbd folder (pose.txt + color/ + depth/)",
    "tum": "TUM RGB-D folder (rgb.txt, or timestamp-named pngs, + groundtruth.txt)",
    "nerfstudio": "nerfstudio transforms.json",
    "llff": "LLFF poses_bounds.npy + images/",
}

# TUM RGB-D intrinsics of the colour cameras (https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats).
# fr3 images are undistorted and its depth is registered to the colour camera; fr1/fr2 carry lens
# distortion that is not modelled here (noted in Capture.meta).
TUM_INTRINSICS = {
    "fr1": (517.3, 516.5, 318.6, 255.3),
    "fr2": (520.9, 521.0, 325.1, 249.7),
    "fr3": (535.4, 539.2, 320.1, 247.6),
}
TUM_DEPTH_FACTOR = 5000.0  # depth png value / 5000 = metres
# slambook2 ch5/rgbd (joinMap.cpp): fx, fy, cx, cy and depth scale (value / 1000 = metres).
SLAMBOOK_INTRINSICS = (518.0, 519.0, 325.5, 253.5)
# 7-Scenes ships no intrinsics file; its documented values, used when camera-intrinsics.txt is absent.
SEVENSCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)

# OpenGL (x right, y up, z back) <-> OpenCV (x right, y down, z forward): c2w_cv = c2w_gl @ GL_TO_CV.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Capture:
    """A sequence of frames with whatever ground truth its source knows.

    ``K``, ``cam2world``, ``depth`` and ``timestamps`` are None when the source does not provide them.
    ``meta`` always holds ``path`` and ``native_size`` (H, W before resizing), and ``source_index``
    (the index of each frame in the format's full frame list, before any selection).
    """

    name: str
    images: np.ndarray  # N,H,W,3 uint8 RGB
    frame_names: list[str]
    K: np.ndarray | None  # N,3,3 float64, for these images
    cam2world: np.ndarray | None  # N,4,4 float64, OpenCV axes
    depth: np.ndarray | None  # N,H,W float32 metres, 0 = invalid
    timestamps: np.ndarray | None  # N seconds
    source: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def hw(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, idx: Sequence[int]) -> Capture:
        """A capture of the frames ``idx`` (in this capture's order)."""
        idx = list(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        meta = dict(self.meta)
        for key in ("source_index", "frame_numbers"):
            if key in meta:
                meta[key] = [meta[key][i] for i in idx]
        return Capture(
            name=self.name,
            images=self.images[idx],
            frame_names=[self.frame_names[i] for i in idx],
            K=pick(self.K),
            cam2world=pick(self.cam2world),
            depth=pick(self.depth),
            timestamps=pick(self.timestamps),
            source=self.source,
            meta=meta,
        )


# --------------------------------------------------------------------------------------------
# Small readers
# --------------------------------------------------------------------------------------------


def natural_key(s: str) -> list:
    """Sort key that orders embedded integers numerically (``img2`` before ``img10``)."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (EXIF orientation applied, alpha dropped)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image: {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth_png(path: str | Path, scale: float, invalid: Sequence[int] = (0,)) -> np.ndarray:
    """Read a 16-bit depth image (png/pgm) as float32 metres: value * ``scale``; ``invalid`` values -> 0."""
    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None:
        raise InputError(f"cannot read depth image: {path}")
    if d.ndim != 2:
        raise InputError(f"depth image is not single-channel: {path}")
    bad = np.isin(d, list(invalid))
    out = d.astype(np.float32) * np.float32(scale)
    out[bad] = 0
    return out


def _intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def _read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"cannot parse {path}: {exc}") from None
    if m.size != shape[0] * shape[1]:
        raise InputError(f"{path} holds {m.size} numbers, expected a {shape[0]}x{shape[1]} matrix")
    return m.reshape(shape)


def _orthonormalize(c2w: np.ndarray, meta: dict) -> np.ndarray:
    """Project the rotation blocks onto SO(3) (KinectFusion's float poses are off by up to ~4e-4;
    ``geometry.inv_pose`` uses R^T), recording the largest |R^T R - I| in ``meta``."""
    if len(c2w) == 0:
        return c2w
    R = torch.as_tensor(c2w[:, :3, :3])
    err = (R.transpose(-1, -2) @ R - torch.eye(3, dtype=R.dtype)).abs().amax()
    meta["pose_orthonormality_error"] = float(err)
    out = c2w.copy()
    out[:, :3, :3] = roma.special_procrustes(R).numpy()
    return out


def quat_pose(txyz: np.ndarray, qxyzw: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world poses (..., 4, 4) from translations (..., 3) and unit quaternions xyzw (..., 4)."""
    q = torch.as_tensor(np.asarray(qxyzw, dtype=np.float64))
    R = roma.unitquat_to_rotmat(q / q.norm(dim=-1, keepdim=True))
    return geometry.make_pose(R, torch.as_tensor(np.asarray(txyz, dtype=np.float64))).numpy()


def resized_hw(hw: tuple[int, int], size: int | None) -> tuple[int, int]:
    """(H, W) after scaling the longer side to ``size`` pixels (unchanged when size is None)."""
    H, W = hw
    if size is None:
        return H, W
    s = size / max(H, W)
    return max(1, int(round(H * s))), max(1, int(round(W * s)))


def resize_image(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) uint8 image to ``hw`` (area filter when shrinking, bilinear otherwise)."""
    H, W = hw
    if img.shape[:2] == (H, W):
        return img
    interp = cv2.INTER_AREA if H < img.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(img, (W, H), interpolation=interp)


def resize_depth(depth: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize a depth map with pixel-centre-aligned nearest neighbour (no mixing across edges)."""
    H, W = hw
    if depth.shape[:2] == (H, W):
        return depth
    return cv2.resize(depth, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)


def rescale_K(K: np.ndarray, hw_from: tuple[int, int], hw_to: tuple[int, int]) -> np.ndarray:
    """K (..., 3, 3) of an image of size ``hw_from`` rescaled for the same image resized to ``hw_to``."""
    sx, sy = hw_to[1] / hw_from[1], hw_to[0] / hw_from[0]
    return geometry.scale_intrinsics(torch.as_tensor(K, dtype=torch.float64), sx, sy).numpy()


def rot90_intrinsics(K: np.ndarray, hw: tuple[int, int], k: int) -> np.ndarray:
    """K for an (H, W) image rotated with ``np.rot90(img, k)`` (counter-clockwise quarter turns).

    One turn maps pixel (u, v) to (v, W-1-u): the new camera has x' = y, y' = -x, so
    fx' = fy, fy' = fx, cx' = cy, cy' = W-1-cx (with skew dropped).
    """
    K = np.array(K, dtype=np.float64)
    H, W = hw
    for _ in range(k % 4):
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        K = _intrinsics(fy, fx, cy, W - 1 - cx)
        H, W = W, H
    return K


def rot90_camera(k: int) -> np.ndarray:
    """4x4 transform from camera coordinates to the coordinates of the camera whose image is
    ``np.rot90(img, k)`` (a rotation about the optical axis: x' = y, y' = -x per quarter turn)."""
    R1 = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = np.linalg.matrix_power(R1, k % 4)
    return T


# --------------------------------------------------------------------------------------------
# Sources: a cheap index of frames + readers for the selected ones
# --------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """What a format knows before any pixel is decoded."""

    source: str
    path: Path
    frame_names: list[str]
    hw: tuple[int, int]  # native (H, W), after display rotation
    read_images: Callable[[list[int], tuple[int, int]], list[np.ndarray]]  # indices, out hw -> images
    K: np.ndarray | None = None  # N,3,3 native
    cam2world: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    read_depth: Callable[[int], np.ndarray] | None = None  # index -> native-size depth (m)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_names)

    @classmethod
    def from_files(cls, source: str, path: Path, files: list[Path], hw: tuple[int, int], **known: Any) -> _Source:
        """A source whose frames are the image ``files`` (all of native size ``hw``), named by their stems."""
        return cls(source=source, path=path, frame_names=[f.stem for f in files], hw=hw,
                   read_images=_file_images(files, hw), **known)


def _file_images(paths: list[Path], native_hw: tuple[int, int]) -> Callable[[list[int], tuple[int, int]], list[np.ndarray]]:
    """Reader of image files that must all have ``native_hw`` (K and resizing assume one size)."""

    def read(idx: list[int], hw: tuple[int, int]) -> list[np.ndarray]:
        out = []
        for i in idx:
            img = read_rgb(paths[i])
            if img.shape[:2] != tuple(native_hw):
                raise InputError(
                    f"frames of different sizes: {paths[i].name} is {img.shape[1]}x{img.shape[0]}, "
                    f"{paths[0].name} is {native_hw[1]}x{native_hw[0]}"
                )
            out.append(resize_image(img, hw))
        return out

    return read


def _image_hw(path: Path) -> tuple[int, int]:
    img = read_rgb(path)
    return int(img.shape[0]), int(img.shape[1])


def _list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda p: natural_key(p.name))


# ---- video ----------------------------------------------------------------------------------


def _video_rotation(stream: Any, frame: Any) -> int:
    """Counter-clockwise display rotation in degrees (a multiple of 90) of a decoded frame.

    The display matrix (frame side data, propagated from the container) gives the angle by which
    a player rotates the frame counter-clockwise; a phone holding portrait writes -90. Older files
    carry a ``rotate`` tag instead, meaning a *clockwise* rotation.
    """
    rot = int(getattr(frame, "rotation", 0) or 0)
    if rot == 0:
        tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
        if tag not in (None, ""):
            try:
                rot = -int(float(tag))
            except ValueError:
                rot = 0
    return int(round(rot / 90.0)) * 90


def _open_video(path: Path) -> Any:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"not a decodable video: {path} ({type(exc).__name__})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"video has no frames: {path} (no video stream)")
    return container


def _frame_rgb(stream: Any, frame: Any, hw: tuple[int, int]) -> np.ndarray:
    """Decoded frame -> upright (display rotation applied) uint8 RGB resized to ``hw``."""
    img = frame.to_ndarray(format="rgb24")
    k = _video_rotation(stream, frame) // 90
    if k:
        img = np.ascontiguousarray(np.rot90(img, k=k))
    return resize_image(img, hw)


def _decode_sequential(path: Path, idx: list[int], hw: tuple[int, int]) -> list[np.ndarray]:
    """Decode from the start, keeping the frames whose ordinal index is in ``idx`` (ascending)."""
    import av

    want = {i: k for k, i in enumerate(idx)}
    out: list[np.ndarray | None] = [None] * len(idx)
    last = max(idx)
    i = -1
    c = _open_video(path)
    try:
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        try:
            for frame in c.decode(st):
                i += 1
                if i in want:
                    out[want[i]] = _frame_rgb(st, frame, hw)
                if i >= last:
                    break
        except av.error.FFmpegError as exc:
            raise InputError(f"not a decodable video: {path} ({type(exc).__name__} at frame {i + 1})") from None
    finally:
        c.close()
    if any(o is None for o in out):
        raise InputError(f"video ended early: {path} decoded {i + 1} frames, needed frame {last}")
    return out  # type: ignore[return-value]


def _decode_seeking(path: Path, targets: list[int], keyframes: list[int], hw: tuple[int, int]) -> list[np.ndarray] | None:
    """Decode only from the keyframe before each target pts (ascending) instead of from the start.

    Between two targets in the same group of pictures decoding just continues. Returns None (the
    caller then decodes sequentially) if seeking fails or lands on a frame other than the target.
    """
    import bisect

    import av

    out: list[np.ndarray] = []
    c = _open_video(path)
    try:
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        gen = None
        last_pts: int | None = None
        for tp in targets:
            kf = keyframes[max(bisect.bisect_right(keyframes, tp) - 1, 0)]
            if gen is None or last_pts is None or last_pts >= tp or kf > last_pts:
                c.seek(kf, stream=st, backward=True)
                gen = c.decode(st)
                last_pts = None
            hit = None
            for frame in gen:
                if frame.pts is None:
                    return None
                last_pts = frame.pts
                if frame.pts >= tp:
                    hit = frame
                    break
            if hit is None or hit.pts != tp:
                return None
            out.append(_frame_rgb(st, hit, hw))
    except av.error.FFmpegError:
        return None
    finally:
        c.close()
    return out


def _video_source(path: Path) -> _Source:
    """Index a video by demuxing (no decoding) and decode the first frame for size and rotation."""
    import av

    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else None
        pts: list[int] = []
        keyframes: list[int] = []
        n_packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size > 0:
                    n_packets += 1
                    if packet.pts is not None:
                        pts.append(packet.pts)
                        if packet.is_keyframe:
                            keyframes.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise InputError(f"not a decodable video: {path} ({type(exc).__name__} while reading)") from None
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        codec = stream.codec_context.name
    finally:
        container.close()
    if n_packets == 0:
        raise InputError(f"video has no frames: {path}")
    container = _open_video(path)
    first = None
    try:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            first = frame
            break
        if first is not None:
            rot = _video_rotation(stream, first)
            h, w = first.height, first.width
    except av.error.FFmpegError as exc:
        raise InputError(f"not a decodable video: {path} ({type(exc).__name__} while decoding)") from None
    finally:
        container.close()
    if first is None:
        raise InputError(f"video has no frames: {path} (no packet decodes)")
    if rot % 180:
        h, w = w, h
    n = len(pts) if len(pts) == n_packets else n_packets  # packets without pts: count them
    pts_sorted = sorted(pts)
    if tb is not None and len(pts_sorted) == n:
        t0 = pts_sorted[0]
        times = np.array([(p - t0) * tb for p in pts_sorted], dtype=np.float64)
    elif fps:
        times = np.arange(n, dtype=np.float64) / fps
    else:
        times = None
    duration = float(times[-1] + 1.0 / fps) if (times is not None and fps) else None

    exact_pts = pts_sorted if len(pts_sorted) == n else None
    keyframes.sort()

    def read(idx: list[int], hw: tuple[int, int]) -> list[np.ndarray]:
        if exact_pts is not None and keyframes:
            got = _decode_seeking(path, [exact_pts[i] for i in idx], keyframes, hw)
            if got is not None:
                return got
        return _decode_sequential(path, idx, hw)

    return _Source(
        source="video",
        path=path,
        frame_names=[f"{i:06d}" for i in range(n)],
        hw=(h, w),
        read_images=read,
        timestamps=times,
        meta={"fps": fps, "duration": duration, "rotation": rot, "codec": codec},
    )


# ---- image folder ---------------------------------------------------------------------------


def _images_source(folder: Path) -> _Source:
    files = _list_images(folder)
    hw = _image_hw(files[0])
    return _Source.from_files("images", folder, files, hw)


# ---- vibe3r rendered video ------------------------------------------------------------------


def _vibe3r_source(folder: Path) -> _Source:
    files = _list_images(folder / "frames")
    try:
        gt = np.load(folder / "gt.npz")
        K = np.asarray(gt["K"], dtype=np.float64) if "K" in gt else None
        c2w = np.asarray(gt["cam2world"], dtype=np.float64) if "cam2world" in gt else None
        depth = gt["depth"] if "depth" in gt else None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read {folder / 'gt.npz'}: {exc}") from None
    n = len(files)
    for key, arr in (("K", K), ("cam2world", c2w), ("depth", depth)):
        if arr is not None and len(arr) != n:
            raise InputError(f"{folder}: gt.npz '{key}' has {len(arr)} entries but frames/ has {n} images")
    meta: dict[str, Any] = {}
    if (folder / "meta.json").is_file():
        try:
            meta["video_meta"] = json.loads((folder / "meta.json").read_text())
        except json.JSONDecodeError:
            pass
    fps = meta.get("video_meta", {}).get("fps") if isinstance(meta.get("video_meta"), dict) else None
    fps = float(fps) if isinstance(fps, (int, float)) and fps > 0 else None
    if fps is None and (folder / "config.yaml").is_file():
        import yaml

        try:
            cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
            render = cfg.get("render", {}) if isinstance(cfg, dict) else {}
            fps = float(render["fps"]) if isinstance(render, dict) and render.get("fps") else None
        except (yaml.YAMLError, AttributeError, TypeError, ValueError):
            fps = None
    meta["fps"] = fps
    read_depth = None
    if depth is not None:
        read_depth = lambda i: np.asarray(depth[i], dtype=np.float32)  # noqa: E731
    hw = _image_hw(files[0])
    return _Source.from_files(
        "vibe3r",
        folder,
        files,
        hw,
        K=K,
        cam2world=c2w,
        timestamps=np.arange(n, dtype=np.float64) / fps if fps else None,
        read_depth=read_depth,
        meta=meta,
    )


# ---- 7-Scenes / 3DMatch / SUN3D --------------------------------------------------------------


_SEVEN_RE = re.compile(r"^(frame-(\d+))\.color\.(jpg|jpeg|png)$", re.IGNORECASE)


def _sevenscenes_source(folder: Path) -> _Source:
    entries = []
    for p in folder.iterdir():
        m = _SEVEN_RE.match(p.name)
        if m:
            entries.append((int(m.group(2)), m.group(1), p))
    entries.sort()
    names = [e[1] for e in entries]
    colors = [e[2] for e in entries]
    pose_files = [folder / f"{n}.pose.txt" for n in names]
    c2w = None
    if all(p.is_file() for p in pose_files):
        c2w = np.stack([_read_matrix(p, (4, 4)) for p in pose_files])
    meta: dict[str, Any] = {"frame_numbers": [e[0] for e in entries]}
    # 7-Scenes marks invalid depth with 65535; some poses are -inf/nan (tracking lost): drop those frames
    if c2w is not None:
        ok = np.isfinite(c2w).all(axis=(1, 2))
        if not ok.all():
            keep = np.flatnonzero(ok)
            meta["dropped_unposed"] = [names[i] for i in np.flatnonzero(~ok)]
            names, colors, c2w = [names[i] for i in keep], [colors[i] for i in keep], c2w[keep]
            meta["frame_numbers"] = [meta["frame_numbers"][i] for i in keep]
        c2w = _orthonormalize(c2w, meta)
    intr = folder / "camera-intrinsics.txt"
    if intr.is_file():
        K1 = _read_matrix(intr, (3, 3))
        meta["intrinsics_from"] = intr.name
    else:
        K1 = _intrinsics(*SEVENSCENES_INTRINSICS)
        meta["intrinsics_from"] = "7-Scenes documented values (no camera-intrinsics.txt)"
    depth_files = [folder / f"{n}.depth.png" for n in names]
    read_depth = None
    if all(p.is_file() for p in depth_files):
        read_depth = lambda i: read_depth_png(depth_files[i], 1e-3, invalid=(0, 65535))  # noqa: E731
    hw = _image_hw(colors[0])
    # 7-Scenes frames are 30 Hz with frame numbers from the full sequence
    meta["fps_native"] = 30.0
    ts = np.array(meta["frame_numbers"], dtype=np.float64) / 30.0
    return _Source(
        source="7scenes",
        path=folder,
        frame_names=names,
        hw=hw,
        read_images=_file_images(colors, hw),
        K=np.repeat(K1[None], len(names), axis=0),
        cam2world=c2w,
        timestamps=ts,
        read_depth=read_depth,
        meta=meta,
    )


# ---- slambook2 -------------------------------------------------------------------------------


def _slambook_source(folder: Path) -> _Source:
    colors = _list_images(folder / "color")
    poses = np.loadtxt(folder / "pose.txt", dtype=np.float64, ndmin=2)
    if poses.shape[1] != 7:
        raise InputError(f"{folder / 'pose.txt'}: expected 7 numbers per line (tx ty tz qx qy qz qw), got {poses.shape[1]}")
    if len(poses) != len(colors):
        raise InputError(f"{folder}: pose.txt has {len(poses)} poses but color/ has {len(colors)} images")
    c2w = quat_pose(poses[:, :3], poses[:, 3:])
    depth_files = []
    for p in colors:
        cands = [folder / "depth" / (p.stem + ext) for ext in (".pgm", ".png")]
        depth_files.append(next((c for c in cands if c.is_file()), None))
    read_depth = None
    if all(d is not None for d in depth_files):
        read_depth = lambda i: read_depth_png(depth_files[i], 1e-3)  # noqa: E731
    K1 = _intrinsics(*SLAMBOOK_INTRINSICS)
    hw = _image_hw(colors[0])
    return _Source.from_files(
        "slambook",
        folder,
        colors,
        hw,
        K=np.repeat(K1[None], len(colors), axis=0),
        cam2world=c2w,
        read_depth=read_depth,
        meta={"intrinsics_from": "slambook2 ch5 joinMap.cpp values", "pose_source": "estimated (not motion capture)"},
    )


# ---- TUM RGB-D -------------------------------------------------------------------------------


_TS_RE = re.compile(r"^(\d+\.\d+)\.png$")
TUM_MAX_DT = 0.02  # seconds; TUM's associate.py default


def read_tum_list(path: Path) -> tuple[np.ndarray, list[str]]:
    """Parse a TUM ``rgb.txt`` / ``depth.txt``: (timestamps (N,), relative file names)."""
    ts, files = [], []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise InputError(f"{path}: line '{line}' is not 'timestamp filename'")
        ts.append(float(parts[0]))
        files.append(parts[1])
    return np.array(ts, dtype=np.float64), files


def read_tum_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a TUM trajectory (``timestamp tx ty tz qx qy qz qw``): (timestamps (M,), c2w (M,4,4))."""
    try:
        data = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=2)
    except ValueError as exc:
        raise InputError(f"cannot parse {path}: {exc}") from None
    if data.shape[1] != 8:
        raise InputError(f"{path}: expected 8 numbers per line (t tx ty tz qx qy qz qw), got {data.shape[1]}")
    return data[:, 0], quat_pose(data[:, 1:4], data[:, 4:8])


def associate(t_query: np.ndarray, t_ref: np.ndarray, max_dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``t_ref`` index for every query time and the absolute time difference.

    Returns ``(index (N,), dt (N,))``; callers reject ``dt > max_dt``. ``t_ref`` must be sorted.
    """
    j = np.clip(np.searchsorted(t_ref, t_query), 1, len(t_ref) - 1) if len(t_ref) > 1 else np.zeros(len(t_query), int)
    if len(t_ref) > 1:
        left = t_ref[j - 1]
        right = t_ref[j]
        j = np.where(np.abs(t_query - left) <= np.abs(t_query - right), j - 1, j)
    dt = np.abs(t_ref[j] - t_query)
    return j, dt


def _tum_camera(path: Path) -> tuple[str | None, np.ndarray | None]:
    s = str(path.resolve()).lower()
    for key in ("fr1", "fr2", "fr3"):
        if key in s or key.replace("fr", "freiburg") in s:
            return key, _intrinsics(*TUM_INTRINSICS[key])
    return None, None


def _tum_source(folder: Path, max_dt: float = TUM_MAX_DT) -> _Source:
    meta: dict[str, Any] = {"max_dt": max_dt}
    if (folder / "rgb.txt").is_file():
        ts_all, rel = read_tum_list(folder / "rgb.txt")
        listed = [(t, folder / r) for t, r in zip(ts_all, rel)]
        present = [(t, p) for t, p in listed if p.is_file()]
        if len(present) < len(listed):
            meta["listed_missing"] = len(listed) - len(present)
    else:
        present = []
        for p in folder.iterdir():
            m = _TS_RE.match(p.name)
            if m:
                present.append((float(m.group(1)), p))
    present.sort()
    if not present:
        raise InputError(f"TUM folder without any readable rgb frame: {folder}")
    ts = np.array([t for t, _ in present])
    files = [p for _, p in present]
    depth_files: list[Path] | None = None
    if (folder / "depth.txt").is_file():
        dts, drel = read_tum_list(folder / "depth.txt")
        dpaths = [folder / r for r in drel]
        have = [k for k, p in enumerate(dpaths) if p.is_file()]
        if have:
            dts_h = dts[have]
            order = np.argsort(dts_h)
            dts_h = dts_h[order]
            dp = [dpaths[have[k]] for k in order]
            j, dt = associate(ts, dts_h, max_dt)
            ok = dt <= max_dt
            meta["depth_dt_max"] = float(dt[ok].max()) if ok.any() else None
            if ok.all():
                depth_files = [dp[k] for k in j]
            else:
                meta["depth_unmatched"] = int((~ok).sum())
                # keep depth only if every kept frame has one: drop rgb frames without depth
                keep = np.flatnonzero(ok)
                meta["dropped_no_depth"] = [files[k].stem for k in np.flatnonzero(~ok)]
                ts, files = ts[keep], [files[k] for k in keep]
                depth_files = [dp[j[k]] for k in keep]
    gt_path = next((p for p in (folder / "groundtruth.txt", folder.parent / "groundtruth.txt") if p.is_file()), None)
    c2w = None
    if gt_path is not None:
        gts, gpose = read_tum_trajectory(gt_path)
        order = np.argsort(gts)
        gts, gpose = gts[order], gpose[order]
        j, dt = associate(ts, gts, max_dt)
        ok = dt <= max_dt
        meta["groundtruth"] = str(gt_path)
        if ok.any():
            meta["pose_dt_max"] = float(dt[ok].max())
            if not ok.all():
                meta["dropped_unposed"] = [f"{files[k].stem} (nearest pose {dt[k] * 1e3:.0f} ms away)" for k in np.flatnonzero(~ok)]
            keep = np.flatnonzero(ok)
            ts, files = ts[keep], [files[k] for k in keep]
            if depth_files is not None:
                depth_files = [depth_files[k] for k in keep]
            c2w = gpose[j[keep]]
        else:
            meta["pose_note"] = f"no groundtruth pose within {max_dt * 1e3:.0f} ms of any frame"
    cam, K1 = _tum_camera(folder)
    meta["camera"] = cam
    if cam in ("fr1", "fr2"):
        meta["distortion_note"] = f"TUM {cam} images are distorted; K ignores the distortion"
    read_depth = None
    if depth_files is not None:
        dfs = depth_files
        read_depth = lambda i: read_depth_png(dfs[i], 1.0 / TUM_DEPTH_FACTOR)  # noqa: E731
    hw = _image_hw(files[0])
    return _Source.from_files(
        "tum",
        folder,
        files,
        hw,
        K=None if K1 is None else np.repeat(K1[None], len(files), axis=0),
        cam2world=c2w,
        timestamps=ts,
        read_depth=read_depth,
        meta=meta,
    )


# ---- nerfstudio -----------------------------------------------------------------------------


def _nerfstudio_source(json_path: Path) -> _Source:
    """nerfstudio ``transforms.json``: c2w in OpenGL axes; intrinsics with pixel centres at +0.5.

    nerfstudio (like COLMAP) puts the centre of pixel 0 at 0.5, vibe3r at 0: cx_ours = cx - 0.5.
    Depth (``depth_file_path``) is read as 16-bit mm (nerfstudio's default depth_unit_scale_factor).
    """
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{json_path} is not valid JSON: {exc}") from None
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{json_path}: no 'frames' list")
    root = json_path.parent

    def resolve(fp: str) -> Path:
        p = root / fp
        if not p.suffix and not p.is_file():
            for ext in (".png", ".jpg"):
                if p.with_suffix(ext).is_file():
                    return p.with_suffix(ext)
        return p

    frames = sorted(frames, key=lambda f: natural_key(str(f.get("file_path", ""))))
    files = [resolve(f["file_path"]) for f in frames]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise InputError(f"{json_path}: {len(missing)} image files missing, e.g. {missing[0]}")
    hw0 = _image_hw(files[0])
    Ks, c2ws = [], []
    for f in frames:
        g = {**data, **f}
        w = float(g.get("w", hw0[1]))
        h = float(g.get("h", hw0[0]))
        if "fl_x" in g:
            fx = float(g["fl_x"])
            fy = float(g.get("fl_y", fx))
        elif "camera_angle_x" in g:
            fx = 0.5 * w / math.tan(float(g["camera_angle_x"]) / 2)
            fy = 0.5 * h / math.tan(float(g["camera_angle_y"]) / 2) if "camera_angle_y" in g else fx
        else:
            raise InputError(f"{json_path}: no focal length (fl_x or camera_angle_x)")
        cx = float(g.get("cx", w / 2)) - 0.5
        cy = float(g.get("cy", h / 2)) - 0.5
        K = _intrinsics(fx, fy, cx, cy)
        if (round(h), round(w)) != hw0:  # intrinsics given for another resolution than the files
            K = rescale_K(K, (round(h), round(w)), hw0)
        Ks.append(K)
        c2ws.append(np.asarray(f["transform_matrix"], dtype=np.float64).reshape(4, 4) @ GL_TO_CV)
    depth_files = [root / f["depth_file_path"] if "depth_file_path" in f else None for f in frames]
    read_depth = None
    if all(d is not None and d.is_file() for d in depth_files):
        read_depth = lambda i: read_depth_png(depth_files[i], 1e-3)  # noqa: E731
    meta = {k: data[k] for k in ("camera_model", "k1", "k2", "p1", "p2") if k in data}
    return _Source.from_files(
        "nerfstudio",
        json_path,
        files,
        hw0,
        K=np.stack(Ks),
        cam2world=np.stack(c2ws),
        read_depth=read_depth,
        meta=meta,
    )


# ---- LLFF -----------------------------------------------------------------------------------


def _llff_source(npy_path: Path) -> _Source:
    """LLFF ``poses_bounds.npy`` (N, 17): a 3x5 [R | t | (H, W, f)] per frame + (near, far).

    R's columns are the camera's [down, right, back] axes in world coordinates, so OpenCV's
    [right, down, forward] are [col1, col0, -col2]. Pixel centres sit at integers (NeRF's
    ``i - W/2``), so cx = W/2, cy = H/2 in vibe3r's convention.
    """
    arr = np.load(npy_path)
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise InputError(f"{npy_path}: expected an (N, 17) array, got {arr.shape}")
    folder = npy_path.parent
    img_dir = folder / "images"
    if not img_dir.is_dir():
        raise InputError(f"{folder}: LLFF capture without an images/ folder")
    files = _list_images(img_dir)
    if len(files) != len(arr):
        raise InputError(f"{folder}: poses_bounds.npy has {len(arr)} poses but images/ has {len(files)} images")
    P = arr[:, :15].reshape(-1, 3, 5).astype(np.float64)
    c2w = np.tile(np.eye(4), (len(arr), 1, 1))
    c2w[:, :3, 0] = P[:, :, 1]
    c2w[:, :3, 1] = P[:, :, 0]
    c2w[:, :3, 2] = -P[:, :, 2]
    c2w[:, :3, 3] = P[:, :, 3]
    hw0 = _image_hw(files[0])
    Ks = []
    for h, w, f in P[:, :, 4]:
        K = _intrinsics(f, f, w / 2, h / 2)
        if (round(h), round(w)) != hw0:
            K = rescale_K(K, (round(h), round(w)), hw0)
        Ks.append(K)
    return _Source.from_files(
        "llff",
        npy_path,
        files,
        hw0,
        K=np.stack(Ks),
        cam2world=c2w,
        meta={"bounds": arr[:, 15:17].tolist()},
    )


# --------------------------------------------------------------------------------------------
# Detection, selection, loading
# --------------------------------------------------------------------------------------------


_RANGE_RE = re.compile(r"^(.*)@(-?\d*)(?::(-?\d*))?(?::(-?\d*))?$")


def parse_spec(spec: str | Path) -> tuple[Path, slice | None]:
    """Split ``PATH@START:STOP:STEP`` into the path and a slice (ordinal frame indices).

    ``PATH@7`` is the single frame 7; any part may be empty (``PATH@:100:2``). A path that exists
    as written is never split.
    """
    s = str(spec)
    if Path(s).exists():
        return Path(s), None
    m = _RANGE_RE.match(s)
    if not m:
        return Path(s), None
    path, a, b, c = m.groups()
    has_colon = ":" in s[len(path) + 1 :]
    to_int = lambda x: int(x) if x not in (None, "") else None  # noqa: E731
    if not has_colon:
        if a == "":
            raise InputError(f"bad frame range in '{s}': expected PATH@START:STOP:STEP")
        start = int(a)
        return Path(path), slice(start, start + 1 if start != -1 else None)
    step = to_int(c)
    if step == 0:
        raise InputError(f"bad frame range in '{s}': step must not be 0")
    return Path(path), slice(to_int(a), to_int(b), step)


def detect_format(path: str | Path) -> str:
    """Name of the capture format at ``path`` (a key of :data:`FORMATS`); InputError if none fits."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"capture not found: {p}")
    if p.is_file():
        if p.suffix.lower() in VIDEO_EXTS:
            return "video"
        if p.name == "transforms.json" or (p.suffix == ".json" and _looks_nerfstudio(p)):
            return "nerfstudio"
        if p.name == "poses_bounds.npy":
            return "llff"
        if p.suffix.lower() in IMAGE_EXTS:
            raise InputError(f"{p} is a single image; a capture is a video or a folder ({_supported()})")
        raise InputError(f"unknown capture format: {p} (supported: {_supported()})")
    names = {q.name for q in p.iterdir()}
    if "gt.npz" in names and (p / "frames").is_dir():
        return "vibe3r"
    if "transforms.json" in names:
        return "nerfstudio"
    if "poses_bounds.npy" in names:
        return "llff"
    if any(_SEVEN_RE.match(n) for n in names):
        return "7scenes"
    if "pose.txt" in names and (p / "color").is_dir():
        return "slambook"
    if "rgb.txt" in names:
        return "tum"
    if any(_TS_RE.match(n) for n in names) and (
        (p / "groundtruth.txt").is_file() or (p.parent / "groundtruth.txt").is_file()
    ):
        return "tum"
    if any(Path(n).suffix.lower() in IMAGE_EXTS for n in names):
        return "images"
    raise InputError(f"unknown capture format: {p} (supported: {_supported()})")


def _looks_nerfstudio(p: Path) -> bool:
    try:
        return "frames" in json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False


def _supported() -> str:
    return "; ".join(f"{k}: {v}" for k, v in FORMATS.items())


def open_source(path: str | Path) -> _Source:
    """Index the capture at ``path`` without decoding its images (beyond the first)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "video":
        return _video_source(p)
    if fmt == "images":
        return _images_source(p)
    if fmt == "vibe3r":
        return _vibe3r_source(p)
    if fmt == "7scenes":
        return _sevenscenes_source(p)
    if fmt == "slambook":
        return _slambook_source(p)
    if fmt == "tum":
        return _tum_source(p)
    if fmt == "nerfstudio":
        return _nerfstudio_source(p if p.is_file() else p / "transforms.json")
    return _llff_source(p if p.is_file() else p / "poses_bounds.npy")


def select_frames(
    n: int,
    timestamps: np.ndarray | None,
    *,
    frames: slice | None = None,
    stride: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
) -> list[int]:
    """Ordinal indices kept out of ``n`` frames: range, then stride, then fps, then max_frames.

    ``fps`` keeps the nearest frame to every multiple of 1/fps from the first kept frame (needs
    timestamps); ``max_frames`` spreads the kept frames evenly (first and last included).
    """
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    idx = list(range(n))
    if frames is not None:
        idx = idx[frames]
    idx = idx[::stride]
    if fps is not None:
        if fps <= 0:
            raise InputError(f"fps must be > 0, got {fps}")
        if timestamps is None:
            raise InputError("fps sampling needs frame timestamps, which this capture does not have; use stride or max_frames")
        t = np.asarray(timestamps, dtype=np.float64)[idx]
        if len(t):
            grid = t[0] + np.arange(int(np.floor((t[-1] - t[0]) * fps + 1e-6)) + 1) / fps
            j, _ = associate(grid, t, np.inf)
            idx = [idx[k] for k in sorted(set(j.tolist()))]
    if max_frames is not None:
        if max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {max_frames}")
        if len(idx) > max_frames:
            pick = np.unique(np.round(np.linspace(0, len(idx) - 1, max_frames)).astype(int))
            idx = [idx[k] for k in pick]
    if not idx:
        raise InputError(f"frame selection is empty (capture has {n} frames)")
    return idx


def capture_frames(spec: str | Path) -> tuple[Path, frozenset[int]]:
    """The source a capture spec reads and the ordinal indices of the frames it selects, without decoding
    any image: two specs share frames when they name the same source and their sets intersect."""
    path, rng = parse_spec(spec)
    src = open_source(path)
    return path.resolve(), frozenset(select_frames(len(src), src.timestamps, frames=rng))


def load_capture(
    spec: str | Path,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    fps: float | None = None,
    size: int | None = None,
    frames: slice | None = None,
) -> Capture:
    """Load a capture (see the module docstring for formats and the selection order).

    ``spec`` is a path with an optional ``@START:STOP:STEP`` frame range. ``size`` scales the
    longer image side to that many pixels; K is rescaled with ``geometry.scale_intrinsics``
    (pixel centres stay at integers) and depth is resized nearest-neighbour.
    """
    path, rng = parse_spec(spec)
    if rng is not None and frames is not None:
        raise InputError(f"frame range given twice: in the spec '{spec}' and as frames=")
    if size is not None and size < 1:
        raise InputError(f"size must be >= 1, got {size}")
    src = open_source(path)
    idx = select_frames(len(src), src.timestamps, frames=rng or frames, stride=stride, fps=fps, max_frames=max_frames)
    hw = resized_hw(src.hw, size)
    images = np.stack(src.read_images(idx, hw))
    if images.shape[1:3] != hw:
        raise InputError(f"{path}: frames of different sizes ({images.shape[1:3]} vs {hw}); resize with size=")
    K = None
    if src.K is not None:
        K = src.K[idx] if hw == src.hw else rescale_K(src.K[idx], src.hw, hw)
    depth = None
    if src.read_depth is not None:
        depth = np.stack([resize_depth(src.read_depth(i), hw) for i in idx]).astype(np.float32)
    meta = dict(src.meta)
    meta.update(path=str(path), native_size=list(src.hw), source_index=idx, n_source_frames=len(src))
    if "frame_numbers" in meta:
        meta["frame_numbers"] = [meta["frame_numbers"][i] for i in idx]
    if path.name in ("transforms.json", "poses_bounds.npy"):
        name = path.resolve().parent.name  # the capture is the folder
    else:
        name = path.stem if path.is_file() else path.resolve().name
    return Capture(
        name=name,
        images=images,
        frame_names=[src.frame_names[i] for i in idx],
        K=K,
        cam2world=None if src.cam2world is None else np.asarray(src.cam2world[idx], dtype=np.float64),
        depth=depth,
        timestamps=None if src.timestamps is None else np.asarray(src.timestamps, dtype=np.float64)[idx],
        source=src.source,
        meta=meta,
    )


def trajectory_stats(c2w: np.ndarray) -> dict[str, float]:
    """Path length (sum of centre steps, in the pose units), centre extent (bounding-box diagonal),
    and the largest rotation between any two frames (degrees; over <= 400 evenly spread frames)."""
    c = np.asarray(c2w, dtype=np.float64)
    centres = c[:, :3, 3]
    sub = np.unique(np.round(np.linspace(0, len(c) - 1, min(len(c), 400))).astype(int))
    R = torch.as_tensor(c[sub, :3, :3])
    if len(sub) > 1:
        ang = geometry.rotation_error_deg(R[:, None], R[None, :])  # N,N
        max_rot = float(ang.max())
        rot_first = float(ang[0].max())
    else:
        max_rot = rot_first = 0.0
    return {
        "path_length": float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()),
        "extent": float(np.linalg.norm(centres.max(0) - centres.min(0))),
        "max_rotation_deg": max_rot,
        "max_rotation_from_first_deg": rot_first,
    }


def describe_capture(spec: str | Path) -> dict[str, Any]:
    """What a capture holds, without decoding its frames (for ``vibe3r captures inspect``)."""
    path, rng = parse_spec(spec)
    src = open_source(path)
    idx = select_frames(len(src), src.timestamps, frames=rng)
    out: dict[str, Any] = {
        "path": str(path),
        "format": src.source,
        "frames": len(idx),
        "source_frames": len(src),
        "height": src.hw[0],
        "width": src.hw[1],
        "K_known": src.K is not None,
        "poses_known": src.cam2world is not None,
        "depth_known": src.read_depth is not None,
        "timestamps_known": src.timestamps is not None,
    }
    if src.K is not None:
        K = src.K[idx[0]]
        out["fx_fy_cx_cy"] = [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]
    if src.timestamps is not None and len(idx) > 1:
        out["time_span_s"] = float(src.timestamps[idx[-1]] - src.timestamps[idx[0]])
    if src.source == "video":
        out["fps"] = src.meta.get("fps")
        out["duration_s"] = src.meta.get("duration")
        out["rotation_deg"] = src.meta.get("rotation")
        out["codec"] = src.meta.get("codec")
    if src.cam2world is not None:
        out.update(trajectory_stats(src.cam2world[idx]))
    for key in ("dropped_unposed", "dropped_no_depth", "listed_missing", "pose_dt_max", "camera", "intrinsics_from"):
        if key in src.meta:
            out[key] = src.meta[key]
    return out


# --------------------------------------------------------------------------------------------
# Writing videos
# --------------------------------------------------------------------------------------------


def write_capture_video(
    capture_or_images: Capture | np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    fps: float = 10.0,
    *,
    display_rotation: int = 0,
    crf: int = 18,
    gop: int | None = None,
) -> Path:
    """Encode frames (N, H, W, 3) uint8 RGB as an H.264 mp4 (yuv420p).

    yuv420p needs even sizes: an odd last row/column is cropped (K stays valid). With
    ``display_rotation`` (degrees counter-clockwise, multiple of 90) the frames are stored
    rotated by the inverse and the container gets that display matrix, as a phone does: a player
    (or :func:`load_capture`) shows them as given. A phone in portrait writes -90. ``gop`` sets
    the keyframe interval (x264's default otherwise).
    """
    import av

    images = capture_or_images.images if isinstance(capture_or_images, Capture) else np.asarray(capture_or_images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise InputError(f"expected frames (N, H, W, 3), got shape {images.shape}")
    if display_rotation % 90:
        raise InputError(f"display_rotation must be a multiple of 90, got {display_rotation}")
    k = -(display_rotation // 90)
    stored = np.rot90(images, k=k, axes=(1, 2)) if k % 4 else images
    H, W = stored.shape[1] // 2 * 2, stored.shape[2] // 2 * 2
    if H == 0 or W == 0:
        raise InputError(f"frames too small to encode: {images.shape[1:3]}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    from fractions import Fraction

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(out), "w") as container:
        options = {"crf": str(crf), "preset": "veryfast"}
        if gop is not None:
            options.update(g=str(gop), keyint_min=str(gop), sc_threshold="0")
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if display_rotation % 360:
            stream.set_display_rotation(display_rotation)
        for img in stored:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:H, :W], dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


# --------------------------------------------------------------------------------------------
# SuperGlue / LoFTR pair lists
# --------------------------------------------------------------------------------------------


@dataclass
class PairSpec:
    """One line of a SuperGlue pairs file. ``T_0to1 = inv(c2w_1) @ c2w_0`` maps camera-0 to camera-1
    coordinates; K0/K1 belong to the images as stored on disk; rot0/rot1 are EXIF-style quarter
    turns (``np.rot90`` k) applied when loading; ``root`` is the folder the names are relative to."""

    name0: str
    name1: str
    K0: np.ndarray  # 3,3
    K1: np.ndarray  # 3,3
    T_0to1: np.ndarray  # 4,4
    rot0: int = 0
    rot1: int = 0
    root: Path | None = None


def _find_pairs_root(path: Path, names: list[str]) -> Path | None:
    """The folder holding the images of a pair list: the list's folder, its parent, or a sub-folder
    (two levels) of the parent — the first where all the probed names exist."""
    cands = [path.parent, path.parent.parent]
    for base in (path.parent.parent, path.parent):
        for d in sorted(base.iterdir()):
            if d.is_dir():
                cands.append(d)
                cands.extend(sorted(e for e in d.iterdir() if e.is_dir()))
    seen = set()
    for c in cands:
        if c in seen:
            continue
        seen.add(c)
        if all((c / n).is_file() for n in names):
            return c
    return None


def load_pairs(path: str | Path, root: str | Path | None = None) -> list[PairSpec]:
    """Parse a SuperGlue/LoFTR pairs file (38 fields a line).

    ``root`` is the folder the image names are relative to; by default it is found next to the
    list (for ``real/eval-pairs/X.txt`` that is the dataset folder under ``real/``, e.g.
    ``real/7scenes-redkitchen`` or ``real/tum-fr3-long-office/sequence``).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pairs file not found: {p}")
    pairs = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 38:
            raise InputError(f"{p}:{n}: expected 38 fields (name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)), got {len(parts)}")
        try:
            nums = np.array([float(x) for x in parts[4:]], dtype=np.float64)
            rot0, rot1 = int(parts[2]), int(parts[3])
        except ValueError:
            raise InputError(f"{p}:{n}: non-numeric field") from None
        pairs.append(PairSpec(parts[0], parts[1], nums[:9].reshape(3, 3), nums[9:18].reshape(3, 3), nums[18:].reshape(4, 4), rot0, rot1))
    if not pairs:
        raise InputError(f"pairs file has no pairs: {p}")
    if root is None:
        probe = sorted({q.name0 for q in pairs[:3]} | {q.name1 for q in pairs[:3]})
        found = _find_pairs_root(p, probe)
        if found is None:
            raise InputError(f"cannot find the images of {p} (e.g. {probe[0]}) next to it; pass root=")
        root_p = found
    else:
        root_p = Path(root)
        if not root_p.is_dir():
            raise InputError(f"pairs root is not a folder: {root_p}")
    for q in pairs:
        q.root = root_p
    return pairs


def load_pair_images(
    pair: PairSpec, size: int | None = None, root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images of a pair (uint8 RGB), resized so the longer side is ``size``, with matching K and T.

    Returns ``(img0, img1, K0, K1, T_0to1)``. rot0/rot1 quarter turns are applied to the images,
    their K (:func:`rot90_intrinsics`) and T_0to1 (``R1 @ T @ inv(R0)``, :func:`rot90_camera`).
    """
    base = Path(root) if root is not None else pair.root
    if base is None:
        raise InputError("pair has no root folder; pass root=")
    out_imgs, out_K = [], []
    for name, K, rot in ((pair.name0, pair.K0, pair.rot0), (pair.name1, pair.K1, pair.rot1)):
        img = read_rgb(base / name)
        if rot % 4:
            K = rot90_intrinsics(K, img.shape[:2], rot)
            img = np.ascontiguousarray(np.rot90(img, k=rot))
        hw0 = img.shape[:2]
        hw = resized_hw(hw0, size)
        out_imgs.append(resize_image(img, hw))
        out_K.append(K if hw == hw0 else rescale_K(K, hw0, hw))
    T = rot90_camera(pair.rot1) @ pair.T_0to1 @ np.linalg.inv(rot90_camera(pair.rot0))
    return out_imgs[0], out_imgs[1], out_K[0], out_K[1], T
