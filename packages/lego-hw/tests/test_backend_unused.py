"""Unused-logic removal on a fused OS+WS array: configure one mode, drop the other's links and muxes."""

from __future__ import annotations

import networkx as nx
import pytest

from lego_hw.backend import insert_pipeline_registers, primitive_graph, remove_unused_logic
from lego_hw.backend.primitives import PrimitiveGraph
from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.errors import LegoError
from lego_hw.interconnect import build_interconnect
from lego_hw.workload import gemm

OS, WS = "output-stationary", "weight-stationary"


def _graph(*dfs: str) -> PrimitiveGraph:
    arr = ArraySpec(rows=3, cols=3)
    return primitive_graph([build_interconnect(map_workload(gemm(6, 6, 6), Dataflow.preset(d), arr)) for d in dfs])


def _same_structure(a: PrimitiveGraph, b: PrimitiveGraph) -> bool:
    ea = {(u, v, d["distance"]) for u, v, d in a.graph.edges(data=True)}
    eb = {(u, v, d["distance"]) for u, v, d in b.graph.edges(data=True)}
    return set(a.graph.nodes) == set(b.graph.nodes) and ea == eb


def test_configuring_os_only_removes_ws_links_and_mode_muxes() -> None:
    fused = _graph(OS, WS)
    ws_only_edges = [(u, v) for u, v, m in fused.graph.edges(data="modes") if m == {WS}]
    assert ws_only_edges  # the partial-sum links between rows
    rep = remove_unused_logic(fused, [OS])
    g = rep.graph.graph
    assert not any(g.has_edge(u, v) for u, v in ws_only_edges)
    assert rep.before.mode_muxes == 12 and rep.after.mode_muxes == 0
    assert rep.after.muxes == 6  # the OS drain muxes stay: both their inputs serve OS
    assert rep.collapsed_muxes == 6
    assert rep.after.registers == rep.before.registers == 27
    assert rep.gated_fraction == 0.0  # one configured mode: nothing to gate
    assert all(m == {OS} for _, m in g.nodes(data="modes"))
    assert _same_structure(rep.graph, _graph(OS))  # pruning yields exactly the single-dataflow array
    assert rep.graph.graph.edges["acc@1_1", "add@1_1"]["distance"] == 1  # collapsed mux keeps the loop
    # The pruned array's loop is shorter than the fused one: it closes a faster clock.
    with pytest.raises(LegoError):
        insert_pipeline_registers(fused, 1.72)
    assert insert_pipeline_registers(rep.graph, 1.72).register_bits > 0


def test_configuring_ws_only_and_both() -> None:
    fused = _graph(OS, WS)
    ws = remove_unused_logic(fused, [WS])
    assert ws.after.muxes == 0
    assert _same_structure(ws.graph, _graph(WS))
    assert not nx.is_isomorphic(ws.graph.graph, fused.graph)
    both = remove_unused_logic(fused, [OS, WS])
    assert both.after == both.before and both.collapsed_muxes == 0
    assert set(both.as_dict()) >= {"before", "after", "gated_fraction"}


def test_gated_fraction_counts_registers_of_some_modes() -> None:
    # OS+WS share every register; a skewed dataflow adds FIFOs only it uses.
    skew = Dataflow(name="os-skew2", loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (2, 1, 1)))
    arr = ArraySpec(rows=3, cols=3)
    ics = [build_interconnect(map_workload(gemm(6, 6, 6), d, arr)) for d in (Dataflow.preset(OS), skew)]
    fused = primitive_graph(ics)
    rep = remove_unused_logic(fused, fused.modes)
    assert rep.gated_registers == 6  # the 1-deep FIFOs of the skewed mode
    assert rep.gated_fraction == pytest.approx(6 / 33)
    assert rep.gated_bit_fraction == pytest.approx(6 * 8 / rep.after.register_bits)
    assert remove_unused_logic(fused, [OS]).after.registers == 27


def test_unknown_or_empty_mode() -> None:
    fused = _graph(OS, WS)
    with pytest.raises(LegoError, match="unknown dataflow mode"):
        remove_unused_logic(fused, ["input-stationary"])
    with pytest.raises(LegoError, match="at least one"):
        remove_unused_logic(fused, [])
