"""Performance model: cycles from the shared schedule, hand-checked traffic and energy, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lego_hw import schedule
from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.energy import EnergyTable
from lego_hw.errors import IllegalMappingError, LegoError
from lego_hw.perf import (
    MemoryConfig,
    PerfReport,
    candidate_bindings,
    distinct_bindings,
    estimate,
    estimate_best,
    footprint,
    tile_nest,
)
from lego_hw.workload import attention_pv, attention_qk, conv2d, gemm

PRESETS = ("output-stationary", "weight-stationary", "input-stationary")
BIG = MemoryConfig(scratchpad_bytes=1 << 20, accumulator_bytes=1 << 20)


def check_invariants(rep: PerfReport, mapping_macs: int) -> None:
    assert rep.macs == mapping_macs
    assert 0 < rep.utilization <= 1
    assert rep.total_cycles >= rep.cycles
    assert rep.dram_bytes >= rep.compulsory_dram_bytes > 0
    for t in rep.tensors:
        assert t.dram_read_bytes + t.dram_write_bytes >= t.compulsory_bytes
        assert t.buffer_reads >= 0 and t.buffer_writes >= 0
        assert t.fetches >= 1
    e = rep.energy
    assert e.total_pj == pytest.approx(e.mac_pj + e.register_pj + e.sram_pj + e.dram_pj)
    assert min(e.mac_pj, e.register_pj, e.sram_pj, e.dram_pj) > 0


def test_hand_checked_2x2_output_stationary_gemm() -> None:
    """4x4x4 GEMM on a 2x2 OS array: tiles (i 2, j 2, k 4), 2 x 2 x 1 = 4 tiles, counted by hand."""
    m = map_workload(gemm(4, 4, 4), Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2))
    energy = EnergyTable.default()
    rep = estimate(m, MemoryConfig(), energy)
    assert rep.cycles == schedule.total_cycles(m)
    assert rep.macs == 64 and rep.pes == 4
    assert rep.utilization == pytest.approx(64 / (4 * rep.cycles))
    a, b, c = rep.traffic("A"), rep.traffic("B"), rep.traffic("C")
    # A enters at the 2 PEs of the left column, one element per cycle for k = 0..3: 8 reads per tile.
    assert (a.buffer_reads, b.buffer_reads) == (32, 32)
    # Everything fits: each input is fetched once (16 bytes) and written into the scratchpad once.
    assert (a.dram_read_bytes, b.dram_read_bytes, a.buffer_writes, b.buffer_writes) == (16, 16, 16, 16)
    # C is stationary: the drain writes the 4 accumulators per tile, no partial sums (k is one tile);
    # the accumulator is read once more to write the 16 int8 results to DRAM.
    assert (c.buffer_writes, c.buffer_reads, c.dram_write_bytes, c.dram_read_bytes) == (16, 16, 16, 0)
    assert rep.dram_bytes == rep.compulsory_dram_bytes == 48
    # Registers per tile: A and B: 16 operand writes + 16 MAC reads of 8 bits each; C: read + write of
    # 32 bits per MAC and a 2-cycle drain of 4 PEs at 32 bits; no FIFO links longer than one cycle.
    per_tile = 2 * (16 + 16) * 8 + 2 * 16 * 32 + 2 * 4 * 32
    assert rep.register_bit_accesses == 4 * per_tile == 7168
    sp_bit, acc_bit = energy.sram_bit(64 * 1024), energy.sram_bit(32 * 1024)  # 256/4 and 64/2 KiB banks
    assert rep.energy.mac_pj == pytest.approx(64 * (0.2 + 0.1))
    assert rep.energy.register_pj == pytest.approx(7168 * 0.146 / 16)
    assert rep.energy.sram_pj == pytest.approx((32 + 16) * 2 * 8 * sp_bit + (16 + 16) * 32 * acc_bit)
    assert rep.energy.dram_pj == pytest.approx(48 * 8 * 1300 / 64)
    check_invariants(rep, 64)


def test_hand_checked_dram_refetch_with_small_scratchpad() -> None:
    """8x8x8 GEMM, 2x2 OS: nest i_t(4), j_t(4), k_t(1); A's block over j,k is 16 B, B's only whole is 64 B."""
    m = map_workload(gemm(8, 8, 8), Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2))
    assert [(lv.trips, lv.step) for lv in tile_nest(m)] == [(4, 2), (4, 2), (1, 8)]

    def dram(sp: int) -> tuple[int, int]:
        rep = estimate(m, MemoryConfig(scratchpad_bytes=sp, accumulator_bytes=1024))
        return rep.traffic("A").dram_read_bytes, rep.traffic("B").dram_read_bytes

    assert dram(256) == (64, 64)  # 128 B usable (half, double-buffered): both whole
    assert dram(160) == (64, 64)  # 80 B: A per i-tile (4 x 16 B) and B whole (64 B)
    assert dram(64) == (64, 256)  # 32 B: A per i-tile, B per tile (16 tiles x 16 B)
    rep = estimate(m, MemoryConfig(scratchpad_bytes=16, accumulator_bytes=1024))
    assert not rep.fits_on_chip  # even one tile's 32 B do not fit 8 B: streamed per tile


def test_partial_sums_spill_when_accumulator_is_too_small() -> None:
    """WS 8x4x4 on 2x2: C's tile block is 8 x 2 int32 = 64 B; a 64 B accumulator (32 usable) spills it."""
    m = map_workload(gemm(8, 4, 4), Dataflow.preset("weight-stationary"), ArraySpec(rows=2, cols=2))
    ok = estimate(m, MemoryConfig(accumulator_bytes=1024)).traffic("C")
    assert (ok.dram_read_bytes, ok.dram_write_bytes) == (0, 32)
    rep = estimate(m, MemoryConfig(accumulator_bytes=64))
    c = rep.traffic("C")
    # 4 tiles (j_t 2 x k_t 2) each visit a 16-element block: 64 visits of 32 outputs -> 32 spills at 4 B.
    assert c.fetches == 4 and c.dram_read_bytes == 32 * 4 and c.dram_write_bytes == 32 + 32 * 4
    assert not rep.fits_on_chip


