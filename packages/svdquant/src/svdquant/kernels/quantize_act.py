"""Fused activation kernel of SVDQuant's INT4 path: smoothing, 4-bit quantization and the low-rank down-projection.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025), Sec. 4.3
("Kernel fusion"): the down-projection ``x L1`` reads the same input as the activation quantizer, so one kernel
reads the 16-bit input once and produces both the packed 4-bit codes and the fp32 low-rank activation.

:func:`quantize_act_fused_ref` is the PyTorch definition (the CPU path); :func:`quantize_act_fused` is the Triton
kernel with the same signature. For a row ``x`` the rule is that of :func:`svdquant.formats.quantize_int4` applied
to ``xs = ((x + shift) / smooth)`` rounded to ``x.dtype`` (as :class:`svdquant.svdq_linear.SVDQLinear` does):
``scale = absmax / 7`` (``/ 15`` unsigned) per group in fp32, rounded to ``x.dtype``; codes
``round_half_even(xs / scale)`` clamped to ``[-8, 7]`` (``[0, 15]``); a zero scale gives zero codes. The packed
codes and the scales are bit-exact between the two; ``lora_act = x @ proj_down`` (raw ``x``, fp32 accumulation)
agrees up to summation order.

Rounding in the kernel: half-to-even through the fp32 "magic number" ``(v + 1.5 * 2**23) - 1.5 * 2**23``, exact
for ``|v| < 2**22`` under IEEE round-to-nearest-even arithmetic; ``v`` is clamped to the code range first (the
bounds are integers, so clamping before rounding changes nothing). Divisions use ``div_rn`` (IEEE) because the
default fp32 division on CUDA is approximate, which would move codes on ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from svdquant.errors import InputError
from svdquant.formats import quantize_int4

try:  # Triton is optional: without it (or without CUDA) the reference below is the path taken.
    import triton  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped,import-not-found,unused-ignore]

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TRITON = False

__all__ = ["HAVE_TRITON", "quantize_act_fused", "quantize_act_fused_ref"]
if HAVE_TRITON:
    __all__ += ["round_to_dtype"]


def _check(x: Tensor, smooth: Tensor, proj_down: Tensor, group_size: int) -> tuple[int, int, int]:
    if x.dim() != 2:
        raise InputError(f"quantize_act expects x [M, K], found shape {tuple(x.shape)}")
    m, k = x.shape
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise InputError(f"quantize_act expects a float16, bfloat16 or float32 input, found {x.dtype}")
    if group_size <= 0 or k % group_size != 0 or group_size % 2 != 0:
        raise InputError(f"K={k} must be a multiple of the (even) group size {group_size}")
    if tuple(smooth.shape) != (k,):
        raise InputError(f"smooth must have shape ({k},), found {tuple(smooth.shape)}")
    if proj_down.dim() != 2 or proj_down.shape[0] != k:
        raise InputError(f"proj_down must be [K, R] = [{k}, R], found {tuple(proj_down.shape)}")
    return int(m), int(k), int(proj_down.shape[1])


def quantize_act_fused_ref(
    x: Tensor,
    smooth: Tensor,
    proj_down: Tensor,
    group_size: int = 64,
    unsigned: bool = False,
    shift: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference: ``(packed uint8 [M, K/2], ascales [M, K/G] in x.dtype, lora_act fp32 [M, R])``.

    ``x`` is ``[M, K]``; ``smooth`` ``[K]`` divides ``x + shift`` before quantizing (``shift`` is the unsigned
    post-GELU shift, 0 for signed inputs); ``proj_down`` ``[K, R]`` acts on the raw ``x``.
    """
    m, k, r = _check(x, smooth, proj_down, group_size)
    x32 = x.float()
    xs = ((x32 + shift) / smooth.float()).to(x.dtype)
    t = quantize_int4(xs, group_size, unsigned=unsigned)
    lora_act = x32 @ proj_down.float() if r > 0 else x32.new_zeros(m, 0)
    return t.packed, t.scales, lora_act


