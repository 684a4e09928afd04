"""vibe3r.captures: every format into one Capture, frame selection, resizing, videos, pair lists."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import yaml
from _common import REAL
from typer.testing import CliRunner

from vibe3r import geometry as G
from vibe3r.captures import (
    FORMATS,
    GL_TO_CV,
    PairSpec,
    describe_capture,
    detect_format,
    load_capture,
    load_pair_images,
    load_pairs,
    parse_spec,
    rot90_camera,
    rot90_intrinsics,
    select_frames,
    write_capture_video,
)
from vibe3r.captures_cli import app as captures_app
from vibe3r.errors import InputError


def _pattern(n: int, H: int, W: int, seed: int = 0, step: float = 12) -> np.ndarray:
    """Frames whose mean brightness encodes the frame index (survives H.264), plus texture."""
    rng = np.random.default_rng(seed)
    base = np.repeat(rng.uniform(0, 60, (H, W, 1)), 3, axis=2).astype(np.float32)  # grey: yuv420p keeps luma
    frames = [np.clip(base + step * i, 0, 255).astype(np.uint8) for i in range(n)]
    return np.stack(frames)


def _frame_index(img: np.ndarray, base_mean: float, step: float = 12) -> int:
    return int(round((img.astype(np.float32).mean() - base_mean) / step))


def _encode(path, stored: np.ndarray, n: int, tag_stream) -> None:
    """Write ``n`` copies of ``stored`` as H.264, letting ``tag_stream(stream)`` set rotation metadata first."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = stored.shape[1], stored.shape[0], "yuv420p"
        tag_stream(s)
        for _ in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _upright(H: int = 48, W: int = 32) -> np.ndarray:
    """A portrait test card: red block top-left, blue band at the bottom."""
    up = np.full((H, W, 3), 128, np.uint8)
    up[: H // 4, : W // 4] = (255, 0, 0)
    up[-H // 6 :, :] = (0, 0, 255)
    return up


# --------------------------------------------------------------------------------------------
# videos
# --------------------------------------------------------------------------------------------


def test_video_round_trip_and_sampling(tmp_path):
    frames = _pattern(15, 32, 48)
    base = float(_pattern(1, 32, 48)[0].astype(np.float32).mean())
    path = write_capture_video(frames, tmp_path / "v.mp4", fps=10)
    cap = load_capture(path)
    assert cap.source == "video" and cap.images.shape == (15, 32, 48, 3) and cap.K is None and cap.cam2world is None
    assert [_frame_index(im, base) for im in cap.images] == list(range(15))
    np.testing.assert_allclose(cap.timestamps, np.arange(15) / 10, atol=1e-6)
    assert np.abs(cap.images.astype(int) - frames.astype(int)).mean() < 4  # crf 18
    # by count: evenly spread, first and last kept
    cap = load_capture(path, max_frames=4)
    assert [_frame_index(im, base) for im in cap.images] == [0, 5, 9, 14]
    # by rate: 2.5 fps of a 10 fps video = every 4th frame
    cap = load_capture(path, fps=2.5)
    assert [_frame_index(im, base) for im in cap.images] == [0, 4, 8, 12]
    # range suffix, stride, resize
    cap = load_capture(f"{path}@2:11:3", size=24)
    assert [_frame_index(im, base) for im in cap.images] == [2, 5, 8]
    assert cap.images.shape == (3, 16, 24, 3) and cap.frame_names == ["000002", "000005", "000008"]
    cap = load_capture(path, stride=7)
    assert cap.meta["source_index"] == [0, 7, 14]
    info = describe_capture(path)
    assert info["format"] == "video" and info["frames"] == 15 and info["fps"] == pytest.approx(10)
    assert info["duration_s"] == pytest.approx(1.5) and info["rotation_deg"] == 0


def test_sparse_sampling_seeks_keyframes_and_matches_full_decode(tmp_path):
    """A long video sampled sparsely decodes from the keyframe before each wanted frame; the
    frames are identical to decoding everything from the start."""
    from vibe3r.captures import _decode_seeking, _decode_sequential, open_source

    frames = _pattern(40, 32, 48, step=5)
    base = float(_pattern(1, 32, 48)[0].astype(np.float32).mean())
    path = write_capture_video(frames, tmp_path / "long.mp4", fps=20, gop=5)
    src = open_source(path)
    idx = select_frames(len(src), src.timestamps, max_frames=6)
    assert idx == [0, 8, 16, 23, 31, 39]
    with av.open(str(path)) as c:
        pts = sorted(p.pts for p in c.demux(c.streams.video[0]) if p.size)
        c.seek(0)
        keys = sorted(p.pts for p in c.demux(c.streams.video[0]) if p.size and p.is_keyframe)
    assert len(keys) == 8  # every 5th frame
    seek = _decode_seeking(path, [pts[i] for i in idx], keys, (32, 48))
    assert seek is not None
    full = _decode_sequential(path, idx, (32, 48))
    for a, b in zip(seek, full):
        np.testing.assert_array_equal(a, b)
    cap = load_capture(path, max_frames=6)
    assert [_frame_index(im, base, step=5) for im in cap.images] == idx


def test_rotated_phone_video_decodes_upright(tmp_path):
    """A phone in portrait stores landscape frames + a display matrix of -90 deg. Written here with
    raw PyAV (not our writer); OpenCV's autorotating reader confirms the convention."""
    up = _upright()
    stored = np.ascontiguousarray(np.rot90(up, k=1))  # what the sensor wrote: 32 x 48 landscape
    path = tmp_path / "portrait.mp4"
    _encode(path, stored, 3, lambda s: s.set_display_rotation(-90))
    cap = load_capture(path)
    assert cap.images.shape == (3, 48, 32, 3)
    assert np.abs(cap.images[0].astype(int) - up.astype(int)).mean() < 6
    assert cap.images[0, 3, 3, 0] > 200 and cap.images[0, -3, 16, 2] > 200  # red top-left, blue bottom
    assert describe_capture(path)["rotation_deg"] == -90 and describe_capture(path)["height"] == 48
    ok, bgr = cv2.VideoCapture(str(path)).read()  # OpenCV's ffmpeg applies the display matrix itself
    assert ok and bgr.shape[:2] == (48, 32)
    assert np.abs(bgr[..., ::-1].astype(int) - cap.images[0].astype(int)).mean() < 3
    # our writer does the same, for every quarter turn
    for rot in (90, -90, 180):
        p = write_capture_video(up[None].repeat(2, 0), tmp_path / f"w{rot}.mp4", fps=5, display_rotation=rot)
        back = load_capture(p)
        assert back.images.shape[1:3] == (48, 32)
        assert np.abs(back.images[0].astype(int) - up.astype(int)).mean() < 6


def test_legacy_rotate_tag_is_honoured(tmp_path):
    """Older files carry a 'rotate' tag (clockwise degrees) instead of a display matrix."""
    up = _upright()
    stored = np.ascontiguousarray(np.rot90(up, k=1))
    path = tmp_path / "tagged.mkv"
    _encode(path, stored, 1, lambda s: s.metadata.__setitem__("rotate", "90"))
    cap = load_capture(path)
    assert cap.images.shape == (1, 48, 32, 3)
    assert np.abs(cap.images[0].astype(int) - up.astype(int)).mean() < 6


def test_bad_videos_raise_one_line_input_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(3000))
    zero = tmp_path / "zero.avi"  # a video stream without a single frame
    c = av.open(str(zero), "w")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    c.start_encoding()
    c.close()
    for path, msg in ((empty, "not a decodable video"), (corrupt, "not a decodable video"), (zero, "video has no frames")):
        with pytest.raises(InputError, match=msg) as exc:
            load_capture(path)
        assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_write_capture_video_crops_odd_sizes(tmp_path):
    frames = _pattern(3, 33, 47)
    cap = load_capture(write_capture_video(frames, tmp_path / "odd.mp4", fps=5))
    assert cap.images.shape == (3, 32, 46, 3)
    assert np.abs(cap.images.astype(int) - frames[:, :32, :46].astype(int)).mean() < 4


# --------------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------------


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[..., ::-1] if img.ndim == 3 else img)


