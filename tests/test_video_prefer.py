"""Preference training of the video generator: Diffusion-DPO, GRPO, LoRA, the judge, the store."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from _common import REAL, TINY_MODEL, needs_real
from test_video_diffusion import tiny_cfg, videos  # noqa: F401 - the module fixture

from vibe3r.errors import InputError
from vibe3r.preference.store import PreferenceStore
from vibe3r.video_gen.diffusion import VideoGenerator
from vibe3r.video_gen.judge import FlowJudge, camera_score, judge_video
from vibe3r.video_gen.prefer import (
    LoraVideoGenerator,
    PreferencePair,
    clip_prompts,
    diffusion_dpo_loss,
    group_advantages,
    grpo_step_loss,
    sample_videos,
    train_best,
    train_dpo,
    train_grpo,
)


def test_diffusion_dpo_loss_matches_hand_computation():
    ew, el, rw, rl = (torch.tensor([v]) for v in (0.30, 0.50, 0.40, 0.45))
    beta = 10.0
    # -log sigmoid(-beta/2 * ((0.30 - 0.50) - (0.40 - 0.45))) = -log sigmoid(0.75)
    expected = -math.log(1 / (1 + math.exp(-0.75)))
    loss, stats = diffusion_dpo_loss(ew, el, rw, rl, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["accuracy"] == 1.0  # the policy already denoises the winner better than the reference does


def test_grpo_advantages_are_zero_mean_per_group_and_the_clip_bites():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-5.0, -5.5, -4.0, -9.0]])
    a = group_advantages(r)
    assert torch.allclose(a.mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(a.std(1), torch.ones(2), atol=1e-3)
    adv = torch.tensor([1.0, -1.0])
    old = torch.zeros(2)
    far = torch.log(torch.tensor([2.0, 2.0]))  # ratio 2 for both
    loss = grpo_step_loss(far, old, adv, clip=0.2, kl=torch.zeros(2), kl_coef=0.0)
    # positive advantage: clipped at 1.2; negative: min(2 * -1, 1.2 * -1) = -2
    assert loss.item() == pytest.approx(-(1.2 - 2.0) / 2)


def _policy(seed: int = 0) -> tuple[VideoGenerator, LoraVideoGenerator]:
    torch.manual_seed(seed)
    base = VideoGenerator(tiny_cfg().generator.model)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    return frozen, LoraVideoGenerator(base, rank=4, alpha=4)


def test_dpo_moves_only_the_adapters_and_the_reference_never_changes(videos):  # noqa: F811
    frozen, policy = _policy()
    cfg = tiny_cfg("generator.prefer.steps=3", "generator.prefer.batch_size=2", "generator.prefer.beta=50",
                   "generator.prefer.lr=0.01").generator.prefer
    prompts = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2)
    assert len(prompts) == 2
    rng = np.random.default_rng(0)
    pairs = [PreferencePair(p, p.reference, (rng.random(p.reference.shape) * 255).astype(np.uint8), 1.0, ({}, {}))
             for p in prompts]
    x = torch.randn(1, 4, 3, 24, 32)
    cond = prompts[0].cond()[None]
    t = torch.tensor([30])
    with torch.no_grad(), policy.reference():
        ref_before = policy(x, t, cond)
    lora_before = [p.clone() for p in policy.lora_parameters()]
    hist = train_dpo(policy, pairs, cfg)
    assert len(hist) == 3 and all(np.isfinite(h["loss"]) for h in hist)
    assert any(not torch.equal(a, b) for a, b in zip(lora_before, policy.lora_parameters()))
    base_now = {k.replace("base_model.model.", "").replace(".base_layer.", "."): v
                for k, v in policy.peft.state_dict().items() if "lora_" not in k}
    for k, v in frozen.items():
        assert torch.equal(base_now[k], v), k
    with torch.no_grad(), policy.reference():
        assert torch.equal(policy(x, t, cond), ref_before)
    with torch.no_grad():
        assert not torch.allclose(policy(x, t, cond), ref_before)
        merged = policy.merged()
        assert torch.allclose(merged(x, t, cond), policy(x, t, cond), atol=1e-5)


def test_dpo_learns_to_prefer_the_winner(videos):  # noqa: F811
    """On fixed pairs, Diffusion-DPO lowers the policy's error on winners relative to losers (implicit accuracy up)."""
    _, policy = _policy(1)
    cfg = tiny_cfg("generator.prefer.steps=25", "generator.prefer.batch_size=2", "generator.prefer.beta=200",
                   "generator.prefer.lr=0.01").generator.prefer
    prompts = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2)
    rng = np.random.default_rng(1)
    pairs = [PreferencePair(p, p.reference, (rng.random(p.reference.shape) * 255).astype(np.uint8), 1.0, ({}, {}))
             for p in prompts]
    hist = train_dpo(policy, pairs, cfg)
    first, last = np.mean([h["loss"] for h in hist[:5]]), np.mean([h["loss"] for h in hist[-5:]])
    assert last < first - 0.05, (first, last)
    assert np.mean([h["accuracy"] for h in hist[-5:]]) > 0.7


