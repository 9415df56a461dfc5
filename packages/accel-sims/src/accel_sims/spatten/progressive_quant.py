"""Progressive quantization: fetch the MSBs of keys and values first; refetch the LSBs only for flat softmaxes.

SpAtten (arXiv:2012.09852), Sec. 3.4: attention with a dominant probability tolerates coarse keys; a flat distribution
does not. The first pass uses `msb` bits; when a query's maximum probability is below the threshold
(`RequantDecision.scala`: need_requant := max < threshold), the LSBs are fetched and that query is recomputed with
`msb + extra` bits. Quantization is symmetric and linear with one scale per (batch, head) tensor on the full
`msb + extra`-bit grid; the MSB pass is that same fixed-point number with its `extra` low bits dropped (rounded to a
multiple of 2^extra), so the LSB refetch completes the very number the first fetch started.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def quantize(x: Tensor, bits: int, drop_bits: int = 0) -> Tensor:
    """Symmetric linear fake quantization to `bits` with one scale per `[.., L, D]` matrix (max |x| maps to the top),
    keeping only the top `bits - drop_bits` bits: the integer is rounded to a multiple of 2^drop_bits."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12) / qmax
    step = 2**drop_bits
    top = (qmax // step) * step
    return torch.clamp(torch.round(x / (scale * step)) * step, -top, top) * scale


def needs_requant(probs: Tensor, threshold: float) -> Tensor:
    """Per query, True when its maximum probability is below `threshold` (`[B, H, Lq, Lk]` -> `[B, H, Lq]`)."""
    return probs.amax(dim=-1) < threshold


def progressive_probs(
    q: Tensor, k: Tensor, bias: Tensor | None, msb_bits: int, extra_bits: int, threshold: float
) -> tuple[Tensor, Tensor]:
    """Softmax(q k^T / sqrt(D) + bias) from MSB keys, redone with MSB+LSB keys for queries whose max probability is
    below `threshold`. Returns `(probs [B, H, Lq, Lk], requant [B, H, Lq])`."""
    scale = 1.0 / math.sqrt(q.shape[-1])

    def probs_with(kq: Tensor) -> Tensor:
        s = (q @ kq.transpose(-1, -2)) * scale
        return torch.softmax(s if bias is None else s + bias, dim=-1)

    p_lo = probs_with(quantize(k, msb_bits + extra_bits, drop_bits=extra_bits))
    requant = needs_requant(p_lo, threshold)
    if not bool(requant.any()):
        return p_lo, requant
    p_hi = probs_with(quantize(k, msb_bits + extra_bits))
    return torch.where(requant[..., None], p_hi, p_lo), requant


def progressive_values(probs: Tensor, v: Tensor, requant: Tensor, msb_bits: int, extra_bits: int) -> Tensor:
    """probs @ V with MSB-only values, except for requantized queries, which use MSB+LSB values."""
    out = probs @ quantize(v, msb_bits + extra_bits, drop_bits=extra_bits)
    if bool(requant.any()):
        out = torch.where(requant[..., None], probs @ quantize(v, msb_bits + extra_bits), out)
    return out
