"""Channel RMSNorm with a bias, the ``trms2d`` norm of DC-AE, in plain PyTorch.

The official model needs a Triton kernel (CUDA only) for this norm; this is the same function,
``y = x / sqrt(mean_c(x^2) + eps) * weight + bias`` over the channel axis, on any device.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RMSNorm2d"]


class RMSNorm2d(nn.Module):
    """RMS normalisation over dim 1 of ``[B, C, ...]`` with an affine weight and bias, eps 1e-5."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in fp32: bf16 squares of large activations lose the mean.
        xf = x.float()
        y = xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        # One fused multiply-add for the affine part: a single pass over the largest maps.
        y = torch.addcmul(self.bias.float().view(shape), y, self.weight.float().view(shape))
        return y.to(x.dtype)
