"""Softmax cross-attention from image tokens to the text tokens.

SANA (Xie et al., ICLR 2025), Sec. 2.2 and Fig. 5: each Linear DiT block attends to the projected
text-encoder states with ordinary multi-head softmax attention (the text is short, so the
quadratic cost is N x L, not N x N). Padding tokens are excluded through the attention mask.
SANA-1.5 adds RMSNorm on q and k ("cross_norm").

In fp16 the scores are computed in fp32: q.k of large-magnitude activations overflows fp16's
range long before it would matter in bf16 or fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linear_dit.norms import RMSNorm, autocast_off, clamp_fp16

__all__ = ["CrossAttention"]


class CrossAttention(nn.Module):
    """``x [B,N,C]`` attends to ``y [B,L,C]``; ``mask [B,L]`` (bool, True = keep) or None."""

    def __init__(self, dim: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm: nn.Module = RMSNorm(dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        # x is the raw residual stream (no norm before the cross-attention): its projection
        # overflows fp16 first, and an inf query turns the softmax into NaN.
        q = self.q_norm(clamp_fp16(self.q_linear(x)))
        k, v = clamp_fp16(self.kv_linear(y)).chunk(2, dim=-1)
        k = self.k_norm(k)
        q = q.view(b, n, self.heads, -1).transpose(1, 2)  # [B, h, N, hd]
        k = k.view(b, -1, self.heads, q.shape[-1]).transpose(1, 2)  # [B, h, L, hd]
        v = v.view(b, -1, self.heads, q.shape[-1]).transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, L]
        dtype = q.dtype
        if dtype == torch.float16:
            with autocast_off(q.device):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = clamp_fp16(out.to(dtype)).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)
