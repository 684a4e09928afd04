"""The evaluator page on a real loop run: how long the comparisons take to build, how fast the page and its
API answer, and what a vote costs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_evaluate.py --run runs/bench-loop-pref
    .venv/bin/python bench/serve_evaluate.py --run runs/demo --frames 4 --size 96 --iters 50 --repeats 20

The run is copied first (registry, round configs and checkpoints only) so that the bench's votes never enter
the real run's preference store. The server is ``tests/_serve.py``'s in-process uvicorn on 127.0.0.1 with the
builder process the real server starts. Prints the figures; writes bench/out/serve_evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _serve import running_server  # noqa: E402

from vibe3r.serve.client import Client  # noqa: E402
from vibe3r.serve.config import ServeConfig  # noqa: E402
from vibe3r.serve.evaluator import EvalSettings  # noqa: E402


def copy_run(src: Path, dst: Path) -> Path:
    """Registry, round configs / captures.json and the stages' checkpoints (``*/ckpt``)."""
    dst.mkdir(parents=True)
    for name in ("registry.sqlite", "registry.sqlite-wal", "registry.sqlite-shm"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    for rd in sorted((src / "rounds").iterdir()):
        out = dst / "rounds" / rd.name
        out.mkdir(parents=True)
        for f in ("config.yaml", "captures.json"):
            if (rd / f).is_file():
                shutil.copy2(rd / f, out / f)
        for ck in rd.glob("*/ckpt"):
            shutil.copytree(ck, out / ck.parent.name / "ckpt", ignore=shutil.ignore_patterns("tb", "snapshots"))
    return dst


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"n={len(xs)} p50={1000 * statistics.median(xs):.0f} ms p95={1000 * xs[int(0.95 * (len(xs) - 1))]:.0f} ms max={1000 * xs[-1]:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vibe3r-evalbench-"))
    run = copy_run(a.run.resolve(), tmp / "run")
    cfg = ServeConfig(data=tmp / "data", evaluate=EvalSettings(run=run, frames=a.frames, size=a.size, iters=a.iters))
    res: dict = {"run": str(a.run), "frames": a.frames, "size": a.size, "iters": a.iters}
    with running_server(cfg) as (url, app):
        c = Client(url)
        t0 = time.perf_counter()
        while app.state.builder.status()["building"]:
            time.sleep(0.5)
        res["build_s"] = time.perf_counter() - t0
        res["built"] = app.state.builder.status()["built"]
        page, nxt, files, votes = [], [], [], []
        for k in range(a.repeats):
            t = time.perf_counter()
            c.request("GET", "/evaluate")
            page.append(time.perf_counter() - t)
            t = time.perf_counter()
            item = c.json(f"/api/evaluate/next?annotator=bench{k}")[1]["item"]
            nxt.append(time.perf_counter() - t)
            t = time.perf_counter()
            for u in (item["input"], item["a"]["glb"], item["b"]["glb"], *item["a"]["views"], *item["b"]["views"]):
                assert c.request("GET", u)[0] == 200
            files.append(time.perf_counter() - t)
            t = time.perf_counter()
            code, _ = c.request("POST", f"/api/evaluate/{item['id']}", json.dumps({"verdict": "tie", "annotator": f"bench{k}"}).encode(),
                                {"Content-Type": "application/json"})
            votes.append(time.perf_counter() - t)
            assert code == 201
    log = (tmp / "data" / "evaluator.log").read_text()
    recon_s = [float(x.split(" in ")[1].split(" s")[0]) for x in log.splitlines() if "reconstructed" in x]
    res.update({"reconstruction_s": recon_s, "page_ms_p50": 1000 * statistics.median(page), "next_ms_p50": 1000 * statistics.median(nxt),
                "item_files_ms_p50": 1000 * statistics.median(files), "vote_ms_p50": 1000 * statistics.median(votes)})
    print(f"run {a.run}: {res['built']}")
    print(f"build (builder process, {a.frames} frames at {a.size} px, {a.iters} iters): {res['build_s']:.1f} s; "
          f"per reconstruction {', '.join(f'{x:.1f}' for x in recon_s)} s")
    print(f"GET /evaluate            {ms(page)}")
    print(f"GET /api/evaluate/next   {ms(nxt)}")
    print(f"an item's 7 files        {ms(files)}")
    print(f"POST a verdict           {ms(votes)}")
    out = ROOT / "bench" / "out" / "serve_evaluate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
