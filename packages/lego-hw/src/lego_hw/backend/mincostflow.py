"""Min-cost-flow dual of the register-insertion LP: an independent optimality certificate (LEGO Sec. IV).

The primal is `min sum_j c_j x_j` subject to difference constraints `x_v - x_u >= lo_k` (pipeline.py). Its LP
dual is `max sum_k lo_k f_k` subject to flow conservation `inflow(j) - outflow(j) = c_j`, `f >= 0`: a
min-cost flow with arc u -> v of cost -lo_k per constraint and node demand c_j. By strong duality the two
optima are equal, so solving the flow with networkx's network simplex (no LP solver involved) certifies
the CBC answer. A primal lower bound x >= 0 does not change the optimum: the costs sum to zero, so any
feasible schedule can be shifted up.
"""

from __future__ import annotations

import networkx as nx

from lego_hw.backend.pipeline import RegisterProblem, build_problem
from lego_hw.backend.primitives import PrimitiveGraph
from lego_hw.errors import InfeasibleClockError


def dual_register_bits(prob: RegisterProblem) -> int:
    """Optimal register bits of `prob` via its min-cost-flow dual."""
    if sum(prob.cost.values()) != 0:
        raise ValueError("internal: register-insertion costs must sum to zero (a difference program)")
    h = nx.DiGraph()
    for n in prob.variables:
        h.add_node(n, demand=prob.cost.get(n, 0))
    for (u, v), lo in prob.constraints.items():
        if u != v:
            h.add_edge(u, v, weight=-lo)
    try:
        flow_cost, _ = nx.network_simplex(h)
    except nx.NetworkXUnbounded as exc:  # a negative-cost cycle of unbounded capacity: the primal is infeasible
        raise InfeasibleClockError(
            "the register-insertion program is infeasible at this clock (a loop needs registers)"
        ) from exc
    except nx.NetworkXUnfeasible as exc:  # pragma: no cover - the primal is bounded below, so the dual is feasible
        raise ValueError("internal: min-cost-flow dual has no feasible flow") from exc
    return int(-flow_cost + prob.constant)


def min_cost_flow_register_bits(pg: PrimitiveGraph, clock_ns: float) -> int:
    """Fewest pipeline-register bits for `pg` at `clock_ns`, computed by the min-cost-flow dual."""
    return dual_register_bits(build_problem(pg, clock_ns))
