"""Test helpers of the kernel tests: inputs in the W4A8 and KV4 formats of the spec, built independently of
``qserve.quant`` so the kernels are checked against the written rules, not against the code that writes them."""

from __future__ import annotations

import torch
from torch import Tensor


def pack_u4(q: Tensor) -> Tensor:
    """uint8 codes ``[..., K]`` in 0..15 -> ``[..., K/2]`` (low nibble = even channel)."""
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def quantize_weight_g128(w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """QoQ progressive g128: ``(qweight, s1_scales, s2_scales, s2_zeros, q8_hat)`` of ``w [N, K]``."""
    n, k = w.shape
    w = w.float()
    s0 = (w.abs().amax(dim=1) / 119).clamp(min=1e-8).half()
    q8 = torch.round(w / s0.float()[:, None]).clamp(-119, 119)  # [N, K]
    g = q8.reshape(n, k // 128, 128)
    mn, mx = g.amin(dim=2), g.amax(dim=2)  # [N, K/128]
    s = torch.clamp(torch.ceil((mx - mn) / 15), min=1)
    z = torch.round(-mn / s).clamp(0, 15)
    q4 = (torch.round(g / s[..., None]) + z[..., None]).clamp(0, 15)
    q8_hat = (q4 * s[..., None] - (z * s)[..., None]).reshape(n, k)
    assert q8_hat.min() >= -128 and q8_hat.max() <= 127
    qweight = pack_u4(q4.reshape(n, k))
    return qweight, s0, s.T.contiguous().to(torch.uint8), (-(z * s)).T.contiguous().to(torch.int8), q8_hat


def quantize_weight_per_channel(w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-channel UINT4 with fp16 scale and pre-scaled zero: ``(qweight, s1_scales, s1_szeros, q4)``."""
    w = w.float()
    mn, mx = w.amin(dim=1), w.amax(dim=1)
    s = ((mx - mn) / 15).clamp(min=1e-8).half()
    z = torch.round(-mn / s.float()).clamp(0, 15)
    q4 = (torch.round(w / s.float()[:, None]) + z[:, None]).clamp(0, 15)
    return pack_u4(q4), s, (z * s.float()).half(), q4


def quantize_kv(x: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric per-vector KV quantization over the last dim: ``(codes, scales fp16, zeros fp16)``."""
    levels = (1 << bits) - 1
    x = x.float()
    mn, mx = x.amin(dim=-1), x.amax(dim=-1)
    scale = ((mx - mn) / levels).half()
    zero = mn.half()
    s = scale.float()[..., None]
    q = torch.where(s > 0, torch.round((x - zero.float()[..., None]) / torch.where(s > 0, s, 1.0)), 0.0)
    q = q.clamp(0, levels).to(torch.uint8)
    return (pack_u4(q) if bits == 4 else q), scale, zero
