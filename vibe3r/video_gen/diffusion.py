"""The learned camera-controlled video generator: image-to-video diffusion conditioned on cameras.

Given a first frame and the commanded cameras of every frame (a motion prompt's trajectory), it
denoises the whole clip at once. Conditioning, per pixel and per frame, concatenated to the noisy
frames as CameraCtrl does with its ray map:

==================  ===  ========================================================================
input               ch   meaning
==================  ===  ========================================================================
noisy frames        3    x_t, the clip being denoised, in [-1, 1]
first frame         3    the given frame 0, repeated over time
Plücker rays        6    (d, o × d) of every pixel of frame k in the first camera's frame (metres)
render              3    the first frame's geometry splatted into camera k (Gen3C's 3D cache), or 0
render mask         1    1 where the render has a point
==================  ===  ========================================================================

The render channels are what makes the same model refine re-renders of a reconstructed room
("image pairs of your room", ``video_gen.room``): in training they are the first frame splatted with
its ground-truth depth (dropped at random, ``generator.train.p_render``), so a prompt alone and a
prompt plus known geometry are both in distribution.

The denoiser is diffusers' ``LatteTransformer3DModel`` — a DiT whose blocks alternate spatial
attention within a frame and temporal attention across frames — in pixel space at the CPU default
(64x48, 8 frames, patch 8, 6.8 M parameters); the same code takes a latent autoencoder's channels and
larger sizes on a GPU. Training is DDPM (``DDPMScheduler``; the denoiser predicts the clean clip x0 by
default: a patch-8 token cannot carry 192 values of white noise, a smooth clip it can), sampling DDIM
with any number of steps (``DDIMScheduler``, trailing spacing); with ``eta > 0`` each DDIM step is a
Gaussian whose log-density ``ddim_step`` returns — the policy GRPO trains.

    model = VideoGenerator(GeneratorModelConfig())
    video = model.generate(first_frame, K, c2w, steps=25, seed=0)       # uint8 (F, H, W, 3)
    model.save_pretrained("runs/gen")  ;  VideoGenerator.from_pretrained("runs/gen")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from vibe3r.config import GeneratorModelConfig
from vibe3r.errors import InputError
from vibe3r.geometry import plucker_rays, unproject_depth

ARCH = "vibe3r-videogen-v1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COND_CHANNELS = 3 + 6 + 3 + 1  # first frame, Plücker, render, mask
CAPTION_CHANNELS = 16


# --------------------------------------------------------------------------------------------
# conditioning
# --------------------------------------------------------------------------------------------


def relative_cameras(c2w: torch.Tensor) -> torch.Tensor:
    """(..., F, 4, 4) camera-to-world -> the same cameras in the first camera's frame (frame 0 = identity)."""
    return torch.linalg.inv(c2w[..., :1, :, :]) @ c2w


