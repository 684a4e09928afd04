"""Typed configuration: one pydantic model per section, YAML loading and ``--set`` overrides.

Every model rejects unknown keys (``extra="forbid"``) so a typo fails loudly with the list of
valid keys. The resolved config is written beside every output (``save_config``).

Sections:

* ``world``    procedural rooms, objects, textures, lighting (video_gen.world)
* ``render``   camera, image size, anti-aliasing and phone-like degradations (video_gen.render)
* ``prompts``  the prompt writer: task description -> motion-language prompts (video_gen.prompts)
* ``dataset``  videos -> training pairs by co-visibility, shards (video_gen.dataset)
* ``recon``    the pairwise reconstruction model and its training (recon)
* ``generator`` the learned camera-controlled video generator (video_gen.diffusion)
* ``loop``     rounds of generate -> train recon -> evaluate -> promote (loop)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem with a one-line, user-facing message."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# video_gen
# --------------------------------------------------------------------------------------------


class WorldConfig(Section):
    """Procedural rooms: sizes in metres, counts per room, texture sources."""

    room_size_min: tuple[float, float] = Field((3.0, 3.0), description="smallest room footprint (x, y) in m")
    room_size_max: tuple[float, float] = Field((7.0, 6.0), description="largest room footprint (x, y) in m")
    room_height: tuple[float, float] = Field((2.4, 3.0), description="ceiling height range in m")
    openings: tuple[int, int] = Field((1, 3), description="doors/windows cut into walls (min, max)")
    objects: tuple[int, int] = Field((5, 12), description="furniture-like objects per room (min, max)")
    clutter: tuple[int, int] = Field((15, 40), description="small clutter items per room (min, max)")
    decor: tuple[int, int] = Field((5, 12), description="posters, pictures and boards on the walls per room (min, max)")
    texture_dirs: list[str] = Field(
        default_factory=list,
        description="folders or files of photos (or real capture frames) to cut image textures from",
    )
    image_texture_prob: float = Field(0.6, ge=0, le=1, description="chance a surface uses an image texture when any are given")
    texture_res: int = Field(256, ge=16, description="texture resolution in texels per side (power of two)")
    wall_thickness: float = Field(0.12, gt=0, description="thickness of walls in m (visible in door and window reveals)")
    lights: tuple[int, int] = Field((1, 3), description="ceiling lights per room (min, max)")
    light_intensity: float = Field(1.0, gt=0, description="irradiance of the ceiling lights on the floor below them (linear units)")
    ambient: float = Field(0.35, ge=0, description="bounce-light irradiance relative to light_intensity")
    clearance: float = Field(0.3, ge=0, description="minimum distance of every camera centre from walls and objects in m")
    camera_height: tuple[float, float] = Field((1.2, 1.7), description="start height range of a camera path in m (handheld)")
    min_path_scale: float = Field(0.4, gt=0, le=1, description="a path that does not fit is shrunk down to this factor, then rejected")

    @model_validator(mode="after")
    def _ranges(self) -> WorldConfig:
        for name in ("room_height", "openings", "objects", "clutter", "decor", "lights", "camera_height"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: min {lo} > max {hi}")
        if any(a > b for a, b in zip(self.room_size_min, self.room_size_max, strict=True)):
            raise ValueError(f"room_size_min {self.room_size_min} exceeds room_size_max {self.room_size_max}")
        if min(self.room_size_min) < 1.0:
            raise ValueError(f"room_size_min {self.room_size_min}: rooms must be at least 1 m wide")
        if self.texture_res & (self.texture_res - 1):
            raise ValueError(f"texture_res must be a power of two, got {self.texture_res}")
        if self.lights[0] < 1:
            raise ValueError("lights: a room needs at least one light")
        return self


class DegradeConfig(Section):
    """Phone-like image degradations on colour only (GT stays exact); each strength 0 disables it."""

    noise_std: float = Field(0.01, ge=0, description="read-noise std on the exposed linear signal (mid-grey = exposure_key) at noise_ref_width")
    shot_noise: float = Field(0.001, ge=0, description="photon shot-noise gain (variance per unit linear signal) at noise_ref_width")
    noise_ref_width: int = Field(640, ge=8, description="sensor width the noise strengths refer to; narrower frames are downscaled sensor images, std x W/ref")
    motion_blur: float = Field(0.3, ge=0, le=1, description="exposure time as a fraction of the frame interval (blur length / inter-frame motion)")
    blur_step_px: float = Field(1.0, gt=0, description="max image motion in pixels between motion-blur time bins")
    blur_max_bins: int = Field(16, ge=1, description="cap on motion-blur shutter time bins (samples are spread over them; no extra cost)")
    exposure_drift: float = Field(0.1, ge=0, description="std of the smooth log-exposure random walk")
    auto_exposure: bool = Field(True, description="phone-like auto-exposure: log-average luminance mapped to exposure_key")
    exposure_key: float = Field(0.18, gt=0, description="auto-exposure target for the log-average linear luminance")
    ae_lag: float = Field(0.5, ge=0, lt=1, description="auto-exposure lag per frame (0 = instant, towards 1 = slow)")
    lens_blur: float = Field(0.4, ge=0, description="std in output pixels of a Gaussian lens point-spread function (0.4 matches the high-frequency energy of real 128-px frames)")
    vignetting: float = Field(0.3, ge=0, le=1, description="relative brightness loss at the image corners")
    jpeg_quality: int = Field(0, ge=0, le=100, description="JPEG round-trip quality; 0 disables")


class RenderConfig(Section):
    """Camera and image formation."""

    width: int = Field(64, ge=8, description="output width in pixels")
    height: int = Field(48, ge=8, description="output height in pixels")
    fov_deg: tuple[float, float] = Field((55.0, 70.0), description="horizontal field of view range in degrees")
    supersample: int = Field(2, ge=1, le=8, description="rays per pixel side for anti-aliasing (s*s rays per pixel)")
    fps: float = Field(10.0, gt=0, description="frame rate written into video.mp4")
    jitter: bool = Field(False, description="random sub-pixel/time sample positions per frame (True) or a fixed stratified pattern (no sampling noise between frames)")
    shadows: bool = Field(True, description="cast shadow rays to every light")
    ao_strength: float = Field(0.6, ge=0, le=1, description="ambient-occlusion darkening of the bounce light (0 disables the AO ray)")
    ao_distance: float = Field(0.5, gt=0, description="length of ambient-occlusion rays in m")
    ao_samples: int = Field(2, ge=0, description="ambient-occlusion rays per colour sample (stratified; less speckle)")
    shadow_samples: int = Field(1, ge=1, description="shadow rays per light per colour sample (stratified over the light's disc)")
    adaptive_supersample: int = Field(3, ge=0, le=8, description="edge pixels (samples disagree) get this many more rays per side (a*a); 0/1 disables")
    adaptive_threshold: float = Field(0.25, gt=0, description="relative luminance range among a pixel's samples that triggers adaptive supersampling")
    texture_lod_bias: float = Field(0.0, ge=-3, le=3, description="added to the mip level of texture lookups (<0 sharper, >0 blurrier)")
    threads: int = Field(1, ge=1, description="frames shaded in parallel threads (helps when other processes leave cores idle; open3d already uses all cores)")
    max_rays: int = Field(400_000, ge=1000, description="rays per open3d cast call (frames are batched up to this)")
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)


class PromptsConfig(Section):
    """Prompt writer: a one-line task turned into many motion-language prompts."""

    task: str = Field("indoor rooms, slow handheld motion, small rotations", description="one-line description")
    n: int = Field(8, ge=1, description="number of prompts")
    lm_path: str | None = Field(None, description="local transformers causal LM folder; templates when unset")
    max_frames: int = Field(120, ge=2, description="longest video a prompt may ask for, in frames")
    seed: int = 0


class DatasetConfig(Section):
    """Videos -> training pairs."""

    n_videos: int = Field(4, ge=1, description="videos rendered (one scene seed each)")
    scene_seed_start: int = Field(1000, description="first scene seed; held-out evaluation uses seeds < 1000")
    pairs_per_video: int = Field(64, ge=1, description="pairs drawn per video")
    covis_min: float = Field(0.3, ge=0, le=1, description="minimum co-visibility of a pair")
    covis_max: float = Field(0.95, ge=0, le=1, description="maximum co-visibility of a pair (skip near-duplicates)")
    covis_tol: float = Field(0.02, gt=0, description="relative depth tolerance deciding co-visibility")
    covis_stride: int = Field(2, ge=1, description="pixel stride when estimating co-visibility (speed)")
    max_gap: int | None = Field(60, ge=1, description="largest frame gap of a pair; None for any")
    shard_size: int = Field(256, ge=1, description="pairs per shard file")
    seed: int = 0

    @model_validator(mode="after")
    def _range(self) -> DatasetConfig:
        if self.covis_min > self.covis_max:
            raise ValueError(f"covis_min ({self.covis_min}) > covis_max ({self.covis_max})")
        return self


# --------------------------------------------------------------------------------------------
# recon (owned by the reconstruction stage)
# --------------------------------------------------------------------------------------------


class WarpConfig(Section):
    """Warp pairs (``video_gen.warp``): a real frame re-rendered from new cameras near it through a depth
    map of it. Angles in degrees, distances in units of the frame's median depth."""

    views_per_frame: int = Field(2, ge=1, description="renders per real frame (each paired with the frame)")
    orbit_deg: tuple[float, float] = Field((4.0, 22.0), description="range of the camera's rotation about the point at the median depth on the optical axis")
    roll_deg: float = Field(4.0, ge=0, description="std of an extra roll about the optical axis")
    look_jitter_deg: float = Field(4.0, ge=0, description="std of an extra pan and tilt away from that point")
    dolly: float = Field(0.15, ge=0, description="move along the new optical axis, uniform in +-dolly")
    max_grazing_deg: float = Field(84.0, gt=0, lt=90, description="a surface triangle seen more obliquely than this (judged from its depth step per pixel) is a tear")
    min_valid: float = Field(0.45, ge=0, le=1, description="a render with less of its area supervised (not a hole) is dropped")
    gain: float = Field(0.15, ge=0, lt=1, description="render brightness x U(1-gain, 1+gain)")
    gamma: float = Field(0.1, ge=0, lt=1, description="render gamma U(1-gamma, 1+gamma)")
    blur_sigma: float = Field(0.7, ge=0, description="render blur sigma U(0, blur_sigma), output pixels")
    noise: float = Field(2.0, ge=0, description="render Gaussian noise std, 8-bit levels")


