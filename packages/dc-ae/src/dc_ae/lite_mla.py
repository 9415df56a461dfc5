"""ReLU linear attention (LiteMLA) of EfficientViT, as used inside DC-AE's EfficientViT blocks.

Paper: Cai et al., "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense
Prediction" (ICCV 2023), Sec. 3.1; DC-AE (ICLR 2025) Sec. 3 reuses it at low resolutions.

The fused 1x1 ``qkv`` conv is laid out per head: channels ``[h*3*d : (h+1)*3*d]`` hold that head's
q, k and v. Multi-scale aggregation adds depthwise-5x5 + grouped-1x1 views of qkv as extra heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dc_ae.norms import RMSNorm2d

__all__ = ["LiteMLA", "relu_linear_attention", "relu_quadratic_attention"]

# The official normaliser epsilon: small enough that an all-zero ReLU(k) row stays well defined.
EPS = 1e-15


def relu_linear_attention(qkv: torch.Tensor, head_dim: int) -> torch.Tensor:
    """O(N) attention: out = (v k^T) q / (1^T k^T q). qkv [B, heads*3*d, H, W] -> [B, heads*d, H, W]."""
    B, _, H, W = qkv.shape
    dtype = qkv.dtype
    # Sums over all N tokens overflow fp16 and lose bits in bf16: accumulate in fp32.
    qkv = qkv.float().reshape(B, -1, 3 * head_dim, H * W)  # (B, h, 3d, N)
    q, k, v = qkv.split(head_dim, dim=2)
    q, k = F.relu(q), F.relu(k)
    v = F.pad(v, (0, 0, 0, 1), value=1.0)  # (B, h, d+1, N): the ones row yields the normaliser
    vk = v @ k.transpose(-1, -2)  # (B, h, d+1, d)
    out = vk @ q  # (B, h, d+1, N)
    out = out[:, :, :-1] / (out[:, :, -1:] + EPS)
    return out.reshape(B, -1, H, W).to(dtype)


def relu_quadratic_attention(qkv: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The same ReLU kernel in O(N^2) form, cheaper when N <= head_dim (tiny maps)."""
    B, _, H, W = qkv.shape
    dtype = qkv.dtype
    qkv = qkv.float().reshape(B, -1, 3 * head_dim, H * W)
    q, k, v = qkv.split(head_dim, dim=2)
    q, k = F.relu(q), F.relu(k)
    att = k.transpose(-1, -2) @ q  # (B, h, N_k, N_q)
    att = att / (att.sum(dim=2, keepdim=True) + EPS)
    out = v @ att  # (B, h, d, N)
    return out.reshape(B, -1, H, W).to(dtype)


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention with a normalised output projection."""

    def __init__(self, channels: int, head_dim: int, scales: tuple[int, ...] = (), norm: str = "rms2d") -> None:
        super().__init__()
        self.head_dim = head_dim
        heads = channels // head_dim
        inner = heads * head_dim
        self.qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * inner, 3 * inner, s, padding=s // 2, groups=3 * inner, bias=False),
                nn.Conv2d(3 * inner, 3 * inner, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = nn.Conv2d(inner * (1 + len(scales)), channels, 1, bias=False)
        self.norm = make_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = _pointwise(x, self.qkv.weight)  # (B, 3*inner, H, W), channels-last strides
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        H, W = x.shape[-2:]
        if H * W > self.head_dim:
            out = relu_linear_attention(qkv, self.head_dim)
        else:
            out = relu_quadratic_attention(qkv, self.head_dim)
        return self.norm(_pointwise(out, self.proj.weight))


def _pointwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bias-free 1x1 conv as one matmul over the pixels; the result has channels-last strides.

    On CPU this skips oneDNN's layout reorders around a 1x1 conv, leaves the multi-scale depthwise
    convs in the fast channels-last layout, and gives diffusers' ``Linear`` results bit for bit.
    """
    return F.linear(x.movedim(1, -1), weight.flatten(1)).movedim(-1, 1)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "rms2d":
        return RMSNorm2d(channels)
    if kind == "bn2d":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}")