if HAVE_TRITON:

    @triton.jit
    def _round_half_even(v):
        # 1.5 * 2**23: adding then subtracting it rounds an fp32 to an integer, ties to even (|v| < 2**22).
        return (v + 12582912.0) - 12582912.0

    @triton.jit
    def round_to_dtype(x, DTYPE: tl.constexpr):
        """Round fp32 ``x`` to ``DTYPE`` (nearest, ties to even) and return it as fp32.

        bfloat16 is rounded with integer ops on the fp32 bits: the interpreter's fp32 -> bf16 cast truncates,
        and the bit rule gives the same result on every backend (finite inputs; a carry into the exponent
        correctly rounds up to the next binade or to Inf).
        """
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
            return bits.to(tl.float32, bitcast=True)
        else:
            return x.to(DTYPE).to(tl.float32)

    @triton.jit
    def _quantize_act_kernel(
        x_ptr,
        smooth_ptr,
        pd_ptr,
        packed_ptr,
        ascales_ptr,
        lora_ptr,
        M,
        K,
        R,
        shift,
        stride_xm,
        stride_pdk,
        stride_pm,
        stride_am,
        stride_lm,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_R: tl.constexpr,
        UNSIGNED: tl.constexpr,
        HAS_LORA: tl.constexpr,
        IEEE_DOT: tl.constexpr,
    ):
        HALF: tl.constexpr = GROUP // 2
        pid = tl.program_id(0)
        offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_j = tl.arange(0, HALF)
        offs_r = tl.arange(0, BLOCK_R)
        mask_m = offs_m < M
        mask_r = offs_r < R
        qmax = 15.0 if UNSIGNED else 7.0
        qmin = 0.0 if UNSIGNED else -8.0
        lora = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        for g in range(0, K // GROUP):
            # Even and odd columns are loaded as two tiles, so packing needs no interleave: byte j of the
            # group holds column 2j in its low nibble and column 2j+1 in its high one.
            k_even = g * GROUP + 2 * offs_j
            mask = mask_m[:, None]
            x_e = tl.load(x_ptr + offs_m[:, None] * stride_xm + k_even[None, :], mask=mask, other=0.0)
            x_o = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k_even + 1)[None, :], mask=mask, other=0.0)
            s_e = tl.load(smooth_ptr + k_even).to(tl.float32)
            s_o = tl.load(smooth_ptr + k_even + 1).to(tl.float32)
            # Smooth in fp32, then round to the input dtype, as the reference does before quantizing.
            xs_e = round_to_dtype(tl.math.div_rn(x_e.to(tl.float32) + shift, s_e[None, :]), x_e.dtype)
            xs_o = round_to_dtype(tl.math.div_rn(x_o.to(tl.float32) + shift, s_o[None, :]), x_o.dtype)
            if UNSIGNED:
                amax = tl.maximum(tl.max(tl.maximum(xs_e, 0.0), axis=1), tl.max(tl.maximum(xs_o, 0.0), axis=1))
            else:
                amax = tl.maximum(tl.max(tl.abs(xs_e), axis=1), tl.max(tl.abs(xs_o), axis=1))
            s32 = round_to_dtype(tl.math.div_rn(amax, tl.full(amax.shape, qmax, tl.float32)), x_e.dtype)
            tl.store(ascales_ptr + offs_m * stride_am + g, s32.to(x_e.dtype), mask=mask_m)
            zero = s32 == 0.0
            denom = tl.where(zero, 1.0, s32)[:, None]
            v_e = tl.minimum(tl.maximum(tl.math.div_rn(xs_e, denom), qmin), qmax)
            v_o = tl.minimum(tl.maximum(tl.math.div_rn(xs_o, denom), qmin), qmax)
            c_e = tl.where(zero[:, None], 0.0, _round_half_even(v_e)).to(tl.int32)
            c_o = tl.where(zero[:, None], 0.0, _round_half_even(v_o)).to(tl.int32)
            byte = ((c_e & 15) | ((c_o & 15) << 4)).to(tl.uint8)
            p_ptr = packed_ptr + offs_m[:, None] * stride_pm + (g * HALF + offs_j)[None, :]
            tl.store(p_ptr, byte, mask=mask)
            if HAS_LORA:
                # lora_act = x @ proj_down on the raw x: even rows of proj_down meet the even columns of x.
                pd_e = tl.load(pd_ptr + k_even[:, None] * stride_pdk + offs_r[None, :], mask=mask_r[None, :], other=0.0)
                pd_o = tl.load(
                    pd_ptr + (k_even + 1)[:, None] * stride_pdk + offs_r[None, :], mask=mask_r[None, :], other=0.0
                )
                if IEEE_DOT:
                    lora += tl.dot(x_e.to(tl.float32), pd_e.to(tl.float32), input_precision="ieee")
                    lora += tl.dot(x_o.to(tl.float32), pd_o.to(tl.float32), input_precision="ieee")
                else:
                    lora += tl.dot(x_e, pd_e)
                    lora += tl.dot(x_o, pd_o)
        if HAS_LORA:
            l_ptr = lora_ptr + offs_m[:, None] * stride_lm + offs_r[None, :]
            tl.store(l_ptr, lora, mask=mask_m[:, None] & mask_r[None, :])


def quantize_act_fused(
    x: Tensor,
    smooth: Tensor,
    proj_down: Tensor,
    group_size: int = 64,
    unsigned: bool = False,
    shift: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Triton version of :func:`quantize_act_fused_ref` (same arguments and results).

    Needs Triton and a CUDA tensor (or ``TRITON_INTERPRET=1`` on the CPU); ``group_size`` a power of two >= 64
    (the int8 dots need 32 columns per half group); a 16-bit ``proj_down`` must have ``x``'s dtype.
    """
    if not HAVE_TRITON:
        raise InputError("quantize_act_fused needs triton; install it or use quantize_act_fused_ref")
    m, k, r = _check(x, smooth, proj_down, group_size)
    if group_size < 64 or group_size & (group_size - 1):
        raise InputError(f"the Triton kernel needs a power-of-two group size >= 64, found {group_size}")
    # fp32 dots must not fall back to TF32; the interpreter (CPU tensors) multiplies bf16 tiles wrongly, so
    # there the 16-bit operands are widened to fp32, whose products are exact.
    ieee = x.dtype == torch.float32 or proj_down.dtype != x.dtype or not x.is_cuda
    x = x.contiguous()
    proj_down = proj_down.contiguous()
    packed = torch.empty(m, k // 2, dtype=torch.uint8, device=x.device)
    ascales = torch.empty(m, k // group_size, dtype=x.dtype, device=x.device)
    lora_act = torch.empty(m, r, dtype=torch.float32, device=x.device)
    if m == 0:
        return packed, ascales, lora_act
    block_m = 32 if m > 16 else 16
    block_r = max(16, triton.next_power_of_2(max(r, 1)))
    grid = (triton.cdiv(m, block_m),)
    _quantize_act_kernel[grid](
        x,
        smooth.contiguous(),
        proj_down,
        packed,
        ascales,
        lora_act,
        m,
        k,
        r,
        float(shift),
        x.stride(0),
        proj_down.stride(0),
        packed.stride(0),
        ascales.stride(0),
        lora_act.stride(0),
        GROUP=group_size,
        BLOCK_M=block_m,
        BLOCK_R=block_r,
        UNSIGNED=unsigned,
        HAS_LORA=r > 0,
        IEEE_DOT=ieee,
    )
    return packed, ascales, lora_act
