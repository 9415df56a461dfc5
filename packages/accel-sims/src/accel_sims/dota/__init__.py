"""DOTA / Lightening-Transformer (Zhu, Gu, Wang, ..., Han, Chen, Pan; arXiv:2305.19533, HPCA 2024): a photonic
tensor core made of a crossbar of dynamically-operated dot-product engines (DDOT), modelled at the device level
(`device`), the architecture level (`arch`: latency, energy, area), on transformer workloads (`workloads`), against an
electronic and a microring-bank baseline (`baselines`), on a real model (`accuracy`) and in reports (`report`).

Re-exported here lazily:

    from accel_sims.dota import area, simulate

    print(area("dota-b-4bit").total_mm2)  # 60.33 mm2
    print(simulate("deit-t", "dota-b-4bit").latency_s)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from accel_sims._lazy import attach

_LAZY: dict[str, str] = {
    "DDOTConfig": "accel_sims.dota.device",
    "photonic_matmul": "accel_sims.dota.device",
    "quantize_signed": "accel_sims.dota.device",
    "AreaReport": "accel_sims.dota.arch",
    "DotaConfig": "accel_sims.dota.arch",
    "ModelResult": "accel_sims.dota.arch",
    "area": "accel_sims.dota.arch",
    "laser_power_mw": "accel_sims.dota.arch",
    "preset_names": "accel_sims.dota.arch",
    "simulate": "accel_sims.dota.arch",
    "simulate_matmul": "accel_sims.dota.arch",
    "Matmul": "accel_sims.dota.workloads",
    "TransformerSpec": "accel_sims.dota.workloads",
    "matmuls": "accel_sims.dota.workloads",
    "workload_names": "accel_sims.dota.workloads",
    "ElectronicConfig": "accel_sims.dota.baselines",
    "compare": "accel_sims.dota.baselines",
    "simulate_electronic": "accel_sims.dota.baselines",
    "evaluate": "accel_sims.dota.accuracy",
    "photonic": "accel_sims.dota.accuracy",
    "photonic_attention": "accel_sims.dota.accuracy",
    "area_markdown": "accel_sims.dota.report",
    "html_report": "accel_sims.dota.report",
    "markdown": "accel_sims.dota.report",
    "matmul_rows": "accel_sims.dota.report",
    "svg_energy_breakdown": "accel_sims.dota.report",
}

if TYPE_CHECKING:
    from accel_sims.dota.accuracy import evaluate, photonic, photonic_attention
    from accel_sims.dota.arch import (
        AreaReport,
        DotaConfig,
        ModelResult,
        area,
        laser_power_mw,
        preset_names,
        simulate,
        simulate_matmul,
    )
    from accel_sims.dota.baselines import ElectronicConfig, compare, simulate_electronic
    from accel_sims.dota.device import DDOTConfig, photonic_matmul, quantize_signed
    from accel_sims.dota.report import area_markdown, html_report, markdown, matmul_rows, svg_energy_breakdown
    from accel_sims.dota.workloads import Matmul, TransformerSpec, matmuls, workload_names

__all__ = [
    "AreaReport",
    "DDOTConfig",
    "DotaConfig",
    "ElectronicConfig",
    "Matmul",
    "ModelResult",
    "TransformerSpec",
    "area",
    "area_markdown",
    "compare",
    "evaluate",
    "html_report",
    "laser_power_mw",
    "markdown",
    "matmul_rows",
    "matmuls",
    "photonic",
    "photonic_attention",
    "photonic_matmul",
    "preset_names",
    "quantize_signed",
    "simulate",
    "simulate_electronic",
    "simulate_matmul",
    "svg_energy_breakdown",
    "workload_names",
]


__getattr__, __dir__ = attach(__name__, _LAZY)
