"""Shared test helpers: layers with realistic outlier structure, an RTN INT4 fake quantizer, SNR in dB.

The activations mimic what SVDQuant (Li et al., ICLR 2025, Sec. 3-4) targets in diffusion transformers: a few
input channels 20-100x larger than the rest, in every token. The weights have a decaying singular spectrum (a few
strong directions over a Gaussian bulk), as trained linears do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def outlier_activations(
    m: int, k: int, *, n_outliers: int = 8, low: float = 20.0, high: float = 100.0, seed: int = 0
) -> Tensor:
    """``[m, k]`` float32 inputs: unit Gaussian channels, ``n_outliers`` of them scaled by 20-100x.

    The outlier channels are fixed per layer (the same in every token) and carry a per-channel offset, as the
    systematic outliers of DiT activations do.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    channels = torch.randperm(k, generator=g)[:n_outliers]
    gains = low + (high - low) * torch.rand(n_outliers, generator=g)
    offsets = torch.randn(n_outliers, generator=g)
    x[:, channels] = (x[:, channels] + offsets) * gains
    return x


def structured_weight(n: int, k: int, *, strong: int = 16, seed: int = 1) -> Tensor:
    """``[n, k]`` float32 weight: a Gaussian bulk of std 1/sqrt(k) plus ``strong`` dominant rank-1 directions."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.randn(n, k, generator=g) / math.sqrt(k)
    u = torch.linalg.qr(torch.randn(n, strong, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(k, strong, generator=g, dtype=torch.float64))[0]
    sv = 2.5 * torch.logspace(0, -0.5, strong, dtype=torch.float64)  # bulk's top singular value is ~2
    return (bulk.double() + (u * sv) @ v.T).float()


def rtn_int4(t: Tensor, group_size: int = 64) -> Tensor:
    """Symmetric round-to-nearest INT4 fake quantization in groups of ``group_size`` along the last dim.

    ``scale = absmax / 7`` per group (the Nunchaku kernel rule), values in [-7, 7]; an all-zero group stays zero.
    """
    shape = t.shape
    if shape[-1] % group_size:
        raise ValueError(f"last dim {shape[-1]} is not a multiple of the group size {group_size}")
    groups = t.reshape(-1, group_size).float()
    scale = groups.abs().amax(dim=1, keepdim=True) / 7.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(groups / scale), -7, 7) * scale
    return q.reshape(shape).to(t.dtype)


def snr_db(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-noise ratio of ``approx`` against ``reference`` in dB: 10 log10(|ref|^2 / |ref - approx|^2)."""
    ref = reference.double()
    noise = (ref - approx.double()).square().sum()
    return float(10.0 * torch.log10(ref.square().sum() / noise))
