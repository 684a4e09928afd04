"""Held-out synthetic pairs: a checkpoint vs SIFT vs the no-motion prior on rooms never trained on.

1. Renders (or reuses) a pair set from the world simulator with scene seeds < 1000 — the shipped
   checkpoint ``weights/recon-base`` was trained on seeds 1000-1039 (``configs/sim-pairs-128.yaml``),
   so every room here is new to it. Same world, renderer, prompt task and pair selection as its
   training data; only the seeds differ (scene, prompt and pair-draw seeds).
2. Exports it as a SuperGlue pair list (38 fields a line, ``T_0to1 = inv(c2w_1) @ c2w_0``: camera-0
   to camera-1 coordinates, i.e. the dataset's ``T21`` with view 1 = name0) plus PNG images, and checks
   the convention numerically: view 0's depth moved by T_0to1 and projected with K1 must agree with
   view 1's depth (and the inverse transform must not).
3. Runs the unchanged ``vibe3r eval pairs`` CLI on it for the checkpoint (``--ransac ransac`` and
   ``usac_accurate``), SIFT at the pairs' resolution and at 4x (images upsampled to 512 px, K rescaled),
   and the no-motion prior; prints the table (AUC@5/10/20 of max(rot, tdir), medians, failures), with
   90% intervals from resampling *rooms* (pairs of one room are correlated) and paired differences.

The full benchmark (20 rooms x 16 pairs = 320 pairs at 128x96; ~30 min to render on a loaded 2-core
CPU, once; then ~10 min of evaluation)::

    .venv/bin/python bench/synthetic_pairs.py                            # shipped checkpoint
    .venv/bin/python bench/synthetic_pairs.py --ckpt runs/x/recon-dpo --against bench/out/synthetic/recon-base
                                                       # another checkpoint, same pairs, paired differences

A tiny CPU run (2 rooms x 4 pairs, its own folder)::

    .venv/bin/python bench/synthetic_pairs.py --data bench/out/synthetic-tiny --out bench/out/synthetic-tiny/eval \\
        --videos 2 --pairs 4 --set prompts.max_frames=12
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAINED_SEEDS = range(1000, 1040)  # the shipped checkpoint's rooms (configs/sim-pairs-128.yaml)
BASE_CONFIG = ROOT / "configs" / "sim-pairs-128.yaml"


# --------------------------------------------------------------------------------------------
# 1. the held-out pair set
# --------------------------------------------------------------------------------------------


def heldout_overrides(videos: int, pairs: int, seed_start: int, seed: int) -> list[str]:
    """``--set`` overrides turning the checkpoint's training-data config into a held-out set."""
    if seed_start + videos > 1000:
        raise SystemExit(f"scene seeds {seed_start}..{seed_start + videos - 1} reach 1000; held-out seeds must stay < 1000")
    return [f"dataset.n_videos={videos}", f"dataset.pairs_per_video={pairs}", f"dataset.scene_seed_start={seed_start}",
            f"prompts.seed={seed}", f"dataset.seed={seed}"]


def build_heldout(out: Path, overrides: list[str], config: Path = BASE_CONFIG) -> dict:
    """Render the held-out dataset into ``out`` (``vibe3r video dataset`` format), or reuse it when its
    ``index.json`` exists and its saved config has the same world/render/prompts/dataset sections."""
    from vibe3r.config import load_config
    from vibe3r.video_gen.dataset import build_dataset

    cfg = load_config(config, overrides)
    want = json.loads(cfg.model_dump_json())
    if (out / "index.json").is_file():
        import yaml

        have = yaml.safe_load((out / "config.yaml").read_text())
        keys = ("seed", "world", "render", "prompts", "dataset")
        diff = [k for k in keys if have.get(k) != want.get(k)]
        if diff:
            raise SystemExit(f"{out} holds a pair set made with another config ({', '.join(diff)} differ); pass another --data")
        print(f"reusing the held-out set in {out}")
        index = json.loads((out / "index.json").read_text())
    else:
        print(f"rendering {cfg.dataset.n_videos} held-out rooms into {out} ...")
        index = build_dataset(cfg, out)
    seeds = sorted({v["scene_seed"] for v in index["videos"]})
    if any(s >= 1000 for s in seeds):
        raise SystemExit(f"{out}: scene seeds {seeds} include trained ones (>= 1000)")
    return index


# --------------------------------------------------------------------------------------------
# 2. SuperGlue export
# --------------------------------------------------------------------------------------------


def _shards(dataset: Path):  # noqa: ANN202 - yields (shard arrays) in index order
    index = json.loads((dataset / "index.json").read_text())
    for s in index["shards"]:
        with np.load(dataset / "shards" / s["file"]) as z:
            yield {k: z[k] for k in z.files}


