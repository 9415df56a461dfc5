"""SpAtten datapath simulator (Sec. 4-5): hand-checked cycles and traffic, dense baseline, errors, speed."""

from __future__ import annotations

import math
import time

import pytest
from pydantic import ValidationError

from accel_sims.errors import AccelSimsError
from accel_sims.spatten.benchmarks import make_workload
from accel_sims.spatten.config import SpAttenConfig, preset_names
from accel_sims.spatten.simulator import compare, dense_baseline, simulate
from accel_sims.spatten.topk import expected_quickselect_cycles
from accel_sims.spatten.workload import HeadRecord, Workload, read_csv, write_csv

SPATTEN = SpAttenConfig.from_name("spatten")


def _rec(head: int, *, requant: bool, topk: bool, layer: int = 0, head_dim: int = 64, key_bits: int = 6) -> HeadRecord:
    return HeadRecord(
        iteration_id=0, layer_id=layer, head_id=head, head_dim=head_dim, seq_len=100, num_queries=10,
        key_fetch_num=40, key_bits=key_bits, query_bits=16, requant_threshold=0.05, requant=requant,
        requant_extra_bits=4, value_fetch_num=12, value_bits=8, accumulate_importance=True, topk=topk,
        topk_k=20 if topk else 0,
    )  # fmt: skip


def test_one_head_hand_checked() -> None:
    # D = 64 on 512 multipliers: 8 keys per cycle. 40 keys at 6 bits (packed 8): 40 x 2 = 80 transactions;
    # LSB refetch at 4 bits: 40 x 1 = 40; 12 values at 8 bits: 24. DRAM cycles ceil(80/16) + ceil(40/16) +
    # ceil(24/16) = 5 + 3 + 2 = 10. Q.K per query ceil(40/8) = 5, twice for requant = 10; P.V ceil(12/8) = 2;
    # 10 queries -> compute 100. Overlapped head = max(10, 100) = 100. Drain: 11 (SRAM, mult, tree) + 87 (softmax)
    # + FIFO ceil(40/8) = 5 + 1 (requant) + 1 (top-k) + 3 (P.V) = 108. Total 208.
    r = simulate(Workload(model="t", records=(_rec(0, requant=True, topk=False),)), SPATTEN)
    assert r.dram_transactions == {"key": 80, "key_lsb": 40, "value": 24}
    assert r.dram_bytes == {"key": 2560, "key_lsb": 1280, "value": 768}
    assert r.cycle_breakdown == {"dram": 10, "compute": 100, "drain": 108, "topk": 0}
    assert r.cycles == 208
    assert r.operations["qk_macs"] == 10 * 40 * 64 * 2
    assert r.operations["pv_macs"] == 10 * 12 * 64
    # Serial (bert.cpp) structure: DRAM + compute + drain = 10 + 100 + 108.
    serial = SpAttenConfig(name="serial", overlap_fetch_compute=False)
    assert simulate(Workload(model="t", records=(_rec(0, requant=True, topk=False),)), serial).cycles == 218


def test_layer_with_token_topk_and_dense_baseline_hand_checked() -> None:
    # Head 0 as above (100 cycles of head time). Head 1 without requant: DRAM 80 + 24 transactions (5 + 2 cycles),
    # compute 10 x ceil(40/8) = 50 -> 50. Token top-k of 20 among 40 after head 1 (expected quick-select, P = 16,
    # fill/drain at 8 per cycle). Drain of the last head: 108.
    w = Workload(model="t", records=(_rec(0, requant=True, topk=False), _rec(1, requant=False, topk=True)))
    r = simulate(w, SPATTEN)
    topk = math.ceil(float(expected_quickselect_cycles(40, 20, parallelism=16, round_overhead=3, io_width=8)))
    assert r.cycle_breakdown["topk"] == topk
    assert r.cycles == 100 + 50 + 108 + topk
    assert r.total_dram_bytes == (144 + 104) * 32
    (layer,) = r.layers
    assert (layer.heads, layer.keys_fetched, layer.values_fetched) == (2, 80, 24)
    assert layer.keep_ratio == pytest.approx(0.4)
    # Dense 16-bit: 2 heads x 100 queries x 100 keys; per head K and V 100 rows x 4 transactions = 400 each,
    # DRAM 25 + 25 cycles; compute 100 x ceil(100/8) = 1300 per head; drain 11 + 87 + 13 + 1 + 1 + 3 = 116.
    dense_w = dense_baseline(w)
    assert len(dense_w.records) == 2 and all(rec.key_bits == 16 and not rec.topk for rec in dense_w.records)
    d = simulate(dense_w, SPATTEN)
    assert d.dram_transactions == {"key": 800, "key_lsb": 0, "value": 800}
    assert d.cycles == 2 * 1300 + 116
    ratios = compare(r, d)
    assert ratios["dram_reduction"] == pytest.approx(51200 / 7936)
    assert ratios["speedup"] == pytest.approx(d.cycles / r.cycles)


