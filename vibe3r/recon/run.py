"""From a video to a room: capture → scene graph → pairwise inference → pair poses → global alignment → exports.

``reconstruct`` is what ``vibe3r recon run`` calls. Each phase is timed and reported in
``report.json`` with the frames used, the pairs, the mean confidence, peak memory and, when the
capture carries ground truth (a vibe3r video folder, 7-Scenes, TUM, ...), ATE after Sim(3) alignment,
RPE and depth AbsRel / δ<1.25 after median scaling.

Intrinsics: taken from the capture when it has them (``use_capture_K``), else from ``fov_deg`` when
given, else estimated from the pointmaps (``inference.frame_intrinsics``; a focal outside the plausible
field-of-view range falls back to ``default_fov_deg``) and refined by the alignment.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vibe3r import geometry
from vibe3r.captures import Capture, load_capture
from vibe3r.errors import InputError
from vibe3r.recon import align as A
from vibe3r.recon import export as X
from vibe3r.recon import inference as I
from vibe3r.recon.pose import crop_to_multiple
from vibe3r.recon.scene_graph import make_graph
from vibe3r.recon.triangulate import DEPTH_SOURCES, select_depth

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CKPTS = (REPO_ROOT / "weights" / "recon-base", Path(__file__).resolve().parents[1] / "weights" / "recon-base")
PhaseProgress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class RunConfig:
    """Knobs of ``reconstruct`` (the CLI exposes the common ones)."""

    size: int = 128  # longer image side fed to the network (pixels; cropped to a multiple of the patch size)
    max_frames: int | None = 64  # frames kept, evenly spread (None = all)
    graph: str = "auto"  # auto | complete | swin (scene_graph.py)
    window: int = 3  # swin: each frame with its next `window` frames
    keyframe_every: int | None = None  # swin: default ceil(sqrt(n))
    complete_max: int = 10  # auto: complete graph up to this many frames
    symmetric: bool = True  # run both orders of each pair
    batch_size: int = 8  # pairs per network batch
    pose_solver: str = "auto"  # auto | essential | pnp | procrustes (inference.estimate_pair_poses)
    ransac: str = "usac_accurate"  # essential-matrix estimator
    ransac_px: float = 1.0
    use_capture_K: bool = True  # trust the capture's intrinsics when it has them
    fov_deg: float | None = None  # horizontal field of view when K is unknown (else estimated)
    shared_focal: bool = True  # one camera for all frames when the focal is estimated
    plausible_fov_deg: tuple[float, float] = (20.0, 140.0)  # estimated focals outside this field of view are rejected ...
    default_fov_deg: float = 60.0  # ... for this one
    align: A.AlignConfig = field(default_factory=A.AlignConfig)
    conf_quantile: float = 0.2  # drop this fraction of the least confident pixels from the exports
    mesh: bool = True  # TSDF mesh
    static_threshold: float = 1.0  # mean |frame - first frame| (0..255) below which the camera is static
    depth: str = "triangulated+pointmap"  # exported depth: pointmap | triangulated | triangulated+pointmap (recon/triangulate.py; measured in bench/sequence.md)

    def __post_init__(self) -> None:
        if self.depth not in DEPTH_SOURCES:
            raise InputError(f"unknown depth source {self.depth!r}; valid: {', '.join(DEPTH_SOURCES)}")


def default_checkpoint() -> Path:
    """The shipped base checkpoint, or a one-line InputError saying how to get it."""
    for d in DEFAULT_CKPTS:
        if (d / "config.json").is_file() and (d / "model.safetensors").is_file():
            return d
    raise InputError("no --ckpt given and the shipped checkpoint weights/recon-base is missing; train it with "
                     "`vibe3r recon train --config configs/recon-base.yaml --data data/sim-pairs-128 --out weights/recon-base` "
                     "or pass --ckpt DIR")


def check_motion(images: np.ndarray, threshold: float) -> float:
    """Largest mean absolute difference (0..255) of any frame to the first one, on 32-px grey thumbnails;
    raises InputError when below ``threshold`` (a static camera gives no parallax)."""
    import cv2

    thumbs = []
    for im in images:
        h, w = im.shape[:2]
        s = 32 / max(h, w)
        g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
        thumbs.append(cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA).astype(np.float32))
    t = np.stack(thumbs)
    motion = float(np.abs(t - t[0]).mean((1, 2)).max())
    if motion < threshold:
        raise InputError(f"the camera does not move: all {len(images)} frames are nearly identical "
                         f"(largest mean difference {motion:.2f}/255); a reconstruction needs a moving camera")
    return motion


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def gt_metrics(al: A.Alignment, cap: Capture) -> dict[str, float]:
    """ATE (Sim(3)), RPE and depth metrics (median-scaled) against the capture's ground truth."""
    out: dict[str, float] = {}
    if cap.cam2world is not None:
        out["ate_sim3"] = geometry.ate(al.c2w, cap.cam2world, "sim3")
        ext = float(np.linalg.norm(np.ptp(cap.cam2world[:, :3, 3], 0)))
        out["gt_path_extent"] = ext
        out.update({k: v for k, v in geometry.rpe(al.c2w, cap.cam2world).items()})
    if cap.depth is not None:
        m = geometry.depth_metrics(al.depth, cap.depth)
        out.update(depth_abs_rel=m["abs_rel"], depth_delta1=m["delta1"])
    return out


