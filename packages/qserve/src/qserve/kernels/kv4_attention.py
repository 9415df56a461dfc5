"""Decode attention over a paged, 4-bit quantized KV cache (QServe's KV4 attention).

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 4.3 (per-head, per-token asymmetric INT4 KV) and Sec. 5.3 (KV4 decode attention). Decode attention reads the
whole cache once per generated token, so it is memory bound: storing K and V at 4 bits (plus one fp16 scale and
zero per token and head) cuts the bytes read almost fourfold, provided the dequantization ``x = q * scale + zero``
happens in registers and does not turn the kernel compute bound.

Layout (one layer; see :mod:`qserve.engine.kv_cache`): ``k_codes``/``v_codes`` uint8 ``[pages, page_size, Hkv,
D/2]`` (two codes per byte, low nibble = even channel; KV8: ``[..., D]`` one code per byte; KV16: the float values
``[..., D]``), ``k_scales``/``k_zeros``/``v_scales``/``v_zeros`` fp16 ``[pages, page_size, Hkv]`` (None for KV16).
Token ``t`` of sequence ``b`` is in page ``block_tables[b, t // page_size]``, slot ``t % page_size``.

Definition (:func:`paged_decode_attention_ref`): gather the sequence's ``context_lens[b]`` tokens, dequantize in
fp32 and round to ``q``'s dtype (the values every path of the model attends over), then for query head ``h``
(reading KV head ``h // (Hq / Hkv)``) ``softmax(scale * q_h . K^T) V`` with the scores, softmax and weighted sum
in fp32; the result is rounded to ``q``'s dtype.

Kernel (:func:`paged_decode_attention`): one program per (sequence, KV head, context split) handles all the query
heads that share the KV head (GQA: K and V are read once for the group), walking the context in blocks of
``block_t`` tokens gathered through the block table, dequantizing nibbles in registers, with an online softmax
(flash-decoding). With several splits, each writes its normalised partial output and log-sum-exp and a short
reduction combines them; that keeps the GPU busy when batch x KV heads is small and contexts are long.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qserve.errors import InputError
from qserve.quant.kv import KVQuantizer

try:  # Triton is optional: without it (or without CUDA) the reference below is the path taken.
    import triton  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped,import-not-found,unused-ignore]

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TRITON = False

__all__ = ["AttentionConfig", "dequantize_pages", "paged_decode_attention", "paged_decode_attention_ref"]


@dataclass(frozen=True)
class AttentionConfig:
    """Launch shape of :func:`paged_decode_attention`: tokens per inner step (power of two >= 16), context splits
    per (sequence, KV head) (None: chosen from the batch size and the block table's length), warps, stages."""

    block_t: int = 64
    num_splits: int | None = None
    num_warps: int = 4
    num_stages: int = 2


def _check(
    q: Tensor,
    k_codes: Tensor,
    k_scales: Tensor | None,
    k_zeros: Tensor | None,
    v_codes: Tensor,
    v_scales: Tensor | None,
    v_zeros: Tensor | None,
    block_tables: Tensor,
    context_lens: Tensor,
    kv_bits: int,
) -> tuple[int, int, int, int, int]:
    """(B, Hq, Hkv, D, page_size), or an InputError naming the tensor that does not fit."""
    if kv_bits not in (4, 8, 16):
        raise InputError(f"kv_bits must be 4, 8 or 16, found {kv_bits}")
    if q.dim() != 3 or not q.is_floating_point():
        raise InputError(f"q must be a float tensor [B, Hq, D], found {q.dtype} {tuple(q.shape)}")
    b, hq, d = (int(x) for x in q.shape)
    if k_codes.dim() != 4 or tuple(v_codes.shape) != tuple(k_codes.shape):
        raise InputError(
            f"k_codes and v_codes must be equal 4-D pages [pages, page_size, Hkv, D'], found "
            f"{tuple(k_codes.shape)} and {tuple(v_codes.shape)}"
        )
    pages, page_size, hkv, dc = (int(x) for x in k_codes.shape)
    want_dc = d // 2 if kv_bits == 4 else d
    if dc != want_dc:
        raise InputError(f"KV{kv_bits} pages must have last dim {want_dc} for head_dim {d}, found {dc}")
    if kv_bits == 16:
        if not k_codes.is_floating_point() or not v_codes.is_floating_point():
            raise InputError(f"KV16 pages must be float, found {k_codes.dtype} and {v_codes.dtype}")
    else:
        if k_codes.dtype != torch.uint8 or v_codes.dtype != torch.uint8:
            raise InputError(f"KV{kv_bits} codes must be uint8, found {k_codes.dtype} and {v_codes.dtype}")
        for name, t in (("k_scales", k_scales), ("k_zeros", k_zeros), ("v_scales", v_scales), ("v_zeros", v_zeros)):
            if t is None or tuple(t.shape) != (pages, page_size, hkv) or not t.is_floating_point():
                found = "None" if t is None else f"{t.dtype} {tuple(t.shape)}"
                raise InputError(f"{name} must be a float tensor {(pages, page_size, hkv)}, found {found}")
    if hkv == 0 or hq % hkv:
        raise InputError(f"the {hq} query heads must be a multiple of the {hkv} KV heads")
    if block_tables.dtype != torch.int32 or block_tables.dim() != 2 or int(block_tables.shape[0]) != b:
        raise InputError(f"block_tables must be int32 [{b}, P], found {block_tables.dtype} {tuple(block_tables.shape)}")
    if context_lens.dtype != torch.int32 or tuple(context_lens.shape) != (b,):
        raise InputError(f"context_lens must be int32 [{b}], found {context_lens.dtype} {tuple(context_lens.shape)}")
    return b, hq, hkv, d, page_size


def dequantize_pages(
    codes: Tensor, scales: Tensor | None, zeros: Tensor | None, kv_bits: int, dtype: torch.dtype
) -> Tensor:
    """KV pages ``[..., D']`` -> values ``[..., D]`` in ``dtype``: ``q * scale + zero`` in fp32, then rounded
    (:meth:`qserve.quant.kv.KVQuantizer.dequantize`)."""
    if kv_bits == 16:
        return codes.to(dtype)
    assert scales is not None and zeros is not None
    return KVQuantizer(kv_bits).dequantize(codes, scales, zeros, dtype)


def paged_decode_attention_ref(
    q: Tensor,
    k_codes: Tensor,
    k_scales: Tensor | None,
    k_zeros: Tensor | None,
    v_codes: Tensor,
    v_scales: Tensor | None,
    v_zeros: Tensor | None,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float,
    kv_bits: int = 4,
) -> Tensor:
    """Reference decode attention of ``q [B, Hq, D]`` over each sequence's paged context: ``[B, Hq, D]`` in
    ``q.dtype`` (see the module docstring). Every ``context_lens[b]`` must be at least 1."""
    b, hq, hkv, d, page_size = _check(
        q, k_codes, k_scales, k_zeros, v_codes, v_scales, v_zeros, block_tables, context_lens, kv_bits
    )
    out = torch.empty_like(q)
    lens = context_lens.tolist()
    for i in range(b):
        n_tok = int(lens[i])
        n_pages = -(-n_tok // page_size)
        if n_tok < 1 or n_pages > block_tables.shape[1]:
            raise InputError(
                f"context_lens[{i}] must be in [1, {block_tables.shape[1] * page_size}] for a block table of "
                f"{block_tables.shape[1]} pages of {page_size}, found {n_tok}"
            )
        pages = block_tables[i, :n_pages].long()

        def gather(
            codes: Tensor, scales: Tensor | None, zeros: Tensor | None, pages: Tensor = pages, n_tok: int = n_tok
        ) -> Tensor:
            c = codes[pages].flatten(0, 1)[:n_tok]  # [L, Hkv, D']
            s = scales[pages].flatten(0, 1)[:n_tok] if scales is not None else None
            z = zeros[pages].flatten(0, 1)[:n_tok] if zeros is not None else None
            x = dequantize_pages(c, s, z, kv_bits, q.dtype)  # [L, Hkv, D]
            return x.float().repeat_interleave(hq // hkv, dim=1)  # [L, Hq, D]

        k = gather(k_codes, k_scales, k_zeros)
        v = gather(v_codes, v_scales, v_zeros)
        scores = torch.einsum("hd,lhd->hl", q[i].float(), k) * scale  # [Hq, L]
        p = torch.softmax(scores, dim=-1)
        out[i] = torch.einsum("hl,lhd->hd", p, v).to(q.dtype)
    return out


if HAVE_TRITON:

    @triton.jit
    def _load_kv(
        c_ptr,
        s_ptr,
        z_ptr,
        page,
        slot,
        head,
        mask_t,
        stride_cp,
        stride_cs,
        stride_ch,
        stride_sp,
        stride_ss,
        BLOCK_T: tl.constexpr,
        D: tl.constexpr,
        KV_BITS: tl.constexpr,
        DTYPE: tl.constexpr,
    ):
        """One block of ``BLOCK_T`` tokens of one KV head, dequantized: ``[BLOCK_T, D]`` in ``DTYPE``."""
        base = page * stride_cp + slot * stride_cs + head * stride_ch  # [BLOCK_T] int64
        if KV_BITS == 16:
            offs_d = tl.arange(0, D)
            x = tl.load(c_ptr + base[:, None] + offs_d[None, :], mask=mask_t[:, None], other=0.0)
            return x.to(DTYPE)
        else:
            s_off = page * stride_sp + slot * stride_ss + head
            sc = tl.load(s_ptr + s_off, mask=mask_t, other=0.0).to(tl.float32)
            ze = tl.load(z_ptr + s_off, mask=mask_t, other=0.0).to(tl.float32)
            if KV_BITS == 4:
                offs_h = tl.arange(0, D // 2)
                packed = tl.load(c_ptr + base[:, None] + offs_h[None, :], mask=mask_t[:, None], other=0)
                # Join the nibbles as integers, then widen: a float join of small tiles miscompiled (Triton 3.6).
                codes = tl.reshape(tl.join(packed & 15, packed >> 4), (BLOCK_T, D)).to(tl.float32)
            else:
                offs_d = tl.arange(0, D)
                codes = tl.load(c_ptr + base[:, None] + offs_d[None, :], mask=mask_t[:, None], other=0)
                codes = codes.to(tl.float32)
            return (codes * sc[:, None] + ze[:, None]).to(DTYPE)

    @triton.jit
    def _paged_decode_kernel(
        q_ptr,
        kc_ptr,
        ks_ptr,
        kz_ptr,
        vc_ptr,
        vs_ptr,
        vz_ptr,
        bt_ptr,
        len_ptr,
        o_ptr,
        lse_ptr,
        scale,
        stride_qb,
        stride_qh,
        stride_cp,
        stride_cs,
        stride_ch,
        stride_sp,
        stride_ss,
        stride_bt,
        stride_ob,
        stride_oh,
        stride_os,
        stride_lb,
        stride_lh,
        GQ: tl.constexpr,
        BLOCK_H: tl.constexpr,
        D: tl.constexpr,
        PAGE: tl.constexpr,
        BLOCK_T: tl.constexpr,
        SPLITS: tl.constexpr,
        KV_BITS: tl.constexpr,
        DTYPE: tl.constexpr,
        F32_DOT: tl.constexpr,
    ):
        b = tl.program_id(0)
        h = tl.program_id(1)
        sp = tl.program_id(2)
        n_tok = tl.load(len_ptr + b)
        # This split's token range, rounded to whole blocks so every block but the last is full.
        per_split = tl.cdiv(tl.cdiv(n_tok, SPLITS), BLOCK_T) * BLOCK_T
        t_lo = sp * per_split
        t_hi = tl.minimum(t_lo + per_split, n_tok)
        offs_g = tl.arange(0, BLOCK_H)
        offs_d = tl.arange(0, D)
        mask_g = offs_g < GQ
        heads = h * GQ + offs_g  # query heads of this KV head
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=mask_g[:, None], other=0)
        if F32_DOT:
            q = q.to(tl.float32)
        else:
            q = q.to(DTYPE)
        m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_H, D), dtype=tl.float32)
        for start in range(t_lo, t_hi, BLOCK_T):
            offs_t = start + tl.arange(0, BLOCK_T)
            mask_t = offs_t < t_hi
            page = tl.load(bt_ptr + b * stride_bt + offs_t // PAGE, mask=mask_t, other=0).to(tl.int64)
            slot = offs_t % PAGE
            k = _load_kv(
                kc_ptr, ks_ptr, kz_ptr, page, slot, h, mask_t, stride_cp, stride_cs, stride_ch, stride_sp, stride_ss,
                BLOCK_T, D, KV_BITS, DTYPE,
            )  # fmt: skip
            v = _load_kv(
                vc_ptr, vs_ptr, vz_ptr, page, slot, h, mask_t, stride_cp, stride_cs, stride_ch, stride_sp, stride_ss,
                BLOCK_T, D, KV_BITS, DTYPE,
            )  # fmt: skip
            if F32_DOT:
                s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee")  # [BLOCK_H, BLOCK_T]
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(mask_t[None, :], s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if F32_DOT:
                pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(DTYPE), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        # An empty split (short context) leaves l = 0: its output is 0 and its log-sum-exp -inf (weight 0).
        has = l_i > 0
        out = acc / tl.where(has, l_i, 1.0)[:, None]
        o_ptrs = o_ptr + b * stride_ob + heads[:, None] * stride_oh + sp * stride_os + offs_d[None, :]
        tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=mask_g[:, None])
        if SPLITS > 1:
            lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
            tl.store(lse_ptr + b * stride_lb + heads * stride_lh + sp, lse, mask=mask_g)


def _pick_splits(batch: int, hkv: int, max_tokens: int, block_t: int) -> int:
    """Context splits so that about 256 programs run (two per SM of a large GPU), each over >= 4 blocks."""
    programs = max(batch * hkv, 1)
    splits = 1
    while programs * splits * 2 <= 256 and max_tokens // (splits * 2) >= 4 * block_t:
        splits *= 2
    return splits


_TL_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def paged_decode_attention(
    q: Tensor,
    k_codes: Tensor,
    k_scales: Tensor | None,
    k_zeros: Tensor | None,
    v_codes: Tensor,
    v_scales: Tensor | None,
    v_zeros: Tensor | None,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float,
    kv_bits: int = 4,
    config: AttentionConfig | None = None,
) -> Tensor:
    """Triton version of :func:`paged_decode_attention_ref` (same arguments and result up to summation order;
    ``config`` sets the launch shape). Needs Triton and CUDA tensors (or ``TRITON_INTERPRET=1``). Context lengths
    are not checked against the block table here (that would synchronise with the GPU)."""
    if not HAVE_TRITON:
        raise InputError("paged_decode_attention needs triton; install it or use paged_decode_attention_ref")
    b, hq, hkv, d, page_size = _check(
        q, k_codes, k_scales, k_zeros, v_codes, v_scales, v_zeros, block_tables, context_lens, kv_bits
    )
    if d < 16 or d & (d - 1):
        raise InputError(f"the Triton kernel needs a power-of-two head_dim >= 16, found {d}")
    if q.dtype not in _TL_DTYPES:
        raise InputError(f"q must be float16, bfloat16 or float32, found {q.dtype}")
    cfg = config if config is not None else AttentionConfig()
    if cfg.block_t < 16 or cfg.block_t & (cfg.block_t - 1):
        raise InputError(f"block_t must be a power of two >= 16, found {cfg.block_t}")
    block_t = cfg.block_t
    if q.is_cuda and q.dtype != torch.float32 and kv_bits != 16:
        # Measured on an H100 with Triton 3.6: 16-token blocks of unpacked codes feeding a 16-bit dot give wrong
        # results (64-token blocks, fp32 and KV16 are right), so quantized pages use blocks of at least 64 there.
        block_t = max(block_t, 64)
    gq = hq // hkv
    splits = cfg.num_splits
    if splits is None:
        splits = _pick_splits(b, hkv, int(block_tables.shape[1]) * page_size, block_t)
    if splits < 1:
        raise InputError(f"num_splits must be >= 1, found {splits}")
    q = q.contiguous()
    k_codes, v_codes, block_tables = k_codes.contiguous(), v_codes.contiguous(), block_tables.contiguous()
    if kv_bits == 16:
        ks = kz = vs = vz = k_codes  # unused pointers
        stride_sp = stride_ss = 0
    else:
        assert k_scales is not None and k_zeros is not None and v_scales is not None and v_zeros is not None
        ks, kz, vs, vz = (t.contiguous() for t in (k_scales, k_zeros, v_scales, v_zeros))
        stride_sp, stride_ss = ks.stride(0), ks.stride(1)
    if splits == 1:
        o = torch.empty(b, hq, 1, d, dtype=q.dtype, device=q.device)
        lse = o  # unused pointer
    else:
        o = torch.empty(b, hq, splits, d, dtype=torch.float32, device=q.device)
        lse = torch.empty(b, hq, splits, dtype=torch.float32, device=q.device)
    if b == 0:
        return o[:, :, 0]
    tl_dtype = getattr(tl, _TL_DTYPES[q.dtype])
    _paged_decode_kernel[(b, hkv, splits)](
        q,
        k_codes,
        ks,
        kz,
        v_codes,
        vs,
        vz,
        block_tables,
        context_lens,
        o,
        lse,
        float(scale),
        q.stride(0),
        q.stride(1),
        k_codes.stride(0),
        k_codes.stride(1),
        k_codes.stride(2),
        stride_sp,
        stride_ss,
        block_tables.stride(0),
        o.stride(0),
        o.stride(1),
        o.stride(2),
        lse.stride(0),
        lse.stride(1),
        GQ=gq,
        BLOCK_H=max(16, triton.next_power_of_2(gq)),
        D=d,
        PAGE=page_size,
        BLOCK_T=block_t,
        SPLITS=splits,
        KV_BITS=kv_bits,
        DTYPE=tl_dtype,
        # fp32 must not fall back to TF32; the interpreter's 16-bit dots are not exact, so widen there too.
        F32_DOT=q.dtype == torch.float32 or not q.is_cuda,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    if splits == 1:
        return o[:, :, 0]
    weights = torch.softmax(lse, dim=-1)  # [B, Hq, S]; empty splits have weight 0
    return (weights[..., None] * o).sum(dim=2).to(q.dtype)