def camera_rays_map(K: torch.Tensor, c2w: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Plücker map (..., F, 6, H, W) of the cameras relative to the first one."""
    return plucker_rays(K.float(), relative_cameras(c2w.double()).float(), H, W)


def plane_depth_map(width: int, height: int, depth_m: float) -> np.ndarray:
    """The first frame as a fronto-parallel plane ``depth_m`` metres away: the depth a prompt without any
    geometry is conditioned on (``generator.sample.plane_depth``)."""
    return np.full((height, width), depth_m, np.float32)


def splat_first_frame(frame0: torch.Tensor, depth0: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-splat the first frame through its depth into every camera, nearest point wins.

    frame0 (3, H, W) in [-1, 1], depth0 (H, W) z-depth (0 = unknown), K (F, 3, 3), c2w (F, 4, 4).
    Returns the render (F, 3, H, W) (0 where nothing lands) and its mask (F, 1, H, W).
    """
    n, (H, W) = len(c2w), depth0.shape
    X0 = unproject_depth(depth0.float(), K[0].float()).reshape(-1, 3)  # camera-0 frame
    valid0 = depth0.reshape(-1) > 0
    X0, col = X0[valid0], frame0.reshape(3, -1)[:, valid0]
    rel = relative_cameras(c2w.double()).float()
    w2c = torch.linalg.inv(rel)  # camera-0 frame -> camera k
    Xk = X0[None] @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # F, P, 3
    z = Xk[..., 2]
    uv = (Xk @ K.float().transpose(1, 2))[..., :2] / z.clamp_min(1e-6)[..., None]
    u, v = uv[..., 0].round().long(), uv[..., 1].round().long()
    ok = (z > 1e-3) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    idx = torch.arange(n)[:, None] * (H * W) + v.clamp(0, H - 1) * W + u.clamp(0, W - 1)
    idx, z_ok = idx[ok], z[ok]
    zbuf = torch.full((n * H * W,), float("inf")).scatter_reduce(0, idx, z_ok, "amin")
    win = z_ok <= zbuf[idx]
    render = torch.zeros(3, n * H * W)
    src = col[:, None, :].expand(3, n, col.shape[1])[:, ok][:, win]
    render[:, idx[win]] = src
    mask = torch.zeros(n * H * W)
    mask[idx[win]] = 1.0
    return render.reshape(3, n, H, W).transpose(0, 1), mask.reshape(n, 1, H, W)


def conditioning(frame0: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor, depth0: torch.Tensor | None = None,
                 use_render: bool = True) -> torch.Tensor:
    """The per-pixel conditioning (F, 13, H, W) of one clip: first frame, Plücker rays, render, mask.

    frame0 (3, H, W) in [-1, 1]; K (F, 3, 3) in pixels of the clip; c2w (F, 4, 4) commanded cameras;
    depth0 (H, W) the first frame's depth for the render channels (None or ``use_render=False``: blank).
    """
    n, (H, W) = len(c2w), frame0.shape[-2:]
    rays = camera_rays_map(K, c2w, H, W)
    if depth0 is not None and use_render:
        render, mask = splat_first_frame(frame0, depth0, K, c2w)
    else:
        render, mask = torch.zeros(n, 3, H, W), torch.zeros(n, 1, H, W)
    return torch.cat([frame0[None].expand(n, 3, H, W), rays, render, mask], dim=1)


def still_conditioning(cond: torch.Tensor) -> torch.Tensor:
    """The same prompt with the camera held still: every frame's conditioning (F, 13, H, W) or (B, F, 13, H, W)
    replaced by frame 0's (its Plücker rays, and its render, which is the first frame itself). The negative
    condition of camera guidance (``VideoGenerator.predict_x0``)."""
    return cond.narrow(-4, 0, 1).expand_as(cond)


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


def make_schedulers(cfg: GeneratorModelConfig):  # noqa: ANN201 - (DDPMScheduler, DDIMScheduler)
    """The training schedule and the DDIM sampler over the same betas."""
    from diffusers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                          prediction_type=cfg.prediction_type, clip_sample=False)
    sample = DDIMScheduler.from_config(train.config, timestep_spacing="trailing", clip_sample=False,
                                       set_alpha_to_one=True)
    return train, sample


@dataclass
class StepResult:
    prev: torch.Tensor  # x_{t-1}
    mean: torch.Tensor  # its Gaussian mean under the model
    std: float  # its standard deviation (0 when eta = 0)
    log_prob: torch.Tensor  # (B,) log-density of prev (mean over elements; 0 when std = 0)