WORKLOADS = [
    gemm(13, 10, 7),
    gemm(16, 16, 16),
    conv2d(k=5, c=4, oh=6, ow=5, r=3, s=3, stride=2),
    attention_qk(2, 6, 5, 4),
    attention_pv(2, 5, 6, 4),
]


@pytest.mark.parametrize("wl", WORKLOADS, ids=lambda w: w.name)
@pytest.mark.parametrize("preset", PRESETS)
def test_cycles_equal_schedule_and_invariants(wl, preset) -> None:  # type: ignore[no-untyped-def]
    arr = ArraySpec(rows=3, cols=4)
    for loops in candidate_bindings(wl)[:4]:
        try:
            m = map_workload(wl, Dataflow.preset(preset, loops=loops), arr)
        except (IllegalMappingError, LegoError):
            continue
        rep = estimate(m)
        assert rep.cycles == schedule.total_cycles(m)
        check_invariants(rep, wl.macs)
        for t in wl.inputs:
            assert rep.traffic(t.name).buffer_reads >= footprint(t, wl.bounds)


def test_monotonic_in_buffer_size() -> None:
    wl = conv2d(k=8, c=8, oh=8, ow=8, r=3, s=3)
    m = map_workload(wl, Dataflow.preset("output-stationary", loops=("k", "x", "c")), ArraySpec(rows=4, cols=4))
    prev: PerfReport | None = None
    for kib in (0.125, 0.25, 0.5, 1, 2, 4, 8, 64):
        mem = MemoryConfig(scratchpad_bytes=int(kib * 1024), accumulator_bytes=int(kib * 1024), dram_bytes_per_cycle=1)
        rep = estimate(m, mem)
        assert rep.cycles == schedule.total_cycles(m)
        if prev is not None:
            assert rep.dram_bytes <= prev.dram_bytes
            assert rep.total_cycles <= prev.total_cycles
            assert rep.energy.dram_pj <= prev.energy.dram_pj
        prev = rep
    assert prev is not None and prev.dram_bytes == prev.compulsory_dram_bytes


def test_bandwidth_bound_total() -> None:
    m = map_workload(gemm(16, 16, 16), Dataflow.preset("output-stationary"), ArraySpec(rows=4, cols=4))
    slow = estimate(m, MemoryConfig(dram_bytes_per_cycle=0.01))
    assert slow.total_cycles == slow.dram_cycles > slow.cycles
    serial = estimate(m, MemoryConfig(dram_bytes_per_cycle=1, double_buffered=False))
    assert serial.total_cycles == serial.cycles + serial.dram_cycles


