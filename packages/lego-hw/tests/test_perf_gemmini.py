"""The Gemmini-like baseline and the LEGO comparison under the same performance model."""

from __future__ import annotations

import pytest

from lego_hw import gemmini, schedule
from lego_hw.models import transformer_block
from lego_hw.reuse import analyze
from lego_hw.workload import attention_pv, attention_qk, conv2d, gemm


def test_baseline_configuration_is_gemmini_default() -> None:
    a, m = gemmini.GEMMINI_ARRAY, gemmini.GEMMINI_MEMORY
    assert (a.rows, a.cols, a.data_width, a.acc_width) == (16, 16, 8, 32)
    assert (m.scratchpad_bytes, m.scratchpad_banks) == (256 * 1024, 4)
    assert (m.accumulator_bytes, m.accumulator_banks) == (64 * 1024, 2)
    assert m.dram_bytes_per_cycle == 16  # 128-bit DMA bus
    assert "defaultConfig" in gemmini.GEMMINI_SOURCE
    # Same MACs and the same total SRAM for the LEGO design.
    assert gemmini.LEGO_ARRAY.num_pes == a.num_pes == 256
    assert gemmini.LEGO_MEMORY.total_bytes == m.total_bytes
    assert (gemmini.PAPER_SPEEDUP, gemmini.PAPER_ENERGY_RATIO) == (3.2, 2.4)


def test_weight_tensor_and_bindings() -> None:
    assert gemmini.weight_tensor(conv2d(16, 16, 8, 8, 3, 3)) == "W"
    assert gemmini.weight_tensor(gemm(8, 8, 8)) == "B"
    assert gemmini.weight_tensor(attention_qk(2, 8, 8, 4)) == "K"
    assert gemmini.weight_tensor(attention_pv(2, 8, 8, 4)) == "V"
    assert gemmini.weight_stationary_bindings(gemm(32, 32, 32)) == [("i", "j", "k")]
    conv = conv2d(32, 32, 20, 20, 3, 3)
    for loops in gemmini.weight_stationary_bindings(conv):
        assert loops[1] == "k" and loops[0] in ("y", "x")


def test_baseline_holds_weights_and_lego_is_no_worse() -> None:
    wl = conv2d(k=32, c=32, oh=20, ow=18, r=3, s=3)
    m, base = gemmini.baseline_estimate(wl)
    assert base.dataflow == "weight-stationary" and base.cycles == schedule.total_cycles(m)
    assert "stationary" in analyze(wl, m.dataflow)["W"].kinds
    lm, lego = gemmini.lego_estimate(wl)
    assert lego.cycles == schedule.total_cycles(lm) and lego.pes == base.pes == 256
    # LEGO's candidates include the baseline's mapping, so under its objective (EDP) it cannot lose.
    assert lego.energy.total_pj * lego.total_cycles <= base.energy.total_pj * base.total_cycles
    _, fast = gemmini.lego_estimate(wl, objective="cycles")
    assert fast.total_cycles <= base.total_cycles


def test_compare_and_totals_on_a_small_transformer() -> None:
    layers = transformer_block(seq=32, d_model=64, heads=4, d_ff=128)
    rows = gemmini.compare(layers)
    assert [r.name for r in rows] == [lay.name for lay in layers]
    t = gemmini.totals(rows)
    assert t.baseline_cycles == sum(r.baseline.total_cycles * r.count for r in rows)
    assert t.lego_energy_pj == pytest.approx(sum(r.lego.energy.total_pj * r.count for r in rows))
    assert t.speedup == pytest.approx(t.baseline_cycles / t.lego_cycles)
    assert t.energy_ratio == pytest.approx(t.baseline_energy_pj / t.lego_energy_pj)
    assert t.macs == sum(lay.workload.macs * lay.count for lay in layers)
    for r in rows:
        assert r.speedup == pytest.approx(r.baseline.total_cycles / r.lego.total_cycles)
        assert r.lego.energy.total_pj * r.lego.total_cycles <= r.baseline.energy.total_pj * r.baseline.total_cycles
