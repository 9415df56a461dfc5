"""Pipeline-register insertion LP: delay matching with the fewest register bits (LEGO Sec. IV).

Leiserson-Saxe style. Every primitive v gets an integer schedule r_v (the cycle it works on a given datum,
relative to the unpipelined design). On edge e = (u, v) with loop-carried distance delta_e the number of
pipeline registers added is

    w_e = r_v - r_u - lat_u + delta_e >= 0,

where lat_u is u's latency in cycles (1 for a register, the depth of a FIFO, 0 for logic). Because each
node has one schedule, every path between two nodes gains the same number of cycles: reconvergent paths
(a multiplier's two operands, an adder's product and partial sum) stay balanced, and a loop (the
accumulator's acc -> add -> acc, delta = 1) gains none, so the loop's logic must fit the clock by itself.

Clock: for each pair (u, v) joined by a purely combinational path whose longest delay D(u, v) plus the
flip-flop overhead exceeds the clock period, that path needs a register: r_v - r_u >= 1 (only the pairs
whose path first exceeds the period are kept; the rest are implied). A single primitive cannot be split:
if one alone exceeds the clock, InfeasibleClockError names it and the smallest feasible clock.

Objective: fewest register bits. A net with several sinks shares one shift chain whose taps feed the sinks,
so it costs width * max_e w_e, not the sum; a mirror variable m_u >= r_v + delta_e for each sink models the
max (the standard fan-out trick). Every constraint is a difference constraint, so the matrix is a network
matrix (totally unimodular) and the LP relaxation is integral; its dual is a min-cost flow
(mincostflow.py cross-checks the optimum with networkx's network simplex).

Edges marked `balanced=False` (preload and drain shift chains, used outside the compute phase) take no
latency constraint and no registers. A fused multi-dataflow graph gets one schedule for all modes, which
is conservative: per-mode schedules sharing the physical registers would break the network structure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import networkx as nx
import pulp

from lego_hw.backend.primitives import MEM_READ, MEM_WRITE, PIPE, PrimitiveGraph, combinational_paths
from lego_hw.errors import InfeasibleClockError, LegoError

_EPS = 1e-9


@dataclass
class RegisterProblem:
    """The difference-constraint program: min sum(cost[x] * x) + constant s.t. x_v - x_u >= lo."""

    variables: list[str]
    constraints: dict[tuple[str, str], int]  # (u, v) -> lo, tightest kept
    cost: dict[str, int]
    constant: int
    mirrors: dict[str, str] = field(default_factory=dict)  # driver -> its mirror variable (multi-fanout nets)

    def add(self, u: str, v: str, lo: int) -> None:
        key = (u, v)
        if key not in self.constraints or self.constraints[key] < lo:
            self.constraints[key] = lo


@dataclass(frozen=True)
class PipelineResult:
    """Registers chosen by the LP for one clock period."""

    clock_ns: float
    schedule: dict[str, int]  # r_v per primitive
    registers: dict[tuple[str, str], int]  # pipeline registers per edge (taps of the shared chains)
    net_registers: dict[str, int]  # shared chain length per driving primitive (> 0 only)
    register_bits: int  # added register bits, fan-out shared
    latency: int  # cycles from the earliest memory read to the latest memory write in this schedule
    integral: bool  # the LP relaxation returned integers (expected: the matrix is totally unimodular)
    solve_seconds: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (per-edge counts omitted: see `registers`)."""
        return {
            "clock_ns": self.clock_ns,
            "register_bits": self.register_bits,
            "pipelined_nets": len(self.net_registers),
            "pipeline_registers": sum(self.net_registers.values()),
            "latency": self.latency,
            "integral": self.integral,
            "solve_seconds": self.solve_seconds,
        }

    def apply(self, pg: PrimitiveGraph) -> PrimitiveGraph:
        """A copy of `pg` with the pipeline registers inserted as `pipe_reg` nodes (one chain per net)."""
        out = pg.copy()
        g = out.graph
        for u, length in sorted(self.net_registers.items()):
            width = pg.graph.nodes[u]["width"]
            taps = {v: self.registers[(u, v)] for v in pg.graph.successors(u)}
            chain = [u]
            for k in range(1, length + 1):
                modes = frozenset().union(*(pg.graph.edges[u, v]["modes"] for v, w in taps.items() if w >= k))
                name = f"{u}.p{k}"
                src = pg.graph.nodes[u]
                g.add_node(
                    name, kind=PIPE, width=width, latency=1, delay=0.0, modes=modes, pe=src["pe"], tensor=src["tensor"]
                )
                g.add_edge(chain[-1], name, width=width, distance=0, modes=modes, port="in")
                chain.append(name)
            for v, w in taps.items():
                if w > 0:
                    data = dict(g.edges[u, v])
                    g.remove_edge(u, v)
                    g.add_edge(chain[w], v, **data)
        return out


