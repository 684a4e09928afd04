"""``vibe3r loop``: run rounds of the self-improvement loop and inspect a run.

    vibe3r loop iterate --config configs/default.yaml --run runs/demo            # one round (loop.rounds)
    vibe3r loop iterate --run runs/demo --rounds 3                               # three more rounds
    vibe3r loop iterate --run runs/demo --captures phone.mp4 --captures runs/serve/captures  # own real captures
    vibe3r loop status --run runs/demo
    vibe3r loop compare --run runs/demo --rounds 1 3 5 --out report.html      # HTML report (--json: numbers)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, help="the self-improvement loop")

RunOpt = Annotated[Path, typer.Option("--run", help="run directory (registry.sqlite, rounds/, live checkpoint)")]


@app.callback()
def _group() -> None:
    """The self-improvement loop: generate -> train recon -> evaluate -> promote, round after round."""


@app.command("iterate")
def iterate_cmd(
    run: RunOpt,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (default: the embedded default)")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="rounds to run now (default loop.rounds); an interrupted round counts as the first")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", help="config override section.key=value (repeatable)")] = None,
    captures: Annotated[list[str] | None, typer.Option(
        "--captures", help="real captures for the preference stages, instead of preference.captures (repeatable): a video, "
                           "a capture folder, PATH@START:STOP, or a capture pool (`vibe3r serve` DIR/captures); "
                           "their own intrinsics are used unless --set preference.focal=[fx,fy]")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="plain lines instead of progress bars")] = False,
) -> None:
    """Run rounds; killed at any point, the same command resumes at the first unfinished stage."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vibe3r.config import Config, load_config
    from vibe3r.loop.iterate import iterate

    cfg = load_config(config, overrides)
    if captures:
        d = json.loads(cfg.model_dump_json())
        d["preference"]["captures"] = list(captures)
        if not any(o.strip().startswith("preference.focal") for o in overrides or []):
            d["preference"]["focal"] = None  # preference.focal corrects the default 7-Scenes capture, not these
        cfg = Config.model_validate(d)
    con = Console()
    tasks: dict[tuple[int, str], int] = {}
    with Progress(TextColumn("[bold]round {task.fields[rnd]}[/bold] {task.description:<12}"), BarColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=con, transient=True,
                  disable=no_progress) as bar:

        def on_event(rnd: int, stage: str, event: str, done: float, total: float | None, info: str) -> None:
            key = (rnd, stage)
            if event == "start":
                tasks[key] = bar.add_task(stage, total=None, rnd=rnd, info=info)
                return
            if event == "progress":
                bar.update(tasks[key], completed=done, total=total, info=info)
                return
            bar.update(tasks[key], completed=1, total=1, info=f"{event} {info}")
            bar.stop_task(tasks[key])
            line = f"round {rnd} {stage}: {event}" + ("" if event == "skipped" else f" in {done:.0f} s, peak {total:.0f} MB") + (f" ({info})" if info else "")
            if no_progress:
                con.print(line, highlight=False)
            else:
                bar.console.print(line, highlight=False)

        worked = iterate(cfg, run, rounds, on_event)
    con.print(f"rounds {', '.join(map(str, worked))} done in [bold]{run}[/bold]; `vibe3r loop status --run {run}` for the table")


@app.command("status")
def status_cmd(
    run: RunOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
) -> None:
    """Rounds, stages, metrics and the live checkpoint of a run."""
    from vibe3r.loop.iterate import status

    st = status(run)
    if as_json:
        typer.echo(json.dumps(st, indent=1))
        return
    con = Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title=f"{run}")
    for col in ("round", "state", "stages (s)", "heldout AUC@10", "real AUC@10", "held-out loss", "depth AbsRel", "promoted"):
        t.add_column(col)
    def fmt(m: dict, k: str) -> str:
        return "-" if m.get(f"evaluate/{k}") is None else f"{m[f'evaluate/{k}']:.3g}"

    for r in st["rounds"]:
        m = r["metrics"]
        f = lambda k, m=m: fmt(m, k)  # noqa: E731
        pair = lambda k, m=m: f"{fmt(m, k)} (live {fmt(m, 'parent_' + k)})"  # noqa: E731
        stages = " ".join(f"{s['name']}:{s['state'] if s['state'] != 'done' else round(s['seconds'])}" for s in r["stages"])
        ck = r["checkpoint"]
        t.add_row(str(r["round"]), r["state"], stages, pair("heldout_auc10"), pair("real_auc10"), pair("heldout_loss"),
                  f("heldout_depth_absrel"), "-" if ck is None else ("yes" if ck["promoted"] else "no: " + ck["reason"]))
    con.print(t)
    live = st["live"]
    con.print(f"live recon checkpoint: round {live['round']} ({live['path']})" if live["round"]
              else f"live recon checkpoint: the base ({live['path'] or 'loop.base_checkpoint'}), no round promoted yet")


@app.command("compare", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def compare_cmd(
    ctx: typer.Context,
    run: RunOpt,
    rounds: Annotated[list[str] | None, typer.Option("--rounds", help="rounds to compare: --rounds 1 3 5 (or 1,3,5); default all")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the self-contained HTML report to write")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report's numbers as JSON")] = False,
    media: Annotated[bool | None, typer.Option("--media/--no-media", help="pictures: chosen vs rejected, generator frames, "
                                        "trajectories vs GT with GLBs (cached in RUN/report-cache); default on unless VIBE3R_REPORT_MEDIA=0")] = None,
) -> None:
    """Compare rounds: metrics, promotion, rewards, preference margins, SFT vs DPO/GRPO, human win rate, GLBs."""
    from vibe3r.errors import Vibe3rError
    from vibe3r.loop.compare import compare

    tokens = [t for r in (rounds or []) for t in r.split(",")] + list(ctx.args)  # `--rounds 1 3 5`: 3 and 5 arrive as extra args
    try:
        picked = [int(t) for t in tokens if t.strip()]
    except ValueError:
        raise Vibe3rError(f"--rounds takes round numbers, got {' '.join(tokens)!r}") from None
    if out is None and not as_json:
        raise Vibe3rError("nothing to do: give --out report.html and/or --json")
    data = compare(run, out, picked or None, media=media)
    if as_json:
        typer.echo(json.dumps(data, indent=1))
    if out is not None:
        typer.echo(f"wrote {out} ({len(data['rounds'])} rounds)", err=as_json)
