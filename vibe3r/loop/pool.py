"""The real captures of a round: ``preference.captures`` (or ``loop iterate --captures``) plus the captures
people contributed through the web app (``preference.capture_pool``).

    vibe3r loop iterate --run runs/demo --captures phone.mp4 --captures ../shared/data/real/7scenes-redkitchen@0:125
    vibe3r loop iterate --run runs/demo --set preference.capture_pool=runs/serve/captures

A capture entry is a ``load_capture`` spec (file or folder, optional ``@START:STOP:STEP``) or a capture
pool: a folder holding ``index.jsonl`` (what ``vibe3r serve`` writes in ``<data>/captures/``, one line
``{"job", "spec", "kind", "pooled"}`` per opted-in upload), or that ``index.jsonl`` itself; each pooled
capture joins. Pooled captures are phone videos: at most ``preference.pool_max_frames`` frames of each,
evenly spread, with the focal length the web app estimated when it reconstructed the upload
(``meta.json`` ``intrinsics``), else the capture's own K, else a 60° horizontal field of view.

The set is resolved once per round and frozen in ``rounds/NNNN/captures.json`` (written when the round
starts), so a resumed round samples the same captures even if the pool grew in between, and the next
round picks up what was contributed meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vibe3r.config import Config
from vibe3r.errors import InputError

FROZEN_NAME = "captures.json"
POOL_INDEX = "index.jsonl"
DEFAULT_FOV_DEG = 60.0  # horizontal field of view of a capture without any intrinsics (recon.run's default too)
FULL_MAX_SIDE = 960  # the "full-resolution" copy of a pooled capture (rewards' epipolar term) is at most this large


@dataclass
class RealCapture:
    """One real capture of a round, as the preference stages load it."""

    spec: str  # load_capture spec: path (+ @range); the preference store's capture key
    origin: str  # "config" (preference.captures / --captures) | "pool" (contributed through the web app)
    max_frames: int | None = None  # frames kept, evenly spread (None: every frame of the spec)
    focal: tuple[float, float] | None = None  # fx, fy in pixels of the native frames (None: preference.focal / the capture's K)
    job: str | None = None  # the web app's job id (pooled captures)


def read_pool(path: str | Path, max_frames: int | None) -> list[RealCapture]:
    """The captures listed in a pool's ``index.jsonl`` (``path``: the pool folder or the file); entries whose
    capture is gone are skipped, a later line for the same capture replaces an earlier one."""
    p = Path(path)
    index = p if p.is_file() else p / POOL_INDEX
    if not index.is_file():
        raise InputError(f"{p} is no capture pool (no {POOL_INDEX}; `vibe3r serve --data DIR` writes DIR/captures/{POOL_INDEX})")
    out: dict[str, RealCapture] = {}
    for n, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            spec = Path(row["spec"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{index} line {n}: not a pool entry (a JSON object with a 'spec')") from None
        if not spec.is_absolute():
            spec = index.parent / spec
        if not spec.exists():
            continue  # removed from the pool (e.g. consent withdrawn)
        focal = None
        meta = spec.parent / "meta.json"
        if meta.is_file():
            k = json.loads(meta.read_text()).get("intrinsics")
            if k and k.get("fx") and k.get("fy"):
                focal = (float(k["fx"]), float(k["fy"]))
        out[str(spec.resolve())] = RealCapture(str(spec.resolve()), "pool", max_frames, focal, row.get("job"))
    return list(out.values())


def expand(entry: str, max_frames: int | None) -> list[RealCapture]:
    """A ``--captures`` / ``preference.captures`` entry: a capture spec, or a pool folder / its index file."""
    from vibe3r.captures import parse_spec
    from vibe3r.loop.stages import resolve_path

    path, rng = parse_spec(entry) if "@" in entry else (Path(entry), None)
    full = resolve_path(path)
    if (full.is_dir() and (full / POOL_INDEX).is_file()) or full.name == POOL_INDEX:
        if rng is not None:
            raise InputError(f"{entry}: a frame range applies to one capture, not to a capture pool")
        return read_pool(full, max_frames)
    if not full.exists():
        raise InputError(f"capture not found: {entry}")
    spec = str(full) + (entry[entry.rindex("@"):] if rng is not None else "")  # the store's capture key, as before pools
    return [RealCapture(spec, "config")]


def resolve_captures(cfg: Config) -> list[RealCapture]:
    """The round's real captures from the config: ``preference.captures`` then the pool (duplicates once)."""
    pc = cfg.preference
    found: list[RealCapture] = []
    for entry in pc.captures:
        found += expand(entry, pc.pool_max_frames)
    if pc.capture_pool is not None:
        from vibe3r.loop.stages import resolve_path

        pool = resolve_path(pc.capture_pool)
        if pool.is_dir() and not (pool / POOL_INDEX).exists():
            pass  # an empty pool: the web app has not pooled a capture yet
        else:
            found += read_pool(pool, pc.pool_max_frames)
    seen, out = set(), []
    for c in found:
        if c.spec not in seen:
            seen.add(c.spec)
            out.append(c)
    return out


def freeze_captures(cfg: Config, run_dir: Path, rnd: int) -> list[RealCapture]:
    """Resolve the round's captures and write ``rounds/NNNN/captures.json`` unless it exists (then read it)."""
    from vibe3r.loop.stage import write_json_atomic

    path = Path(run_dir) / "rounds" / f"{rnd:04d}" / FROZEN_NAME
    if path.is_file():
        return read_frozen(path)
    caps = resolve_captures(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"captures": [asdict(c) for c in caps]})
    return caps


def read_frozen(path: Path) -> list[RealCapture]:
    rows = json.loads(Path(path).read_text())["captures"]
    return [RealCapture(**{**r, "focal": None if r.get("focal") is None else tuple(r["focal"])}) for r in rows]


def round_captures(cfg: Config, run_dir: Path, rnd: int) -> list[RealCapture]:
    """The captures frozen for round ``rnd``, or (no frozen list, e.g. a stage run on its own) resolved now."""
    path = Path(run_dir) / "rounds" / f"{rnd:04d}" / FROZEN_NAME
    return read_frozen(path) if path.is_file() else resolve_captures(cfg)
