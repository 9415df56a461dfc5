"""The 4-bit number formats of SVDQuant: INT4 in groups, NVFP4, nibble packing, fake quantization.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 3 (W4A4 quantization of the residual) and Sec. 5 (INT4 and NVFP4 settings); the rules below follow
the Nunchaku engine so that checkpoints keep its tensor names.

Every group runs along the last (input, K) dimension: a weight ``[N, K]`` has one scale per output row
and group of K; an activation ``[..., K]`` one per token and group (dynamic, computed on the fly).

**INT4, signed** (weights and activations, default group 64). Per group ``scale = absmax / 7``, computed
in fp32 and rounded to the scale dtype (by default the input's dtype: bf16, fp16 or fp32); codes are
``round_half_even(x / scale)`` with the *stored* scale, clamped to ``[-8, 7]``. Because the scale is
absmax/7 (as in Nunchaku), ``|x / scale| <= 7 * (1 + 2**-8) < 7.5`` even after the scale is rounded to
bf16, so the code -8 is not produced: the codes are symmetric in ``[-7, 7]``. The one exception is a
scale that lands in the subnormal range of its dtype (fp16 groups with absmax below about 6e-6), where
rounding the scale loses relative precision; there the clamp bounds the codes to ``[-8, 7]``.
Dequantization is ``code * scale`` (fp32 product, rounded to the output dtype), so, outside that
exception, ``|x - dequant(x)| <= scale / 2`` per element (before that last rounding).

**INT4, unsigned** (activations after a GELU, shifted to be non-negative): ``scale = absmax / 15`` of
the non-negative input, codes in ``[0, 15]``. A negative value (an input that dips below the calibrated
shift at run time) is clamped to code 0.

**Zero groups**: a group whose scale is 0 (all zeros, or an absmax so small that absmax/7 underflows the
scale dtype) stores scale 0 and codes 0; the division uses 1 in its place, so there is no 0/0 and the
group dequantizes to exact zeros.

**NVFP4** (default group 16). E2M1 magnitudes ``{0, 0.5, 1, 1.5, 2, 3, 4, 6}``. A 4-bit code is
``sign << 3 | index`` where ``index`` (bits 0-2) points into that list; this is the OCP E2M1 bit layout
(bit 3 sign, bits 2-1 exponent, bit 0 mantissa). Zero is always code 0 (never -0). Rounding is to the
nearest grid value, ties to the even code (mantissa bit 0): 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2,
2.5 -> 2, 3.5 -> 4, 5 -> 4; magnitudes above 6 saturate to 6. Two levels of scale: a per-tensor fp32
``tensor_scale`` (default ``amax / (448 * 6)``, so the block scales use the whole E4M3 range; 1 for an
all-zero tensor) and one FP8-E4M3 (``torch.float8_e4m3fn``) scale per block,
``block_scale = e4m3(min(block_amax / 6 / tensor_scale, 448))`` (round to nearest even, as torch's cast).
Elements are divided by ``block_scale * tensor_scale`` (fp32). Activations use one level only, as the
reference does: no tensor scale, ``block_scale = e4m3(min(block_amax / 6, 448))``.

**Packing**: two codes per ``uint8``, the even index in the low nibble, the odd index in the high one.

**Checkpoint layout** (Nunchaku names, see :class:`QuantizedWeight`): ``qweight`` uint8 ``[N, K/2]``;
``wscales`` ``[K/G, N]`` (transposed: one row per group) in the weight dtype for INT4 and float8_e4m3fn
for NVFP4; NVFP4 adds ``wtscale`` (fp32, one element; Nunchaku stores it in 16 bits, we keep fp32 so the
scale used to quantize is the one stored) and optionally ``wcscales`` (``[N]``, a per-output-channel
factor applied after dequantization).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from svdquant.errors import CheckpointError, InputError

__all__ = [
    "E2M1_VALUES",
    "E4M3_MAX",
    "FP4_MAX",
    "Format",
    "Int4Tensor",
    "NVFP4Tensor",
    "QuantizedWeight",
    "dequantize_activation",
    "dequantize_int4",
    "dequantize_nvfp4",
    "e2m1_codes",
    "e2m1_decode",
    "fake_quantize_activation",
    "fake_quantize_weight",
    "pack_int4",
    "quantize_activation",
    "quantize_int4",
    "quantize_nvfp4",
    "quantize_weight",
    "unpack_int4",
]

Format = Literal["int4", "nvfp4"]

E2M1_VALUES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""E2M1 magnitudes, indexed by bits 0-2 of an FP4 code."""
FP4_MAX = 6.0
E4M3_MAX = 448.0
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Midpoints between consecutive E2M1 magnitudes; the ones whose upper neighbour has an even index
# (0.75 -> 1.0, 1.75 -> 2.0, 3.5 -> 4.0) round up on a tie, the others round down.
_E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


