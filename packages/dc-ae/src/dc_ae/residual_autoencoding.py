"""Residual autoencoding: 2x down/upsampling blocks with non-parametric space-to-channel shortcuts.

Paper: DC-AE (Chen et al., ICLR 2025), Sec. 3.2 and Fig. 4. The learned path is added to a
shortcut that only rearranges pixels: space-to-channel followed by channel averaging on the way
down, channel duplication followed by channel-to-space on the way up. With factor 1 the same
shortcuts wrap the encoder's output conv and the decoder's input conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["space_to_channel_average", "channel_to_space_duplicate", "Downsample", "Upsample"]


def space_to_channel_average(x: torch.Tensor, out_channels: int, factor: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, out, H/f, W/f]: unshuffle, then average groups of consecutive channels."""
    if factor > 1:
        x = F.pixel_unshuffle(x, factor)
    B, C, H, W = x.shape
    return x.view(B, out_channels, C // out_channels, H, W).mean(dim=2)


def channel_to_space_duplicate(x: torch.Tensor, out_channels: int, factor: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, out, H*f, W*f]: repeat each channel, then shuffle into space."""
    repeats = out_channels * factor * factor // x.shape[1]
    x = x.repeat_interleave(repeats, dim=1)
    return F.pixel_shuffle(x, factor) if factor > 1 else x


class Downsample(nn.Module):
    """2x downsampling conv ("Conv": stride 2; "ConvPixelUnshuffle": conv to C/4 then unshuffle)."""

    def __init__(self, in_channels: int, out_channels: int, kind: str, shortcut: bool) -> None:
        super().__init__()
        self.kind = kind
        self.out_channels = out_channels
        self.shortcut = shortcut
        if kind == "Conv":
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        elif kind == "ConvPixelUnshuffle":
            self.conv = nn.Conv2d(in_channels, out_channels // 4, 3, padding=1)
        else:
            raise ValueError(f"unknown downsample block {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.kind == "ConvPixelUnshuffle":
            y = F.pixel_unshuffle(y, 2)
        if self.shortcut:
            y = y + space_to_channel_average(x, self.out_channels, 2)
        return y


class Upsample(nn.Module):
    """2x upsampling conv ("ConvPixelShuffle": conv to 4C then shuffle; "InterpolateConv")."""

    def __init__(self, in_channels: int, out_channels: int, kind: str, shortcut: bool) -> None:
        super().__init__()
        self.kind = kind
        self.out_channels = out_channels
        self.shortcut = shortcut
        if kind == "ConvPixelShuffle":
            self.conv = nn.Conv2d(in_channels, out_channels * 4, 3, padding=1)
        elif kind == "InterpolateConv":
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        else:
            raise ValueError(f"unknown upsample block {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "ConvPixelShuffle":
            y = F.pixel_shuffle(self.conv(x), 2)
        else:
            y = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        if self.shortcut:
            y = y + channel_to_space_duplicate(x, self.out_channels, 2)
        return y
