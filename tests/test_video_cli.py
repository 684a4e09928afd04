"""`vibe3r video render`, `vibe3r demo` and the video folder format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vibe3r.errors import InputError
from vibe3r.video_gen.cli import app, demo
from vibe3r.video_gen.video_io import read_video, write_video

runner = CliRunner()
FAST = ["--set", "world.texture_res=32", "--set", "world.objects=[1,3]", "--set", "world.clutter=[0,3]"]


def test_render_command_writes_a_video_folder(tmp_path):
    out = tmp_path / "v"
    res = runner.invoke(app, ["render", "--prompt", "pan left 20 frames 4", "--scene-seed", "3", "--size", "34",
                              "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    frames, K, c2w, depth, meta = read_video(out)
    assert frames.shape == (5, 26, 34, 3)  # height = 3/4 * 34 rounded to even
    assert meta["prompt"] == "pan left 20 frames 4" and meta["scene_seed"] == 3
    assert "world:" in (out / "config.yaml").read_text()
    # pan: the camera centre stays put and turns left by 20 degrees about world up
    np.testing.assert_allclose(c2w[:, :3, 3], np.broadcast_to(c2w[0, :3, 3], (5, 3)), atol=1e-9)
    cos = np.clip((np.trace(c2w[0, :3, :3].T @ c2w[-1, :3, :3]) - 1) / 2, -1, 1)
    assert abs(np.degrees(np.arccos(cos)) - 20) < 1e-6


def test_bad_prompt_names_the_token(tmp_path):
    res = runner.invoke(app, ["render", "--prompt", "orbitt 30", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0
    assert isinstance(res.exception, InputError) and "orbitt" in str(res.exception)
    assert not (tmp_path / "x").exists()


def test_bad_override_is_a_config_error(tmp_path):
    res = runner.invoke(app, ["render", "--prompt", "still frames 2", "--out", str(tmp_path / "x"), "--set", "world.nope=1"])
    assert res.exit_code != 0 and "nope" in str(res.exception)


def test_demo_renders_three_videos(tmp_path):
    demo(config=None, out=tmp_path, set=["render.width=24", "render.height=18", "world.texture_res=32",
                                         "world.objects=[1,2]", "world.clutter=[0,2]"])
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(dirs) == 3
    prompts = {json.loads((d / "meta.json").read_text())["prompt"] for d in dirs}
    assert len(prompts) == 3


def test_write_read_roundtrip_odd_size_and_atomic_replace(tmp_path):
    rng = np.random.default_rng(0)
    frames = (rng.random((3, 7, 9, 3)) * 255).astype(np.uint8)
    K = np.array([[10.0, 0, 4], [0, 10, 3], [0, 0, 1]])
    c2w = np.repeat(np.eye(4)[None], 3, 0)
    depth = rng.random((3, 7, 9)).astype(np.float32)
    out = write_video(tmp_path / "v", frames, K, c2w, depth, {"prompt": "still", "scene_seed": 1})
    f, K2, c2, d2, meta = read_video(out)
    np.testing.assert_array_equal(f, frames)  # PNG frames are exact
    np.testing.assert_array_equal(d2, depth)
    np.testing.assert_array_equal(K2, np.broadcast_to(K, (3, 3, 3)))
    assert meta["width"] == 9 and meta["height"] == 7 and meta["n_frames"] == 3
    import av

    with av.open(str(out / "video.mp4")) as c:  # H.264 needs even sizes: padded
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("h264", 10, 8)
        assert sum(1 for _ in c.decode(s)) == 3
    write_video(tmp_path / "v", frames[:2], K, c2w[:2], depth[:2], {"prompt": "again"})
    assert read_video(tmp_path / "v")[4]["prompt"] == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # no temporary folders left
    with pytest.raises(InputError, match="not a vibe3r video folder"):
        read_video(tmp_path)
