import itertools
import time

import networkx as nx
import pytest

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.interconnect import MEMORY, LinkCosts, build_interconnect, build_network
from lego_hw.reuse import analyze
from lego_hw.workload import Workload, gemm


def _net(preset, rows=4, cols=4, wl=None):
    m = map_workload(wl or gemm(8, 8, 8), Dataflow.preset(preset), ArraySpec(rows=rows, cols=cols))
    return build_interconnect(m).networks


def test_output_stationary_links_are_systolic_chains():
    nets = _net("output-stationary")
    a, b, c = nets["A"], nets["B"], nets["C"]
    assert a.memory_ports == tuple((x, 0) for x in range(4))  # A enters at the left column
    assert b.memory_ports == tuple((0, y) for y in range(4))  # B enters at the top row
    pa = a.parent()
    for x, y in itertools.product(range(4), range(1, 4)):
        assert pa[(x, y)].src == (x, y - 1) and pa[(x, y)].delay == 1
    assert c.stationary and len(c.memory_ports) == 16  # drained after the tile
    assert a.fifo_bits(8) == 0


def test_weight_stationary_partial_sums_flow_down():
    nets = _net("weight-stationary")
    c = nets["C"]
    assert c.role == "output" and not c.stationary
    outgoing = {lk.src: lk for lk in c.links}
    for x, y in itertools.product(range(3), range(4)):
        assert outgoing[(x, y)].dst == (x + 1, y) and outgoing[(x, y)].delay == 1
    assert c.memory_ports == tuple((3, y) for y in range(4))  # the bottom row writes the buffer
    assert nets["B"].stationary


def test_broadcast_links_are_wires():
    nets = _net("os-broadcast")
    assert all(lk.delay == 0 for lk in nets["A"].links)
    assert nets["A"].memory_ports == tuple((x, 0) for x in range(4))


def test_memory_is_used_where_no_reuse_exists():
    wl = Workload.from_expr("D[i, r] += X[i, j, k] * B[j, r] * C[k, r]", {"i": 4, "j": 4, "k": 4, "r": 2})
    m = map_workload(
        wl, Dataflow(loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (1, 1, 1))), ArraySpec(rows=4, cols=4)
    )
    nets = build_interconnect(m).networks
    assert len(nets["X"].memory_ports) == 16


def _brute_force_min_cost(g: nx.DiGraph) -> float:
    """Cheapest choice of one parent per non-root node that reaches every node from the root."""
    nodes = [n for n in g if n != MEMORY]
    options = [[(u, g[u][v]["weight"]) for u in g.predecessors(v)] for v in nodes]
    best = float("inf")
    for choice in itertools.product(*options):
        parent = {v: u for v, (u, _) in zip(nodes, choice, strict=True)}
        ok = True
        for v in nodes:
            seen, cur = set(), v
            while cur != MEMORY and ok:
                if cur in seen:
                    ok = False
                seen.add(cur)
                cur = parent[cur]
        if ok:
            best = min(best, sum(w for _, w in choice))
    return best


@pytest.mark.parametrize("preset", ["output-stationary", "weight-stationary", "os-broadcast"])
def test_arborescence_is_minimum(preset):
    from lego_hw.interconnect import _candidate_graph, _pes

    m = map_workload(gemm(4, 4, 4), Dataflow.preset(preset), ArraySpec(rows=2, cols=3))
    for name, r in analyze(m.workload, m.dataflow).items():
        if r.role == "output":
            continue
        net = build_network(m, r)
        g = _candidate_graph(_pes(m), m.pe_shape(), r.candidates, m.array.data_width, LinkCosts())
        assert net.cost == pytest.approx(_brute_force_min_cost(g)), name


def test_sixteen_by_sixteen_is_fast():
    t0 = time.perf_counter()
    nets = _net("output-stationary", 16, 16, gemm(64, 64, 64))
    assert time.perf_counter() - t0 < 10
    assert len(nets["A"].memory_ports) == 16 and len(nets["B"].memory_ports) == 16
