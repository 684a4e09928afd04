"""``vibe3r video ...`` and ``vibe3r demo``: render camera-motion videos of procedural rooms.

    vibe3r video render --prompt "orbit left 90 radius 1.5 frames 24" --scene-seed 3 --size 64 --out runs/v3
    vibe3r video render --prompt "handheld walk 2" --scene-seed 1 --size 128 --out runs/v1 --set render.supersample=3
    vibe3r demo --out runs/demo
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vibe3r.config import Config, load_config
from vibe3r.errors import InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="motion prompts, procedural world, rendering, datasets")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (default: the embedded default)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="config override section.key=value (repeatable)")]

DEMO_PROMPTS = (
    "handheld walk 1.2 frames 24",
    "orbit left 45 radius 1.5 frames 24",
    "pan left 30 frames 12 then dolly forward 0.6 frames 12",
)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


def size_overrides(size: int | None) -> list[str]:
    """``--size W``: width W, height 3/4 W rounded to an even number."""
    if size is None:
        return []
    if size < 8:
        raise typer.BadParameter(f"--size must be at least 8, got {size}")
    h = max(2, int(round(size * 0.75 / 2)) * 2)
    return [f"render.width={size}", f"render.height={h}"]


def _render_one(prompt: str, scene_seed: int, cfg: Config, out: Path, traj_seed: int | None, bar: Progress) -> Path:
    from vibe3r.video_gen.motion import parse_prompt
    from vibe3r.video_gen.render import render_video

    n = parse_prompt(prompt).n_frames  # fail fast on a bad prompt, and size the bar
    task = bar.add_task(f"{out.name}", total=n)
    path = render_video(prompt, scene_seed, cfg, out, traj_seed=traj_seed, progress=lambda k: bar.advance(task, k))
    bar.update(task, completed=n)
    return path


@app.command()
def render(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help='motion prompt, e.g. "orbit left 90 radius 1.5 frames 24"')],
    out: Annotated[Path, typer.Option("--out", "-o", help="output video folder")],
    scene_seed: Annotated[int, typer.Option("--scene-seed", help="procedural room seed")] = 0,
    size: Annotated[int | None, typer.Option("--size", help="image width in pixels; height = 3/4 width (even)")] = None,
    traj_seed: Annotated[int | None, typer.Option("--traj-seed", help="seed of the random parts of the motion (default: scene seed)")] = None,
    config: ConfigOpt = None,
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Render one video: procedural room + motion prompt -> frames, video.mp4, exact GT (gt.npz)."""
    cfg = load_config(config, [*(set or []), *size_overrides(size)])
    with _progress() as bar:
        path = _render_one(prompt, scene_seed, cfg, out, traj_seed, bar)
    Console().print(f"video written to [bold]{path}[/bold]")


