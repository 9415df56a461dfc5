"""Pipeline-register LP: optimality (exhaustive search and min-cost-flow dual), integrality, timing, errors."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lego_hw.backend import (
    DelayModel,
    PrimitiveGraph,
    asap_registers,
    compare_register_insertion,
    critical_path_ns,
    insert_pipeline_registers,
    min_feasible_clock,
    naive_register_bits,
    primitive_graph,
)
from lego_hw.backend.mincostflow import min_cost_flow_register_bits
from lego_hw.backend.pipeline import build_problem
from lego_hw.backend.primitives import COMBINATIONAL_KINDS, PIPE
from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.errors import InfeasibleClockError
from lego_hw.interconnect import build_interconnect
from lego_hw.workload import gemm

ALL = frozenset({"m"})


def _graph(nodes: dict[str, tuple[str, int, float, int]], edges: list[tuple[str, str, int]]) -> PrimitiveGraph:
    """nodes: name -> (kind, width, delay, latency); edges: (u, v, distance)."""
    g = nx.DiGraph()
    for n, (kind, width, delay, lat) in nodes.items():
        g.add_node(n, kind=kind, width=width, delay=delay, latency=lat, modes=ALL, pe=None, tensor=None)
    for u, v, dist in edges:
        g.add_edge(u, v, width=g.nodes[u]["width"], distance=dist, modes=ALL, port="in", balanced=True)
    return PrimitiveGraph(g, DelayModel(), ("m",))


def _random_graph(rng: random.Random) -> PrimitiveGraph:
    n = rng.randint(4, 5)
    nodes: dict[str, tuple[str, int, float, int]] = {}
    for i in range(n):
        kind = rng.choice(["reg", "add", "mult", "mux", "add", "fifo"] if i else ["reg"])
        width = rng.randint(1, 8)
        if kind in COMBINATIONAL_KINDS:
            nodes[f"n{i}"] = (kind, width, rng.choice([0.2, 0.45, 0.7, 0.9]), 0)
        else:
            nodes[f"n{i}"] = (kind, width, 0.0, 2 if kind == "fifo" else 1)
    edges: list[tuple[str, str, int]] = []
    for j in range(1, n):
        preds = [i for i in range(j) if rng.random() < 0.5] or [rng.randrange(j)]
        edges += [(f"n{i}", f"n{j}", 0) for i in preds]
    # An accumulator-style loop: comb u -> reg v directly, closed by v -> u at distance 1.
    loops = [(u, v) for u, v, _ in edges if nodes[u][3] == 0 and nodes[v][0] == "reg"]
    if loops and rng.random() < 0.5:
        u, v = rng.choice(loops)
        edges.append((v, u, 1))
    return _graph(nodes, edges)


def _exhaustive_bits(pg: PrimitiveGraph, clock: float) -> int | None:
    """Fewest register bits over every integer schedule, checked directly (no LP, no pair constraints):
    non-negative registers per edge, every register-to-register path within the clock, nets cost their max."""
    g = pg.graph
    names = list(nx.topological_sort(nx.DiGraph([(u, v) for u, v, d in g.edges(data=True) if d["distance"] == 0])))
    names += [n for n in g.nodes if n not in names]
    idx = {n: i for i, n in enumerate(names)}
    prob = build_problem(pg, clock)
    span = sum(abs(lo) for lo in prob.constraints.values())  # an optimal vertex spans at most this
    assert (span + 1) ** len(names) <= 400_000, "graph too large for exhaustive search"
    grid = np.array(list(itertools.product(range(span + 1), repeat=len(names))), dtype=np.int64)
    ok = np.ones(len(grid), dtype=bool)
    w: dict[tuple[str, str], np.ndarray] = {}
    for u, v, d in g.edges(data=True):
        w[(u, v)] = grid[:, idx[v]] - grid[:, idx[u]] - g.nodes[u]["latency"] + d["distance"]
        ok &= w[(u, v)] >= 0
    budget = clock - pg.delay_model.t_reg
    arrival: dict[str, np.ndarray] = {}
    for n in names:  # combinational nodes form a DAG in topological order of the distance-0 edges
        if g.nodes[n]["latency"] != 0 or g.nodes[n]["kind"] not in COMBINATIONAL_KINDS:
            continue
        a = np.full(len(grid), g.nodes[n]["delay"])
        for p in g.predecessors(n):
            if p in arrival:
                a = np.maximum(a, np.where(w[(p, n)] == 0, arrival[p] + g.nodes[n]["delay"], 0.0))
        arrival[n] = a
        ok &= a <= budget + 1e-9
    cost = np.zeros(len(grid), dtype=np.int64)
    for u in g.nodes:
        outs = [w[(u, v)] for v in g.successors(u)]
        if outs:
            cost += g.nodes[u]["width"] * np.max(np.stack(outs), axis=0)
    return int(cost[ok].min()) if ok.any() else None


@pytest.mark.parametrize("seed", range(60))
def test_lp_matches_exhaustive_and_min_cost_flow(seed: int) -> None:
    rng = random.Random(seed)
    pg = _random_graph(rng)
    clock = rng.choice([0.8, 1.0, 1.2, 3.0])
    try:
        res = insert_pipeline_registers(pg, clock)
    except InfeasibleClockError:
        assert _exhaustive_bits(pg, clock) is None
        return
    assert res.register_bits == _exhaustive_bits(pg, clock)
    assert res.register_bits == min_cost_flow_register_bits(pg, clock)
    relaxed = insert_pipeline_registers(pg, clock, integer=False)
    assert relaxed.integral and relaxed.register_bits == res.register_bits
    assert res.register_bits <= asap_registers(pg, clock).register_bits
    applied = res.apply(pg)
    assert critical_path_ns(applied) <= clock + 1e-9
    assert applied.register_bits - pg.register_bits == res.register_bits
    assert insert_pipeline_registers(applied, clock).register_bits == 0  # balanced and timed already


def test_fanout_shares_one_chain() -> None:
    # R feeds A (the head of a two-multiplier chain) and two joins fed by the chain's end; the chain needs
    # two pipeline registers, so both R->J edges need 2 as well: one shared 2-deep chain on R's net.
    nodes = {
        "R": ("reg", 8, 0.0, 1),
        "A": ("mult", 8, 0.9, 0),
        "B": ("mult", 8, 0.9, 0),
        "J1": ("add", 8, 0.1, 0),
        "J2": ("add", 8, 0.1, 0),
    }
    edges = [("R", "A", 0), ("A", "B", 0), ("B", "J1", 0), ("B", "J2", 0), ("R", "J1", 0), ("R", "J2", 0)]
    pg = _graph(nodes, edges)
    res = insert_pipeline_registers(pg, 1.0)
    assert res.registers[("R", "J1")] == res.registers[("R", "J2")] == 2
    assert res.net_registers["R"] == 2
    assert res.register_bits == 2 * 8 + 8 + 8  # R's chain once (not 2 x 2 x 8), A->B, B's net once
    assert res.register_bits == _exhaustive_bits(pg, 1.0) == min_cost_flow_register_bits(pg, 1.0)
    applied = res.apply(pg)
    assert len(applied.nodes_of(PIPE)) == 2 + 1 + 1


def _gemm_graph(df: str, n: int = 3) -> PrimitiveGraph:
    m = map_workload(gemm(2 * n, 2 * n, 2 * n), Dataflow.preset(df), ArraySpec(rows=n, cols=n))
    return primitive_graph(build_interconnect(m))


@pytest.mark.parametrize("df", ["output-stationary", "weight-stationary", "os-broadcast"])
def test_gemm_arrays_lp_beats_naive_and_asap(df: str) -> None:
    pg = _gemm_graph(df, 4)
    clock = min_feasible_clock(pg)
    res = insert_pipeline_registers(pg, clock)
    assert res.integral
    assert res.register_bits == min_cost_flow_register_bits(pg, clock)
    assert res.register_bits <= asap_registers(pg, clock).register_bits
    assert res.register_bits < naive_register_bits(pg)
    applied = res.apply(pg)
    assert critical_path_ns(applied) <= clock + 1e-9 < critical_path_ns(pg)
    # A relaxed clock needs at most the 1-bit control registers that skew the memory ports.
    assert insert_pipeline_registers(pg, 10.0).register_bits < 16


def test_broadcast_wires_are_pipelined_at_a_tight_clock() -> None:
    # Slow wires (0.4 ns per PE hop) so a 6-PE broadcast (5 hops, 2 ns) exceeds the accumulator-bound clock.
    m = map_workload(gemm(12, 12, 12), Dataflow.preset("os-broadcast"), ArraySpec(rows=6, cols=6))
    pg = primitive_graph(build_interconnect(m), DelayModel(t_wire_hop=0.4))
    dm = pg.delay_model
    tight = dm.delay("add", 32) + dm.delay("mux", 32) + dm.t_reg  # the accumulator loop bounds the clock
    assert min_feasible_clock(pg) == pytest.approx(tight)
    res = insert_pipeline_registers(pg, tight)
    assert [u for u in res.net_registers if pg.graph.nodes[u]["kind"] == "wire"]  # registers cut the broadcast
    assert critical_path_ns(res.apply(pg)) <= tight + 1e-9
    loose = insert_pipeline_registers(pg, 3.0)
    assert not [u for u in loose.net_registers if pg.graph.nodes[u]["kind"] == "wire"]


def test_infeasible_clock_names_primitive_and_minimum() -> None:
    pg = _gemm_graph("output-stationary")
    with pytest.raises(InfeasibleClockError, match=r"add@.*minimum feasible clock is 1\.720 ns"):
        insert_pipeline_registers(pg, 1.0)
    with pytest.raises(InfeasibleClockError, match="must be positive"):
        insert_pipeline_registers(pg, 0.0)


def test_loop_bounds_the_clock() -> None:
    # Fused OS+WS: the accumulator loop holds add + two muxes, longer than any single primitive.
    arr = ArraySpec(rows=2, cols=2)
    ics = [
        build_interconnect(map_workload(gemm(4, 4, 4), Dataflow.preset(d), arr))
        for d in ("output-stationary", "weight-stationary")
    ]
    pg = primitive_graph(ics)
    assert min_feasible_clock(pg) == pytest.approx(1.6 + 0.04 + 0.04 + 0.08)
    with pytest.raises(InfeasibleClockError, match=r"loop through .*add@.*1\.760 ns"):
        insert_pipeline_registers(pg, 1.7)
    assert insert_pipeline_registers(pg, 1.76).register_bits > 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(8, 30), clock=st.sampled_from([0.8, 1.0, 1.3, 2.0]))
def test_lp_equals_min_cost_flow_on_larger_graphs(seed: int, n: int, clock: float) -> None:
    rng = random.Random(seed)
    nodes: dict[str, tuple[str, int, float, int]] = {"n0": ("reg", 8, 0.0, 1)}
    edges: list[tuple[str, str, int]] = []
    for j in range(1, n):
        kind = rng.choice(["reg", "add", "mult", "mux", "fifo", "wire"])
        comb = kind in COMBINATIONAL_KINDS
        nodes[f"n{j}"] = (
            kind,
            rng.randint(1, 32),
            rng.uniform(0.05, 0.7) if comb else 0.0,
            0 if comb else rng.randint(1, 2),
        )
        for i in rng.sample(range(j), k=min(j, rng.randint(1, 3))):
            edges.append((f"n{i}", f"n{j}", 0))
    pg = _graph(nodes, edges)
    try:
        res = insert_pipeline_registers(pg, clock, integer=False)
    except InfeasibleClockError:
        return
    assert res.integral
    assert res.register_bits == min_cost_flow_register_bits(pg, clock)
    assert res.register_bits <= asap_registers(pg, clock).register_bits
    assert critical_path_ns(res.apply(pg)) <= clock + 1e-9


def test_reduction_tree_gets_a_merge_adder() -> None:
    # Conv on (k, c, r) with weights stationary: the output arborescence is a tree, so a PE may receive two
    # partial sums; an extra adder merges them before the PE's own accumulate adder.
    from lego_hw.workload import conv2d

    m = map_workload(
        conv2d(4, 3, 5, 5, 3, 3), Dataflow.preset("weight-stationary", ("k", "c", "r")), ArraySpec(rows=3, cols=3)
    )
    ic = build_interconnect(m)
    fan_in: dict[object, int] = {}
    for lk in ic.networks["O"].links:
        fan_in[lk.dst] = fan_in.get(lk.dst, 0) + 1
    merges = sum(k - 1 for d, k in fan_in.items() if d != "mem")
    pg = primitive_graph(ic)
    assert merges > 0 and len([n for n in pg.graph if n.startswith("psum_add")]) == merges
    assert pg.num_muxes == 0
    c = compare_register_insertion(pg)
    assert c.lp_bits == c.dual_bits <= c.asap_bits and c.lp_over_naive < 1.0
