"""``vibe3r recon run`` end to end: a tiny random network on a synthetic video (outputs well-formed),
and the alignment pipeline on exact pairwise pointmaps of a synthetic video (trajectory and depth exact)."""

from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest
from _common import TINY_MODEL as TINY
from typer.testing import CliRunner

from vibe3r.captures import Capture, load_capture, write_capture_video
from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.recon import run as R
from vibe3r.recon.align import AlignConfig
from vibe3r.recon.model import build_model
from vibe3r.recon.synthetic import box_room_video


@pytest.fixture(scope="module")
def video():
    return box_room_video(4, n_frames=8, H=48, W=64, step=0.1)


def _capture(gt, n=None) -> Capture:
    n = len(gt.images) if n is None else n
    return Capture(name="box", images=gt.images[:n], frame_names=[f"{i:05d}" for i in range(n)], K=gt.K[:n],
                   cam2world=gt.c2w[:n], depth=gt.depth[:n], timestamps=None, source="vibe3r", meta={"path": "box"})


def test_run_cli_on_a_video_with_a_tiny_random_network(tmp_path, video):
    from vibe3r.cli import app

    build_model(ReconModelConfig(**TINY)).save_pretrained(tmp_path / "ckpt")
    mp4 = write_capture_video(video.images, tmp_path / "room.mp4", fps=10)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["recon", "run", str(mp4), "--ckpt", str(tmp_path / "ckpt"), "--out", str(out),
                                   "--size", "64", "--iters", "5", "--pose", "procrustes", "--json", "--no-progress"])  # no RANSAC on random weights
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])  # --json: one line, last
    assert summary["frames"] == 8 and summary["pairs"] == 28 and summary["points"] > 0
    report = json.loads((out / "report.json").read_text())
    assert report["graph"]["edges"] == 56 and len(report["frames_used"]) == 8 and report["source_index"] == list(range(8))
    assert set(report["timings_s"]) >= {"load", "graph", "inference", "poses", "align", "export", "total"}
    assert report["pose_methods"] == {"procrustes": 56} and report["mean_confidence"] >= 1 and report["peak_rss_mb"] > 0
    for name in ("scene.ply", "scene.glb", "cameras.json", "transforms.json", "colmap/images.txt", "depth/00007.npy"):
        assert (out / name).is_file(), name
    assert len(o3d.io.read_point_cloud(str(out / "scene.ply")).points) == summary["points"]
    cap = load_capture(out / "transforms.json")  # the nerfstudio export is a capture again
    assert len(cap) == 8 and cap.images.shape[1:3] == (48, 64) and np.isfinite(cap.cam2world).all()
    assert np.allclose(cap.cam2world[0], np.eye(4), atol=1e-6)  # gauge: the first camera is the world frame
    cams = json.loads((out / "cameras.json").read_text())["frames"]
    assert len(cams) == 8 and np.allclose(cams[3]["cam2world"], cap.cam2world[3])


def test_alignment_pipeline_on_exact_pairwise_pointmaps_recovers_trajectory_and_depth(tmp_path, video):
    cfg = R.RunConfig(align=AlignConfig(iters=60), mesh=True, conf_quantile=0.0)
    rep = R.reconstruct(_capture(video), tmp_path / "oracle", oracle=True, cfg=cfg)
    g = rep["gt"]
    assert g["ate_sim3"] < 2e-3 * max(1.0, g["gt_path_extent"])  # metres, path extent ~0.5 m
    assert g["depth_abs_rel"] < 2e-3 and g["depth_delta1"] == 1.0
    assert g["rpe_rot_deg"] < 0.1
    assert rep["exports"]["mesh_triangles"] > 0 and (tmp_path / "oracle" / "mesh.ply").is_file()


def test_static_camera_and_too_few_frames_are_one_line_errors(tmp_path, video):
    still = Capture(name="still", images=np.stack([video.images[0]] * 5), frame_names=list("abcde"), K=None, cam2world=None,
                    depth=None, timestamps=None, source="video", meta={})
    model = build_model(ReconModelConfig(**TINY))
    with pytest.raises(InputError, match="camera does not move") as err:
        R.reconstruct(still, tmp_path / "a", model=model)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="at least 2 frames"):
        R.reconstruct(_capture(video, 1), tmp_path / "b", model=model)


def test_missing_default_checkpoint_says_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "DEFAULT_CKPTS", (tmp_path / "nope",))
    with pytest.raises(InputError, match="vibe3r recon train --config configs/recon-base.yaml") as err:
        R.default_checkpoint()
    assert "\n" not in str(err.value)
