"""What the svdquant benchmark scripts share: layers with the outlier structure SVDQuant targets, and SNR.

Li et al., "SVDQuant" (ICLR 2025), Sec. 3: DiT activations carry a few input channels 20-100x larger
than the rest in every token; trained weights have a few dominant singular directions over a bulk.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def outlier_activations(m: int, k: int, *, n_outliers: int = 8, seed: int = 0) -> Tensor:
    """Unit Gaussian channels, ``n_outliers`` of them (fixed per layer, with an offset) scaled by 20-100x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    channels = torch.randperm(k, generator=g)[:n_outliers]
    gains = 20.0 + 80.0 * torch.rand(n_outliers, generator=g)
    x[:, channels] = (x[:, channels] + torch.randn(n_outliers, generator=g)) * gains
    return x


def structured_weight(n: int, k: int, *, strong: int = 16, seed: int = 1) -> Tensor:
    """A Gaussian bulk of std 1/sqrt(k) plus ``strong`` dominant rank-1 directions."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.randn(n, k, generator=g) / math.sqrt(k)
    u = torch.linalg.qr(torch.randn(n, strong, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(k, strong, generator=g, dtype=torch.float64))[0]
    sv = 2.5 * torch.logspace(0, -0.5, strong, dtype=torch.float64)
    return (bulk.double() + (u * sv) @ v.T).float()


def snr_db(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-noise ratio of ``approx`` against ``reference`` in dB (float64)."""
    ref = reference.double()
    return float(10.0 * torch.log10(ref.square().sum() / (ref - approx.double()).square().sum().clamp(min=1e-300)))
