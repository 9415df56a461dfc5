"""The W4A4 GEMM of SVDQuant's INT4 path, with the low-rank up-projection and the bias in its epilogue.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025), Sec. 4.3
("Kernel fusion"): the up-projection ``lora_act L2^T`` shares the output tile of the 4-bit GEMM, so it is added in
the GEMM's epilogue instead of a separate 16-bit GEMM that would re-read and re-write the output.

For each group ``g`` of ``G`` input channels the int4 x int4 products are summed exactly in int32
(``P_g[m, n] = sum_k a[m, k] w[n, k]``; the kernel unpacks the nibbles to int8 and uses ``tl.dot`` with an int32
accumulator, which maps to the INT8 tensor cores on Ampere and Hopper), then
``y = sum_g P_g * (ascale[m, g] * wscale[g, n])`` in fp32, ``+ lora_act.to(proj_up.dtype) @ proj_up^T`` (fp32
accumulation: the engine also feeds the 16-bit tensor cores with the rounded activation), ``+ bias``, rounded to
``out_dtype``. :func:`gemm_w4a4_ref` is that definition in PyTorch (the CPU path); :func:`gemm_w4a4` the Triton
kernel with the same signature. The integer sums are exact in both; the fp32 parts agree up to summation order.
Against :class:`svdquant.svdq_linear.SVDQLinear`'s reference forward, which dequantizes the activation to its
16-bit dtype and keeps ``lora_act`` in fp32, the result differs by 16-bit rounding only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from svdquant.errors import InputError
from svdquant.formats import unpack_int4

try:  # Triton is optional: without it (or without CUDA) the reference below is the path taken.
    import triton  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped,import-not-found,unused-ignore]

    from svdquant.kernels.quantize_act import round_to_dtype

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TRITON = False

__all__ = ["gemm_w4a4", "gemm_w4a4_ref", "int4_group_sums"]


def _check(
    packed_act: Tensor,
    ascales: Tensor,
    qweight: Tensor,
    wscales: Tensor,
    lora_act: Tensor,
    proj_up: Tensor,
    bias: Tensor | None,
) -> tuple[int, int, int, int, int]:
    """(M, N, K, group size, R), or an InputError naming the tensor that does not fit."""
    if packed_act.dtype != torch.uint8 or qweight.dtype != torch.uint8 or packed_act.dim() != 2 or qweight.dim() != 2:
        raise InputError(
            f"packed_act [M, K/2] and qweight [N, K/2] must be 2-D uint8, found {packed_act.dtype} "
            f"{tuple(packed_act.shape)} and {qweight.dtype} {tuple(qweight.shape)}"
        )
    m, k = int(packed_act.shape[0]), int(packed_act.shape[1]) * 2
    n = int(qweight.shape[0])
    if qweight.shape[1] * 2 != k:
        raise InputError(f"qweight must be [N, K/2] with K={k}, found {tuple(qweight.shape)}")
    if ascales.dim() != 2 or ascales.shape[0] != m or ascales.shape[1] == 0 or k % ascales.shape[1] != 0:
        raise InputError(f"ascales must be [M, K/G] = [{m}, K/G] with K={k}, found {tuple(ascales.shape)}")
    groups = int(ascales.shape[1])
    if tuple(wscales.shape) != (groups, n):
        raise InputError(f"wscales must be [K/G, N] = [{groups}, {n}], found {tuple(wscales.shape)}")
    if lora_act.dim() != 2 or lora_act.shape[0] != m:
        raise InputError(f"lora_act must be [M, R] = [{m}, R], found {tuple(lora_act.shape)}")
    r = int(lora_act.shape[1])
    if tuple(proj_up.shape) != (n, r):
        raise InputError(f"proj_up must be [N, R] = [{n}, {r}], found {tuple(proj_up.shape)}")
    if bias is not None and tuple(bias.shape) != (n,):
        raise InputError(f"bias must have shape ({n},), found {tuple(bias.shape)}")
    return m, n, k, k // groups, r


def int4_group_sums(packed_act: Tensor, qweight: Tensor, group_size: int, unsigned: bool = False) -> Tensor:
    """The exact integer part: int32 ``[K/G, M, N]``, ``P_g = a_g w_g^T`` over the codes of each group."""
    a = unpack_int4(packed_act, signed=not unsigned).to(torch.int64)
    w = unpack_int4(qweight, signed=True).to(torch.int64)
    m, k = a.shape
    n = w.shape[0]
    a = a.reshape(m, k // group_size, group_size).transpose(0, 1)
    w = w.reshape(n, k // group_size, group_size).permute(1, 2, 0)
    # |P| <= 15 * 8 * G fits int32 for any sane G. CPU: int64 matmul (exact). CUDA has no integer bmm, and
    # float64 represents every such sum exactly, so the result is the same integer.
    if a.is_cuda:
        return torch.bmm(a.double(), w.double()).round().to(torch.int32)
    return torch.bmm(a, w).to(torch.int32)


def gemm_w4a4_ref(
    packed_act: Tensor,
    ascales: Tensor,
    qweight: Tensor,
    wscales: Tensor,
    lora_act: Tensor,
    proj_up: Tensor,
    bias: Tensor | None = None,
    unsigned: bool = False,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """Reference W4A4 GEMM: ``y [M, N]`` in ``out_dtype`` (default ``ascales.dtype``); see the module docstring.

    ``packed_act`` uint8 ``[M, K/2]`` with ``ascales`` ``[M, K/G]`` (from :func:`quantize_act_fused_ref`;
    ``unsigned`` codes when the activation was quantized unsigned), ``qweight`` uint8 ``[N, K/2]`` with
    ``wscales`` ``[K/G, N]`` (signed codes), ``lora_act`` fp32 ``[M, R]``, ``proj_up`` ``[N, R]``, ``bias`` ``[N]``.
    """
    m, n, k, g, r = _check(packed_act, ascales, qweight, wscales, lora_act, proj_up, bias)
    sums = int4_group_sums(packed_act, qweight, g, unsigned)
    a_s = ascales.float()
    w_s = wscales.float()
    y = torch.zeros(m, n, dtype=torch.float32, device=packed_act.device)
    for i in range(k // g):
        # The same order of fp32 operations as the kernel: P_g * (ascale * wscale), summed over groups in order.
        y = y + sums[i].float() * (a_s[:, i, None] * w_s[None, i, :])
    if r > 0:
        y = y + lora_act.to(proj_up.dtype).float() @ proj_up.float().T
    if bias is not None:
        y = y + bias.float()
    return y.to(ascales.dtype if out_dtype is None else out_dtype)


if HAVE_TRITON:

    @triton.jit
    def _unpack(p, SIGNED: tl.constexpr):
        """uint8 bytes -> (low nibbles, high nibbles) as int8; sign-extended when SIGNED."""
        lo = (p & 15).to(tl.int32)
        hi = (p >> 4).to(tl.int32)
        if SIGNED:
            lo = (lo ^ 8) - 8
            hi = (hi ^ 8) - 8
        return lo.to(tl.int8), hi.to(tl.int8)

    @triton.jit
    def _gemm_w4a4_kernel(
        a_ptr,
        as_ptr,
        w_ptr,
        ws_ptr,
        lora_ptr,
        pu_ptr,
        bias_ptr,
        y_ptr,
        M,
        N,
        K,
        R,
        stride_am,
        stride_asm,
        stride_wn,
        stride_wsg,
        stride_lm,
        stride_pun,
        stride_ym,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_R: tl.constexpr,
        UNSIGNED: tl.constexpr,
        HAS_LORA: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        IEEE_DOT: tl.constexpr,
    ):
        HALF: tl.constexpr = GROUP // 2
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_j = tl.arange(0, HALF)
        mask_m = offs_m < M
        mask_n = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for g in range(0, K // GROUP):
            cols = g * HALF + offs_j
            a_p = tl.load(a_ptr + offs_m[:, None] * stride_am + cols[None, :], mask=mask_m[:, None], other=0)
            # The weight tile is read transposed ([HALF, BLOCK_N]) so that it is the dot's right operand.
            w_p = tl.load(w_ptr + offs_n[None, :] * stride_wn + cols[:, None], mask=mask_n[None, :], other=0)
            a_lo, a_hi = _unpack(a_p, not UNSIGNED)
            w_lo, w_hi = _unpack(w_p, True)
            # Low nibbles hold the even channels, high nibbles the odd ones: two K=G/2 dots cover the group
            # without interleaving the nibbles back into channel order.
            part = tl.dot(a_lo, w_lo, out_dtype=tl.int32)
            part += tl.dot(a_hi, w_hi, out_dtype=tl.int32)
            a_s = tl.load(as_ptr + offs_m * stride_asm + g, mask=mask_m, other=0.0).to(tl.float32)
            w_s = tl.load(ws_ptr + g * stride_wsg + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            acc += part.to(tl.float32) * (a_s[:, None] * w_s[None, :])
        if HAS_LORA:
            offs_r = tl.arange(0, BLOCK_R)
            mask_r = offs_r < R
            la = tl.load(
                lora_ptr + offs_m[:, None] * stride_lm + offs_r[None, :],
                mask=mask_m[:, None] & mask_r[None, :],
                other=0.0,
            )
            pu = tl.load(
                pu_ptr + offs_n[None, :] * stride_pun + offs_r[:, None],
                mask=mask_n[None, :] & mask_r[:, None],
                other=0.0,
            )
            if IEEE_DOT:
                # Round the activation to proj_up's dtype as the 16-bit path (and the reference) does.
                la16 = round_to_dtype(la, pu.dtype)
                acc += tl.dot(la16, pu.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(la.to(pu.dtype), pu)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
        out = round_to_dtype(acc, y_ptr.dtype.element_ty)
        tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def gemm_w4a4(
    packed_act: Tensor,
    ascales: Tensor,
    qweight: Tensor,
    wscales: Tensor,
    lora_act: Tensor,
    proj_up: Tensor,
    bias: Tensor | None = None,
    unsigned: bool = False,
    out_dtype: torch.dtype | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
) -> Tensor:
    """Triton version of :func:`gemm_w4a4_ref` (same arguments and result); ``block_m``/``block_n`` override
    the tile shape (powers of two >= 16). Needs Triton and CUDA tensors (or ``TRITON_INTERPRET=1``)."""
    if not HAVE_TRITON:
        raise InputError("gemm_w4a4 needs triton; install it or use gemm_w4a4_ref")
    m, n, k, g, r = _check(packed_act, ascales, qweight, wscales, lora_act, proj_up, bias)
    if g < 64 or g & (g - 1):
        raise InputError(f"the Triton kernel needs a power-of-two group size >= 64, found {g}")
    dtype = ascales.dtype if out_dtype is None else out_dtype
    y = torch.empty(m, n, dtype=dtype, device=packed_act.device)
    if m == 0:
        return y
    packed_act, ascales, qweight, wscales = (t.contiguous() for t in (packed_act, ascales, qweight, wscales))
    lora_act, proj_up = lora_act.contiguous().float(), proj_up.contiguous()
    if block_m is None:
        block_m = 16 if m <= 16 else (64 if m <= 64 else 128)
    if block_n is None:
        block_n = 64 if m <= 64 else 128
    block_r = max(16, triton.next_power_of_2(max(r, 1)))
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _gemm_w4a4_kernel[grid](
        packed_act,
        ascales,
        qweight,
        wscales,
        lora_act,
        proj_up,
        bias if bias is not None else y,
        y,
        m,
        n,
        k,
        r,
        packed_act.stride(0),
        ascales.stride(0),
        qweight.stride(0),
        wscales.stride(0),
        lora_act.stride(0),
        proj_up.stride(0),
        y.stride(0),
        GROUP=g,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_R=block_r,
        UNSIGNED=unsigned,
        HAS_LORA=r > 0,
        HAS_BIAS=bias is not None,
        # fp32 must not fall back to TF32; on CPU tensors (the interpreter) bf16 dots are wrong, so widen.
        IEEE_DOT=proj_up.dtype == torch.float32 or not packed_act.is_cuda,
    )
    return y