def test_best_of_n_fine_tune_fits_the_winners_alone_and_keeps_the_reference(videos):  # noqa: F811
    """Reward-ranked fine-tuning: the policy's denoising error on the winners falls below the frozen reference's,
    the losers play no part (any loser gives the same steps), and only the adapters move."""
    cfg = tiny_cfg("generator.prefer.steps=20", "generator.prefer.batch_size=2", "generator.prefer.lr=0.01").generator.prefer
    prompts = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2)
    runs = []
    for loser_seed in (0, 1):
        frozen, policy = _policy(2)
        rng = np.random.default_rng(loser_seed)
        pairs = [PreferencePair(p, p.reference, (rng.random(p.reference.shape) * 255).astype(np.uint8), 1.0, ({}, {}))
                 for p in prompts]
        hist = train_best(policy, pairs, cfg)
        runs.append(hist)
        base_now = {k.replace("base_model.model.", "").replace(".base_layer.", "."): v
                    for k, v in policy.peft.state_dict().items() if "lora_" not in k}
        assert all(torch.equal(base_now[k], v) for k, v in frozen.items())
    assert runs[0] == runs[1]  # the loser is never read
    hist = runs[0]
    assert hist[0]["ref_gap_w"] == pytest.approx(0.0, abs=1e-7)  # step 1: the policy is the reference
    assert np.mean([h["ref_gap_w"] for h in hist[-5:]]) < -0.1 * np.mean([h["err_w"] for h in hist[-5:]])
    with pytest.raises(InputError, match="no preference pairs"):
        train_best(policy, [], cfg)


def test_grpo_runs_groups_with_shared_noise_and_keeps_the_reference(videos):  # noqa: F811
    frozen, policy = _policy(2)
    cfg = tiny_cfg("generator.prefer.steps=2", "generator.prefer.n=3", "generator.prefer.sample_steps=3",
                   "generator.prefer.grpo_timesteps=2", "generator.prefer.lr=0.01").generator.prefer
    prompts = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2)
    # a shared initial noise with eta = 0 gives identical videos; eta > 0 makes the group differ
    same, _ = sample_videos(policy, prompts[0], [1, 2, 3], steps=3, eta=0.0, shared_noise=5)
    assert (same == same[0]).all()
    diff, _ = sample_videos(policy, prompts[0], [1, 2, 3], steps=3, eta=1.0, shared_noise=5)
    assert not (diff == diff[0]).all()
    hist = train_grpo(policy, FlowJudge(upsample_to=64), prompts, cfg)
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) and h["kl"] >= 0 for h in hist)
    base_now = {k.replace("base_model.model.", "").replace(".base_layer.", "."): v
                for k, v in policy.peft.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_now[k], v) for k, v in frozen.items())


