"""Structure from motion of a real capture: the exact trainer's ``sfm`` teacher.

COLMAP through pycolmap — SIFT, sequential matching, incremental mapping with bundle adjustment, the
capture's intrinsics held fixed — registers the frames of a whole capture jointly. No ground truth is
read. Its relative poses are a far better teacher for the exact objective (``preference.exact``) than one
two-view RootSIFT estimate per pair: every pose is constrained by all the frames that see the same
points (on 7-Scenes wide pairs the two-view poses disagree with this SfM by 2-5°; ``bench/preference.md``).

The loop runs it once per capture and keeps the result in the run folder (``capture_poses``), keyed by
the capture spec, its frame count, focal lengths and the SfM settings, so resumed and later rounds reuse it.
``capture_structure`` keeps the same SfM's points and which frames observe them, for the SfM-supervised
training pairs of :mod:`vibe3r.video_gen.sfm_pairs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vibe3r import geometry
from vibe3r.captures import Capture
from vibe3r.errors import InputError


def _pycolmap():  # noqa: ANN202
    try:
        import pycolmap
    except ImportError as e:  # an optional dependency: only the sfm teacher and the pseudo-GT bench need it
        raise InputError("preference.teacher sfm needs pycolmap: pip install 'vibe3r[sfm]'") from e
    pycolmap.logging.minloglevel = 3  # COLMAP logs every frame at INFO (and a failed model at ERROR); we print one line
    return pycolmap


def _reconstruct(images: np.ndarray, K: np.ndarray, work: Path, overlap: int = 15, threads: int = 1,
                 log=print):  # noqa: ANN001, ANN202
    """The largest pycolmap model of the frames (see ``run_sfm``); image names are the frame ordinals."""
    import cv2

    pycolmap = _pycolmap()
    img_dir = work / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images):
        cv2.imwrite(str(img_dir / f"{k:05d}.png"), im[:, :, ::-1])
    db = work / "database.db"
    if db.exists():
        db.unlink()
    ro = pycolmap.ImageReaderOptions()
    ro.camera_model = "PINHOLE"
    ro.camera_params = f"{K[0, 0]},{K[1, 1]},{K[0, 2]},{K[1, 2]}"
    eo = pycolmap.FeatureExtractionOptions()
    eo.num_threads = threads
    t0 = time.time()
    pycolmap.extract_features(db, img_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=ro, extraction_options=eo,
                              device=pycolmap.Device.cpu)
    po = pycolmap.SequentialPairingOptions()
    po.overlap = overlap
    po.loop_detection = False
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = threads
    pycolmap.match_sequential(db, matching_options=mo, pairing_options=po, device=pycolmap.Device.cpu)
    op = pycolmap.IncrementalPipelineOptions()
    op.num_threads = threads
    op.ba_refine_focal_length = op.ba_refine_principal_point = op.ba_refine_extra_params = False
    (work / "sparse").mkdir(exist_ok=True)
    recs = pycolmap.incremental_mapping(db, img_dir, work / "sparse", options=op)
    if not recs:
        raise InputError(f"structure from motion registered no model from {len(images)} frames (too little texture or motion)")
    rec = max(recs.values(), key=lambda r: r.num_reg_images())
    log(f"SfM: {rec.num_reg_images()} of {len(images)} frames registered, {rec.num_points3D()} points, "
        f"mean reprojection error {rec.compute_mean_reprojection_error():.2f} px, {time.time() - t0:.0f} s")
    return rec


def _cam2world(rec) -> dict[int, np.ndarray]:  # noqa: ANN001
    c2w = {}
    for im in rec.images.values():
        pose = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        T = np.eye(4)
        T[:3, :] = pose.matrix()
        c2w[int(Path(im.name).stem)] = np.linalg.inv(T)
    return c2w


def run_sfm(images: np.ndarray, K: np.ndarray, work: Path, overlap: int = 15, threads: int = 1,
            log=print) -> dict[int, np.ndarray]:  # noqa: ANN001
    """cam2world (OpenCV axes, arbitrary scale and frame) of the registered frames of the largest model,
    keyed by frame ordinal. ``images`` N,H,W,3 uint8 RGB in capture order; ``K`` their 3x3 intrinsics
    (a pinhole camera, held fixed); ``overlap`` neighbours matched per frame."""
    return _cam2world(_reconstruct(images, K, work, overlap, threads, log))


@dataclass
class SfmStructure:
    """A capture's SfM: the registered frames' cam2world, the triangulated points (world, the SfM's
    arbitrary scale) and, per frame, which points it observes."""

    c2w: dict[int, np.ndarray]
    xyz: np.ndarray  # P,3 float64
    obs: dict[int, np.ndarray]  # frame ordinal -> indices into xyz

    def common(self, i: int, j: int) -> np.ndarray:
        """Indices of the points both frames observe."""
        return np.intersect1d(self.obs.get(i, np.zeros(0, np.int64)), self.obs.get(j, np.zeros(0, np.int64)))

    def cell_depth(self, frame: int, K: np.ndarray, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
        """Depth (h, w) of a frame's descriptor cells (``grid_hw``) in its SfM camera and the SfM's scale: each
        point the frame observes lands on the cell its projection under ``K`` (pixels of an ``image_hw``
        image) falls in, the nearest point winning; 0 where no point lands (everywhere for an unregistered
        frame) — the exact trainer's point reward."""
        from vibe3r.video_gen.sfm_pairs import sparse_depth

        (h, w), (H, W) = grid_hw, image_hw
        if frame not in self.c2w:  # not registered: no point of it is known
            return np.zeros((h, w), np.float32)
        S = np.array([[w / W, 0, 0.5 * w / W - 0.5], [0, h / H, 0.5 * h / H - 0.5], [0, 0, 1]])  # pixels -> cells (cells_to_px inverted)
        w2c = np.linalg.inv(self.c2w[frame])
        pts = self.xyz[self.obs.get(frame, np.zeros(0, np.int64))]
        return sparse_depth(pts @ w2c[:3, :3].T + w2c[:3, 3], S @ np.asarray(K, np.float64), (h, w), radius=0)


