"""Per-token, per-head asymmetric INT4 (or INT8) quantization of the KV cache, and UINT4 nibble packing.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 4.2 (KV4 with SmoothAttention) and Sec. 5.3 (the KV4 attention kernel). Every token of every KV head has
its own fp16 scale and zero over its ``head_dim`` channels, as the reference's ``fine_grained`` KV granularity.

**KV4** (``bits=4``), computed in fp32 from the input, then rounded to fp16 and used *as stored*:
``scale = (max - min) / 15``, ``zero = min``, ``q = clamp(round_half_even((x - zero) / scale), 0, 15)``;
a token-head whose stored scale is 0 (a constant vector, or a range that underflows fp16) gets codes 0.
Dequantization is ``x_hat = q * scale + zero`` in fp32, then cast ("q*s+z", the form the kernels use).
Inside the range ``|x - x_hat| <= scale / 2``; the fp16 rounding of ``zero`` and ``scale`` adds at most
``2**-9 * absmax`` (plus ``levels * 2**-25`` for a subnormal scale) at the two ends of the range.
**KV8** is the same rule with 255 levels and unpacked uint8 codes; **KV16** is the identity.

**Packing**: two UINT4 codes per ``uint8`` along the last dimension, the even channel in the low nibble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from qserve.errors import ConfigError, InputError

__all__ = ["FP16_MAX", "KVCodes", "KVQuantizer", "pack_u4", "unpack_u4"]

FP16_MAX = 65504.0


def pack_u4(codes: torch.Tensor) -> torch.Tensor:
    """Pack UINT4 codes ``[..., K]`` (any integer dtype, values in [0, 15], K even) into uint8 ``[..., K/2]``."""
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise InputError(f"pack_u4 expects integer codes, found dtype {codes.dtype}")
    if codes.shape[-1] % 2:
        raise InputError(f"pack_u4 expects an even last dimension, found shape {tuple(codes.shape)}")
    c = codes.to(torch.int16)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) > 15):
        raise InputError(f"pack_u4 expects codes in [0, 15], found [{int(c.min())}, {int(c.max())}]")
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8)


def unpack_u4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_u4`: uint8 ``[..., K/2]`` -> uint8 codes ``[..., K]``."""
    if packed.dtype != torch.uint8:
        raise InputError(f"unpack_u4 expects uint8, found dtype {packed.dtype}")
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`InputError` if ``x`` holds NaN or Inf (quantization would silently spread them)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{what} must be finite, found {bad} NaN/Inf value(s) in shape {tuple(x.shape)}")


class KVCodes(NamedTuple):
    """Quantized keys or values: ``codes`` (uint8 ``[..., D/2]`` for KV4, ``[..., D]`` for KV8, the input for
    KV16) and fp16 ``scales`` / ``zeros`` ``[...]`` (one per token and head; ones / zeros for KV16)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor


@dataclass(frozen=True)
class KVQuantizer:
    """Dynamic per-token, per-head KV quantizer with ``bits`` in {4, 8, 16} (16 = no quantization).

    Inputs are ``[..., D]`` with the head dimension last (e.g. ``[B, Hkv, T, D]`` or ``[T, Hkv, D]``).
    """

    bits: int = 4

    def __post_init__(self) -> None:
        if self.bits not in (4, 8, 16):
            raise ConfigError(f"KV bits must be 4, 8 or 16, found {self.bits}")

    @property
    def levels(self) -> int:
        """The largest code (15 for KV4, 255 for KV8)."""
        return (1 << self.bits) - 1

    def bytes_per_token_head(self, head_dim: int) -> int:
        """Cache bytes for one token of one KV head, scale and zero included."""
        if self.bits == 16:
            return 2 * head_dim
        return head_dim * self.bits // 8 + 4

    def quantize(self, x: torch.Tensor) -> KVCodes:
        """Quantize ``x`` ``[..., D]`` (float) per vector along the last dimension."""
        if not x.dtype.is_floating_point:
            raise InputError(f"KV quantization expects a float tensor, found dtype {x.dtype}")
        check_finite(x, "keys/values")
        lead = x.shape[:-1]
        if self.bits == 16:
            ones = torch.ones(lead, dtype=torch.float16, device=x.device)
            return KVCodes(x, ones, torch.zeros_like(ones))
        d = x.shape[-1]
        if self.bits == 4 and d % 2:
            raise InputError(f"KV4 expects an even head_dim, found {d}")
        xf = x.float()
        if xf.numel() and float(xf.abs().max()) > FP16_MAX:
            raise InputError(f"KV values must fit fp16 (|x| <= {FP16_MAX}), found {float(xf.abs().max())}")
        mn = xf.amin(dim=-1)  # [...]
        mx = xf.amax(dim=-1)  # [...]
        scales = ((mx - mn) / self.levels).to(torch.float16)
        zeros = mn.to(torch.float16)
        s = scales.float().unsqueeze(-1)
        zero_scale = s == 0
        q = torch.round((xf - zeros.float().unsqueeze(-1)) / torch.where(zero_scale, 1.0, s))
        q = torch.where(zero_scale, 0.0, q).clamp_(0, self.levels).to(torch.uint8)  # [..., D]
        codes = pack_u4(q) if self.bits == 4 else q
        return KVCodes(codes, scales, zeros)

    def dequantize(
        self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """``q * scale + zero`` in fp32, cast to ``dtype``; ``[..., D]``."""
        if self.bits == 16:
            return codes.to(dtype)
        q = unpack_u4(codes) if self.bits == 4 else codes
        if q.dtype != torch.uint8:
            raise InputError(f"KV{self.bits} codes must be uint8, found {q.dtype}")
        if q.shape[:-1] != scales.shape or scales.shape != zeros.shape:
            raise InputError(
                f"KV codes {tuple(codes.shape)} need scales/zeros of shape {tuple(q.shape[:-1])}, "
                f"found {tuple(scales.shape)} / {tuple(zeros.shape)}"
            )
        x = q.float() * scales.float().unsqueeze(-1) + zeros.float().unsqueeze(-1)
        return x.to(dtype)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize then dequantize ``x`` (same shape and dtype): what attention sees from the cache."""
        if self.bits == 16:
            return x
        return self.dequantize(*self.quantize(x), dtype=x.dtype)