def test_image_folder_natural_order_and_resize(tmp_path):
    for i in (10, 2, 1):
        _write_png(tmp_path / f"img{i}.png", np.full((30, 40, 3), i * 20, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    assert detect_format(tmp_path) == "images"
    cap = load_capture(tmp_path, size=20)
    assert cap.frame_names == ["img1", "img2", "img10"]
    assert cap.images.shape == (3, 15, 20, 3) and cap.K is None and cap.depth is None
    assert [int(im.mean()) for im in cap.images] == [20, 40, 200]
    with pytest.raises(InputError, match="timestamps"):
        load_capture(tmp_path, fps=5)
    _write_png(tmp_path / "img11.png", np.zeros((40, 30, 3), np.uint8))  # a portrait frame among landscape ones
    with pytest.raises(InputError, match="different sizes: img11.png is 30x40"):
        load_capture(tmp_path)


def _vibe3r_folder(root: Path, n: int = 4, H: int = 24, W: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K = np.stack([G.intrinsics_from_fov(60, W, H).numpy()] * n)
    c2w = np.stack([G.look_at([0.5 * i, 0.0, 1.0], [0.5 * i, 3.0, 1.0]).numpy() for i in range(n)])
    depth = np.random.default_rng(1).uniform(1, 4, (n, H, W)).astype(np.float32)
    depth[:, 0, 0] = 0
    for i in range(n):
        _write_png(root / "frames" / f"{i:05d}.png", np.full((H, W, 3), 30 * i, np.uint8))
    np.savez(root / "gt.npz", K=K, cam2world=c2w, depth=depth)
    (root / "meta.json").write_text(json.dumps({"prompt": "dolly right 1.5", "scene_seed": 3}))
    (root / "config.yaml").write_text(yaml.safe_dump({"render": {"fps": 8.0}}))
    return K, c2w, depth


def test_vibe3r_folder_with_resize_rescales_K_and_depth_nearest(tmp_path):
    K, c2w, depth = _vibe3r_folder(tmp_path)
    assert detect_format(tmp_path) == "vibe3r"
    cap = load_capture(tmp_path)
    np.testing.assert_array_equal(cap.depth, depth)
    np.testing.assert_array_equal(cap.cam2world, c2w)
    np.testing.assert_allclose(cap.timestamps, np.arange(4) / 8)
    assert cap.meta["video_meta"]["prompt"] == "dolly right 1.5"
    half = load_capture(f"{tmp_path}@1:", size=16)
    assert half.images.shape == (3, 12, 16, 3) and half.frame_names == ["00001", "00002", "00003"]
    np.testing.assert_allclose(half.K, G.scale_intrinsics(K[1:], 0.5).numpy())
    # nearest, pixel-centre aligned: output pixel (v, u) samples input (2v + 0.5 -> 2v or 2v+1)
    assert set(np.unique(half.depth[0])) <= set(np.unique(depth[1]))
    # the same world point seen through the resized camera lands at the rescaled pixel
    X = torch.tensor([[0.7, 2.5, 1.2]], dtype=torch.float64)
    uv_full, _ = G.project(G.transform_points(G.inv_pose(c2w[1]), X), K[1])
    uv_half, _ = G.project(G.transform_points(G.inv_pose(half.cam2world[0]), X), half.K[0])
    np.testing.assert_allclose(uv_half.numpy(), (uv_full.numpy() + 0.5) * 0.5 - 0.5, atol=1e-9)


def test_reads_video_folders_written_by_video_gen(tmp_path):
    """The folder format of vibe3r.video_gen.video_io round-trips: exact frames, GT, fps from meta.json."""
    from vibe3r.video_gen.video_io import write_video

    n, H, W = 3, 15, 21
    K = np.stack([G.intrinsics_from_fov(60, W, H).numpy()] * n)
    c2w = np.stack([G.look_at([0.1 * i, 0, 1], [0, 3, 1]).numpy() for i in range(n)])
    depth = np.random.default_rng(2).uniform(1, 3, (n, H, W)).astype(np.float32)
    frames = np.random.default_rng(3).integers(0, 255, (n, H, W, 3), dtype=np.uint8)
    out = write_video(tmp_path / "v", frames, K, c2w, depth, {"prompt": "pan left 30", "scene_seed": 1, "fps": 7.0})
    cap = load_capture(out)
    assert cap.source == "vibe3r"
    np.testing.assert_array_equal(cap.images, frames)
    np.testing.assert_array_equal(cap.depth, depth)
    np.testing.assert_allclose(cap.K, K)
    np.testing.assert_allclose(cap.cam2world, c2w)
    np.testing.assert_allclose(cap.timestamps, np.arange(n) / 7.0)


def test_tum_folder_association_quaternions_and_intrinsics(tmp_path):
    """Timestamp-named pngs with groundtruth.txt one level up: nearest pose within 20 ms, frames
    further away dropped; quaternions are xyzw; fr3 intrinsics from the folder name."""
    seq = tmp_path / "rgbd_dataset_freiburg3_test" / "rgb_frames"
    for t in (10.000, 10.500, 11.000, 20.0):
        _write_png(seq / f"{t:.6f}.png", np.zeros((12, 16, 3), np.uint8))
    s = np.sin(np.pi / 4)
    gt = ["# timestamp tx ty tz qx qy qz qw", "9.995 1 2 3 0 0 0 1", f"10.505 1 2 3 0 0 {s} {s}", "11.03 0 0 0 0 0 0 1"]
    (seq.parent / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    assert detect_format(seq) == "tum"
    cap = load_capture(seq)
    assert cap.frame_names == ["10.000000", "10.500000"]  # 11.0 is 30 ms away, 20.0 far
    assert len(cap.meta["dropped_unposed"]) == 2
    np.testing.assert_allclose(cap.cam2world[0], np.array([[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1.0]]))
    np.testing.assert_allclose(cap.cam2world[1][:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # +90 deg about z
    np.testing.assert_allclose(cap.K[0], [[535.4, 0, 320.1], [0, 539.2, 247.6], [0, 0, 1]])
    np.testing.assert_allclose(cap.timestamps, [10.0, 10.5])


def test_nerfstudio_opengl_axes_and_pixel_centres(tmp_path):
    """An OpenGL camera at the origin with identity pose looks down world -z with +y up; after
    loading, world (0, 0, -2) projects to the principal point at depth 2 and world +y is up
    in the image. nerfstudio's cx puts pixel centres at +0.5: ours is cx - 0.5."""
    _write_png(tmp_path / "images" / "f_2.png", np.zeros((20, 30, 3), np.uint8))
    _write_png(tmp_path / "images" / "f_10.png", np.zeros((20, 30, 3), np.uint8))
    pose2 = np.eye(4)
    pose2[:3, 3] = [1.0, 0, 0]
    data = {
        "fl_x": 25.0, "fl_y": 26.0, "cx": 15.0, "cy": 10.0, "w": 30, "h": 20, "camera_model": "OPENCV",
        "frames": [
            {"file_path": "images/f_10.png", "transform_matrix": pose2.tolist()},
            {"file_path": "images/f_2.png", "transform_matrix": np.eye(4).tolist()},
        ],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    assert detect_format(tmp_path) == "nerfstudio"
    cap = load_capture(tmp_path)
    assert cap.frame_names == ["f_2", "f_10"]
    np.testing.assert_allclose(cap.K[0], [[25, 0, 14.5], [0, 26, 9.5], [0, 0, 1]])
    w2c = G.inv_pose(cap.cam2world[0])
    pts = G.transform_points(w2c, torch.tensor([[0, 0, -2.0], [0, 0.5, -2.0], [0.5, 0, -2.0]], dtype=torch.float64))
    uv, z = G.project(pts, cap.K[0])
    np.testing.assert_allclose(z.numpy(), [2, 2, 2])
    np.testing.assert_allclose(uv[0].numpy(), [14.5, 9.5])
    assert uv[1, 1] < 9.5 and uv[2, 0] > 14.5  # up is up, right is right
    np.testing.assert_allclose(cap.cam2world[1][:3, 3], [1, 0, 0])
    np.testing.assert_allclose(GL_TO_CV @ GL_TO_CV, np.eye(4))


def test_llff_axes_down_right_back(tmp_path):
    """LLFF pose columns are [down, right, back]: a camera looking down world -z with +y up has
    columns [-y, +x, +z]; world (0, 0, -2) projects to the centre, +x to the right. hwf for
    full-resolution images rescales K to the files' size."""
    for i in range(2):
        _write_png(tmp_path / "images" / f"IMG_{i}.png", np.zeros((20, 30, 3), np.uint8))
    R = np.stack([[0, -1, 0], [1, 0, 0], [0, 0, 1]], axis=1).astype(float)  # columns down, right, back
    rows = []
    for tx in (0.0, 1.0):
        P = np.concatenate([R, [[tx], [0], [0]], [[40], [60], [50]]], axis=1)  # hwf: 40x60 originals
        rows.append(np.concatenate([P.ravel(), [0.5, 10.0]]))
    np.save(tmp_path / "poses_bounds.npy", np.array(rows))
    assert detect_format(tmp_path) == "llff"
    cap = load_capture(tmp_path)
    np.testing.assert_allclose(cap.cam2world[0][:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    np.testing.assert_allclose(cap.K[0], G.scale_intrinsics(np.array([[50, 0, 30], [0, 50, 20], [0, 0, 1.0]]), 0.5).numpy())
    uv, z = G.project(G.transform_points(G.inv_pose(cap.cam2world[0]), torch.tensor([[0, 0, -2.0], [0.3, 0, -2.0]], dtype=torch.float64)), cap.K[0])
    np.testing.assert_allclose(uv[0].numpy(), cap.K[0][:2, 2])
    assert z[0] == 2 and uv[1, 0] > uv[0, 0]
    assert cap.meta["bounds"][0] == [0.5, 10.0]


# --------------------------------------------------------------------------------------------
# specs, selection, errors
# --------------------------------------------------------------------------------------------


def test_parse_spec_and_selection():
    assert parse_spec("/nope/cap@3:10:2") == (Path("/nope/cap"), slice(3, 10, 2))
    assert parse_spec("/nope/cap@5") == (Path("/nope/cap"), slice(5, 6))
    assert parse_spec("/nope/cap@:4") == (Path("/nope/cap"), slice(None, 4, None))
    assert parse_spec("/nope/cap") == (Path("/nope/cap"), None)
    with pytest.raises(InputError, match="step"):
        parse_spec("/nope/cap@1:5:0")
    t = np.arange(30) / 30.0
    assert select_frames(30, t, fps=10) == list(range(0, 30, 3))
    assert select_frames(30, None, frames=slice(10, None), stride=5) == [10, 15, 20, 25]
    assert select_frames(30, None, max_frames=3) == [0, 14, 29]
    assert select_frames(5, None, max_frames=10) == [0, 1, 2, 3, 4]
    with pytest.raises(InputError, match="empty"):
        select_frames(5, None, frames=slice(7, 9))


def test_unknown_and_missing_inputs(tmp_path):
    with pytest.raises(InputError, match="capture not found"):
        load_capture(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="unknown capture format") as exc:
        load_capture(tmp_path / "empty")
    for name in FORMATS:
        assert name in str(exc.value)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown capture format"):
        detect_format(tmp_path / "x.txt")
    _write_png(tmp_path / "one.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="single image"):
        detect_format(tmp_path / "one.png")


def test_cli_inspect(tmp_path):
    path = write_capture_video(_pattern(6, 16, 24), tmp_path / "v.mp4", fps=12)
    runner = CliRunner()
    res = runner.invoke(captures_app, ["inspect", str(path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    assert info["format"] == "video" and info["frames"] == 6 and info["fps"] == pytest.approx(12)
    assert info["poses_known"] is False and info["K_known"] is False
    res = runner.invoke(captures_app, ["inspect", str(path)])
    assert res.exit_code == 0 and "video" in res.output and "24 x 16" in res.output
    K, c2w, _ = _vibe3r_folder(tmp_path / "rendered")
    res = runner.invoke(captures_app, ["inspect", str(tmp_path / "rendered"), "--json"])
    info = json.loads(res.output.strip().splitlines()[-1])
    assert info["poses_known"] and info["depth_known"] and info["path_length"] == pytest.approx(1.5)
    res = runner.invoke(captures_app, ["inspect", str(tmp_path / "missing")])
    assert res.exit_code != 0 and isinstance(res.exception, InputError)


# --------------------------------------------------------------------------------------------
# pair lists
# --------------------------------------------------------------------------------------------


def _pair_line(n0: str, n1: str, K: np.ndarray, T: np.ndarray, rot0: int = 0, rot1: int = 0) -> str:
    nums = list(K.ravel()) + list(K.ravel()) + list(T.ravel())
    return " ".join([n0, n1, str(rot0), str(rot1)] + [f"{x:.9f}" for x in nums])


def test_load_pairs_finds_root_and_resizes(tmp_path):
    data = tmp_path / "data"
    _write_png(data / "scene" / "a.png", np.zeros((40, 60, 3), np.uint8))
    _write_png(data / "scene" / "b.png", np.full((40, 60, 3), 255, np.uint8))
    K = np.array([[50, 0, 29.5], [0, 50, 19.5], [0, 0, 1.0]])
    T = G.relative_pose(G.look_at([0, 0, 0], [0, 1, 0]), G.look_at([0.2, 0, 0], [0, 1, 0])).numpy()
    (data / "pairs").mkdir()
    (data / "pairs" / "list.txt").write_text(_pair_line("a.png", "b.png", K, T) + "\n")
    pairs = load_pairs(data / "pairs" / "list.txt")
    assert len(pairs) == 1 and pairs[0].root == data / "scene"
    np.testing.assert_allclose(pairs[0].T_0to1, T, atol=1e-9)
    i0, i1, K0, K1, T01 = load_pair_images(pairs[0], size=30)
    assert i0.shape == (20, 30, 3) and i1.mean() == 255
    np.testing.assert_allclose(K0, G.scale_intrinsics(K, 0.5).numpy(), atol=1e-8)
    np.testing.assert_allclose(T01, T, atol=1e-8)
    (data / "pairs" / "bad.txt").write_text("a.png b.png 0 0 1 2 3\n")
    with pytest.raises(InputError, match="38 fields"):
        load_pairs(data / "pairs" / "bad.txt")


def test_pair_rotation_keeps_projection_consistent(tmp_path):
    """rot = k quarter turns: the image, K and T_0to1 rotate together, so a 3D point projects onto
    the same image content before and after."""
    H, W = 30, 40
    K = np.array([[35.0, 0, 18.0], [0, 33.0, 16.0], [0, 0, 1]])
    X0 = np.array([0.3, -0.2, 2.0])
    uv = K @ X0
    u, v = int(round(uv[0] / uv[2])), int(round(uv[1] / uv[2]))
    img = np.zeros((H, W, 3), np.uint8)
    img[v, u] = 255
    for k in (1, 2, 3):
        Kr = rot90_intrinsics(K, (H, W), k)
        Xr = (rot90_camera(k) @ np.append(X0, 1))[:3]
        p = Kr @ Xr
        rimg = np.rot90(img, k=k)
        ur, vr = p[0] / p[2], p[1] / p[2]
        assert rimg[int(round(vr)), int(round(ur))].max() == 255, k
    _write_png(tmp_path / "s" / "a.png", img)
    _write_png(tmp_path / "s" / "b.png", img)
    T = np.eye(4)
    T[:3, 3] = [0.1, 0, 0]
    pair = PairSpec("a.png", "b.png", K, K, T, rot0=1, rot1=3, root=tmp_path / "s")
    i0, i1, K0, K1, T01 = load_pair_images(pair)
    assert i0.shape == (W, H, 3)
    # a point in rotated camera 0 -> original cam 0 -> original cam 1 -> rotated cam 1
    Y = np.append(rot90_camera(1)[:3, :3] @ X0, 1)
    np.testing.assert_allclose(T01 @ Y, rot90_camera(3) @ T @ np.append(X0, 1), atol=1e-12)


# --------------------------------------------------------------------------------------------
# real captures: formats detected, conventions of the loaders (skipped without the data)
# --------------------------------------------------------------------------------------------


needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real captures not present at {REAL}")


@needs_real
@pytest.mark.parametrize(
    "rel, fmt, n, depth",
    [
        ("7scenes-redkitchen", "7scenes", 250, True),
        ("3dmatch-studyroom", "7scenes", 5, True),
        ("slambook2-dining", "slambook", 5, True),
        ("tum-fr3-long-office/sequence", "tum", 16, False),
        ("tum-fr3-long-office/static-rgbd", "tum", 14, True),
    ],
)
def test_real_formats_detected(rel, fmt, n, depth):
    info = describe_capture(REAL / rel)
    assert info["format"] == fmt and info["frames"] == n and info["depth_known"] == depth
    assert info["K_known"] and info["poses_known"] and (info["height"], info["width"]) == (480, 640)


@needs_real
def test_real_7scenes_resized_frames(tmp_path):
    cap = load_capture(f"{REAL / '7scenes-redkitchen'}@125:250:60", size=160)
    assert cap.frame_names == ["frame-000500", "frame-000740", "frame-000980"]
    assert cap.meta["frame_numbers"] == [500, 740, 980]
    assert cap.images.shape == (3, 120, 160, 3) and cap.depth.shape == (3, 120, 160)
    np.testing.assert_allclose(cap.K[0], G.scale_intrinsics(np.array([[585, 0, 320], [0, 585, 240], [0, 0, 1.0]]), 0.25).numpy())
    assert 0.5 < float(np.median(cap.depth[cap.depth > 0])) < 4  # metres
    R = cap.cam2world[:, :3, :3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    # a 7-Scenes stretch as a phone video: the video path gives the same frames back
    video = load_capture(write_capture_video(cap, tmp_path / "kitchen.mp4", fps=5))
    assert video.images.shape == cap.images.shape
    assert np.abs(video.images.astype(int) - cap.images.astype(int)).mean() < 5
