"""Rotary position embedding (RoPE) with the linear, dynamic-NTK and llama3 frequency scalings.

Su et al., "RoFormer" (arXiv 2104.09864), Sec. 3.4; used by every model QServe evaluates (Lin et al., arXiv
2405.04532, Sec. 4.2: SmoothAttention must respect its channel pairs). Convention: Hugging Face "rotate_half",
channel ``i`` is paired with channel ``i + D/2`` and both rotate by ``position * inv_freq[i]``. The scalings follow
the formulas of HF transformers' ``modeling_rope_utils`` (linear: frequencies / factor; dynamic: the base grows
as ``base * (factor * L / L_max - (factor - 1)) ** (D / (D - 2))`` once the length L exceeds L_max; llama3:
per-wavelength interpolation between the two).
"""

from __future__ import annotations

import math

import torch

from qserve.config import LlamaConfig

__all__ = ["apply_rope", "inverse_frequencies", "rope_cos_sin", "rotate_half"]


def inverse_frequencies(config: LlamaConfig, seq_len: int | None = None) -> torch.Tensor:
    """``inv_freq`` float32 ``[D/2]`` for ``config``; ``seq_len`` (the longest position + 1) matters for dynamic."""
    d = config.head_dim
    base = config.rope_theta
    rs = config.rope_scaling
    if rs is not None and rs.type == "dynamic" and seq_len is not None and seq_len > config.max_position_embeddings:
        base = base * ((rs.factor * seq_len / config.max_position_embeddings) - (rs.factor - 1)) ** (d / (d - 2))
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))  # [D/2]
    if rs is not None and rs.type == "linear":
        inv = inv / rs.factor
    elif rs is not None and rs.type == "llama3":
        assert rs.low_freq_factor is not None and rs.high_freq_factor is not None
        assert rs.original_max_position_embeddings is not None
        old_len = rs.original_max_position_embeddings
        low_wavelen = old_len / rs.low_freq_factor  # longer wavelengths than this are fully interpolated
        high_wavelen = old_len / rs.high_freq_factor  # shorter ones are kept
        wavelen = 2 * math.pi / inv
        smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
        mixed = (1 - smooth) * inv / rs.factor + smooth * inv
        inv = torch.where(wavelen > low_wavelen, inv / rs.factor, torch.where(wavelen < high_wavelen, inv, mixed))
    return inv.float()


def rope_cos_sin(config: LlamaConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin float32 ``[B, T, D]`` for integer ``positions`` ``[B, T]`` (both halves repeated)."""
    seq_len = int(positions.max()) + 1 if positions.numel() else 0
    inv = inverse_frequencies(config, seq_len).to(positions.device)  # [D/2]
    angles = positions.to(torch.float32).unsqueeze(-1) * inv  # [B, T, D/2]
    angles = torch.cat((angles, angles), dim=-1)  # [B, T, D]
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dimension split in halves."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, T, D]`` by ``cos``/``sin`` ``[B, T, D]``; computed in float32, returned in x's dtype."""
    xf = x.float()
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, T, D]
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
