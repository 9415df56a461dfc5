"""The W4A8 GEMM of QServe: UINT4 weights widened to INT8 in registers, one INT8 tensor-core product over all of K.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 4 (QoQ progressive group quantization) and Sec. 5.2 (the W4A8 GEMM). Progressive quantization makes the
per-group level integer: a 128-group's int8 weight is ``q8_hat = q4 * s2 + z2`` with a UINT8 scale ``s2`` and the
pre-scaled negated zero ``z2 = -(z * s2)`` (int8), so the main loop does integer work only ("subtraction after
multiplication") and the whole reduction over K is one exact int32 sum; the fp32 scales (per-token ``a_scale``,
per-channel ``s1``) are applied once, in the epilogue. That is the point of QoQ's two levels: no per-group float
dequantization inside the loop, which on Ampere/Hopper would run on the slow CUDA cores.

Definitions (exactly what :func:`w4a8_gemm_ref` computes; the kernel matches it bit for bit):

- g128: ``y[m, n] = (a_scale[m] * s1[n]) * float(sum_k qa[m, k] * q8_hat[n, k]) + bias[n]`` in fp32, rounded to
  ``out_dtype``.
- per channel (``s2_scales`` and ``s2_zeros`` None, ``s1_szeros`` given): the zero ``z[n] = round(szero[n] / s1[n])``
  is an integer in [0, 15]; ``y = (a_scale[m] * s1[n]) * float(sum_k qa * q4 - z[n] * sum_k qa[m, k]) + bias``.
  The activation row sums remove the zero point after the integer product, as the engine does.

Kernel layout. Activations arrive one code per byte (int8 ``[M, K]``); the weight stays packed two nibbles per
byte (``[N, K/2]``, low nibble = even input channel) and is unpacked in registers, joined back into channel
order, so it is read from memory at 4 bits. Each K step of 128 (one group) is one ``tl.dot`` of int8 tiles into an
int32 accumulator (INT8 tensor cores). ``swap`` computes ``W A^T``: the unpacked weight, which lives in
registers, becomes the left MMA operand and the token count becomes the MMA's N dimension (as small as 16),
which is what decode-size M needs. ``split_k`` splits the K steps across programs for small M: their int32
partial sums are added atomically (exact, integer) into a zeroed buffer and the epilogue runs once afterwards.

Packed dequantization (``W4A8Config(packed_dequant=True)``, CUDA only, ``swap=False``): the byte-wise code compiles
to a byte extract, a 16-bit multiply-add and a byte repack per weight (about 6 instructions each on sm_90). QServe's
register-level parallelism (Sec. 5.2.1) instead works on four bytes of one output channel in one 32-bit register:
``lo = w & 0x0F0F0F0F``, ``hi = (w >> 4) & 0x0F0F0F0F``, then one 32-bit multiply-add per half,
``y = q4 * s2 + (z2 + 128)`` in every byte at once, and ``q8_hat = y ^ 0x80`` per byte. No byte carries into its
neighbour: for int8 ``q8_hat`` and ``z2``, ``q4 * s2 = q8_hat - z2 <= 255`` and ``y = q8_hat + 128`` is in 0..255.
The four bytes must belong to one channel (they share ``s2``): Triton's layout of the loaded weight tile gives each
thread 16 consecutive bytes of a row, but with ``swap`` the MMA's register layout reaches back to the load and pairs
two channels in a register, so packing is refused there. It is inline PTX (:data:`PACKED_DEQUANT_OPS`), which the
interpreter cannot run, so on the CPU the byte-wise path runs instead; :func:`emulate_packed_dequant` checks the PTX's
arithmetic and ``tests/test_kernel_codegen.py`` that each register's ``s2`` is one channel's in every compiled
variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qserve.errors import InputError

try:  # Triton is optional: without it (or without CUDA) the reference below is the path taken.
    import triton  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped,import-not-found,unused-ignore]

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TRITON = False

__all__ = [
    "GROUP_SIZE",
    "PACKED_DEQUANT_OPS",
    "W4A8Config",
    "dequantize_int8_weight",
    "emulate_packed_dequant",
    "pick_w4a8_config",
    "unpack_u4",
    "w4a8_gemm",
    "w4a8_gemm_ref",
    "w4a8_integer_sums",
]

GROUP_SIZE = 128  # QoQ's level-1 group; the kernel's K step


@dataclass(frozen=True)
class W4A8Config:
    """Launch shape of :func:`w4a8_gemm`: tile sizes (powers of two >= 16), operand order, K split (must divide
    K/128), the number of M tiles grouped for L2 reuse, warps and pipeline stages, and whether the weight is
    dequantized four bytes per 32-bit register (see the module docstring; CUDA only, the interpreter ignores it)."""

    block_m: int = 128
    block_n: int = 128
    swap: bool = False
    split_k: int = 1
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    packed_dequant: bool = False


# The packed dequantization as PTX, one (op, dst, *sources) per instruction: $2 is a word of four weight bytes (two
# nibbles each), $3 and $4 the same channel's s2 (uint8) and z2 (int8) in every byte; $0 and $1 receive the int8
# weights of the low and the high nibbles. Biasing by 128 keeps every byte's multiply-add in 0..255, so one 32-bit
# mad serves four bytes; the xor removes the bias.
PACKED_DEQUANT_OPS: tuple[tuple[str, ...], ...] = (
    ("and.b32", "s", "$3", "0xFF"),
    ("xor.b32", "zb", "$4", "0x80808080"),
    ("and.b32", "lo", "$2", "0x0F0F0F0F"),
    ("shr.u32", "hi", "$2", "4"),
    ("and.b32", "hi", "hi", "0x0F0F0F0F"),
    ("mad.lo.u32", "lo", "lo", "s", "zb"),
    ("xor.b32", "$0", "lo", "0x80808080"),
    ("mad.lo.u32", "hi", "hi", "s", "zb"),
    ("xor.b32", "$1", "hi", "0x80808080"),
)


def _packed_dequant_asm() -> str:
    regs = sorted({d for _, d, *_ in PACKED_DEQUANT_OPS if not d.startswith("$")})
    body = "".join(f"{op} {d}, {', '.join(srcs)};\n" for op, d, *srcs in PACKED_DEQUANT_OPS)
    return "{\n.reg .b32 " + ", ".join(regs) + ";\n" + body + "}"


def emulate_packed_dequant(words: Tensor, s2: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Run :data:`PACKED_DEQUANT_OPS` on 32-bit words as the GPU would: ``words`` holds four packed weight bytes
    each (int64 in [0, 2^32)), ``s2``/``z2`` the channel's scale and zero broadcast to every byte (same shape,
    int64 words). Returns the ``$0`` and ``$1`` words (int64 in [0, 2^32))."""
    mask = (1 << 32) - 1
    env: dict[str, Tensor] = {"$2": words, "$3": s2, "$4": z2}

    def val(x: str) -> Tensor | int:
        return env[x] if x in env else int(x, 0)

    for op, d, *srcs in PACKED_DEQUANT_OPS:
        x, y = val(srcs[0]), val(srcs[1])
        if op == "and.b32":
            r = x & y
        elif op == "xor.b32":
            r = x ^ y
        elif op == "shr.u32":
            r = x >> y
        elif op == "mad.lo.u32":
            r = (x * y + val(srcs[2])) & mask
        else:  # pragma: no cover - the table above names only these
            raise AssertionError(op)
        env[d] = r  # type: ignore[assignment]
    return env["$0"], env["$1"]