class ReconModelConfig(Section):
    """The pairwise network (``recon.model.ReconModel``); saved as the checkpoint's ``config.json``.

    Image sides must be multiples of ``patch_size``. ``stem`` picks how pixels become tokens:
    ``patch`` a ViT patch embedding (one strided conv), ``cnn`` a small conv stack halving the
    resolution log2(patch_size) times (learns local descriptors fast on CPU). A ``cnn`` stem with
    ``enc_depth`` > 0 is the hybrid (CNN then ViT); ``enc_depth`` = 0 a pure CNN encoder.
    """

    arch: str = Field("vibe3r-pair-v1", description="architecture id checked when loading a checkpoint")
    patch_size: int = Field(8, ge=2, description="token stride in pixels (a power of two)")
    stem: Literal["patch", "cnn"] = Field("cnn", description="patch | cnn: how pixels become tokens")
    cnn_channels: list[int] = Field([32, 64, 96], description="CNN stem widths, one per stride-2 stage (len = log2(patch_size))")
    enc_dim: int = Field(192, ge=8, description="encoder token width")
    enc_depth: int = Field(4, ge=0, description="encoder transformer blocks (shared by both views)")
    enc_heads: int = Field(3, ge=1, description="encoder attention heads")
    dec_dim: int = Field(128, ge=8, description="decoder token width")
    dec_depth: int = Field(2, ge=0, description="decoder blocks (self-attn + cross-attn to the other view + MLP), one stack per view")
    dec_heads: int = Field(4, ge=1, description="decoder attention heads")
    mlp_ratio: float = Field(4.0, gt=0, description="hidden width of transformer MLPs relative to the token width")
    pos_emb: Literal["rope", "none"] = Field("rope", description="rope (2D RoPE, any image size) | none")
    rope_freq: float = Field(100.0, gt=0, description="RoPE base frequency (CroCo uses 100)")
    head_channels: int = Field(64, ge=4, description="width of the upsampling head (descriptors and conv pointmaps)")
    desc_dim: int = Field(32, ge=2, description="dense descriptor dimension (L2-normalised)")
    desc_stride: int = Field(2, ge=1, description="descriptor resolution: 1 = full, 2 = half (power of two <= patch)")
    share_desc_head: bool = Field(True, description="one descriptor head for both views (siamese) instead of one per view")
    pts_head: Literal["linear", "conv"] = Field("linear", description="linear (DUSt3R linear head, pixel shuffle) | conv (from the upsampling head)")
    depth_mode: Literal["exp", "linear"] = Field("exp", description="pointmap activation: exp (xyz/|xyz| * expm1(|xyz|), DUSt3R) | linear")
    conf_min: float = Field(1.0, ge=0, description="confidence = conf_min + exp(c) (DUSt3R: 1)")

    @model_validator(mode="after")
    def _check(self) -> ReconModelConfig:
        p = self.patch_size
        if p & (p - 1):
            raise ValueError(f"patch_size must be a power of two, got {p}")
        if self.stem == "cnn" and len(self.cnn_channels) != p.bit_length() - 1:
            raise ValueError(f"cnn_channels needs {p.bit_length() - 1} entries for patch_size {p}, got {len(self.cnn_channels)}")
        s = self.desc_stride
        if s & (s - 1) or s > p:
            raise ValueError(f"desc_stride must be a power of two <= patch_size, got {s}")
        for dim, heads, name in ((self.enc_dim, self.enc_heads, "enc"), (self.dec_dim, self.dec_heads, "dec")):
            if dim % heads or (self.pos_emb == "rope" and (dim // heads) % 4):
                raise ValueError(f"{name}_dim/{name}_heads must be an integer (a multiple of 4 with rope): {dim}/{heads}")
        return self


class ReconLossConfig(Section):
    """Training objective: ``w_regr * ConfLoss(Regr3D(L21, norm)) + w_match * InfoNCE`` (recon.losses)."""

    regr_weight: float = Field(1.0, ge=0, description="weight of DUSt3R's confidence-aware pointmap regression")
    conf_alpha: float = Field(0.2, ge=0, description="ConfLoss alpha: loss = conf * l - alpha * log(conf)")
    norm_mode: Literal["avg_dis", "none"] = Field("avg_dis", description="pointmap normalisation: avg_dis (mean distance to the origin of view 1) | none")
    match_weight: float = Field(1.0, ge=0, description="weight of MASt3R's InfoNCE matching loss")
    temperature: float = Field(0.07, gt=0, description="InfoNCE temperature on cosine similarities")
    match_samples: int = Field(512, ge=1, description="ground-truth correspondences sampled per pair")
    neg_samples: int = Field(0, ge=0, description="negatives per view (random positions); 0 = every descriptor of the other view")
    match_tol: float = Field(0.05, gt=0, description="relative depth tolerance deciding that a correspondence is visible in both views")


class ReconTrainConfig(Section):
    """Optimisation, logging and in-training evaluation (recon.train)."""

    steps: int = Field(2000, ge=1, description="optimiser steps")
    batch_size: int = Field(8, ge=1, description="pairs per step")
    lr: float = Field(3e-4, gt=0, description="peak AdamW learning rate")
    min_lr: float = Field(1e-5, ge=0, description="cosine floor")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (not on norms, biases)")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0 disables")
    bf16: bool = Field(False, description="bf16 autocast on CPU")
    threads: int = Field(2, ge=1, description="torch CPU threads")
    num_workers: int = Field(0, ge=0, description="DataLoader workers")
    swap_prob: float = Field(0.5, ge=0, le=1, description="chance of swapping the two views of a pair (symmetrisation)")
    color_jitter: float = Field(0.0, ge=0, le=1, description="per-image brightness/contrast/saturation jitter strength (sim-to-real)")
    max_cpu_minutes: float = Field(0.0, ge=0, description="stop after this much process CPU time (the cosine follows it); 0 = steps only")
    log_every: int = Field(10, ge=1, description="steps between TensorBoard scalars")
    ckpt_every: int = Field(200, ge=1, description="steps between checkpoints (and at the end)")
    eval_every_min: float = Field(0.0, ge=0, description="CPU-minutes between real-pair evaluations; 0 disables")
    eval_pairs: list[str] = Field(default_factory=list, description="SuperGlue pair lists evaluated during training")
    eval_size: int = Field(128, ge=16, description="longer image side for the in-training evaluation")
    eval_ransac: list[str] = Field(["ransac"], description="essential-matrix estimators evaluated (ransac = SuperGlue protocol, usac_accurate, magsac)")
    seed: int = Field(0, description="seed of weights init, data order and loss sampling")


class ReconConfig(Section):
    """Pairwise reconstruction model + training."""

    model: ReconModelConfig = Field(default_factory=ReconModelConfig)
    loss: ReconLossConfig = Field(default_factory=ReconLossConfig)
    train: ReconTrainConfig = Field(default_factory=ReconTrainConfig)


# --------------------------------------------------------------------------------------------
# loop (owned by the orchestrator)
# --------------------------------------------------------------------------------------------


class LoopConfig(Section):
    """Rounds of the self-improvement loop (``vibe3r loop iterate``).

    Every round renders new procedural videos (scene seeds after the previous rounds'), fine-tunes the
    live reconstruction checkpoint on them plus a replay of older rounds' videos, evaluates it on a
    fixed held-out set (synthetic pairs with scene seeds < 1000 and a subset of the real evaluation
    pairs) and promotes it unless ``promote_metric`` regresses by more than ``promote_tolerance``.
    """

    rounds: int = Field(1, ge=1, description="rounds per `loop iterate` call (an interrupted round counts as the first)")
    stages: list[str] | None = Field(None, description="stage names run each round, in the registry's order; None = every registered stage")
    base_checkpoint: str | None = Field("weights/recon-base", description="checkpoint the first round fine-tunes (relative paths: cwd, then the project folder); None = a fresh model from recon.model")
    recipe: Literal["checkpoint", "config"] = Field(
        "checkpoint", description="loss and optimiser settings: checkpoint = the live checkpoint's train_config.yaml (its own recipe; this config's recon section when absent), config = this config's recon section")
    image_size: tuple[int, int] | None = Field((128, 96), description="(width, height) of the loop's rendered videos; None = render.width/height")
    videos_per_round: int = Field(6, ge=1, description="procedural videos rendered per round (one shard each)")
    pairs_per_video: int = Field(48, ge=1, description="co-visible training pairs drawn per video")
    max_frames: int = Field(48, ge=2, description="longest video the prompt writer may ask for in a round (rendering time is per frame)")
    scene_seed_start: int = Field(2000, ge=1000, description="first scene seed of round 1 (later rounds continue after it; the base checkpoint saw 1000-1039, held-out uses < 1000)")
    train_steps: int = Field(120, ge=1, description="fine-tuning steps per round (batch size from the recipe)")
    lr: float = Field(2e-4, gt=0, description="peak learning rate of the per-round fine-tuning (cosine to the recipe's min_lr)")
    warmup_steps: int = Field(10, ge=0, description="linear warm-up steps of the per-round fine-tuning")
    lr_decay: float = Field(1.0, gt=0, le=1, description="round r fine-tunes at lr * lr_decay**(r-1): later rounds refine what "
                            "earlier ones learned instead of re-fitting at full step size (1 = every round alike)")
    replay_fraction: float = Field(0.5, ge=0, lt=1, description="share of a round's training pairs replayed from older rounds' videos (whole videos, seeded)")
    warp_max_frames: int = Field(125, ge=0, description="warp_real stage: at most this many frames of each real capture (evenly spread) are "
                                 "re-rendered from new cameras through the live model's depth and join the round's training pairs "
                                 "(warp.views_per_frame renders each; not replayed later); 0 = off")
    sfm_pairs: int = Field(0, ge=0, description="sfm_real stage: pairs of each real capture's own frames, supervised by its structure "
                           "from motion (sparse SfM depth and poses; pycolmap, once per run; no ground truth), drawn afresh each round "
                           "and joining the round's training pairs (not replayed later); 0 = off")
    sfm_gaps: tuple[int, int] = Field((1, 25), description="(min, max) distance in capture frames of the sfm_real pairs")
    heldout_videos: int = Field(8, ge=1, description="held-out synthetic videos (scene seeds from 0), rendered once per run")
    heldout_pairs_per_video: int = Field(12, ge=1, description="held-out pairs per held-out video")
    heldout_min_baseline: float = Field(
        0.02, ge=0, description="held-out synthetic pairs whose camera baseline is shorter than this fraction of the first view's "
        "median depth stay out of the pose list (a pan or a tilt has no translation direction to score, so every model 'fails' "
        "it: 29-56% of the 4-video set's pairs were such); they still count in the held-out loss and depth; 0 keeps all")
    real_pairs: list[str] = Field(
        ["../shared/data/real/eval-pairs/7scenes-redkitchen-second-half.txt",
         "../shared/data/real/eval-pairs/tum-fr3-long-office-sequence.txt"],
        description="SuperGlue pair lists of real held-out pairs (relative paths: cwd, then the project folder)")
    real_pairs_per_list: int = Field(100, ge=0, description="at most this many evenly spaced pairs evaluated per real list (100: all of both lists, 142 pairs); 0 = none")
    real_captures: list[str] = Field(["../shared/data/real/7scenes-redkitchen@125:250"], description="real captures with GT poses, "
                                     "never trained on, whose pairs (frame gaps 3-15) join the reported real pairs: the default draws "
                                     "from the same held-out frames (7-Scenes 500-996) as the fixed list, but enough pairs to tell rounds apart")
    real_capture_pairs: int = Field(500, ge=0, description="pairs drawn from each of real_captures (500: a paired AUC@10 difference "
                                    "is resolved to about ±2 instead of ±4.5 on the fixed 100 pairs); 0 = none")
    eval_size: int = Field(128, ge=16, description="longer image side for the pair-pose evaluation")
    eval_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="similarity precision of the evaluation's descriptor matching (bf16: 1.6-1.9x faster at 256 px, "
        "where dense matching is most of the cost, with the same AUC within noise; bench/learning_curves.md)")
    capture_gaps: tuple[int, int] = Field((3, 15), description="(min, max) distance in capture frames of the pairs drawn from "
                                          "val_capture and real_captures (3-15: the fixed 7-Scenes list's motion; 15-25 on "
                                          "7-Scenes' every-4th-frame captures: TUM-like wide pairs, further from the GT's noise floor)")
    eval_ransac: Literal["ransac", "usac_accurate", "magsac"] = Field(
        "usac_accurate", description="essential-matrix estimator of the pair-pose evaluation (usac_accurate: the preference "
        "policy's and the benches'; ransac: the SuperGlue protocol)")
    val_capture: str | None = Field("../shared/data/real/7scenes-redkitchen@100:125", description="real capture with GT poses whose "
                                    "pairs decide promotion (val_auc10) and are never reported as the held-out real figure; GT is "
                                    "used only to check (default: 7-Scenes frames 400-496, split off the preference side 0-396 that "
                                    "the stages train on, so the gate sees no trained frame; evaluation is 500-996)")
    val_pairs: int = Field(208, ge=0, description="pairs drawn from val_capture (frame gaps 3-15 of its frames; 208: every such "
                           "pair of the default's 25 frames; 300: a paired AUC@10 difference resolved to about ±2.5, 100: ±4.5); 0 = none")
    val_gaps: tuple[int, int] | None = Field(None, description="(min, max) distance in capture frames of the val_capture pairs; "
                                             "None = capture_gaps (a short validation segment split off the training frames may "
                                             "not hold enough pairs at the evaluation's wide gaps)")
    promote_metric: Literal["heldout_auc10", "heldout_loss", "real_auc10", "mean_auc10", "val_auc10"] = Field(
        "val_auc10", description="held-out metric deciding promotion (auc: higher is better; loss: lower is better); val_auc10 "
        "falls back to mean_auc10 when there is no validation capture")
    promote_against_base: bool = Field(True, description="also hold a round back when it is (confidently) worse than the base "
                                       "checkpoint beyond the tolerance: rounds within noise of their parent cannot drift away step by step")
    promote_tolerance: float = Field(0.5, ge=0, description="largest regression of promote_metric against the live checkpoint that still promotes")
    promote_confidence: float = Field(
        0.9, ge=0, lt=1, description="0: hold a round back when its promote_metric regressed beyond the tolerance; > 0 (e.g. 0.9): "
        "only when a paired bootstrap over the held-out pairs says it did with this confidence (AUC metrics; a noisy "
        "142-pair AUC moves by 3-5 points between equally good checkpoints)")
    seed: int = Field(0, description="seed of each round's prompts, scenes, pair draws, replay choice and training")
    generator_checkpoint: str | None = Field("weights/gen-base", description="video generator the first round improves "
                                             "(relative paths: cwd, then the project folder); None = no generator stage")
    generator_prompts: int = Field(12, ge=1, description="prompts (first frame + clip cameras of this round's videos) the generator is judged on")
    generator_eval_prompts: int = Field(16, ge=1, description="held-out prompts measuring the generator's camera error, candidate vs parent")
    generator_eval_seeds: int = Field(1, ge=1, description="sampled videos per held-out prompt, a prompt's error their mean (one draw "
                                      "moves a generator's mean flow error by about ±0.2 deg between seeds, bench/video.md; each "
                                      "seed adds one evaluation's sampling and judging to the stage)")
    generator_keep_confidence: float = Field(
        0.9, ge=0, lt=1, description="the generator's candidate replaces its parent only when a paired bootstrap over the held-out "
        "prompts says its mean rotation error is lower with this confidence; 0: whenever the mean is not higher (on 16 prompts "
        "a candidate no better on 40 others measured 23 % lower, bench/loop.md)")

    @model_validator(mode="after")
    def _gaps(self) -> LoopConfig:
        for name in ("capture_gaps", "sfm_gaps", "val_gaps"):
            if getattr(self, name) is None:
                continue
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name}: need 1 <= min <= max, got {lo}, {hi}")
        return self


