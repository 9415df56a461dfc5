"""SpAtten algorithms on real attention: cascade token/head pruning, local value pruning, progressive quantization."""

from __future__ import annotations

import math

import pytest
import torch

from accel_sims.errors import AccelSimsError
from accel_sims.models import BertConfig, BertModel, GPT2Config, GPT2Model, dense_attention
from accel_sims.spatten.attention import SpAttenAttention, run
from accel_sims.spatten.head_pruning import head_importance, select_heads
from accel_sims.spatten.progressive_quant import needs_requant, quantize
from accel_sims.spatten.pruning import PruningConfig, cascade_schedule, keep_count
from accel_sims.spatten.token_pruning import kv_cache_keep, select_top_tokens, token_importance
from accel_sims.spatten.value_pruning import local_value_prune


def tiny_bert(layers: int = 4) -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=8,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    m = BertModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.3) if p.dim() > 1 else None
    return m


def tiny_gpt2() -> GPT2Model:
    torch.manual_seed(1)
    m = GPT2Model(GPT2Config(vocab_size=40, n_positions=128, n_embd=16, n_layer=2, n_head=4)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.3)
    return m


# ---------- configuration ----------
@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"token_keep_ratios": (1.0, 0.0)}, r"token_keep_ratios.*\[1\] \(layer 1\) = 0\.0.*\(0, 1\]"),
        ({"token_keep_ratios": (1.2,)}, r"token_keep_ratios.*layer 0.*\(0, 1\]"),
        ({"token_keep_ratios": (1.0, 0.5, 0.7)}, r"token_keep_ratios.*\[2\] \(layer 2\) = 0\.7 > layer 1"),
        ({"head_keep_ratios": (1.0, -0.5)}, r"head_keep_ratios.*layer 1"),
        ({"value_keep_ratio": 0.0}, r"value_keep_ratio"),
        ({"requant_threshold": 1.5}, r"requant_threshold = 1\.5.*\[0, 1\]"),
        ({"requant_threshold": -0.1}, r"requant_threshold"),
        ({"token_keep_ratio": 0.5}, r"token_keep_ratio.*Extra inputs"),
    ],
)
def test_bad_config_is_named(fields: dict, match: str) -> None:
    with pytest.raises(AccelSimsError, match=match):
        PruningConfig.create(**fields)


def test_layer_and_head_counts_must_match() -> None:
    cfg = PruningConfig(token_keep_ratios=(1.0, 0.5, 0.5))
    with pytest.raises(AccelSimsError, match="token_keep_ratios has 3 entries but the model has 4 layers"):
        SpAttenAttention(cfg, num_layers=4, num_heads=8)
    fn = SpAttenAttention(PruningConfig(), num_layers=2, num_heads=8)
    q = torch.randn(1, 4, 3, 8)
    with pytest.raises(AccelSimsError, match="layer 1 got 4 heads, configured for 8"):
        fn(q, q, q, layer=1, key_mask=None, causal=False)
    with pytest.raises(AccelSimsError, match="layer 5 outside 0..1"):
        fn(q, q, q, layer=5, key_mask=None, causal=False)


def test_empty_sequences_rejected() -> None:
    fn = SpAttenAttention(PruningConfig(), num_layers=1, num_heads=2)
    e = torch.randn(1, 2, 0, 4)
    with pytest.raises(AccelSimsError, match="layer 0 got an empty sequence"):
        fn(e, e, e, layer=0, key_mask=None, causal=False)
    x = torch.randn(2, 2, 3, 4)
    with pytest.raises(AccelSimsError, match="empty sequence"):
        fn.select_tokens(0, torch.tensor([[True, True, True], [False, False, False]]))
        fn(x, x, x, layer=0, key_mask=torch.tensor([[True, True, True], [False, False, False]]), causal=False)


def test_cascade_schedule() -> None:
    s = cascade_schedule(6, 0.5)
    assert s[0] == 1.0 and math.isclose(s[-1], 0.5) and list(s) == sorted(s, reverse=True)
    assert cascade_schedule(3, 0.25, first_pruned_layer=1) == (1.0, 0.5, 0.25)
    assert keep_count(0.5, 7) == 4 and keep_count(0.01, 7) == 1 and keep_count(1.0, 7) == 7