@dataclass
class Aligned:
    """What ``align_capture`` computed: the alignment and what the exports and metrics need."""

    al: A.Alignment
    pred: I.PairwisePredictions
    images: np.ndarray  # N,H,W,3 uint8, the frames the network saw (cropped to the patch size)
    gt: Capture  # the input capture cropped like ``images`` (its K, depth follow the crop)
    n_pairs: int
    k_source: str
    motion: float
    timings: dict[str, float]
    peak_rss_mb_after_align: float


# Pairwise front end replacing the network: (images (N,H,W,3) uint8, directed edges (E,2), K (N,3,3))
# -> PairwisePredictions with relative poses (e.g. the SIFT peer of ``vibe3r.eval.sift_pairwise``).
PairwiseFn = Callable[[np.ndarray, np.ndarray, np.ndarray], I.PairwisePredictions]


def align_capture(cap: Capture, model: torch.nn.Module | None = None, cfg: RunConfig | None = None,
                  progress: PhaseProgress | None = None, oracle: bool = False,
                  pairwise: PairwiseFn | None = None) -> Aligned:
    """Scene graph → pairwise predictions → pair poses → global alignment of a loaded capture.

    The pairwise predictions come from ``model`` (a ``ReconModel``), from the capture's exact geometry
    (``oracle=True``, ``inference.ground_truth_pairwise``; needs depth, K and poses) or from
    ``pairwise`` (a classical front end that brings its own relative poses; K must then be known
    from the capture or ``cfg.fov_deg``, else ``cfg.default_fov_deg`` is used).
    """
    cfg = cfg or RunConfig()
    prog = progress or (lambda phase, done, total: None)
    timings: dict[str, float] = {}
    n = len(cap)
    if n < 2:
        raise InputError(f"a reconstruction needs at least 2 frames, the capture has {n}")
    if model is None and not oracle and pairwise is None:
        raise ValueError("align_capture needs a model, a pairwise front end or oracle=True")
    images, K_cap = cap.images, cap.K
    depth_gt = cap.depth
    if model is not None:  # crop to a multiple of the patch size (K's principal point follows)
        p = model.config.patch_size
        K0 = K_cap[0] if K_cap is not None else np.eye(3)
        crops = [crop_to_multiple(im, K0, p) for im in images]
        images = np.stack([c[0] for c in crops])
        if K_cap is not None:
            K_cap = np.stack([crop_to_multiple(im, k, p)[1] for im, k in zip(cap.images, cap.K)])
        if depth_gt is not None:
            H, W = images.shape[1:3]
            y0, x0 = (cap.hw[0] - H) // 2, (cap.hw[1] - W) // 2
            depth_gt = depth_gt[:, y0 : y0 + H, x0 : x0 + W]
    H, W = images.shape[1:3]
    if H < 8 or W < 8:
        raise InputError(f"frames of {W}x{H} pixels are too small; use a larger --size")
    motion = check_motion(images, cfg.static_threshold)
    timings["load"] = 0.0

    t = time.perf_counter()
    pairs = make_graph(n, cfg.graph, window=cfg.window, keyframe_every=cfg.keyframe_every, complete_max=cfg.complete_max)
    edges = I.directed_edges(pairs, cfg.symmetric)
    prog("graph", 1, 1)
    timings["graph"] = time.perf_counter() - t

    known_K = cfg.use_capture_K and K_cap is not None
    t = time.perf_counter()
    if oracle:
        if cap.depth is None or cap.K is None or cap.cam2world is None:
            raise InputError("the oracle needs a capture with depth, intrinsics and poses")
        pred = I.ground_truth_pairwise(depth_gt, K_cap, cap.cam2world, edges)
    elif pairwise is not None:
        fov = cfg.fov_deg if cfg.fov_deg is not None else cfg.default_fov_deg
        K_pw = np.asarray(K_cap, np.float64) if known_K else np.stack([geometry.intrinsics_from_fov(fov, W, H).numpy()] * n)
        pred = pairwise(images, edges, K_pw)
    else:
        pred = I.run_pairs(model, images, edges, cfg.batch_size, match=True, progress=lambda d, tot: prog("inference", d, tot))
    timings["inference"] = time.perf_counter() - t

    t = time.perf_counter()
    if known_K:
        K = np.asarray(K_cap, np.float64)
        k_source = "capture"
    elif cfg.fov_deg is not None or pairwise is not None:
        fov = cfg.fov_deg if cfg.fov_deg is not None else cfg.default_fov_deg
        K = np.stack([geometry.intrinsics_from_fov(fov, W, H).numpy()] * n)
        k_source = f"fov {fov:g} deg"
    else:
        K = I.frame_intrinsics(pred, n, shared=cfg.shared_focal)
        k_source = "pointmaps"
        f_lo, f_hi = (0.5 * max(H, W) / np.tan(np.radians(d / 2)) for d in cfg.plausible_fov_deg[::-1])
        f_med = float(np.median(K[:, 0, 0]))
        if not f_lo <= f_med <= f_hi:  # a pointmap that is no camera (e.g. an untrained network)
            K = np.stack([geometry.intrinsics_from_fov(cfg.default_fov_deg, W, H).numpy()] * n)
            k_source = f"default fov {cfg.default_fov_deg:g} deg (pointmap focal {f_med:.3g} px is implausible)"
    if not oracle and pairwise is None:
        I.estimate_pair_poses(pred, K, cfg.pose_solver, ransac_px=cfg.ransac_px, ransac=cfg.ransac,
                              progress=lambda d, tot: prog("poses", d, tot))
    timings["poses"] = time.perf_counter() - t

    t = time.perf_counter()
    fix_K = known_K or cfg.fov_deg is not None or pairwise is not None
    acfg = A.AlignConfig(**{**asdict(cfg.align), "shared_focal": cfg.shared_focal})
    al = A.global_align(pred, n, K, known_K=fix_K, cfg=acfg, progress=lambda i, tot, loss: prog("align", i, tot))
    timings["align"] = time.perf_counter() - t
    gt = Capture(name=cap.name, images=images, frame_names=cap.frame_names, K=K_cap, cam2world=cap.cam2world,
                 depth=depth_gt, timestamps=cap.timestamps, source=cap.source, meta=cap.meta)
    return Aligned(al=al, pred=pred, images=images, gt=gt, n_pairs=len(pairs), k_source=k_source, motion=motion,
                   timings=timings, peak_rss_mb_after_align=_peak_rss_mb())