@app.command()
def dataset(
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset folder (videos/, shards/, index.json)")],
    config: ConfigOpt = None,
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Render videos from written prompts and write co-visible training pairs as shards (resumable)."""
    from vibe3r.video_gen.dataset import build_dataset

    cfg = load_config(config, set)
    index = build_dataset(cfg, out)
    Console().print(
        f"{index['n_pairs']} pairs from {len(index['videos'])} videos in {len(index['shards'])} shards "
        f"({index['width']}x{index['height']}) written to [bold]{out}[/bold]"
    )


@app.command("train")
def train_cmd(
    data: Annotated[list[Path], typer.Option("--data", "-d", help="folder(s) of simulator video folders (searched recursively; repeatable)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="generator checkpoint folder")],
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
    init_from: Annotated[Path | None, typer.Option("--init-from", help="start from this generator checkpoint")] = None,
    config: ConfigOpt = None,
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Train the camera-conditioned video generator (diffusion) on simulator videos; resumable, TensorBoard in OUT/tb."""
    from vibe3r.video_gen.gen_train import train_generator

    cfg = load_config(config, set)
    state = train_generator(cfg, data, out, resume=resume, init_from=init_from)
    val = state["val"][-1][1] if state["val"] else float("nan")
    Console().print(f"generator trained to step {state['step']} (validation loss {val:.4f}); checkpoint in [bold]{out}[/bold]")


@app.command("generate")
def generate_cmd(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help='motion prompt, e.g. "orbit left 90 radius 1.5"')],
    first_frame: Annotated[Path, typer.Option("--first-frame", "-i", help="the first frame (any image; centre-cropped and resized)")],
    ckpt: Annotated[Path, typer.Option("--ckpt", help="generator checkpoint folder")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output video folder")],
    steps: Annotated[int | None, typer.Option("--steps", help="DDIM steps (default generator.sample.steps)")] = None,
    eta: Annotated[float | None, typer.Option("--eta", help="DDIM eta (default generator.sample.eta)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="noise seed")] = 0,
    guidance: Annotated[float | None, typer.Option("--guidance", min=0.0, help="camera guidance scale (default "
                                                   "generator.sample.guidance; 1 = none)")] = None,
    fov: Annotated[float, typer.Option("--fov", help="horizontal field of view of the commanded camera, degrees")] = 60.0,
    recon: Annotated[Path | None, typer.Option("--recon", help="reconstruction checkpoint: estimate the first frame's depth and "
                                               "condition on its render along the commanded cameras (without it: a plane "
                                               "generator.sample.plane_depth metres away)")] = None,
    median_depth: Annotated[float, typer.Option("--median-depth", min=0.01, help="with --recon: metres the estimated depth's "
                                                "median is scaled to (the prompt's translations are in metres)")] = 2.0,
    config: ConfigOpt = None,
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Generate a video that follows a motion prompt from a first frame; gt.npz holds the commanded cameras."""
    from vibe3r.video_gen.diffusion import VideoGenerator
    from vibe3r.video_gen.generate import first_frame_depth, generate_video, load_first_frame

    cfg = load_config(config, set)
    from vibe3r.video_gen.motion import parse_prompt

    parse_prompt(prompt)  # fail fast, before loading anything
    model = VideoGenerator.from_pretrained(ckpt)
    mc = model.config
    img = load_first_frame(first_frame, mc.width, mc.height)
    depth0 = depth_meta = None
    if recon is not None:
        from vibe3r.recon.model import ReconModel

        k = max(1, round(128 / max(mc.width, mc.height)))  # the reconstruction model's size
        depth0 = first_frame_depth(ReconModel.from_pretrained(recon).eval(), load_first_frame(first_frame, mc.width * k, mc.height * k),
                                   mc.width, mc.height, median_depth)
        depth_meta = {"source": "recon", "recon": str(recon), "median_depth_m": median_depth}
    sc = cfg.generator.sample
    path = generate_video(model, img, prompt, out, steps=steps or sc.steps, eta=sc.eta if eta is None else eta,
                          seed=seed, fov_deg=fov, ckpt=ckpt, depth0=depth0, depth_meta=depth_meta,
                          guidance=sc.guidance if guidance is None else guidance, plane_depth=sc.plane_depth)
    Console().print(f"generated video written to [bold]{path}[/bold]")


@app.command("prefer")
def prefer_cmd(
    ckpt: Annotated[Path, typer.Option("--ckpt", help="generator checkpoint to improve (the frozen reference)")],
    judge: Annotated[Path, typer.Option("--judge", help="reconstruction checkpoint that judges the videos' cameras")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="video folders the prompts (first frame + cameras) are cut from")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: adapter/, model/ (merged), history.jsonl, tb/")],
    method: Annotated[str | None, typer.Option("--method", help="dpo | grpo | best (default generator.prefer.method)")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="preference store (default OUT/preferences.sqlite)")] = None,
    round: Annotated[int, typer.Option("--round", help="round recorded with the judged videos")] = 0,  # noqa: A002
    config: ConfigOpt = None,
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Preference-train the generator (LoRA): sample videos, judge their cameras with the reconstruction model,
    Diffusion-DPO on best-vs-worst pairs or GRPO on groups; judged videos and pairs go into the preference store."""
    from vibe3r.video_gen.prefer import run_prefer

    cfg = load_config(config, [*(set or []), *([f"generator.prefer.method={method}"] if method else [])])
    s = run_prefer(cfg.generator.prefer, ckpt, judge, data, out, store_path=store, round=round, plane_depth=cfg.generator.sample.plane_depth)
    extra = f"{s['pairs']} pairs (mean margin {s['mean_margin']:.2f} deg)" if "pairs" in s else f"{s['groups']} groups"
    Console().print(f"{s['method']}: {s['prompts']} prompts, {extra}, {s['seconds']:.0f} s; generator in [bold]{out / 'model'}[/bold]")


@app.command("room")
def room_cmd(
    capture: Annotated[str, typer.Option("--capture", help="real capture: video, image folder or capture spec (PATH@A:B)")],
    recon: Annotated[Path, typer.Option("--recon", help="reconstruction checkpoint that gives the key frames' depth")],
    ckpt: Annotated[Path, typer.Option("--ckpt", help="generator checkpoint that refines the re-renders")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (one video folder per key frame and prompt)")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="motion prompt (repeatable)")],
    keys: Annotated[int, typer.Option("--keys", help="key frames, evenly spread")] = 4,
    steps: Annotated[int | None, typer.Option("--steps", help="DDIM steps (default generator.sample.steps)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="noise seed")] = 0,
    config: ConfigOpt = None,
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Videos of your room: reconstruct key frames of a real capture, re-render them along motion prompts, refine with the generator."""
    from vibe3r.video_gen.diffusion import VideoGenerator
    from vibe3r.video_gen.motion import parse_prompt
    from vibe3r.video_gen.room import room_videos

    cfg = load_config(config, set)
    for p in prompt:
        parse_prompt(p)  # fail fast
    gen = VideoGenerator.from_pretrained(ckpt)
    paths = room_videos(capture, recon, gen, prompt, out, keys=keys, steps=steps or cfg.generator.sample.steps, seed=seed,
                        gen_ckpt=ckpt)
    Console().print(f"{len(paths)} videos of the room written to [bold]{out}[/bold]")


@app.command("warp-pairs")
def warp_pairs_cmd(
    capture: Annotated[list[str], typer.Option("--capture", help="real capture: video, image folder or capture spec (PATH@A:B); repeatable")],
    out: Annotated[Path, typer.Option("--out", "-o", help="pair dataset folder (shards/, index.json)")],
    recon: Annotated[Path | None, typer.Option("--recon", help="reconstruction checkpoint whose depth is re-rendered (default: the capture's own depth)")] = None,
    size: Annotated[int, typer.Option("--size", help="output width in pixels; height = 3/4 width")] = 128,
    focal: Annotated[tuple[float, float] | None, typer.Option("--focal", help="fx fy at native size, replacing the capture's")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the new cameras and the camera model")] = 0,
    config: ConfigOpt = None,
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Training pairs of your room: each real frame re-rendered from new cameras through its depth (settings: the warp section)."""
    from vibe3r.video_gen.warp import build_warp_pairs

    cfg = load_config(config, set)
    idx = build_warp_pairs(capture, out, recon=recon, size=(size, size * 3 // 4), cfg=cfg.warp, seed=seed, focal=focal)
    Console().print(f"{idx['n_pairs']} warp pairs of {idx['warp']['frames']} frames ({idx['warp']['depth']} depth) written to [bold]{out}[/bold]")


@app.command("sfm-pairs")
def sfm_pairs_cmd(
    capture: Annotated[list[str], typer.Option("--capture", help="real capture with intrinsics: image folder or capture spec (PATH@A:B); repeatable")],
    out: Annotated[Path, typer.Option("--out", "-o", help="pair dataset folder (shards/, index.json)")],
    cache: Annotated[Path, typer.Option("--cache", help="folder caching each capture's structure from motion")] = Path("runs/sfm"),
    size: Annotated[int, typer.Option("--size", help="output width in pixels; height = 3/4 width")] = 128,
    gap: Annotated[tuple[int, int], typer.Option("--gap", help="min and max frame gap of a pair")] = (1, 25),
    min_common: Annotated[int, typer.Option("--min-common", min=1, help="points a pair must share")] = 50,
    max_pairs: Annotated[int, typer.Option("--max-pairs", min=0, help="at most this many pairs per capture (0: all)")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="seed of the pair order and the cut")] = 0,
    focal: Annotated[tuple[float, float] | None, typer.Option("--focal", help="fx fy at native size (a phone video has no intrinsics of its own)")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="COLMAP threads")] = 1,
) -> None:
    """Training pairs of your room's own frames, supervised by its structure from motion (pycolmap; sparse depth, no ground truth)."""
    import numpy as np

    from vibe3r import geometry
    from vibe3r.captures import load_capture
    from vibe3r.loop.pool import DEFAULT_FOV_DEG
    from vibe3r.preference.sampling import set_focal
    from vibe3r.video_gen.sfm_pairs import build_sfm_pairs

    if gap[0] < 1 or gap[1] < gap[0]:
        raise InputError(f"--gap {gap[0]} {gap[1]}: need 1 <= min <= max")
    caps = []
    for spec in capture:
        cap = load_capture(spec)
        if focal is not None:
            if cap.K is None:  # any K to be overwritten: set_focal rescales the given focal to the loaded size
                K = geometry.intrinsics_from_fov(DEFAULT_FOV_DEG, cap.hw[1], cap.hw[0]).numpy().astype(np.float64)
                cap.K = np.repeat(K[None], len(cap), axis=0)
            set_focal(cap, *focal)
        elif cap.K is None:
            raise InputError(f"capture {spec} has no intrinsics: give --focal FX FY (pixels of its native frames)")
        caps.append((spec, cap))
    idx = build_sfm_pairs(caps, out, size=(size, size * 3 // 4), cache_dir=cache, min_gap=gap[0], max_gap=gap[1],
                          min_common=min_common, max_pairs=max_pairs, seed=seed, threads=threads, log=Console().print)
    per = ", ".join(f"{c['pairs']} of {c['capture']} ({c['registered']}/{c['frames']} frames registered)" for c in idx["sfm"]["captures"])
    Console().print(f"{idx['n_pairs']} SfM pairs written to [bold]{out}[/bold]: {per}")


def demo(
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/demo"),
    set: SetOpt = None,  # noqa: A002 - the CLI option is --set
) -> None:
    """Render three short videos of procedural rooms with varied camera motions and print where they are."""
    cfg = load_config(config, set)
    paths = []
    with _progress() as bar:
        for k, prompt in enumerate(DEMO_PROMPTS):
            paths.append(_render_one(prompt, k, cfg, out / f"video-{k}", None, bar))
    con = Console()
    for prompt, p in zip(DEMO_PROMPTS, paths, strict=True):
        con.print(f"[bold]{p}[/bold]  ({prompt}): video.mp4, frames/, gt.npz, meta.json")