def structure_of(rec, max_error: float = 2.0, min_track: int = 3) -> SfmStructure:  # noqa: ANN001
    """The points of a pycolmap model whose mean reprojection error is under ``max_error`` px and which
    at least ``min_track`` frames observe (short, inaccurate tracks are where triangulation goes wrong)."""
    frame_of = {im_id: int(Path(im.name).stem) for im_id, im in rec.images.items()}
    xyz, obs = [], {}
    for p in rec.points3D.values():
        els = p.track.elements
        if p.error > max_error or len(els) < min_track:
            continue
        for e in els:
            obs.setdefault(frame_of[e.image_id], []).append(len(xyz))
        xyz.append(np.asarray(p.xyz, np.float64))
    return SfmStructure(_cam2world(rec), np.asarray(xyz, np.float64).reshape(-1, 3),
                        {f: np.unique(np.asarray(v, np.int64)) for f, v in obs.items()})


def _cache_key(cap: Capture, spec: str, overlap: int) -> tuple[str, str]:
    if cap.K is None:
        raise InputError(f"{cap.name}: structure from motion needs the capture's intrinsics")
    key = json.dumps({"spec": spec, "n": len(cap.images), "hw": cap.hw, "K": np.round(cap.K[0], 3).tolist(), "overlap": overlap})
    return key, f"sfm-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def capture_structure(cap: Capture, cache_dir: Path, spec: str, overlap: int = 15, threads: int = 1,
                      log=print) -> SfmStructure:  # noqa: ANN001
    """``structure_of`` the SfM of a loaded capture, cached in ``cache_dir`` (an ``.npz`` beside
    ``capture_poses``' JSON, under the same key); the file appears atomically."""
    key, stem = _cache_key(cap, spec, overlap)
    path = cache_dir / f"{stem}-points.npz"
    if path.is_file():
        with np.load(path) as z:
            frames, c2w, xyz, of, oi = z["frames"], z["c2w"], z["xyz"], z["obs_frame"], z["obs_point"]
        return SfmStructure({int(f): T for f, T in zip(frames, c2w)}, xyz, {int(f): oi[of == f] for f in np.unique(of)})
    with tempfile.TemporaryDirectory() as tmp:
        st = structure_of(_reconstruct(cap.images, cap.K[0], Path(tmp), overlap, threads, log))
    cache_dir.mkdir(parents=True, exist_ok=True)
    frames = sorted(st.c2w)
    of = np.concatenate([np.full(len(v), f, np.int64) for f, v in st.obs.items()]) if st.obs else np.zeros(0, np.int64)
    oi = np.concatenate(list(st.obs.values())) if st.obs else np.zeros(0, np.int64)
    tmp_path = cache_dir / f".{stem}-points.tmp.npz"
    np.savez(tmp_path, frames=np.asarray(frames, np.int64), c2w=np.stack([st.c2w[f] for f in frames]), xyz=st.xyz,
             obs_frame=of, obs_point=oi, key=np.asarray(key))
    os.replace(tmp_path, path)
    return st


def capture_poses(cap: Capture, cache_dir: Path, spec: str, overlap: int = 15, threads: int = 1,
                  log=print) -> dict[int, np.ndarray]:  # noqa: ANN001
    """The registered frames' cam2world of a loaded capture's SfM (its frames and first K), cached as JSON in
    ``cache_dir`` under a key of the spec, frame count, resolution, intrinsics and settings; the file appears
    atomically. One SfM serves this and ``capture_structure`` (the points are cached beside it)."""
    key, stem = _cache_key(cap, spec, overlap)
    path = cache_dir / f"{stem}.json"
    if path.is_file():
        return {int(k): np.asarray(v) for k, v in json.loads(path.read_text())["cam2world"].items()}
    c2w = capture_structure(cap, cache_dir, spec, overlap, threads, log).c2w
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(json.dumps({"key": json.loads(key), "cam2world": {str(k): v.tolist() for k, v in sorted(c2w.items())}}))
    os.replace(tmp_path, path)
    return c2w


def teacher_poses(captures: dict[str, Capture], cache_dir: Path, threads: int = 1, log=print,  # noqa: ANN001
                  skip_failed: bool = False) -> dict[str, dict[int, np.ndarray]]:
    """``capture_poses`` of every capture (spec -> full-resolution capture): the exact trainer's ``sfm`` teacher and the
    rewards' global alignment. ``skip_failed``: a capture SfM cannot register is logged and left out instead of raised
    (a missing pycolmap is still an error)."""
    if not skip_failed:
        return {spec: capture_poses(cap, cache_dir, spec, threads=threads, log=log) for spec, cap in captures.items()}
    _pycolmap()
    poses = {}
    for spec, cap in captures.items():
        try:
            poses[spec] = capture_poses(cap, cache_dir, spec, threads=threads, log=log)
        except InputError as e:
            log(f"{spec}: {e}; left out")
    return poses


def relative_pose(c2w: dict[int, np.ndarray], i: int, j: int) -> np.ndarray | None:
    """T21 (camera i to camera j, 4x4) of a registered pair; None when either frame is unregistered."""
    if i not in c2w or j not in c2w:
        return None
    return geometry.relative_pose(c2w[i], c2w[j]).numpy()
