"""Memory synthesis: tile counters, affine address streams, banking and its conflict-freedom check."""

from __future__ import annotations

import pytest

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.design import generate
from lego_hw.errors import LegoError
from lego_hw.memory import (
    AddressStream,
    Banking,
    chain_port,
    plan_banks,
    stream_port,
    tile_counters,
    tile_offset_terms,
    verify_conflict_free,
)
from lego_hw.workload import attention_qk, conv2d, gemm


def test_tile_counters_and_offsets_gemm_ws() -> None:
    m = map_workload(gemm(5, 7, 6), Dataflow.preset("weight-stationary"), ArraySpec(rows=4, cols=3))
    cnt = tile_counters(m)
    # WS tiles k (rows) and j (cols); i streams whole. Dataflow order (i, j, k): j then k.
    assert [(c.loop, c.step, c.limit) for c in cnt] == [(1, 3, 7), (2, 4, 6)]
    assert [c.count for c in cnt] == [3, 2]
    # A[i, k]: offset = k_base; B[k, j]: (k_base, j_base).
    assert tile_offset_terms(m, "A") == ((0, (0, 0)), (0, (0, 1)))
    assert tile_offset_terms(m, "B") == ((0, (0, 1)), (0, (1, 0)))


def test_outer_loop_counters_conv() -> None:
    m = map_workload(
        conv2d(3, 2, 3, 5, 2, 3, 2), Dataflow.preset("weight-stationary", ("k", "x", "c")), ArraySpec(rows=2, cols=3)
    )
    loops = [m.workload.loops[c.loop] for c in tile_counters(m)]
    assert loops == ["y", "r", "s", "x"]  # outer (n has bound 1) then split inner loops (k streams whole)
    # I[n, c, 2y + r, 2x + s]: the row index counts 2 per y and 1 per r.
    terms = dict(zip(loops, tile_offset_terms(m, "I")[2][1], strict=True))
    assert terms == {"y": 2, "r": 1, "s": 0, "x": 0}


def test_streams_follow_the_dataflow() -> None:
    m = map_workload(gemm(4, 4, 4), Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2))
    # OS: PE (i, 0) reads A[i, t - i] at time t.
    s = stream_port(m, "A", (1, 0), 0)
    assert s == AddressStream("A", (1, -1), (0, 1))
    assert s.index((0, 0), 3) == (1, 2)
    # Drain chain of column 1 carries C of PE (rows-1-pc, 1).
    d = chain_port(m, "C", 1)
    assert [d.index((0, 0), pc) for pc in range(2)] == [(1, 1), (0, 1)]


def test_banking_is_conflict_free_for_presets() -> None:
    for wl, loops in ((gemm(5, 7, 6), ("i", "j", "k")), (attention_qk(2, 3, 5, 4), ("i", "j", "d"))):
        for p in ("output-stationary", "weight-stationary", "input-stationary"):
            d = generate(map_workload(wl, Dataflow.preset(p, loops), ArraySpec(rows=2, cols=3)))
            banks = d.memory_banks()
            plan = d.fused.modes[0]
            for name, b in banks.items():
                ports = plan.out_ports if name == plan.output else plan.in_ports[name]
                assert b.num_banks == len(ports)  # one bank per concurrent port


def test_conflict_is_detected() -> None:
    m = map_workload(gemm(4, 4, 4), Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2))
    streams = [stream_port(m, "A", (r, 0), 0) for r in range(2)]
    good = plan_banks("A", streams)
    assert verify_conflict_free(m, "A", streams, 8, good) > 0
    with pytest.raises(LegoError, match="bank conflict"):
        verify_conflict_free(m, "A", streams, 8, Banking("A", (1, 1), (1, 1)))
    with pytest.raises(LegoError, match="no ports"):
        plan_banks("A", [])