def _check_single_primitives(pg: PrimitiveGraph, clock_ns: float) -> None:
    name, delay = pg.max_primitive_delay()
    if delay + pg.delay_model.t_reg > clock_ns + _EPS:
        kind = pg.graph.nodes[name]["kind"]
        width = pg.graph.nodes[name]["width"]
        raise InfeasibleClockError(
            f"clock {clock_ns:.3f} ns is infeasible: primitive {name!r} ({kind}, {width} bits) alone takes "
            f"{delay:.3f} ns + {pg.delay_model.t_reg:.3f} ns register overhead and cannot be split; "
            f"the minimum feasible clock is {min_feasible_clock(pg):.3f} ns: raise the clock period to at least that"
        )


def build_problem(
    pg: PrimitiveGraph, clock_ns: float, *, _paths: list[tuple[str, dict[str, float]]] | None = None
) -> RegisterProblem:
    """The register-insertion program of `pg` at `clock_ns` (no single-primitive check)."""
    g = pg.graph
    budget = clock_ns - pg.delay_model.t_reg
    prob = RegisterProblem(variables=list(g.nodes), constraints={}, cost=dict.fromkeys(g.nodes, 0), constant=0)
    for u, v, d in g.edges(data=True):
        if d.get("balanced", True):
            prob.add(u, v, g.nodes[u]["latency"] - d["distance"])
    paths = _paths if _paths is not None else list(combinational_paths(pg))
    for u, dist in paths:
        for v, delay in dist.items():
            if v == u or delay <= budget + _EPS:
                continue
            # Keep only pairs whose path first exceeds the period: beyond them r_v >= r_pred >= r_u + 1 already.
            if all(dist[p] <= budget + _EPS for p in g.predecessors(v) if p in dist):
                prob.add(u, v, 1)
    for u in g.nodes:
        outs = [e for e in g.out_edges(u, data=True) if e[2].get("balanced", True)]
        if not outs:
            continue
        bits = int(g.nodes[u]["width"])
        lat = int(g.nodes[u]["latency"])
        if len(outs) == 1:
            _, v, d = outs[0]
            prob.cost[v] += bits
            prob.cost[u] -= bits
            prob.constant += bits * (int(d["distance"]) - lat)
            continue
        m = f"__mirror__{u}"
        prob.variables.append(m)
        prob.mirrors[u] = m
        prob.cost[m] = bits
        prob.cost[u] -= bits
        prob.constant -= bits * lat
        for _, v, d in outs:
            prob.add(v, m, int(d["distance"]))
    return prob


def _is_feasible(prob: RegisterProblem) -> bool:
    # x_v - x_u >= lo  <=>  x_u <= x_v - lo: a shortest-path edge v -> u of weight -lo; infeasible iff a
    # negative cycle exists (a loop that would need registers it cannot hold).
    h = nx.DiGraph()
    h.add_nodes_from(prob.variables)
    for (u, v), lo in prob.constraints.items():
        if u == v:
            if lo > 0:
                return False
            continue
        h.add_edge(v, u, weight=-lo)
    return not nx.negative_edge_cycle(h, weight="weight")


def min_feasible_clock(pg: PrimitiveGraph) -> float:
    """The smallest clock period (ns) for which register insertion can meet timing.

    At least the slowest primitive plus register overhead; more when a loop (e.g. the accumulator) holds
    a combinational chain that no register may split.
    """
    paths = list(combinational_paths(pg))
    t_reg = pg.delay_model.t_reg
    floor = pg.max_primitive_delay()[1] + t_reg
    cands = sorted({round(d + t_reg, 9) for _, dist in paths for d in dist.values()} | {round(floor, 9)})
    cands = [c for c in cands if c >= floor - _EPS]
    lo, hi = 0, len(cands) - 1  # the largest candidate (longest combinational path) is always feasible
    while lo < hi:
        mid = (lo + hi) // 2
        if _is_feasible(build_problem(pg, cands[mid], _paths=paths)):
            hi = mid
        else:
            lo = mid + 1
    return float(cands[lo])


def _infeasible_loop(prob: RegisterProblem) -> list[str]:
    """Variables on a cycle of the constraint graph that needs more registers than it may hold."""
    h = nx.DiGraph()
    root = "__root__"
    h.add_edges_from((root, n, {"weight": 0}) for n in prob.variables)
    for (u, v), lo in prob.constraints.items():
        if u != v:
            h.add_edge(v, u, weight=-lo)
    try:
        cycle = nx.find_negative_cycle(h, root, weight="weight")
    except nx.NetworkXError:
        return []
    return [n for n in dict.fromkeys(cycle) if n != root and not n.startswith("__mirror__")]


def _loop_error(pg: PrimitiveGraph, clock_ns: float, prob: RegisterProblem | None = None) -> InfeasibleClockError:
    loop = _infeasible_loop(prob) if prob is not None else []
    where = ""
    if loop:
        g = pg.graph
        slow = max(loop, key=lambda n: g.nodes[n]["delay"])
        where = f" through {' -> '.join(loop[:8])}{' ...' if len(loop) > 8 else ''} (slowest primitive {slow!r})"
    return InfeasibleClockError(
        f"clock {clock_ns:.3f} ns is infeasible: a loop{where} holds a combinational path longer than the period, "
        f"and a loop cannot take pipeline registers; the minimum feasible clock is {min_feasible_clock(pg):.3f} ns: "
        f"raise the clock period to at least that"
    )


