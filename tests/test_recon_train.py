"""Training: the loss goes down, weights change, resume equals an uninterrupted run, CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from vibe3r.config import load_config
from vibe3r.recon.cli import app
from vibe3r.recon.losses import build_loss
from vibe3r.recon.model import ReconModel, build_model
from vibe3r.recon.synthetic import box_pair_batch, write_box_dataset
from vibe3r.recon.train import swap_views, train

TINY = Path(__file__).resolve().parents[1] / "configs" / "recon-tiny.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_box_dataset(tmp_path_factory.mktemp("pairs"), n_videos=2, n_frames=6, H=32, W=48, pairs_per_video=8)


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def test_training_lowers_the_loss_and_changes_the_weights(data, tmp_path):
    cfg = load_config(TINY, ["recon.train.steps=20"])
    batch = box_pair_batch(B=2, H=32, W=48, seed=5)
    loss_fn = build_loss(cfg.recon.loss)

    def held_out_loss(model):
        with torch.no_grad():
            return float(loss_fn(model.eval()(batch["img1"], batch["img2"]), batch, generator=torch.Generator().manual_seed(0))[0])

    before = held_out_loss(build_model(cfg.recon.model, seed=cfg.recon.train.seed))
    summary = train(cfg, data, tmp_path / "run", progress=False)
    after = held_out_loss(ReconModel.from_pretrained(tmp_path / "run"))
    assert summary["step"] == 20
    assert after < 0.9 * before
    init = build_model(cfg.recon.model, seed=cfg.recon.train.seed).state_dict()
    trained = _weights(tmp_path / "run")
    assert all(not torch.equal(init[k], trained[k]) for k in trained if k.endswith("weight"))
    assert (tmp_path / "run" / "train_config.yaml").is_file() and any((tmp_path / "run" / "tb").iterdir())


def test_resume_equals_uninterrupted(data, tmp_path):
    cfg = load_config(TINY, ["recon.train.steps=8", "recon.train.ckpt_every=3", "recon.train.color_jitter=0.2"])
    train(cfg, data, tmp_path / "full", progress=False)
    train(cfg, data, tmp_path / "split", progress=False, stop_at=5)
    assert not all(torch.equal(a, b) for a, b in zip(_weights(tmp_path / "full").values(), _weights(tmp_path / "split").values()))
    train(cfg, data, tmp_path / "split", resume=True, progress=False)
    full, split = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert full.keys() == split.keys()
    assert all(torch.equal(full[k], split[k]) for k in full)


def test_swapping_views_twice_is_the_identity_and_keeps_geometry_consistent():
    b = box_pair_batch(B=2, H=16, W=24, seed=1)
    s = swap_views(b, torch.tensor([True, False]))
    assert torch.equal(s["img1"][0], b["img2"][0]) and torch.equal(s["img1"][1], b["img1"][1])
    # the new X^{1,1} is view 2's own pointmap: its z is view 2's depth
    assert torch.allclose(s["pts11"][0][..., 2], b["depth2"][0], atol=1e-4)
    back = swap_views(s, torch.tensor([True, False]))
    for k in ("pts11", "pts21", "T21"):
        assert torch.allclose(back[k], b[k], atol=1e-4)


def test_bf16_autocast_step_runs(data, tmp_path):
    cfg = load_config(TINY, ["recon.train.steps=2", "recon.train.bf16=true"])
    s = train(cfg, data, tmp_path / "bf16", progress=False)
    assert s["step"] == 2 and torch.isfinite(torch.tensor(s["loss"]))


def test_cli_refuses_to_overwrite_a_run_without_resume(data, tmp_path):
    args = ["train", "--config", str(TINY), "--data", str(data), "--out", str(tmp_path / "r"), "--set", "recon.train.steps=2", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "--resume" in str(r.exception)
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "not a vibe3r pair dataset" in str(r.exception)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("recon-*.yaml")))
def test_shipped_recon_configs_validate(path):
    cfg = load_config(path)
    assert cfg.recon.model.patch_size >= 2
