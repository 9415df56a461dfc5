"""A Gemmini-like baseline as data, and the LEGO-vs-Gemmini comparison (LEGO Sec. VI, arXiv:2509.12053).

The baseline is Gemmini's `defaultConfig` (ucb-bar/gemmini, `GemminiConfigs.defaultConfig`; values as
recorded in shared/reference/hw.md sec. 5.2): a 16x16 int8 mesh with int32 accumulators, a 256 KiB
scratchpad in 4 banks, a 64 KiB accumulator in 2 banks and a 128-bit DMA bus. It runs weight-stationary
with the weights (the GEMM's B operand, a conv's W) held in the PEs, the loop bindings its software tiler
could choose. The LEGO design has the same 256 MACs and the same buffers (so the same total SRAM) and picks,
per layer, the best dataflow and loop binding of a fused OS/WS/IS array (`perf.estimate_best`). Both go
through the same performance model (`perf.estimate`), so the ratios isolate the dataflow choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lego_hw.dataflow import ArraySpec, Dataflow, Mapping
from lego_hw.energy import EnergyTable
from lego_hw.models import Layer
from lego_hw.perf import (
    DEFAULT_DATAFLOWS,
    KIB,
    MemoryConfig,
    Objective,
    PerfReport,
    candidate_bindings,
    estimate_best,
)
from lego_hw.reuse import analyze
from lego_hw.workload import Workload, gemm

GEMMINI_SOURCE = "ucb-bar/gemmini GemminiConfigs.defaultConfig (shared/reference/hw.md sec. 5.2)"
GEMMINI_ARRAY = ArraySpec(rows=16, cols=16, data_width=8, acc_width=32)
GEMMINI_MEMORY = MemoryConfig(
    scratchpad_bytes=256 * KIB,
    scratchpad_banks=4,
    accumulator_bytes=64 * KIB,
    accumulator_banks=2,
    dram_bytes_per_cycle=128 / 8,  # 128-bit DMA bus
    double_buffered=True,
)
GEMMINI_DATAFLOW = "weight-stationary"
# The LEGO design: same MACs, same SRAM split, dataflow chosen per layer from a fused OS/WS/IS array.
LEGO_ARRAY = GEMMINI_ARRAY
LEGO_MEMORY = GEMMINI_MEMORY
LEGO_DATAFLOWS: tuple[str, ...] = DEFAULT_DATAFLOWS
# One design must serve speed and energy: pick per layer the least energy x delay (the bench also reports the
# cycle-optimal and energy-optimal choices).
LEGO_OBJECTIVE: Objective = "edp"
# The paper's headline result (arXiv:2509.12053 abstract): LEGO vs Gemmini.
PAPER_SPEEDUP = 3.2
PAPER_ENERGY_RATIO = 2.4


def weight_tensor(workload: Workload) -> str:
    """The operand Gemmini preloads into the PEs: a conv's `W`, else the last input (GEMM `B`, `K`, `V`)."""
    names = [t.name for t in workload.inputs]
    return "W" if "W" in names else names[-1]


def weight_stationary_bindings(workload: Workload) -> list[tuple[str, str, str]]:
    """Loop bindings under which the weight-stationary preset holds a distinct weight in every PE.

    The weight tensor's only reuse must be stationary: a binding where a row of PEs shares one weight (W
    independent of the column loop) is not Gemmini's mesh, which holds a 16x16 block of B.
    """
    w = weight_tensor(workload)
    out = []
    for loops in candidate_bindings(workload):
        reuse = analyze(workload, Dataflow.preset(GEMMINI_DATAFLOW, loops=loops))
        if reuse[w].kinds == {"stationary"}:
            out.append(loops)
    return out


def baseline_estimate(workload: Workload, energy: EnergyTable | None = None) -> tuple[Mapping, PerfReport]:
    """The Gemmini-like baseline on one workload: weights stationary, Gemmini's array and buffers."""
    return estimate_best(
        workload,
        GEMMINI_ARRAY,
        GEMMINI_MEMORY,
        (GEMMINI_DATAFLOW,),
        energy,
        bindings=weight_stationary_bindings(workload),
    )


def lego_estimate(
    workload: Workload, energy: EnergyTable | None = None, objective: Objective = LEGO_OBJECTIVE
) -> tuple[Mapping, PerfReport]:
    """The LEGO design on one workload: best of OS/WS/IS and loop bindings, same array and buffers."""
    return estimate_best(workload, LEGO_ARRAY, LEGO_MEMORY, LEGO_DATAFLOWS, energy, objective=objective)


def im2col(workload: Workload) -> Workload:
    """A conv2d workload lowered as Gemmini's software does: GEMM with M = n*oh*ow, N = k, K = c*r*s.

    Non-conv workloads come back unchanged. The GEMM's A is the expanded input matrix, so its DRAM traffic
    counts every window (r*s times the input for a stride-1 3x3), as software im2col does; Gemmini's optional
    hardware im2col unit would read the input only once.
    """
    if workload.loops != ("n", "k", "c", "y", "x", "r", "s"):
        return workload
    n, k, c, y, x, r, s = workload.bounds
    return gemm(n * y * x, k, c * r * s, name=f"{workload.name}_im2col")


def baseline_im2col_estimate(workload: Workload, energy: EnergyTable | None = None) -> tuple[Mapping, PerfReport]:
    """The baseline running convs as im2col GEMMs (`im2col`); same model, same configuration."""
    mapping, rep = baseline_estimate(im2col(workload), energy)
    return mapping, rep.model_copy(update={"workload": workload.name})


@dataclass(frozen=True)
class LayerComparison:
    """One layer on both designs."""

    name: str
    count: int
    baseline: PerfReport
    lego: PerfReport

    @property
    def speedup(self) -> float:
        return self.baseline.total_cycles / self.lego.total_cycles

    @property
    def energy_ratio(self) -> float:
        return self.baseline.energy.total_pj / self.lego.energy.total_pj


def compare(
    layers: Sequence[Layer], energy: EnergyTable | None = None, objective: Objective = LEGO_OBJECTIVE
) -> list[LayerComparison]:
    """Baseline and LEGO estimates for every layer (`objective` picks LEGO's dataflow per layer)."""
    out = []
    for lay in layers:
        _, base = baseline_estimate(lay.workload, energy)
        _, lego = lego_estimate(lay.workload, energy, objective)
        out.append(LayerComparison(lay.name, lay.count, base, lego))
    return out


@dataclass(frozen=True)
class ComparisonTotals:
    macs: int
    baseline_cycles: int
    lego_cycles: int
    baseline_energy_pj: float
    lego_energy_pj: float

    @property
    def speedup(self) -> float:
        return self.baseline_cycles / self.lego_cycles

    @property
    def energy_ratio(self) -> float:
        return self.baseline_energy_pj / self.lego_energy_pj


def totals(rows: Sequence[LayerComparison]) -> ComparisonTotals:
    """Whole-model sums (layers weighted by their counts)."""
    return ComparisonTotals(
        macs=sum(r.lego.macs * r.count for r in rows),
        baseline_cycles=sum(r.baseline.total_cycles * r.count for r in rows),
        lego_cycles=sum(r.lego.total_cycles * r.count for r in rows),
        baseline_energy_pj=sum(r.baseline.energy.total_pj * r.count for r in rows),
        lego_energy_pj=sum(r.lego.energy.total_pj * r.count for r in rows),
    )