def pick_w4a8_config(m: int, n: int, k: int) -> W4A8Config:
    """The launch shape used when none is given: the best of ``bench/bench_kernels.py --sweep`` on an H100 at
    N=K=4096 (M=1: 0.021 ms, M=64: 0.028 ms, M=1024: 0.070 ms); small M takes swapped operands."""
    if m <= 16:
        return W4A8Config(block_m=16, block_n=32, swap=True, num_warps=4, num_stages=4)
    if m <= 64:
        return W4A8Config(block_m=max(16, 1 << (m - 1).bit_length()), block_n=64, swap=True, num_warps=4, num_stages=4)
    if m <= 512:
        return W4A8Config(block_m=64, block_n=128, swap=True, num_warps=4, num_stages=4)
    return W4A8Config(block_m=256, block_n=128, num_warps=8, num_stages=3)


def unpack_u4(packed: Tensor) -> Tensor:
    """uint8 ``[..., K/2]`` -> uint8 codes ``[..., K]`` in 0..15 (low nibble = even channel)."""
    lo = packed & 15
    hi = packed >> 4
    return torch.stack((lo, hi), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def dequantize_int8_weight(qweight: Tensor, s2_scales: Tensor, s2_zeros: Tensor) -> Tensor:
    """The level-0 int8 weight ``q8_hat = q4 * s2 + z2`` per 128-group: int8 ``[N, K]`` (exact; range checked)."""
    q4 = unpack_u4(qweight).to(torch.int32)  # [N, K]
    n, k = q4.shape
    s = s2_scales.to(torch.int32).T.repeat_interleave(GROUP_SIZE, dim=1)  # [N, K]
    z = s2_zeros.to(torch.int32).T.repeat_interleave(GROUP_SIZE, dim=1)
    q8 = q4 * s + z
    if q8.numel() and (int(q8.min()) < -128 or int(q8.max()) > 127):
        raise InputError(
            f"q4 * s2_scales + s2_zeros must lie in the int8 range [-128, 127] (QoQ's protective range), "
            f"found [{int(q8.min())}, {int(q8.max())}]"
        )
    return q8.to(torch.int8)


def _check(
    qa: Tensor,
    a_scale: Tensor,
    qweight: Tensor,
    s1_scales: Tensor,
    s2_scales: Tensor | None,
    s2_zeros: Tensor | None,
    bias: Tensor | None,
    s1_szeros: Tensor | None,
) -> tuple[int, int, int]:
    """(M, N, K), or an InputError naming the tensor that does not fit."""
    if qa.dtype != torch.int8 or qa.dim() != 2:
        raise InputError(f"qa must be 2-D int8 [M, K], found {qa.dtype} {tuple(qa.shape)}")
    if qweight.dtype != torch.uint8 or qweight.dim() != 2:
        raise InputError(f"qweight must be 2-D uint8 [N, K/2], found {qweight.dtype} {tuple(qweight.shape)}")
    m, k = int(qa.shape[0]), int(qa.shape[1])
    n = int(qweight.shape[0])
    if int(qweight.shape[1]) * 2 != k:
        raise InputError(f"qweight must be [N, K/2] with K={k}, found {tuple(qweight.shape)}")
    if tuple(a_scale.shape) != (m,) or not a_scale.is_floating_point():
        raise InputError(
            f"a_scale must be a float tensor of shape ({m},), found {a_scale.dtype} {tuple(a_scale.shape)}"
        )
    if tuple(s1_scales.shape) != (n,) or not s1_scales.is_floating_point():
        raise InputError(
            f"s1_scales must be a float tensor of shape ({n},), found {s1_scales.dtype} {tuple(s1_scales.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (n,):
        raise InputError(f"bias must have shape ({n},), found {tuple(bias.shape)}")
    if s1_szeros is not None:
        if s2_scales is not None or s2_zeros is not None:
            raise InputError("give either s1_szeros (per-channel) or s2_scales and s2_zeros (g128), found both")
        if tuple(s1_szeros.shape) != (n,):
            raise InputError(f"s1_szeros must have shape ({n},), found {tuple(s1_szeros.shape)}")
        return m, n, k
    if s2_scales is None or s2_zeros is None:
        raise InputError("the g128 GEMM needs s2_scales and s2_zeros (or s1_szeros for the per-channel variant)")
    if k % GROUP_SIZE:
        raise InputError(f"K must be a multiple of the group size {GROUP_SIZE}, found K={k}")
    want = (k // GROUP_SIZE, n)
    if s2_scales.dtype != torch.uint8 or tuple(s2_scales.shape) != want:
        raise InputError(f"s2_scales must be uint8 {want}, found {s2_scales.dtype} {tuple(s2_scales.shape)}")
    if s2_zeros.dtype != torch.int8 or tuple(s2_zeros.shape) != want:
        raise InputError(f"s2_zeros must be int8 {want}, found {s2_zeros.dtype} {tuple(s2_zeros.shape)}")
    return m, n, k


def _channel_zeros(s1_scales: Tensor, s1_szeros: Tensor) -> Tensor:
    """Integer zero points ``z[n] = round(szero / s)`` (int32 [N]); a zero scale gives zero 0."""
    s = s1_scales.float()
    z = torch.where(s != 0, torch.round(s1_szeros.float() / torch.where(s != 0, s, torch.ones_like(s))), 0.0)
    return z.clamp(0, 15).to(torch.int32)


def _int_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Exact ``a @ b^T`` of small integers as int32. CPU: int64 matmul. CUDA has no int64 matmul; float64 holds
    every such sum exactly (|sum| <= 127 * 128 * K < 2^53), so the result is the same integer."""
    if a.is_cuda:
        return (a.double() @ b.double().T).round().to(torch.int32)
    return (a.to(torch.int64) @ b.to(torch.int64).T).to(torch.int32)


def w4a8_integer_sums(
    qa: Tensor,
    qweight: Tensor,
    s2_scales: Tensor | None,
    s2_zeros: Tensor | None,
    s1_scales: Tensor | None = None,
    s1_szeros: Tensor | None = None,
) -> Tensor:
    """The exact integer part, int32 ``[M, N]``: ``qa @ q8_hat^T`` (g128) or ``qa @ q4^T - z * rowsum(qa)``
    (per channel, with ``s1_scales`` and ``s1_szeros``)."""
    if s1_szeros is not None:
        if s1_scales is None:
            raise InputError("the per-channel integer sums need s1_scales to recover the integer zeros")
        acc = _int_matmul(qa, unpack_u4(qweight))
        rowsum = qa.to(torch.int32).sum(dim=1)
        return acc - rowsum[:, None] * _channel_zeros(s1_scales, s1_szeros)[None, :]
    if s2_scales is None or s2_zeros is None:
        raise InputError("the g128 integer sums need s2_scales and s2_zeros")
    return _int_matmul(qa, dequantize_int8_weight(qweight, s2_scales, s2_zeros))


def _epilogue(acc: Tensor, a_scale: Tensor, s1_scales: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    # The kernel's fp32 operations in the kernel's order: scale product first, then the int32 sum, then the bias.
    y = acc.float() * (a_scale.float()[:, None] * s1_scales.float()[None, :])
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(dtype)


def w4a8_gemm_ref(
    qa: Tensor,
    a_scale: Tensor,
    qweight: Tensor,
    s1_scales: Tensor,
    s2_scales: Tensor | None,
    s2_zeros: Tensor | None,
    bias: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    s1_szeros: Tensor | None = None,
) -> Tensor:
    """Reference W4A8 GEMM: ``y [M, N]`` in ``out_dtype`` (default ``a_scale.dtype``); see the module docstring.

    ``qa`` int8 ``[M, K]`` with ``a_scale`` ``[M]``; ``qweight`` uint8 ``[N, K/2]``; ``s1_scales`` ``[N]``;
    g128: ``s2_scales`` uint8 and ``s2_zeros`` int8, both ``[K/128, N]``; per channel: those None and
    ``s1_szeros`` ``[N]``; ``bias`` ``[N]``.
    """
    _check(qa, a_scale, qweight, s1_scales, s2_scales, s2_zeros, bias, s1_szeros)
    acc = w4a8_integer_sums(qa, qweight, s2_scales, s2_zeros, s1_scales, s1_szeros)
    return _epilogue(acc, a_scale, s1_scales, bias, a_scale.dtype if out_dtype is None else out_dtype)


if HAVE_TRITON:
    _PACKED_ASM = tl.constexpr(_packed_dequant_asm())

    @triton.jit
    def _unpack_u4_tile(wp, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """uint8 ``[BLOCK_N, BLOCK_K/2]`` -> int16 codes ``[BLOCK_N, BLOCK_K]`` in channel order (low = even)."""
        lo = (wp & 15).to(tl.int16)
        hi = (wp >> 4).to(tl.int16)
        return tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))

    @triton.jit
    def _w4a8_kernel(
        a_ptr,
        as_ptr,
        w_ptr,
        s1_ptr,
        s2_ptr,
        z2_ptr,
        rs_ptr,
        zc_ptr,
        bias_ptr,
        y_ptr,
        M,
        N,
        STEPS_PER_SPLIT,
        stride_am,
        stride_wn,
        stride_s2,
        stride_ym,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        SWAP: tl.constexpr,
        EVEN_M: tl.constexpr,
        EVEN_N: tl.constexpr,
        PER_GROUP: tl.constexpr,
        RAW_INT: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        OUT_BF16: tl.constexpr,
        PACKED: tl.constexpr,
    ):
        HALF: tl.constexpr = BLOCK_K // 2
        # Grouped tile order: GROUP_M row tiles walk the N tiles together, so their weight tiles stay in L2.
        pid = tl.program_id(0)
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * tiles_n
        first_m = (pid // per_group) * GROUP_M
        rows = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % rows
        pid_n = (pid % per_group) // rows
        split = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        offs_h = tl.arange(0, HALF)
        mask_m = offs_m < M
        mask_n = offs_n < N
        if SWAP:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        s_lo = split * STEPS_PER_SPLIT
        for g in range(s_lo, s_lo + STEPS_PER_SPLIT):
            a_ptrs = a_ptr + offs_m[:, None] * stride_am + (g * BLOCK_K + offs_k)[None, :]
            w_ptrs = w_ptr + offs_n[:, None] * stride_wn + (g * HALF + offs_h)[None, :]
            # Unmasked loads where the tiles divide the matrix: masks cost measurable time in this loop.
            if EVEN_M:
                a = tl.load(a_ptrs)
            else:
                a = tl.load(a_ptrs, mask=mask_m[:, None], other=0)
            if EVEN_N:
                wp = tl.load(w_ptrs)
            else:
                wp = tl.load(w_ptrs, mask=mask_n[:, None], other=0)
            if PACKED:
                # Four bytes per register (see the module docstring); per channel: s2 = 1, z2 = 0.
                if PER_GROUP:
                    if EVEN_N:
                        s2 = tl.load(s2_ptr + g * stride_s2 + offs_n)
                        z2 = tl.load(z2_ptr + g * stride_s2 + offs_n)
                    else:
                        s2 = tl.load(s2_ptr + g * stride_s2 + offs_n, mask=mask_n, other=0)
                        z2 = tl.load(z2_ptr + g * stride_s2 + offs_n, mask=mask_n, other=0)
                    s2b = tl.broadcast_to(s2[:, None], (BLOCK_N, HALF))
                    z2b = tl.broadcast_to(z2[:, None], (BLOCK_N, HALF))
                else:
                    s2b = tl.full((BLOCK_N, HALF), 1, tl.uint8)
                    z2b = tl.zeros((BLOCK_N, HALF), tl.int8)
                w_lo, w_hi = tl.inline_asm_elementwise(
                    _PACKED_ASM, "=r,=r,r,r,r", [wp, s2b, z2b], dtype=(tl.int8, tl.int8), is_pure=True, pack=4
                )
                w = tl.reshape(tl.join(w_lo, w_hi), (BLOCK_N, BLOCK_K))
            else:
                q4 = _unpack_u4_tile(wp, BLOCK_N, BLOCK_K)  # [BLOCK_N, BLOCK_K] int16
                if PER_GROUP:
                    # Integer dequantization to the level-0 int8 weight: q * s + z (exact by the protective range).
                    if EVEN_N:
                        s2 = tl.load(s2_ptr + g * stride_s2 + offs_n).to(tl.int16)
                        z2 = tl.load(z2_ptr + g * stride_s2 + offs_n).to(tl.int16)
                    else:
                        s2 = tl.load(s2_ptr + g * stride_s2 + offs_n, mask=mask_n, other=0).to(tl.int16)
                        z2 = tl.load(z2_ptr + g * stride_s2 + offs_n, mask=mask_n, other=0).to(tl.int16)
                    w = (q4 * s2[:, None] + z2[:, None]).to(tl.int8)
                else:
                    w = q4.to(tl.int8)
            if SWAP:
                acc += tl.dot(w, tl.trans(a), out_dtype=tl.int32)  # [BLOCK_N, BLOCK_M]
            else:
                acc += tl.dot(a, tl.trans(w), out_dtype=tl.int32)  # [BLOCK_M, BLOCK_N]
        if not PER_GROUP:
            # Per-channel zero point, removed through the activation row sums (still integer); with split K only
            # the first split removes it.
            rs = tl.load(rs_ptr + offs_m, mask=mask_m, other=0)
            zc = tl.load(zc_ptr + offs_n, mask=mask_n, other=0)
            zc = tl.where(split == 0, zc, 0)
            if SWAP:
                acc -= zc[:, None] * rs[None, :]
            else:
                acc -= rs[:, None] * zc[None, :]
        if SWAP:
            y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
            y_mask = mask_m[None, :] & mask_n[:, None]
        else:
            y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
            y_mask = mask_m[:, None] & mask_n[None, :]
        if RAW_INT:
            # Split K: exact int32 partial sums; the epilogue runs once on the total.
            tl.atomic_add(y_ptrs, acc, mask=y_mask)
        else:
            a_s = tl.load(as_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)
            s1 = tl.load(s1_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            if SWAP:
                out = acc.to(tl.float32) * (a_s[None, :] * s1[:, None])
            else:
                out = acc.to(tl.float32) * (a_s[:, None] * s1[None, :])
            if HAS_BIAS:
                b = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
                if SWAP:
                    out += b[:, None]
                else:
                    out += b[None, :]
            if OUT_BF16:
                # Round to nearest even on the fp32 bits: the interpreter's fp32 -> bf16 cast truncates, and this
                # rule gives the same result on every backend (finite values).
                bits = out.to(tl.uint32, bitcast=True)
                bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
                out = bits.to(tl.float32, bitcast=True)
            tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=y_mask)


def w4a8_gemm(
    qa: Tensor,
    a_scale: Tensor,
    qweight: Tensor,
    s1_scales: Tensor,
    s2_scales: Tensor | None,
    s2_zeros: Tensor | None,
    bias: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    s1_szeros: Tensor | None = None,
    config: W4A8Config | None = None,
) -> Tensor:
    """Triton version of :func:`w4a8_gemm_ref` (same arguments, bit-identical result); ``config`` overrides the
    launch shape chosen by :func:`pick_w4a8_config`. Needs Triton and CUDA tensors (or ``TRITON_INTERPRET=1``)."""
    if not HAVE_TRITON:
        raise InputError("w4a8_gemm needs triton; install it or use w4a8_gemm_ref")
    m, n, k = _check(qa, a_scale, qweight, s1_scales, s2_scales, s2_zeros, bias, s1_szeros)
    if k % GROUP_SIZE:
        raise InputError(f"the Triton kernel needs K to be a multiple of {GROUP_SIZE}, found K={k}")
    cfg = config if config is not None else pick_w4a8_config(m, n, k)
    steps = k // GROUP_SIZE
    if cfg.split_k < 1 or steps % cfg.split_k:
        raise InputError(f"split_k={cfg.split_k} must divide the {steps} K steps of {GROUP_SIZE} (K={k})")
    for name, v in (("block_m", cfg.block_m), ("block_n", cfg.block_n)):
        if v < 16 or v & (v - 1):
            raise InputError(f"{name} must be a power of two >= 16, found {v}")
    if cfg.packed_dequant and cfg.swap:
        # With the weight as the MMA's register operand, Triton lays out a register's four bytes over two output
        # channels, and the packed code applies one channel's scale to all four (tests/test_kernel_codegen.py).
        raise InputError("packed_dequant=True needs swap=False: the swapped layout mixes two channels in a register")
    if cfg.packed_dequant and cfg.block_n * GROUP_SIZE // 2 < 4 * 32 * cfg.num_warps:
        raise InputError(
            f"packed_dequant=True needs at least 4 weight bytes per thread: block_n * 64 >= 128 * num_warps, "
            f"found block_n={cfg.block_n}, num_warps={cfg.num_warps}"
        )
    dtype = a_scale.dtype if out_dtype is None else out_dtype
    raw = cfg.split_k > 1
    device = qa.device
    y = torch.zeros(m, n, dtype=torch.int32, device=device) if raw else torch.empty(m, n, dtype=dtype, device=device)
    if m == 0 or n == 0:
        return y.to(dtype)
    qa, qweight = qa.contiguous(), qweight.contiguous()
    if cfg.packed_dequant and qweight.data_ptr() % 16:
        # 16-byte aligned rows are what lays four bytes of one channel into each register; a fresh copy is aligned.
        qweight = qweight.clone()
    a_scale, s1_scales = a_scale.contiguous(), s1_scales.contiguous()
    bias = bias.contiguous() if bias is not None else None
    per_group = s1_szeros is None
    if per_group:
        assert s2_scales is not None and s2_zeros is not None  # checked by _check
        s2, z2 = s2_scales.contiguous(), s2_zeros.contiguous()
        rowsum = zc = y  # unused pointers
    else:
        assert s1_szeros is not None
        s2, z2 = qweight, qweight  # unused pointers
        rowsum = qa.to(torch.int32).sum(dim=1, dtype=torch.int32)
        zc = _channel_zeros(s1_scales, s1_szeros)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), cfg.split_k)
    _w4a8_kernel[grid](
        qa,
        a_scale,
        qweight,
        s1_scales,
        s2,
        z2,
        rowsum,
        zc,
        bias if bias is not None else s1_scales,
        y,
        m,
        n,
        steps // cfg.split_k,
        qa.stride(0),
        qweight.stride(0),
        s2.stride(0),
        y.stride(0),
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=GROUP_SIZE,
        GROUP_M=cfg.group_m,
        SWAP=cfg.swap,
        EVEN_M=m % cfg.block_m == 0,
        EVEN_N=n % cfg.block_n == 0,
        PER_GROUP=per_group,
        RAW_INT=raw,
        HAS_BIAS=bias is not None,
        OUT_BF16=dtype == torch.bfloat16,
        PACKED=cfg.packed_dequant and qa.is_cuda,  # inline PTX: not for the interpreter
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    if raw:
        return _epilogue(y, a_scale, s1_scales, bias, dtype)
    return y