def test_judges_prefer_the_true_camera_motion(videos):  # noqa: F811
    """On a rendered clip that translates, the flow judge scores the true frames far better than a frozen or
    reversed video. (Not on the pure pan: an essential matrix is undefined without translation, and which wrong
    rotation RANSAC returns there depends on the OpenCV/numpy build — it was better than frozen on one machine
    and worse on a fresh one.)"""
    prompts = clip_prompts(sorted(videos.iterdir()), 4, 64, 48, per_video=1, stride=2)
    judge = FlowJudge()
    for p in prompts[:1]:  # v0: "truck right 0.4"
        true = judge_video(judge, p.reference, p.K, p.c2w)
        frozen = judge_video(judge, np.repeat(p.reference[:1], 4, 0), p.K, p.c2w)
        reverse = judge_video(judge, p.reference[::-1].copy(), p.K, p.c2w)
        assert true.reward() > frozen.reward() and true.reward() > reverse.reward(), (true, frozen, reverse)
    # the score itself: perfect poses -> 0 error; identity -> the commanded rotation
    c2w = prompts[1].c2w
    from vibe3r.geometry import relative_pose

    rel = [relative_pose(c2w[0], c2w[k]).numpy() for k in range(1, 4)]
    perfect = camera_score([(T[:3, :3], T[:3, 3]) for T in rel], c2w)
    assert perfect.rot_err < 1e-4 and perfect.failed == 0
    failed = camera_score([None] * 3, c2w)
    assert failed.failed == 3 and failed.rot_err > 1.0


def test_held_out_errors_average_each_prompts_videos_over_sampling_seeds(videos):  # noqa: F811
    """evaluate_generator with n_seeds = 2: a prompt's error is the mean of the judge's errors on its two videos,
    the first drawn with the single-seed evaluation's seed (so n_seeds = 1 is the earlier figure)."""
    from vibe3r.video_gen.prefer import evaluate_generator, judge_rewards

    _, policy = _policy(3)
    model = policy.merged()
    prompts = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2)
    judges = {"flow": FlowJudge()}
    one = evaluate_generator(model, prompts, judges, steps=2, seed=5)
    two = evaluate_generator(model, prompts, judges, steps=2, seed=5, n_seeds=2)
    for k, p in enumerate(prompts):
        vids = sample_videos(model, p, [5 * 7919 + k, 5 * 7919 + k + 100003], 2)[0]
        errs = [r["rot_err"] for r in judge_rewards(judges["flow"], p, vids, 0.25)]
        assert one["flow"]["rot_errs"][k] == pytest.approx(errs[0], abs=0.05)
        assert two["flow"]["rot_errs"][k] == pytest.approx(np.mean(errs), abs=0.05)  # batched with another seed: float order
    assert two["n_seeds"] == 2 and two["flow"]["rot_err"] == pytest.approx(np.mean(two["flow"]["rot_errs"]))


def test_pooled_reference_candidates_are_judged_and_recorded(videos, tmp_path):  # noqa: F811
    """With pool_reference the renderer's frames and the frozen clip join the samples; the judge ranks the true
    frames above the frozen clip, and the store says where each candidate came from."""
    from vibe3r.config import GeneratorPreferConfig
    from vibe3r.video_gen.prefer import collect_pairs

    torch.manual_seed(0)
    gen = VideoGenerator(tiny_cfg().generator.model)
    mc = gen.config
    prompts = clip_prompts(sorted(videos.iterdir()), mc.frames, mc.width, mc.height, per_video=1, stride=2)[:2]
    cfg = GeneratorPreferConfig(n=2, sample_steps=2, min_margin=0.0, pool_reference=True, trans_weight=0.5)
    with PreferenceStore(tmp_path / "p.sqlite") as st:
        pairs = collect_pairs(gen, FlowJudge(), prompts, cfg, st, round=1, model_version="v")
        rows = st.db.execute("SELECT prompt, seed, reward, meta FROM video_samples ORDER BY id").fetchall()
    assert len(rows) == 2 * 4 and len(pairs) == 2
    for k in range(2):
        by_source = {json.loads(r[3])["source"]: r for r in rows[4 * k:4 * k + 4]}
        assert set(by_source) == {"sample", "reference", "frozen"}
        assert by_source["reference"][2] > by_source["frozen"][2]  # reward: minus the rotation error


