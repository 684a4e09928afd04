"""Captures contributed through the web app join the loop: a pooled upload is in the next round's real
captures (frozen per round), scored by ``sample_real`` with the focal length the web app estimated; and
``loop iterate --captures`` replaces ``preference.captures``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from _common import TINY_MODEL
from PIL import Image
from typer.testing import CliRunner

from vibe3r.config import ReconModelConfig, load_config
from vibe3r.errors import InputError
from vibe3r.loop.pool import freeze_captures, read_frozen, resolve_captures
from vibe3r.loop.prefer import PREFERENCE_STAGES
from vibe3r.loop.registry import Registry
from vibe3r.loop.stage import run_stage
from vibe3r.preference.store import PreferenceStore
from vibe3r.recon.model import build_model
from vibe3r.recon.synthetic import box_room_video
from vibe3r.serve.config import ServeConfig
from vibe3r.serve.runjob import contribute


def _frames(folder: Path, seed: int, n: int = 5) -> Path:
    gt = box_room_video(seed, n_frames=n, H=48, W=64, step=0.12)
    folder.mkdir(parents=True)
    for k, img in enumerate(gt.images):
        Image.fromarray(img).save(folder / f"{k:05d}.png")
    return folder


@pytest.fixture()
def setup(tmp_path):
    configured = tmp_path / "configured"  # a capture with intrinsics (vibe3r folder: frames/ + gt.npz)
    gt = box_room_video(1, n_frames=5, H=48, W=64, step=0.12)
    _frames(configured / "frames", 1)
    np.savez(configured / "gt.npz", K=gt.K, cam2world=gt.c2w, depth=gt.depth)
    serve = ServeConfig(data=tmp_path / "serve")
    serve.pool_dir.mkdir(parents=True)  # the server's pool, still empty
    ckpt = tmp_path / "tiny"
    build_model(ReconModelConfig(**TINY_MODEL)).save_pretrained(ckpt)
    cfg = load_config(None, [f"preference.captures=['{configured}']", f"preference.capture_pool={serve.pool_dir}",
                             "preference.focal=null", "preference.size=64", "preference.pairs=2", "preference.n=2",
                             "preference.min_gap=1", "preference.max_gap=3", "preference.pool_max_frames=4"])
    return cfg, serve, ckpt, configured


def test_a_contributed_capture_joins_the_next_round(tmp_path, setup):
    cfg, serve, ckpt, configured = setup
    run = tmp_path / "run"
    first = freeze_captures(cfg, run, 1)
    assert [c.origin for c in first] == ["config"]

    # an upload with the opt-in box ticked lands in the pool while round 1 runs (the web app's own code)
    upload = _frames(tmp_path / "upload" / "images", 7)
    job = {"id": "0123456789abcdef0123456789abcdef", "kind": "images", "created": time.time(), "info": {"photos": 5}}
    contribute(serve, job, upload, {"fx": 50.0, "fy": 50.0, "from": "pointmaps", "native_size": [48, 64]})
    index = [json.loads(line) for line in (serve.pool_dir / "index.jsonl").read_text().splitlines()]
    assert len(index) == 1 and index[0]["job"] == job["id"]

    assert [c.spec for c in freeze_captures(cfg, run, 1)] == [c.spec for c in first]  # round 1 stays as it started
    second = freeze_captures(cfg, run, 2)
    pooled = [c for c in second if c.origin == "pool"]
    assert len(second) == 2 and len(pooled) == 1
    assert pooled[0].job == job["id"] and pooled[0].focal == (50.0, 50.0) and pooled[0].max_frames == 4
    assert read_frozen(run / "rounds" / "0002" / "captures.json") == second

    # round 2's sample_real scores the pooled capture into the round's store
    sample = PREFERENCE_STAGES[0]
    with Registry(run) as reg:
        rec = run_stage(sample, 0, {"cfg": cfg, "run_dir": run, "round": 2, "registry": reg, "seed": 0},
                        lambda name: ckpt if name == "recon" else None)
    with PreferenceStore(run / "rounds" / "0002" / "sample_real" / "preferences.sqlite") as st:
        specs = dict(st.db.execute("SELECT spec, n_frames FROM captures").fetchall())
        per_capture = dict(st.db.execute("SELECT c.spec, COUNT(*) FROM samples s JOIN pairs p ON p.id = s.pair_id"
                                         " JOIN captures c ON c.id = p.capture_id GROUP BY c.spec").fetchall())
    assert specs == {str(configured): 5, pooled[0].spec: 4}  # the pooled one at pool_max_frames
    assert per_capture[pooled[0].spec] == 2 * 3 and rec["metrics"]["pairs"] == 4


def test_pool_entries_and_errors(tmp_path, setup):
    cfg, serve, _, configured = setup
    assert [c.origin for c in resolve_captures(cfg)] == ["config"]  # an empty pool adds nothing
    for k in range(2):
        job = {"id": f"{k:032x}", "kind": "images", "created": 0.0, "info": {}}
        contribute(serve, job, _frames(tmp_path / f"up{k}" / "images", k), None)
    (serve.pool_dir / f"{0:032x}" / "images").rename(tmp_path / "withdrawn")  # a capture removed from the pool is skipped
    caps = resolve_captures(cfg)
    assert [c.origin for c in caps] == ["config", "pool"] and caps[1].focal is None
    # --captures takes a pool folder or its index, a capture, a frame range; duplicates count once
    cfg2 = load_config(None, [f"preference.captures=['{serve.pool_dir}', '{serve.pool_dir}/index.jsonl', '{configured}@1:4']"])
    assert [c.origin for c in resolve_captures(cfg2)] == ["pool", "config"]
    assert resolve_captures(cfg2)[1].spec.endswith("@1:4")
    with pytest.raises(InputError, match="capture not found"):
        resolve_captures(load_config(None, [f"preference.captures=['{tmp_path}/nope.mp4']"]))
    with pytest.raises(InputError, match="no capture pool"):
        resolve_captures(load_config(None, [f"preference.captures=['{configured}']", f"preference.capture_pool={tmp_path}/nope"]))


def test_iterate_captures_option_replaces_the_configured_captures(tmp_path, monkeypatch):
    import vibe3r.loop.iterate as it
    from vibe3r.cli import app

    seen = {}
    monkeypatch.setattr(it, "iterate", lambda cfg, run, rounds, on_event: seen.setdefault("cfg", cfg) and [1])
    res = CliRunner().invoke(app, ["loop", "iterate", "--run", str(tmp_path / "r"), "--captures", "a.mp4", "--captures", "b@0:9"])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].preference.captures == ["a.mp4", "b@0:9"] and seen["cfg"].preference.focal is None
    seen.clear()
    res = CliRunner().invoke(app, ["loop", "iterate", "--run", str(tmp_path / "r"), "--captures", "a.mp4",
                                   "--set", "preference.focal=[500, 500]"])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].preference.focal == (500.0, 500.0)