def reconstruct(cap: Capture, out_dir: str | Path, model: torch.nn.Module | None = None, cfg: RunConfig | None = None,
                progress: PhaseProgress | None = None, oracle: bool = False, extra_report: dict | None = None) -> dict:
    """Reconstruct a loaded capture into ``out_dir`` (exports + ``report.json``); returns the report.

    ``model`` is a ``ReconModel``; ``oracle=True`` replaces the network by the capture's exact
    geometry (``inference.ground_truth_pairwise``; needs depth, K and poses) to test the rest.
    """
    cfg = cfg or RunConfig()
    prog = progress or (lambda phase, done, total: None)
    t0 = time.perf_counter()
    out = Path(out_dir)
    if model is None and not oracle:
        raise ValueError("reconstruct needs a model (or oracle=True)")
    r = align_capture(cap, model, cfg, progress, oracle)
    al, pred, images, timings = r.al, r.pred, r.images, r.timings

    t = time.perf_counter()
    al.depth = select_depth(cfg.depth, al.depth, pred, al.c2w, al.K)
    metrics = gt_metrics(al, r.gt)
    scale = X.normalize_scale(al)
    info = X.export_all(out, al, images, cap.frame_names, conf_quantile=cfg.conf_quantile, mesh=cfg.mesh,
                        extra_cameras={"source": str(cap.meta.get("path", cap.name)), "intrinsics_from": r.k_source})
    prog("export", 1, 1)
    timings["export"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    H, W = images.shape[1:3]

    methods = {m: pred.pose_method.count(m) for m in sorted(set(pred.pose_method))}
    report = {
        "input": str(cap.meta.get("path", cap.name)),
        "format": cap.source,
        "frames": len(cap),
        "frames_used": list(cap.frame_names),
        "source_index": cap.meta.get("source_index"),
        "image_size": [W, H],
        "graph": {"kind": cfg.graph, "pairs": r.n_pairs, "edges": int(pred.n_edges), "symmetric": cfg.symmetric},
        "pose_methods": methods,
        "mean_confidence": float(np.mean([pred.conf_a.float().mean(), pred.conf_b.float().mean()])),
        "intrinsics_from": r.k_source,
        "depth_source": cfg.depth,
        "focal_px": float(np.median(al.K[:, 0, 0])),
        "alignment": {"iters": cfg.align.iters, "stride": al.stride, "loss_init": al.init_loss,
                      "loss_final": al.losses[-1] if al.losses else float("nan"), "seconds": al.seconds},
        "scale_to_median_depth_1": scale,
        "camera_motion": r.motion,
        "pairwise_mb": pred.nbytes() / 2**20,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_mb_after_align": r.peak_rss_mb_after_align,
        "timings_s": timings,
        "exports": info,
        "gt": metrics,
        **(extra_report or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    return report


def reconstruct_path(spec: str | Path, out_dir: str | Path, ckpt: str | Path | None = None, cfg: RunConfig | None = None,
                     progress: PhaseProgress | None = None, threads: int = 1) -> dict:
    """Load the capture ``spec`` (any format of ``vibe3r.captures``) and the checkpoint, then ``reconstruct``."""
    from vibe3r.recon.model import ReconModel

    cfg = cfg or RunConfig()
    torch.set_num_threads(threads)
    ckpt_dir = Path(ckpt) if ckpt is not None else default_checkpoint()
    t = time.perf_counter()
    model = ReconModel.from_pretrained(ckpt_dir)
    cap = load_capture(spec, size=cfg.size, max_frames=cfg.max_frames)
    load_s = time.perf_counter() - t
    if progress is not None:
        progress("load", 1, 1)
    report = reconstruct(cap, out_dir, model=model, cfg=cfg, progress=progress,
                         extra_report={"checkpoint": str(ckpt_dir), "model_parameters": model.num_parameters})
    report["timings_s"]["load"] = load_s
    report["timings_s"]["total"] += load_s
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=1, default=float))
    return report
