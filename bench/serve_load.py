"""Load test of ``vibe3r serve`` on loopback: N uploads at once all complete (none lost) while the page stays
responsive, then a server killed in the middle of the queue resumes it after a restart.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_load.py            # 5 uploads + restart, shipped checkpoint
    .venv/bin/python bench/serve_load.py --uploads 3 --restart-jobs 2 --size 96 --max-frames 6 --iters 20

The uploaded mp4 is made at run time from 7-Scenes redkitchen frames (../shared/data/real). The server is the
real CLI (``vibe3r serve``) in a child process; only 127.0.0.1 is contacted. Prints latencies; writes
bench/out/serve_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vibe3r.captures import load_capture, write_capture_video
from vibe3r.serve.client import Client

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "vibe3r"), "serve", "--data", str(data), "--port", str(port), "--size", str(args.size),
           "--max-frames", str(args.max_frames), "--iters", str(args.iters), "--jobs-per-client", str(max(args.uploads, args.restart_jobs))]
    p = subprocess.Popen(cmd, stdout=open(data.parent / "server.log", "ab"), stderr=subprocess.STDOUT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    c = Client(f"http://127.0.0.1:{port}", timeout=5)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            if c.json("/healthz")[0] == 200:
                return p
        except OSError:
            pass
        if p.poll() is not None:
            raise RuntimeError(f"server exited with {p.returncode}; see {data.parent / 'server.log'}")
        time.sleep(0.3)
    raise RuntimeError("server did not start in 120 s")


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    if not xs:
        return "n=0"
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"n={len(xs)} p50={1000 * statistics.median(xs):.0f} ms p95={1000 * p95:.0f} ms max={1000 * xs[-1]:.0f} ms"


class Prober:
    """GET / and GET /api/jobs every ``every`` seconds in a thread; latencies and failures."""

    def __init__(self, client: Client, every: float = 0.25):
        self.c, self.every = client, every
        self.lat: dict[str, list[float]] = {"/": [], "/api/jobs": []}
        self.failures = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for path in self.lat:
                t = time.perf_counter()
                try:
                    status, _ = self.c.request("GET", path)
                    ok = status == 200
                except OSError:
                    ok = False
                if ok:
                    self.lat[path].append(time.perf_counter() - t)
                else:
                    self.failures += 1
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=5)
    ap.add_argument("--restart-jobs", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--max-frames", type=int, default=6)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=900, help="seconds for each phase to complete")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    data = tmp / "data"
    data.mkdir()
    cap = load_capture(REAL / "7scenes-redkitchen", max_frames=12, size=160)
    mp4 = write_capture_video(cap, tmp / "kitchen.mp4", fps=5)
    video = mp4.read_bytes()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    result: dict = {"settings": vars(args), "upload_bytes": len(video)}

    t = time.perf_counter()
    server = start_server(data, port, args)
    result["server_start_s"] = time.perf_counter() - t
    print(f"server up on {url} in {result['server_start_s']:.1f} s (data {data})")
    c = Client(url, timeout=60)
    try:
        # ---- phase A: N simultaneous uploads ----------------------------------------------------
        barrier = threading.Barrier(args.uploads)
        up: list[tuple[int, dict, float]] = [None] * args.uploads  # type: ignore[list-item]

        def submit(i: int) -> None:
            barrier.wait()
            t0 = time.perf_counter()
            status, body = Client(url, timeout=60).upload([(f"room-{i}.mp4", video)])
            up[i] = (status, body, time.perf_counter() - t0)

        with Prober(c) as probe:
            t0 = time.perf_counter()
            ths = [threading.Thread(target=submit, args=(i,)) for i in range(args.uploads)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            ids = [b["id"] for s, b, _ in up if s == 201]
            print(f"A. {args.uploads} uploads at once: statuses {[s for s, _, _ in up]}, upload latency {stats([x for _, _, x in up])}")
            jobs = [c.wait(i, timeout=args.timeout, poll=1.0) for i in ids]
            wall = time.perf_counter() - t0
        done = sum(j["state"] == "done" for j in jobs)
        print(f"   {done}/{args.uploads} done, {sum(j['state'] == 'failed' for j in jobs)} failed, all finished in {wall:.1f} s; "
              f"per job {stats([j['finished'] - j['started'] for j in jobs])} running, "
              f"{stats([j['finished'] - j['created'] for j in jobs])} from upload to result")
        for path, lat in probe.lat.items():
            print(f"   while busy: GET {path:<10} {stats(lat)}")
        print(f"   probe failures: {probe.failures}")
        result["A"] = {"statuses": [s for s, _, _ in up], "upload_s": [x for _, _, x in up], "done": done, "wall_s": wall,
                       "errors": [j["error"] for j in jobs if j["error"]],
                       "job_run_s": [j["finished"] - j["started"] for j in jobs],
                       "latency_s": probe.lat, "probe_failures": probe.failures}

        # ---- phase B: kill the server mid-queue, restart, the queue resumes --------------------------
        ids = [c.upload([(f"restart-{i}.mp4", video)])[1]["id"] for i in range(args.restart_jobs)]
        while not any(c.json(f"/api/jobs/{i}")[1]["phase"] in ("inference", "poses", "align") for i in ids):
            time.sleep(0.2)
        before = {i: c.json(f"/api/jobs/{i}")[1] for i in ids}
        print(f"B. {args.restart_jobs} jobs queued; killing the server (SIGKILL) while "
              + ", ".join(f"{i[:6]} {j['state']}/{j['phase'] or '-'}" for i, j in before.items()))
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        t = time.perf_counter()
        server = start_server(data, port, args)
        print(f"   restarted in {time.perf_counter() - t:.1f} s")
        jobs = [c.wait(i, timeout=args.timeout, poll=1.0) for i in ids]
        print("   after restart: " + ", ".join(f"{j['id'][:6]} {j['state']} (attempts {j['attempts']})" for j in jobs))
        result["B"] = {"before": {i: (j["state"], j["phase"]) for i, j in before.items()},
                       "after": [(j["state"], j["attempts"]) for j in jobs]}
        lost = args.uploads + args.restart_jobs - done - sum(j["state"] == "done" for j in jobs)
        print(f"jobs lost or failed: {lost}")
        result["lost_or_failed"] = lost
    finally:
        server.terminate()
        server.wait(30)
    out = ROOT / "bench" / "out" / "serve_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
