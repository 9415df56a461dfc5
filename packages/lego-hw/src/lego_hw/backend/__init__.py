"""LEGO back end (Sec. IV): primitive graph, pipeline-register LP (with a min-cost-flow cross-check),
removal and gating of logic unused by the configured dataflows."""

from __future__ import annotations

from lego_hw.backend.mincostflow import min_cost_flow_register_bits
from lego_hw.backend.pipeline import (
    PipelineResult,
    asap_registers,
    insert_pipeline_registers,
    min_feasible_clock,
    naive_register_bits,
)
from lego_hw.backend.primitives import DelayModel, PrimitiveGraph, critical_path_ns, primitive_graph
from lego_hw.backend.register_comparison import RegisterComparison, compare_register_insertion
from lego_hw.backend.unused_logic import LogicCounts, UnusedLogicReport, remove_unused_logic

__all__ = [
    "DelayModel",
    "LogicCounts",
    "UnusedLogicReport",
    "PipelineResult",
    "PrimitiveGraph",
    "RegisterComparison",
    "asap_registers",
    "compare_register_insertion",
    "critical_path_ns",
    "insert_pipeline_registers",
    "min_cost_flow_register_bits",
    "min_feasible_clock",
    "naive_register_bits",
    "primitive_graph",
    "remove_unused_logic",
]
