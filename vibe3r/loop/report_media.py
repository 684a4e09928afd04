"""The pictures of ``vibe3r loop compare``: chosen-vs-rejected examples, generated frames, camera trajectories.

Per round, each piece is absent (with the reason) when the round lacks what it needs:

* **chosen vs rejected** — from the round's preference store (``rounds/NNNN/sample_real/preferences.sqlite``),
  up to ``examples`` reward preferences (largest, median and smallest margin): the two frames side by
  side (loaded with ``vibe3r.captures.load_capture`` at the round's ``preference.size``), once with the
  chosen and once with the rejected sample's cycle-consistent matches, each line coloured by its Sampson
  distance (px) under that sample's stored pose ``T21``. No model is needed: a sample's draws are cells
  of the descriptor grid, drawn at cell centres (the policy refines view-2 positions to sub-cell, so
  the drawn error is a little larger than the one RANSAC saw). The pose error against the capture's
  ground truth is given when the capture has poses.
* **generator** — the ``prefer_video`` stage's ``generator.json`` (held-out camera error of candidate
  and parent by both fixed judges) and a frame strip: the round's generator
  (``rounds/NNNN/prefer_video/model``) samples one held-out prompt (the run's first held-out video,
  else the round's first generated video) with a fixed seed, under the prompt's rendered frames.
* **trajectory** — the round's final reconstruction checkpoint (``vibe3r.serve.evaluator.round_checkpoints``:
  ``prefer_recon`` after ``train_recon``) reconstructs a short real sequence with ground-truth poses
  (default: 15 frames of 7-Scenes redkitchen's evaluation half, ``vibe3r.recon.run.reconstruct``,
  no mesh); the predicted camera centres are Sim(3)-aligned to the GT (Umeyama) and plotted in the
  plane of the GT trajectory's two principal axes; ATE (Sim(3), RMSE) in the title, the GLB linked. The
  run's base checkpoint (round 0, ``loop.base_checkpoint``) comes first when the run has one, as the reference.

Everything slow is cached under ``RUN/report-cache/<kind>-<key>/`` where ``key`` hashes the inputs'
bytes (store, checkpoint weights), the settings and ``MEDIA_VERSION``; a folder appears atomically
(written as ``.<name>.tmp-<pid>``, renamed when complete). A run directory that cannot be written
gets its media built in a temporary folder, uncached. Failures are not cached.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MEDIA_VERSION = 1  # bump when a picture's content changes: old cache entries are then ignored
CACHE_NAME = "report-cache"
DEFAULT_TRAJECTORY = "../shared/data/real/7scenes-redkitchen@125:185:4"  # frames 500-736: evaluation half, 15 frames
MAX_LINES = 80  # match lines drawn per image pair (evenly subsampled)
SAMPSON_MAX_PX = 4.0  # colour scale of the match lines: 0 px green ... >= this red


@dataclass
class MediaSettings:
    """What the report's pictures are (part of every cache key)."""

    trajectory: str | None = DEFAULT_TRAJECTORY  # capture spec with GT poses; None: no trajectories
    size: int = 128  # longer image side of the trajectory reconstruction
    iters: int = 100  # global-alignment iterations of the trajectory reconstruction
    base: bool = True  # also the run's base checkpoint (round 0), as the first trajectory panel
    examples: int = 3  # chosen-vs-rejected preferences shown per round
    gen_seed: int = 0  # seed of the generated video (the same for every round: comparable strips)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def bytes_sha(path: Path) -> str:
    """sha256 of a file's bytes (a cache key, not an artifact hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class MediaCache:
    """``RUN/report-cache/<kind>-<key>/`` folders, built once; counts hits and builds."""

    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir) / CACHE_NAME
        self.hits = 0
        self.builds = 0
        self._scratch: Path | None = None

    def get(self, kind: str, key_parts: Any, build: Callable[[Path], None]) -> Path:
        """The folder of ``(kind, key_parts)``; ``build(folder)`` fills a fresh one when it is not cached."""
        key = hashlib.sha256(json.dumps([MEDIA_VERSION, kind, key_parts], sort_keys=True, default=str).encode()).hexdigest()[:16]
        final = self.root / f"{kind}-{key}"
        if (final / "DONE").is_file():
            self.hits += 1
            return final
        self.builds += 1
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{final.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        except OSError:  # a read-only run: build uncached
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="vibe3r-report-"))
            tmp = final = self._scratch / final.name
            tmp.mkdir(exist_ok=True)
            build(tmp)
            return final
        try:
            build(tmp)
            (tmp / "DONE").write_text("")
            if final.exists():  # another process finished it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:300]


def _round_config(run_dir: Path, rnd: int):  # noqa: ANN202
    from vibe3r.config import load_config

    p = run_dir / "rounds" / f"{rnd:04d}" / "config.yaml"
    return load_config(p) if p.is_file() else None


# --------------------------------------------------------------------------------------------
# Chosen vs rejected
# --------------------------------------------------------------------------------------------


def _unpack_draws(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(blob)) as z:
        return z["fwd"], z["bwd"]


def read_preferences(store: Path, rnd: int, k: int) -> list[dict[str, Any]]:
    """Up to ``k`` reward preferences of round ``rnd`` (largest, median, smallest margin, ...), read-only."""
    db = sqlite3.connect(f"file:{store.resolve()}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute(
            "SELECT p.id, p.margin, p.source, c.spec, pr.i, pr.j, p.chosen_id, p.rejected_id FROM preferences p"
            " JOIN pairs pr ON pr.id = p.pair_id JOIN captures c ON c.id = pr.capture_id"
            " WHERE p.round = ? AND p.source = 'reward' ORDER BY p.margin DESC, p.id", (rnd,)).fetchall()
        if not rows:
            return []
        pick = sorted({int(round(x)) for x in np.linspace(0, len(rows) - 1, min(k, len(rows)))})
        out = []
        for r in (rows[q] for q in pick):
            samples = {}
            for side, sid in (("chosen", r["chosen_id"]), ("rejected", r["rejected_id"])):
                s = db.execute("SELECT seed, t21, n_matches, n_inliers, draws, rewards, combined, degenerate FROM samples WHERE id=?",
                               (sid,)).fetchone()
                fwd, bwd = _unpack_draws(s["draws"])
                samples[side] = {"id": sid, "seed": s["seed"], "T21": None if s["t21"] is None else np.array(json.loads(s["t21"])),
                                 "n_matches": s["n_matches"], "n_inliers": s["n_inliers"], "fwd": fwd, "bwd": bwd,
                                 "rewards": json.loads(s["rewards"] or "{}"), "combined": s["combined"], "degenerate": s["degenerate"]}
            out.append({"id": r["id"], "margin": r["margin"], "spec": r["spec"], "i": r["i"], "j": r["j"], **samples})
        return out
    finally:
        db.close()


def grid_shape(n: int, H: int, W: int) -> tuple[int, int]:
    """The descriptor grid (h, w) with h·w = n cells closest to the image's aspect ratio H/W."""
    best = min((h for h in range(1, n + 1) if n % h == 0), key=lambda h: abs(np.log(h / (n // h)) - np.log(H / W)))
    return best, n // best


def cell_matches(fwd: np.ndarray, bwd: np.ndarray, hw_img: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Cycle-consistent matches ``(kp1 (M,2), kp2 (M,2))`` in pixels of the centre crop ``(Hc, Wc)`` the grid tiles,
    as in ``MatchPolicy._reconstruct`` (cell centres, no sub-cell refinement)."""
    H, W = hw_img
    h, w = grid_shape(len(fwd), H, W)
    cs = min(H // h, W // w)
    Hc, Wc = h * cs, w * cs
    i = np.arange(len(fwd))
    keep = bwd[fwd] == i
    i1, i2 = i[keep], fwd[keep]
    to_px = lambda c: np.stack([(c % w + 0.5) * cs - 0.5, (c // w + 0.5) * cs - 0.5], -1).astype(np.float64)  # noqa: E731
    return to_px(i1), to_px(i2), (Hc, Wc)


def _pose_errors(T21: np.ndarray, T21_gt: np.ndarray) -> tuple[float, float]:
    """Rotation error and translation-direction error (degrees) of a relative pose against GT."""
    dR = T21[:3, :3].T @ T21_gt[:3, :3]
    rot = float(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1))))
    a, b = T21[:3, 3], T21_gt[:3, 3]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    tdir = float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1, 1)))) if na > 0 and nb > 0 else float("nan")
    return rot, tdir


def _crop(img: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    H, W = img.shape[:2]
    y0, x0 = (H - hw[0]) // 2, (W - hw[1]) // 2
    K = K.copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    return img[y0 : y0 + hw[0], x0 : x0 + hw[1]], K


def _frozen_max_frames(run_dir: Path, rnd: int, spec: str) -> int | None:
    from vibe3r.loop.pool import FROZEN_NAME, read_frozen

    p = run_dir / "rounds" / f"{rnd:04d}" / FROZEN_NAME
    if p.is_file():
        for c in read_frozen(p):
            if c.spec == spec:
                return c.max_frames
    return None


def draw_preference(pref: dict[str, Any], cap: Any, out: Path) -> dict[str, Any]:  # noqa: ANN401
    """One PNG: frames i | j twice (chosen above, rejected below), match lines coloured by Sampson px."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from vibe3r.geometry import sampson_px

    i, j = pref["i"], pref["j"]
    K = cap.K if cap.K is not None else None
    gt = None
    if cap.cam2world is not None:
        gt = np.linalg.inv(cap.cam2world[j]) @ cap.cam2world[i]  # camera i -> camera j
    cmap = colormaps["RdYlGn_r"]
    fig = Figure(figsize=(6.4, 5.0))
    info: dict[str, Any] = {}
    for row, side in enumerate(("chosen", "rejected")):
        s = pref[side]
        kp1, kp2, hwc = cell_matches(s["fwd"], s["bwd"], cap.hw)
        img1, K1 = _crop(cap.images[i], K[i] if K is not None else np.eye(3), hwc)
        img2, K2 = _crop(cap.images[j], K[j] if K is not None else np.eye(3), hwc)
        Wc = hwc[1]
        ax = fig.add_subplot(2, 1, row + 1)
        ax.imshow(np.concatenate([img1, img2], 1))
        err = None
        if s["T21"] is not None and K is not None and len(kp1) and np.linalg.norm(s["T21"][:3, 3]) > 0:
            err = sampson_px(s["T21"], kp1, kp2, K1, K2)
        sel = np.linspace(0, len(kp1) - 1, min(MAX_LINES, len(kp1))).round().astype(int) if len(kp1) else np.zeros(0, int)
        for q in sel:
            c = "0.6" if err is None else cmap(min(err[q], SAMPSON_MAX_PX) / SAMPSON_MAX_PX)
            ax.plot([kp1[q, 0], kp2[q, 0] + Wc], [kp1[q, 1], kp2[q, 1]], "-", color=c, lw=0.7, alpha=0.85)
        ax.set_axis_off()
        rec: dict[str, Any] = {"matches": int(len(kp1)), "combined": s["combined"], "rewards": s["rewards"], "degenerate": s["degenerate"],
                               "median_sampson_px": None if err is None else float(np.median(err))}
        if gt is not None and s["T21"] is not None:
            rec["rot_err_deg"], rec["tdir_err_deg"] = _pose_errors(s["T21"], gt)
        title = f"{side}: reward {s['combined']:.3g}, {len(kp1)} matches"
        title += "" if err is None else f", median Sampson {np.median(err):.2g} px"
        title += f", rot err vs GT {rec['rot_err_deg']:.1f}°" if "rot_err_deg" in rec else ""
        title += "" if s["T21"] is not None else " (no pose)"
        ax.set_title(title, fontsize=8)
        info[side] = rec
    fig.suptitle(f"{Path(str(pref['spec']).split('@')[0]).name} frames {i} | {j}; margin {pref['margin']:.3g}"
                 f" (lines: Sampson px, green 0 .. red >= {SAMPSON_MAX_PX:g})", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=90)
    return info


def preference_examples(run_dir: Path, rnd: int, stores: list[Path], s: MediaSettings, cache: MediaCache) -> dict[str, Any]:
    """``{"items": [{"png": b64, "caption": {...}}]}`` or ``{"absent": reason}``."""
    from vibe3r.captures import load_capture

    stores = [p for p in stores if p.is_file()]
    if not stores:
        return {"absent": "no preference store in this round"}
    items, errors = [], []
    for store in stores:
        prefs = read_preferences(store, rnd, s.examples - len(items))
        if not prefs:
            continue
        cfg = _round_config(run_dir, rnd)
        size = cfg.preference.size if cfg is not None else 128

        def build(d: Path, prefs: list = prefs, size: int = size) -> None:
            caps: dict[str, Any] = {}
            meta = []
            for k, p in enumerate(prefs):
                if p["spec"] not in caps:
                    caps[p["spec"]] = load_capture(p["spec"], size=size, max_frames=_frozen_max_frames(run_dir, rnd, p["spec"]))
                cap = caps[p["spec"]]
                if cap.K is None:  # a phone video without intrinsics: the loop's default field of view
                    from vibe3r import geometry
                    from vibe3r.loop.pool import DEFAULT_FOV_DEG

                    H, W = cap.hw
                    cap.K = np.repeat(geometry.intrinsics_from_fov(DEFAULT_FOV_DEG, W, H).numpy().astype(np.float64)[None], len(cap.images), 0)
                info = draw_preference(p, cap, d / f"pref{k}.png")
                meta.append({"id": p["id"], "spec": p["spec"], "i": p["i"], "j": p["j"], "margin": p["margin"], **info})
            (d / "examples.json").write_text(json.dumps(meta, default=float))

        try:
            d = cache.get("prefs", {"store": bytes_sha(store), "round": rnd, "ids": [p["id"] for p in prefs], "size": size}, build)
        except Exception as exc:  # noqa: BLE001 — a picture must never break the report
            errors.append(_reason(exc))
            continue
        meta = json.loads((d / "examples.json").read_text())
        items += [{"png": b64(d / f"pref{k}.png"), "caption": m} for k, m in enumerate(meta)]
        if len(items) >= s.examples:
            break
    if items:
        return {"items": items}
    return {"absent": "; ".join(errors) if errors else "no reward preferences in this round's store"}


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


def _prompt_videos(run_dir: Path, rnd: int) -> list[Path]:
    from vibe3r.video_gen.gen_train import find_videos

    for root in [*sorted(run_dir.glob("heldout-*/pairs")), run_dir / "rounds" / f"{rnd:04d}" / "generate" / "pairs"]:
        if root.is_dir() and not root.parent.name.startswith("."):
            try:
                return find_videos(root)
            except Exception:  # noqa: BLE001
                continue
    return []


def generator_media(run_dir: Path, rnd: int, s: MediaSettings, cache: MediaCache) -> dict[str, Any]:
    """``{"json": generator.json, "png": b64 strip, "prompt": ...}`` (``png`` may be absent with ``strip_absent``)
    or ``{"absent": reason}``."""
    stage = run_dir / "rounds" / f"{rnd:04d}" / "prefer_video"
    model = stage / "model"
    if not stage.is_dir():
        return {"absent": "no prefer_video stage in this round"}
    if (model / "SKIPPED").is_file():
        return {"absent": (model / "SKIPPED").read_text().strip()}
    out: dict[str, Any] = {}
    gj = model / "generator.json"
    if gj.is_file():
        try:
            out["json"] = json.loads(gj.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            out["json_absent"] = _reason(exc)
    weights = model / "model.safetensors"
    if not weights.is_file():
        out["strip_absent"] = "no generator checkpoint in prefer_video/model"
        if "json" not in out:
            return {"absent": "; ".join(v for k, v in out.items() if k.endswith("_absent"))}
        return out
    videos = _prompt_videos(run_dir, rnd)
    if not videos:
        out["strip_absent"] = "no held-out or generated video to take a prompt from"
        return out
    cfg = _round_config(run_dir, rnd)
    steps = cfg.generator.sample.steps if cfg is not None else 25
    stride = cfg.generator.prefer.stride if cfg is not None else 3

    def build(d: Path) -> None:
        from PIL import Image

        from vibe3r.video_gen.diffusion import VideoGenerator
        from vibe3r.video_gen.prefer import clip_prompts, sample_videos

        gen = VideoGenerator.from_pretrained(model)
        c = gen.config
        prompts = clip_prompts(videos[:1], c.frames, c.width, c.height, per_video=1, stride=stride)
        if not prompts:
            raise ValueError(f"{videos[0].name} is too short for a {c.frames}-frame clip at stride {stride}")
        p = prompts[0]
        vid = sample_videos(gen, p, [s.gen_seed], steps)[0][0]  # F,H,W,3
        rows = [np.concatenate(list(p.reference), 1)] if p.reference is not None else []
        rows.append(np.concatenate(list(vid), 1))
        strip = np.concatenate(rows, 0)
        Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(d / "strip.png")
        (d / "strip.json").write_text(json.dumps({"prompt": p.name, "video": Path(videos[0]).name, "steps": steps, "stride": stride,
                                                  "frames": c.frames, "size": [c.width, c.height], "reference": p.reference is not None,
                                                  "text": p.meta.get("prompt", "")}))

    try:
        d = cache.get("gen", {"weights": bytes_sha(weights), "video": str(videos[0].relative_to(run_dir)) if videos[0].is_relative_to(run_dir)
                              else str(videos[0]), "steps": steps, "stride": stride, "seed": s.gen_seed}, build)
        out["png"] = b64(d / "strip.png")
        out["prompt"] = json.loads((d / "strip.json").read_text())
    except Exception as exc:  # noqa: BLE001
        out["strip_absent"] = _reason(exc)
    return out


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


def trajectory(ckpt: Path, s: MediaSettings, cache: MediaCache) -> Path:
    """The cached reconstruction of ``s.trajectory`` with ``ckpt``: ``traj.npz`` (pred, gt c2w), ``scene.glb``,
    ``report.json``."""
    from vibe3r.loop.stages import resolve_path

    spec = str(s.trajectory)
    path_part, _, rng = spec.partition("@")
    full = str(resolve_path(path_part)) + (f"@{rng}" if rng else "")

    def build(d: Path) -> None:
        from vibe3r.captures import load_capture
        from vibe3r.recon.align import AlignConfig
        from vibe3r.recon.model import ReconModel
        from vibe3r.recon.run import RunConfig, reconstruct

        cap = load_capture(full, size=s.size)
        if cap.cam2world is None:
            raise ValueError(f"{spec} has no ground-truth poses")
        model = ReconModel.from_pretrained(ckpt)
        t = time.perf_counter()
        rep = reconstruct(cap, d / "recon", model=model, cfg=RunConfig(size=s.size, max_frames=None, mesh=False,
                                                                       align=AlignConfig(iters=s.iters)))
        cams = json.loads((d / "recon" / "cameras.json").read_text())["frames"]
        pred = np.array([f["cam2world"] for f in cams], np.float64)
        np.savez(d / "traj.npz", pred=pred, gt=cap.cam2world.astype(np.float64))
        shutil.move(d / "recon" / "scene.glb", d / "scene.glb")
        (d / "report.json").write_text(json.dumps({**rep, "seconds": time.perf_counter() - t}, default=float))
        shutil.rmtree(d / "recon")

    return cache.get("traj", {"weights": bytes_sha(Path(ckpt) / "model.safetensors"), "spec": spec, "size": s.size, "iters": s.iters}, build)


def _sim3_aligned(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, float]:
    from vibe3r import geometry

    p, g = pred[:, :3, 3], gt[:, :3, 3]
    R, t, sc = geometry.umeyama_alignment(p, g, with_scale=True)
    aligned = sc * p @ R.numpy().T + t.numpy()
    return aligned, geometry.ate(pred, gt, "sim3")


def plot_trajectories(panels: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """One panel per ``(title, pred c2w, gt c2w)``: GT and Sim(3)-aligned predicted camera centres in the plane of
    the GT trajectory's two principal axes (top-down for a walk on a floor). Base64 PNG."""
    from matplotlib.figure import Figure

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(3.6 * cols, 3.4 * rows))
    for k, (title, pred, gt) in enumerate(panels):
        aligned, err = _sim3_aligned(pred, gt)
        g = gt[:, :3, 3]
        mu = g.mean(0)
        _, _, Vt = np.linalg.svd(g - mu)
        gg, pp = (g - mu) @ Vt[:2].T, (aligned - mu) @ Vt[:2].T
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.plot(gg[:, 0], gg[:, 1], "o-", color="0.3", ms=3, lw=1.2, label="GT")
        ax.plot(pp[:, 0], pp[:, 1], "o-", color="C3", ms=3, lw=1.2, label="predicted (Sim(3))")
        for a, b in zip(gg, pp):
            ax.plot([a[0], b[0]], [a[1], b[1]], "-", color="C3", lw=0.5, alpha=0.4)
        ax.plot(gg[:1, 0], gg[:1, 1], "s", color="k", ms=5)
        ax.set_aspect("equal", "datalim")
        ax.set_title(f"{title}: ATE {err:.3f} m", fontsize=9)
        ax.set_xlabel("GT principal axis 1 (m)", fontsize=7)
        ax.set_ylabel("axis 2 (m)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _safe(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)``, or ``{"absent": reason}`` when it fails: a picture never breaks the report."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return {"absent": _reason(exc)}


def _trajectory_record(d: Path, ckpt: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    z = np.load(d / "traj.npz")
    pred, gt = z["pred"], z["gt"]
    rep = json.loads((d / "report.json").read_text())
    rec = {"ate": _sim3_aligned(pred, gt)[1], "glb": str(d / "scene.glb"), "frames": len(pred), "checkpoint": str(ckpt),
           "rpe_rot_deg": rep.get("gt", {}).get("rpe_rot_deg"), "build_seconds": rep.get("seconds")}
    return rec, pred, gt


# --------------------------------------------------------------------------------------------
# All of it
# --------------------------------------------------------------------------------------------


def collect_media(run_dir: str | Path, rounds: list[dict[str, Any]], settings: MediaSettings | None = None) -> dict[str, Any]:
    """The pictures of the rounds (``rounds``: :func:`vibe3r.loop.compare.collect`'s records).

    Returns ``{"rounds": {rnd: {"prefs", "generator", "trajectory"}}, "base": the base checkpoint's trajectory
    record | None, "trajectories": b64 | None,
    "cache": {"hits", "builds", "dir"}, "seconds", "settings"}``; each piece holds ``absent`` with the
    reason when the round lacks it."""
    from vibe3r.serve.evaluator import round_checkpoints

    run_dir = Path(run_dir)
    s = settings or MediaSettings()
    cache = MediaCache(run_dir)
    t0 = time.perf_counter()
    try:
        ckpts = round_checkpoints(run_dir)
    except Exception:  # noqa: BLE001
        ckpts = {}
    out: dict[str, Any] = {"rounds": {}, "base": None}
    panels = []
    if s.base and s.trajectory is not None and 0 in ckpts:
        try:
            out["base"], pred, gt = _trajectory_record(trajectory(ckpts[0], s, cache), ckpts[0])
            panels.append(("base", pred, gt))
        except Exception:  # noqa: BLE001 — the rounds' panels still come
            out["base"] = None
    for r in rounds:
        rnd = r["round"]
        stores = [run_dir / p for p in ((r.get("preference") or {}).get("stores") or [])]
        rec: dict[str, Any] = {"prefs": _safe(preference_examples, run_dir, rnd, stores, s, cache),
                               "generator": _safe(generator_media, run_dir, rnd, s, cache)}
        ck = ckpts.get(rnd)
        if s.trajectory is None:
            rec["trajectory"] = {"absent": "trajectories turned off"}
        elif ck is None:
            rec["trajectory"] = {"absent": "no reconstruction checkpoint in this round"}
        else:
            try:
                rec["trajectory"], pred, gt = _trajectory_record(trajectory(ck, s, cache), ck)
                panels.append((f"round {rnd}", pred, gt))
            except Exception as exc:  # noqa: BLE001
                rec["trajectory"] = {"absent": _reason(exc)}
        out["rounds"][rnd] = rec
    out["trajectories"] = plot_trajectories(panels) if panels else None
    out["cache"] = {"hits": cache.hits, "builds": cache.builds, "dir": str(cache.root)}
    out["seconds"] = time.perf_counter() - t0
    out["settings"] = asdict(s)
    return out


def media_summary(media: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the media (for ``--json``): no images."""
    rounds = {}
    for rnd, rec in media["rounds"].items():
        prefs = rec["prefs"]
        gen = rec["generator"]
        rounds[rnd] = {
            "examples": None if "items" not in prefs else [it["caption"] for it in prefs["items"]],
            "generator_strip": "png" in gen,
            "trajectory": {k: v for k, v in rec["trajectory"].items()},
        }
    return {"rounds": rounds, "base_trajectory": media.get("base"), "cache": media["cache"], "seconds": media["seconds"],
            "settings": media["settings"]}
