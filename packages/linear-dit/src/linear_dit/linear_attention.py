"""ReLU linear attention ("LiteLA") of the Linear DiT.

SANA (Xie et al., ICLR 2025), Sec. 2.2 "Linear Attention": softmax(QK^T)V is replaced by
``ReLU(Q) (ReLU(K)^T V) / (ReLU(Q) sum_j ReLU(K_j))``, computed right to left, so cost and memory
grow linearly with the token count N. SANA-1.5, Sec. 2.1: optional RMSNorm on q and k over the
full width, before the ReLU.

The Sana code gets the normaliser by padding V with a row of ones; here the key sum is computed
directly (the same quantity, without materialising the padded copy). Both products and the
division run in fp32 whatever the input dtype, which is what keeps fp16/bf16 free of NaN: the key
state sums N non-negative products and overflows fp16 at 4K token counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linear_dit.norms import RMSNorm, autocast_off, clamp_fp16

__all__ = ["LinearAttention", "relu_linear_attention", "relu_linear_attention_reference"]


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """Multi-head ReLU linear attention on ``[B, N, heads, d]`` tensors; returns fp32 ``[B, N, heads, d]``.

    ``q`` and ``k`` are the pre-activation queries and keys (the ReLU is applied here).
    """
    # Under fp16 autocast the einsums would run in fp16 again: the normaliser sums N products
    # and overflows at 4K token counts even for unit-variance inputs.
    with autocast_off(q.device):
        q = F.relu(q.float())
        k = F.relu(k.float())
        v = v.float()
        kv = torch.einsum("bnhd,bnhe->bhde", k, v)  # [B, h, d, d]: the whole key-value state
        k_sum = k.sum(dim=1)  # [B, h, d]
        num = torch.einsum("bnhd,bhde->bnhe", q, kv)  # [B, N, h, d]
        den = torch.einsum("bnhd,bhd->bnh", q, k_sum).unsqueeze(-1)  # [B, N, h, 1]
        return num / (den + eps)


def relu_linear_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """The quadratic form of the same attention (``[B, N, heads, d]``), for tests: an explicit N x N
    matrix of non-negative scores, each row divided by its sum plus eps."""
    q = F.relu(q.double()).transpose(1, 2)
    k = F.relu(k.double()).transpose(1, 2)
    scores = q @ k.transpose(-1, -2)  # [B, h, N, N]
    out = (scores @ v.double().transpose(1, 2)) / (scores.sum(-1, keepdim=True) + eps)
    return out.transpose(1, 2)


class FusedQKV(nn.Linear):
    """The ``[3C, C]`` qkv projection (one checkpoint tensor) returning q, k and v separately.

    Three products on row blocks of the fused weight are measurably faster on the CPU than one
    ``[C, 3C]`` product followed by strided chunks, and each output comes out contiguous.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, 3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        q, k, v = (F.linear(x, w) for w in self.weight.chunk(3, dim=0))
        return q, k, v


class LinearAttention(nn.Module):
    """Self-attention block of the Linear DiT: fused qkv (no bias), ReLU linear attention, proj."""

    def __init__(self, dim: int, head_dim: int, eps: float, qk_norm: bool) -> None:
        super().__init__()
        self.dim, self.head_dim, self.eps = dim, head_dim, eps
        self.qkv = FusedQKV(dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm: nn.Module = RMSNorm(dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv: torch.Tensor | tuple[torch.Tensor, ...] = self.qkv(x)
        # FusedQKV returns (q, k, v), but libraries that swap every nn.Linear for their own module
        # (svdquant, torchao) put in one that returns the plain [B, N, 3C] product: split that here.
        parts = qkv if isinstance(qkv, tuple | list) else qkv.chunk(3, dim=-1)
        q, k, v = (clamp_fp16(t) for t in parts)  # each [B, N, C], heads contiguous along C
        q, k = self.q_norm(q), self.k_norm(k)
        heads = c // self.head_dim
        shape = (b, n, heads, self.head_dim)
        out = relu_linear_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), self.eps)
        # Each output is a convex combination of values, so the cast back cannot overflow;
        # the clamp only guards fp16 against values that were already at the limit.
        out = clamp_fp16(out.reshape(b, n, c).to(x.dtype))
        return self.proj(out)
