"""lego-hw: spatial accelerator generation from affine dataflows to verified Verilog.

LEGO (Lin, Zhang, Han; HPCA 2025, arXiv:2509.12053). Workloads are loop nests with affine accesses, dataflows are
space-time transforms; the front end analyses reuse exactly and builds interconnect and memory, the back end
inserts pipeline registers by LP, and the generator emits Verilog that is simulated (Icarus), synthesized (Yosys)
and linted (Verilator). The public API is re-exported here lazily, so `import lego_hw` stays light.

    from lego_hw import ArraySpec, Dataflow, gemm, generate, map_workload, simulate

    wl = gemm(13, 10, 7)
    design = generate(map_workload(wl, Dataflow.preset("weight-stationary"), ArraySpec(rows=4, cols=4)))
    result = simulate(design, wl.random_inputs(np.random.default_rng(0)), check=True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lego_hw.errors import (
    ArrayTooLargeError,
    IllegalMappingError,
    InfeasibleClockError,
    LegoError,
    NonAffineAccessError,
    SimulationMismatchError,
    ToolFailedError,
    ToolNotFoundError,
)

__version__ = "0.0.1"

_LAZY: dict[str, str] = {
    # front end
    "TensorAccess": "lego_hw.workload",
    "Workload": "lego_hw.workload",
    "gemm": "lego_hw.workload",
    "batched_gemm": "lego_hw.workload",
    "conv2d": "lego_hw.workload",
    "depthwise_conv2d": "lego_hw.workload",
    "attention_qk": "lego_hw.workload",
    "attention_pv": "lego_hw.workload",
    "mttkrp": "lego_hw.workload",
    "ArraySpec": "lego_hw.dataflow",
    "Dataflow": "lego_hw.dataflow",
    "Mapping": "lego_hw.dataflow",
    "check_legality": "lego_hw.dataflow",
    "map_workload": "lego_hw.dataflow",
    "preset_names": "lego_hw.dataflow",
    "ReuseVector": "lego_hw.reuse",
    "TensorReuse": "lego_hw.reuse",
    "analyze": "lego_hw.reuse",
    "Interconnect": "lego_hw.interconnect",
    "LinkCosts": "lego_hw.interconnect",
    "build_interconnect": "lego_hw.interconnect",
    "Banking": "lego_hw.memory",
    "plan_banks": "lego_hw.memory",
    "verify_conflict_free": "lego_hw.memory",
    "FusionStats": "lego_hw.fusion",
    "total_cycles": "lego_hw.schedule",
    "tile_phases": "lego_hw.schedule",
    "DesignSpec": "lego_hw.spec",
    "parse_workload": "lego_hw.spec",
    # generator and tools
    "Design": "lego_hw.design",
    "generate": "lego_hw.design",
    "SimResult": "lego_hw.tools",
    "SynthReport": "lego_hw.tools",
    "lint": "lego_hw.tools",
    "require_tool": "lego_hw.tools",
    "simulate": "lego_hw.tools",
    "synthesize": "lego_hw.tools",
    # back end
    "DelayModel": "lego_hw.backend",
    "PrimitiveGraph": "lego_hw.backend",
    "PipelineResult": "lego_hw.backend",
    "RegisterComparison": "lego_hw.backend",
    "UnusedLogicReport": "lego_hw.backend",
    "compare_register_insertion": "lego_hw.backend",
    "insert_pipeline_registers": "lego_hw.backend",
    "min_cost_flow_register_bits": "lego_hw.backend",
    "min_feasible_clock": "lego_hw.backend",
    "naive_register_bits": "lego_hw.backend",
    "primitive_graph": "lego_hw.backend",
    "remove_unused_logic": "lego_hw.backend",
    # performance model
    "EnergyTable": "lego_hw.energy",
    "MemoryConfig": "lego_hw.perf",
    "PerfReport": "lego_hw.perf",
    "estimate": "lego_hw.perf",
    "estimate_best": "lego_hw.perf",
    "extract_workloads": "lego_hw.extract",
    "model_layers": "lego_hw.models",
    "resnet50": "lego_hw.models",
    "transformer_block": "lego_hw.models",
    "LayerRow": "lego_hw.report",
    "render_report": "lego_hw.report",
}
_RENAMED = {"render_report": "render"}

if TYPE_CHECKING:
    from lego_hw.backend import (
        DelayModel,
        PipelineResult,
        PrimitiveGraph,
        RegisterComparison,
        UnusedLogicReport,
        compare_register_insertion,
        insert_pipeline_registers,
        min_cost_flow_register_bits,
        min_feasible_clock,
        naive_register_bits,
        primitive_graph,
        remove_unused_logic,
    )
    from lego_hw.dataflow import ArraySpec, Dataflow, Mapping, check_legality, map_workload, preset_names
    from lego_hw.design import Design, generate
    from lego_hw.energy import EnergyTable
    from lego_hw.extract import extract_workloads
    from lego_hw.fusion import FusionStats
    from lego_hw.interconnect import Interconnect, LinkCosts, build_interconnect
    from lego_hw.memory import Banking, plan_banks, verify_conflict_free
    from lego_hw.models import model_layers, resnet50, transformer_block
    from lego_hw.perf import MemoryConfig, PerfReport, estimate, estimate_best
    from lego_hw.report import LayerRow
    from lego_hw.report import render as render_report
    from lego_hw.reuse import ReuseVector, TensorReuse, analyze
    from lego_hw.schedule import tile_phases, total_cycles
    from lego_hw.spec import DesignSpec, parse_workload
    from lego_hw.tools import SimResult, SynthReport, lint, require_tool, simulate, synthesize
    from lego_hw.workload import (
        TensorAccess,
        Workload,
        attention_pv,
        attention_qk,
        batched_gemm,
        conv2d,
        depthwise_conv2d,
        gemm,
        mttkrp,
    )

__all__ = [
    "__version__",
    "ArraySpec",
    "ArrayTooLargeError",
    "Banking",
    "Dataflow",
    "DelayModel",
    "Design",
    "DesignSpec",
    "EnergyTable",
    "FusionStats",
    "IllegalMappingError",
    "InfeasibleClockError",
    "Interconnect",
    "LayerRow",
    "LegoError",
    "LinkCosts",
    "Mapping",
    "MemoryConfig",
    "NonAffineAccessError",
    "PerfReport",
    "PipelineResult",
    "PrimitiveGraph",
    "RegisterComparison",
    "ReuseVector",
    "SimResult",
    "SimulationMismatchError",
    "SynthReport",
    "TensorAccess",
    "TensorReuse",
    "ToolFailedError",
    "ToolNotFoundError",
    "UnusedLogicReport",
    "Workload",
    "analyze",
    "attention_pv",
    "attention_qk",
    "batched_gemm",
    "build_interconnect",
    "check_legality",
    "compare_register_insertion",
    "conv2d",
    "depthwise_conv2d",
    "estimate",
    "estimate_best",
    "extract_workloads",
    "gemm",
    "generate",
    "insert_pipeline_registers",
    "lint",
    "map_workload",
    "min_cost_flow_register_bits",
    "min_feasible_clock",
    "model_layers",
    "mttkrp",
    "naive_register_bits",
    "parse_workload",
    "plan_banks",
    "preset_names",
    "primitive_graph",
    "remove_unused_logic",
    "render_report",
    "require_tool",
    "resnet50",
    "simulate",
    "synthesize",
    "tile_phases",
    "total_cycles",
    "transformer_block",
    "verify_conflict_free",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lego_hw' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
