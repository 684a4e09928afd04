"""Comparisons for the evaluator page: reconstructions of a run's real captures by consecutive rounds.

    vibe3r serve --run runs/demo                  # builds the comparisons in the background, /evaluate shows them
    python -m vibe3r.serve.evaluator '{"run": "runs/demo"}'   # the builder alone (what the server starts)

For every real capture of the run (the last round's ``captures.json``, else its config's
``preference.captures``; or ``EvalSettings.captures``) the builder takes ``frames`` frames, evenly spread,
at ``size`` pixels and reconstructs them (``recon.run.reconstruct``: pairwise inference, global alignment,
GLB) with the checkpoint of each round — the last ``recon`` a round's stages produced (its candidate,
promoted or not) — and with the base checkpoint as round 0. Each reconstruction is rendered from two
viewpoints (a numpy point splatter: behind the first camera, and an oblique overview) and cached in
``RUN/evaluator/<capture+settings hash>-<model version>/`` (scene.glb, view0.png, view1.png, input.png);
a folder that exists is complete (written under a temporary name, then renamed). Every consecutive pair
of rounds (r-1, r) gives one comparison per capture, its sides shown as A and B in an order fixed by a
hash (so that the newer round is not always on the same side). Rows go into the run-level preference
store ``RUN/preferences.sqlite`` (reconstructions, comparisons); the page's verdicts become its
judgements, which ``vibe3r loop compare`` turns into each round's human win rate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vibe3r.errors import InputError, Vibe3rError

STORE_NAME = "preferences.sqlite"
CACHE_DIR = "evaluator"
FILES = ("scene.glb", "view0.png", "view1.png", "input.png")

log = logging.getLogger("vibe3r.serve")


@dataclass
class EvalSettings:
    """What the evaluator's reconstructions are: small and fast (a few frames at the model's size)."""

    run: Path | None = None  # loop run directory; None: no evaluator page
    frames: int = 6  # frames of each capture, evenly spread
    size: int = 128  # longer image side the network sees
    iters: int = 100  # global alignment iterations
    pose: str = "auto"  # pair pose solver (recon.run.RunConfig.pose_solver)
    captures: list[str] = field(default_factory=list)  # capture specs; empty: the run's real captures
    max_captures: int = 4  # at most this many of the run's captures
    render: int = 320  # width of the rendered views (pixels)

    def __post_init__(self) -> None:
        if self.run is not None:
            self.run = Path(self.run)
        if self.frames < 2 or self.size < 16 or self.iters < 0 or self.max_captures < 1 or self.render < 32:
            raise InputError(f"bad evaluator settings: frames {self.frames} (>= 2), size {self.size} (>= 16), iters "
                             f"{self.iters} (>= 0), max_captures {self.max_captures} (>= 1), render {self.render} (>= 32)")

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "run": None if self.run is None else str(self.run)})

    @classmethod
    def from_json(cls, text: str) -> EvalSettings:
        return cls(**json.loads(text))


# --------------------------------------------------------------------------------------------
# What a run holds: checkpoints per round, real captures
# --------------------------------------------------------------------------------------------


def round_checkpoints(run_dir: Path) -> dict[int, Path]:
    """``{round: checkpoint}``: 0 the base checkpoint (when the run has one), then each round's last ``recon``."""
    from vibe3r.config import load_config
    from vibe3r.loop.compare import open_registry_ro
    from vibe3r.loop.stages import resolve_path

    reg = open_registry_ro(run_dir)
    try:
        out: dict[int, Path] = {}
        rounds = [r["round"] for r in reg.rounds()]
        if rounds:
            cfg_path = run_dir / "rounds" / f"{rounds[0]:04d}" / "config.yaml"
            base = load_config(cfg_path).loop.base_checkpoint if cfg_path.is_file() else None
            if base is not None and (resolve_path(base) / "model.safetensors").is_file():
                out[0] = resolve_path(base).resolve()
        for rnd in rounds:
            for row in reg.stages(rnd):
                outputs = json.loads(row["outputs_json"] or "{}")
                if row["state"] == "done" and "recon" in outputs and (run_dir / outputs["recon"] / "model.safetensors").is_file():
                    out[rnd] = run_dir / outputs["recon"]  # the last one wins: prefer_recon after train_recon
        return out
    finally:
        reg.close()


