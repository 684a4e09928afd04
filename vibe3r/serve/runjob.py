"""The job process: ``python -m vibe3r.serve.runjob CONFIG_JSON`` claims queued jobs and runs them, one at a time.

The web server's worker supervises one such process per slot, so a reconstruction that crashes the
interpreter (open3d can abort) or is killed takes nothing else down, and torch is imported once per
process rather than once per job. Phases of a job, each reported in its row: ``decode`` (read and check the frames), ``model``, then ``reconstruct``'s own phases
(``graph``, ``inference``, ``poses``, ``align``, ``export``), then ``package`` (zips, captures pool).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np

from vibe3r.errors import InputError
from vibe3r.serve.config import ServeConfig
from vibe3r.serve.jobs import JobStore

# share of the whole job each phase takes (measured roughly on 7-Scenes at the default settings)
PHASE_WEIGHTS = {"decode": 0.05, "model": 0.02, "graph": 0.01, "inference": 0.37, "poses": 0.15, "align": 0.32,
                 "export": 0.05, "package": 0.03}
PHASES = list(PHASE_WEIGHTS)
BLACK_LEVEL = 16  # a frame whose 99th-percentile grey level (0..255) is below this is black


class Progress:
    """``(phase, done, total)`` callbacks -> the job row, at most every ``every`` seconds within a phase."""

    def __init__(self, store: JobStore, job_id: str, every: float = 0.3):
        self.store, self.job_id, self.every = store, job_id, every
        self.state: dict[str, list[int]] = {}
        self.last = 0.0
        self.phase = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        changed = phase != self.phase
        self.state[phase] = [int(done), int(total)]
        self.phase = phase
        if changed or done >= total or now - self.last >= self.every:
            self.last = now
            self.store.set_progress(self.job_id, phase, self.state, self.fraction())

    def fraction(self) -> float:
        f = 0.0
        for p, w in PHASE_WEIGHTS.items():
            if p in self.state:
                d, t = self.state[p]
                f += w * (min(d, t) / t if t else 1.0)
            if p == self.phase:
                break
            if p not in self.state:
                f += w  # a phase that never reports (e.g. no mesh) counts as done once a later one starts
        return min(f, 1.0)


def check_frames(images: np.ndarray) -> None:
    """InputError when every frame is black (the motion check of ``recon.run`` catches a static camera)."""
    grey = images.mean(-1)  # N,H,W
    levels = np.percentile(grey.reshape(len(grey), -1), 99, axis=1)
    if (levels < BLACK_LEVEL).all():
        raise InputError(f"all {len(images)} frames are black (brightest level {levels.max():.0f}/255); "
                         "was the lens covered or the room dark?")


def _zip(path: Path, root: Path, members: list[Path]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for m in members:
            for f in sorted([m] if m.is_file() else m.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(root).as_posix())
    return path


def package(out: Path) -> dict[str, str]:
    """``colmap.zip`` (text model + images) and ``nerfstudio.zip`` (transforms.json + images + depth PNGs)."""
    _zip(out / "colmap.zip", out, [out / "colmap", out / "images"])
    _zip(out / "nerfstudio.zip", out, [out / "transforms.json", out / "images"] + sorted((out / "depth").glob("*.png")))
    return {"colmap.zip": "colmap.zip", "nerfstudio.zip": "nerfstudio.zip"}


def contribute(cfg: ServeConfig, job: dict, input_path: Path, intrinsics: dict | None = None) -> str:
    """Copy the capture into the real-capture pool: ``<data>/captures/<job id>/`` holds ``video.<ext>`` (or ``images/``)
    and ``meta.json`` (with ``intrinsics``: the focal length the reconstruction found, in native pixels, which
    the loop scores the capture with); ``<data>/captures/index.jsonl`` lists every pooled capture as a
    ``load_capture`` spec (``vibe3r.loop.pool`` reads it)."""
    dest = cfg.pool_dir / job["id"]
    tmp = cfg.pool_dir / f".{job['id']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if input_path.is_dir():
        shutil.copytree(input_path, tmp / "images")
    else:
        shutil.copy2(input_path, tmp / f"video{input_path.suffix}")
    meta = {"job": job["id"], "kind": job["kind"], "submitted": job["created"], "pooled": time.time(), "source": "vibe3r serve upload",
            "consent": "contribute checkbox ticked at upload", "info": job["info"], "intrinsics": intrinsics}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    spec = dest / "images" if input_path.is_dir() else dest / f"video{input_path.suffix}"
    with open(cfg.pool_dir / "index.jsonl", "a") as f:  # one line per capture: what `load_capture` reads
        f.write(json.dumps({"job": job["id"], "spec": str(spec), "kind": job["kind"], "pooled": meta["pooled"]}) + "\n")
    return str(dest)


def input_path(cfg: ServeConfig, job: dict) -> Path:
    d = cfg.jobs_dir / job["id"] / "input"
    if job["kind"] == "images":
        return d / "images"
    return next(p for p in sorted(d.iterdir()) if p.name.startswith("video."))


def run_job(cfg: ServeConfig, job_id: str, models: dict | None = None) -> None:
    """Reconstruct one (claimed) job; the row ends ``done`` or ``failed`` (with a readable one-line error).
    ``models`` caches loaded checkpoints across the jobs of a process."""
    import torch

    from vibe3r.captures import load_capture
    from vibe3r.recon import run as R
    from vibe3r.recon.align import AlignConfig
    from vibe3r.recon.model import ReconModel

    models = {} if models is None else models
    store = JobStore(cfg.db_path)
    job = store.get(job_id)
    if job is None:
        raise SystemExit(f"no job {job_id}")
    jdir = cfg.jobs_dir / job_id
    out = jdir / "out"
    shutil.rmtree(out, ignore_errors=True)  # a re-queued job starts over
    prog = Progress(store, job_id)
    rs = cfg.recon
    try:
        torch.set_num_threads(rs.threads)
        src = input_path(cfg, job)
        prog("decode", 0, 1)
        cap = load_capture(src, size=rs.size, max_frames=rs.max_frames)
        if len(cap) < 2:
            raise InputError(f"a reconstruction needs at least 2 frames, the upload has {len(cap)}")
        check_frames(cap.images)
        R.check_motion(cap.images, R.RunConfig().static_threshold)  # reconstruct checks again; here it fails before the model loads
        prog("decode", 1, 1)
        prog("model", 0, 1)
        ckpt = cfg.ckpt if cfg.ckpt is not None else R.default_checkpoint()
        if str(ckpt) not in models:
            models[str(ckpt)] = ReconModel.from_pretrained(ckpt)
        model = models[str(ckpt)]
        prog("model", 1, 1)
        rcfg = R.RunConfig(size=rs.size, max_frames=rs.max_frames, pose_solver=rs.pose, mesh=rs.mesh,
                           align=AlignConfig(iters=rs.iters))
        report = R.reconstruct(cap, out, model=model, cfg=rcfg, progress=prog,
                               extra_report={"checkpoint": str(ckpt), "job": job_id})
        prog("package", 0, 1)
        package(out)
        pooled = None
        if job["contribute"]:
            f = report["focal_px"] * cap.meta["native_size"][1] / cap.hw[1]  # the job's pixels -> the upload's
            pooled = contribute(cfg, job, src, {"fx": f, "fy": f, "from": report["intrinsics_from"],
                                                "native_size": cap.meta["native_size"]})
        prog("package", 1, 1)
        t = report["timings_s"]
        result = {"frames": report["frames"], "pairs": report["graph"]["pairs"], "points": report["exports"]["points"],
                  "mesh_triangles": report["exports"]["mesh_triangles"], "image_size": report["image_size"],
                  "seconds": t["total"], "timings_s": t, "mean_confidence": report["mean_confidence"],
                  "intrinsics_from": report["intrinsics_from"]}
        store.finish(job_id, result, pooled)
    except InputError as exc:
        store.fail(job_id, str(exc))
    except Exception as exc:  # anything else: one line for the page, the traceback in the job's log
        traceback.print_exc()
        msg = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        store.fail(job_id, f"the reconstruction failed in phase '{prog.phase or 'start'}': {type(exc).__name__}"
                   + (f": {msg[-1][:300]}" if msg else ""))


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the server that started us dies, so no orphan keeps writing to a re-queued job."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str], poll_s: float = 0.3, max_jobs: int = 50) -> int:
    """Claim and run jobs until ``max_jobs`` ran (the supervisor then starts a fresh process) or the parent is gone."""
    _die_with_parent()
    cfg = ServeConfig.from_json(argv[0])
    store = JobStore(cfg.db_path)
    parent = os.getppid()
    me = str(os.getpid())
    models: dict = {}
    ran = 0
    while ran < max_jobs and os.getppid() == parent:
        job = store.claim(worker=me)
        if job is None:
            time.sleep(poll_s)
            continue
        print(f"[{time.strftime('%H:%M:%S')}] job {job['id']} ({job['kind']}, {job['input_bytes']} bytes)", flush=True)
        run_job(cfg, job["id"], models)
        print(f"[{time.strftime('%H:%M:%S')}] job {job['id']} {store.get(job['id'])['state']}", flush=True)
        ran += 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