class PreferenceConfig(Section):
    """Preference stage of the loop: sample and score reconstructions of real captures, then DPO or GRPO
    of the reconstruction model (``vibe3r.preference``; the CLI ``vibe3r preference`` takes the same knobs)."""

    captures: list[str] = Field(["../shared/data/real/7scenes-redkitchen@0:100"],
                                description="real capture specs with intrinsics (relative paths: cwd, then the project folder); "
                                            "the default is 7-Scenes frames 0-396, the preference-training side without the "
                                            "frames 400-496 the loop's gate validates on (loop.val_capture)")
    capture_pool: str | None = Field(None, description="folder of captures contributed through the web app (`vibe3r serve --data DIR`: "
                                     "DIR/captures, its index.jsonl); every pooled capture joins the real captures of the next round")
    pool_max_frames: int = Field(24, ge=2, description="frames kept of each pooled capture (evenly spread): phone videos are long")
    focal: tuple[float, float] | None = Field((518.0, 532.0), description="fx, fy of the native frames used by the rewards "
                                              "(7-Scenes documents its depth camera's 585; its colour camera fits 518, 532); None = the capture's K")
    size: int = Field(128, ge=16, description="longer image side the policy sees")
    pairs: int = Field(8, ge=1, description="pairs sampled per capture and round")
    n: int = Field(6, ge=2, description="samples per pair (the mode is added; method exact draws only the mode: it sums over every match itself)")
    min_gap: int = Field(3, ge=1, description="smallest frame gap of a pair")
    max_gap: int = Field(15, ge=1, description="largest frame gap of a pair")
    temperature: float = Field(0.07, gt=0, description="policy temperature (the InfoNCE one)")
    min_margin: float = Field(0.05, ge=0, description="smallest combined-reward difference that makes a preference")
    per_pair: int = Field(2, ge=1, description="preferences per pair")
    method: Literal["dpo", "grpo", "exact"] = Field("dpo", description="preference optimiser: dpo | grpo | exact (the KL-regularised "
                                                    "objective in closed form over every candidate match, preference.exact)")
    steps: int = Field(20, ge=1, description="DPO steps or GRPO rollouts per round")
    beta: float = Field(50.0, gt=0, description="DPO beta (with reduction mean: per-draw log-ratios are ~1e-2, so beta 50 puts "
                        "beta*margin in the sigmoid's working range; at 0.1 the DPO gradient is negligible next to the anchor's)")
    reduction: Literal["sum", "mean"] = Field("mean", description="sample log-likelihood: sum over draws | mean per draw "
                                              "(mean keeps DPO out of saturation; bench/preference.md)")
    lr: float = Field(1e-3, gt=0, description="adapter learning rate")
    anchor_weight: float = Field(0.1, ge=0, description="supervised anchor on the round's simulator pairs")
    draws: Literal["all", "matches"] = Field("matches", description="draws a sample's log-likelihood (dpo) or advantage (grpo) counts: "
                                             "all | matches (those forming its cycle-consistent matches)")
    draw_weight: float = Field(0.0, ge=0, description="grpo: weight of per-draw advantages (each drawn match's epipolar distance "
                               "under the classical pose); 0 = sample-level credit only")
    exact_beta: float = Field(1.0, gt=0, description="exact: KL weight in pixels of Sampson distance (a match this much further "
                              "from the classical epipolar line loses a factor e of probability against the reference)")
    teacher: Literal["classical", "sfm"] = Field(
        "classical", description="exact: the pose a pair's matches are rewarded under: classical (two-view RootSIFT of the "
        "full-resolution pair) | sfm (the capture's structure from motion, preference.sfm: every frame registered jointly, "
        "run once per run and capture; needs pycolmap, the sfm extra). With sfm, every sampled reconstruction (dpo, grpo) is "
        "also scored against the SfM: the rewards' alignment term. Neither reads ground truth")
    exact_draws: int = Field(0, ge=0, description="exact: forward and backward draws sampled per pair and step, each over every "
                             "candidate (0: all, the exact objective; about 1024 makes 256 px affordable at an unbiased estimate)")