# ---------- dense equivalence ----------
@pytest.mark.parametrize("causal", [False, True])
def test_keep_all_without_quantization_is_dense(causal: bool) -> None:
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    mask = None if causal else torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    fn = SpAttenAttention(PruningConfig(), num_layers=1, num_heads=4)
    out = fn(q, k, v, layer=0, key_mask=mask, causal=causal)
    torch.testing.assert_close(out, dense_attention(q, k, v, layer=0, key_mask=mask, causal=causal), rtol=0, atol=0)


def test_model_keep_all_is_dense() -> None:
    m = tiny_bert()
    ids = torch.randint(0, 60, (2, 12))
    am = torch.ones(2, 12, dtype=torch.long)
    am[1, 9:] = 0
    with torch.no_grad():
        ref = m(ids, am).last_hidden_state
    out = run(m, PruningConfig(), ids, attention_mask=am).outputs
    assert torch.equal(out.last_hidden_state, ref)


# ---------- cascade token pruning ----------
def test_token_importance_and_topk_by_hand() -> None:
    probs = torch.tensor([[[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.3, 0.3, 0.4], [0.5, 0.5, 0.0]]]])  # [1, 2, 2, 3]
    imp = token_importance(probs)
    torch.testing.assert_close(imp, torch.tensor([[1.6, 1.1, 1.3]]))
    # Head 1 pruned and query 1 padded: only probs[0, 0, 0] counts.
    imp2 = token_importance(probs, torch.tensor([[True, False]]), torch.tensor([[True, False]]))
    torch.testing.assert_close(imp2, torch.tensor([[0.7, 0.2, 0.1]]))
    index, mask = select_top_tokens(imp, torch.ones(1, 3, dtype=torch.bool), torch.tensor([2]))
    assert index.tolist() == [[0, 2]] and mask.all()  # returned in original order


def test_select_top_tokens_ragged_batch() -> None:
    imp = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.4, 0.2, 0.8, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    index, mask = select_top_tokens(imp, valid, torch.tensor([3, 1]))
    assert index[0].tolist() == [1, 2, 3] and mask[0].all()
    assert index[1][mask[1]].tolist() == [2] and mask[1].tolist() == [True, False, False]


def test_pruned_tokens_never_come_back() -> None:
    m = tiny_bert(layers=5)
    ids = torch.randint(0, 60, (3, 20))
    am = torch.ones(3, 20, dtype=torch.long)
    am[1, 15:] = 0
    am[2, 7:] = 0
    cfg = PruningConfig(token_keep_ratios=(1.0, 0.8, 0.6, 0.4, 0.2))
    r = run(m, cfg, ids, attention_mask=am)
    n0 = am.sum(1).tolist()
    for b in range(3):
        previous: set[int] | None = None
        for layer, st in enumerate(r.stats):
            assert st.positions is not None
            kept = {int(p) for p in st.positions[b] if p >= 0}
            assert len(kept) == keep_count(cfg.token_keep_ratios[layer], n0[b]) == int(st.key_fetch[b])
            if previous is not None:
                assert kept <= previous
            previous = kept
    # The model's output keeps only the last layer's tokens (queries are pruned too).
    assert r.outputs.mask.sum(1).tolist() == [keep_count(0.2, n) for n in n0]
    last = r.stats[-1].positions
    assert last is not None and torch.equal(r.outputs.positions, last)
    assert r.stats[0].topk_k is not None and r.stats[-1].topk_k is None


def test_kv_cache_split_by_hand() -> None:
    imp = torch.tensor([[9.0, 0.0, 5.0, 1.0, 7.0, 2.0, 6.0, 0.0, 0.0, 0.0]])
    alive = torch.ones(1, 10, dtype=torch.bool)
    alive[0, 4] = False  # pruned before: stays pruned although it is important
    keep = kv_cache_keep(imp, alive, start=2, important=2, recent=3)
    assert keep[0].nonzero().flatten().tolist() == [0, 1, 2, 6, 7, 8, 9]


