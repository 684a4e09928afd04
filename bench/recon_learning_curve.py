"""Learning curve of a reconstruction recipe: real-pair pose metrics against training CPU-minutes.

Trains ``--config`` on ``--data`` with in-training evaluation on the fixed real pair lists (the
config's ``recon.train.eval_pairs`` / ``eval_every_min`` / ``eval_size``, overridable with ``--set``),
then prints the curve as a markdown table beside the classical peers measured in the same run:
SIFT at the model's resolution, SIFT at 640x480, and the no-motion prior.

    .venv/bin/python bench/recon_learning_curve.py --config configs/recon-small.yaml \\
        --data runs/pairs-128 --out runs/lc-small

With ``--table-only`` it only reads ``OUT/evals.jsonl`` of a finished run and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vibe3r.config import load_config

COLS = ("auc5", "auc10", "auc20", "median_rot", "median_tdir", "fail_pct")


def fmt(s: dict, prefix: str = "") -> str:
    g = lambda k: s.get(prefix + k)  # noqa: E731
    if g("auc10") is None:
        return "– | – | –"
    rot = g("median_rot")
    rot_s = "inf" if rot is None or rot == float("inf") else f"{rot:.2f}°"
    return f"{g('auc5'):.1f} / {g('auc10'):.1f} / {g('auc20'):.1f} | {rot_s} | {g('fail_pct'):.0f}%"


def baselines(pair_lists: list[str], size: int, ransac: list[str]) -> dict[str, list[tuple[str, dict]]]:
    """SIFT at ``size`` and at 640x480 and the no-motion prior, keyed like ``train.evaluate_real``."""
    from vibe3r.eval.pairs import evaluate_pairs, identity_estimator, make_sift_estimator

    out: dict[str, list[tuple[str, dict]]] = {}
    for i, method in enumerate(ransac):
        for pl in pair_lists:
            key = Path(pl).stem + ("" if i == 0 else f"|{method}")
            rows = []
            for name, est, sz in (("SIFT", make_sift_estimator(ransac=method), size), ("SIFT", make_sift_estimator(ransac=method), 640),
                                  ("no-motion prior", identity_estimator, size)):
                if name == "no-motion prior" and i > 0:
                    rows.append(next(r for r in out[Path(pl).stem] if r[0] == name))
                    continue
                ev = evaluate_pairs(pl, est, sz, method_name=name)
                label = f"{name} {ev.size[0]}x{ev.size[1]}" if name == "SIFT" else name
                rows.append((label, {**ev.summary, **{f"wide_{k}": v for k, v in ev.summary_wide.items()}}))
            out[key] = rows
    return out


def table(key: str, evals: list[dict], base: list[tuple[str, dict]]) -> str:
    """Markdown: one row per baseline and per in-training evaluation, all pairs and baseline ≥ 0.15 m."""
    lines = [f"**{key}**", "",
             "| run | CPU-min | step | AUC@5/10/20 | med rot | fail | baseline ≥ 0.15 m: AUC@5/10/20 | med rot | fail |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, res in base:
        lines.append(f"| {label} | – | – | {fmt(res)} | {fmt(res, 'wide_')} |")
    for e in evals:
        if key in e:
            lines.append(f"| model | {e['cpu_min']:.1f} | {e['step']} | {fmt(e[key])} | {fmt(e[key], 'wide_')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    tc = cfg.recon.train
    if not args.table_only:
        from vibe3r.recon.train import train

        summary = train(cfg, args.data, args.out, resume=args.resume)
        print(json.dumps(summary))
    evals = [json.loads(line) for line in (Path(args.out) / "evals.jsonl").read_text().splitlines() if line.strip()]
    base = {} if args.no_baselines else baselines(tc.eval_pairs, tc.eval_size, tc.eval_ransac)
    print(f"threads={tc.threads}  eval size={tc.eval_size}  config={args.config} {' '.join(args.overrides)}")
    keys = [k for k in evals[-1] if k not in ("step", "cpu_min", "wall_min")]
    for key in keys:
        print()
        print(table(key, evals, base.get(key, [])))


if __name__ == "__main__":
    main()