def export_superglue(dataset: str | Path, out: str | Path | None = None) -> Path:
    """Write a ``PairShardDataset`` folder as a SuperGlue pair list ``out/pairs.txt`` (default
    ``DATASET/superglue``) with its frames as ``out/images/VVVVV/FFFFF.png`` (lossless: the shard's
    uint8 pixels). Pair p of the shards in order becomes line p; name0 is the dataset's view 1, so
    ``T_0to1`` is its ``T21 = relative_pose(c2w1, c2w2) = inv(c2w2) @ c2w1`` and K0/K1 are K1/K2.
    Numbers are written with 17 significant digits (float64 round trip). Returns the list's path."""
    from vibe3r import geometry

    dataset = Path(dataset)
    out = Path(out) if out is not None else dataset / "superglue"
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for sh in _shards(dataset):
        names = [f"images/{int(v):05d}/{int(f):05d}.png" for v, f in zip(sh["video"], sh["frame"], strict=True)]
        for row, name in enumerate(names):
            path = out / name
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), np.ascontiguousarray(sh["images"][row][..., ::-1]))
        for a, b in sh["pairs"]:
            T = geometry.relative_pose(sh["c2w"][a], sh["c2w"][b]).numpy()  # camera a -> camera b, float64
            nums = [*sh["K"][a].astype(np.float64).ravel(), *sh["K"][b].astype(np.float64).ravel(), *T.ravel()]
            lines.append(f"{names[a]} {names[b]} 0 0 " + " ".join(f"{x:.17g}" for x in nums))
    path = out / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def reprojection_agreement(depth0: np.ndarray, depth1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
                           tol: float = 0.02) -> float:
    """Fraction of view 0's valid pixels that, moved by ``T_0to1`` and projected with K1, land inside view 1
    on a depth agreeing within ``tol`` (relative) — high for the right convention, low for its inverse."""
    H, W = depth0.shape
    v, u = np.nonzero(depth0 > 0)
    z = depth0[v, u].astype(np.float64)
    X0 = np.stack([(u - K0[0, 2]) / K0[0, 0] * z, (v - K0[1, 2]) / K0[1, 1] * z, z], 1)  # M,3 camera 0
    X1 = X0 @ T_0to1[:3, :3].T + T_0to1[:3, 3]  # M,3 camera 1
    zs = np.maximum(X1[:, 2], 1e-9)
    u1 = np.round(K1[0, 0] * X1[:, 0] / zs + K1[0, 2]).astype(int)
    v1 = np.round(K1[1, 1] * X1[:, 1] / zs + K1[1, 2]).astype(int)
    ok = (X1[:, 2] > 1e-6) & (u1 >= 0) & (u1 < W) & (v1 >= 0) & (v1 < H)
    d1 = depth1[v1[ok], u1[ok]]
    agree = (d1 > 0) & (np.abs(X1[ok, 2] - d1) < tol * np.maximum(d1, 1e-9))
    return float(agree.sum() / max(len(z), 1))


def check_convention(dataset: Path, pairs_txt: Path, n: int = 40) -> tuple[float, float]:
    """Median reprojection agreement of the first ``n`` exported pairs with T_0to1 and with its inverse."""
    from vibe3r.captures import load_pairs

    specs = load_pairs(pairs_txt)
    rows, k = [], 0
    for sh in _shards(dataset):
        for a, b in sh["pairs"]:
            if k >= n:
                break
            p = specs[k]
            rows.append((reprojection_agreement(sh["depth"][a], sh["depth"][b], p.K0, p.K1, p.T_0to1),
                         reprojection_agreement(sh["depth"][a], sh["depth"][b], p.K0, p.K1, np.linalg.inv(p.T_0to1))))
            k += 1
    r = np.array(rows)
    return float(np.median(r[:, 0])), float(np.median(r[:, 1]))


# --------------------------------------------------------------------------------------------
# 3. evaluation through the unchanged CLI
# --------------------------------------------------------------------------------------------


def rows(ckpt: Path, size: int) -> list[tuple[str, list[str]]]:
    """(label, ``vibe3r eval pairs`` arguments) of every table row."""
    big = 4 * size
    return [
        (f"model {size} ransac", ["--method", "model", "--ckpt", str(ckpt), "--size", str(size), "--ransac", "ransac"]),
        (f"model {size} usac_accurate", ["--method", "model", "--ckpt", str(ckpt), "--size", str(size), "--ransac", "usac_accurate"]),
        (f"sift {size} ransac", ["--method", "sift", "--size", str(size), "--ransac", "ransac"]),
        (f"sift {size} usac_accurate", ["--method", "sift", "--size", str(size), "--ransac", "usac_accurate"]),
        (f"sift {big} (4x) ransac", ["--method", "sift", "--size", str(big), "--ransac", "ransac"]),
        (f"sift {big} (4x) usac_accurate", ["--method", "sift", "--size", str(big), "--ransac", "usac_accurate"]),
        ("identity (no motion)", ["--method", "identity", "--size", str(size)]),
    ]