def test_dense_baseline_restores_pruned_heads_and_decode_queries() -> None:
    recs = (
        _rec(0, requant=False, topk=False),
        _rec(1, requant=False, topk=False),
        _rec(0, requant=False, topk=False, layer=1),
    )
    dense = dense_baseline(Workload(model="t", records=recs))
    assert [(r.layer_id, r.head_id) for r in dense.records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(r.num_queries == 100 and r.key_fetch_num == 100 == r.value_fetch_num for r in dense.records)
    one_query = _rec(0, requant=False, topk=False).model_copy(update={"num_queries": 1})
    assert dense_baseline(Workload(model="t", records=(one_query,))).records[0].num_queries == 1


def test_energy_breakdown_is_positive_and_scales_with_traffic() -> None:
    w = make_workload("bert-base")
    r, d = simulate(w), simulate(dense_baseline(w))
    assert set(r.energy_pj) == {"dram", "sram", "qk_multipliers", "pv_multipliers", "softmax", "topk"}
    assert all(v > 0 for v in r.energy_pj.values())
    assert r.energy_pj["dram"] == pytest.approx(r.total_dram_bytes * 8 * SPATTEN.energy.dram_pj_per_bit)
    assert d.energy_pj["topk"] == 0 and d.total_energy_pj > r.total_energy_pj


def test_unsupported_records_name_record_and_field() -> None:
    with pytest.raises(AccelSimsError, match=r"record 0 \(iteration 0, layer 0, head 0\): field head_dim = 128"):
        simulate(Workload(model="t", records=(_rec(0, requant=False, topk=False, head_dim=128),)), SPATTEN)
    narrow = SpAttenConfig(name="narrow", packed_bit_widths=(4, 8, 16))
    bad = _rec(0, requant=False, topk=False).model_copy(update={"value_bits": 20})
    with pytest.raises(AccelSimsError, match="record 0 .*field value_bits = 20"):
        simulate(Workload(model="t", records=(bad,)), narrow)


def test_config_presets_and_validation() -> None:
    assert {"spatten", "spatten-1/8"} <= set(preset_names())
    c = SpAttenConfig.from_name("spatten")
    assert (c.max_head_dim, c.qk_multipliers, c.pv_multipliers, c.dram_channels, c.transaction_bytes) == (
        64,
        512,
        512,
        16,
        32,
    )
    assert (c.topk_parallelism, c.clock_ghz, c.dram_kind) == (16, 1.0, "HBM2")
    assert c.latency.key_path == 11 and c.latency.softmax == 87 and c.latency.value_path == 3
    eighth = SpAttenConfig.from_name("spatten-1/8")
    assert (eighth.qk_multipliers, eighth.dram_channels) == (64, 2)
    with pytest.raises(AccelSimsError, match="unknown SpAtten preset"):
        SpAttenConfig.from_name("spaten")
    with pytest.raises(ValidationError, match="dram_chanels"):
        SpAttenConfig(dram_chanels=4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        c.dram_channels = 4  # type: ignore[misc]
    with pytest.raises(ValidationError, match="max_head_dim"):
        SpAttenConfig(qk_multipliers=32)


def test_csv_round_trip_simulates_the_same() -> None:
    w = make_workload("bert-base")
    again = read_csv(write_csv(w), model="bert-base")
    assert simulate(again) == simulate(w)


def test_bert_base_384_simulates_fast() -> None:
    # Issue point 6: a whole BERT-base run at 384 tokens (12 layers x 12 heads) in under 5 s.
    t0 = time.perf_counter()
    w = make_workload("bert-base", seq_len=384)
    r = simulate(w)
    d = simulate(dense_baseline(w))
    elapsed = time.perf_counter() - t0
    assert len({(x.layer_id) for x in w.records}) == 12 and r.cycles < d.cycles
    assert elapsed < 5.0


def test_topk_seed_gives_sampled_cycles_near_expected() -> None:
    w = make_workload("bert-base")
    sampled = [simulate(w, topk_seed=s).cycle_breakdown["topk"] for s in range(0, 40, 10)]
    expected = simulate(w).cycle_breakdown["topk"]
    assert sum(sampled) / len(sampled) == pytest.approx(expected, rel=0.15)
    assert simulate(w, topk_seed=3) == simulate(w, topk_seed=3)


def test_value_topk_on_critical_path_only_adds_cycles() -> None:
    w = make_workload("bert-base")
    hidden, exposed = simulate(w), simulate(w, value_topk_on_critical_path=True)
    assert exposed.cycles >= hidden.cycles
    assert exposed.total_dram_bytes == hidden.total_dram_bytes


def test_result_json_round_trip() -> None:
    from accel_sims.spatten.simulator import SimResult

    r = simulate(make_workload("gpt2-small", generated_tokens=2))
    again = SimResult.model_validate_json(r.model_dump_json())
    assert again == r and again.config == SPATTEN
    assert again.seconds == pytest.approx(r.cycles * 1e-9)
