"""Fused activation kernel of SVDQuant's INT4 path: smoothing, 4-bit quantization and the low-rank down-projection.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025), Sec. 4.3
("Kernel fusion"): the down-projection ``x L1`` reads the same input as the activation quantizer, so one kernel
reads the 16-bit input once and produces both the 4-bit codes and the fp32 low-rank activation.

:func:`quantize_act_fused_ref` is the PyTorch definition (the CPU path); :func:`quantize_act_fused` is the Triton
kernel with the same signature. For a row ``x`` the rule is that of :func:`svdquant.formats.quantize_int4` applied
to ``xs = ((x + shift) / smooth)`` rounded to ``x.dtype`` (as :class:`svdquant.svdq_linear.SVDQLinear` does):
``scale = absmax / 7`` (``/ 15`` unsigned) per group in fp32, rounded to ``x.dtype``; codes
``round_half_even(xs / scale)`` clamped to ``[-8, 7]`` (``[0, 15]``); a zero scale gives zero codes. The codes and
the scales are bit-exact between the two; ``lora_act = x @ proj_down`` (raw ``x``, fp32 accumulation) agrees up to
summation order.

The 4-bit codes leave the kernel one per byte (int8 ``[M, K]``), not packed two per byte: the GEMM feeds them to
INT8 tensor cores, and unpacking nibbles there would cost more than the M*K/2 extra bytes (about 1% of the layer's
memory traffic at M=4096, K=3072) cost here. Activations are transient, so no stored format changes. The scales are
written group-major (a ``[K/G, M]`` buffer, returned as its ``[M, K/G]`` transpose view) so that the GEMM reads the
scales of a tile of rows with one coalesced load per group.

Rounding in the kernel: half-to-even through the fp32 "magic number" ``(v + 1.5 * 2**23) - 1.5 * 2**23``, exact
for ``|v| < 2**22`` under IEEE round-to-nearest-even arithmetic; ``v`` is clamped to the code range first (the
bounds are integers, so clamping before rounding changes nothing). Divisions use ``div_rn`` (IEEE) because the
default fp32 division on CUDA is approximate, which would move codes on ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

from svdquant.errors import InputError
from svdquant.formats import quantize_int4, unpack_int4

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
    """Reference: ``(codes int8 [M, K], ascales [M, K/G] in x.dtype, lora_act fp32 [M, R])``.

    ``x`` is ``[M, K]``; ``smooth`` ``[K]`` divides ``x + shift`` before quantizing (``shift`` is the unsigned
    post-GELU shift, 0 for signed inputs); ``proj_down`` ``[K, R]`` acts on the raw ``x``. Codes are in
    ``[-8, 7]``, or ``[0, 15]`` when ``unsigned``.
    """
    m, k, r = _check(x, smooth, proj_down, group_size)
    x32 = x.float()
    xs = ((x32 + shift) / smooth.float()).to(x.dtype)
    t = quantize_int4(xs, group_size, unsigned=unsigned)
    codes = unpack_int4(t.packed, signed=not unsigned).to(torch.int8)
    lora_act = x32 @ proj_down.float() if r > 0 else x32.new_zeros(m, 0)
    return codes, t.scales, lora_act


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
        codes_ptr,
        ascales_ptr,
        lora_ptr,
        M,
        R,
        K_PER_PROG,
        shift,
        stride_xm,
        stride_pdk,
        stride_cm,
        stride_ag,
        stride_lm,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_R: tl.constexpr,
        UNSIGNED: tl.constexpr,
        HAS_LORA: tl.constexpr,
        ATOMIC_LORA: tl.constexpr,
        IEEE_DOT: tl.constexpr,
    ):
        NG: tl.constexpr = BLOCK_K // GROUP
        pid_m = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_k = tl.arange(0, BLOCK_K)
        offs_g = tl.arange(0, NG)
        offs_r = tl.arange(0, BLOCK_R)
        mask_m = offs_m < M
        mask_r = offs_r < R
        qmax = 15.0 if UNSIGNED else 7.0
        qmin = 0.0 if UNSIGNED else -8.0
        lora = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        k_lo = pid_k * K_PER_PROG
        for k0 in range(k_lo, k_lo + K_PER_PROG, BLOCK_K):
            cols = k0 + offs_k
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :], mask=mask_m[:, None], other=0.0)
            s = tl.load(smooth_ptr + cols).to(tl.float32)
            # Smooth in fp32, then round to the input dtype, as the reference does before quantizing.
            xs = round_to_dtype(tl.math.div_rn(x.to(tl.float32) + shift, s[None, :]), x.dtype)
            xg = tl.reshape(xs, (BLOCK_M, NG, GROUP))
            if UNSIGNED:
                amax = tl.max(tl.maximum(xg, 0.0), axis=2)
            else:
                amax = tl.max(tl.abs(xg), axis=2)
            sc = round_to_dtype(tl.math.div_rn(amax, tl.full(amax.shape, qmax, tl.float32)), x.dtype)  # [BM, NG]
            a_ptr = ascales_ptr + (k0 // GROUP + offs_g)[None, :] * stride_ag + offs_m[:, None]
            tl.store(a_ptr, sc.to(x.dtype), mask=mask_m[:, None])
            zero = sc == 0.0
            denom = tl.where(zero, 1.0, sc)[:, :, None]
            v = tl.minimum(tl.maximum(tl.math.div_rn(xg, denom), qmin), qmax)
            c = tl.where(zero[:, :, None], 0.0, _round_half_even(v)).to(tl.int8)
            c_ptr = codes_ptr + offs_m[:, None] * stride_cm + cols[None, :]
            tl.store(c_ptr, tl.reshape(c, (BLOCK_M, BLOCK_K)), mask=mask_m[:, None])
            if HAS_LORA:
                pd = tl.load(pd_ptr + cols[:, None] * stride_pdk + offs_r[None, :], mask=mask_r[None, :], other=0.0)
                if IEEE_DOT:
                    lora += tl.dot(x.to(tl.float32), pd.to(tl.float32), input_precision="ieee")
                else:
                    lora += tl.dot(x, pd)
        if HAS_LORA:
            l_ptr = lora_ptr + offs_m[:, None] * stride_lm + offs_r[None, :]
            l_mask = mask_m[:, None] & mask_r[None, :]
            if ATOMIC_LORA:
                # K is split across programs: each adds its partial product of the down-projection.
                tl.atomic_add(l_ptr, lora, mask=l_mask)
            else:
                tl.store(l_ptr, lora, mask=l_mask)


def _pick_block_k(k: int, group_size: int) -> int:
    for bk in (128, 256, 64):
        if bk >= group_size and bk % group_size == 0 and k % bk == 0:
            return bk
    return group_size


def quantize_act_fused(
    x: Tensor,
    smooth: Tensor,
    proj_down: Tensor,
    group_size: int = 64,
    unsigned: bool = False,
    shift: float = 0.0,
    *,
    block_m: int | None = None,
    block_k: int | None = None,
    split_k: int | None = None,
    num_warps: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Triton version of :func:`quantize_act_fused_ref` (same arguments and results).

    Needs Triton and a CUDA tensor (or ``TRITON_INTERPRET=1`` on the CPU); ``group_size`` a power of two >= 64
    (the INT8 dots need whole groups of 32+ columns); a 16-bit ``proj_down`` must have ``x``'s dtype. The keyword
    arguments override the launch shape (tuning): ``block_k`` a multiple of the group size dividing K, ``split_k``
    the number of programs that share the K range of a row block (the down-projection is then summed atomically).
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
    codes = torch.empty(m, k, dtype=torch.int8, device=x.device)
    ascales_t = torch.empty(k // group_size, m, dtype=x.dtype, device=x.device)
    # Defaults tuned on an H100 at K=3072 (bench/bench_gemm.py --sweep): short K blocks and a deep K split for a
    # few tokens (the kernel is then latency-bound), wide row blocks for many.
    bk = block_k if block_k is not None else (group_size if m <= 64 else _pick_block_k(k, group_size))
    if bk % group_size or k % bk:
        raise InputError(f"block_k={bk} must be a multiple of the group size {group_size} and divide K={k}")
    if block_m is None:
        block_m = 16 if m <= 256 else (32 if m <= 1024 else 64)
    blocks_m = triton.cdiv(max(m, 1), block_m)
    if split_k is None:
        # The largest split of the K blocks that keeps about two programs per SM of a large GPU (132 SMs).
        split_k = max(d for d in range(1, k // bk + 1) if (k // bk) % d == 0 and (d == 1 or blocks_m * d <= 264))
    if (k // bk) % split_k:
        raise InputError(f"split_k={split_k} must divide the {k // bk} K blocks of {bk} columns")
    atomic = split_k > 1 and r > 0
    lora_act = (torch.zeros if atomic else torch.empty)(m, r, dtype=torch.float32, device=x.device)
    if m == 0:
        return codes, ascales_t.T, lora_act
    block_r = max(16, triton.next_power_of_2(max(r, 1)))
    _quantize_act_kernel[(blocks_m, split_k)](
        x,
        smooth.contiguous(),
        proj_down,
        codes,
        ascales_t,
        lora_act,
        m,
        r,
        k // split_k,
        float(shift),
        x.stride(0),
        proj_down.stride(0),
        codes.stride(0),
        ascales_t.stride(0),
        lora_act.stride(0),
        GROUP=group_size,
        BLOCK_M=block_m,
        BLOCK_K=bk,
        BLOCK_R=block_r,
        UNSIGNED=unsigned,
        HAS_LORA=r > 0,
        ATOMIC_LORA=atomic,
        IEEE_DOT=ieee,
        num_warps=num_warps if num_warps is not None else (8 if block_m >= 64 else 4),
    )
    return codes, ascales_t.T, lora_act
