"""The stage contract: declared inputs and outputs, a temporary folder, an atomic rename, then the record.

A stage is a function ``fn(ctx) -> StageResult`` with declared input names and output names. The
runner (:func:`run_stage`) gives it ``ctx.work`` = ``rounds/NNNN/.<stage>.tmp/`` to write into and
``ctx.inputs`` = the resolved inputs; when ``fn`` returns, the runner checks every declared output
exists, writes ``result.json`` (metrics, timing), renames the folder to ``rounds/NNNN/<stage>/``
and only then records the stage as done in the registry (metrics, artifacts with sha256, one
transaction). A process killed at any instant therefore leaves one of:

* no folder or a ``.tmp`` folder, stage not done   → the stage runs again (a ``resumable`` stage
  continues in its ``.tmp`` folder, any other starts from an empty one);
* the final folder, stage not done                  → the result is recorded from ``result.json``;
* the final folder, stage done                      → skipped.

Inputs are resolved by name: the latest output of that name from an earlier stage of the same round,
otherwise a run-level resolver (``RUN_INPUTS``: the live checkpoint, older rounds' pairs, ...).
So a later stage that refines ``recon`` (e.g. preference training) simply declares ``recon`` as both
input and output, and evaluation and promotion pick up its version.

Stages must be deterministic given ``ctx.seed``, the config and the inputs; that is what makes a
resumed round identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibe3r.config import Config
from vibe3r.errors import Vibe3rError
from vibe3r.loop.registry import Registry

RESULT_NAME = "result.json"


@dataclass
class StageResult:
    """What a stage function returns: scalar metrics and, for promotion, the checkpoint decision."""

    metrics: dict[str, float | None] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None  # {path, sha256, promoted, metric, parent_metric, reason}


@dataclass(frozen=True)
class Stage:
    """One step of a round: ``fn`` reads ``inputs`` (names) and writes ``outputs`` (name -> path in its folder)."""

    name: str
    fn: Callable[[StageContext], StageResult]
    inputs: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]  # (artifact name, path relative to the stage folder)
    resumable: bool = False  # True: a killed attempt's .tmp folder is handed back to fn, which continues it
    help: str = ""


@dataclass
class StageContext:
    """Everything a stage function may use. Write only below ``work``."""

    cfg: Config
    run_dir: Path
    round: int
    stage: Stage
    work: Path
    inputs: dict[str, Any]  # name -> Path | list[Path] | None
    registry: Registry
    seed: int
    progress: Callable[[float, float | None, str], None] = lambda done, total, info: None

    def out(self, name: str) -> Path:
        """The path of declared output ``name`` inside the work folder."""
        return self.work / dict(self.stage.outputs)[name]


def stage_seed(seed: int, rnd: int, name: str) -> int:
    """A 31-bit seed per (loop seed, round, stage), stable across Python processes."""
    return (seed * 1_000_003 + rnd * 10_007 + zlib.crc32(name.encode())) % (2**31 - 1)


def config_hash(cfg: Config) -> str:
    """sha256 of the resolved config, without the keys that do not change a round's result."""
    data = json.loads(cfg.model_dump_json())
    data["loop"].pop("rounds", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes; of its tensors (sorted names, dtype, shape, data) for safetensors files,
    whose header lists the metadata in an order that changes from process to process."""
    if path.suffix == ".safetensors":
        return safetensors_sha256(path)
    if path.suffix == ".sqlite":
        return sqlite_sha256(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# not part of an artifact's hash: logs carrying wall-clock time, host names or CPU time
UNHASHED = ("tb", "train_state.json", RESULT_NAME)


def sqlite_sha256(path: Path) -> str:
    """sha256 of a SQLite database's content (tables by name, rows by rowid), leaving out the wall-clock
    columns (``*_at``): the file's bytes also depend on page layout and timestamps."""
    import sqlite3

    h = hashlib.sha256()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for t in tables:
            cur = db.execute(f'SELECT * FROM "{t}" ORDER BY rowid')
            keep = [i for i, d in enumerate(cur.description) if not d[0].endswith("_at")]
            h.update(f"{t}\0{[cur.description[i][0] for i in keep]}\0".encode())
            for row in cur:
                h.update(repr(tuple(row[i] for i in keep)).encode())
    finally:
        db.close()
    return h.hexdigest()


def safetensors_sha256(path: Path) -> str:
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k).contiguous()
            h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tree_sha256(path: Path) -> tuple[str, int]:
    """(sha256, bytes) of a file, or of a folder's sorted (relative path, content sha256) list
    (``UNHASHED`` names excluded: they hold times, not results)."""
    if path.is_file():
        return file_sha256(path), path.stat().st_size
    h, total = hashlib.sha256(), 0
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        if any(part in UNHASHED for part in p.relative_to(path).parts):
            continue
        h.update(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n".encode())
        total += p.stat().st_size
    return h.hexdigest(), total


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reset_peak_rss() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of the process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def run_stage(stage: Stage, idx: int, ctx_args: dict[str, Any], resolve: Callable[[str], Any],
              progress: Callable[[float, float | None, str], None] | None = None) -> dict[str, Any]:
    """Run (or skip, or finish recording) ``stage`` of round ``ctx_args['round']``; returns its result record.

    ``ctx_args`` holds cfg, run_dir, round, registry, seed; ``resolve(name)`` resolves an input.
    """
    reg: Registry = ctx_args["registry"]
    run_dir: Path = ctx_args["run_dir"]
    rnd: int = ctx_args["round"]
    round_dir = run_dir / "rounds" / f"{rnd:04d}"
    final, work = round_dir / stage.name, round_dir / f".{stage.name}.tmp"
    row = reg.stage(rnd, stage.name)
    if row is not None and row["state"] == "done":
        return {"skipped": True, **json.loads((final / RESULT_NAME).read_text())}
    chash = config_hash(ctx_args["cfg"])
    if not (final / RESULT_NAME).is_file():
        inputs = {name: resolve(name) for name in stage.inputs}
        reg.start_stage(rnd, stage.name, idx, chash, {k: _jsonable(v) for k, v in inputs.items()})
        if work.exists() and not stage.resumable:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(stage=stage, work=work, inputs=inputs, progress=progress or (lambda d, t, i: None), **ctx_args)
        _reset_peak_rss()
        t0, c0 = time.perf_counter(), time.process_time()
        result = stage.fn(ctx)
        missing = [f"{n} ({p})" for n, p in stage.outputs if not (work / p).exists()]
        if missing:
            raise Vibe3rError(f"stage {stage.name} finished without its declared outputs: {', '.join(missing)}")
        record = {"metrics": result.metrics, "checkpoint": result.checkpoint, "seconds": time.perf_counter() - t0,
                  "cpu_seconds": time.process_time() - c0, "peak_rss_mb": _peak_rss_mb(),
                  "inputs": {k: _jsonable(v) for k, v in inputs.items()}}
        write_json_atomic(work / RESULT_NAME, record)
        if final.exists():  # an older complete folder cannot exist without result.json; stale debris
            shutil.rmtree(final)
        os.rename(work, final)
        fsync_dir(round_dir)
    record = json.loads((final / RESULT_NAME).read_text())
    artifacts = []
    outputs = {}
    for name, rel in stage.outputs:
        path = final / rel
        sha, nbytes = tree_sha256(path)
        relpath = path.relative_to(run_dir).as_posix()
        outputs[name] = relpath
        artifacts.append({"name": name, "kind": "dir" if path.is_dir() else "file", "path": relpath, "sha256": sha, "bytes": nbytes})
    reg.finish_stage(rnd, stage.name, outputs, record["metrics"], artifacts, record["seconds"], record["peak_rss_mb"],
                     record["checkpoint"])
    return {"skipped": False, **record}

