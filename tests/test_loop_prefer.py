"""The loop's preference stages on a tiny rendered capture: samples scored into the round's store,
DPO of the candidate, the merged checkpoint handed on as the round's recon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vibe3r.config import load_config
from vibe3r.loop.prefer import PREFERENCE_STAGES
from vibe3r.loop.registry import Registry
from vibe3r.loop.stage import run_stage
from vibe3r.preference.store import PreferenceStore
from vibe3r.recon.model import ReconModel
from vibe3r.recon.synthetic import box_room_video

BASE = Path(__file__).resolve().parents[1] / "weights" / "recon-base"


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    cap = tmp_path_factory.mktemp("cap") / "room"
    gt = box_room_video(5, n_frames=6, H=48, W=64, step=0.12)
    (cap / "frames").mkdir(parents=True)
    for k, img in enumerate(gt.images):
        Image.fromarray(img).save(cap / "frames" / f"{k:05d}.png")
    np.savez(cap / "gt.npz", K=gt.K, cam2world=gt.c2w, depth=gt.depth)
    return cap


def exact_round(run_dir: Path, cfg, between=None) -> dict:  # noqa: ANN001
    """``sample_real`` then ``prefer_recon`` of round 1 on the base checkpoint; ``between(run_dir)`` runs in
    between (e.g. leaves what a kill would). Returns prefer_recon's record."""
    sample, prefer = PREFERENCE_STAGES
    outputs: dict[str, Path] = {"store": run_dir / "rounds" / "0001" / "sample_real" / "preferences.sqlite"}

    def resolve(name):  # noqa: ANN001, ANN202
        return {"recon": BASE, "pairs": None}.get(name, outputs.get(name))

    with Registry(run_dir) as reg:
        args = {"cfg": cfg, "run_dir": run_dir, "round": 1, "registry": reg, "seed": 0}
        run_stage(sample, 0, args, resolve)
        if between is not None:
            between(run_dir)
        return run_stage(prefer, 1, args, resolve)


def test_sample_then_prefer_hands_a_trained_checkpoint_on(tmp_path, capture):
    cfg = load_config(None, [f"preference.captures=['{capture}']", "preference.focal=null", "preference.size=64",
                             "preference.pairs=3", "preference.n=4", "preference.min_gap=1", "preference.max_gap=3",
                             "preference.steps=2", "preference.min_margin=0.0"])
    sample, prefer = PREFERENCE_STAGES
    outputs: dict[str, Path] = {}

    def resolve(name):  # noqa: ANN001, ANN202
        return {"recon": outputs.get("recon", BASE), "pairs": None}.get(name, outputs.get(name))

    with Registry(tmp_path) as reg:
        args = {"cfg": cfg, "run_dir": tmp_path, "round": 1, "registry": reg, "seed": 0}
        rec = run_stage(sample, 0, args, resolve)
        outputs["store"] = tmp_path / "rounds" / "0001" / "sample_real" / "preferences.sqlite"
        with PreferenceStore(outputs["store"]) as st:
            samples = st.samples(round=1)
            prefs = st.preferences(round=1)
        assert len(samples) == 3 * 5 and rec["metrics"]["samples"] == 15
        assert prefs and all(p.chosen.combined > p.rejected.combined for p in prefs)
        rec = run_stage(prefer, 1, args, resolve)
        ckpt = tmp_path / "rounds" / "0001" / "prefer_recon" / "ckpt"
        assert rec["metrics"]["dpo_preferences"] == len(prefs)
        merged, base = ReconModel.from_pretrained(ckpt), ReconModel.from_pretrained(BASE)
        moved = [n for (n, p), q in zip(merged.named_parameters(), base.parameters()) if not np.allclose(p.detach(), q.detach())]
        assert moved and all(not n.startswith("pts_heads") for n in moved)  # LoRA targets only
        assert (ckpt / "preference.json").is_file()
        # the candidate keeps its parent's training recipe: a promoted one is fine-tuned with it next round
        assert (ckpt / "train_config.yaml").read_text() == (BASE / "train_config.yaml").read_text()
        # recorded: the next run of the round skips both
        assert run_stage(sample, 0, args, resolve)["skipped"] and run_stage(prefer, 1, args, resolve)["skipped"]


@pytest.mark.parametrize("draws", [0, 64])
def test_exact_method_trains_on_the_rounds_pairs(tmp_path, capture, draws):
    """``preference.method: exact``: the round's sampled pairs with their classical poses, no preferences needed;
    ``exact_draws`` trains on a sample of each pair's draws."""
    cfg = load_config(None, [f"preference.captures=['{capture}']", "preference.focal=null", "preference.size=64",
                             "preference.pairs=2", "preference.n=2", "preference.min_gap=1", "preference.max_gap=3",
                             "preference.steps=2", "preference.method=exact", f"preference.exact_draws={draws}"])
    rec = exact_round(tmp_path, cfg)
    with PreferenceStore(tmp_path / "rounds" / "0001" / "sample_real" / "preferences.sqlite") as st:
        assert [s.is_mode for s in st.samples(round=1)] == [True, True]  # exact needs no samples: the modes are scored
    m = rec["metrics"]
    assert m["exact_reward"] > m["exact_reward_ref"] - 0.05 and m["exact_kl"] > 0
    merged, base = ReconModel.from_pretrained(tmp_path / "rounds" / "0001" / "prefer_recon" / "ckpt"), ReconModel.from_pretrained(BASE)
    assert any(not np.allclose(p.detach(), q.detach()) for p, q in zip(merged.parameters(), base.parameters()))


def test_a_prefer_stage_killed_before_its_first_checkpoint_starts_over(tmp_path, capture):
    """Killed after the trainer made its folder but before its first checkpoint: the next attempt trains from
    the start instead of failing to resume a checkpoint that does not exist."""
    cfg = load_config(None, [f"preference.captures=['{capture}']", "preference.focal=null", "preference.size=64",
                             "preference.pairs=2", "preference.n=2", "preference.min_gap=1", "preference.max_gap=3",
                             "preference.steps=2", "preference.method=exact", "preference.exact_draws=64"])
    def killed(run_dir: Path) -> None:  # what the kill left: the trainer's folder, no checkpoint
        (run_dir / "rounds" / "0001" / ".prefer_recon.tmp" / "trainer" / "tb").mkdir(parents=True)
        (run_dir / "rounds" / "0001" / ".prefer_recon.tmp" / "trainer" / "log.jsonl").write_text("")

    rec = exact_round(tmp_path, cfg, killed)
    assert rec["metrics"]["exact_pairs"] == 2
    assert (tmp_path / "rounds" / "0001" / "prefer_recon" / "ckpt" / "model.safetensors").is_file()
