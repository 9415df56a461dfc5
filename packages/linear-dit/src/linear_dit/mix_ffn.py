"""Mix-FFN: the GLU feed-forward with a 3x3 depthwise convolution (GLUMBConv).

SANA (Xie et al., ICLR 2025), Sec. 2.2 "Mix-FFN": 1x1 conv C -> 2H with SiLU, 3x3 depthwise conv
over the token grid, GLU gate, 1x1 conv H -> C (no bias). The depthwise conv mixes neighbouring
tokens, which gives the model its sense of position without a positional embedding and makes up
for linear attention's weak locality.

Video configs apply the spatial conv per frame and then a depthwise 3-tap convolution over time
(zero-initialised, with a residual), so a video model initialised from image weights starts as
that image model run frame by frame, apart from attention spanning the frames.

The whole FFN runs as convolutions on a channels-last view of the tokens (no copy in or out): on
the CPU, oneDNN's channels-last 1x1 convolutions beat the equivalent matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linear_dit.norms import clamp_fp16

__all__ = ["MixFFN"]


class MixFFN(nn.Module):
    """``[B, N, C] -> [B, N, C]`` over a token grid ``(H, W)`` or ``(T, H, W)``."""

    def __init__(self, dim: int, hidden: int, video: bool = False) -> None:
        super().__init__()
        self.inverted_conv = nn.Conv2d(dim, 2 * hidden, 1)
        self.depth_conv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point_conv = nn.Conv2d(hidden, dim, 1, bias=False)
        self.temporal_conv: nn.Conv1d | None = None
        if video:
            self.temporal_conv = nn.Conv1d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
            nn.init.zeros_(self.temporal_conv.weight)
            assert self.temporal_conv.bias is not None
            nn.init.zeros_(self.temporal_conv.bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        b, n, c = x.shape
        t, gh, gw = grid if len(grid) == 3 else (1, *grid)
        # [B*T, C, gh, gw] as a view in channels-last memory: the convs keep that format end to end.
        img = x.reshape(b * t, gh, gw, c).permute(0, 3, 1, 2)
        # fp16: each product is clamped, since silu(-inf) and inf - inf in the convs give NaN.
        h = F.silu(clamp_fp16(self.inverted_conv(img)))  # [B*T, 2H, gh, gw]
        h = clamp_fp16(self.depth_conv(h))
        ch = h.shape[1]
        if self.temporal_conv is not None:
            h = h.reshape(b, t, ch, gh, gw)
            w = self.temporal_conv.weight[:, 0, :, None, None]  # [2H, 3, 1, 1]: taps on frames t-1, t, t+1
            assert self.temporal_conv.bias is not None
            prev = F.pad(h[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))
            nxt = F.pad(h[:, 1:], (0, 0, 0, 0, 0, 0, 0, 1))
            mixed = prev * w[:, 0] + h * w[:, 1] + nxt * w[:, 2] + self.temporal_conv.bias[:, None, None]
            h = clamp_fp16(h + mixed).reshape(b * t, ch, gh, gw)
        val, gate = h.chunk(2, dim=1)
        out = self.point_conv(clamp_fp16(val * F.silu(gate)))  # [B*T, C, gh, gw]
        out = out.permute(0, 2, 3, 1).reshape(b, n, c)  # a view when the conv kept channels-last
        return clamp_fp16(out)