def test_estimate_best_picks_the_minimum_and_uses_subarrays() -> None:
    wl = gemm(24, 9, 20)
    arr = ArraySpec(rows=4, cols=4)
    m, rep = estimate_best(wl, arr, BIG, PRESETS)
    assert rep.cycles == schedule.total_cycles(m)
    brute = []
    for p in PRESETS:
        for loops in candidate_bindings(wl):
            try:
                mm = map_workload(wl, Dataflow.preset(p, loops=loops), arr)
            except LegoError:
                continue
            brute.append(estimate(mm, BIG).total_cycles)
    assert rep.total_cycles <= min(brute)
    # A GEMM with M = 1 only fits a 1-row corner of a 16x16 array; utilization counts all 256 PEs.
    m1, r1 = estimate_best(gemm(1, 40, 32), ArraySpec(rows=16, cols=16))
    assert r1.pes == 256 and min(r1.array_rows, r1.array_cols) == 1
    assert r1.utilization == pytest.approx(r1.macs / (r1.cycles * 256))
    with pytest.raises(IllegalMappingError, match="no legal mapping"):
        estimate_best(gemm(1, 40, 32), ArraySpec(rows=16, cols=16), allow_subarray=False, dataflows=PRESETS[:1])
    _, re = estimate_best(wl, arr, BIG, PRESETS, objective="energy")
    _, rd = estimate_best(wl, arr, BIG, PRESETS, objective="edp")
    assert re.energy.total_pj <= rd.energy.total_pj and re.energy.total_pj <= rep.energy.total_pj
    assert rd.energy.total_pj * rd.total_cycles <= rep.energy.total_pj * rep.total_cycles


def test_distinct_bindings_uses_conv_symmetry() -> None:
    wl = conv2d(k=16, c=16, oh=8, ow=8, r=3, s=3)
    cands = candidate_bindings(wl)
    assert ("k", "y", "c") in cands and ("k", "x", "c") in cands
    uniq = distinct_bindings(wl, cands)
    assert ("k", "y", "c") in uniq and ("k", "x", "c") not in uniq
    assert len(uniq) < len(cands)
    g = gemm(8, 8, 8)
    assert distinct_bindings(g, candidate_bindings(g)) == candidate_bindings(g)  # C[i,j] != C[j,i] roles


def test_physical_array_must_contain_mapping() -> None:
    m = map_workload(gemm(8, 8, 8), Dataflow.preset("output-stationary"), ArraySpec(rows=4, cols=4))
    with pytest.raises(LegoError, match="smaller"):
        estimate(m, physical_array=ArraySpec(rows=2, cols=2))


@settings(max_examples=20, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(2, 9),
    k=st.integers(2, 9),
    preset=st.sampled_from(PRESETS),
    sp=st.integers(8, 512),
)
def test_random_gemms_are_consistent(m: int, n: int, k: int, preset: str, sp: int) -> None:
    wl = gemm(m, n, k)
    try:
        mp = map_workload(wl, Dataflow.preset(preset), ArraySpec(rows=2, cols=2))
    except LegoError:
        return
    rep = estimate(mp, MemoryConfig(scratchpad_bytes=sp, accumulator_bytes=4 * sp))
    assert rep.cycles == schedule.total_cycles(mp)
    check_invariants(rep, wl.macs)


def test_one_dimensional_and_skewed_dataflows() -> None:
    """1-D arrays and space rows that mix loops (counted per PE by enumeration) keep the invariants."""
    wl = gemm(6, 5, 4)
    m1 = map_workload(wl, Dataflow(name="1d", loops=("i", "k"), stt=((1, 0), (1, 1))), ArraySpec(rows=3, cols=1))
    r1 = estimate(m1)
    assert r1.cycles == schedule.total_cycles(m1)
    # 10 tiles (i: 2 tiles of 3, j: 5 outer); A has no reuse inside a tile (every PE reads 4 per tile),
    # B is systolic along i (one port reads 4 per tile), C is stationary (3 drain writes per tile).
    assert (r1.traffic("A").buffer_reads, r1.traffic("B").buffer_reads) == (120, 40)
    assert r1.traffic("C").buffer_writes == 30
    check_invariants(r1, wl.macs)
    skew = Dataflow(name="skew", loops=("i", "j", "k"), stt=((1, 0, 1), (0, 1, 0), (0, 0, 1)))
    m2 = map_workload(wl, skew, ArraySpec(rows=4, cols=4), tile={"i": 2, "k": 3})
    r2 = estimate(m2)
    assert r2.cycles == schedule.total_cycles(m2)
    check_invariants(r2, wl.macs)


def test_report_round_trips_through_json() -> None:
    m = map_workload(gemm(5, 6, 7), Dataflow.preset("weight-stationary"), ArraySpec(rows=2, cols=3))
    rep = estimate(m)
    assert PerfReport.model_validate_json(rep.model_dump_json()) == rep
    bad = rep.energy.model_dump() | {"total_pj": rep.energy.total_pj * 2}
    with pytest.raises(ValueError, match="differs from the sum"):
        type(rep.energy).model_validate(bad)
