"""``vibe3r eval``: benchmarks against ground truth.

Example (the classical peer at the model's resolution, then the no-motion prior)::

    vibe3r eval pairs --pairs ../shared/data/real/eval-pairs/7scenes-redkitchen-second-half.txt \\
        --method sift --size 128
    vibe3r eval pairs --pairs ../shared/data/real/eval-pairs/tum-fr3-long-office-sequence.txt --method identity
    vibe3r eval sequence --capture ../shared/data/real/7scenes-redkitchen@125: --frames 30 --method sift
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vibe3r.errors import InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="benchmarks against ground truth")


@app.callback()
def _group() -> None:
    """Benchmarks against ground truth."""


@app.command("pairs")
def pairs_cmd(
    pairs: Annotated[Path, typer.Option("--pairs", help="SuperGlue-format pair list (38 fields per line)")],
    method: Annotated[str, typer.Option("--method", help="identity | sift | model")] = "sift",
    size: Annotated[int, typer.Option("--size", help="image width in pixels the method sees (aspect kept); 0 = native")] = 640,
    root: Annotated[Path | None, typer.Option("--root", help="folder the image names are relative to (found automatically)")] = None,
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="model checkpoint folder (config.json + model.safetensors)")] = None,
    pose: Annotated[str, typer.Option("--pose", help="model pose solver: essential | pnp | pnp_matches | procrustes")] = "essential",
    ransac_px: Annotated[float, typer.Option("--ransac-px", help="model: essential-matrix RANSAC threshold in pixels")] = 1.0,
    coarse: Annotated[int, typer.Option("--coarse", help="model: coarse-to-fine matching factor (1 = plain mutual NN)")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="model: similarity precision of descriptor matching: fp32 | bf16 "
                                           "(bf16: 1.6-1.9x faster at 256 px, same accuracy within noise)")] = "fp32",
    ransac: Annotated[str, typer.Option("--ransac", help="essential-matrix estimator for sift and model: ransac (SuperGlue protocol) | usac_accurate | magsac")] = "ransac",
    subpixel: Annotated[bool, typer.Option("--subpixel/--no-subpixel", help="model: parabolic sub-cell refinement of matches")] = True,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads for the model")] = 1,
    save: Annotated[Path | None, typer.Option("--save", help="write the full result (per-pair errors) as JSON")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a one-line JSON summary last")] = False,
) -> None:
    """Relative pose on image pairs: AUC@5/10/20 of max(rot, tdir), median errors, failures."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from vibe3r.eval import pairs as P

    estimator = make_estimator(method, ckpt=ckpt, pose=pose, threads=threads, ransac_px=ransac_px, coarse=coarse, subpixel=subpixel, ransac=ransac,
                               precision=precision)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(f"{method} {size}px", total=None)
        ev = P.evaluate_pairs(pairs, estimator, size, root=root, method_name=method,
                              progress=lambda i, n: bar.update(task, completed=i, total=n))
    typer.echo(P.format_summary(ev))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(P._nan_to_none(ev.to_json()), indent=1))
    if as_json:
        typer.echo(P.dumps(ev))


@app.command("sequence")
def sequence_cmd(
    capture: Annotated[str, typer.Option("--capture", help="capture with ground-truth poses (7-Scenes, TUM, vibe3r folder, ...), optionally PATH@START:STOP:STEP")],
    method: Annotated[str, typer.Option("--method", help="model | sift (| oracle: the capture's exact geometry)")] = "model",
    frames: Annotated[int, typer.Option("--frames", help="frames kept, evenly spread (0 = all)")] = 30,
    size: Annotated[int, typer.Option("--size", help="longer image side the method sees (pixels)")] = 128,
    ckpt: Annotated[Path | None, typer.Option("--ckpt", help="model checkpoint folder; default: the shipped weights/recon-base")] = None,
    depth: Annotated[str, typer.Option("--depth", help="headline depth: triangulated+pointmap (recon run's default) | triangulated (matches + aligned poses, sparse) | pointmap (the heads)")] = "triangulated+pointmap",
    graph: Annotated[str, typer.Option("--graph", help="scene graph: auto | complete | swin")] = "auto",
    iters: Annotated[int, typer.Option("--iters", help="global alignment iterations")] = 300,
    ransac: Annotated[str, typer.Option("--ransac", help="sift: essential-matrix estimator (ransac | usac_accurate | magsac)")] = "ransac",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads")] = 1,
    save: Annotated[Path | None, typer.Option("--save", help="write the full result as JSON")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a one-line JSON summary last")] = False,
) -> None:
    """Whole-sequence reconstruction vs ground truth: ATE (Sim(3)), RPE, depth AbsRel / δ1, static prior beside it."""
    import torch

    from vibe3r.captures import load_capture
    from vibe3r.eval import sequence as S
    from vibe3r.recon.align import AlignConfig
    from vibe3r.recon.run import RunConfig, default_checkpoint

    if method not in S.METHODS:
        raise InputError(f"unknown method {method!r}; valid: {', '.join(S.METHODS)}")
    torch.set_num_threads(threads)
    cfg = RunConfig(size=size, max_frames=frames or None, graph=graph, depth=depth, align=AlignConfig(iters=iters))
    cap = load_capture(capture, size=size, max_frames=cfg.max_frames)
    S.require_gt_poses(cap)
    model = None
    if method == "model":
        from vibe3r.recon.model import ReconModel

        model = ReconModel.from_pretrained(ckpt if ckpt is not None else default_checkpoint())
    res = S.evaluate_sequence(cap, method, model=model, cfg=cfg, sift_ransac=ransac)
    typer.echo(S.format_summary(res))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(res, indent=1, default=float))
    if as_json:
        typer.echo(S.dumps(res))


def make_estimator(method: str, ckpt: Path | None = None, pose: str = "essential", threads: int = 1,
                   ransac_px: float = 1.0, coarse: int = 1, subpixel: bool = True, ransac: str = "ransac",
                   precision: str = "fp32"):  # noqa: ANN201
    """Build the pose estimator for ``--method`` (see ``vibe3r.eval.pairs``)."""
    from vibe3r.eval import pairs as P

    if method == "identity":
        return P.identity_estimator
    if method == "sift":
        return P.make_sift_estimator(ransac=ransac)
    if method == "model":
        if ckpt is None:
            raise InputError("--method model needs --ckpt")
        from vibe3r.recon.pose import make_model_estimator

        return make_model_estimator(ckpt, solver=pose, threads=threads, ransac_px=ransac_px, coarse_factor=coarse, subpixel=subpixel, ransac=ransac,
                                    precision=precision)
    raise InputError(f"unknown method {method!r}; valid: {', '.join(P.METHODS)}")
