"""Warp pairs: renders of a real frame from new cameras, with exact supervision by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from _common import REAL, TINY_MODEL, needs_real

from vibe3r import geometry
from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.recon.model import build_model
from vibe3r.video_gen.dataset import PairShardDataset, pair_item
from vibe3r.video_gen.warp import (
    WarpConfig,
    build_warp_pairs,
    depth_mesh,
    novel_camera,
    raycasting_scene,
    render_view,
    warp_frame,
)

NO_CAMERA_MODEL = dict(gain=0.0, gamma=0.0, blur_sigma=0.0, noise=0.0)


def _textured_room(H: int = 240, W: int = 320) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame of a textured slanted wall with a box in front of it, its depth and K."""
    rng = np.random.default_rng(0)
    tex = cv2.resize(rng.integers(0, 256, (H // 8, W // 8, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
    v, u = np.mgrid[0:H, 0:W]
    depth = (2.0 + 0.002 * u).astype(np.float32)
    box = (np.abs(u - W / 2) < W / 8) & (np.abs(v - H / 2) < H / 8)
    depth[box] = 1.2
    tex[box] = (255 - tex[box]) // 2
    K = np.array([[0.9 * W, 0, (W - 1) / 2], [0, 0.9 * W, (H - 1) / 2], [0, 0, 1]])
    return tex, depth, K


def test_identity_camera_reproduces_the_frame():
    img, depth, K = _textured_room()
    Ks = np.asarray(geometry.scale_intrinsics(torch.from_numpy(K), 0.4), np.float64)
    render, z = render_view(img, K, raycasting_scene(depth_mesh(depth, K)), Ks, np.eye(4), 128, 96)
    ref = cv2.resize(img, (128, 96), interpolation=cv2.INTER_AREA)
    valid = z > 0
    assert valid.mean() > 0.9  # only the box's torn outline is missing
    assert np.abs(render.astype(float) - ref)[valid].mean() < 3.0
    assert np.allclose(z[valid], cv2.resize(depth, (128, 96), interpolation=cv2.INTER_NEAREST)[valid], rtol=0.02)


def _photometric(item: dict, pts21: torch.Tensor) -> float:
    """Mean |view 2 - view 1 sampled at the projection of pts21| over view 2's valid pixels, 8-bit levels."""
    uv, _ = geometry.project(pts21, item["K1"])
    grid = torch.stack([uv[..., 0] / 63.5 - 1, uv[..., 1] / 47.5 - 1], -1)[None]
    back = torch.nn.functional.grid_sample(item["img1"][None], grid.float(), align_corners=True)[0]
    m = item["valid2"] & (grid[0].abs() < 1).all(-1)
    return float((back - item["img2"]).abs().mean(0)[m].mean() * 255)


def test_a_warp_pair_is_supervised_exactly():
    """Every valid pixel of a render, carried into the real frame by the pair's own supervision (its points
    X^{2,1} projected with K1), lands on the colour it shows — and far from it under a wrong pose."""
    img, depth, K = _textured_room()
    gt = warp_frame(img, K, depth, K, (96, 128), WarpConfig(views_per_frame=3, **NO_CAMERA_MODEL), np.random.default_rng(1))
    assert gt is not None and len(gt.images) >= 3
    shard = {"images": gt.images, "depth": gt.depth, "K": gt.K, "c2w": gt.c2w, "covis": np.ones(len(gt.images) - 1, np.float32),
             "pairs": np.array([[0, k] for k in range(1, len(gt.images))], np.int32), "video": np.zeros(len(gt.images), np.int32),
             "frame": np.arange(len(gt.images), dtype=np.int32), "scene_seed": np.zeros(len(gt.images), np.int64)}
    for p in range(len(shard["pairs"])):
        item = pair_item(shard, p)
        rot = geometry.rotation_error_deg(item["T21"][:3, :3], torch.eye(3)).item()
        assert rot > 2  # a new viewpoint, not a copy
        right = _photometric(item, item["pts21"])
        wrong = _photometric(item, item["pts21"] + torch.tensor([0.1, 0.0, 0.0]))  # off by 10 cm
        assert right < 6 and wrong > 2 * right, (right, wrong)


def test_novel_cameras_orbit_within_the_configured_range():
    cfg = WarpConfig(orbit_deg=(5.0, 10.0), roll_deg=0.0, look_jitter_deg=0.0, dolly=0.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        T = torch.from_numpy(novel_camera(2.0, cfg, rng))
        ang = geometry.rotation_error_deg(T[:3, :3], torch.eye(3)).item()
        assert 5 - 1e-6 <= ang <= 10 + 1e-6
        pivot_in_b = geometry.transform_points(T, torch.tensor([0.0, 0.0, 2.0], dtype=T.dtype))
        assert torch.allclose(pivot_in_b, torch.tensor([0.0, 0.0, 2.0], dtype=T.dtype), atol=1e-9)  # pivot stays centred


@needs_real
def test_warp_pairs_of_a_real_capture_from_the_models_own_depth(tmp_path):
    """No ground truth: the depth is the (tiny, untrained) model's; the pairs load as a training dataset."""
    build_model(ReconModelConfig(**TINY_MODEL), seed=0).save_pretrained(tmp_path / "ckpt")
    idx = build_warp_pairs([f"{REAL}/7scenes-redkitchen@0:4"], tmp_path / "warp", recon=tmp_path / "ckpt", size=(64, 48),
                           cfg=WarpConfig(views_per_frame=2, min_valid=0.0), progress=False)
    assert idx["warp"]["depth"] == "model" and idx["n_pairs"] == 8 and (idx["height"], idx["width"]) == (48, 64)
    items = list(PairShardDataset(tmp_path / "warp", shuffle=False))
    assert len(items) == 8
    assert all(it["img1"].shape == (3, 48, 64) and it["valid1"].any() and it["valid2"].any() for it in items)


@needs_real
def test_a_capture_without_depth_needs_a_model(tmp_path):
    with pytest.raises(InputError, match="no depth"):
        build_warp_pairs([f"{REAL}/tum-fr3-long-office/sequence@0:2"], tmp_path / "warp", progress=False)


def test_a_wide_capture_is_cropped_to_the_output_aspect(tmp_path):
    """A 16:9 phone-style capture (no intrinsics: a 60 degree field of view) becomes 4:3 warp pairs."""
    from vibe3r.captures import Capture

    img, depth, _ = _textured_room(H=180, W=320)
    cap = Capture(name="wide", images=np.stack([img, img[:, ::-1].copy()]), frame_names=["a", "b"], K=None, cam2world=None,
                  depth=np.stack([depth, depth[:, ::-1].copy()]), timestamps=None, source="test", meta={"path": "wide"})
    idx = build_warp_pairs([cap], tmp_path / "warp", size=(64, 48), cfg=WarpConfig(views_per_frame=2), progress=False)
    assert (idx["height"], idx["width"]) == (48, 64) and idx["n_pairs"] == 4
    item = next(iter(PairShardDataset(tmp_path / "warp", shuffle=False)))
    assert item["img1"].shape == (3, 48, 64)
    # 60 degrees across the native 320 px -> fx = 160 / tan(30 deg) = 277.1 px; the crop keeps it; x 64/240 at the output
    assert abs(float(item["K1"][0, 0]) - 64 / 240 * 160 / np.tan(np.radians(30))) < 0.1
