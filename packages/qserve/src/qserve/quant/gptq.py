"""GPTQ for the QoQ W4 formats: column-by-column rounding with second-order error compensation.

Frantar et al., "GPTQ" (ICLR 2023), as the QoQ recipe runs it after the clipping search (Lin et al., "QServe",
arXiv 2405.04532, Sec. 4.1; the reference's configs use damping 0.01 and blocks of 128). Each input column is
rounded with the exact W4 format of :mod:`qserve.quant.formats`, and its rounding error, scaled by the inverse
Hessian ``(X^T X + damp I)^-1`` of the layer's calibration inputs, is pushed onto the columns not yet rounded.
For the g128 format the per-channel level-0 scale comes from the original weight (values that compensation pushes
past it saturate at +-119), and each group's integer scale and zero are taken, with its clip ratio, when GPTQ
reaches the group's first column (the weights as compensated so far), as the reference does.
"""

from __future__ import annotations

import torch

from qserve.errors import InputError
from qserve.quant.formats import (
    PROTECTIVE_RANGE,
    W4A8ChannelWeight,
    W4A8Weight,
    _check_weight,
    _safe_div,
    channel_zeros,
    pack_u4,
    quantize_w4_channel,
    u4_group_params,
)

__all__ = ["gptq_w4"]


def _inverse_hessian(x: torch.Tensor, w: torch.Tensor, damp: float) -> torch.Tensor:
    xd = x.double().to(w.device)
    h = xd.t() @ xd  # [K, K]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(h.shape[0], dtype=h.dtype, device=h.device) * (damp * float(torch.diag(h).mean()))
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True)  # [K, K]


@torch.no_grad()
def gptq_w4(
    w: torch.Tensor,
    x: torch.Tensor,
    group: int = 128,
    clip_ratio: torch.Tensor | None = None,
    damp: float = 0.01,
) -> W4A8Weight | W4A8ChannelWeight:
    """GPTQ-quantize ``w`` [N, K] with calibration inputs ``x`` [T, K] into the g128 (or per-channel) W4 format."""
    _check_weight(w, group)
    n, k = w.shape
    if x.dim() != 2 or x.shape[1] != k:
        raise InputError(f"calibration inputs must be [T, {k}], found {tuple(x.shape)}")
    wd = w.double().clone()
    hinv = _inverse_hessian(x, wd, damp)
    block = group if group > 0 else 128
    if group > 0:
        s0 = (w.float().abs().amax(dim=1) / PROTECTIVE_RANGE).to(torch.float16)  # [N]
        s0d = s0.double()
        s1_all = torch.ones(n, k // group, dtype=torch.float64, device=w.device)
        z_all = torch.zeros_like(s1_all)
    else:
        ch = quantize_w4_channel(w, clip_ratio)  # per-channel scale and zero are fixed up front
        s_ch = ch.s1_scales.double()
        z_ch = channel_zeros(ch).double()
    q4 = torch.zeros(n, k, dtype=torch.float64, device=w.device)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = wd[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        if group > 0:
            gi = i1 // group
            q8g = torch.round(_safe_div(w1, s0d[:, None])).clamp(-PROTECTIVE_RANGE, PROTECTIVE_RANGE)
            lo, hi = q8g.amin(dim=1).clamp(max=0), q8g.amax(dim=1).clamp(min=0)
            if clip_ratio is not None:
                lo, hi = lo * clip_ratio[:, gi].double(), hi * clip_ratio[:, gi].double()
            s1, z = u4_group_params(lo, hi)  # [N]
            s1_all[:, gi], z_all[:, gi] = s1, z
        for i in range(i2 - i1):
            col = w1[:, i]
            if group > 0:
                q8 = torch.round(_safe_div(col, s0d)).clamp(-PROTECTIVE_RANGE, PROTECTIVE_RANGE)
                q = (torch.round(q8 / s1) + z).clamp(0, 15)
                deq = (q * s1 - z * s1) * s0d
            else:
                q = (torch.round(_safe_div(col, s_ch)) + z_ch).clamp(0, 15)
                q = torch.where(s_ch == 0, z_ch, q)
                deq = (q - z_ch) * s_ch
            q4[:, i1 + i] = q
            e = (col - deq) / h1[i, i]
            w1[:, i:] -= e[:, None] * h1[i, i:][None, :]
            err1[:, i] = e
        wd[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    packed = pack_u4(q4.to(torch.uint8))
    if group > 0:
        return W4A8Weight(
            qweight=packed,
            s1_scales=s0,
            s2_scales=s1_all.t().contiguous().to(torch.uint8),
            s2_zeros=(-z_all * s1_all).t().contiguous().to(torch.int8),
        )
    return W4A8ChannelWeight(packed, ch.s1_scales, ch.s1_szeros)