# --------------------------------------------------------------------------------------------
# generator (the learned camera-controlled video generator, video_gen.diffusion)
# --------------------------------------------------------------------------------------------


class GeneratorModelConfig(Section):
    """A small video DiT (diffusers' Latte: alternating spatial and temporal transformer blocks) in pixel
    space, conditioned per pixel on the Plücker rays of the commanded cameras, on the first frame and
    (optionally) on a render of known geometry with its validity mask."""

    arch: Literal["latte"] = Field("latte", description="denoiser family (diffusers LatteTransformer3DModel)")
    width: int = Field(64, ge=16, description="frame width in pixels")
    height: int = Field(48, ge=16, description="frame height in pixels")
    frames: int = Field(8, ge=2, description="frames per generated video (the first is given)")
    patch_size: int = Field(8, ge=1, description="DiT patch size")
    layers: int = Field(4, ge=1, description="spatial+temporal block pairs")
    heads: int = Field(4, ge=1, description="attention heads")
    head_dim: int = Field(32, ge=8, description="channels per head")
    prediction_type: Literal["sample", "epsilon", "v_prediction"] = Field(
        "sample", description="what the denoiser predicts: sample (x0) suits pixel-space DiTs with large patches, whose "
        "tokens are too narrow to carry per-pixel noise (Li & He 2025, 'Back to Basics'); epsilon/v need patch_size <= 4")
    train_timesteps: int = Field(1000, ge=10, description="diffusion steps of the training schedule")
    beta_schedule: Literal["squaredcos_cap_v2", "scaled_linear", "linear"] = Field("squaredcos_cap_v2", description="noise schedule")

    @model_validator(mode="after")
    def _divisible(self) -> GeneratorModelConfig:
        if self.width % self.patch_size or self.height % self.patch_size:
            raise ValueError(f"width {self.width} and height {self.height} must be multiples of patch_size {self.patch_size}")
        return self


