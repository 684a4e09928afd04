"""``vibe3r captures``: look at real captures.

    vibe3r captures inspect ../shared/data/real/7scenes-redkitchen
    vibe3r captures inspect phone.mp4 --json
    vibe3r captures to-video ../shared/data/real/7scenes-redkitchen@125: out.mp4 --fps 7.5
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vibe3r.captures import describe_capture, load_capture, write_capture_video

app = typer.Typer(no_args_is_help=True, add_completion=False, help="read real captures")

SpecArg = Annotated[str, typer.Argument(help="capture path, optionally PATH@START:STOP:STEP (ordinal frame indices)")]


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list) and len(v) > 4 and all(isinstance(x, str) for x in v):
        return f"{len(v)}: {', '.join(v[:2])}, ..."
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


@app.command()
def inspect(
    spec: SpecArg,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON line instead of a table")] = False,
) -> None:
    """Print the format, frame count, resolution and which ground truth (K, poses, depth) a capture has."""
    info = describe_capture(spec)
    if as_json:
        typer.echo(json.dumps(info))
        return
    table = Table(title=f"capture {info['path']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    labels = {
        "format": "format",
        "frames": "frames",
        "source_frames": "frames in source",
        "resolution": "resolution (W x H)",
        "K_known": "intrinsics known",
        "fx_fy_cx_cy": "fx, fy, cx, cy",
        "poses_known": "poses known",
        "depth_known": "depth known",
        "timestamps_known": "timestamps known",
        "time_span_s": "time span (s)",
        "fps": "fps",
        "duration_s": "duration (s)",
        "rotation_deg": "display rotation (deg ccw)",
        "codec": "codec",
        "path_length": "trajectory length",
        "extent": "camera-centre extent",
        "max_rotation_deg": "rotation range (deg, max between frames)",
        "max_rotation_from_first_deg": "max rotation from first frame (deg)",
        "dropped_unposed": "frames dropped (no pose)",
        "dropped_no_depth": "frames dropped (no depth)",
        "listed_missing": "listed but missing files",
        "pose_dt_max": "max pose time offset (s)",
        "camera": "camera",
        "intrinsics_from": "intrinsics from",
    }
    info = {**info, "resolution": f"{info['width']} x {info['height']}"}
    for key, label in labels.items():
        if key in info and info[key] is not None:
            table.add_row(label, _fmt(info[key]))
    Console().print(table)


@app.command("to-video")
def to_video(
    spec: SpecArg,
    out: Annotated[Path, typer.Argument(help="output .mp4")],
    fps: Annotated[float, typer.Option(help="frame rate of the written video")] = 10.0,
    size: Annotated[int | None, typer.Option(help="longer side in pixels (default: native)")] = None,
    max_frames: Annotated[int | None, typer.Option(help="keep at most this many frames, evenly spread")] = None,
) -> None:
    """Write a capture's frames (in order) as an H.264 mp4, e.g. to exercise the video upload path."""
    cap = load_capture(spec, size=size, max_frames=max_frames)
    write_capture_video(cap, out, fps=fps)
    typer.echo(f"wrote {out} ({len(cap)} frames, {cap.hw[1]}x{cap.hw[0]}, {fps:g} fps)")
