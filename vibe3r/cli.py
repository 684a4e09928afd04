"""The ``vibe3r`` command: wires sub-apps; no logic of its own.

Known errors (config, input) become one line on stderr and exit code 2; ``--debug`` (or
``VIBE3R_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import typer

from vibe3r.config import ConfigError
from vibe3r.errors import Vibe3rError

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="vibe3r: self-improving spatial intelligence."
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show full tracebacks")) -> None:
    if debug:
        os.environ["VIBE3R_DEBUG"] = "1"


def _register() -> None:
    from vibe3r.captures_cli import app as captures_app
    from vibe3r.video_gen.cli import app as video_app, demo

    app.add_typer(video_app, name="video", help="motion prompts, procedural world, rendering, datasets")
    app.add_typer(captures_app, name="captures", help="read real captures")
    app.command("demo")(demo)
    from vibe3r.eval.cli import app as eval_app

    app.add_typer(eval_app, name="eval", help="benchmarks against ground truth")
    from vibe3r.recon.cli import app as recon_app

    app.add_typer(recon_app, name="recon", help="pairwise reconstruction: train, run")
    # stages that land later register themselves by shipping a cli.py with a typer ``app``
    for pkg, help_ in (("preference", "rewards, preference store, DPO/GRPO"), ("loop", "the self-improvement loop")):
        if (Path(__file__).parent / pkg / "cli.py").is_file():
            sub = importlib.import_module(f"vibe3r.{pkg}.cli")
            app.add_typer(sub.app, name=pkg, help=help_)
    if (Path(__file__).parent / "serve" / "cli.py").is_file():  # `vibe3r serve` is one command
        app.command("serve")(importlib.import_module("vibe3r.serve.cli").serve)


_register()


def main() -> None:
    """Console entry point: click handles usage errors; ours become one line and exit code 2."""
    try:
        app()
    except (ConfigError, Vibe3rError) as exc:
        if os.environ.get("VIBE3R_DEBUG"):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
