"""Judging a generated video's camera: did it move the way it was told to?

The judge recovers the camera of every frame k relative to frame 0 from the frames alone and compares
it with the commanded camera (CamI2V's protocol, per frame rather than summed, so clips of any length
compare):

* ``rot_err``   mean geodesic rotation error (degrees) over frames 1..F-1;
* ``trans_err`` mean angle (degrees) between recovered and commanded translation directions, over the
  frames whose commanded translation is at least ``min_trans_frac`` of the clip's largest (a two-view
  pose has no scale: the direction is what can be judged);
* ``cam_mc``    mean Frobenius distance between [R | t] recovered and commanded, the recovered
  translation scaled to the commanded length (CamMC, scale-normalised);
* ``consistency`` the median Sampson error (px, at the judged size) of the judge's matches under its own
  poses — a video that is not one rigid scene has matches no single camera motion explains.

A frame whose pose cannot be recovered counts as "did not move" (identity), so a frozen or broken video
is judged by how far it should have moved. Two judges share that protocol:

* ``ReconJudge``: the reconstruction model (``vibe3r.recon``, a ``ModelPoseEstimator``) on the frames
  upsampled to its training size — the judge of the loop;
* ``FlowJudge``: judge-independent, no learned part: dense DIS optical flow (OpenCV), forward-backward
  checked, then essential-matrix RANSAC — the classical check of the same quantity.

The preference reward of a video is ``-(rot_err + trans_weight * trans_err)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from vibe3r import geometry
from vibe3r.recon.pose import estimate_pose_essential

PoseFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray, int] | None"]


@dataclass
class CameraScore:
    rot_err: float  # degrees, mean over frames 1..F-1
    trans_err: float  # degrees, mean over frames that translate
    cam_mc: float  # scale-normalised [R|t] distance
    consistency: float  # median Sampson error of the judge's own matches (px), nan if none
    failed: int  # frames whose pose was not recovered
    per_frame_rot: list[float]

    def reward(self, trans_weight: float = 0.5) -> float:
        t = 0.0 if not np.isfinite(self.trans_err) else self.trans_err
        return -(self.rot_err + trans_weight * t)

    def as_dict(self) -> dict:
        return asdict(self)


def upsample(img: np.ndarray, K: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    if factor == 1:
        return img, K
    H, W = img.shape[:2]
    out = cv2.resize(img, (int(round(W * factor)), int(round(H * factor))), interpolation=cv2.INTER_CUBIC)
    return out, geometry.scale_intrinsics(K, out.shape[1] / W, out.shape[0] / H).numpy()


def camera_score(poses: list[tuple[np.ndarray, np.ndarray] | None], cmd_c2w: np.ndarray, min_trans_frac: float = 0.2,
                 sampson: list[float] | None = None) -> CameraScore:
    """Score recovered relative poses ``(R, t)`` (X_k = R X_0 + t; None = failed) of frames 1..F-1 against the
    commanded cameras ``cmd_c2w`` (F, 4, 4)."""
    rel = [geometry.relative_pose(cmd_c2w[0], cmd_c2w[k]).numpy() for k in range(1, len(cmd_c2w))]  # T_k<-0
    t_norm = np.array([np.linalg.norm(T[:3, 3]) for T in rel])
    moving = t_norm >= min_trans_frac * max(t_norm.max(), 1e-9) if t_norm.max() > 1e-6 else np.zeros_like(t_norm, bool)
    rot, trans, mc, failed = [], [], [], 0
    for T, p, mv, tn in zip(rel, poses, moving, t_norm):
        R_c, t_c = T[:3, :3], T[:3, 3]
        if p is None:
            failed += 1
            R, t = np.eye(3), np.zeros(3)
        else:
            R, t = np.asarray(p[0], np.float64), np.asarray(p[1], np.float64)
        rot.append(float(geometry.rotation_error_deg(R, R_c)))
        if mv:
            trans.append(90.0 if p is None or np.linalg.norm(t) < 1e-9
                         else float(geometry.translation_direction_error_deg(t, t_c)))
        t_s = t / max(np.linalg.norm(t), 1e-12) * tn
        mc.append(float(np.linalg.norm(np.concatenate([R - R_c, (t_s - t_c)[:, None]], 1))))
    cons = float(np.median(sampson)) if sampson else float("nan")
    return CameraScore(float(np.mean(rot)), float(np.mean(trans)) if trans else float("nan"), float(np.mean(mc)), cons,
                       failed, rot)


class FlowJudge:
    """Judge-independent camera recovery: DIS optical flow with a forward-backward check, then essential RANSAC."""

    name = "flow"

    def __init__(self, upsample_to: int = 128, stride: int = 2, fb_px: float = 1.0, ransac_px: float = 1.0) -> None:
        self.upsample_to, self.stride, self.fb_px, self.ransac_px = upsample_to, stride, fb_px, ransac_px
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def matches(self, img0: np.ndarray, img1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g0, g1 = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (img0, img1))
        fw = self.dis.calc(g0, g1, None)
        bw = self.dis.calc(g1, g0, None)
        H, W = g0.shape
        v, u = np.mgrid[2:H - 2:self.stride, 2:W - 2:self.stride]
        p0 = np.stack([u.ravel(), v.ravel()], 1).astype(np.float32)
        p1 = p0 + fw[p0[:, 1].astype(int), p0[:, 0].astype(int)]
        inside = (p1[:, 0] >= 0) & (p1[:, 0] <= W - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= H - 1)
        back = cv2.remap(bw, p1[:, 0].reshape(-1, 1), p1[:, 1].reshape(-1, 1), cv2.INTER_LINEAR).reshape(-1, 2)
        ok = inside & (np.linalg.norm(p1 + back - p0, axis=1) < self.fb_px)
        return p0[ok], p1[ok]

    def poses(self, frames: np.ndarray, K: np.ndarray) -> tuple[list, list[float]]:
        f = self.upsample_to / max(frames.shape[1:3])
        ims, Ks = zip(*(upsample(x, k, f) for x, k in zip(frames, K)))
        out, samp = [], []
        for k in range(1, len(frames)):
            kp0, kp1 = self.matches(ims[0], ims[k])
            res = estimate_pose_essential(kp0, kp1, Ks[0], Ks[k], self.ransac_px)
            if res is None:
                out.append(None)
                continue
            R, t, inl = res
            out.append((R, t))
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R, t
            samp.extend(geometry.sampson_px(T, kp0[inl], kp1[inl], Ks[0], Ks[k]).tolist())
        return out, samp


class ReconJudge:
    """The reconstruction model as judge: mutual-NN matches of its descriptors + essential RANSAC per frame pair."""

    name = "recon"

    def __init__(self, ckpt: str | Path, size: int = 128, ransac_px: float = 1.0) -> None:
        from vibe3r.recon.model import ReconModel
        from vibe3r.recon.pose import ModelPoseEstimator

        self.ckpt = str(ckpt)
        self.size = size
        self.model = ReconModel.from_pretrained(ckpt)
        self.est = ModelPoseEstimator(self.model, solver="essential", ransac_px=ransac_px)

    def poses(self, frames: np.ndarray, K: np.ndarray) -> tuple[list, list[float]]:
        f = self.size / max(frames.shape[1:3])
        ims, Ks = zip(*(upsample(x, k, f) for x, k in zip(frames, K)))
        out = []
        for k in range(1, len(frames)):
            res = self.est(ims[0], ims[k], Ks[0], Ks[k])
            out.append(None if res is None else (res[0], res[1]))
        return out, []


def judge_video(judge: FlowJudge | ReconJudge, frames: np.ndarray, K: np.ndarray, cmd_c2w: np.ndarray) -> CameraScore:
    """Score one video (uint8 (F, H, W, 3), K (F, 3, 3)) against its commanded cameras."""
    poses, samp = judge.poses(frames, np.asarray(K, np.float64))
    return camera_score(poses, cmd_c2w, sampson=samp)


def judge_folder(judge: FlowJudge | ReconJudge, video_dir: str | Path) -> CameraScore:
    """Score a video folder against the cameras in its ``gt.npz`` (commanded, for a generated video)."""
    from vibe3r.video_gen.video_io import read_video

    frames, K, c2w, _, _ = read_video(video_dir)
    return judge_video(judge, frames, K, c2w)