class Int4Tensor(NamedTuple):
    """INT4 codes packed two per byte (``[..., K/2]`` uint8) with one scale per group (``[..., K/G]``)."""

    packed: torch.Tensor
    scales: torch.Tensor
    unsigned: bool


class NVFP4Tensor(NamedTuple):
    """E2M1 codes packed two per byte (``[..., K/2]``), FP8-E4M3 block scales (``[..., K/G]``) and the
    fp32 per-tensor scale (shape ``(1,)``), or None for single-level (activation) quantization."""

    packed: torch.Tensor
    block_scales: torch.Tensor
    tensor_scale: torch.Tensor | None


# ----------------------------------------------------------------------------------------------- checks


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not x.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor, found dtype {x.dtype}")
    if x.dtype not in _FLOAT_DTYPES:
        raise InputError(f"{what} must be float32, float16 or bfloat16, found {x.dtype}")
    if torch.isnan(x).any():
        raise InputError(f"{what} contains NaN; 4-bit quantization needs finite values")
    if torch.isinf(x).any():
        raise InputError(f"{what} contains Inf; 4-bit quantization needs finite values")


def _check_group(x: torch.Tensor, group_size: int, what: str) -> int:
    if x.dim() == 0:
        raise InputError(f"{what} must have at least one dimension (the K dimension), found a scalar")
    k = x.shape[-1]
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise InputError(f"group size must be a positive integer, found {group_size!r}")
    if k == 0 or k % group_size != 0:
        raise InputError(
            f"{what}: the last dimension (K={k}) must be a positive multiple of the group size {group_size}; "
            "pad K or choose a group size that divides it"
        )
    return k // group_size