def test_decoder_kv_cache_pruning_is_cumulative() -> None:
    m = tiny_gpt2()
    cfg = PruningConfig(start_size=2, recent_size=3, important_size=4)
    fn = SpAttenAttention(cfg, m.num_layers, m.num_heads)
    ids = torch.randint(0, 40, (1, 16))
    with torch.no_grad(), m.use_attention(fn):
        out = m(ids)
        for _ in range(6):
            out = m(out.logits[:, -1:].argmax(-1), out.past_key_values)
    decode = [s for s in fn.stats if s.iteration > 0]
    assert len(decode) == 12 and all(int(s.num_queries[0]) == 1 for s in decode)
    # Each step attends to the budget plus the newest token; seq_len grows by one per step.
    assert all(int(s.key_fetch[0]) == 2 + 3 + 4 + 1 for s in decode)
    assert [int(s.seq_len[0]) for s in decode if s.layer == 0] == list(range(17, 23))
    alive = fn._s.caches[0].alive[0]
    assert int(alive.sum()) == 9
    assert fn.stats[0].topk_k is not None and int(fn.stats[0].topk_k[0]) == 9


# ---------- cascade head pruning ----------
def test_head_selection_by_hand() -> None:
    out = torch.zeros(1, 3, 2, 2)
    out[0, 0] = 1.0
    out[0, 2] = -3.0
    torch.testing.assert_close(head_importance(out), torch.tensor([[4.0, 0.0, 12.0]]))
    alive = torch.tensor([[True, True, False]])
    assert select_heads(torch.tensor([[1.0, 2.0, 9.0]]), alive, 1).tolist() == [[False, True, False]]


def test_head_pruning_is_cumulative() -> None:
    m = tiny_bert(layers=5)
    ids = torch.randint(0, 60, (2, 10))
    cfg = PruningConfig(head_keep_ratios=(1.0, 0.75, 0.5, 0.5, 0.25))
    r = run(m, cfg, ids)
    previous = None
    for layer, st in enumerate(r.stats):
        assert st.head_alive.sum(1).tolist() == [keep_count(cfg.head_keep_ratios[layer], 8)] * 2
        if previous is not None:
            assert not (st.head_alive & ~previous).any()
        previous = st.head_alive


# ---------- local value pruning ----------
def test_value_pruning_keeps_exactly_the_top_probabilities() -> None:
    probs = torch.tensor([[[[0.5, 0.1, 0.3, 0.1], [0.05, 0.05, 0.1, 0.8]]]])
    pruned, kept = local_value_prune(probs, 0.5)
    assert kept[0, 0].tolist() == [[True, False, True, False], [False, False, True, True]]
    torch.testing.assert_close(pruned, probs * kept)
    # Masked keys never count: of 3 valid keys, ceil(0.5 * 3) = 2 are kept.
    valid = torch.tensor([True, True, False, True])
    _, kept2 = local_value_prune(probs, 0.5, valid)
    assert kept2[0, 0].tolist() == [[True, True, False, False], [True, False, False, True]]  # ties: earlier key


def test_value_pruning_in_attention_counts_rows() -> None:
    torch.manual_seed(3)
    q, k, v = torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4)
    fn = SpAttenAttention(PruningConfig(value_keep_ratio=0.3), num_layers=1, num_heads=2)
    out = fn(q, k, v, layer=0, key_mask=None, causal=False)
    probs = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1)
    top = probs.topk(3, dim=-1)
    ref = (torch.zeros_like(probs).scatter(-1, top.indices, top.values)) @ v
    torch.testing.assert_close(out, ref)
    assert fn.stats[0].value_fetch.tolist() == [[3, 3]]


