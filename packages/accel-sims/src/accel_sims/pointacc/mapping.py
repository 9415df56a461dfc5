"""PointAcc's mapping operations (arXiv:2110.07600, the "Mapping Unit"; hw.md Sec. 3.2), each in the ranking (sort
and merge) formulation and vectorized in numpy, with the operation counters a simulator charges to the mapping unit.

One module per operation; this one re-exports them:

- `farthest_point_sampling` (fps.py), `knn` (knn.py), `ball_query` (ball_query.py): distances, then ranking.
- `voxelize`, `voxel_downsample` (voxel.py): sort and deduplicate packed coordinate keys.
- `kernel_map`, `KernelMap`, `kernel_offsets` (kernel_map.py): shift sorted input keys per offset and merge them
  with the sorted output keys.
- `RankingStats` and `*_stats(sizes)` / `count_ops(op, ...)`: elements sorted, merge lengths, comparisons,
  distance computations, reductions (ranking.py), plus `bitonic_sort_cost` and `merge_cost`.

Each op has an independent `*_reference` (brute force or hash based) in its own module, used by the tests.
"""

from __future__ import annotations

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc.ball_query import ball_query, ball_query_stats
from accel_sims.pointacc.fps import farthest_point_sampling, fps_stats
from accel_sims.pointacc.kernel_map import KernelMap, kernel_map, kernel_map_stats, kernel_offsets
from accel_sims.pointacc.knn import knn, knn_stats
from accel_sims.pointacc.ranking import RankingStats, bitonic_sort_cost, merge_cost
from accel_sims.pointacc.voxel import voxel_downsample, voxel_downsample_stats, voxelize

__all__ = [
    "KernelMap",
    "RankingStats",
    "ball_query",
    "ball_query_stats",
    "bitonic_sort_cost",
    "count_ops",
    "farthest_point_sampling",
    "fps_stats",
    "kernel_map",
    "kernel_map_stats",
    "kernel_offsets",
    "knn",
    "knn_stats",
    "merge_cost",
    "voxel_downsample",
    "voxel_downsample_stats",
    "voxelize",
]

MAPPING_OPS = ("fps", "knn", "ball_query", "voxelize", "voxel_downsample", "kernel_map")


def count_ops(
    op: str,
    n_points: int,
    *,
    n_queries: int = 1,
    k: int = 1,
    n_out: int = 0,
    kernel_volume: int = 27,
    n_pairs: int = 0,
    dims: int = 3,
) -> RankingStats:
    """Mapping-unit work of `op` from sizes alone (no coordinates needed), for a simulator's layer list.

    fps: n_points, n_queries = samples. knn / ball_query: n_points, n_queries, k. voxelize / voxel_downsample:
    n_points, n_out (unique outputs, if known). kernel_map: n_points inputs, n_out outputs, kernel_volume, n_pairs.
    """
    if op == "fps":
        return fps_stats(n_points, n_queries, dims)
    if op == "knn":
        return knn_stats(n_queries, n_points, k, dims)
    if op == "ball_query":
        return ball_query_stats(n_queries, n_points, k, dims)
    if op in ("voxelize", "voxel_downsample"):
        return voxel_downsample_stats(n_points, n_out, dims, op=op)
    if op == "kernel_map":
        return kernel_map_stats(n_points, n_out, kernel_volume, n_pairs, dims)
    raise AccelSimsError(f"op must be one of {', '.join(MAPPING_OPS)}; got {op!r}")
