"""LP register insertion next to its baselines and its dual, at one clock (LEGO Sec. IV; BENCHMARKS.md).

Baselines: registering every edge of the primitive graph (naive), and balanced as-soon-as-possible
insertion with fan-out sharing (ASAP). The min-cost-flow dual must equal the LP optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

from lego_hw.backend.mincostflow import dual_register_bits
from lego_hw.backend.pipeline import (
    asap_registers,
    build_problem,
    insert_pipeline_registers,
    min_feasible_clock,
    naive_register_bits,
)
from lego_hw.backend.primitives import PrimitiveGraph


@dataclass(frozen=True)
class RegisterComparison:
    """LP register bits next to the baselines, at one clock."""

    clock_ns: float
    min_clock_ns: float
    lp_bits: int
    asap_bits: int
    naive_bits: int
    dual_bits: int  # min-cost-flow optimum; equals lp_bits
    latency: int
    solve_seconds: float

    @property
    def lp_over_naive(self) -> float:
        return self.lp_bits / self.naive_bits if self.naive_bits else 0.0

    @property
    def lp_over_asap(self) -> float:
        return self.lp_bits / self.asap_bits if self.asap_bits else 1.0

    def as_dict(self) -> dict[str, object]:
        return {**vars(self), "lp_over_naive": self.lp_over_naive, "lp_over_asap": self.lp_over_asap}


def compare_register_insertion(pg: PrimitiveGraph, clock_ns: float | None = None) -> RegisterComparison:
    """Solve the LP at `clock_ns` (default: the minimum feasible clock) and report it against balanced ASAP
    insertion, registering every edge, and the min-cost-flow dual."""
    min_clock = min_feasible_clock(pg)
    clock = min_clock if clock_ns is None else clock_ns
    res = insert_pipeline_registers(pg, clock)
    return RegisterComparison(
        clock_ns=clock,
        min_clock_ns=min_clock,
        lp_bits=res.register_bits,
        asap_bits=asap_registers(pg, clock).register_bits,
        naive_bits=naive_register_bits(pg),
        dual_bits=dual_register_bits(build_problem(pg, clock)),
        latency=res.latency,
        solve_seconds=res.solve_seconds,
    )
