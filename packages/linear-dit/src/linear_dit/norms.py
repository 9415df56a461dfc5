"""RMSNorm with fp32 statistics, as used on captions and (SANA-1.5) on queries and keys.

Zhang & Sennrich, "Root Mean Square Layer Normalization" (2019). SANA (Sec. 2.2) normalises the
projected caption with it; SANA-1.5 (Sec. 2.1) adds it on q and k across all heads for stable
training of the grown 4.8B model.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RMSNorm", "autocast_off", "clamp_fp16", "layer_norm_fp32"]


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last dimension; the statistics are always fp32."""

    def __init__(self, dim: int, eps: float = 1e-5, init: float = 1.0) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return normed * self.weight.to(x.dtype)


def layer_norm_fp32(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Affine-free LayerNorm whose statistics are fp32 even for half inputs, so a large-magnitude
    residual stream cannot overflow the variance in fp16."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return F.layer_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Switch autocast off on ``device`` (a no-op where autocast does not exist, e.g. meta).

    Autocast re-casts matmul operands to its half dtype, which would undo an explicit fp32
    upcast: code that must accumulate in fp32 runs inside this context."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """Saturate instead of overflowing to inf in fp16 (the Sana code clips at the same bound)."""
    if x.dtype == torch.float16:
        return x.clamp(-65504.0, 65504.0)
    return x
