"""Benchmark workload generators (BERT-base/large, GPT-2 small/medium) and their DRAM reduction."""

from __future__ import annotations

import pytest

from accel_sims.errors import AccelSimsError
from accel_sims.spatten.benchmarks import MODELS, BenchmarkSettings, benchmark_names, make_workload
from accel_sims.spatten.simulator import compare, dense_baseline, simulate


@pytest.mark.parametrize("name", benchmark_names())
def test_workloads_are_cascades(name: str) -> None:
    w = make_workload(name, generated_tokens=2)
    shape = MODELS[name]
    for recs in w.layers().values():
        assert len(recs) <= shape.heads and all(r.head_dim == 64 for r in recs)
        assert all(r.value_fetch_num <= r.key_fetch_num <= r.seq_len for r in recs)
        assert sum(r.topk for r in recs) <= 1
    for it in {r.iteration_id for r in w.records}:
        keys = [w.layers()[(it, layer)][0].key_fetch_num for layer in range(shape.layers)]
        heads = [len(w.layers()[(it, layer)]) for layer in range(shape.layers)]
        assert keys == sorted(keys, reverse=True) and heads == sorted(heads, reverse=True)
        for layer in range(shape.layers - 1):
            recs = w.layers()[(it, layer)]
            if recs[-1].topk:  # the token top-k keeps exactly the next layer's keys
                assert recs[-1].topk_k == keys[layer + 1]


def test_gpt2_medium_follows_reference_schedule() -> None:
    # Reference workload file (hw.md [F]): at a 1011-token context layer 2 keeps 921, layer 3 keeps 819 (0.81),
    # layer 5 keeps 614 (0.61), layer 11 keeps 307 (0.30); 16 heads until layer 15, 13 from 16, 10 in 22-23.
    w = make_workload("gpt2-medium", prompt_len=1010, generated_tokens=1)
    layers = w.layers()
    assert w.records[0].seq_len == 1011 and all(r.num_queries == 1 for r in w.records)
    assert [layers[(0, i)][0].key_fetch_num for i in (0, 2, 3, 5, 11, 23)] == [1011, 920, 819, 617, 303, 303]
    assert [len(layers[(0, i)]) for i in (15, 16, 22)] == [16, 13, 10]
    assert layers[(0, 11)][0].value_fetch_num == 91


def test_kv_budget_limits_fetched_keys() -> None:
    w = make_workload("gpt2-small", BenchmarkSettings(kv_budget=(4, 128, 128)), generated_tokens=2)
    assert {r.key_fetch_num for r in w.records} == {260}


def test_bad_settings_are_named() -> None:
    with pytest.raises(AccelSimsError, match="unknown benchmark"):
        make_workload("bert-huge")
    with pytest.raises(AccelSimsError, match="token_keep has 2 entries"):
        make_workload("bert-base", BenchmarkSettings(token_keep=(1.0, 0.5)))
    with pytest.raises(ValueError, match=r"token_keep\[1\] = 1.5"):
        BenchmarkSettings(token_keep=(1.0, 1.5))
    with pytest.raises(AccelSimsError, match="must not grow"):
        make_workload("bert-base", BenchmarkSettings(token_keep=(0.5,) + (1.0,) * 11))


@pytest.mark.parametrize("name", benchmark_names())
def test_pruning_reduces_dram_and_cycles(name: str) -> None:
    w = make_workload(name, generated_tokens=4)
    ratios = compare(simulate(w), simulate(dense_baseline(w)))
    assert ratios["dram_reduction"] > 3.0
    assert ratios["speedup"] > 1.5
