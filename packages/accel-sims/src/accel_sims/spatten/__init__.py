"""SpAtten (Wang, Zhang, Han; HPCA 2021, arXiv:2012.09852): cascade token and head pruning, local value pruning and
progressive quantization on real attention, and a cycle-level simulator of its datapath.

The public API is re-exported here lazily, so importing the simulator does not import torch:

    from accel_sims.spatten import SpAttenConfig, dense_baseline, make_workload, simulate

    wl = make_workload("bert-base")
    pruned, dense = simulate(wl), simulate(dense_baseline(wl))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from accel_sims._lazy import attach

_LAZY: dict[str, str] = {
    "HeadRecord": "accel_sims.spatten.workload",
    "Workload": "accel_sims.spatten.workload",
    "read_csv": "accel_sims.spatten.workload",
    "write_csv": "accel_sims.spatten.workload",
    "PruningConfig": "accel_sims.spatten.pruning",
    "cascade_schedule": "accel_sims.spatten.pruning",
    "LayerStats": "accel_sims.spatten.attention",
    "SpAttenAttention": "accel_sims.spatten.attention",
    "SpAttenRun": "accel_sims.spatten.attention",
    "apply": "accel_sims.spatten.attention",
    "run": "accel_sims.spatten.attention",
    "prune": "accel_sims.spatten.emit",
    "records_from_stats": "accel_sims.spatten.emit",
    "workload_from_stats": "accel_sims.spatten.emit",
    "SpAttenConfig": "accel_sims.spatten.config",
    "preset_names": "accel_sims.spatten.config",
    "TopKTrace": "accel_sims.spatten.topk",
    "expected_quickselect_cycles": "accel_sims.spatten.topk",
    "quickselect_cycles": "accel_sims.spatten.topk",
    "SimResult": "accel_sims.spatten.simulator",
    "compare": "accel_sims.spatten.simulator",
    "dense_baseline": "accel_sims.spatten.simulator",
    "layer_report": "accel_sims.spatten.simulator",
    "simulate": "accel_sims.spatten.simulator",
    "BenchmarkSettings": "accel_sims.spatten.benchmarks",
    "benchmark_names": "accel_sims.spatten.benchmarks",
    "make_workload": "accel_sims.spatten.benchmarks",
}

if TYPE_CHECKING:
    from accel_sims.spatten.attention import LayerStats, SpAttenAttention, SpAttenRun, apply, run
    from accel_sims.spatten.benchmarks import BenchmarkSettings, benchmark_names, make_workload
    from accel_sims.spatten.config import SpAttenConfig, preset_names
    from accel_sims.spatten.emit import prune, records_from_stats, workload_from_stats
    from accel_sims.spatten.pruning import PruningConfig, cascade_schedule
    from accel_sims.spatten.simulator import SimResult, compare, dense_baseline, layer_report, simulate
    from accel_sims.spatten.topk import TopKTrace, expected_quickselect_cycles, quickselect_cycles
    from accel_sims.spatten.workload import HeadRecord, Workload, read_csv, write_csv

__all__ = [
    "BenchmarkSettings",
    "HeadRecord",
    "LayerStats",
    "PruningConfig",
    "SimResult",
    "SpAttenAttention",
    "SpAttenConfig",
    "SpAttenRun",
    "TopKTrace",
    "Workload",
    "apply",
    "benchmark_names",
    "cascade_schedule",
    "compare",
    "dense_baseline",
    "expected_quickselect_cycles",
    "layer_report",
    "make_workload",
    "preset_names",
    "prune",
    "quickselect_cycles",
    "read_csv",
    "records_from_stats",
    "run",
    "simulate",
    "workload_from_stats",
    "write_csv",
]


__getattr__, __dir__ = attach(__name__, _LAZY)
