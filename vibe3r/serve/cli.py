"""``vibe3r serve``: the upload-a-video web app (registered by ``vibe3r.cli`` because this file defines ``serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option("--host", help="address to bind; the default serves this machine only")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 7860,
    data: Annotated[Path, typer.Option("--data", help="jobs, the queue database and the captures pool (captures/)")] = Path("runs/serve"),
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="reconstruction checkpoint; default: the shipped weights/recon-base")] = None,
    auth: Annotated[str | None, typer.Option("--auth", help="user:password required from every client (HTTP Basic)")] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="largest upload")] = 500.0,
    max_duration_s: Annotated[float, typer.Option("--max-duration", help="longest video (seconds)")] = 600.0,
    jobs_per_client: Annotated[int, typer.Option("--jobs-per-client", help="queued + running jobs one client may have")] = 5,
    workers: Annotated[int, typer.Option("--workers", help="jobs run at once, each in its own process")] = 1,
    job_timeout_min: Annotated[float, typer.Option("--job-timeout-min", help="a job running longer is stopped and fails")] = 30.0,
    size: Annotated[int, typer.Option("--size", help="longer image side the network sees (pixels)")] = 128,
    max_frames: Annotated[int, typer.Option("--max-frames", help="frames kept from each upload, evenly spread")] = 32,
    iters: Annotated[int, typer.Option("--iters", help="global alignment iterations")] = 300,
    pose: Annotated[str, typer.Option("--pose", help="pair pose solver: auto | essential | pnp | procrustes")] = "auto",
    mesh: Annotated[bool, typer.Option("--mesh/--no-mesh", help="TSDF mesh")] = True,
    threads: Annotated[int, typer.Option("--threads", help="torch threads per job")] = 1,
    run: Annotated[Path | None, typer.Option("--run", help="loop run whose rounds the evaluator page (/evaluate) compares")] = None,
    eval_frames: Annotated[int, typer.Option("--eval-frames", help="evaluator: frames of each capture reconstructed")] = 6,
    eval_size: Annotated[int, typer.Option("--eval-size", help="evaluator: longer image side the network sees")] = 128,
    eval_iters: Annotated[int, typer.Option("--eval-iters", help="evaluator: global alignment iterations")] = 100,
    eval_captures: Annotated[list[str] | None, typer.Option("--eval-captures", help="evaluator: capture specs to compare on (repeatable); default: the run's real captures")] = None,
) -> None:
    """Web app: upload a phone video (or photos) of a room, watch the progress, view and download the 3D result;
    with --run, evaluators compare the run's rounds at /evaluate."""
    import uvicorn

    from vibe3r.serve.app import create_app
    from vibe3r.serve.config import Limits, ReconSettings, ServeConfig
    from vibe3r.serve.evaluator import EvalSettings

    cfg = ServeConfig(data=data.resolve(), ckpt=ckpt.resolve() if ckpt else None, host=host, port=port, auth=auth, workers=workers,
                      job_timeout_s=60 * job_timeout_min,
                      limits=Limits(max_upload_mb=max_upload_mb, max_duration_s=max_duration_s, jobs_per_client=jobs_per_client),
                      recon=ReconSettings(size=size, max_frames=max_frames, iters=iters, pose=pose, mesh=mesh, threads=threads),
                      evaluate=EvalSettings(run=run.resolve() if run else None, frames=eval_frames, size=eval_size, iters=eval_iters,
                                            captures=list(eval_captures or [])))
    if run is not None:
        from vibe3r.loop.compare import open_registry_ro

        open_registry_ro(run).close()  # not a loop run: one line now
    if cfg.ckpt is None:
        from vibe3r.recon.run import default_checkpoint

        default_checkpoint()  # fail now, in one line, rather than in every job
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        typer.echo(f"warning: serving on {host} without --auth: anyone who can reach this address can upload", err=True)
    typer.echo(f"vibe3r serve: http://{host}:{port}/  (data in {cfg.data})"
               + (f"; evaluator: http://{host}:{port}/evaluate (run {run})" if run else ""))
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")
