"""The pairwise reconstruction network (DUSt3R/MASt3R-style), readable top to bottom.

    img1, img2 (B,3,H,W) in [0,1]
      │ shared stem (ViT patch embedding, or a small CNN with skip features)  -> tokens (B, N, C_enc)
      │ shared encoder: pre-norm ViT blocks with 2D RoPE (CroCo)               -> F1, F2
      │ two decoders, one per view; layer i:  G1 = Dec1_i(G1, G2),  G2 = Dec2_i(G2, G1)
      │   (self-attention, cross-attention to the *other* view's tokens of the previous layer, MLP)
      │ heads per view on [F_v, G_v]:
      │   pointmap + confidence: X^{1,1} (view 1 in its own frame), X^{2,1} (view 2 in view 1's frame)
      │   dense descriptors (MASt3R), L2-normalised, at full or half resolution
      ▼
    {"pts11": (B,H,W,3), "conf1": (B,H,W), "pts21": (B,H,W,3), "conf2": (B,H,W),
     "desc1": (B,h,w,D), "desc2": (B,h,w,D)}

The constructor's only argument is its config (``ReconModelConfig``), saved beside the weights as
``config.json`` by ``save_pretrained``; ``from_pretrained`` rebuilds and loads strictly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.recon.heads import ConvPts3d, DescHead, LinearPts3d, UpsampleTrunk, conv_block, postprocess_pts

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# --------------------------------------------------------------------------------------------
# Transformer pieces
# --------------------------------------------------------------------------------------------


class RoPE2D(nn.Module):
    """2D rotary position embedding (CroCo): the first half of each head's channels rotates with the
    token's row, the second half with its column; per half, channel pair k rotates by
    pos * base^(-2k/d). Relative positions then enter q·k directly, for any image size."""

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = base
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, d: int, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (d, pos.shape[0], int(pos[-1, 0]), int(pos[-1, 1]), pos.device, pos.dtype)
        if key not in self._cache:
            inv = 1.0 / (self.base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # d/2
            out = []
            for axis in (0, 1):
                f = pos[:, axis, None].float() * inv[None]  # N,d/2
                f = torch.cat([f, f], dim=-1)  # N,d
                out.append((f.cos(), f.sin()))
            cos = torch.cat([out[0][0], out[1][0]], dim=-1)  # N,2d
            sin = torch.cat([out[0][1], out[1][1]], dim=-1)
            self._cache[key] = (cos, sin)
        return self._cache[key]

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return torch.cat([-b, a], dim=-1)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (B, heads, N, Dh), pos (N, 2) integer (row, col) -> rotated x."""
        Dh = x.shape[-1]
        cos, sin = self._cos_sin(Dh // 2, pos)  # N,Dh
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        y, z = x.chunk(2, dim=-1)  # rows / cols halves
        cy, cz = cos.chunk(2, dim=-1)
        sy, sz = sin.chunk(2, dim=-1)
        y = y * cy + self._rotate_half(y) * sy
        z = z * cz + self._rotate_half(z) * sz
        return torch.cat([y, z], dim=-1)


class Attention(nn.Module):
    """Multi-head attention; ``context`` None = self-attention. RoPE on q (own positions) and k
    (the context's positions)."""

    def __init__(self, dim: int, heads: int, rope: RoPE2D | None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor, context: torch.Tensor | None = None,
                pos_ctx: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        ctx = x if context is None else context
        pc = pos if pos_ctx is None else pos_ctx
        q = self.q(x).view(B, N, self.heads, -1).transpose(1, 2)  # B,h,N,Dh
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # B,h,M,Dh each
        if self.rope is not None:
            q, k = self.rope(q, pos), self.rope(k, pc)
        out = F.scaled_dot_product_attention(q, k, v)  # B,h,N,Dh
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x + Attn(LN x); x + MLP(LN x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope: RoPE2D | None) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, rope)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """CroCo/DUSt3R decoder block: self-attention, cross-attention to the other view, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope: RoPE2D | None) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, rope)
        self.norm_x, self.norm_y, self.cross = nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, heads, rope)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, y: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        x = x + self.cross(self.norm_x(x), pos, context=self.norm_y(y), pos_ctx=pos)
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------------------------
# Stems
# --------------------------------------------------------------------------------------------


class CnnStem(nn.Module):
    """log2(p) stride-2 conv blocks; returns tokens at stride p and skip features at strides < p."""

    def __init__(self, channels: list[int], out_dim: int) -> None:
        super().__init__()
        chans = [3, *channels]
        self.stages = nn.ModuleList(conv_block(chans[i], chans[i + 1], stride=2) for i in range(len(channels)))
        self.out = nn.Conv2d(channels[-1], out_dim, 1)
        self.skip_channels = {1: 3, **{2 ** (i + 1): c for i, c in enumerate(channels[:-1])}}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        skips = {1: x}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                skips[2 ** (i + 1)] = x
        return self.out(x), skips  # B,C,h,w


class PatchStem(nn.Module):
    """ViT patch embedding; skips are the image average-pooled to each stride < p."""

    def __init__(self, patch_size: int, out_dim: int) -> None:
        super().__init__()
        self.p = patch_size
        self.proj = nn.Conv2d(3, out_dim, patch_size, stride=patch_size)
        self.skip_channels = {2**i: 3 for i in range(int(math.log2(patch_size)))}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        skips = {s: (x if s == 1 else F.avg_pool2d(x, s)) for s in self.skip_channels}
        return self.proj(x), skips


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class ReconModel(nn.Module):
    """Pairwise pointmaps + confidences + dense descriptors. See the module docstring."""

    def __init__(self, config: ReconModelConfig) -> None:
        super().__init__()
        self.config = c = config
        p = c.patch_size
        rope = RoPE2D(c.rope_freq) if c.pos_emb == "rope" else None
        self.stem = CnnStem(c.cnn_channels, c.enc_dim) if c.stem == "cnn" else PatchStem(p, c.enc_dim)
        self.enc_blocks = nn.ModuleList(EncoderBlock(c.enc_dim, c.enc_heads, c.mlp_ratio, rope) for _ in range(c.enc_depth))
        self.enc_norm = nn.LayerNorm(c.enc_dim)
        self.dec_embed = nn.Linear(c.enc_dim, c.dec_dim)
        self.dec_blocks1 = nn.ModuleList(DecoderBlock(c.dec_dim, c.dec_heads, c.mlp_ratio, rope) for _ in range(c.dec_depth))
        self.dec_blocks2 = nn.ModuleList(DecoderBlock(c.dec_dim, c.dec_heads, c.mlp_ratio, rope) for _ in range(c.dec_depth))
        self.dec_norm = nn.LayerNorm(c.dec_dim)
        feat = c.enc_dim + c.dec_dim
        skips = self.stem.skip_channels
        n_trunks = 1 if c.share_desc_head else 2
        self.trunks = nn.ModuleList(UpsampleTrunk(feat, c.head_channels, p, c.desc_stride, skips) for _ in range(n_trunks))
        self.desc_heads = nn.ModuleList(DescHead(c.head_channels, c.desc_dim) for _ in range(n_trunks))
        if c.pts_head == "linear":
            self.pts_heads = nn.ModuleList(LinearPts3d(feat, p) for _ in range(2))
        else:
            self.pts_heads = nn.ModuleList(ConvPts3d(c.head_channels) for _ in range(2))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_input(self, img: torch.Tensor) -> None:
        p = self.config.patch_size
        if img.dim() != 4 or img.shape[1] != 3:
            raise InputError(f"images must be (B, 3, H, W), got {tuple(img.shape)}")
        if img.shape[-2] % p or img.shape[-1] % p:
            raise InputError(f"image size {img.shape[-1]}x{img.shape[-2]} is not a multiple of the patch size {p}")

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor], tuple[int, int]]:
        """img (B,3,H,W) in [0,1] -> tokens (B,N,C_enc), positions (N,2), skip features, grid (h,w)."""
        x = (img - 0.5) / 0.5
        tok, skips = self.stem(x)  # B,C,h,w
        h, w = tok.shape[-2:]
        tok = tok.flatten(2).transpose(1, 2)  # B,N,C
        pos = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)  # N,2
        for blk in self.enc_blocks:
            tok = blk(tok, pos)
        return self.enc_norm(tok), pos, skips, (h, w)

    def decode(self, f1: torch.Tensor, f2: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two decoder stacks exchanging cross-attention: each layer reads the other view's
        previous-layer tokens. f (B,N,C_enc) -> g (B,N,C_dec)."""
        g1, g2 = self.dec_embed(f1), self.dec_embed(f2)
        for b1, b2 in zip(self.dec_blocks1, self.dec_blocks2):
            g1, g2 = b1(g1, g2, pos), b2(g2, g1, pos)
        return self.dec_norm(g1), self.dec_norm(g2)

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_input(img1)
        self._check_input(img2)
        if img1.shape != img2.shape:
            raise InputError(f"the two images must have the same shape, got {tuple(img1.shape)} and {tuple(img2.shape)}")
        B, _, H, W = img1.shape
        f, pos, skips, (h, w) = self.encode(torch.cat([img1, img2]))  # 2B,N,C
        f1, f2 = f.chunk(2)
        g1, g2 = self.decode(f1, f2, pos)
        feats = [torch.cat([f1, g1], -1), torch.cat([f2, g2], -1)]
        feats = [x.transpose(1, 2).reshape(B, -1, h, w) for x in feats]  # B,C,h,w
        c = self.config
        if c.share_desc_head:  # one batched pass for both views
            trunk = self.trunks[0](torch.cat(feats), skips)
            desc = self.desc_heads[0](trunk).chunk(2)
            trunks = trunk.chunk(2)
        else:
            skips1 = {s: t[:B] for s, t in skips.items()}
            skips2 = {s: t[B:] for s, t in skips.items()}
            trunks = (self.trunks[0](feats[0], skips1), self.trunks[1](feats[1], skips2))
            desc = (self.desc_heads[0](trunks[0]), self.desc_heads[1](trunks[1]))
        if c.pts_head == "linear":
            raw = [self.pts_heads[v](feats[v]) for v in range(2)]
        else:
            raw = [self.pts_heads[v](trunks[v], (H, W)) for v in range(2)]
        pts11, conf1 = postprocess_pts(raw[0], c.depth_mode, c.conf_min)
        pts21, conf2 = postprocess_pts(raw[1], c.depth_mode, c.conf_min)
        return {"pts11": pts11, "conf1": conf1, "pts21": pts21, "conf2": conf2, "desc1": desc[0], "desc2": desc[1]}

    # ----------------------------------------------------------------------------------------
    # Checkpoints: config.json + model.safetensors
    # ----------------------------------------------------------------------------------------

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config.model_dump(), indent=1))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt", "arch": self.config.arch})
        return out

    @classmethod
    def from_pretrained(cls, ckpt_dir: str | Path) -> ReconModel:
        """Rebuild from ``config.json`` and load ``model.safetensors`` strictly (every key, every shape)."""
        d = Path(ckpt_dir)
        if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
            raise InputError(f"not a vibe3r checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME}): {d}")
        try:
            raw = json.loads((d / CONFIG_NAME).read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{d / CONFIG_NAME} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("arch") != ReconModelConfig().arch:
            arch = raw.get("arch") if isinstance(raw, dict) else None
            raise InputError(f"checkpoint {d} is architecture {arch!r}, expected {ReconModelConfig().arch!r}")
        try:
            config = ReconModelConfig.model_validate(raw)
        except ValidationError as err:
            e = err.errors()[0]
            raise InputError(f"checkpoint {d} has a bad config at '{'.'.join(map(str, e['loc']))}': {e['msg']}") from None
        model = cls(config)
        model.load_weights(d / WEIGHTS_NAME)
        return model

    def load_weights(self, path: str | Path) -> None:
        """Load a safetensors state dict, refusing missing/unexpected keys and shape mismatches."""
        state = load_file(str(path))
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or extra or bad:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
            if extra:
                parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
            if bad:
                k = bad[0]
                parts.append(f"{len(bad)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
            raise InputError(f"weights {path} do not fit this architecture: " + "; ".join(parts))
        self.load_state_dict(state, strict=True)


def build_model(config: ReconModelConfig, seed: int = 0) -> ReconModel:
    """A freshly initialised model whose weights depend only on ``config`` and ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ReconModel(config)