class GeneratorTrainConfig(Section):
    """Denoising training on simulator videos (``vibe3r video train``)."""

    steps: int = Field(3000, ge=1, description="optimiser steps")
    batch_size: int = Field(8, ge=1, description="videos per step")
    lr: float = Field(4e-4, gt=0, description="peak AdamW learning rate (linear warm-up, cosine decay)")
    min_lr: float = Field(2e-5, ge=0, description="final learning rate")
    warmup_steps: int = Field(200, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on norms and biases)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the weights used for sampling (0 = off)")
    strides: list[int] = Field([1, 2, 3], description="frame strides a training clip is cut with (more camera motion per clip)")
    p_render: float = Field(0.5, ge=0, le=1, description="share of clips conditioned on a render of the first frame's geometry (else that input is blank)")
    p_plane: float = Field(0.0, ge=0, le=1, description="share of clips conditioned instead on the first frame rendered as a "
                           "plane (at plane_range metres), the prompt-only mode of generator.sample.plane_depth; "
                           "p_render + p_plane <= 1, the rest get no render")
    plane_range: tuple[float, float] = Field((1.0, 4.0), description="(min, max) metres a training clip's plane is drawn from (uniform)")
    flip: bool = Field(True, description="mirror clips left-right (cameras mirrored with them)")
    reverse: bool = Field(True, description="play clips backwards at random")
    grad_clip: float = Field(1.0, gt=0, description="gradient norm clip")
    log_every: int = Field(25, ge=1, description="TensorBoard scalars every N steps")
    save_every: int = Field(250, ge=1, description="checkpoint (resumable) every N steps")
    seed: int = Field(0, description="seed of the clip draws, noise and initialisation")


    @model_validator(mode="after")
    def _shares(self) -> GeneratorTrainConfig:
        if self.p_render + self.p_plane > 1:
            raise ValueError(f"p_render + p_plane must be at most 1, got {self.p_render} + {self.p_plane}")
        if not 0 < self.plane_range[0] <= self.plane_range[1]:
            raise ValueError(f"plane_range: need 0 < min <= max, got {self.plane_range}")
        return self


