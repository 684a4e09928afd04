"""Output heads of the pairwise model: pointmap + confidence (DUSt3R) and dense descriptors (MASt3R).

Both read the token grid of one view, ``feat`` (B, C, h, w) with h = H/p, w = W/p: the concatenation
of the encoder output and the last decoder layer (as MASt3R's heads do).

* ``LinearPts3d`` — DUSt3R's linear head: a linear map of every token to a p x p patch of
  (x, y, z, c), unfolded by pixel shuffle.
* ``UpsampleTrunk`` — a small U-Net decoder: starting at the token stride p, repeat (bilinear x2,
  concat the CNN stem's skip features at that stride, two 3x3 convs) down to the descriptor stride.
  It gives convolutions — which learn local appearance fast on CPU — the last word on local detail.
* ``DescHead`` — a 1x1 conv of the trunk to D channels, L2-normalised per pixel (MASt3R's local
  features, used with InfoNCE and mutual nearest neighbours).
* ``ConvPts3d`` — (x, y, z, c) from the trunk, bilinearly upsampled to full resolution.

``postprocess_pts`` applies DUSt3R's activations:
  X = x / |x| * expm1(|x|)  (``depth_mode='exp'``: large ranges with small logits),
  conf = conf_min + exp(c)  (strictly above conf_min so that -alpha log conf is bounded).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def postprocess_pts(raw: torch.Tensor, depth_mode: str = "exp", conf_min: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """raw (B, 4, H, W) -> pointmap (B, H, W, 3) and confidence (B, H, W)."""
    xyz = raw[:, :3].permute(0, 2, 3, 1)  # B,H,W,3
    if depth_mode == "exp":
        d = xyz.norm(dim=-1, keepdim=True)
        xyz = xyz / d.clamp_min(1e-8) * torch.expm1(d)
    conf = conf_min + raw[:, 3].exp()  # B,H,W
    return xyz, conf


def conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (stride 1 or 2) + GroupNorm + GELU, then 3x3 conv + GroupNorm + GELU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(_groups(c_out), c_out),
        nn.GELU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(_groups(c_out), c_out),
        nn.GELU(),
    )


def _groups(c: int) -> int:
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


class LinearPts3d(nn.Module):
    """DUSt3R's linear head: token (C) -> p*p pixels of (x, y, z, conf logit)."""

    def __init__(self, c_in: int, patch_size: int) -> None:
        super().__init__()
        self.p = patch_size
        self.proj = nn.Conv2d(c_in, 4 * patch_size**2, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.proj(feat), self.p)  # B,4,H,W


class UpsampleTrunk(nn.Module):
    """Token grid (B, C, H/p, W/p) + skip features {stride: (B, c_s, H/s, W/s)} -> (B, Ch, H/s_out, W/s_out)."""

    def __init__(self, c_in: int, channels: int, patch_size: int, out_stride: int, skip_channels: dict[int, int]) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Conv2d(c_in, channels, 1), nn.GELU())
        self.strides = []
        blocks = []
        s = patch_size
        while s > out_stride:
            s //= 2
            self.strides.append(s)
            blocks.append(conv_block(channels + skip_channels.get(s, 0), channels))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, feat: torch.Tensor, skips: dict[int, torch.Tensor]) -> torch.Tensor:
        x = self.inp(feat)
        for s, blk in zip(self.strides, self.blocks):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            if s in skips:
                x = torch.cat([x, skips[s]], dim=1)
            x = blk(x)
        return x


class DescHead(nn.Module):
    """Dense L2-normalised descriptors (B, h, w, D) at the trunk's stride."""

    def __init__(self, channels: int, desc_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, desc_dim, 1)

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(trunk), dim=1).permute(0, 2, 3, 1)  # B,h,w,D


class ConvPts3d(nn.Module):
    """(x, y, z, conf logit) from the trunk, bilinearly upsampled to the image size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, 4, 1)

    def forward(self, trunk: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.proj(trunk)
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out  # B,4,H,W
