"""The paged KV cache of the QServe engine (Lin et al., arXiv 2405.04532, Sec. 5): allocator, page arithmetic,
and paged prefill + decode through the model equal to the model's no-cache forward (KV16 and KV4)."""

from __future__ import annotations

import pytest
import torch

from qserve.config import LlamaConfig
from qserve.engine.kv_cache import BlockAllocator, PagedKVCache, kv_bytes_per_token, pages_for_budget
from qserve.errors import ConfigError, EngineError, InputError
from qserve.model import LlamaForCausalLM
from qserve.quant.kv import KVQuantizer

TINY = LlamaConfig.from_name("tiny")  # 2 layers, 2 KV heads, head_dim 16


def test_allocator_hands_out_and_takes_back_every_page() -> None:
    a = BlockAllocator(5)
    got = a.allocate(3)
    assert len(set(got)) == 3 and a.num_free == 2
    got += a.allocate(2)
    assert sorted(got) == list(range(5)) and a.num_free == 0
    with pytest.raises(EngineError, match="asked for 1, 0 of 5 free"):
        a.allocate(1)
    a.free(got[:2])
    assert a.num_free == 2 and a.can_allocate(2) and not a.can_allocate(3)
    with pytest.raises(EngineError, match="freed twice"):
        a.free([got[0]])
    with pytest.raises(EngineError, match="out of range"):
        a.free([7])
    a.free(got[2:])
    assert a.num_free == 5


def test_failed_allocation_takes_nothing() -> None:
    a = BlockAllocator(3)
    with pytest.raises(EngineError):
        a.allocate(4)
    assert a.num_free == 3


def test_bytes_per_token_and_pages_for_budget() -> None:
    # tiny: 2 layers x (K, V) x 2 KV heads; KV4 = 16/2 code bytes + 2 scale + 2 zero per token-head
    assert kv_bytes_per_token(TINY, 4) == 2 * 2 * 2 * (8 + 4)
    assert kv_bytes_per_token(TINY, 8) == 2 * 2 * 2 * (16 + 4)
    assert kv_bytes_per_token(TINY, 16) == 2 * 2 * 2 * 32
    assert kv_bytes_per_token(TINY, 16, dtype_bytes=4) == 2 * 2 * 2 * 64
    page4 = 4 * 96
    assert pages_for_budget(TINY, 4, 4, 10 * page4) == 10
    assert pages_for_budget(TINY, 4, 4, 10 * page4 + page4 - 1) == 10
    assert pages_for_budget(TINY, 16, 4, 10 * page4) == (10 * page4) // (4 * 256)
    # Llama-2-7B shapes: 32 layers, 32 KV heads, head_dim 128 -> 0.5 MiB/token in fp16, 136 KiB in KV4
    l27 = LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
    )
    assert kv_bytes_per_token(l27, 16) == 524288
    assert kv_bytes_per_token(l27, 4) == 2 * 32 * 32 * 68
    with pytest.raises(ConfigError, match="kv_bits"):
        kv_bytes_per_token(TINY, 3)
    with pytest.raises(ConfigError, match="page_size"):
        pages_for_budget(TINY, 4, 0, 1000)


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_page_layout(bits: int) -> None:
    c = PagedKVCache(TINY, bits, page_size=4, num_pages=6, dtype=torch.float32)
    assert len(c.layers) == TINY.num_hidden_layers
    layer = c.layers[0]
    d = TINY.head_dim
    if bits == 16:
        assert layer.k_codes.shape == (6, 4, 2, d) and layer.k_codes.dtype == torch.float32
        assert layer.k_scales is None and layer.v_zeros is None
    else:
        assert layer.v_codes.shape == (6, 4, 2, d // 2 if bits == 4 else d) and layer.v_codes.dtype == torch.uint8
        assert layer.k_scales is not None and layer.k_scales.shape == (6, 4, 2)
        assert layer.k_scales.dtype == torch.float16


def test_batch_view_checks_pages() -> None:
    c = PagedKVCache(TINY, 4, page_size=4, num_pages=6)
    with pytest.raises(InputError, match="need 2 pages"):
        c.batch([[0]], [3], [2])
    with pytest.raises(InputError, match="one entry per sequence"):
        c.batch([[0], [1]], [0], [1])


def _model(bits: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    m = LlamaForCausalLM(TINY).eval()
    m.kv_quant = None if bits == 16 else KVQuantizer(bits)
    return m


@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("use_kernel", [False, True])
def test_paged_prefill_and_decode_match_no_cache_forward(bits: int, use_kernel: bool) -> None:
    decode_attention = None
    if use_kernel:
        ref = pytest.importorskip("qserve.kernels.kv4_attention")
        decode_attention = ref.paged_decode_attention_ref
    m = _model(bits)
    ps = 4
    cache = PagedKVCache(TINY, bits, page_size=ps, num_pages=40, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    lens = [7, 2, 11]  # prompt lengths: ragged, so the batched prefill is right-padded
    extra = 6  # tokens added afterwards: one chunk of 2 (a prefill with context), then decode steps of 1
    seqs = [torch.randint(0, TINY.vocab_size, (n + extra,), generator=gen) for n in lens]
    # Shuffled pages so no sequence is contiguous in memory.
    order = torch.randperm(40, generator=gen).tolist()
    tables = [order[i * 8 : (i + 1) * 8] for i in range(3)]

    def run(start: list[int], count: list[int]) -> torch.Tensor:
        t = max(count)
        ids = torch.zeros(3, t, dtype=torch.long)
        pos = torch.zeros(3, t, dtype=torch.long)
        for b in range(3):
            ids[b, : count[b]] = seqs[b][start[b] : start[b] + count[b]]
            pos[b] = torch.arange(start[b], start[b] + t)
        batch = cache.batch(tables, start, count, decode_attention=decode_attention)
        with torch.no_grad():
            return m(ids, pos, cache=batch)  # [3, T, V]

    got: list[list[torch.Tensor]] = [[] for _ in range(3)]
    out = run([0, 0, 0], lens)
    for b in range(3):
        got[b].append(out[b, : lens[b]])
    done = list(lens)
    for count in [2, 1, 1, 1, 1]:
        out = run(done, [count] * 3)
        for b in range(3):
            got[b].append(out[b, :count])
        done = [d + count for d in done]
    for b in range(3):
        with torch.no_grad():
            want = m(seqs[b][None])[0]  # [T, V]: no cache, same fake-quantized K/V
        torch.testing.assert_close(torch.cat(got[b]), want, rtol=1e-4, atol=1e-4)
