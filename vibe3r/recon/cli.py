"""``vibe3r recon``: train the pairwise model (inference and whole-video reconstruction land here too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="pairwise reconstruction: train, run")


@app.callback()
def _group() -> None:
    """Pairwise reconstruction."""


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option("--data", help="pair dataset folder written by `vibe3r video dataset`")],
    out: Annotated[Path, typer.Option("--out", help="checkpoint folder (config.json, model.safetensors, logs)")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML config (its `recon:` section is used)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run saved in --out")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. recon.train.steps=100")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a one-line JSON summary last")] = False,
) -> None:
    """Train the model; `--resume` continues bit-exactly from the last checkpoint in --out."""
    from vibe3r.config import load_config
    from vibe3r.recon.train import train

    cfg = load_config(config, overrides)
    summary = train(cfg, data, out, resume=resume, progress=not no_progress)
    typer.echo(f"trained {summary['step']} steps in {summary['cpu_min']:.2f} CPU-min ({summary['wall_min']:.2f} min wall), "
               f"{summary['params'] / 1e6:.2f}M params, final loss {summary.get('loss', float('nan')):.4f} -> {out}")
    if as_json:
        typer.echo(json.dumps(summary))


@app.command("run")
def run_cmd(
    input_spec: Annotated[str, typer.Argument(metavar="INPUT", help="video file, image folder or any capture spec, optionally PATH@START:STOP:STEP")],
    out: Annotated[Path, typer.Option("--out", help="output folder (scene.ply, scene.glb, mesh.ply, cameras, COLMAP, nerfstudio, depth, report.json)")],
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="checkpoint folder; default: the shipped weights/recon-base")] = None,
    max_frames: Annotated[int, typer.Option("--max-frames", help="frames kept, evenly spread (0 = all)")] = 64,
    size: Annotated[int, typer.Option("--size", help="longer image side the network sees (pixels)")] = 128,
    graph: Annotated[str, typer.Option("--graph", help="scene graph: auto | complete | swin")] = "auto",
    window: Annotated[int, typer.Option("--window", help="swin: pairs with the next N frames")] = 3,
    iters: Annotated[int, typer.Option("--iters", help="global alignment iterations")] = 300,
    fov: Annotated[float | None, typer.Option("--fov", help="horizontal field of view (deg) when the capture has no intrinsics; default: estimated")] = None,
    pose: Annotated[str, typer.Option("--pose", help="pair pose solver: auto | essential | pnp | procrustes")] = "auto",
    mesh: Annotated[bool, typer.Option("--mesh/--no-mesh", help="TSDF mesh")] = True,
    depth: Annotated[str, typer.Option("--depth", help="exported depth: triangulated+pointmap | triangulated (sparse) | pointmap")] = "triangulated+pointmap",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads")] = 1,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bars")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a one-line JSON summary last")] = False,
) -> None:
    """Reconstruct a room from a video: pairwise pointmaps over a scene graph, global alignment, exports."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vibe3r.recon.align import AlignConfig
    from vibe3r.recon.run import RunConfig, reconstruct_path

    cfg = RunConfig(size=size, max_frames=max_frames or None, graph=graph, window=window, fov_deg=fov, pose_solver=pose,
                    mesh=mesh, depth=depth, align=AlignConfig(iters=iters))
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), disable=no_progress) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        report = reconstruct_path(input_spec, out, ckpt, cfg, progress=progress, threads=threads)
    t = report["timings_s"]
    typer.echo(f"{report['frames']} frames, {report['graph']['pairs']} pairs -> {out} in {t['total']:.1f} s "
               f"(inference {t['inference']:.1f} s, align {t['align']:.1f} s); {report['exports']['points']} points, "
               f"mean confidence {report['mean_confidence']:.3g}")
    if report["gt"]:
        g = report["gt"]
        typer.echo("ground truth: " + ", ".join(f"{k} {v:.4g}" for k, v in g.items()))
    if as_json:
        summary = {"out": str(out), "frames": report["frames"], "pairs": report["graph"]["pairs"], "seconds": t["total"],
                   "points": report["exports"]["points"], "mean_confidence": report["mean_confidence"],
                   "peak_rss_mb": report["peak_rss_mb"], **{f"gt_{k}": v for k, v in report["gt"].items()}}
        typer.echo(json.dumps(summary))
