"""Building blocks of the DC-AE encoder and decoder stages.

Paper: DC-AE (Chen et al., ICLR 2025), Sec. 3 and Fig. 3: ResBlocks at high resolution and
EfficientViT blocks (ReLU linear attention + GLU MBConv) at low resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from dc_ae.lite_mla import LiteMLA, make_norm

__all__ = ["ResBlock", "GLUMBConv", "EfficientViTBlock", "make_block", "make_act"]


def make_act(kind: str) -> nn.Module:
    if kind == "silu":
        return nn.SiLU()
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {kind!r}")


class ResBlock(nn.Module):
    """x + norm(conv2(act(conv1(x)))), 3x3 convs; conv2 has no bias because the norm follows."""

    def __init__(self, channels: int, norm: str, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = make_act(act)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = make_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv2(self.act(self.conv1(x))))


class GLUMBConv(nn.Module):
    """Inverted bottleneck (x4) with a depthwise 3x3 conv and a SiLU-gated linear unit."""

    def __init__(self, channels: int, norm: str, act: str, expand_ratio: int = 4) -> None:
        super().__init__()
        hidden = channels * expand_ratio
        self.inverted_conv = nn.Conv2d(channels, 2 * hidden, 1)
        self.depth_conv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point_conv = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = make_norm(norm, channels)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depth_conv(self.act(self.inverted_conv(x)))  # (B, 2*hidden, H, W)
        h, gate = h.chunk(2, dim=1)
        return self.norm(self.point_conv(h * self.act(gate)))


class EfficientViTBlock(nn.Module):
    """Global context by linear attention, then local mixing by GLUMBConv, each residual."""

    def __init__(self, channels: int, head_dim: int, scales: tuple[int, ...], norm: str, act: str) -> None:
        super().__init__()
        self.attn = LiteMLA(channels, head_dim, scales=scales, norm=norm)
        self.ffn = GLUMBConv(channels, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last: oneDNN's depthwise convs run 2-3x faster in NHWC, and the layout carries on
        # into the following stages (as it does in diffusers, whose numbers we then match exactly).
        x = x.contiguous(memory_format=torch.channels_last)
        x = x + self.attn(x)
        return x + self.ffn(x)


def make_block(kind: str, channels: int, norm: str, act: str, head_dim: int) -> nn.Module:
    if kind == "ResBlock":
        return ResBlock(channels, norm, act)
    if kind == "EViT_GLU":
        return EfficientViTBlock(channels, head_dim, (), norm, act)
    if kind == "EViTS5_GLU":
        return EfficientViTBlock(channels, head_dim, (5,), norm, act)
    raise ValueError(f"unknown block type {kind!r}")
