"""Paged KV cache: fixed-size pages, a free-list allocator, and the batch view that attention layers write to.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 5 (the QServe system): the KV cache lives in fixed-size pages addressed through per-sequence block tables
(as in vLLM's PagedAttention); with KV4 each token of each KV head stores ``D/2`` bytes of packed UINT4 codes
plus an fp16 scale and an fp16 zero, so the page count a memory budget buys is about 3.5x the fp16 one.

Layout per layer (the kernels read it): ``k_codes`` / ``v_codes`` uint8 ``[num_pages, page_size, Hkv, D/2]``
(KV4), uint8 ``[..., D]`` (KV8) or the cache dtype ``[..., D]`` (KV16); ``k_scales``, ``k_zeros``, ``v_scales``,
``v_zeros`` fp16 ``[num_pages, page_size, Hkv]`` (KV4/KV8 only). Token ``t`` of a sequence is in page
``block_table[t // page_size]``, slot ``t % page_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from qserve.config import LlamaConfig
from qserve.errors import ConfigError, EngineError, InputError
from qserve.quant.kv import KVQuantizer

__all__ = [
    "BlockAllocator",
    "LayerKV",
    "PagedBatch",
    "PagedKVCache",
    "kv_bytes_per_token",
    "pages_for_budget",
]


def _head_dim(config: LlamaConfig) -> int:
    return config.head_dim or config.hidden_size // config.num_attention_heads


def _check_bits(kv_bits: int) -> None:
    if kv_bits not in (4, 8, 16):
        raise ConfigError(f"kv_bits must be 4, 8 or 16, found {kv_bits}")


def kv_bytes_per_token(config: LlamaConfig, kv_bits: int, dtype_bytes: int = 2) -> int:
    """Cache bytes one token takes over all layers, K and V, scales and zeros included.

    ``dtype_bytes`` is the element size of a KV16 cache (2 for fp16, 4 for fp32); KV4/KV8 ignore it.
    """
    _check_bits(kv_bits)
    d = _head_dim(config)
    if kv_bits == 16:
        per_head = d * dtype_bytes
    else:
        per_head = d * kv_bits // 8 + 4  # codes + fp16 scale + fp16 zero
    return 2 * config.num_hidden_layers * config.num_key_value_heads * per_head


def pages_for_budget(config: LlamaConfig, kv_bits: int, page_size: int, budget_bytes: int, dtype_bytes: int = 2) -> int:
    """The number of whole pages of ``page_size`` tokens that fit in ``budget_bytes`` of cache memory."""
    if page_size < 1:
        raise ConfigError(f"page_size must be >= 1, found {page_size}")
    if budget_bytes < 0:
        raise ConfigError(f"memory budget must be >= 0 bytes, found {budget_bytes}")
    return budget_bytes // (page_size * kv_bytes_per_token(config, kv_bits, dtype_bytes))


class BlockAllocator:
    """Free list of page indices ``0 .. num_pages - 1``; freeing a page that is not allocated is an error."""

    def __init__(self, num_pages: int) -> None:
        if num_pages < 0:
            raise ConfigError(f"num_pages must be >= 0, found {num_pages}")
        self.num_pages = num_pages
        # Popping from the end hands out low page numbers first (easier to read in a debugger).
        self._free: list[int] = list(range(num_pages - 1, -1, -1))
        self._used = bytearray(num_pages)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def can_allocate(self, n: int) -> bool:
        return n <= len(self._free)

    def allocate(self, n: int = 1) -> list[int]:
        """Take ``n`` free pages; raises :class:`EngineError` (taking none) if fewer are free."""
        if n < 0:
            raise InputError(f"cannot allocate a negative number of pages ({n})")
        if n > len(self._free):
            raise EngineError(f"out of KV pages: asked for {n}, {len(self._free)} of {self.num_pages} free")
        pages = [self._free.pop() for _ in range(n)]
        for p in pages:
            self._used[p] = 1
        return pages

    def free(self, pages: Sequence[int]) -> None:
        """Return pages to the free list; a page that is not allocated (double free) raises :class:`EngineError`."""
        for p in pages:
            if not 0 <= p < self.num_pages:
                raise EngineError(f"page {p} is out of range [0, {self.num_pages})")
            if not self._used[p]:
                raise EngineError(f"page {p} freed twice (it is not allocated)")
            self._used[p] = 0
            self._free.append(p)


@dataclass
class LayerKV:
    """One layer's page tensors (see the module docstring for shapes); scales/zeros are None for KV16."""

    k_codes: torch.Tensor
    v_codes: torch.Tensor
    k_scales: torch.Tensor | None
    k_zeros: torch.Tensor | None
    v_scales: torch.Tensor | None
    v_zeros: torch.Tensor | None


