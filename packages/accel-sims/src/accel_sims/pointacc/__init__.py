"""PointAcc (Lin, Zhang, Tang, Wang, Han; MICRO 2021, arXiv:2110.07600): the ranking-based mapping unit and a
point-cloud accelerator simulator.

Mapping operations (farthest point sampling, kNN, ball query, voxel downsampling, sparse-convolution kernel maps) live
in `accel_sims.pointacc.mapping`; point files and synthetic clouds in `accel_sims.pointacc.points`; the simulator
(mapping unit, memory management unit with its cache, matrix unit, temporal layer fusion) in `simulator`, the
networks in `workloads` and the GPU-like baseline in `baselines`. Re-exported here lazily:

    from accel_sims.pointacc import PointAccConfig, compare_gpu, make_workload, simulate, simulate_gpu

    wl = make_workload("pointnet2-seg")
    print(compare_gpu(simulate(wl, PointAccConfig.from_name("server")), simulate_gpu(wl)))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from accel_sims._lazy import attach

_LAZY: dict[str, str] = {
    "KernelMap": "accel_sims.pointacc.mapping",
    "RankingStats": "accel_sims.pointacc.mapping",
    "ball_query": "accel_sims.pointacc.mapping",
    "count_ops": "accel_sims.pointacc.mapping",
    "farthest_point_sampling": "accel_sims.pointacc.mapping",
    "kernel_map": "accel_sims.pointacc.mapping",
    "kernel_offsets": "accel_sims.pointacc.mapping",
    "knn": "accel_sims.pointacc.mapping",
    "voxel_downsample": "accel_sims.pointacc.mapping",
    "voxelize": "accel_sims.pointacc.mapping",
    "lidar_scan": "accel_sims.pointacc.points",
    "object_cloud": "accel_sims.pointacc.points",
    "read_points": "accel_sims.pointacc.points",
    "room_cloud": "accel_sims.pointacc.points",
    "synthetic_cloud": "accel_sims.pointacc.points",
    "write_points": "accel_sims.pointacc.points",
    "PointAccConfig": "accel_sims.pointacc.config",
    "bitonic_stages": "accel_sims.pointacc.config",
    "Layer": "accel_sims.pointacc.workloads",
    "Workload": "accel_sims.pointacc.workloads",
    "load_workload": "accel_sims.pointacc.workloads",
    "make_workload": "accel_sims.pointacc.workloads",
    "save_workload": "accel_sims.pointacc.workloads",
    "workload_names": "accel_sims.pointacc.workloads",
    "SimResult": "accel_sims.pointacc.simulator",
    "compare": "accel_sims.pointacc.simulator",
    "simulate": "accel_sims.pointacc.simulator",
    "GPUConfig": "accel_sims.pointacc.baselines",
    "GPUResult": "accel_sims.pointacc.baselines",
    "compare_gpu": "accel_sims.pointacc.baselines",
    "simulate_gpu": "accel_sims.pointacc.baselines",
    "breakdown_svg": "accel_sims.pointacc.report",
    "html_report": "accel_sims.pointacc.report",
    "layer_rows": "accel_sims.pointacc.report",
    "markdown": "accel_sims.pointacc.report",
}

if TYPE_CHECKING:
    from accel_sims.pointacc.baselines import GPUConfig, GPUResult, compare_gpu, simulate_gpu
    from accel_sims.pointacc.config import PointAccConfig, bitonic_stages
    from accel_sims.pointacc.mapping import (
        KernelMap,
        RankingStats,
        ball_query,
        count_ops,
        farthest_point_sampling,
        kernel_map,
        kernel_offsets,
        knn,
        voxel_downsample,
        voxelize,
    )
    from accel_sims.pointacc.points import (
        lidar_scan,
        object_cloud,
        read_points,
        room_cloud,
        synthetic_cloud,
        write_points,
    )
    from accel_sims.pointacc.report import breakdown_svg, html_report, layer_rows, markdown
    from accel_sims.pointacc.simulator import SimResult, compare, simulate
    from accel_sims.pointacc.workloads import (
        Layer,
        Workload,
        load_workload,
        make_workload,
        save_workload,
        workload_names,
    )

__all__ = [
    "GPUConfig",
    "GPUResult",
    "KernelMap",
    "Layer",
    "PointAccConfig",
    "RankingStats",
    "SimResult",
    "Workload",
    "ball_query",
    "bitonic_stages",
    "breakdown_svg",
    "compare",
    "compare_gpu",
    "count_ops",
    "farthest_point_sampling",
    "html_report",
    "kernel_map",
    "kernel_offsets",
    "knn",
    "layer_rows",
    "lidar_scan",
    "load_workload",
    "make_workload",
    "markdown",
    "object_cloud",
    "read_points",
    "room_cloud",
    "save_workload",
    "simulate",
    "simulate_gpu",
    "synthetic_cloud",
    "voxel_downsample",
    "voxelize",
    "workload_names",
    "write_points",
]


__getattr__, __dir__ = attach(__name__, _LAZY)
