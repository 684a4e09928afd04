"""Whole-sequence evaluation with ground truth: trajectory and depth of a reconstruction, model vs classical.

``evaluate_sequence`` runs the reconstruction pipeline of ``vibe3r recon run`` (``recon.run.align_capture``:
scene graph → pairwise predictions + relative poses → global alignment) on a capture with ground-truth
poses (7-Scenes, TUM, a vibe3r video folder, ...) with one of these pairwise front ends:

* ``model``  the network (pointmaps, confidences, dense-descriptor matches → essential RANSAC poses),
* ``sift``   the classical peer: SIFT + ratio test + essential RANSAC on the same scene graph, with the
  inliers triangulated into sparse pointmaps so that the *same* global alignment runs
  (``eval.sift_pairwise``),
* ``oracle`` the capture's exact depth and poses (an upper bound and a check of the metrics).

Metrics (``sequence_metrics``), every one stating its alignment:

* ATE: RMSE of the camera centres after a Sim(3) (Umeyama) fit to the ground truth (``geometry.ate``),
* RPE between consecutive evaluated frames: rotation error (deg), translation direction error (deg),
  translation error after one global median scale (``geometry.rpe``),
* depth AbsRel and δ<1.25, each frame median-scaled on its own (median(gt)/median(pred) over the frame's
  valid pixels), averaged over the frames with ground-truth depth; with the fraction of GT pixels the
  depth covers.

The depth sources of ``recon.triangulate.select_depth`` are all measured in every run: ``pointmap`` (the
alignment's fused depth from the pointmap heads; for ``sift`` the fused sparse triangulated keypoints),
``triangulated`` (the essential-RANSAC inlier matches triangulated with the aligned poses, sparse) and
``triangulated+pointmap`` (the pointmap depth, rescaled per frame, filling the pixels without a
triangulated match); plus the
pointmap depth on exactly the triangulated pixels (``pointmap@tri``), the fair comparison.
``depth`` (default ``cfg.depth``, what ``recon run`` exports) chooses the headline one.

The static-camera prior is reported beside them: every camera at the mean GT position with the first
frame's orientation (ATE = RMS distance of the GT centres to their mean; RPE rotation = mean GT rotation
between consecutive frames) and a constant depth per frame (a flat wall facing the camera, median-scaled).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vibe3r import geometry
from vibe3r.captures import Capture
from vibe3r.errors import InputError
from vibe3r.recon import run as RR
from vibe3r.recon.triangulate import DEPTH_SOURCES, select_depth

METHODS = ("model", "sift", "oracle")
DEPTHS = DEPTH_SOURCES


def depth_per_frame(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """AbsRel / δ<1.25 (each frame median-scaled on its own, ``geometry.depth_metrics``) averaged over
    the frames with at least one valid pixel; ``coverage`` = valid pixels / GT pixels; ``frames``."""
    rows = []
    for i in range(len(gt)):
        m = geometry.depth_metrics(pred[i], gt[i], None if mask is None else mask[i])
        if math.isfinite(m["abs_rel"]):
            rows.append(m)
    valid = (gt > 0) & (pred > 0) & (True if mask is None else mask)
    cov = float(valid.sum() / max((gt > 0).sum(), 1))
    if not rows:
        return {"abs_rel": float("nan"), "delta1": float("nan"), "coverage": cov, "frames": 0}
    return {"abs_rel": float(np.mean([r["abs_rel"] for r in rows])), "delta1": float(np.mean([r["delta1"] for r in rows])),
            "coverage": cov, "frames": len(rows)}


def pose_metrics(c2w: np.ndarray, gt_c2w: np.ndarray) -> dict[str, float]:
    """ATE after Sim(3) alignment and consecutive-frame RPE (``geometry.ate`` / ``geometry.rpe``)."""
    return {"ate_sim3": geometry.ate(c2w, gt_c2w, "sim3"), **geometry.rpe(c2w, gt_c2w)}


def static_prior(gt: Capture) -> dict[str, float]:
    """The static-camera prior's metrics (module docstring)."""
    G = np.asarray(gt.cam2world, np.float64)
    c = G[:, :3, 3]
    out = {"ate_sim3": float(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()))}
    rg = geometry.relative_pose(torch.from_numpy(G[1:]), torch.from_numpy(G[:-1]))
    out["rpe_rot_deg"] = float(geometry.rotation_error_deg(rg[:, :3, :3], torch.eye(3, dtype=torch.float64)).mean())
    out["rpe_tdir_deg"] = 90.0
    out["rpe_trans"] = float(rg[:, :3, 3].norm(dim=-1).mean())
    if gt.depth is not None:
        flat = np.ones_like(gt.depth)
        d = depth_per_frame(flat, gt.depth)
        out.update(depth_abs_rel=d["abs_rel"], depth_delta1=d["delta1"])
    return out


def sequence_metrics(c2w: np.ndarray, depths: dict[str, np.ndarray], gt: Capture) -> dict:
    """Pose metrics against ``gt.cam2world`` and, when ``gt.depth`` exists, per-frame median-scaled
    depth metrics of every named depth map stack in ``depths`` (N,H,W, 0 = none)."""
    out: dict = pose_metrics(c2w, gt.cam2world)
    if gt.depth is not None:
        out["depth"] = {name: depth_per_frame(d, gt.depth) for name, d in depths.items()}
        if "triangulated" in depths and "pointmap" in depths:
            out["depth"]["pointmap@tri"] = depth_per_frame(depths["pointmap"], gt.depth, depths["triangulated"] > 0)
    return out


