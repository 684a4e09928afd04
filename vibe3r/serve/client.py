"""A minimal HTTP client of the serve API (standard library only), for tests, benchmarks and scripts."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any


class Client:
    def __init__(self, base_url: str, auth: str | None = None, timeout: float = 60.0):
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {}
        if auth:
            self.headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str) -> tuple[int, Any]:
        status, body = self.request("GET", path)
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, {"error": body.decode(errors="replace")}

    def upload(self, files: list[tuple[str, bytes]] | Path | str, contribute: bool = False) -> tuple[int, dict]:
        """POST /api/jobs with one or several (filename, bytes); returns (status, JSON body)."""
        if isinstance(files, (str, Path)):
            files = [(Path(files).name, Path(files).read_bytes())]
        boundary = uuid.uuid4().hex
        parts = []
        for name, data in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                         "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        if contribute:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="contribute"\r\n\r\n1\r\n'.encode())
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, out = self.request("POST", "/api/jobs", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            return status, json.loads(out)
        except json.JSONDecodeError:
            return status, {"error": out.decode(errors="replace")}

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> dict:
        """Poll a job until it is done or failed."""
        t0 = time.monotonic()
        while True:
            status, job = self.json(f"/api/jobs/{job_id}")
            if status == 200 and job["state"] in ("done", "failed"):
                return job
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"job {job_id} still {job and job.get('state')} after {timeout:.0f} s")
            time.sleep(poll)
