"""Primitive graph built from the front end: per-PE primitives, links, delay model, fusion bookkeeping."""

from __future__ import annotations

import pytest

from lego_hw.backend import DelayModel, critical_path_ns, primitive_graph
from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.errors import LegoError
from lego_hw.interconnect import Interconnect, build_interconnect
from lego_hw.workload import gemm


def _ic(df: str | Dataflow, n: int = 3, array: ArraySpec | None = None) -> Interconnect:
    d = Dataflow.preset(df) if isinstance(df, str) else df
    return build_interconnect(map_workload(gemm(2 * n, 2 * n, 2 * n), d, array or ArraySpec(rows=n, cols=n)))


def test_delay_model_table() -> None:
    dm = DelayModel()
    assert dm.delay("add", 32) == pytest.approx(32 * 0.05)  # ripple adder: one carry per bit
    assert dm.delay("mult", 8) == pytest.approx(2 * 8 * 0.05)  # array multiplier: ~two adder rows
    assert dm.delay("mux", 8, inputs=2) == pytest.approx(0.04)
    assert dm.delay("mux", 8, inputs=4) == pytest.approx(0.08)  # log2(inputs) stages
    assert dm.delay("wire", 8, hops=3) == pytest.approx(0.45)
    assert dm.delay("reg", 32) == 0.0
    with pytest.raises(ValueError, match="t_fa"):
        DelayModel(t_fa=-1.0)
    with pytest.raises(ValueError, match="extra"):
        DelayModel(t_add=1.0)  # type: ignore[call-arg]


def test_output_stationary_gemm_primitives() -> None:
    pg = primitive_graph(_ic("output-stationary"))
    s = pg.summary()
    assert (s["reg"], s["mult"], s["add"], s["mux"]) == (27, 9, 9, 6)  # 2 operand + 1 acc per PE; drain muxes
    assert (s["mem_read"], s["mem_write"], s["ctrl"], s["wire"], s["fifo"]) == (6, 3, 1, 0, 0)
    assert pg.register_bits == 9 * (8 + 8 + 32)
    g = pg.graph
    assert g.nodes["mul1@1_2"]["width"] == 16 and g.nodes["mul1@1_2"]["delay"] == pytest.approx(0.8)
    assert g.has_edge("in0.reg@1_1", "in0.reg@1_2")  # A moves right through operand registers
    assert g.has_edge("in1.reg@0_2", "in1.reg@1_2")  # B moves down
    assert g.edges["acc@1_1", "add@1_1"]["distance"] == 1  # accumulator loop
    assert g.edges["acc@0_1", "mux.in>acc@1_1"]["balanced"] is False  # drain shift
    assert all(m == frozenset({"output-stationary"}) for _, m in g.nodes(data="modes"))
    assert critical_path_ns(pg) == pytest.approx(0.8 + 1.6 + 0.04 + 0.08)


def test_weight_stationary_and_broadcast() -> None:
    ws = primitive_graph(_ic("weight-stationary"))
    assert ws.num_muxes == 0
    g = ws.graph
    assert g.edges["in1.reg@0_1", "in1.reg@1_1"]["balanced"] is False  # B preload chain
    assert g.has_edge("acc@0_1", "add@1_1")  # partial sums flow down
    assert g.has_edge("acc@2_1", "out.wr@2_1")
    bc = primitive_graph(_ic("os-broadcast"))
    assert bc.count("wire") == 2 * (9 - 3)
    assert bc.graph.has_edge("in0.rd@1_0", "in0.wire@1_1") and bc.graph.has_edge("in0.wire@1_1", "in0.wire@1_2")


def test_longer_links_become_fifos() -> None:
    df = Dataflow(name="os-skew2", loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (2, 1, 1)))
    pg = primitive_graph(_ic(df))
    fifos = pg.nodes_of("fifo")
    assert len(fifos) == 6  # B's links take 2 cycles: the operand register plus a 1-deep FIFO
    assert all(pg.graph.nodes[f]["latency"] == 1 and pg.graph.nodes[f]["width"] == 8 for f in fifos)


def test_fusion_records_modes_and_adds_muxes() -> None:
    pg = primitive_graph([_ic("output-stationary"), _ic("weight-stationary")])
    assert pg.modes == ("output-stationary", "weight-stationary")
    g = pg.graph
    both = frozenset(pg.modes)
    assert g.nodes["in0.reg@1_1"]["modes"] == both
    assert g.edges["in0.reg@1_1", "in0.reg@1_2"]["modes"] == both  # shared link, one edge
    assert g.edges["in1.reg@0_1", "in1.reg@1_1"]["balanced"] is True  # systolic in OS, so balanced
    mux = "mux.psum>add@1_1"
    assert g.nodes[mux]["mode_mux"]
    assert g.edges["acc@1_1", mux]["modes"] == {"output-stationary"}
    assert g.edges["acc@0_1", mux]["modes"] == {"weight-stationary"}
    # Duplicate dataflows get distinct mode names.
    twice = primitive_graph([_ic("output-stationary"), _ic("output-stationary")])
    assert len(set(twice.modes)) == 2


def test_fusion_rejects_different_arrays() -> None:
    a = _ic("output-stationary", 2)
    b = _ic("output-stationary", 3)
    with pytest.raises(LegoError, match="share one array"):
        primitive_graph([a, b])
    with pytest.raises(LegoError, match="at least one"):
        primitive_graph([])