class VideoGenerator(nn.Module):
    """Camera-conditioned image-to-video denoiser (see the module docstring)."""

    def __init__(self, cfg: GeneratorModelConfig) -> None:
        super().__init__()
        from diffusers import LatteTransformer3DModel

        self.config = cfg
        dim = cfg.heads * cfg.head_dim
        self.transformer = LatteTransformer3DModel(
            num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim, in_channels=3 + COND_CHANNELS,
            out_channels=3, num_layers=cfg.layers, cross_attention_dim=dim, sample_size=cfg.height,
            patch_size=cfg.patch_size, norm_type="ada_norm_single", caption_channels=CAPTION_CHANNELS,
            video_length=cfg.frames, num_embeds_ada_norm=cfg.train_timesteps, activation_fn="gelu-approximate")
        # the transformer's cross-attention reads one learned token (no text: the cameras are the prompt)
        self.null_caption = nn.Parameter(torch.zeros(1, 1, CAPTION_CHANNELS))
        self.train_scheduler, self.sampler = make_schedulers(cfg)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t (B, F, 3, H, W), t (B,) integer timesteps, cond (B, F, 13, H, W) -> prediction (B, F, 3, H, W)."""
        B = x_t.shape[0]
        h = torch.cat([x_t, cond], dim=2).transpose(1, 2)  # B, C, F, H, W
        out = self.transformer(h, timestep=t, encoder_hidden_states=self.null_caption.expand(B, 1, -1),
                               enable_temporal_attentions=True).sample
        return out.transpose(1, 2)

    # ---- training ------------------------------------------------------------------------

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.config.prediction_type == "sample":
            return x0
        if self.config.prediction_type == "epsilon":
            return noise
        return self.train_scheduler.get_velocity(x0, noise, t)

    def denoising_error(self, x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-video mean squared error of the prediction at (t, noise): (B,). The DDPM loss is its mean;
        Diffusion-DPO compares it between policy and reference on the same (t, noise)."""
        x_t = self.train_scheduler.add_noise(x0, noise, t)
        pred = self(x_t, t, cond)
        return (pred - self.target(x0, noise, t)).square().flatten(1).mean(1)

    # ---- sampling ------------------------------------------------------------------------

    def predict_x0(self, x_t: torch.Tensor, t: int, cond: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        """The model's clean-clip estimate at step t, whatever it predicts (x0, epsilon or v).

        ``guidance`` w ≠ 1 is camera guidance: the prediction for the same prompt with the camera held still
        (``still_conditioning``) is moved w times its distance towards the prediction for the commanded
        cameras, pred_still + w (pred_cam − pred_still) — classifier-free guidance with "do not move" as the
        negative condition, which every training clip with little motion already taught the model.
        """
        a = self.sampler.alphas_cumprod[t].to(x_t.dtype)
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long)
        if guidance == 1.0:
            pred = self(x_t, tt, cond)
        else:
            pred_cam, pred_still = self(torch.cat([x_t, x_t]), tt.repeat(2), torch.cat([cond, still_conditioning(cond)])).chunk(2)
            pred = pred_still + guidance * (pred_cam - pred_still)
        if self.config.prediction_type == "sample":
            return pred
        if self.config.prediction_type == "epsilon":
            return (x_t - (1 - a).sqrt() * pred) / a.sqrt()
        return a.sqrt() * x_t - (1 - a).sqrt() * pred  # v

    def ddim_step(self, x_t: torch.Tensor, t: int, t_prev: int, cond: torch.Tensor, eta: float,
                  noise: torch.Tensor | None = None, prev: torch.Tensor | None = None, guidance: float = 1.0) -> StepResult:
        """One DDIM step (Song et al. 2021, eq. 12) t -> t_prev (t_prev < 0: the final x0).

        With ``prev`` given, no draw: the step's log-density of that ``prev`` under this model (GRPO's
        likelihood ratio). ``noise`` is the standard normal draw of a stochastic step; ``guidance`` is the
        camera guidance of ``predict_x0``.
        """
        ac = self.sampler.alphas_cumprod
        a_t = ac[t].to(x_t.dtype)
        a_p = ac[t_prev].to(x_t.dtype) if t_prev >= 0 else torch.tensor(1.0, dtype=x_t.dtype)
        x0 = self.predict_x0(x_t, t, cond, guidance).clamp(-1, 1)
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()  # the noise that clamped x0 implies
        var = (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
        std = float(eta * var.clamp_min(0).sqrt())
        mean = a_p.sqrt() * x0 + (1 - a_p - std ** 2).clamp_min(0).sqrt() * eps
        if prev is None:
            prev = mean if std == 0 else mean + std * (noise if noise is not None else torch.randn_like(mean))
        if std == 0:
            logp = torch.zeros(x_t.shape[0])
        else:
            logp = (-(prev.detach() - mean).square() / (2 * std ** 2) - math.log(std) - 0.5 * math.log(2 * math.pi))
            logp = logp.flatten(1).mean(1)
        return StepResult(prev=prev, mean=mean, std=std, log_prob=logp)

    def timesteps(self, steps: int) -> list[int]:
        self.sampler.set_timesteps(steps)
        return [int(t) for t in self.sampler.timesteps]

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int = 25, eta: float = 0.0, generator: torch.Generator | None = None,
               x_T: torch.Tensor | None = None, keep_trajectory: bool = False, guidance: float = 1.0
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Denoise from x_T (B, F, 3, H, W) (drawn from ``generator`` if None) -> x0 in [-1, 1], and the
        latents x_T, ..., x_0 when ``keep_trajectory`` (the rollout GRPO re-scores). ``guidance`` > 1 is
        camera guidance (``predict_x0``; twice the forward passes)."""
        B, n, _, H, W = cond.shape
        x = torch.randn(B, n, 3, H, W, generator=generator) if x_T is None else x_T
        ts = self.timesteps(steps)
        traj = [x] if keep_trajectory else []
        for k, t in enumerate(ts):
            t_prev = ts[k + 1] if k + 1 < len(ts) else -1
            noise = torch.randn(x.shape, generator=generator) if eta > 0 else None
            x = self.ddim_step(x, t, t_prev, cond, eta, noise=noise, guidance=guidance).prev
            if keep_trajectory:
                traj.append(x)
        return x.clamp(-1, 1), traj

    @torch.no_grad()
    def generate(self, first_frame: np.ndarray, K: np.ndarray, c2w: np.ndarray, depth0: np.ndarray | None = None,
                 steps: int = 25, eta: float = 0.0, seed: int = 0, guidance: float = 1.0) -> np.ndarray:
        """One video: first_frame uint8 (H, W, 3) at the model's size, K (F, 3, 3) or (3, 3), c2w (F, 4, 4)
        -> uint8 (F, H, W, 3) whose frame 0 is ``first_frame``; ``guidance``: camera guidance (``predict_x0``)."""
        cfg = self.config
        if first_frame.shape != (cfg.height, cfg.width, 3):
            raise InputError(f"first frame is {first_frame.shape[1]}x{first_frame.shape[0]}; this generator makes "
                             f"{cfg.width}x{cfg.height} videos (resize it first)")
        if len(c2w) != cfg.frames:
            raise InputError(f"{len(c2w)} cameras; this generator makes {cfg.frames}-frame videos")
        K = np.array(np.broadcast_to(np.asarray(K, np.float64), (cfg.frames, 3, 3)))
        f0 = to_model_images(first_frame[None])[0]
        d0 = None if depth0 is None else torch.as_tensor(depth0, dtype=torch.float32)
        cond = conditioning(f0, torch.as_tensor(K), torch.as_tensor(c2w), d0)[None]
        x, _ = self.sample(cond, steps=steps, eta=eta, generator=torch.Generator().manual_seed(seed), guidance=guidance)
        out = to_uint8(x[0])
        out[0] = first_frame
        return out

    # ---- checkpoints ---------------------------------------------------------------------

    def save_pretrained(self, out: str | Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps({"format": ARCH, **self.config.model_dump()}, indent=1))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VideoGenerator:
        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise InputError(f"not a video generator checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME}): {path}")
        raw = json.loads((path / CONFIG_NAME).read_text())
        fmt = raw.pop("format", None)
        if fmt != ARCH:
            raise InputError(f"{path} holds a {fmt or raw.get('arch')!r} checkpoint, not a video generator ({ARCH})")
        model = cls(GeneratorModelConfig(**raw))
        state = load_file(str(path / WEIGHTS_NAME))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(f"{path}: weights do not match the generator config (missing {len(missing)}, "
                             f"unexpected {len(unexpected)}, e.g. {(missing or unexpected)[0]})")
        return model.eval()


def to_model_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1)
    return x.movedim(-1, -3)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy()


def resize_frames(frames: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-resize uint8 frames (N, H, W, 3) and rescale K (N, 3, 3) to (width, height)."""
    import cv2

    from vibe3r.geometry import scale_intrinsics

    N, H, W = frames.shape[:3]
    if (H, W) == (height, width):
        return frames, K
    out = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    return out, scale_intrinsics(K, width / W, height / H).numpy()


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-resize depth (H, W) (keeps 0 = no hit honest)."""
    import cv2

    return cv2.resize(depth.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
