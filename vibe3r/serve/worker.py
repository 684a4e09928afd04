"""The worker: threads inside the server that each keep one job process (``vibe3r.serve.runjob``) alive."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from vibe3r.serve.config import ServeConfig
from vibe3r.serve.jobs import JobStore

log = logging.getLogger("vibe3r.serve")


class Worker:
    """``cfg.workers`` supervisor threads, each running one job process that claims jobs from the queue.

    A job process that dies on its own (crash, signal) fails the job it held with a readable line and is
    started again, and so does one whose job runs past ``cfg.job_timeout_s`` (killed). ``stop()`` terminates
    the processes and puts their jobs back in the queue, so a restarted server picks them up (a server killed outright: its children get SIGTERM from the kernel
    and the next server re-queues what they held, ``JobStore.requeue_running``).
    """

    def __init__(self, cfg: ServeConfig, store: JobStore, poll_s: float = 0.5):
        self.cfg, self.store, self.poll_s = cfg, store, poll_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._children: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.cfg.jobs_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.cfg.workers):
            t = threading.Thread(target=self._loop, args=(i,), name=f"vibe3r-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        with self._lock:
            children = list(self._children)
        for p in children:
            if p.poll() is None:
                p.terminate()
        for t in self._threads:
            t.join(timeout)

    def _spawn(self, slot: int) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.cfg.recon.threads), MKL_NUM_THREADS=str(self.cfg.recon.threads))
        logf = open(self.cfg.data / f"worker-{slot}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen([sys.executable, "-m", "vibe3r.serve.runjob", self.cfg.to_json()],
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        finally:
            logf.close()

    def _overdue(self, p: subprocess.Popen, job: dict | None = None) -> bool:
        """Whether the job the process holds has run past ``cfg.job_timeout_s``."""
        jobs = [job] if job is not None else self.store.running_of(str(p.pid))
        return any(j["started"] is not None and time.time() - j["started"] > self.cfg.job_timeout_s for j in jobs)

    def _loop(self, slot: int) -> None:
        while not self._stop.is_set():
            p = self._spawn(slot)
            with self._lock:
                self._children.append(p)
            while True:
                try:
                    rc = p.wait(timeout=self.poll_s)
                    break
                except subprocess.TimeoutExpired:
                    if self._overdue(p):
                        p.kill()
                        rc = p.wait()
                        break
                    if self._stop.is_set():
                        p.terminate()
                        try:
                            rc = p.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            p.kill()
                            rc = p.wait()
                        break
            with self._lock:
                self._children.remove(p)
            for job in self.store.running_of(str(p.pid)):
                if self._overdue(p, job):
                    self.store.fail(job["id"], f"the reconstruction took longer than the limit of {self.cfg.job_timeout_s / 60:.0f} min "
                                               "and was stopped; try a shorter video")
                    log.warning("job %s: over the time limit", job["id"])
                elif self._stop.is_set():
                    self.store.requeue(job["id"])
                    log.info("job %s re-queued (server stopping)", job["id"])
                else:
                    how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
                    self.store.fail(job["id"], f"the reconstruction process crashed in phase '{job['phase']}' ({how}); "
                                               "the server keeps running, try another capture")
                    log.warning("job %s: job process crashed (%s)", job["id"], how)


class EvalBuilder:
    """A thread that runs the evaluator's builder process (``python -m vibe3r.serve.evaluator``) once when the
    server starts: it reconstructs what the run's comparisons still miss (cached ones are reused) while the
    page already serves the comparisons that are ready. Its log is ``<data>/evaluator.log``."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.state: dict = {"building": False, "built": None, "builder_error": None}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vibe3r-evaluator", daemon=True)
        self.state["building"] = True
        self._thread.start()

    def status(self) -> dict:
        return dict(self.state)

    def _run(self) -> None:
        self.cfg.data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.cfg.recon.threads), MKL_NUM_THREADS=str(self.cfg.recon.threads))
        logf = open(self.cfg.data / "evaluator.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "vibe3r.serve.evaluator", self.cfg.evaluate.to_json()],
                                          stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL, env=env)
        finally:
            logf.close()
        out, _ = self._proc.communicate()
        rc = self._proc.returncode
        if rc == 0:
            import json

            lines = out.decode(errors="replace").strip().splitlines()
            self.state["built"] = json.loads(lines[-1]) if lines else None
            log.info("evaluator: comparisons built: %s", self.state["built"])
        elif not self._stopping:
            self.state["builder_error"] = f"building the comparisons failed (exit code {rc}); see {self.cfg.data / 'evaluator.log'}"
            log.warning("evaluator builder: exit code %s", rc)
        self.state["building"] = False

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout)