class PagedKVCache:
    """Page tensors of every layer, plus the allocator that hands the pages out."""

    def __init__(
        self,
        config: LlamaConfig,
        kv_bits: int,
        page_size: int,
        num_pages: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float16,
    ) -> None:
        _check_bits(kv_bits)
        if page_size < 1:
            raise ConfigError(f"page_size must be >= 1, found {page_size}")
        if num_pages < 1:
            raise ConfigError(f"the KV cache needs at least one page, found num_pages={num_pages}")
        self.config = config
        self.kv_bits = kv_bits
        self.page_size = page_size
        self.num_pages = num_pages
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = _head_dim(config)
        if kv_bits == 4 and self.head_dim % 2:
            raise ConfigError(f"KV4 packs two codes per byte and needs an even head_dim, found {self.head_dim}")
        self.quantizer = KVQuantizer(bits=kv_bits)
        self.allocator = BlockAllocator(num_pages)
        lead = (num_pages, page_size, self.num_kv_heads)
        code_dim = self.head_dim // 2 if kv_bits == 4 else self.head_dim
        code_dtype = dtype if kv_bits == 16 else torch.uint8
        self.layers: list[LayerKV] = []
        for _ in range(config.num_hidden_layers):
            codes = [torch.zeros((*lead, code_dim), dtype=code_dtype, device=self.device) for _ in range(2)]
            if kv_bits == 16:
                self.layers.append(LayerKV(codes[0], codes[1], None, None, None, None))
            else:
                sz = [torch.zeros(lead, dtype=torch.float16, device=self.device) for _ in range(4)]
                self.layers.append(LayerKV(codes[0], codes[1], *sz))

    @property
    def bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.config, self.kv_bits, torch.finfo(self.dtype).bits // 8)

    def pages_needed(self, num_tokens: int) -> int:
        return math.ceil(num_tokens / self.page_size)

    def batch(
        self,
        block_tables: Sequence[Sequence[int]],
        context_lens: Sequence[int],
        num_new: Sequence[int],
        decode_attention: Callable[..., torch.Tensor] | None = None,
    ) -> PagedBatch:
        """A view for one forward over ``B`` sequences: sequence ``b`` already holds ``context_lens[b]`` tokens
        and gets ``num_new[b]`` new ones (the forward's ``T`` is ``max(num_new)``; shorter rows are right-padded
        and their padding is neither stored nor attended to)."""
        return PagedBatch(self, block_tables, context_lens, num_new, decode_attention)


