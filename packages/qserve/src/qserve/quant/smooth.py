"""SmoothAttention and down_proj smoothing of QoQ, both folded into the preceding projections offline.

Lin et al., "QServe" (arXiv 2405.04532), Sec. 4.2 (SmoothAttention) and Sec. 4.3 (smoothing, after SmoothQuant).

**SmoothAttention**: the keys have a few outlier channels that ruin per-token 4-bit KV quantization, while the
queries are not quantized. Dividing key channel ``j`` by ``lambda_j = max|K_j| ** alpha`` and multiplying the
query channel by it leaves every score ``q . k`` unchanged. The factors are folded into the output rows of k_proj
(divide) and q_proj (multiply). RoPE rotates channel ``j`` with ``j + D/2``, so the two share one lambda (their
max), which makes the scaling commute with RoPE; with grouped-query attention each KV head has its own lambda and
every query head of its group uses it. ``max|K|`` is measured on post-RoPE keys, as the reference does.

**down_proj smoothing**: ``s_j = max|x_j| ** alpha / max|W_:,j| ** (1 - alpha)`` over the down_proj inputs ``x``;
``x / s`` is what the INT8 activation quantizer sees and ``W * s`` what the W4 quantizer sees. ``1 / s`` is
folded into the up_proj output rows (SwiGLU is linear in the up branch). ``alpha`` comes from a small grid,
scored by the down_proj output error with both operands fake-quantized; "no smoothing" is always a candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from qserve.errors import InputError
from qserve.model import LlamaAttention, LlamaMLP
from qserve.quant.formats import fake_quantize_activation

__all__ = ["attention_lambda", "smooth_attention", "smooth_down", "smooth_scale"]

_EPS = 1e-5


def attention_lambda(key_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """``lambda`` [Hkv, D] from post-RoPE key absmax [Hkv, D], shared by each RoPE pair (j, j + D/2)."""
    hkv, d = key_absmax.shape
    if d % 2:
        raise InputError(f"head_dim must be even for RoPE pairs, found {d}")
    pair = key_absmax.float().view(hkv, 2, d // 2).amax(dim=1)  # [Hkv, D/2]
    lam = pair.clamp(min=_EPS).pow(alpha)
    return torch.cat((lam, lam), dim=1)  # [Hkv, D]


@torch.no_grad()
def smooth_attention(attn: LlamaAttention, key_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Fold SmoothAttention into ``attn``'s q_proj/k_proj in place; returns ``lambda`` [Hkv, D]."""
    hkv, hq, d = attn.num_kv_heads, attn.num_heads, attn.head_dim
    if key_absmax.shape != (hkv, d):
        raise InputError(f"key_absmax must be [{hkv}, {d}], found {tuple(key_absmax.shape)}")
    lam = attention_lambda(key_absmax, alpha).to(attn.k_proj.weight.device)  # [Hkv, D]
    lam_q = lam.repeat_interleave(hq // hkv, dim=0)  # [Hq, D]: query head h reads kv head h // (Hq // Hkv)
    for lin, f in ((attn.k_proj, 1.0 / lam.reshape(-1)), (attn.q_proj, lam_q.reshape(-1))):
        lin.weight.mul_(f.to(lin.weight.dtype)[:, None])
        if lin.bias is not None:
            lin.bias.mul_(f.to(lin.bias.dtype))
    return lam


def smooth_scale(x_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant factor ``max|x| ** alpha / max|W| ** (1 - alpha)`` per input channel."""
    return (x_absmax.float().clamp(min=_EPS).pow(alpha) / w_absmax.float().clamp(min=_EPS).pow(1 - alpha)).clamp(
        min=_EPS
    )


@torch.no_grad()
def smooth_down(
    mlp: LlamaMLP,
    x: torch.Tensor,
    alphas: Sequence[float],
    fake_weight: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[float | None, torch.Tensor]:
    """Pick the best ``alpha`` for down_proj from calibration inputs ``x`` [T, I] and fold it in place.

    Returns (alpha or None when not smoothing is best, the factor ``s`` [I] (ones when None)); the caller
    divides its stored down_proj inputs by ``s``.
    """
    down = mlp.down_proj
    w = down.weight.float()  # [C, I]
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise InputError(f"down_proj inputs must be [T, {w.shape[1]}], found {tuple(x.shape)}")
    xf = x.float().to(w.device)
    ref = xf @ w.t()  # [T, C]
    x_absmax, w_absmax = xf.abs().amax(dim=0), w.abs().amax(dim=0)

    def error(s: torch.Tensor) -> float:
        y = fake_quantize_activation(xf / s) @ fake_weight(w * s).float().t()
        return float((y - ref).square().sum())

    ones = torch.ones(w.shape[1], device=w.device)
    best_alpha: float | None = None
    best_s, best_err = ones, error(ones)
    for a in alphas:
        s = smooth_scale(x_absmax, w_absmax, a)
        err = error(s)
        if err < best_err:
            best_alpha, best_s, best_err = float(a), s, err
    if best_alpha is not None:
        down.weight.mul_(best_s.to(down.weight.dtype)[None, :])
        mlp.up_proj.weight.div_(best_s.to(mlp.up_proj.weight.dtype)[:, None])
        if mlp.up_proj.bias is not None:
            mlp.up_proj.bias.div_(best_s.to(mlp.up_proj.bias.dtype))
    return best_alpha, best_s