def test_guidance_pool_samples_each_scale_and_records_it(videos, tmp_path):  # noqa: F811
    """Candidates are drawn at the pool's camera guidance scales in turn; a candidate at scale 1 is the plain
    sample of its seed, and the store says which scale made each one."""
    from vibe3r.config import GeneratorPreferConfig
    from vibe3r.video_gen.prefer import collect_pairs, judge_rewards, sample_videos

    torch.manual_seed(0)
    gen = VideoGenerator(tiny_cfg().generator.model)
    mc = gen.config
    prompts = clip_prompts(sorted(videos.iterdir()), mc.frames, mc.width, mc.height, per_video=1, stride=2)[:1]
    cfg = GeneratorPreferConfig(n=4, sample_steps=2, min_margin=0.0, guidance_pool=[1.0, 3.0], trans_weight=0.5)
    with PreferenceStore(tmp_path / "p.sqlite") as st:
        pairs = collect_pairs(gen, FlowJudge(), prompts, cfg, st, round=1, model_version="v")
        rows = st.db.execute("SELECT seed, reward, meta FROM video_samples ORDER BY id").fetchall()
    assert [json.loads(r[2])["source"] for r in rows] == ["sample", "sample@g3", "sample", "sample@g3"]
    judge = FlowJudge()
    for seed, reward, meta in rows:  # each recorded reward is the judge's on the video its seed and scale redraw
        w = 3.0 if json.loads(meta)["source"].endswith("@g3") else 1.0
        vid = sample_videos(gen, prompts[0], [seed], cfg.sample_steps, guidance=w)[0]
        assert judge_rewards(judge, prompts[0], vid, cfg.trans_weight)[0]["reward"] == pytest.approx(reward)
    assert len(pairs) == 1 and pairs[0].margin > 0


def test_turned_cameras_differ_from_the_commanded_ones_by_the_stated_angle(videos):  # noqa: F811
    from vibe3r.geometry import relative_pose, rotation_error_deg
    from vibe3r.video_gen.prefer import jitter_cameras

    c2w = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2)[0].c2w
    turned = jitter_cameras(c2w, 6.0, seed=3)
    assert np.allclose(turned[0], c2w[0]) and np.allclose(turned[:, :3, 3], c2w[:, :3, 3])
    for f in range(1, 4):
        angle = rotation_error_deg(relative_pose(turned[0], turned[f])[:3, :3], relative_pose(c2w[0], c2w[f])[:3, :3])
        assert float(angle) == pytest.approx(6.0 * f / 3, abs=1e-3)
    assert not np.allclose(jitter_cameras(c2w, 6.0, seed=4), turned)  # the axis is the seed's


def test_turned_candidates_are_judged_against_the_commanded_cameras(videos, tmp_path):  # noqa: F811
    """With camera_jitter the second half of the candidates is sampled under turned cameras; every recorded
    reward is the judge's against the commanded cameras, and the store says which candidates were turned."""
    from vibe3r.config import GeneratorPreferConfig
    from vibe3r.video_gen.prefer import collect_pairs, jitter_cameras, judge_rewards, sample_videos

    torch.manual_seed(0)
    gen = VideoGenerator(tiny_cfg().generator.model)
    mc = gen.config
    p = clip_prompts(sorted(videos.iterdir()), mc.frames, mc.width, mc.height, per_video=1, stride=2)[0]
    cfg = GeneratorPreferConfig(n=4, sample_steps=2, min_margin=0.0, camera_jitter=8.0, trans_weight=0.5)
    with PreferenceStore(tmp_path / "p.sqlite") as st:
        pairs = collect_pairs(gen, FlowJudge(), [p], cfg, st, round=1, model_version="v")
        rows = st.db.execute("SELECT seed, reward, meta FROM video_samples ORDER BY id").fetchall()
    assert [json.loads(r[2])["source"] for r in rows] == ["sample", "sample", "sample@turned8", "sample@turned8"]
    turned = replace(p, c2w=jitter_cameras(p.c2w, 8.0, rows[0][0]))
    judge = FlowJudge()
    for seed, reward, meta in rows:
        vid = sample_videos(gen, turned if "turned" in meta else p, [seed], cfg.sample_steps)[0]
        assert judge_rewards(judge, p, vid, cfg.trans_weight)[0]["reward"] == pytest.approx(reward)
    assert len(pairs) == 1