def vibe3r_exe() -> str:
    exe = Path(sys.executable).with_name("vibe3r")
    return str(exe) if exe.is_file() else "vibe3r"


def run_row(args: list[str], pairs_txt: Path, save: Path) -> tuple[dict, list[str]]:
    """One ``vibe3r eval pairs`` run -> (its saved JSON, the command)."""
    cmd = [vibe3r_exe(), "eval", "pairs", "--pairs", str(pairs_txt), "--root", str(pairs_txt.parent), *args,
           "--save", str(save), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return json.loads(save.read_text()), cmd


def _f(x: float | None, fmt: str = "5.1f") -> str:
    return "inf" if x is None else format(x, fmt)


def _room_errors(per_pair: list[dict], min_baseline: float = 0.0) -> dict[str, np.ndarray]:
    """max(rot, tdir) errors (failures = inf) grouped by room, the ``images/VVVVV/`` folder of name0."""
    by_room: dict[str, list[float]] = {}
    for p in per_pair:
        if p["baseline"] >= min_baseline:
            e = [np.inf if x is None else x for x in (p["rot_err"], p["tdir_err"])]
            by_room.setdefault(p["name0"].split("/")[1], []).append(max(e))
    return {k: np.array(v) for k, v in by_room.items()}


def room_bootstrap_auc10(*per_pairs: list[dict], min_baseline: float = 0.0, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """90% interval of AUC@10 when the *rooms* are resampled with replacement (pairs of one room are
    correlated, so the room is the sampling unit). With two per-pair lists (the same pairs, two methods)
    the interval is of the paired difference AUC@10(first) - AUC@10(second) on the same draws."""
    from vibe3r import geometry

    groups = [_room_errors(pp, min_baseline) for pp in per_pairs]
    rooms = sorted(groups[0])
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(draws):
        pick = [rooms[i] for i in rng.integers(len(rooms), size=len(rooms))]
        auc = [geometry.pose_auc(np.concatenate([g[r] for r in pick]), (10.0,))[0] for g in groups]
        vals.append(auc[0] if len(auc) == 1 else auc[0] - auc[1])
    return float(np.percentile(vals, 5)), float(np.percentile(vals, 95))


def differences(pairs_of_rows: list[tuple[str, dict, str, dict]], key: str = "all", min_baseline: float = 0.0) -> str:
    """Markdown table of paired AUC@10 differences (first minus second) with their room-bootstrap 90% CI."""
    lines = ["| AUC@10 difference | value | 90% CI (rooms, paired) |", "|---|--:|--:|"]
    for la, a, lb, b in pairs_of_rows:
        if [(p["name0"], p["name1"]) for p in a["per_pair"]] != [(p["name0"], p["name1"]) for p in b["per_pair"]]:
            raise SystemExit(f"{la} and {lb} were evaluated on different pairs")
        lo, hi = room_bootstrap_auc10(a["per_pair"], b["per_pair"], min_baseline=min_baseline)
        lines.append(f"| {la} - {lb} | {a[key]['auc10'] - b[key]['auc10']:+.1f} | {lo:+.1f} to {hi:+.1f} |")
    return "\n".join(lines)


def table(results: list[tuple[str, dict]], key: str = "all", min_baseline: float = 0.0) -> str:
    """Markdown table of the summaries under ``key`` (``all`` or ``baseline>=0.15`` with ``min_baseline``)."""
    head = "| method | input | n | AUC@5 | AUC@10 | AUC@10 90% CI (rooms) | AUC@20 | median rot (°) | median tdir (°) | fail % | s |"
    lines = [head, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for label, r in results:
        s = r[key]
        if not s.get("n"):
            continue
        w, h = r["size"]
        lo, hi = room_bootstrap_auc10(r["per_pair"], min_baseline=min_baseline)
        lines.append(f"| {label} | {w}x{h} | {s['n']} | {_f(s['auc5'])} | {_f(s['auc10'])} | {lo:.1f}-{hi:.1f} | {_f(s['auc20'])} | "
                     f"{_f(s['median_rot'], '.2f')} | {_f(s['median_tdir'], '.2f')} | {_f(s['fail_pct'])} | {r['seconds']:.0f} |")
    return "\n".join(lines) if len(lines) > 2 else "(no pairs)"


def pair_stats(per_pair: list[dict]) -> str:
    rot = np.array([p["gt_rot"] for p in per_pair])
    base = np.array([p["baseline"] for p in per_pair])
    q = lambda a: " / ".join(f"{x:.2f}" for x in np.percentile(a, [10, 50, 90]))  # noqa: E731
    return f"GT rotation (deg) p10/50/90: {q(rot)}; baseline (m) p10/50/90: {q(base)}; baseline >= 0.15 m: {int((base >= 0.15).sum())}/{len(base)}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, default=ROOT / "weights" / "recon-base", help="checkpoint folder (config.json + safetensors)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic-heldout-128", help="held-out dataset folder (rendered if missing)")
    ap.add_argument("--out", type=Path, default=None, help="result JSONs and table (default bench/out/synthetic/<ckpt name>)")
    ap.add_argument("--videos", type=int, default=20, help="held-out rooms (one scene seed each)")
    ap.add_argument("--pairs", type=int, default=16, help="pairs drawn per room")
    ap.add_argument("--seed-start", type=int, default=900, help="first scene seed (held-out: seed-start + videos <= 1000)")
    ap.add_argument("--seed", type=int, default=900, help="prompt and pair-draw seed")
    ap.add_argument("--size", type=int, default=128, help="width the model and the first SIFT row see; SIFT also runs at 4x")
    ap.add_argument("--config", type=Path, default=BASE_CONFIG, help="base config of the pair set (the checkpoint's training data config)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra config override for the pair set (KEY=VALUE)")
    ap.add_argument("--only", default=None, help="comma-separated row labels' first words to run (model,sift,identity)")
    ap.add_argument("--against", type=Path, default=None,
                    help="output folder of an earlier run on the same pairs (e.g. bench/out/synthetic/recon-base): paired model differences")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    index = build_heldout(a.data, heldout_overrides(a.videos, a.pairs, a.seed_start, a.seed) + a.sets, a.config)
    seeds = sorted({v["scene_seed"] for v in index["videos"]})
    print(f"{index['n_pairs']} pairs from {len(index['videos'])} rooms (scene seeds {seeds[0]}-{seeds[-1]}, "
          f"trained: {TRAINED_SEEDS.start}-{TRAINED_SEEDS.stop - 1}) at {index['width']}x{index['height']} "
          f"({time.perf_counter() - t0:.0f} s)")
    pairs_txt = export_superglue(a.data)
    good, inverse = check_convention(a.data, pairs_txt)
    print(f"exported {pairs_txt}; T_0to1 check, median fraction of view-0 pixels reprojecting onto view 1's depth "
          f"(2%): {good:.3f} (inverse transform: {inverse:.3f})")
    if good < 0.3 or good <= inverse:
        raise SystemExit("the exported T_0to1 does not reproject depth: convention error")

    out = a.out or ROOT / "bench" / "out" / "synthetic" / a.ckpt.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    only = set(a.only.split(",")) if a.only else None
    results = []
    for label, args in rows(a.ckpt, a.size):
        if only and label.split()[0] not in only:
            continue
        slug = label.replace(" ", "_").replace("(", "").replace(")", "")
        r, cmd = run_row(args, pairs_txt, out / f"{slug}.json")
        print(f"  {label:32s} AUC@10 {_f(r['all']['auc10'])}  ({r['seconds']:.0f} s)   $ {' '.join(cmd[1:])}", flush=True)
        results.append((label, r))
    stats = pair_stats(results[0][1]["per_pair"])
    text = (f"held-out synthetic pairs: {a.data} ({index['n_pairs']} pairs, {len(index['videos'])} rooms, scene seeds "
            f"{seeds[0]}-{seeds[-1]}), checkpoint {a.ckpt}\n{stats}\n\nall pairs\n\n{table(results)}\n\n"
            f"baseline >= 0.15 m\n\n{table(results, 'baseline>=0.15', 0.15)}\n")
    got = dict(results)
    big = 4 * a.size
    versus = [(f"model {a.size} {r}", f"sift {a.size} {r}") for r in ("ransac", "usac_accurate")]
    versus += [(f"model {a.size} {r}", f"sift {big} (4x) {r}") for r in ("ransac", "usac_accurate")]
    versus = [(x, got[x], y, got[y]) for x, y in versus if x in got and y in got]
    if a.against is not None:
        for label in (f"model {a.size} ransac", f"model {a.size} usac_accurate"):
            old = a.against / f"{label.replace(' ', '_')}.json"
            if label in got and old.is_file():
                versus.append((f"{label} [{a.ckpt.name}]", got[label], f"[{a.against.name}]", json.loads(old.read_text())))
    if versus:
        text += f"\npaired differences, all pairs\n\n{differences(versus)}\n"
    (out / "table.md").write_text(text)
    summary = {label: {k: v for k, v in r.items() if k != "per_pair"} for label, r in results}
    (out / "results.json").write_text(json.dumps({"data": str(a.data), "ckpt": str(a.ckpt), "scene_seeds": seeds,
                                                  "rows": summary}, indent=1))
    print("\n" + text)
    print(f"written to {out}/ (table.md, results.json, per-row JSON with per-pair errors)")


if __name__ == "__main__":
    main()
