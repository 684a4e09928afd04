"""Settings of ``vibe3r serve``: where jobs live, what uploads are accepted, how reconstructions run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vibe3r.errors import InputError
from vibe3r.serve.evaluator import EvalSettings


@dataclass
class Limits:
    """What an upload may be; each is checked on the file's header before anything is decoded in full."""

    max_upload_mb: float = 500.0  # bytes on the wire (the request is cut off past this)
    max_duration_s: float = 600.0  # video length from the container header
    max_pixels: int = 3840 * 2160  # width x height of one frame (4K)
    max_photos: int = 300  # photos in one upload
    min_frames: int = 2
    jobs_per_client: int = 5  # queued + running jobs of one client (remote address, and user under --auth)

    def __post_init__(self) -> None:
        for k in ("max_upload_mb", "max_duration_s", "max_pixels", "max_photos", "jobs_per_client"):
            if getattr(self, k) <= 0:
                raise InputError(f"serve limit {k} must be > 0, got {getattr(self, k)}")


@dataclass
class ReconSettings:
    """The reconstruction each job runs (a subset of ``vibe3r.recon.run.RunConfig``)."""

    size: int = 128  # longer image side the network sees
    max_frames: int = 32  # frames kept, evenly spread
    iters: int = 300  # global alignment iterations
    pose: str = "auto"  # pair pose solver
    mesh: bool = True  # TSDF mesh
    threads: int = 1  # torch threads of a job process

    def __post_init__(self) -> None:
        poses = ("auto", "essential", "pnp", "procrustes")
        if self.pose not in poses:
            raise InputError(f"unknown pose solver {self.pose!r}; valid: {', '.join(poses)}")
        if self.size < 16 or self.max_frames < 2 or self.iters < 0 or self.threads < 1:
            raise InputError(f"bad reconstruction settings: size {self.size} (>= 16), max_frames {self.max_frames} (>= 2), "
                             f"iters {self.iters} (>= 0), threads {self.threads} (>= 1)")


@dataclass
class ServeConfig:
    data: Path = Path("runs/serve")  # jobs, database, captures pool
    ckpt: Path | None = None  # None: the shipped weights/recon-base
    host: str = "127.0.0.1"
    port: int = 7860
    auth: str | None = None  # "user:password" (HTTP Basic) when the server is exposed
    workers: int = 1  # jobs run at once (each in its own process)
    job_timeout_s: float = 1800.0  # a job running longer is killed and fails
    limits: Limits = field(default_factory=Limits)
    recon: ReconSettings = field(default_factory=ReconSettings)
    evaluate: EvalSettings = field(default_factory=EvalSettings)  # the evaluator page (a loop run's rounds side by side)

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        if self.auth is not None and (":" not in self.auth or not self.auth.split(":", 1)[0] or not self.auth.split(":", 1)[1]):
            raise InputError("--auth must be user:password with both parts non-empty")
        if self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")

    @property
    def db_path(self) -> Path:
        return self.data / "serve.db"

    @property
    def jobs_dir(self) -> Path:
        return self.data / "jobs"

    @property
    def pool_dir(self) -> Path:
        """The real-capture pool that `loop iterate` reads: one folder per contributed capture."""
        return self.data / "captures"

    def to_json(self) -> str:
        d = asdict(self)
        d["data"] = str(self.data)
        d["ckpt"] = None if self.ckpt is None else str(self.ckpt)
        d["auth"] = None if self.auth is None else self.auth.split(":", 1)[0] + ":***"
        d["evaluate"] = json.loads(self.evaluate.to_json())
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        d = json.loads(text)
        return cls(data=Path(d["data"]), ckpt=None if d["ckpt"] is None else Path(d["ckpt"]), host=d["host"], port=d["port"],
                   workers=d["workers"], job_timeout_s=d["job_timeout_s"], limits=Limits(**d["limits"]), recon=ReconSettings(**d["recon"]))