# ---------- progressive quantization ----------
def test_quantize_levels() -> None:
    x = torch.tensor([[[-1.0, -0.3, 0.0, 0.26, 1.0]]])
    assert torch.allclose(quantize(x, 2), torch.tensor([[[-1.0, 0.0, 0.0, 0.0, 1.0]]]))
    q3 = quantize(x, 3)  # levels k/3
    assert torch.allclose(q3 * 3, torch.round(q3 * 3))
    # MSB fetch of a 5-bit number (levels k/15) keeping 3 bits: multiples of 4/15, the top clamped to 12/15.
    m = quantize(torch.tensor([[[-1.0, -0.2, 0.1, 0.2, 0.9]]]), 5, drop_bits=2) * 15
    assert torch.allclose(m, torch.tensor([[[-12.0, -4.0, 0.0, 4.0, 12.0]]]))


def test_requant_decision_flat_vs_peaked() -> None:
    """A flat softmax (max 1/32 < 0.05) refetches the LSBs; a peaked one (max ~ 1) does not."""
    d, n = 4, 32
    k = torch.randn(1, 1, n, d)
    flat_q = torch.zeros(1, 1, 1, d)
    peaked_q = 50 * k[:, :, 5:6] / k[0, 0, 5].norm()
    v = torch.randn(1, 1, n, d)
    cfg = PruningConfig(quantize=True)
    for q, expected in ((flat_q, True), (peaked_q, False)):
        fn = SpAttenAttention(cfg, num_layers=1, num_heads=1)
        fn(q, k, v, layer=0, key_mask=None, causal=False)
        assert bool(fn.stats[0].requant[0, 0]) is expected
    assert needs_requant(torch.tensor([[[[0.049, 0.951]]]]), 0.05).item() is False
    assert needs_requant(torch.full((1, 1, 1, 25), 0.04), 0.05).item() is True


def test_requant_recomputes_with_more_bits() -> None:
    torch.manual_seed(4)
    q, k, v = torch.randn(1, 1, 1, 8) * 0.01, torch.randn(1, 1, 40, 8), torch.randn(1, 1, 40, 8)
    fn = SpAttenAttention(PruningConfig(quantize=True), num_layers=1, num_heads=1)
    out = fn(q, k, v, layer=0, key_mask=None, causal=False)
    assert bool(fn.stats[0].requant[0, 0])
    k10, v12 = quantize(k, 10), quantize(v, 12)
    ref = torch.softmax(q @ k10.transpose(-1, -2) / math.sqrt(8), -1) @ v12
    torch.testing.assert_close(out, ref)
    # Never requantizing (threshold 0) uses the 6-bit MSB keys and 8-bit MSB values.
    fn0 = SpAttenAttention(PruningConfig(quantize=True, requant_threshold=0.0), num_layers=1, num_heads=1)
    out0 = fn0(q, k, v, layer=0, key_mask=None, causal=False)
    k6, v8 = quantize(k, 10, drop_bits=4), quantize(v, 12, drop_bits=4)  # the MSBs of the 10- and 12-bit numbers
    ref0 = torch.softmax(q @ k6.transpose(-1, -2) / math.sqrt(8), -1) @ v8
    torch.testing.assert_close(out0, ref0)
    assert not bool(fn0.stats[0].requant.any())


def test_standalone_attention_function_prunes_keys() -> None:
    """Used as a plain attention function (the host keeps every token), pruned tokens leave K/V as masked keys."""
    torch.manual_seed(5)
    cfg = PruningConfig(token_keep_ratios=(1.0, 0.5, 0.25))
    fn = SpAttenAttention(cfg, num_layers=3, num_heads=2)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 12:] = False
    for layer in range(3):
        q, k, v = torch.randn(2, 2, 16, 4), torch.randn(2, 2, 16, 4), torch.randn(2, 2, 16, 4)
        out = fn(q, k, v, layer=layer, key_mask=mask, causal=False)
        assert out.shape == (2, 2, 16, 4)
    assert [s.key_fetch.tolist() for s in fn.stats] == [[16, 12], [8, 6], [4, 3]]
    for b in range(2):
        sets = [{int(p) for p in s.positions[b] if p >= 0} for s in fn.stats if s.positions is not None]
        assert len(sets) == 3 and sets[2] <= sets[1] <= sets[0]
    fn.reset()
    assert fn.stats == []
