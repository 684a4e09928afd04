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