def _grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[..., K]`` -> fp32 ``[..., K/G, G]``."""
    return x.float().reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)


# --------------------------------------------------------------------------------------------- packing


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes two per byte: ``[..., K]`` -> uint8 ``[..., K/2]``, even index in the low nibble.

    ``q`` is int8 with values in ``[-8, 7]`` (signed codes, stored in two's complement) or uint8 with
    values in ``[0, 15]`` (unsigned INT4 and E2M1 codes). K must be even.
    """
    if q.dtype == torch.int8:
        lo_ok, hi_ok = -8, 7
    elif q.dtype == torch.uint8:
        lo_ok, hi_ok = 0, 15
    else:
        raise InputError(f"pack_int4 expects int8 (signed) or uint8 (unsigned) codes, found {q.dtype}")
    if q.dim() == 0 or q.shape[-1] % 2 != 0:
        raise InputError(f"pack_int4 needs an even last dimension, found shape {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < lo_ok or int(q.max()) > hi_ok):
        raise InputError(
            f"pack_int4: {q.dtype} codes must lie in [{lo_ok}, {hi_ok}], found [{int(q.min())}, {int(q.max())}]"
        )
    # int8 -> uint8 wraps two's complement (-8 -> 248), so masking keeps the low nibble 0b1000.
    nib = q.to(torch.uint8) & 0x0F
    return nib[..., 0::2] | (nib[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """Invert :func:`pack_int4`: uint8 ``[..., K/2]`` -> ``[..., K]``, int8 in ``[-8, 7]`` when ``signed``,
    else uint8 in ``[0, 15]``."""
    if packed.dtype != torch.uint8:
        raise InputError(f"unpack_int4 expects uint8 packed codes, found {packed.dtype}")
    if packed.dim() == 0:
        raise InputError("unpack_int4 expects at least one dimension, found a scalar")
    lo = packed & 0x0F
    hi = packed >> 4
    out = torch.stack((lo, hi), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
    if signed:
        # Sign-extend the nibble: (v ^ 8) - 8 maps 0..7 -> 0..7 and 8..15 -> -8..-1.
        return ((out.to(torch.int16) ^ 8) - 8).to(torch.int8)
    return out


# ------------------------------------------------------------------------------------------------ INT4


def _int4_codes(
    x: torch.Tensor, group_size: int, unsigned: bool, scale_dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpacked codes ``[..., K]`` (int8 signed / uint8 unsigned) and scales ``[..., K/G]``."""
    _check_finite(x, "input")
    _check_group(x, group_size, "input")
    sdt = x.dtype if scale_dtype is None else scale_dtype
    if sdt not in _FLOAT_DTYPES:
        raise InputError(f"INT4 scale dtype must be float32, float16 or bfloat16, found {sdt}")
    g = _grouped(x, group_size)
    if unsigned:
        absmax = g.clamp(min=0).amax(dim=-1)
        qmin, qmax = 0.0, 15.0
    else:
        absmax = g.abs().amax(dim=-1)
        qmin, qmax = -8.0, 7.0
    scales = (absmax / (15.0 if unsigned else 7.0)).to(sdt)
    if torch.isinf(scales).any():
        raise InputError(
            f"INT4 scale overflows {sdt}: largest |x| is {float(absmax.max()):.4g}; use a wider scale dtype"
        )
    s = scales.float().unsqueeze(-1)
    zero = s == 0
    codes = torch.round(g / torch.where(zero, torch.ones_like(s), s)).clamp(qmin, qmax)
    codes = torch.where(zero, torch.zeros_like(codes), codes).reshape(x.shape)
    return codes.to(torch.uint8 if unsigned else torch.int8), scales


def _int4_dequant(codes: torch.Tensor, scales: torch.Tensor, group_size: int, dtype: torch.dtype) -> torch.Tensor:
    g = codes.float().reshape(*codes.shape[:-1], codes.shape[-1] // group_size, group_size)
    return (g * scales.float().unsqueeze(-1)).reshape(codes.shape).to(dtype)


def quantize_int4(
    x: torch.Tensor, group_size: int = 64, *, unsigned: bool = False, scale_dtype: torch.dtype | None = None
) -> Int4Tensor:
    """Symmetric (or unsigned) INT4 quantization per group of ``group_size`` along the last dimension.

    ``x`` is ``[..., K]`` (bf16, fp16 or fp32) with K a multiple of ``group_size`` and even (packing).
    ``scale_dtype`` defaults to ``x.dtype``. See the module docstring for the exact rule.
    """
    codes, scales = _int4_codes(x, group_size, unsigned, scale_dtype)
    return Int4Tensor(pack_int4(codes), scales, unsigned)


def dequantize_int4(t: Int4Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``code * scale`` in fp32, rounded to ``dtype`` (default: the scale dtype); shape ``[..., K]``."""
    codes = unpack_int4(t.packed, signed=not t.unsigned)
    k = codes.shape[-1]
    groups = t.scales.shape[-1]
    if groups == 0 or k % groups != 0 or t.scales.shape[:-1] != codes.shape[:-1]:
        raise InputError(f"INT4 scales of shape {tuple(t.scales.shape)} do not fit codes of shape {tuple(codes.shape)}")
    return _int4_dequant(codes, t.scales, k // groups, t.scales.dtype if dtype is None else dtype)


# ----------------------------------------------------------------------------------------------- NVFP4


def e2m1_codes(v: torch.Tensor) -> torch.Tensor:
    """Round already-scaled values to the nearest E2M1 value (ties to even, saturating at +-6); uint8 codes."""
    m = v.float().abs()
    idx = torch.zeros(v.shape, dtype=torch.uint8, device=v.device)
    for i, mid in enumerate(_E2M1_MIDPOINTS):
        # The upper neighbour of midpoint i has index i + 1; on a tie, go up only if that index is even.
        up = m >= mid if (i + 1) % 2 == 0 else m > mid
        idx += up.to(torch.uint8)
    sign = ((v < 0) & (idx > 0)).to(torch.uint8) << 3
    return sign | idx


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8, 0..15) -> fp32 values."""
    table = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES), dtype=torch.float32, device=codes.device)
    return table[codes.long()]


def _nvfp4_codes(
    x: torch.Tensor, group_size: int, tensor_scale: torch.Tensor | float | None, two_level: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Unpacked uint8 codes ``[..., K]``, E4M3 block scales ``[..., K/G]`` and the tensor scale (or None)."""
    _check_finite(x, "input")
    _check_group(x, group_size, "input")
    g = _grouped(x, group_size)
    ts: torch.Tensor | None
    if two_level:
        if tensor_scale is None:
            amax = g.abs().amax()
            ts = torch.where(amax > 0, amax / (E4M3_MAX * FP4_MAX), torch.ones_like(amax)).reshape(1)
        else:
            ts = torch.as_tensor(tensor_scale, dtype=torch.float32, device=x.device).reshape(-1)
            if ts.numel() != 1 or not bool(torch.isfinite(ts).all()) or float(ts) <= 0:
                raise InputError(f"tensor_scale must be one positive finite number, found {ts.tolist()}")
        ts_f = ts
    else:
        if tensor_scale is not None:
            raise InputError("single-level NVFP4 (two_level=False) takes no tensor_scale, found one")
        ts = None
        ts_f = torch.ones(1, device=x.device)
    # The clamp keeps a block scale that fp32 rounding pushed just past 448 on the largest finite E4M3.
    block_scales = (g.abs().amax(dim=-1) / FP4_MAX / ts_f).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    s = block_scales.float().unsqueeze(-1) * ts_f
    zero = s == 0
    codes = e2m1_codes(g / torch.where(zero, torch.ones_like(s), s))
    codes = torch.where(zero, torch.zeros_like(codes), codes).reshape(x.shape)
    return codes, block_scales, ts


def _nvfp4_dequant(
    codes: torch.Tensor, block_scales: torch.Tensor, tensor_scale: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    k, groups = codes.shape[-1], block_scales.shape[-1]
    if groups == 0 or k % groups != 0 or block_scales.shape[:-1] != codes.shape[:-1]:
        raise InputError(
            f"NVFP4 block scales of shape {tuple(block_scales.shape)} do not fit codes of shape {tuple(codes.shape)}"
        )
    s = block_scales.float()
    if tensor_scale is not None:
        s = s * tensor_scale.float().reshape(())
    vals = e2m1_decode(codes).reshape(*codes.shape[:-1], groups, k // groups) * s.unsqueeze(-1)
    return vals.reshape(codes.shape).to(dtype)


def quantize_nvfp4(
    x: torch.Tensor,
    group_size: int = 16,
    tensor_scale: torch.Tensor | float | None = None,
    *,
    two_level: bool = True,
) -> NVFP4Tensor:
    """NVFP4 quantization of ``[..., K]``: E2M1 codes, one E4M3 scale per ``group_size`` elements.

    With ``two_level`` (weights), ``tensor_scale`` defaults to ``amax / (448 * 6)`` (fp32); pass one to
    reuse it. With ``two_level=False`` (activations, as the reference) there is no tensor scale and
    ``tensor_scale`` must be None. K must be even (two codes per byte).
    """
    codes, block_scales, ts = _nvfp4_codes(x, group_size, tensor_scale, two_level)
    return NVFP4Tensor(pack_int4(codes), block_scales, ts)


def dequantize_nvfp4(t: NVFP4Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``e2m1(code) * block_scale * tensor_scale`` in fp32, rounded to ``dtype``; shape ``[..., K]``."""
    return _nvfp4_dequant(unpack_int4(t.packed, signed=False), t.block_scales, t.tensor_scale, dtype)


# ------------------------------------------------------------------------------------ fake quantization


def _check_fmt(fmt: str) -> None:
    if fmt not in ("int4", "nvfp4"):
        raise InputError(f"format must be 'int4' or 'nvfp4', found {fmt!r}")


def fake_quantize_weight(w: torch.Tensor, fmt: Format, group_size: int) -> torch.Tensor:
    """Quantize then dequantize a weight ``[..., K]`` (INT4 signed, or two-level NVFP4); same shape and dtype.

    Equal to ``quantize_weight(w, ...).dequantize()`` for 2-D weights, without the packing.
    """
    _check_fmt(fmt)
    if fmt == "int4":
        codes, scales = _int4_codes(w, group_size, False, None)
        return _int4_dequant(codes, scales, group_size, w.dtype)
    return _nvfp4_fake(w, group_size, two_level=True)


def _nvfp4_fake(x: torch.Tensor, group_size: int, two_level: bool) -> torch.Tensor:
    codes, block_scales, ts = _nvfp4_codes(x, group_size, None, two_level)
    return _nvfp4_dequant(codes, block_scales, ts, x.dtype)


def fake_quantize_activation(x: torch.Tensor, fmt: Format, group_size: int, unsigned: bool = False) -> torch.Tensor:
    """Dynamic per-token, per-group quantize then dequantize of ``[..., K]``; same shape and dtype.

    ``unsigned`` (INT4 only) is for shifted post-GELU inputs: codes in [0, 15], scale absmax/15.
    NVFP4 activations are single level (E4M3 block scales, no tensor scale).
    """
    _check_fmt(fmt)
    if fmt == "int4":
        codes, scales = _int4_codes(x, group_size, unsigned, None)
        return _int4_dequant(codes, scales, group_size, x.dtype)
    if unsigned:
        raise InputError("unsigned activations exist for INT4 only, found fmt='nvfp4' with unsigned=True")
    return _nvfp4_fake(x, group_size, two_level=False)


def quantize_activation(
    x: torch.Tensor, fmt: Format, group_size: int, unsigned: bool = False
) -> Int4Tensor | NVFP4Tensor:
    """Dynamic activation quantization per token (all leading dims) and per group: packed codes and scales.

    INT4: scales in ``x.dtype`` (16-bit for bf16/fp16 models), ``[..., K/G]``. NVFP4: single level.
    """
    _check_fmt(fmt)
    if fmt == "int4":
        return quantize_int4(x, group_size, unsigned=unsigned)
    if unsigned:
        raise InputError("unsigned activations exist for INT4 only, found fmt='nvfp4' with unsigned=True")
    return quantize_nvfp4(x, group_size, two_level=False)


def dequantize_activation(t: Int4Tensor | NVFP4Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantize the result of :func:`quantize_activation` (default dtype: the INT4 scale dtype, else fp32)."""
    if isinstance(t, Int4Tensor):
        return dequantize_int4(t, dtype)
    return dequantize_nvfp4(t, torch.float32 if dtype is None else dtype)


# ------------------------------------------------------------------------------------- stored weights


@dataclass(frozen=True)
class QuantizedWeight:
    """A packed 4-bit weight ``[N, K]`` with Nunchaku's tensor names and layouts.

    ``qweight`` uint8 ``[N, K/2]``; ``wscales`` ``[K/G, N]`` (weight dtype for INT4, float8_e4m3fn for
    NVFP4); NVFP4 only: ``wtscale`` fp32 ``(1,)`` and optional ``wcscales`` ``[N]`` (multiplies output row
    n after dequantization). ``dtype`` is the dtype :meth:`dequantize` returns.
    """

    fmt: Format
    qweight: torch.Tensor
    wscales: torch.Tensor
    dtype: torch.dtype
    wtscale: torch.Tensor | None = None
    wcscales: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return int(self.qweight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.qweight.shape[1]) * 2

    @property
    def group_size(self) -> int:
        return self.in_features // int(self.wscales.shape[0])

    def dequantize(self) -> torch.Tensor:
        """The float weight ``[N, K]`` in :attr:`dtype`."""
        if self.fmt == "int4":
            return dequantize_int4(Int4Tensor(self.qweight, self.wscales.t(), False), self.dtype)
        w = dequantize_nvfp4(NVFP4Tensor(self.qweight, self.wscales.t(), self.wtscale), torch.float32)
        if self.wcscales is not None:
            w = w * self.wcscales.float().unsqueeze(-1)
        return w.to(self.dtype)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by Nunchaku name (``qweight``, ``wscales`` and, for NVFP4, ``wtscale``,
        ``wcscales`` when present)."""
        out = {"qweight": self.qweight, "wscales": self.wscales}
        if self.wtscale is not None:
            out["wtscale"] = self.wtscale
        if self.wcscales is not None:
            out["wcscales"] = self.wcscales
        return out

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], *, fmt: Format | None = None, dtype: torch.dtype | None = None
    ) -> QuantizedWeight:
        """Rebuild from :meth:`to_tensors`; ``fmt`` defaults to what ``wscales``' dtype says (float8 ->
        NVFP4), ``dtype`` to the INT4 scale dtype, or to ``wcscales``' dtype / fp32 for NVFP4.

        Raises CheckpointError naming the key on a missing, extra or misshaped tensor.
        """
        for key in ("qweight", "wscales"):
            if key not in tensors:
                raise CheckpointError(f"quantized weight: missing tensor {key!r}; found {sorted(tensors)}")
        qweight, wscales = tensors["qweight"], tensors["wscales"]
        if fmt is None:
            fmt = "nvfp4" if wscales.dtype == torch.float8_e4m3fn else "int4"
        _check_fmt(fmt)
        allowed = {"qweight", "wscales"} | ({"wtscale", "wcscales"} if fmt == "nvfp4" else set())
        extra = sorted(set(tensors) - allowed)
        if extra:
            raise CheckpointError(f"quantized {fmt} weight: unexpected tensors {extra}; expected {sorted(allowed)}")
        if qweight.dtype != torch.uint8 or qweight.dim() != 2:
            raise CheckpointError(f"'qweight' must be uint8 [N, K/2], found {qweight.dtype} {tuple(qweight.shape)}")
        n, k = int(qweight.shape[0]), int(qweight.shape[1]) * 2
        if wscales.dim() != 2 or wscales.shape[1] != n or wscales.shape[0] == 0 or k % wscales.shape[0] != 0:
            raise CheckpointError(f"'wscales' must be [K/G, N] = [K/G, {n}] with K={k}, found {tuple(wscales.shape)}")
        wtscale = tensors.get("wtscale")
        wcscales = tensors.get("wcscales")
        if fmt == "int4":
            if wscales.dtype not in _FLOAT_DTYPES:
                raise CheckpointError(f"INT4 'wscales' must be fp32/fp16/bf16, found {wscales.dtype}")
            out_dtype = wscales.dtype if dtype is None else dtype
        else:
            if wscales.dtype != torch.float8_e4m3fn:
                raise CheckpointError(f"NVFP4 'wscales' must be float8_e4m3fn, found {wscales.dtype}")
            if wtscale is None or wtscale.numel() != 1:
                found = "nothing" if wtscale is None else tuple(wtscale.shape)
                raise CheckpointError(f"NVFP4 needs a one-element 'wtscale', found {found}")
            if wcscales is not None and tuple(wcscales.shape) != (n,):
                raise CheckpointError(f"'wcscales' must have shape ({n},), found {tuple(wcscales.shape)}")
            out_dtype = dtype if dtype is not None else (wcscales.dtype if wcscales is not None else torch.float32)
        return cls(fmt, qweight, wscales, out_dtype, wtscale, wcscales)


def quantize_weight(w: torch.Tensor, fmt: Format, group_size: int | None = None) -> QuantizedWeight:
    """Quantize a 2-D weight ``[N, K]`` into its stored form (group size: 64 for INT4, 16 for NVFP4)."""
    _check_fmt(fmt)
    if w.dim() != 2:
        raise InputError(f"a weight must be 2-D [N, K], found shape {tuple(w.shape)}")
    if fmt == "int4":
        t = quantize_int4(w, 64 if group_size is None else group_size)
        return QuantizedWeight("int4", t.packed, t.scales.t().contiguous(), w.dtype)
    f = quantize_nvfp4(w, 16 if group_size is None else group_size)
    return QuantizedWeight("nvfp4", f.packed, f.block_scales.t().contiguous(), w.dtype, f.tensor_scale)
