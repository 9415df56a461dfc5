"""AdaLN-single timestep conditioning.

PixArt-alpha (Chen et al., ICLR 2024), Sec. 2.3, adopted by SANA (Sec. 2.2): one MLP embeds the
timestep for the whole network, one shared ``SiLU -> Linear(C, 6C)`` turns it into six modulation
vectors, and each block adds its own learned ``scale_shift_table`` (6, C) to them. This replaces
DiT's per-block adaLN MLPs, which held about a quarter of DiT's parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimestepEmbedder", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features ``[cos(t w_i), sin(t w_i)]`` of float timesteps ``t [B]``, in fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """``t [B] -> [B, C]``: sinusoidal features, then Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = next(self.mlp.parameters()).dtype
        return self.mlp(timestep_embedding(t, self.frequency_dim).to(dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with per-sample ``[B, 1, C]`` vectors."""
    return torch.addcmul(shift, x, 1 + scale)