def run_captures(run_dir: Path) -> list[str]:
    """The real captures of the run's last round (its frozen ``captures.json``, else its config)."""
    from vibe3r.config import load_config
    from vibe3r.loop.pool import FROZEN_NAME, read_frozen, resolve_captures

    rounds = sorted((run_dir / "rounds").glob("[0-9][0-9][0-9][0-9]"), reverse=True)
    for d in rounds:
        if (d / FROZEN_NAME).is_file():
            return [c.spec for c in read_frozen(d / FROZEN_NAME)]
        if (d / "config.yaml").is_file():
            return [c.spec for c in resolve_captures(load_config(d / "config.yaml"))]
    return []


# --------------------------------------------------------------------------------------------
# Rendering a point cloud (numpy splats, no GPU, no window)
# --------------------------------------------------------------------------------------------


def look_at(eye: np.ndarray, target: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 (OpenCV axes: z towards ``target``, y along ``down``)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(down, z)
    x = x / max(np.linalg.norm(x), 1e-9)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def splat(points: np.ndarray, colors: np.ndarray, K: np.ndarray, c2w: np.ndarray, hw: tuple[int, int],
          radius: int = 1, background: tuple[int, int, int] = (32, 36, 44)) -> np.ndarray:
    """Render points (N, 3) world, colours (N, 3) uint8 seen by camera ``K``, ``c2w`` as (H, W, 3) uint8
    squares of side 2 * radius + 1; nearer points cover farther ones."""
    H, W = hw
    img = np.empty((H, W, 3), np.uint8)
    img[:] = background
    w2c = np.linalg.inv(c2w)
    X = points @ w2c[:3, :3].T + w2c[:3, 3]  # N,3 camera frame
    keep = X[:, 2] > 1e-6
    X, C = X[keep], colors[keep]
    u = np.round(K[0, 0] * X[:, 0] / X[:, 2] + K[0, 2]).astype(np.int64)
    v = np.round(K[1, 1] * X[:, 1] / X[:, 2] + K[1, 2]).astype(np.int64)
    d = np.arange(-radius, radius + 1)
    du, dv = (a.ravel() for a in np.meshgrid(d, d))
    uu, vv = (u[:, None] + du[None]).ravel(), (v[:, None] + dv[None]).ravel()
    zz, cc = np.repeat(X[:, 2], du.size), np.repeat(C, du.size, axis=0)
    ok = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
    order = np.argsort(-zz[ok], kind="stable")  # far first: the nearest point is written last
    img[vv[ok][order], uu[ok][order]] = cc[ok][order]
    return img


def render_views(out: Path, width: int) -> list[np.ndarray]:
    """``view0`` from behind the first camera and ``view1`` an oblique overview of ``out/scene.ply``."""
    import open3d as o3d

    pc = o3d.io.read_point_cloud(str(out / "scene.ply"))
    P = np.asarray(pc.points, np.float64)
    C = (np.asarray(pc.colors) * 255).clip(0, 255).astype(np.uint8) if pc.has_colors() else np.full((len(P), 3), 200, np.uint8)
    cams = json.loads((out / "cameras.json").read_text())["frames"]
    c2w0, K0 = np.array(cams[0]["cam2world"]), np.array(cams[0]["K"])
    s = width / cams[0]["width"]
    hw = (int(round(cams[0]["height"] * s)), width)
    K = K0.copy()
    K[:2] *= s
    if len(P) == 0:
        return [splat(P, C, K, c2w0, hw)] * 2
    fwd, down, centre0 = c2w0[:3, 2], c2w0[:3, 1], c2w0[:3, 3]
    target = np.median(P, axis=0)
    dist = max(float(np.linalg.norm(target - centre0)), 1e-3)
    behind = c2w0.copy()
    behind[:3, 3] = centre0 - 0.5 * dist * fwd
    a = np.radians(35.0)  # turn around the vertical (the first camera's y) and lift
    rel = centre0 - target
    up = -down
    rot = rel * np.cos(a) + np.cross(up, rel) * np.sin(a) + up * np.dot(up, rel) * (1 - np.cos(a))
    over = look_at(target + 1.3 * rot + 0.6 * dist * up, target, down)
    Kw = K.copy()
    Kw[0, 0] = Kw[1, 1] = 0.8 * K[0, 0]  # a little wider for the overview
    return [splat(P, C, K, behind, hw), splat(P, C, Kw, over, hw)]


def montage(images: np.ndarray, width: int) -> np.ndarray:
    """The input frames side by side, ``width`` pixels wide."""
    from PIL import Image

    strip = np.concatenate(list(images), axis=1)
    h = max(1, int(round(strip.shape[0] * width / strip.shape[1])))
    return np.asarray(Image.fromarray(strip).resize((width, h), Image.BILINEAR))


# --------------------------------------------------------------------------------------------
# Building the comparisons
# --------------------------------------------------------------------------------------------


def _capture_key(spec: str, s: EvalSettings) -> str:
    return hashlib.sha256(json.dumps([spec, s.frames, s.size, s.iters, s.pose]).encode()).hexdigest()[:10]


def reconstruct_for_eval(cap, ckpt: Path, out: Path, s: EvalSettings) -> None:  # noqa: ANN001
    """Reconstruct the loaded ``cap`` with ``ckpt`` into ``out`` (complete or absent), with the rendered views."""
    from PIL import Image

    from vibe3r.recon.align import AlignConfig
    from vibe3r.recon.model import ReconModel
    from vibe3r.recon.run import RunConfig, reconstruct

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = ReconModel.from_pretrained(ckpt)
    rcfg = RunConfig(size=s.size, max_frames=None, pose_solver=s.pose, mesh=False, align=AlignConfig(iters=s.iters))
    reconstruct(cap, tmp, model=model, cfg=rcfg, extra_report={"checkpoint": str(ckpt)})
    for k, img in enumerate(render_views(tmp, s.render)):
        Image.fromarray(img).save(tmp / f"view{k}.png")
    Image.fromarray(montage(cap.images, 2 * s.render)).save(tmp / "input.png")
    for p in list(tmp.iterdir()):  # keep what the page serves (and the report)
        if p.name not in (*FILES, "report.json", "cameras.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def build(s: EvalSettings, progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Reconstruct what is missing and add the comparisons; returns counts. Captures that cannot be
    reconstructed (e.g. a camera that never moves) are skipped with a logged reason."""
    from vibe3r.captures import load_capture
    from vibe3r.preference.cli import model_version
    from vibe3r.preference.store import PreferenceStore

    say = progress or (lambda msg: None)
    if s.run is None:
        raise Vibe3rError("no run: the evaluator compares the rounds of `--run RUN`")
    run = s.run
    ckpts = round_checkpoints(run)
    specs = s.captures or run_captures(run)[: s.max_captures]
    counts = {"rounds": len(ckpts), "captures": len(specs), "built": 0, "cached": 0, "comparisons": 0, "failed": 0}
    if len(ckpts) < 2 or not specs:
        return counts
    versions = {r: model_version(p) for r, p in ckpts.items()}
    order = sorted(ckpts)
    with PreferenceStore(run / STORE_NAME) as store:
        for spec in specs:
            try:
                cap = load_capture(spec, size=s.size, max_frames=s.frames)
            except InputError as exc:
                log.warning("evaluator: capture %s skipped: %s", spec, exc)
                counts["failed"] += 1
                continue
            cap_id = store.add_capture(spec, cap.name, len(cap.images))
            frames = [int(i) for i in cap.meta["source_index"]]
            ids: dict[int, int] = {}
            for rnd in order:
                rel = Path(CACHE_DIR) / f"{_capture_key(spec, s)}-{versions[rnd]}"
                if (run / rel).is_dir():
                    counts["cached"] += 1
                else:
                    say(f"reconstructing {cap.name} with round {rnd}")
                    t = time.perf_counter()
                    try:
                        reconstruct_for_eval(cap, ckpts[rnd], run / rel, s)
                    except InputError as exc:
                        log.warning("evaluator: %s with round %d skipped: %s", spec, rnd, exc)
                        counts["failed"] += 1
                        continue
                    counts["built"] += 1
                    say(f"reconstructed {cap.name} with round {rnd} in {time.perf_counter() - t:.1f} s")
                ids[rnd] = store.add_reconstruction(cap_id, rnd, versions[rnd], frames, path=rel.as_posix())
            for prev, rnd in zip(order, order[1:]):
                if prev in ids and rnd in ids and ids[prev] != ids[rnd]:  # equal weights: nothing to judge
                    newer_first = hashlib.sha256(f"{spec}|{prev}|{rnd}".encode()).digest()[0] & 1
                    a, b = (ids[rnd], ids[prev]) if newer_first else (ids[prev], ids[rnd])
                    store.add_comparison(a, b)
                    counts["comparisons"] += 1
    return counts


def main(argv: list[str]) -> int:
    """The builder process the server starts: settings JSON as the one argument; writes the counts to stdout."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    s = EvalSettings.from_json(argv[0])
    counts = build(s, progress=lambda m: log.info("evaluator: %s", m))
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