def test_store_records_judged_videos_and_pairs(tmp_path):
    with PreferenceStore(tmp_path / "p.sqlite") as st:
        a = st.add_video_sample("v0@0", 1, "abc", 2, {"rot_err": 1.0, "reward": -1.0})
        b = st.add_video_sample("v0@0", 2, "abc", 2, {"rot_err": 5.0, "reward": -5.0})
        st.add_video_preference(a, b, 2, margin=4.0)
        with pytest.raises(Exception, match="itself"):
            st.add_video_preference(a, a, 2)
        prefs = st.video_preferences(round=2)
        assert len(prefs) == 1 and prefs[0]["chosen_seed"] == 1 and prefs[0]["margin"] == 4.0
        s = st.summary()
        assert s["video_preferences"] == 1 and s["video_samples_per_round"][2]["samples"] == 2


@needs_real
def test_room_videos_condition_on_the_reconstructed_key_frame(tmp_path):
    """Videos of a real room: the key frame is frame 0, the commanded cameras round-trip, frame 0's depth is kept."""
    from vibe3r.config import ReconModelConfig
    from vibe3r.recon.model import ReconModel
    from vibe3r.video_gen.room import room_videos
    from vibe3r.video_gen.video_io import read_video

    torch.manual_seed(0)
    ReconModel(ReconModelConfig(**TINY_MODEL)).save_pretrained(tmp_path / "recon")
    gen = VideoGenerator(tiny_cfg().generator.model)
    paths = room_videos(f"{REAL}/7scenes-redkitchen@0:12", tmp_path / "recon", gen, ["orbit left 20 radius 1.0", "dolly forward 0.4"],
                        tmp_path / "room", keys=2, steps=2)
    assert len(paths) == 4
    frames, K, c2w, depth, meta = read_video(paths[1])
    assert frames.shape == (4, 24, 32, 3) and meta["generated"] and meta["conditioned_on"]["frame"] == 0
    assert np.median(depth[0][depth[0] > 0]) == pytest.approx(2.0, rel=1e-3) and (depth[1:] == 0).all()
    assert np.linalg.norm(c2w[-1][:3, 3] - c2w[0][:3, 3]) == pytest.approx(0.4, rel=1e-3)  # dolly forward 0.4 m


def test_render_conditioned_prompts_carry_the_first_frames_geometry(videos):  # noqa: F811
    plain = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2)[0].cond()
    rendered = clip_prompts(sorted(videos.iterdir()), 4, 32, 24, per_video=1, stride=2, with_depth=True)[0].cond()
    assert plain[:, 9:].abs().max() == 0  # render + mask blank
    assert rendered[0, 12].mean() > 0.95 and rendered[-1, 12].mean() > 0.5  # the mask: the splat covers most of every frame
    assert torch.equal(plain[:, :9], rendered[:, :9])  # same first frame and rays


def test_prompts_without_depth_can_be_conditioned_on_a_plane(videos):  # noqa: F811
    """``generator.sample.plane_depth``: no depth known, the first frame as a plane that far is rendered into every
    commanded camera — exactly the first frame in camera 0; the prompt's own depth (with_depth) wins."""
    dirs = sorted(videos.iterdir())
    plain = clip_prompts(dirs, 4, 32, 24, per_video=1, stride=2)[0]
    plane = clip_prompts(dirs, 4, 32, 24, per_video=1, stride=2, plane_depth=2.0)[0]
    rendered = clip_prompts(dirs, 4, 32, 24, per_video=1, stride=2, with_depth=True, plane_depth=2.0)[0]
    assert plane.depth0.shape == (24, 32) and (plane.depth0 == 2.0).all()
    assert np.array_equal(rendered.depth0, clip_prompts(dirs, 4, 32, 24, per_video=1, stride=2, with_depth=True)[0].depth0)
    c = plane.cond()
    assert torch.equal(c[:, :9], plain.cond()[:, :9])  # same first frame and rays
    assert torch.allclose(c[0, 9:12], c[0, :3], atol=1e-6) and c[0, 12].min() == 1  # camera 0 sees the first frame itself
    assert c[-1, 12].mean() > 0.5 and not torch.allclose(c[-1, 9:12], c[0, 9:12])  # later cameras: the plane, moved