class PagedBatch:
    """The :class:`qserve.model.AttentionCache` of one forward over a batch of paged sequences."""

    def __init__(
        self,
        cache: PagedKVCache,
        block_tables: Sequence[Sequence[int]],
        context_lens: Sequence[int],
        num_new: Sequence[int],
        decode_attention: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        b = len(block_tables)
        if not (len(context_lens) == len(num_new) == b) or b == 0:
            raise InputError(
                f"block_tables, context_lens and num_new need one entry per sequence, found {b}, "
                f"{len(context_lens)} and {len(num_new)}"
            )
        ps = cache.page_size
        for i in range(b):
            total = context_lens[i] + num_new[i]
            if num_new[i] < 1 or len(block_tables[i]) * ps < total:
                raise InputError(
                    f"sequence {i}: {total} tokens need {cache.pages_needed(total)} pages and >= 1 new token, "
                    f"found {len(block_tables[i])} pages and {num_new[i]} new tokens"
                )
        self.cache = cache
        self.decode_attention = decode_attention
        dev = cache.device
        max_pages = max(len(t) for t in block_tables)
        table = torch.zeros((b, max_pages), dtype=torch.int32)
        for i, t in enumerate(block_tables):
            table[i, : len(t)] = torch.tensor(list(t), dtype=torch.int32)
        self.block_tables = table.to(dev)  # [B, max_pages]
        self.context_lens = torch.tensor(list(context_lens), dtype=torch.int32, device=dev)  # before the new tokens
        self.num_new = torch.tensor(list(num_new), dtype=torch.int32, device=dev)
        self.seq_lens = self.context_lens + self.num_new  # [B], after the new tokens
        self.max_new = int(max(num_new))
        self.max_len = int(max(c + n for c, n in zip(context_lens, num_new, strict=True)))
        # Flat slot (page * page_size + offset) of every new token; padding rows are dropped by `new_mask`.
        offs = torch.arange(self.max_new, device=dev)
        pos = self.context_lens.long()[:, None] + offs[None, :]  # [B, T]
        self.new_mask = offs[None, :] < self.num_new.long()[:, None]  # [B, T]
        pos_c = torch.where(self.new_mask, pos, 0)
        page = torch.gather(self.block_tables.long(), 1, pos_c // ps)
        self.new_slots = (page * ps + pos_c % ps)[self.new_mask]  # [N]
        # Flat slot of every token position 0 .. max_len - 1 of each sequence (clamped past its end).
        j = torch.arange(self.max_len, device=dev)
        jj = torch.minimum(j[None, :], (self.seq_lens.long() - 1)[:, None])  # [B, L]
        self.all_slots = torch.gather(self.block_tables.long(), 1, jj // ps) * ps + jj % ps  # [B, L]

    def _store(
        self, codes: torch.Tensor, scales: torch.Tensor | None, zeros: torch.Tensor | None, x: torch.Tensor
    ) -> None:
        # x: [B, Hkv, T, D] -> the valid new tokens [N, Hkv, D]
        xt = x.transpose(1, 2)[self.new_mask]
        q = self.cache.quantizer.quantize(xt)
        codes.view(-1, *codes.shape[2:])[self.new_slots] = q.codes.to(codes.dtype)
        if scales is not None and zeros is not None:
            scales.view(-1, scales.shape[-1])[self.new_slots] = q.scales
            zeros.view(-1, zeros.shape[-1])[self.new_slots] = q.zeros

    def _gather(self, codes: torch.Tensor, scales: torch.Tensor | None, zeros: torch.Tensor | None) -> torch.Tensor:
        # -> dequantized [B, Hkv, L, D] float32
        flat = codes.view(-1, *codes.shape[2:])[self.all_slots]  # [B, L, Hkv, D or D/2]
        if scales is None or zeros is None:
            x = flat.float()
        else:
            s = scales.view(-1, scales.shape[-1])[self.all_slots]
            z = zeros.view(-1, zeros.shape[-1])[self.all_slots]
            x = self.cache.quantizer.dequantize(flat, s, z, torch.float32)
        return x.transpose(1, 2)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store the new ``k``/``v`` ``[B, Hkv, T, D]`` and return causal attention of ``q`` ``[B, Hq, T, D]``
        over each sequence's context plus its new tokens, ``[B, Hq, T, D]`` in ``q``'s dtype."""
        bsz, hq, t, d = q.shape
        if t != self.max_new or bsz != self.block_tables.shape[0]:
            raise InputError(
                f"attend expects q of shape [{self.block_tables.shape[0]}, Hq, {self.max_new}, D], "
                f"found {tuple(q.shape)}"
            )
        kv = self.cache.layers[layer]
        self._store(kv.k_codes, kv.k_scales, kv.k_zeros, k)
        self._store(kv.v_codes, kv.v_scales, kv.v_zeros, v)
        scale = 1.0 / math.sqrt(d)
        if t == 1 and self.decode_attention is not None:
            out = self.decode_attention(
                q[:, :, 0],
                k_codes=kv.k_codes,
                k_scales=kv.k_scales,
                k_zeros=kv.k_zeros,
                v_codes=kv.v_codes,
                v_scales=kv.v_scales,
                v_zeros=kv.v_zeros,
                block_tables=self.block_tables,
                context_lens=self.seq_lens,
                scale=scale,
                kv_bits=self.cache.kv_bits,
            )  # [B, Hq, D]
            return out.unsqueeze(2).to(q.dtype)
        keys = self._gather(kv.k_codes, kv.k_scales, kv.k_zeros)  # [B, Hkv, L, D]
        values = self._gather(kv.v_codes, kv.v_scales, kv.v_zeros)
        hkv = keys.shape[1]
        # GQA without copying K/V: the Hq // Hkv query heads of a group share one K/V head.
        qg = q.float().reshape(bsz, hkv, hq // hkv, t, d)  # [B, Hkv, G, T, D]
        att = (qg @ keys.transpose(-1, -2).unsqueeze(2)) * scale  # [B, Hkv, G, T, L]
        # New token i of sequence b sits at position context_lens[b] + i and sees keys 0 .. that position.
        qpos = self.context_lens.long()[:, None] + torch.arange(t, device=q.device)[None, :]  # [B, T]
        kpos = torch.arange(self.max_len, device=q.device)
        allowed = kpos[None, None, :] <= qpos[:, :, None]  # [B, T, L]
        att = att.masked_fill(~allowed[:, None, None], float("-inf"))
        out = (torch.softmax(att, dim=-1) @ values.unsqueeze(2)).reshape(bsz, hq, t, d)  # [B, Hq, T, D]
        return out.to(q.dtype)


def describe(cache: PagedKVCache) -> dict[str, Any]:
    """A small summary (for logs and benchmarks)."""
    return {
        "kv_bits": cache.kv_bits,
        "page_size": cache.page_size,
        "num_pages": cache.num_pages,
        "bytes_per_token": cache.bytes_per_token,
        "total_bytes": cache.bytes_per_token * cache.page_size * cache.num_pages,
    }
