"""The worker: threads inside the server that take jobs off the queue and run each in a child process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from vibe3r.serve.config import ServeConfig
from vibe3r.serve.jobs import JobStore

log = logging.getLogger("vibe3r.serve")


class Worker:
    """``cfg.workers`` threads; each claims the oldest queued job and runs ``vibe3r.serve.runjob`` on it.

    ``stop()`` terminates running children and puts their jobs back in the queue, so a restarted
    server picks them up again; a child that dies on its own (crash, signal) fails its job.
    """

    def __init__(self, cfg: ServeConfig, store: JobStore, poll_s: float = 0.5):
        self.cfg, self.store, self.poll_s = cfg, store, poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._children: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.cfg.workers):
            t = threading.Thread(target=self._loop, name=f"vibe3r-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            children = list(self._children.values())
        for p in children:
            p.terminate()
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim()
            if job is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception as exc:  # never let the worker thread die
                log.exception("job %s", job["id"])
                self.store.fail(job["id"], f"internal error while running the job: {type(exc).__name__}")

    def _run(self, job: dict) -> None:
        jdir = self.cfg.jobs_dir / job["id"]
        jdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.cfg.recon.threads), MKL_NUM_THREADS=str(self.cfg.recon.threads))
        with open(jdir / "log.txt", "ab") as logf:
            p = subprocess.Popen([sys.executable, "-m", "vibe3r.serve.runjob", self.cfg.to_json(), job["id"]],
                                 stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            with self._lock:
                self._children[job["id"]] = p
            try:
                while True:
                    try:
                        rc = p.wait(timeout=self.poll_s)
                        break
                    except subprocess.TimeoutExpired:
                        if self._stop.is_set():
                            p.terminate()
                            try:
                                p.wait(timeout=10)
                            except subprocess.TimeoutExpired:
                                p.kill()
                                p.wait()
                            self.store.requeue(job["id"])
                            log.info("job %s re-queued (server stopping)", job["id"])
                            return
            finally:
                with self._lock:
                    self._children.pop(job["id"], None)
        row = self.store.get(job["id"])
        if row is not None and row["state"] == "running":
            if self._stop.is_set():
                self.store.requeue(job["id"])
            else:
                how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
                self.store.fail(job["id"], f"the reconstruction process crashed in phase '{row['phase']}' ({how}); "
                                           "the server keeps running, try another capture")
        log.info("job %s %s", job["id"], row["state"] if row else "?")