def _schedule_latency(pg: PrimitiveGraph, r: dict[str, int]) -> int:
    reads = [r[n] for n in pg.nodes_of(MEM_READ)]
    writes = [r[n] for n in pg.nodes_of(MEM_WRITE)]
    if not reads or not writes:
        return max(r.values(), default=0) - min(r.values(), default=0)
    return max(writes) - min(reads)


def _result_from_schedule(
    pg: PrimitiveGraph, clock_ns: float, r: dict[str, int], integral: bool, seconds: float
) -> PipelineResult:
    g = pg.graph
    regs: dict[tuple[str, str], int] = {}
    nets: dict[str, int] = {}
    bits = 0
    for u in g.nodes:
        longest = 0
        for _, v, d in g.out_edges(u, data=True):
            if not d.get("balanced", True):
                regs[(u, v)] = 0  # phase-separated shift: no latency balance, never pipelined
                continue
            w = r[v] - r[u] - int(g.nodes[u]["latency"]) + int(d["distance"])
            if w < 0:
                raise LegoError(f"internal: negative register count {w} on {u}->{v}")
            regs[(u, v)] = w
            longest = max(longest, w)
        if longest:
            nets[u] = longest
            bits += longest * int(g.nodes[u]["width"])
    return PipelineResult(clock_ns, dict(r), regs, nets, bits, _schedule_latency(pg, r), integral, seconds)


def insert_pipeline_registers(pg: PrimitiveGraph, clock_ns: float, *, integer: bool = True) -> PipelineResult:
    """Solve the register-insertion program with pulp/CBC for a target clock period (ns).

    `integer=True` declares the schedules integer (CBC then finds the LP root integral and does not
    branch); `integer=False` solves the bare LP relaxation, which the total unimodularity makes integral
    too (`result.integral` reports it). Raises InfeasibleClockError when no placement meets the clock.
    """
    if clock_ns <= 0:
        raise InfeasibleClockError(f"clock period must be positive, got {clock_ns} ns")
    _check_single_primitives(pg, clock_ns)
    prob = build_problem(pg, clock_ns)
    if not _is_feasible(prob):
        raise _loop_error(pg, clock_ns, prob)
    t0 = time.perf_counter()
    lp = pulp.LpProblem("register_insertion", pulp.LpMinimize)
    cat = pulp.LpInteger if integer else pulp.LpContinuous
    x = {n: pulp.LpVariable(f"x{i}", lowBound=0, cat=cat) for i, n in enumerate(prob.variables)}
    lp += pulp.lpSum(c * x[n] for n, c in prob.cost.items() if c) + prob.constant
    for (u, v), lo in prob.constraints.items():
        lp += x[v] - x[u] >= lo
    status = lp.solve(pulp.PULP_CBC_CMD(msg=False))
    seconds = time.perf_counter() - t0
    if pulp.LpStatus[status] != "Optimal":
        raise _loop_error(pg, clock_ns)
    raw = {n: float(x[n].varValue or 0.0) for n in prob.variables}
    integral = all(abs(val - round(val)) < 1e-6 for val in raw.values())
    if not integral:  # cannot happen for a network matrix; fall back to the integer program to stay correct
        return insert_pipeline_registers(pg, clock_ns, integer=True)
    r = {n: round(raw[n]) for n in pg.graph.nodes}
    return _result_from_schedule(pg, clock_ns, r, integral, seconds)


def asap_registers(pg: PrimitiveGraph, clock_ns: float) -> PipelineResult:
    """Balanced ASAP insertion (each primitive as early as its constraints allow), fan-out shared: the natural
    heuristic the LP must match or beat."""
    _check_single_primitives(pg, clock_ns)
    prob = build_problem(pg, clock_ns)
    if not _is_feasible(prob):
        raise _loop_error(pg, clock_ns, prob)
    h = nx.DiGraph()
    root = "__root__"
    h.add_node(root)
    for n in pg.graph.nodes:
        h.add_edge(root, n, weight=0)
    for (u, v), lo in prob.constraints.items():
        if u in pg.graph and v in pg.graph:
            h.add_edge(u, v, weight=-lo)  # longest path = shortest path on negated weights
    dist = nx.single_source_bellman_ford_path_length(h, root, weight="weight")
    base = min(-dist[n] for n in pg.graph.nodes)
    r = {n: -int(dist[n]) - base for n in pg.graph.nodes}
    return _result_from_schedule(pg, clock_ns, r, True, 0.0)


def naive_register_bits(pg: PrimitiveGraph) -> int:
    """Bits of the naive insertion that registers every edge of the primitive graph (no fan-out sharing)."""
    return sum(int(d["width"]) for _, _, d in pg.graph.edges(data=True))
