"""Preference training of the video generator, judged by the reconstruction model (``vibe3r video prefer``).

A *prompt* here is what a video is generated from: a first frame and the commanded cameras (and, for
reconstruction-conditioned videos, the first frame's depth). For each prompt the current generator makes
``n`` videos from different noise; the judge (``video_gen.judge``) scores how well each follows its
cameras; the best and the worst (if their reward margin is large enough) become a preference pair,
recorded in the run's preference store (``video_*`` tables) beside the reconstruction preferences.

Two optimisers train LoRA adapters (peft) on the denoiser; the frozen base (adapters disabled) is the
reference, so the reference never changes:

* **Diffusion-DPO** (Wallace et al. 2023): winner and loser are noised with the *same* t and noise;
  with e = per-video mean squared prediction error, Δθ = eθ(w) − eθ(l), Δref likewise,
  ``loss = −log σ(−β/2 · (Δθ − Δref))``.
* **GRPO** (DDPO / Flow-GRPO style): a group of ``n`` stochastic DDIM rollouts (eta > 0) per prompt from
  a *shared* initial noise; group-relative advantages A = (r − mean) / (std + ε); per step the clipped
  likelihood-ratio objective on the Gaussian step densities, plus β_KL · KL(step‖reference step)
  (closed form for two Gaussians of equal variance: ||μθ − μref||² / 2σ²).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vibe3r.config import GeneratorPreferConfig as VideoPreferConfig
from vibe3r.errors import InputError
from vibe3r.video_gen.diffusion import VideoGenerator, conditioning, plane_depth_map, to_model_images

ADAPTER_CONFIG_NAME = "lora_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
LORA_TARGETS = r".*transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|.*transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)"


# --------------------------------------------------------------------------------------------
# LoRA on the denoiser
# --------------------------------------------------------------------------------------------


class LoraVideoGenerator(nn.Module):
    """A ``VideoGenerator`` with LoRA adapters on its attention and MLP layers; ``reference()`` is the base."""

    def __init__(self, base: VideoGenerator, rank: int = 8, alpha: float = 8.0, seed: int = 0) -> None:
        from peft import LoraConfig, get_peft_model

        super().__init__()
        for p in base.parameters():
            p.requires_grad_(False)
        cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0, bias="none")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.peft = get_peft_model(base, cfg)
        self.rank, self.alpha = rank, alpha

    @property
    def base_model(self) -> VideoGenerator:
        return self.peft.get_base_model()

    @property
    def config(self):  # noqa: ANN201
        return self.base_model.config

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.base_model(x_t, t, cond)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        with self.peft.disable_adapter():
            yield

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.peft.named_parameters() if "lora_" in n]

    def save_adapter(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        state = {n: p.detach().contiguous().clone() for n, p in self.peft.named_parameters() if "lora_" in n}
        save_file(state, str(out / ADAPTER_WEIGHTS_NAME))
        meta = {"rank": self.rank, "alpha": self.alpha, "base_model": self.config.model_dump()}
        (out / ADAPTER_CONFIG_NAME).write_text(json.dumps(meta, indent=1))
        return out

    def load_adapter(self, path: str | Path) -> None:
        state = load_file(str(Path(path) / ADAPTER_WEIGHTS_NAME))
        own = {n: p for n, p in self.peft.named_parameters() if "lora_" in n}
        if set(state) != set(own):
            raise InputError(f"adapter {path} does not fit this generator ({len(set(own) ^ set(state))} keys differ)")
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k])

    def merged(self) -> VideoGenerator:
        """A plain ``VideoGenerator`` with the adapters folded in (this model is unchanged)."""
        import copy

        from peft.tuners.lora import LoraLayer

        peft = copy.deepcopy(self.peft)
        for m in peft.modules():
            if isinstance(m, LoraLayer):
                m.merge()
        state = {k.replace(".base_layer.", "."): v for k, v in peft.get_base_model().state_dict().items() if "lora_" not in k}
        with torch.random.fork_rng(devices=[]):
            plain = VideoGenerator(self.config)
        plain.load_state_dict(state, strict=True)
        return plain.eval()


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def diffusion_dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """Wallace et al.'s Diffusion-DPO: −log σ(−β/2 · ((eθ(w) − eθ(l)) − (eref(w) − eref(l)))), mean over pairs."""
    inside = -0.5 * beta * ((err_w - err_l) - (ref_w - ref_l))
    loss = -F.logsigmoid(inside).mean()
    with torch.no_grad():
        stats = {"loss": float(loss), "accuracy": float((inside > 0).float().mean()),
                 "implicit_margin": float(inside.mean()), "err_w": float(err_w.mean()), "err_l": float(err_l.mean()),
                 "ref_gap_w": float((err_w - ref_w).mean()), "ref_gap_l": float((err_l - ref_l).mean())}
    return loss, stats


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(G, n) rewards -> (r − mean) / (std + ε) per group (row)."""
    return (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + eps)


def grpo_step_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float, kl: torch.Tensor,
                   kl_coef: float) -> torch.Tensor:
    """PPO-clip surrogate on per-step log-densities plus the KL penalty; mean over samples."""
    ratio = torch.exp(logp_new - logp_old)
    surr = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    return (-surr + kl_coef * kl).mean()


# --------------------------------------------------------------------------------------------
# prompts, sampling and judging
# --------------------------------------------------------------------------------------------


@dataclass
class VideoPrompt:
    """What a video is generated from."""

    name: str
    first_frame: np.ndarray  # uint8 (H, W, 3)
    K: np.ndarray  # (F, 3, 3)
    c2w: np.ndarray  # (F, 4, 4) commanded cameras
    depth0: np.ndarray | None = None
    reference: np.ndarray | None = None  # uint8 (F, H, W, 3) rendered frames for the same cameras, if known
    meta: dict[str, Any] = field(default_factory=dict)

    def cond(self) -> torch.Tensor:
        d0 = None if self.depth0 is None else torch.from_numpy(np.asarray(self.depth0, np.float32))
        return conditioning(to_model_images(self.first_frame), torch.from_numpy(self.K), torch.from_numpy(self.c2w), d0)


def clip_prompts(video_dirs: list[Path], frames: int, width: int, height: int, per_video: int = 2, stride: int = 3,
                 with_depth: bool = False, seed: int = 0, plane_depth: float | None = None) -> list[VideoPrompt]:
    """Prompts cut from rendered videos: first frame + the GT cameras of a ``frames``-frame clip at ``stride``;
    the rendered clip is kept as ``reference`` (the renderer's answer for the same cameras). ``with_depth``:
    the first frame's rendered depth conditions them; otherwise ``plane_depth`` (metres) a plane, else nothing."""
    from vibe3r.video_gen.diffusion import resize_depth, resize_frames
    from vibe3r.video_gen.video_io import read_video

    rng = np.random.default_rng(seed)
    out = []
    for d in video_dirs:
        fr, K, c2w, depth, meta = read_video(d)
        span = stride * (frames - 1)
        if len(fr) <= span:
            continue
        starts = np.linspace(0, len(fr) - 1 - span, per_video).round().astype(int) if per_video > 1 else [int(rng.integers(len(fr) - span))]
        for s in starts:
            idx = s + stride * np.arange(frames)
            f, Kr = resize_frames(fr[idx], K[idx], width, height)
            d0 = resize_depth(depth[idx[0]], width, height) if with_depth else \
                None if plane_depth is None else plane_depth_map(width, height, plane_depth)
            out.append(VideoPrompt(f"{Path(d).name}@{s}", f[0], Kr, c2w[idx], d0,
                                   reference=f, meta={"video": str(d), "start": int(s), "stride": stride,
                                                      "prompt": meta.get("prompt", "")}))
    return out


def jitter_cameras(c2w: np.ndarray, degrees: float, seed: int) -> np.ndarray:
    """The cameras turned away from ``c2w`` (F, 4, 4): frame f rotates about one random axis (in the camera's
    frame) by ``degrees`` · f / (F − 1), positions unchanged, so the first frame stays put and the relative
    rotation to frame f differs from the commanded one by exactly that angle."""
    import roma

    F_ = len(c2w)
    axis = np.random.default_rng(seed).normal(size=3)
    axis /= np.linalg.norm(axis)
    angles = np.deg2rad(degrees) * np.arange(F_) / max(F_ - 1, 1)
    R_extra = roma.rotvec_to_rotmat(torch.as_tensor(angles[:, None] * axis[None], dtype=torch.float64)).numpy()
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[:, :3, :3] = out[:, :3, :3] @ R_extra
    return out.astype(np.asarray(c2w).dtype)


def sample_videos(model: nn.Module, prompt: VideoPrompt, seeds: list[int], steps: int, eta: float = 0.0,
                  shared_noise: int | None = None, keep_trajectory: bool = False, guidance: float = 1.0
                  ) -> tuple[np.ndarray, list]:
    """``len(seeds)`` videos of one prompt (batched). ``shared_noise``: every video starts from the same
    x_T (GRPO's group), the seeds then drive the stochastic steps; ``guidance``: camera guidance
    (``VideoGenerator.predict_x0``). Returns uint8 (n, F, H, W, 3) and the per-video trajectories when asked."""
    from vibe3r.video_gen.diffusion import to_uint8

    gen = model.base_model if isinstance(model, LoraVideoGenerator) else model
    cond = prompt.cond()
    n = len(seeds)
    shape = (1 if shared_noise is not None else n, *cond.shape[:1], 3, *cond.shape[-2:])
    if shared_noise is not None:
        x_T = torch.randn(shape, generator=torch.Generator().manual_seed(shared_noise)).expand(n, *shape[1:]).clone()
    else:
        x_T = torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(s)) for s in seeds])
    g = torch.Generator().manual_seed(int(np.random.default_rng(seeds).integers(2**62)))
    x, traj = gen.sample(cond[None].expand(n, *cond.shape), steps=steps, eta=eta, generator=g, x_T=x_T,
                         keep_trajectory=keep_trajectory, guidance=guidance)
    vids = to_uint8(x)
    vids[:, 0] = prompt.first_frame
    return vids, traj