def require_gt_poses(cap: Capture) -> None:
    """One-line InputError unless the capture has ground-truth camera poses."""
    if cap.cam2world is None:
        raise InputError(f"capture '{cap.meta.get('path', cap.name)}' ({cap.source}) has no ground-truth poses; "
                         "eval sequence needs one that does (7-Scenes, TUM, a vibe3r video folder, nerfstudio, LLFF, ...)")


def evaluate_sequence(cap: Capture, method: str = "model", model: torch.nn.Module | None = None,
                      cfg: RR.RunConfig | None = None, depth: str | None = None,
                      progress: RR.PhaseProgress | None = None, sift_ransac: str = "ransac") -> dict:
    """Reconstruct ``cap`` with ``method`` (module docstring) and score it against its ground truth.

    Returns a JSON-able dict: ``method``, ``frames``, ``image_size``, ``metrics`` (ATE, RPE, ``depth`` per
    kind), the headline ``depth_abs_rel`` / ``depth_delta1`` of ``depth``, ``static_prior``, ``seconds``.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    cfg = cfg or RR.RunConfig()
    depth = depth or cfg.depth
    if depth not in DEPTHS:
        raise InputError(f"unknown depth {depth!r}; valid: {', '.join(DEPTHS)}")
    require_gt_poses(cap)
    t0 = time.perf_counter()
    if method == "model":
        if model is None:
            raise InputError("--method model needs a checkpoint")
        r = RR.align_capture(cap, model, cfg, progress)
    elif method == "sift":
        from vibe3r.eval.sift_pairwise import SIFT_ALIGN_STRIDE, sift_pairwise

        front = lambda im, e, K: sift_pairwise(im, e, K, ransac_px=cfg.ransac_px, ransac=sift_ransac)  # noqa: E731
        cfg = replace(cfg, align=replace(cfg.align, depth_stride=SIFT_ALIGN_STRIDE, fuse_min_weight=0.0))  # depth at keypoints only
        r = RR.align_capture(cap, cfg=cfg, progress=progress, pairwise=front)
    else:
        r = RR.align_capture(cap, cfg=cfg, progress=progress, oracle=True)
    seconds = time.perf_counter() - t0
    n = len(cap)
    depths = {k: select_depth(k, r.al.depth, r.pred, r.al.c2w, r.al.K) for k in DEPTH_SOURCES}
    metrics = sequence_metrics(r.al.c2w, depths, r.gt)
    res = {
        "method": method,
        "capture": str(cap.meta.get("path", cap.name)),
        "frames": n,
        "source_index": cap.meta.get("source_index"),
        "image_size": [int(r.images.shape[2]), int(r.images.shape[1])],
        "pairs": r.n_pairs,
        "edges": int(r.pred.n_edges),
        "pose_methods": {m: r.pred.pose_method.count(m) for m in sorted(set(r.pred.pose_method))},
        "edges_kept": r.al.edges_kept,
        "intrinsics_from": r.k_source,
        "depth_kind": depth,
        "metrics": metrics,
        "static_prior": static_prior(r.gt),
        "gt_path_extent": float(np.linalg.norm(np.ptp(r.gt.cam2world[:, :3, 3], 0))),
        "seconds": seconds,
        "timings_s": r.timings,
    }
    if "depth" in metrics:
        res["depth_abs_rel"] = metrics["depth"][depth]["abs_rel"]
        res["depth_delta1"] = metrics["depth"][depth]["delta1"]
    return res


def format_summary(res: dict) -> str:
    """Human-readable lines: the method, then the static prior, then the depth kinds."""
    m, s = res["metrics"], res["static_prior"]
    W, H = res["image_size"]
    lines = [f"{res['method']} on {Path(res['capture']).name}: {res['frames']} frames at {W}x{H}, {res['pairs']} pairs "
             f"({res['seconds']:.1f} s; poses {res['pose_methods']})"]
    for label, r in ((res["method"], m), ("static prior", s)):
        lines.append(f"  {label:>14}: ATE(Sim3) {r['ate_sim3']:.3f}  RPE rot {r['rpe_rot_deg']:5.2f}°  "
                     f"tdir {r['rpe_tdir_deg']:5.1f}°  trans {r['rpe_trans']:.3f}"
                     + (f"  depth AbsRel {r['depth_abs_rel']:.3f} δ1 {r['depth_delta1']:.3f}" if "depth_abs_rel" in r else ""))
    for kind, d in m.get("depth", {}).items():
        mark = " <-" if kind == res["depth_kind"] else ""
        lines.append(f"  {'depth ' + kind:>14}: AbsRel {d['abs_rel']:.3f}  δ<1.25 {d['delta1']:.3f}  "
                     f"coverage {100 * d['coverage']:5.1f}%  frames {d['frames']}{mark}")
    lines.append(f"  (GT path extent {res['gt_path_extent']:.2f}; ATE in GT units after Sim(3), depth median-scaled per frame)")
    return "\n".join(lines)


def dumps(res: dict) -> str:
    """One-line JSON (NaN/inf as null)."""
    from vibe3r.eval.pairs import _nan_to_none

    return json.dumps(_nan_to_none(res), default=float)