class GeneratorSampleConfig(Section):
    """Sampling (``vibe3r video generate``)."""

    steps: int = Field(25, ge=1, description="DDIM steps")
    eta: float = Field(0.0, ge=0, le=1, description="DDIM eta (0 = deterministic given the initial noise)")
    guidance: float = Field(1.0, ge=0, description="camera guidance scale w: pred_still + w (pred_cam - pred_still), the "
                            "prompt with the camera held still as the negative (1 = none; > 1 doubles the sampling cost)")
    plane_depth: float | None = Field(2.0, gt=0, description="a prompt without depth (no --recon, no ground truth) is conditioned "
                                      "on the first frame rendered as a fronto-parallel plane this many metres away into every "
                                      "commanded camera (the render channels; no model, no ground truth): camera error 5.5 -> 1.9 "
                                      "deg (bench/video.md); 1000 = a rotation-only warp; null = Pluecker rays alone. Preference "
                                      "training and the loop's generator stage sample and measure prompts the same way")


class GeneratorPreferConfig(Section):
    """Preference training of the generator (``vibe3r video prefer``)."""

    method: Literal["dpo", "grpo", "best"] = Field(
        "dpo", description="Diffusion-DPO on judged pairs, GRPO on judged rollouts, or best: reward-ranked fine-tuning (RAFT, "
        "Dong et al. 2023) — the plain denoising loss on each prompt's best-judged video of the DPO pairs, no loser term")
    prompts: int = Field(24, ge=1, description="prompts (first frame + clip cameras) cut from the --data videos")
    stride: int = Field(3, ge=1, description="frame stride of a prompt's clip in its source video")
    with_render: bool = Field(False, description="prompts carry the first frame's depth, so videos are conditioned on its render "
                              "(the reconstruction-conditioned mode of `vibe3r video room`)")
    n: int = Field(4, ge=2, description="videos per prompt (DPO: best vs worst; best: the best; GRPO: the group)")
    pool_reference: bool = Field(False, description="DPO: two more candidates join each prompt's n samples before the judge ranks "
                                 "them: the renderer's frames for the commanded cameras (where the prompt has them) and the "
                                 "frozen clip (frame 0 repeated); best vs worst as usual")
    guidance_pool: list[float] = Field([1.0], min_length=1, description="DPO: camera guidance scales the n candidates of a "
                                       "prompt are sampled at, in turn (e.g. [1, 2, 3, 4]); the judge ranks them and DPO teaches "
                                       "the unguided model its choice (the spread between scales is what the judge can rank)")
    camera_jitter: float = Field(0.0, ge=0, le=90, description="DPO: degrees; > 0: the second half of a prompt's n candidates "
                                 "are sampled under cameras turned away from the commanded ones (about a random axis, growing "
                                 "linearly to this angle at the last frame) and judged against the commanded ones, so a pair "
                                 "contrasts following the commanded cameras with following others: a margin the judge resolves, "
                                 "between the policy's own samples; 0 = every candidate under the commanded cameras")
    steps: int = Field(60, ge=1, description="DPO optimiser steps / GRPO prompt groups")
    sample_steps: int = Field(10, ge=1, description="DDIM steps of the sampled videos")
    eta: float = Field(1.0, ge=0, le=1, description="DDIM eta of GRPO rollouts (stochastic steps are the policy)")
    beta: float = Field(2000.0, gt=0, description="Diffusion-DPO beta (errors are per-element means, as in Wallace et al.)")
    sft_weight: float = Field(1.0, ge=0, description="denoising loss on the winners added to DPO (keeps it from raising both "
                              "errors to widen the margin: the measured failure without it)")
    lr: float = Field(2e-4, gt=0, description="adapter learning rate (AdamW)")
    batch_size: int = Field(4, ge=1, description="DPO pairs per step")
    rank: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha")
    min_margin: float = Field(1.0, ge=0, description="smallest reward difference (degrees) that makes a DPO pair")
    trans_weight: float = Field(0.0, ge=0, description="weight of the translation-direction error in the reward (0: at "
                                "64x48 the judges' translation direction is at chance on generated videos and swamps the "
                                "rotation differences; bench/video.md)")
    clip: float = Field(0.2, gt=0, description="GRPO likelihood-ratio clip")
    kl: float = Field(0.05, ge=0, description="GRPO KL-to-reference coefficient")
    grpo_epochs: int = Field(1, ge=1, description="GRPO passes over each group's rollouts")
    grpo_timesteps: int = Field(4, ge=1, description="GRPO denoising steps trained per rollout (a random subset)")
    seed: int = Field(0, description="seed of the sampled videos, the noise and the adapters")