def judge_rewards(judge: Any, prompt: VideoPrompt, videos: np.ndarray, trans_weight: float) -> list[dict[str, Any]]:
    from vibe3r.video_gen.judge import judge_video

    out = []
    for v in videos:
        s = judge_video(judge, v, prompt.K, prompt.c2w)
        out.append({**{k: val for k, val in s.as_dict().items() if k != "per_frame_rot"}, "reward": s.reward(trans_weight)})
    return out


# --------------------------------------------------------------------------------------------
# trainers
# --------------------------------------------------------------------------------------------


@dataclass
class PreferencePair:
    prompt: VideoPrompt
    winner: np.ndarray  # uint8 (F, H, W, 3)
    loser: np.ndarray
    margin: float
    rewards: tuple[dict, dict]


def collect_pairs(model: VideoGenerator, judge: Any, prompts: list[VideoPrompt], cfg: VideoPreferConfig,
                  store: Any = None, round: int = 0, model_version: str = "", progress: Any = None) -> list[PreferencePair]:
    """n videos per prompt from ``model`` at the camera guidance scales of ``guidance_pool`` in turn (with
    ``camera_jitter``: the second half under cameras turned away from the commanded ones; with
    ``pool_reference``: plus the renderer's frames and the frozen clip), all judged against the commanded
    cameras; best vs worst when the reward margin ≥ ``min_margin``."""
    pairs = []
    scales = [cfg.guidance_pool[i % len(cfg.guidance_pool)] for i in range(cfg.n)]
    jittered = [cfg.camera_jitter > 0 and i >= cfg.n - cfg.n // 2 for i in range(cfg.n)]
    for k, p in enumerate(prompts):
        seeds = [cfg.seed * 1_000_003 + k * 101 + i for i in range(cfg.n)]
        vids = np.empty((cfg.n, len(p.c2w), *p.first_frame.shape), np.uint8)
        turned = replace(p, c2w=jitter_cameras(p.c2w, cfg.camera_jitter, seeds[0])) if cfg.camera_jitter > 0 else p
        for w, j in sorted(set(zip(scales, jittered))):  # one batch per guidance scale and camera set
            idx = [i for i in range(cfg.n) if (scales[i], jittered[i]) == (w, j)]
            vids[idx] = sample_videos(model, turned if j else p, [seeds[i] for i in idx], cfg.sample_steps, guidance=w)[0]
        sources = [("sample" if w == 1.0 else f"sample@g{w:g}") + (f"@turned{cfg.camera_jitter:g}" if j else "")
                   for w, j in zip(scales, jittered)]
        if cfg.pool_reference:  # off-policy candidates: the renderer's answer, and not moving at all
            extra = ([p.reference] if p.reference is not None else []) + [np.repeat(p.first_frame[None], len(p.c2w), 0)]
            sources += (["reference"] if p.reference is not None else []) + ["frozen"]
            seeds = seeds + [-1 - i for i in range(len(extra))]
            vids = np.concatenate([vids, np.stack(extra)])
        rw = judge_rewards(judge, p, vids, cfg.trans_weight)
        r = np.array([x["reward"] for x in rw])
        ids = None
        if store is not None:
            ids = [store.add_video_sample(p.name, s, model_version, round, rw[i], meta={**p.meta, "source": sources[i]})
                   for i, s in enumerate(seeds)]
        b, w = int(np.argmax(r)), int(np.argmin(r))
        if r[b] - r[w] >= cfg.min_margin:
            pairs.append(PreferencePair(p, vids[b], vids[w], float(r[b] - r[w]), (rw[b], rw[w])))
            if store is not None:
                store.add_video_preference(ids[b], ids[w], round, margin=float(r[b] - r[w]))
        if progress is not None:
            progress(k + 1, len(prompts))
    return pairs


class NoPreferencePairs(InputError):
    """Every prompt's videos were judged within ``min_margin`` of each other: nothing for DPO to learn."""


def _fit_pairs(policy: LoraVideoGenerator, pairs: list[PreferencePair], cfg: VideoPreferConfig, objective: Any,
               log: Any = None, losers: bool = True) -> list[dict[str, float]]:
    """The loop shared by the pair trainers: ``cfg.steps`` AdamW steps on the adapters, each on ``cfg.batch_size``
    seeded pairs with one t and noise per pair; ``objective(c, w, l, t, noise) -> (loss, stats)`` (``l`` None
    without ``losers``)."""
    if not pairs:
        raise NoPreferencePairs("no preference pairs: every prompt's videos were judged within min_margin of each other")
    opt = torch.optim.AdamW(policy.lora_parameters(), lr=cfg.lr, weight_decay=0.0)
    conds = [p.prompt.cond() for p in pairs]
    xw = [to_model_images(p.winner) for p in pairs]
    xl = [to_model_images(p.loser) for p in pairs] if losers else None
    rng = np.random.default_rng(cfg.seed)
    history = []
    for step in range(cfg.steps):
        idx = rng.choice(len(pairs), size=min(cfg.batch_size, len(pairs)), replace=False)
        c, w = torch.stack([conds[i] for i in idx]), torch.stack([xw[i] for i in idx])
        l = torch.stack([xl[i] for i in idx]) if xl is not None else None  # noqa: E741
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        t = torch.randint(0, policy.base_model.config.train_timesteps, (len(idx),), generator=g)
        noise = torch.randn(w.shape, generator=g)
        loss, stats = objective(c, w, l, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stats["step"] = step + 1
        history.append(stats)
        if log is not None:
            log(stats)
    return history


def train_dpo(policy: LoraVideoGenerator, pairs: list[PreferencePair], cfg: VideoPreferConfig, log: Any = None
              ) -> list[dict[str, float]]:
    """Diffusion-DPO steps on judged pairs (the same t and noise for winner and loser); only the adapters move."""
    gen = policy.base_model

    def objective(c, w, l, t, noise):  # noqa: ANN001, ANN202, E741
        x0, cc, tt, nn_ = torch.cat([w, l]), torch.cat([c, c]), torch.cat([t, t]), torch.cat([noise, noise])
        with torch.no_grad(), policy.reference():
            ref = gen.denoising_error(x0, cc, tt, nn_)
        err = gen.denoising_error(x0, cc, tt, nn_)
        b = len(w)
        loss, stats = diffusion_dpo_loss(err[:b], err[b:], ref[:b], ref[b:], cfg.beta)
        if cfg.sft_weight > 0:
            loss = loss + cfg.sft_weight * err[:b].mean() / ref[:b].mean().clamp_min(1e-8)
            stats["total_loss"] = float(loss.detach())
        return loss, stats

    return _fit_pairs(policy, pairs, cfg, objective, log)


def train_best(policy: LoraVideoGenerator, pairs: list[PreferencePair], cfg: VideoPreferConfig, log: Any = None
               ) -> list[dict[str, float]]:
    """Reward-ranked fine-tuning (RAFT): the denoising loss on each pair's winner (the prompt's best-judged
    sample, a margin ahead of its worst) under the commanded cameras; the loser is not used. Only the adapters
    move. Logs the winners' error and its gap to the frozen reference's on the same t and noise."""
    gen = policy.base_model

    def objective(c, w, l, t, noise):  # noqa: ANN001, ANN202, E741, ARG001
        err = gen.denoising_error(w, c, t, noise)
        with torch.no_grad(), policy.reference():
            ref = gen.denoising_error(w, c, t, noise)
        loss = err.mean()
        return loss, {"loss": float(loss.detach()), "err_w": float(err.mean().detach()), "ref_gap_w": float((err.detach() - ref).mean())}

    return _fit_pairs(policy, pairs, cfg, objective, log, losers=False)


PAIR_TRAINERS = {"dpo": train_dpo, "best": train_best}  # the methods that train on judged pairs (collect_pairs)


def train_grpo(policy: LoraVideoGenerator, judge: Any, prompts: list[VideoPrompt], cfg: VideoPreferConfig, log: Any = None,
               store: Any = None, round: int = 0, model_version: str = "") -> list[dict[str, float]]:
    """GRPO over ``cfg.steps`` groups (prompts cycled): rollouts with shared x_T, judged, clipped ratio + KL."""
    opt = torch.optim.AdamW(policy.lora_parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = policy.base_model
    rng = np.random.default_rng(cfg.seed)
    history = []
    for step in range(cfg.steps):
        p = prompts[step % len(prompts)]
        seeds = [cfg.seed * 1_000_003 + step * 101 + i for i in range(cfg.n)]
        vids, traj = sample_videos(policy, p, seeds, cfg.sample_steps, eta=cfg.eta, shared_noise=int(rng.integers(2**31)),
                                   keep_trajectory=True)
        rw = judge_rewards(judge, p, vids, cfg.trans_weight)
        r = torch.tensor([x["reward"] for x in rw], dtype=torch.float32)
        if store is not None:
            for i, s in enumerate(seeds):
                store.add_video_sample(p.name, s, model_version, round, rw[i], meta={**p.meta, "grpo_step": step})
        adv = group_advantages(r[None])[0]
        ts = gen.timesteps(cfg.sample_steps)
        c1 = p.cond()
        cond = c1[None].expand(cfg.n, *c1.shape)
        # the rollout's log-densities under the sampling policy (old = current before this group's update)
        chosen = sorted(rng.choice(len(ts), size=min(cfg.grpo_timesteps, len(ts)), replace=False).tolist())
        with torch.no_grad():
            old = {k: gen.ddim_step(traj[k], ts[k], ts[k + 1] if k + 1 < len(ts) else -1, cond, cfg.eta, prev=traj[k + 1]).log_prob
                   for k in chosen}
        stats_acc: dict[str, list[float]] = {"loss": [], "kl": [], "ratio": []}
        for _ in range(cfg.grpo_epochs):
            for k in chosen:
                t_prev = ts[k + 1] if k + 1 < len(ts) else -1
                new = gen.ddim_step(traj[k], ts[k], t_prev, cond, cfg.eta, prev=traj[k + 1])
                if new.std == 0:
                    continue
                with torch.no_grad(), policy.reference():
                    ref = gen.ddim_step(traj[k], ts[k], t_prev, cond, cfg.eta, prev=traj[k + 1])
                kl = (new.mean - ref.mean).square().flatten(1).mean(1) / (2 * new.std ** 2)
                loss = grpo_step_loss(new.log_prob, old[k], adv, cfg.clip, kl, cfg.kl) / len(chosen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                stats_acc["loss"].append(float(loss.detach()) * len(chosen))
                stats_acc["kl"].append(float(kl.mean().detach()))
                stats_acc["ratio"].append(float(torch.exp(new.log_prob.detach() - old[k]).mean()))
        stats = {k: float(np.mean(v)) if v else math.nan for k, v in stats_acc.items()}
        stats.update(step=step + 1, reward_mean=float(r.mean()), reward_std=float(r.std()),
                     rot_err=float(np.mean([x["rot_err"] for x in rw])))
        history.append(stats)
        if log is not None:
            log(stats)
    return history


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def evaluate_generator(model: nn.Module, prompts: list[VideoPrompt], judges: dict[str, Any], steps: int, seed: int = 0,
                       trans_weight: float = 0.25, guidance: float = 1.0, n_seeds: int = 1) -> dict[str, Any]:
    """Camera error by each judge, PSNR to the rendered frames (frames 1..F-1) and pixel statistics, on
    deterministic DDIM samples (the same seeds for every model compared; ``guidance``: camera guidance).

    ``n_seeds`` videos per prompt (seeds ``seed * 7919 + k + 100003 * s``; the first is the single-seed draw): a
    prompt's errors are the means over its videos. One draw per prompt is a noisy figure: a fine-tune that
    barely moves the weights still changes every sample, and a model's mean flow-judge error over 40 prompts
    moves by ±0.2° between sampling seeds (bench/video.md, session 17)."""
    per: dict[str, list] = {name: [] for name in judges}
    ps, stats = [], []
    t0 = time.perf_counter()
    for k, p in enumerate(prompts):
        vids = sample_videos(model, p, [seed * 7919 + k + 100003 * s for s in range(n_seeds)], steps, guidance=guidance)[0]
        for name, j in judges.items():
            rw = judge_rewards(j, p, vids, trans_weight)
            per[name].append({m: float(np.nanmean([r[m] for r in rw])) if np.isfinite([r[m] for r in rw]).any() else math.nan
                              for m in ("rot_err", "trans_err", "cam_mc", "reward")} | {"failed": sum(r["failed"] for r in rw)})
        for vid in vids:
            if p.reference is not None:
                ps.append(psnr(vid[1:], p.reference[1:]))
            stats.append([float(vid[1:].mean()), float(vid[1:].std()),
                          float(np.abs(np.diff(vid.astype(np.float32), axis=0)).mean())])
    out: dict[str, Any] = {"n": len(prompts), "n_seeds": n_seeds, "seconds": time.perf_counter() - t0}
    for name, rows in per.items():
        vals = {m: np.array([r[m] for r in rows], float) for m in ("rot_err", "trans_err", "cam_mc", "reward")}
        out[name] = {m: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for m, v in vals.items()}
        out[name]["rot_err_median"] = float(np.median([r["rot_err"] for r in rows]))
        out[name]["rot_errs"] = [float(r["rot_err"]) for r in rows]  # per prompt, for paired comparisons
        out[name]["failed_frames"] = int(sum(r["failed"] for r in rows))
    if ps:
        out["psnr_to_render"] = float(np.mean(ps))
    s = np.array(stats)
    out["pixel_mean"], out["pixel_std"], out["temporal_change"] = (float(x) for x in s.mean(0))
    return out


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def prompts_from(data: str | Path | list, cfg: VideoPreferConfig, width: int, height: int, frames: int,
                 plane_depth: float | None = None) -> list[VideoPrompt]:
    """``cfg.prompts`` prompts spread evenly over the video folders under ``data`` (one clip per video first);
    ``plane_depth``: how prompts without depth are conditioned (``clip_prompts``)."""
    from vibe3r.video_gen.gen_train import find_videos

    dirs = find_videos(data)
    per_video = max(1, math.ceil(cfg.prompts / len(dirs)))
    out = clip_prompts(dirs, frames, width, height, per_video=per_video, stride=cfg.stride, with_depth=cfg.with_render,
                       seed=cfg.seed, plane_depth=plane_depth)
    if not out:
        raise InputError(f"no video under {data} has {cfg.stride * (frames - 1) + 1} frames for a prompt clip")
    pick = np.linspace(0, len(out) - 1, min(cfg.prompts, len(out))).round().astype(int)
    return [out[i] for i in pick]


def run_prefer(cfg: VideoPreferConfig, ckpt: str | Path, judge_ckpt: str | Path, data: str | Path | list, out: str | Path,
               store_path: str | Path | None = None, round: int = 0, progress: bool = True,
               plane_depth: float | None = None) -> dict[str, Any]:
    """Sample, judge, record and preference-train the generator; writes OUT/adapter, OUT/model (merged,
    a ``VideoGenerator`` checkpoint), OUT/history.jsonl, OUT/tb and the store (default OUT/preferences.sqlite).
    ``plane_depth``: prompts without depth are conditioned on a plane that far (``generator.sample.plane_depth``)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from torch.utils.tensorboard import SummaryWriter

    from vibe3r.preference.store import PreferenceStore
    from vibe3r.video_gen.judge import ReconJudge

    out = Path(out)
    if (out / "model" / "model.safetensors").is_file():
        raise InputError(f"{out} already holds a preference-trained generator; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    from vibe3r.video_gen.generate import checkpoint_id

    base = VideoGenerator.from_pretrained(ckpt)
    version = checkpoint_id(ckpt)
    mc = base.config
    prompts = prompts_from(data, cfg, mc.width, mc.height, mc.frames, plane_depth=plane_depth)
    judge = ReconJudge(judge_ckpt)
    torch.manual_seed(cfg.seed)
    policy = LoraVideoGenerator(base, cfg.rank, cfg.alpha, cfg.seed)
    writer = SummaryWriter(str(out / "tb"))
    hist_f = (out / "history.jsonl").open("w")

    def log(stats: dict[str, float]) -> None:
        for k, v in stats.items():
            if k != "step" and isinstance(v, float) and math.isfinite(v):
                writer.add_scalar(f"{cfg.method}/{k}", v, stats["step"])
        hist_f.write(json.dumps(stats) + "\n")
        hist_f.flush()

    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn())
    t0 = time.perf_counter()
    with PreferenceStore(store_path or out / "preferences.sqlite") as store, Progress(*cols, disable=not progress) as bar:
        if cfg.method in PAIR_TRAINERS:
            task = bar.add_task("sample + judge", total=len(prompts))
            pairs = collect_pairs(base, judge, prompts, cfg, store, round, version, progress=lambda k, n: bar.update(task, completed=k))
            task = bar.add_task("diffusion-dpo" if cfg.method == "dpo" else "best-of-n fine-tune", total=cfg.steps)
            history = PAIR_TRAINERS[cfg.method](policy, pairs, cfg, log=lambda s: (log(s), bar.advance(task)))
            info = {"pairs": len(pairs), "mean_margin": float(np.mean([p.margin for p in pairs]))}
        else:
            task = bar.add_task("grpo", total=cfg.steps)
            history = train_grpo(policy, judge, prompts, cfg, log=lambda s: (log(s), bar.advance(task)), store=store,
                                 round=round, model_version=version)
            info = {"groups": cfg.steps}
    hist_f.close()
    writer.close()
    policy.save_adapter(out / "adapter")
    policy.merged().save_pretrained(out / "model")
    summary = {"method": cfg.method, "base": str(ckpt), "base_version": version, "judge": str(judge_ckpt),
               "prompts": len(prompts), "seconds": time.perf_counter() - t0, **info, "last": history[-1] if history else {}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
