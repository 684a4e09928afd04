"""The learned video generator: conditioning geometry, training, resume, sampling, the folder format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vibe3r.config import Config, ConfigError, GeneratorModelConfig, load_config
from vibe3r.errors import InputError
from vibe3r.video_gen.diffusion import (
    VideoGenerator,
    camera_rays_map,
    conditioning,
    resize_depth,
    resize_frames,
    splat_first_frame,
    still_conditioning,
    to_model_images,
)
from vibe3r.video_gen.gen_train import Clip, ClipSource, find_videos, make_batch, mirror, train_generator

TINY_GEN = ["generator.model.width=32", "generator.model.height=24", "generator.model.frames=4",
            "generator.model.patch_size=4", "generator.model.layers=1", "generator.model.heads=2",
            "generator.model.head_dim=16", "generator.model.train_timesteps=100"]


def tiny_cfg(*extra: str) -> Config:
    return load_config(None, [*TINY_GEN, "generator.train.batch_size=2", "generator.train.warmup_steps=2",
                              "generator.train.log_every=1", *extra])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):  # noqa: ANN001, ANN201
    """Two short rendered videos at 64x48 (with exact depth and cameras)."""
    from vibe3r.video_gen.render import render_video

    root = tmp_path_factory.mktemp("gen-videos")
    cfg = load_config(None, ["render.width=64", "render.height=48", "render.supersample=1"])
    for k, prompt in enumerate(["truck right 0.4 frames 9", "pan left 20 frames 9"]):
        render_video(prompt, 5 + k, cfg, root / f"v{k}")
    return root


def _clip(videos, idx=(0, 2, 4, 6), size=(64, 48)) -> Clip:  # noqa: ANN001
    from vibe3r.video_gen.video_io import read_video

    frames, K, c2w, depth, _ = read_video(videos / "v0")
    idx = list(idx)
    fr, K = resize_frames(frames[idx], K[idx], *size)
    return Clip(fr, K, c2w[idx], resize_depth(depth[idx[0]], *size))


def test_splat_reprojects_the_first_frame_into_the_commanded_cameras(videos):  # noqa: ANN001
    clip = _clip(videos)
    x = to_model_images(clip.frames)
    render, mask = splat_first_frame(x[0], torch.from_numpy(clip.depth0), torch.from_numpy(clip.K), torch.from_numpy(clip.c2w))
    assert torch.equal(render[0][:, mask[0, 0] > 0], x[0][:, mask[0, 0] > 0])  # identity camera: the frame itself
    assert mask[0].mean() > 0.99 and mask[-1].mean() > 0.5
    for k in range(1, 4):  # the render agrees with the real frame k where it has points, far better than frame 0 does
        m = mask[k, 0] > 0
        err_render = (render[k] - x[k]).abs().mean(0)[m].mean()
        err_static = (x[0] - x[k]).abs().mean(0)[m].mean()
        assert err_render < 0.6 * err_static, (k, float(err_render), float(err_static))


def test_mirrored_clip_keeps_its_geometry(videos):  # noqa: ANN001
    """Flip augmentation mirrors the cameras with the images: splatting the mirrored clip = mirroring the splat."""
    clip = _clip(videos)
    flip = mirror(clip)
    args = lambda c: (to_model_images(c.frames)[0], torch.from_numpy(c.depth0), torch.from_numpy(c.K), torch.from_numpy(c.c2w))
    r, m = splat_first_frame(*args(clip))
    rf, mf = splat_first_frame(*args(flip))
    agree = (mf[:, 0] > 0) & (m[:, 0].flip(-1) > 0)
    assert agree.float().mean() > 0.9 * (m[:, 0] > 0).float().mean()
    assert (rf - r.flip(-1)).abs().amax(1)[agree].max() < 1e-5
    rays, rays_f = camera_rays_map(torch.from_numpy(clip.K), torch.from_numpy(clip.c2w), 48, 64), \
        camera_rays_map(torch.from_numpy(flip.K), torch.from_numpy(flip.c2w), 48, 64)
    sign = torch.tensor([-1.0, 1, 1, 1, -1, -1])[:, None, None]  # d_x flips; m = o x d flips in y and z
    assert torch.allclose(rays_f, sign * rays.flip(-1), atol=1e-5)


def test_training_lowers_the_denoising_loss_and_resume_is_exact(videos, tmp_path):  # noqa: ANN001
    cfg = tiny_cfg("generator.train.steps=6", "generator.train.save_every=3", "generator.train.lr=2e-3")
    full = train_generator(cfg, videos, tmp_path / "full", progress=False)
    assert full["step"] == 6 and len(full["val"]) == 2
    # interrupted after 3 steps, resumed to 6: the same weights as the uninterrupted run
    train_generator(cfg, videos, tmp_path / "cut", progress=False, stop_at=3)
    with pytest.raises(InputError, match="--resume"):
        train_generator(cfg, videos, tmp_path / "cut", progress=False)
    resumed = train_generator(cfg, videos, tmp_path / "cut", resume=True, progress=False)
    assert resumed["val"] == full["val"]
    a, b = VideoGenerator.from_pretrained(tmp_path / "full"), VideoGenerator.from_pretrained(tmp_path / "cut")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    # a longer run learns: validation loss on a fixed batch at fixed noise falls well below the start
    longer = train_generator(tiny_cfg("generator.train.steps=40", "generator.train.save_every=40", "generator.train.lr=3e-3",
                                      "generator.train.ema_decay=0"), videos, tmp_path / "long", progress=False)
    start = VideoGenerator(cfg.generator.model)
    from vibe3r.video_gen.gen_train import validation_loss

    src = ClipSource(find_videos(videos), cfg.generator.model)
    val0 = validation_loss(start, make_batch(src, cfg.generator.train, cfg.generator.train.seed + 1, 0, batch_size=8), 2)
    assert longer["val"][-1][1] < 0.7 * val0, (longer["val"], val0)


def test_batches_are_a_function_of_seed_and_step(videos):  # noqa: ANN001
    cfg = tiny_cfg()
    src = ClipSource(find_videos(videos), cfg.generator.model)
    a, b, c = (make_batch(src, cfg.generator.train, 0, s) for s in (5, 5, 6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (2, 4, 3, 24, 32) and a[1].shape == (2, 4, 13, 24, 32)


def test_training_clips_can_be_conditioned_on_a_plane(videos):  # noqa: ANN001
    """``generator.train.p_plane``: that share of clips sees the first frame rendered as a plane (the prompt-only
    mode of ``generator.sample.plane_depth``) instead of its true depth; p_plane 0 leaves the batches as they were."""
    src = ClipSource(find_videos(videos), tiny_cfg().generator.model)
    none = make_batch(src, tiny_cfg("generator.train.p_render=0").generator.train, 0, 3)
    plane = make_batch(src, tiny_cfg("generator.train.p_render=0", "generator.train.p_plane=1").generator.train, 0, 3)
    true = make_batch(src, tiny_cfg("generator.train.p_render=1").generator.train, 0, 3)
    assert torch.equal(none[0], plane[0]) and torch.equal(none[0], true[0])  # the same clips
    assert none[1][:, :, 9:].abs().max() == 0  # no render
    assert (plane[1][:, 0, 12] == 1).all() and torch.allclose(plane[1][:, 0, 9:12], plane[1][:, 0, :3], atol=1e-6)
    assert not torch.equal(plane[1][:, 1:, 9:12], true[1][:, 1:, 9:12])  # a plane, not the true geometry
    with pytest.raises(ConfigError, match="p_render \\+ p_plane"):
        tiny_cfg("generator.train.p_render=0.8", "generator.train.p_plane=0.3")


def test_camera_guidance_extrapolates_away_from_the_camera_held_still(videos):  # noqa: ANN001
    clip = _clip(videos, size=(32, 24))
    f0, K, c2w = to_model_images(clip.frames[0]), torch.from_numpy(clip.K), torch.from_numpy(clip.c2w)
    d0 = torch.from_numpy(clip.depth0)
    for depth in (None, d0):  # the negative is exactly the prompt whose every camera is the first one
        still = conditioning(f0, K, c2w[:1].expand_as(c2w), depth)
        assert torch.allclose(still_conditioning(conditioning(f0, K, c2w, depth)), still, atol=1e-6)
    torch.manual_seed(0)
    model = VideoGenerator(tiny_cfg().generator.model).eval()
    cond = conditioning(f0, K, c2w)[None]
    x_t = torch.randn(1, 4, 3, 24, 32)
    with torch.no_grad():
        cam, still = model.predict_x0(x_t, 50, cond), model.predict_x0(x_t, 50, still_conditioning(cond))
        assert torch.allclose(model.predict_x0(x_t, 50, cond, guidance=3.0), still + 3.0 * (cam - still), atol=1e-5)
        x1, _ = model.sample(cond, steps=3, generator=torch.Generator().manual_seed(1))
        x1g, _ = model.sample(cond, steps=3, generator=torch.Generator().manual_seed(1), guidance=1.0)
        x3, _ = model.sample(cond, steps=3, generator=torch.Generator().manual_seed(1), guidance=3.0)
    assert torch.equal(x1, x1g) and not torch.allclose(x1, x3)


def test_generated_video_round_trips_its_commanded_cameras(tmp_path):  # noqa: ANN001
    from vibe3r.video_gen.generate import commanded_cameras, generate_video
    from vibe3r.video_gen.video_io import read_video

    torch.manual_seed(0)
    model = VideoGenerator(tiny_cfg().generator.model)
    model.save_pretrained(tmp_path / "ckpt")
    first = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    prompt = "orbit left 30 radius 1.2 frames 12"
    out = generate_video(model, first, prompt, tmp_path / "vid", steps=3, seed=4, ckpt=tmp_path / "ckpt")
    frames, K, c2w, depth, meta = read_video(out)
    cmd = commanded_cameras(prompt, 4, 32, 24, seed=4)
    assert frames.shape == (4, 24, 32, 3) and np.array_equal(frames[0], first)
    np.testing.assert_allclose(c2w, cmd.c2w)
    np.testing.assert_allclose(K, cmd.K)
    assert (depth == 0).all() and meta["generated"] is True and meta["generator"]["checkpoint_id"]
    assert json.loads((out / "meta.json").read_text())["prompt"] == prompt
    again = generate_video(VideoGenerator.from_pretrained(tmp_path / "ckpt"), first, prompt, tmp_path / "vid2", steps=3, seed=4)
    assert np.array_equal(read_video(again)[0], frames)  # same checkpoint, seed and steps: the same video
    # no depth known: the first frame as a plane 2 m away conditions the video; recorded, never written as depth
    planed = generate_video(model, first, prompt, tmp_path / "vid3", steps=3, seed=4, plane_depth=2.0)
    frames3, _, _, depth3, meta3 = read_video(planed)
    assert meta3["first_frame_depth"] == {"source": "plane", "depth_m": 2.0} and (depth3 == 0).all()
    assert "first_frame_depth" not in meta and not np.array_equal(frames3, frames)


def test_bad_inputs_fail_clearly(tmp_path, videos):  # noqa: ANN001
    from typer.testing import CliRunner

    from vibe3r.cli import app

    with pytest.raises(InputError, match="not a video generator"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text(json.dumps({"arch": "vibe3r-pair-v1"}))
        (tmp_path / "other" / "model.safetensors").write_bytes(b"")
        VideoGenerator.from_pretrained(tmp_path / "other")
    with pytest.raises(InputError, match="no video folders"):
        find_videos(tmp_path)
    with pytest.raises(ValueError, match="multiples of patch_size"):
        GeneratorModelConfig(width=30, patch_size=4)
    model = VideoGenerator(tiny_cfg().generator.model)
    with pytest.raises(InputError, match="32x24"):
        model.generate(np.zeros((48, 64, 3), np.uint8), np.eye(3), np.tile(np.eye(4), (4, 1, 1)))
    model.save_pretrained(tmp_path / "ckpt")
    img = tmp_path / "f.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((30, 40, 3), np.uint8))
    r = CliRunner().invoke(app, ["video", "generate", "--prompt", "orbit sideways 90", "--first-frame", str(img),
                                 "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "sideways" in f"{r.output}{r.exception}"


def test_first_frame_depth_from_the_recon_model_conditions_generation(tmp_path):  # noqa: ANN001
    """``vibe3r video generate --recon``: the shipped reconstruction model estimates the first frame's depth
    (the image paired with itself); it follows the true depth, is scaled to the asked median, and is
    written as frame 0's depth with its provenance."""
    import cv2
    from scipy.stats import spearmanr
    from typer.testing import CliRunner

    from vibe3r.cli import app
    from vibe3r.recon.model import ReconModel
    from vibe3r.recon.synthetic import box_room_video
    from vibe3r.video_gen.diffusion import resize_depth
    from vibe3r.video_gen.generate import first_frame_depth
    from vibe3r.video_gen.video_io import read_video

    recon_ckpt = Path(__file__).resolve().parents[1] / "weights" / "recon-base"
    gt = box_room_video(1, n_frames=2, H=96, W=128, step=0.1)
    d = first_frame_depth(ReconModel.from_pretrained(recon_ckpt).eval(), gt.images[0], 32, 24, median_depth_m=3.0)
    true = resize_depth(gt.depth[0], 32, 24)
    v = true > 0
    assert d.shape == (24, 32) and np.median(d[d > 0]) == pytest.approx(3.0, rel=1e-3)
    assert spearmanr(d[v], true[v])[0] > 0.5
    torch.manual_seed(0)
    VideoGenerator(tiny_cfg().generator.model).save_pretrained(tmp_path / "ckpt")
    img = tmp_path / "f.png"
    cv2.imwrite(str(img), gt.images[0][..., ::-1])
    r = CliRunner().invoke(app, ["video", "generate", "--prompt", "pan left 20 frames 8", "--first-frame", str(img), "--ckpt",
                                 str(tmp_path / "ckpt"), "--out", str(tmp_path / "o"), "--recon", str(recon_ckpt), "--steps", "2"])
    assert r.exit_code == 0, r.output
    _, _, _, depth, meta = read_video(tmp_path / "o")
    assert (depth[0] > 0).mean() > 0.5 and (depth[1:] == 0).all()
    assert meta["first_frame_depth"]["source"] == "recon" and meta["first_frame_depth"]["median_depth_m"] == 2.0