class GeneratorConfig(Section):
    """The learned video generator: model, training, sampling, preference training."""

    model: GeneratorModelConfig = Field(default_factory=GeneratorModelConfig)
    train: GeneratorTrainConfig = Field(default_factory=GeneratorTrainConfig)
    sample: GeneratorSampleConfig = Field(default_factory=GeneratorSampleConfig)
    prefer: GeneratorPreferConfig = Field(default_factory=GeneratorPreferConfig)


# --------------------------------------------------------------------------------------------
# root
# --------------------------------------------------------------------------------------------


class Config(Section):
    """The whole resolved configuration."""

    seed: int = Field(0, description="global seed; every random thing derives from it")
    world: WorldConfig = Field(default_factory=WorldConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    warp: WarpConfig = Field(default_factory=WarpConfig)
    recon: ReconConfig = Field(default_factory=ReconConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)


def _fmt_error(err: ValidationError, model: type[BaseModel]) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        # find the model that owns the bad key to list its valid keys
        owner: Any = model
        for part in e["loc"][:-1]:
            field = owner.model_fields.get(str(part))
            if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
                break
            owner = field.annotation
        valid = ", ".join(owner.model_fields)
        return f"unknown config key '{loc}' (valid keys here: {valid})"
    return f"bad config value for '{loc}': {e['msg']}"


def _parse_value(raw: str) -> Any:
    """Parse an override value with YAML rules (numbers, bools, lists, null)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw config dict (YAML-parsed values)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{p}' is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (or the embedded default when ``path`` is None), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must contain a mapping at the top level")
    data = apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_fmt_error(err, Config)) from None


def default_config_path() -> Path:
    """The embedded CPU default shipped in ``configs/default.yaml``."""
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def save_config(cfg: BaseModel, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    data = json.loads(cfg.model_dump_json())
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


