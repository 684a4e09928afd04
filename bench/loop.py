"""Time per stage and peak memory of loop rounds (default: one round of the embedded default config).

    OMP_NUM_THREADS=1 .venv/bin/python bench/loop.py --run runs/bench-loop [--rounds 3] [--set loop.train_steps=60]

Wall seconds, process CPU seconds and peak resident memory (VmHWM, reset before each stage) per stage,
read back from each stage's ``result.json``; the last lines give the round totals and the metrics
recorded in the registry. The held-out set is built once per run before round 1 starts (timed apart,
as "held-out set"); run it on a fresh --run to measure everything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vibe3r.config import load_config
from vibe3r.loop.iterate import iterate, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--run", required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    t0 = time.perf_counter()

    def on_event(rnd, stage, event, done, total, info):  # noqa: ANN001
        if event in ("done", "skipped"):
            print(f"[{time.perf_counter() - t0:7.1f} s] round {rnd} {stage}: {event} {info}", flush=True)

    from vibe3r.loop.stages import ensure_heldout

    Path(args.run).mkdir(parents=True, exist_ok=True)
    ensure_heldout(cfg, Path(args.run))  # what iterate does first; timed here on its own
    print(f"[{time.perf_counter() - t0:7.1f} s] held-out set", flush=True)
    worked = iterate(cfg, args.run, args.rounds, on_event)
    run = Path(args.run)
    print("\n| round | stage | wall s | CPU s | peak RSS MB |\n|---|---|---|---|---|")
    for rnd in worked:
        tot_w = tot_c = 0.0
        for s in status(run)["rounds"][rnd - 1]["stages"]:
            rec = json.loads((run / "rounds" / f"{rnd:04d}" / s["name"] / "result.json").read_text())
            tot_w += rec["seconds"]
            tot_c += rec["cpu_seconds"]
            print(f"| {rnd} | {s['name']} | {rec['seconds']:.0f} | {rec['cpu_seconds']:.0f} | {rec['peak_rss_mb']:.0f} |")
        print(f"| {rnd} | **round** | **{tot_w:.0f}** ({tot_w / 60:.1f} min) | {tot_c:.0f} | |")
    keys = ("heldout_auc10", "real_auc10", "mean_auc10", "heldout_loss", "heldout_depth_absrel")
    print("\n| round | " + " | ".join(keys) + " | promoted |\n|---|" + "---|" * (len(keys) + 1))
    for r in status(run)["rounds"]:
        m = r["metrics"]
        cells = []
        for k in keys:
            v, p = m.get(f"evaluate/{k}"), m.get(f"evaluate/parent_{k}")
            cells.append("-" if v is None else f"{v:.3f} (live {p:.3f})" if p is not None else f"{v:.3f}")
        ck = r["checkpoint"]
        print(f"| {r['round']} | " + " | ".join(cells) + f" | {'-' if ck is None else bool(ck['promoted'])} |")


if __name__ == "__main__":
    main()
