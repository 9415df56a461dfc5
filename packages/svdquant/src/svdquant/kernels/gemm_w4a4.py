"""The W4A4 GEMM of SVDQuant's INT4 path, with the low-rank up-projection and the bias in its epilogue.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025), Sec. 4.3
("Kernel fusion"): the up-projection ``lora_act L2^T`` shares the output tile of the 4-bit GEMM, so it is added in
the GEMM's epilogue instead of a separate 16-bit GEMM that would re-read and re-write the output.

For each group ``g`` of ``G`` input channels the int4 x int4 products are summed exactly in int32
(``P_g[m, n] = sum_k a[m, k] w[n, k]``), then ``y = sum_g P_g * (ascale[m, g] * wscale[g, n])`` in fp32,
``+ lora_act.to(proj_up.dtype) @ proj_up^T`` (fp32 accumulation: the engine also feeds the 16-bit tensor cores
with the rounded activation), ``+ bias``, rounded to ``out_dtype``. :func:`gemm_w4a4_ref` is that definition in
PyTorch (the CPU path); :func:`gemm_w4a4` the Triton kernel with the same signature. The integer sums are exact in
both; the fp32 parts agree up to summation order. Against :class:`svdquant.svdq_linear.SVDQLinear`'s reference
forward, which dequantizes the activation to its 16-bit dtype and keeps ``lora_act`` in fp32, the result differs
by 16-bit rounding only.

Kernel layout. The activation codes arrive one per byte (see :mod:`svdquant.kernels.quantize_act`); the weight
stays packed two per byte and is unpacked in registers (sign-extended nibbles, joined back into channel order), so
the weight is read from memory at 4 bits. Each group is one ``tl.dot`` of int8 tiles with an int32 accumulator,
which Triton lowers to the INT8 tensor cores (``mma`` on Ampere/Ada, ``wgmma`` on Hopper). ``swap`` computes the
transposed tile ``W A^T``: the unpacked weight, which lives in registers, becomes the left operand (the one
``wgmma`` may take from registers) and the token dimension becomes the MMA's N, which may be as small as 8 or 16;
that is what small M needs. ``split_k`` splits the groups across programs for small M (fp32 partial sums added
atomically into a zeroed buffer, then rounded once), so that a 16-token GEMM still occupies every SM.

Packed unpacking (``GemmConfig(packed_unpack=True)``, CUDA only): the byte-wise unpacking compiles to byte extracts,
16-bit arithmetic and byte repacks for each weight. Instead, four packed weight bytes sit in one 32-bit register and
the sign extension of all eight nibbles takes 7 instructions (:data:`SIGN_EXTEND_OPS`, inline PTX): for a nibble
``x`` in a byte, ``(x + 0x78) ^ 0x78`` is ``x`` for ``x < 8`` and ``x - 16`` otherwise, and ``x + 0x78 <= 0x87``
never carries into the next byte. The interpreter cannot run inline PTX, so on the CPU the byte-wise path runs and
:func:`emulate_sign_extend` checks the PTX's arithmetic. ``bench/inspect_sass.py`` counts what it saves; the
per-group rescaling, not the unpacking, bounds this kernel on an H100 (see BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

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

__all__ = [
    "SIGN_EXTEND_OPS",
    "GemmConfig",
    "emulate_sign_extend",
    "gemm_w4a4",
    "gemm_w4a4_ref",
    "int4_group_sums",
    "pick_gemm_config",
]


@dataclass(frozen=True)
class GemmConfig:
    """Launch shape of :func:`gemm_w4a4`: tile sizes (powers of two >= 16), operand order, K split, the number
    of M tiles grouped for L2 reuse, warps and pipeline stages, and whether the weight is unpacked four bytes per
    32-bit register (see the module docstring; CUDA only, the interpreter ignores it)."""

    block_m: int = 128
    block_n: int = 128
    swap: bool = False
    split_k: int = 1
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    packed_unpack: bool = False


# The packed sign extension as PTX, one (op, dst, *sources) per instruction: $2 holds four weight bytes (two
# nibbles each); $0 and $1 receive the int8 values of the low and the high nibbles.
SIGN_EXTEND_OPS: tuple[tuple[str, ...], ...] = (
    ("and.b32", "lo", "$2", "0x0F0F0F0F"),
    ("add.u32", "lo", "lo", "0x78787878"),
    ("xor.b32", "$0", "lo", "0x78787878"),
    ("shr.u32", "hi", "$2", "4"),
    ("and.b32", "hi", "hi", "0x0F0F0F0F"),
    ("add.u32", "hi", "hi", "0x78787878"),
    ("xor.b32", "$1", "hi", "0x78787878"),
)


def _sign_extend_asm() -> str:
    regs = sorted({d for _, d, *_ in SIGN_EXTEND_OPS if not d.startswith("$")})
    body = "".join(f"{op} {d}, {', '.join(srcs)};\n" for op, d, *srcs in SIGN_EXTEND_OPS)
    return "{\n.reg .b32 " + ", ".join(regs) + ";\n" + body + "}"


def emulate_sign_extend(words: Tensor) -> tuple[Tensor, Tensor]:
    """Run :data:`SIGN_EXTEND_OPS` on 32-bit words (int64 in [0, 2^32)) as the GPU would; returns the ``$0`` and
    ``$1`` words (int64 in [0, 2^32))."""
    env: dict[str, Tensor] = {"$2": words}
    for op, d, a, b in SIGN_EXTEND_OPS:
        x, y = env[a], (env[b] if b in env else int(b, 0))
        if op == "and.b32":
            env[d] = x & y
        elif op == "xor.b32":
            env[d] = x ^ y
        elif op == "shr.u32":
            env[d] = x >> y
        elif op == "add.u32":
            env[d] = (x + y) & 0xFFFFFFFF
        else:  # pragma: no cover - the table above names only these
            raise AssertionError(op)
    return env["$0"], env["$1"]


def pick_gemm_config(m: int, n: int, k: int, group_size: int) -> GemmConfig:
    """The launch shape used when none is given: tuned on an H100 at N=K=3072 (see bench/BENCHMARKS.md)."""
    groups = k // group_size
    if m <= 64:
        block_m = max(16, 1 << (max(m, 1) - 1).bit_length())
        block_n = 64
        tiles = -(-n // block_n)
        split = 1
        # About two programs per SM of a large GPU, keeping at least 4 groups per program.
        while tiles * split < 256 and groups % (split * 2) == 0 and groups // (split * 2) >= 4:
            split *= 2
        return GemmConfig(block_m=block_m, block_n=block_n, swap=True, split_k=split, num_warps=4, num_stages=4)
    if m <= 512:
        return GemmConfig(block_m=64, block_n=128, swap=True, num_warps=4, num_stages=4)
    return GemmConfig(block_m=128, block_n=128, swap=True, num_warps=8, num_stages=3)


def _check(
    codes: Tensor,
    ascales: Tensor,
    qweight: Tensor,
    wscales: Tensor,
    lora_act: Tensor,
    proj_up: Tensor,
    bias: Tensor | None,
) -> tuple[int, int, int, int, int]:
    """(M, N, K, group size, R), or an InputError naming the tensor that does not fit."""
    if codes.dtype != torch.int8 or codes.dim() != 2:
        raise InputError(f"codes must be 2-D int8 [M, K], found {codes.dtype} {tuple(codes.shape)}")
    if qweight.dtype != torch.uint8 or qweight.dim() != 2:
        raise InputError(f"qweight must be 2-D uint8 [N, K/2], found {qweight.dtype} {tuple(qweight.shape)}")
    m, k = int(codes.shape[0]), int(codes.shape[1])
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


def int4_group_sums(codes: Tensor, qweight: Tensor, group_size: int) -> Tensor:
    """The exact integer part: int32 ``[K/G, M, N]``, ``P_g = a_g w_g^T`` over the codes of each group."""
    a = codes.to(torch.int64)
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
    codes: Tensor,
    ascales: Tensor,
    qweight: Tensor,
    wscales: Tensor,
    lora_act: Tensor,
    proj_up: Tensor,
    bias: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """Reference W4A4 GEMM: ``y [M, N]`` in ``out_dtype`` (default ``ascales.dtype``); see the module docstring.

    ``codes`` int8 ``[M, K]`` with ``ascales`` ``[M, K/G]`` (from :func:`quantize_act_fused_ref`; signed or
    unsigned codes alike), ``qweight`` uint8 ``[N, K/2]`` with ``wscales`` ``[K/G, N]`` (signed codes),
    ``lora_act`` fp32 ``[M, R]``, ``proj_up`` ``[N, R]``, ``bias`` ``[N]``.
    """
    m, n, k, g, r = _check(codes, ascales, qweight, wscales, lora_act, proj_up, bias)
    sums = int4_group_sums(codes, qweight, g)
    a_s = ascales.float()
    w_s = wscales.float()
    y = torch.zeros(m, n, dtype=torch.float32, device=codes.device)
    for i in range(k // g):
        # The same order of fp32 operations as the kernel: P_g * (ascale * wscale), summed over groups in order.
        y = y + sums[i].float() * (a_s[:, i, None] * w_s[None, i, :])
    if r > 0:
        y = y + lora_act.to(proj_up.dtype).float() @ proj_up.float().T
    if bias is not None:
        y = y + bias.float()
    return y.to(ascales.dtype if out_dtype is None else out_dtype)


if HAVE_TRITON:
    _SIGN_EXTEND_ASM = tl.constexpr(_sign_extend_asm())

    @triton.jit
    def _unpack_weight(wp, BLOCK_N: tl.constexpr, GROUP: tl.constexpr):
        """uint8 ``[BLOCK_N, GROUP/2]`` -> int8 ``[BLOCK_N, GROUP]`` in channel order (low nibble = even)."""
        lo = (wp & 15).to(tl.int8)
        hi = (wp >> 4).to(tl.int8)
        # Sign extension in int8: (v ^ 8) - 8 maps 0..7 -> 0..7 and 8..15 -> -8..-1.
        lo = (lo ^ 8) - 8
        hi = (hi ^ 8) - 8
        return tl.reshape(tl.join(lo, hi), (BLOCK_N, GROUP))

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
        R,
        GROUPS_PER_SPLIT,
        stride_am,
        stride_asm,
        stride_asg,
        stride_wn,
        stride_wsg,
        stride_lm,
        stride_pun,
        stride_ym,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_R: tl.constexpr,
        GROUP_M: tl.constexpr,
        SWAP: tl.constexpr,
        EVEN_M: tl.constexpr,
        EVEN_N: tl.constexpr,
        ATOMIC: tl.constexpr,
        HAS_LORA: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        IEEE_DOT: tl.constexpr,
        PACKED: tl.constexpr,
    ):
        HALF: tl.constexpr = GROUP // 2
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
        offs_k = tl.arange(0, GROUP)
        offs_h = tl.arange(0, HALF)
        mask_m = offs_m < M
        mask_n = offs_n < N
        if SWAP:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        g_lo = split * GROUPS_PER_SPLIT
        for g in range(g_lo, g_lo + GROUPS_PER_SPLIT):
            a_ptrs = a_ptr + offs_m[:, None] * stride_am + (g * GROUP + offs_k)[None, :]
            w_ptrs = w_ptr + offs_n[:, None] * stride_wn + (g * HALF + offs_h)[None, :]
            as_ptrs = as_ptr + g * stride_asg + offs_m * stride_asm
            ws_ptrs = ws_ptr + g * stride_wsg + offs_n
            # Unmasked loads where the tiles divide the matrix: masks cost measurable time in this loop.
            if EVEN_M:
                a = tl.load(a_ptrs)
                a_s = tl.load(as_ptrs).to(tl.float32)
            else:
                a = tl.load(a_ptrs, mask=mask_m[:, None], other=0)
                a_s = tl.load(as_ptrs, mask=mask_m, other=0.0).to(tl.float32)
            if EVEN_N:
                wp = tl.load(w_ptrs)
                w_s = tl.load(ws_ptrs).to(tl.float32)
            else:
                wp = tl.load(w_ptrs, mask=mask_n[:, None], other=0)
                w_s = tl.load(ws_ptrs, mask=mask_n, other=0.0).to(tl.float32)
            if PACKED:
                lo, hi = tl.inline_asm_elementwise(
                    _SIGN_EXTEND_ASM, "=r,=r,r", [wp], dtype=(tl.int8, tl.int8), is_pure=True, pack=4
                )
                w = tl.reshape(tl.join(lo, hi), (BLOCK_N, GROUP))
            else:
                w = _unpack_weight(wp, BLOCK_N, GROUP)
            if SWAP:
                part = tl.dot(w, tl.trans(a), out_dtype=tl.int32)  # [BLOCK_N, BLOCK_M]
                acc += part.to(tl.float32) * (w_s[:, None] * a_s[None, :])
            else:
                part = tl.dot(a, tl.trans(w), out_dtype=tl.int32)  # [BLOCK_M, BLOCK_N]
                acc += part.to(tl.float32) * (a_s[:, None] * w_s[None, :])
        if split == 0:
            if HAS_LORA:
                offs_r = tl.arange(0, BLOCK_R)
                mask_r = offs_r < R
                if SWAP:
                    la = tl.load(
                        lora_ptr + offs_m[None, :] * stride_lm + offs_r[:, None],
                        mask=mask_m[None, :] & mask_r[:, None],
                        other=0.0,
                    )  # [BLOCK_R, BLOCK_M]
                    pu = tl.load(
                        pu_ptr + offs_n[:, None] * stride_pun + offs_r[None, :],
                        mask=mask_n[:, None] & mask_r[None, :],
                        other=0.0,
                    )  # [BLOCK_N, BLOCK_R]
                    if IEEE_DOT:
                        acc += tl.dot(pu.to(tl.float32), round_to_dtype(la, pu.dtype), input_precision="ieee")
                    else:
                        acc += tl.dot(pu, la.to(pu.dtype))
                else:
                    la = tl.load(
                        lora_ptr + offs_m[:, None] * stride_lm + offs_r[None, :],
                        mask=mask_m[:, None] & mask_r[None, :],
                        other=0.0,
                    )  # [BLOCK_M, BLOCK_R]
                    pu = tl.load(
                        pu_ptr + offs_n[None, :] * stride_pun + offs_r[:, None],
                        mask=mask_n[None, :] & mask_r[:, None],
                        other=0.0,
                    )  # [BLOCK_R, BLOCK_N]
                    if IEEE_DOT:
                        # Round the activation to proj_up's dtype as the 16-bit path (and the reference) does.
                        acc += tl.dot(round_to_dtype(la, pu.dtype), pu.to(tl.float32), input_precision="ieee")
                    else:
                        acc += tl.dot(la.to(pu.dtype), pu)
            if HAS_BIAS:
                b = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
                if SWAP:
                    acc += b[:, None]
                else:
                    acc += b[None, :]
        if SWAP:
            y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
            y_mask = mask_m[None, :] & mask_n[:, None]
        else:
            y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
            y_mask = mask_m[:, None] & mask_n[None, :]
        if ATOMIC:
            tl.atomic_add(y_ptrs, acc, mask=y_mask)
        else:
            out = round_to_dtype(acc, y_ptr.dtype.element_ty)
            tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=y_mask)


def gemm_w4a4(
    codes: Tensor,
    ascales: Tensor,
    qweight: Tensor,
    wscales: Tensor,
    lora_act: Tensor,
    proj_up: Tensor,
    bias: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    config: GemmConfig | None = None,
) -> Tensor:
    """Triton version of :func:`gemm_w4a4_ref` (same arguments and result); ``config`` overrides the launch shape
    chosen by :func:`pick_gemm_config`. Needs Triton and CUDA tensors (or ``TRITON_INTERPRET=1``)."""
    if not HAVE_TRITON:
        raise InputError("gemm_w4a4 needs triton; install it or use gemm_w4a4_ref")
    m, n, k, g, r = _check(codes, ascales, qweight, wscales, lora_act, proj_up, bias)
    if g < 64 or g & (g - 1):
        raise InputError(f"the Triton kernel needs a power-of-two group size >= 64, found {g}")
    cfg = config if config is not None else pick_gemm_config(m, n, k, g)
    groups = k // g
    if cfg.split_k < 1 or groups % cfg.split_k:
        raise InputError(f"split_k={cfg.split_k} must divide the {groups} groups of K={k}")
    dtype = ascales.dtype if out_dtype is None else out_dtype
    atomic = cfg.split_k > 1
    y = (
        torch.zeros(m, n, dtype=torch.float32, device=codes.device)
        if atomic
        else torch.empty(m, n, dtype=dtype, device=codes.device)
    )
    if m == 0:
        return y.to(dtype)
    codes, qweight, wscales = codes.contiguous(), qweight.contiguous(), wscales.contiguous()
    lora_act, proj_up = lora_act.contiguous().float(), proj_up.contiguous()
    block_r = max(16, triton.next_power_of_2(max(r, 1)))
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), cfg.split_k)
    _gemm_w4a4_kernel[grid](
        codes,
        ascales,
        qweight,
        wscales,
        lora_act,
        proj_up,
        bias if bias is not None else y,
        y,
        m,
        n,
        r,
        groups // cfg.split_k,
        codes.stride(0),
        ascales.stride(0),
        ascales.stride(1),
        qweight.stride(0),
        wscales.stride(0),
        lora_act.stride(0),
        proj_up.stride(0),
        y.stride(0),
        GROUP=g,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_R=block_r,
        GROUP_M=cfg.group_m,
        SWAP=cfg.swap,
        EVEN_M=m % cfg.block_m == 0,
        EVEN_N=n % cfg.block_n == 0,
        ATOMIC=atomic,
        HAS_LORA=r > 0,
        HAS_BIAS=bias is not None,
        # fp32 must not fall back to TF32; on CPU tensors (the interpreter) bf16 dots are wrong, so widen.
        IEEE_DOT=proj_up.dtype == torch.float32 or not codes.is_cuda,
        PACKED=cfg.packed_unpack and codes.is_cuda,  # inline PTX: not for the interpreter
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return y.to(dtype) if atomic else y
