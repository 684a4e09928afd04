"""Helpers of the serve tests: a real uvicorn server on loopback in a thread, test videos."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import uvicorn

from vibe3r.serve.app import create_app
from vibe3r.serve.config import ServeConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(cfg: ServeConfig, start_worker: bool = True):
    """Serve ``cfg`` on 127.0.0.1 (a free port) in a thread; yields the base URL; shuts down cleanly (lifespan included)."""
    port = free_port()
    app = create_app(cfg, start_worker=start_worker)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    t0 = time.monotonic()
    while not server.started:
        if time.monotonic() - t0 > 30 or not t.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        t.join(30)


def moving_frames(n: int = 8, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A textured image panned sideways: frames that move (N, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 4, (w + 4 * n) // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    return np.stack([base[:, 4 * i : 4 * i + w] for i in range(n)])
