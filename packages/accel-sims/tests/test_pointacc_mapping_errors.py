"""Bad input to the PointAcc mapping operations raises AccelSimsError naming the argument; operation counters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc.mapping import (
    RankingStats,
    ball_query,
    ball_query_stats,
    bitonic_sort_cost,
    count_ops,
    farthest_point_sampling,
    fps_stats,
    kernel_map,
    kernel_map_stats,
    knn,
    knn_stats,
    merge_cost,
    voxel_downsample,
    voxel_downsample_stats,
    voxelize,
)
from accel_sims.pointacc.ranking import merge_equal, pack_keys

PTS = np.random.default_rng(0).random((10, 3))
COORDS = np.arange(30).reshape(10, 3)
NAN = PTS.copy()
NAN[4, 1] = np.nan
INF = PTS.copy()
INF[2, 0] = np.inf

CASES: list[tuple[str, Callable[[], Any], str]] = [
    # empty clouds
    ("fps empty", lambda: farthest_point_sampling(np.empty((0, 3)), 1), "points is empty"),
    ("knn empty points", lambda: knn(PTS, np.empty((0, 3)), 1), "points is empty"),
    ("knn empty queries", lambda: knn(np.empty((0, 3)), PTS, 1), "queries is empty"),
    ("ball empty", lambda: ball_query(PTS, np.empty((0, 3)), 0.1, 1), "points is empty"),
    ("voxel empty", lambda: voxel_downsample(np.empty((0, 3), dtype=np.int64), 2), "coords is empty"),
    ("voxelize empty", lambda: voxelize(np.empty((0, 3)), 0.1), "points is empty"),
    ("kmap empty in", lambda: kernel_map(np.empty((0, 3), dtype=np.int64), COORDS), "in_coords is empty"),
    ("kmap empty out", lambda: kernel_map(COORDS, np.empty((0, 3), dtype=np.int64)), "out_coords is empty"),
    # k larger than the cloud
    ("fps too many", lambda: farthest_point_sampling(PTS, 11), "n_samples must be <= the number of points (10)"),
    ("knn k > N", lambda: knn(PTS, PTS, 11), "k must be <= the number of points (10)"),
    ("ball k > N", lambda: ball_query(PTS, PTS, 0.1, 11), "k must be <= the number of points (10)"),
    ("knn k = 0", lambda: knn(PTS, PTS, 0), "k must be >= 1"),
    ("knn k bool", lambda: knn(PTS, PTS, True), "k must be an integer"),
    ("knn k float", lambda: knn(PTS, PTS, 2.0), "k must be an integer"),
    ("fps zero", lambda: farthest_point_sampling(PTS, 0), "n_samples must be >= 1"),
    ("fps bad start", lambda: farthest_point_sampling(PTS, 2, start=10), "start must be an integer index"),
    # non-positive radius, voxel size, stride
    ("ball radius 0", lambda: ball_query(PTS, PTS, 0.0, 1), "radius must be finite and > 0"),
    ("ball radius <0", lambda: ball_query(PTS, PTS, -1.0, 1), "radius must be finite and > 0"),
    ("ball radius nan", lambda: ball_query(PTS, PTS, float("nan"), 1), "radius must be finite and > 0"),
    ("voxelize size 0", lambda: voxelize(PTS, 0), "voxel_size must be finite and > 0"),
    ("voxelize size inf", lambda: voxelize(PTS, float("inf")), "voxel_size must be finite and > 0"),
    ("voxelize tiny", lambda: voxelize(PTS * 1e6, 1e-9), "voxel_size 1e-09 is too small"),
    ("voxel stride 0", lambda: voxel_downsample(COORDS, 0), "stride must be >= 1"),
    ("voxel stride float", lambda: voxel_downsample(COORDS, 1.5), "stride must be an integer"),
    ("kmap stride 0", lambda: kernel_map(COORDS, None, 3, 0), "stride must be >= 1"),
    ("kmap kernel 0", lambda: kernel_map(COORDS, COORDS, 0), "kernel_size must be >= 1"),
    ("kmap dilation", lambda: kernel_map(COORDS, COORDS, 3, 1, -1), "dilation must be >= 1"),
    ("kmap tensor_stride", lambda: kernel_map(COORDS, COORDS, tensor_stride=0), "tensor_stride must be >= 1"),
    # NaN coordinates
    ("fps nan", lambda: farthest_point_sampling(NAN, 2), "points holds NaN or infinite coordinates (first bad row 4)"),
    ("knn nan query", lambda: knn(NAN, PTS, 2), "queries holds NaN"),
    ("knn inf points", lambda: knn(PTS, INF, 2), "points holds NaN or infinite coordinates (first bad row 2)"),
    ("ball nan", lambda: ball_query(PTS, NAN, 0.1, 2), "points holds NaN"),
    ("voxelize nan", lambda: voxelize(NAN, 0.1), "points holds NaN"),
    # wrong shapes and dtypes
    ("fps 1-D", lambda: farthest_point_sampling(PTS[0], 1), "points must be a 2-D array [N, D]; got shape (3,)"),
    ("knn 3-D", lambda: knn(PTS[None], PTS, 1), "queries must be a 2-D array"),
    ("knn dims", lambda: knn(PTS[:, :2], PTS, 1), "queries must have 3 coordinate columns; got shape (10, 2)"),
    ("ball dims", lambda: ball_query(PTS, PTS[:, :2], 0.1, 1), "queries must have 2 coordinate columns"),
    ("no columns", lambda: knn(np.empty((3, 0)), np.empty((3, 0)), 1), "at least one coordinate column"),
    ("strings", lambda: knn(np.array([["a", "b", "c"]]), PTS, 1), "queries must hold real numbers"),
    ("voxel float", lambda: voxel_downsample(PTS, 2), "coords must have an integer dtype"),
    ("voxel 1-D", lambda: voxel_downsample(np.arange(3), 2), "coords must be a 2-D integer array"),
    ("kmap dims", lambda: kernel_map(COORDS, COORDS[:, :2]), "out_coords must have 3 columns"),
    ("kmap float", lambda: kernel_map(PTS, PTS), "in_coords must have an integer dtype"),
    ("kmap dup out", lambda: kernel_map(COORDS, np.concatenate([COORDS, COORDS[:1]])), "out_coords must be unique"),
    ("kmap dup in", lambda: kernel_map(np.concatenate([COORDS, COORDS[:1]]), None), "in_coords (the outputs when"),
    ("kmap out stride", lambda: kernel_map(COORDS, COORDS, 3, 2), "out_coords must be multiples of"),
    ("pack too wide", lambda: pack_keys([np.array([[0, 0, 0], [2**40, 2**40, 0]])]), "too wide a range"),
    # counters
    ("count op", lambda: count_ops("hash", 10), "op must be one of"),
    ("stats sizes", lambda: knn_stats(0, 10, 1), "n_queries must be >= 1"),
    ("bitonic n", lambda: bitonic_sort_cost(-1), "n must be >= 0"),
    ("merge n", lambda: merge_cost(-1, 3), "merge lengths must be >= 0"),
]


@pytest.mark.parametrize(("label", "call", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_argument(label: str, call: Callable[[], Any], message: str) -> None:
    with pytest.raises(AccelSimsError) as info:
        call()
    assert message in str(info.value), (label, str(info.value))
    assert isinstance(info.value, ValueError)


def test_bitonic_and_merge_costs() -> None:
    # 8 keys: log2 8 = 3, 3 * 4 / 2 = 6 stages of 4 compare-swaps; 5 keys pad to 8.
    assert bitonic_sort_cost(8) == (6, 24)
    assert bitonic_sort_cost(5) == (6, 24)
    assert bitonic_sort_cost(1) == (0, 0) and bitonic_sort_cost(2) == (1, 1)
    assert bitonic_sort_cost(1024) == (55, 55 * 512)
    assert merge_cost(3, 4) == 6 and merge_cost(0, 4) == 0


def test_stats_from_sizes() -> None:
    f = fps_stats(1000, 100)
    assert (f.distance_computations, f.reduction_elements, f.outputs) == (99_000, 198_000, 100)
    k = knn_stats(10, 1024, 16)
    assert (k.distance_computations, k.sort_calls, k.sorted_elements, k.max_sort_length) == (10240, 10, 10240, 1024)
    assert k.sort_comparisons == 10 * 1024 * 10 and k.outputs == 160
    b = ball_query_stats(10, 100, 8, dims=2)
    assert (b.distance_computations, b.reduction_elements, b.sort_calls, b.coordinate_dims) == (1000, 1000, 0, 2)
    v = voxel_downsample_stats(1000, 300)
    assert (v.sort_calls, v.sorted_elements, v.reduction_elements, v.outputs) == (1, 1000, 999, 300)
    m = kernel_map_stats(100, 40, 27, 500)
    assert (m.merge_calls, m.merged_elements, m.merge_comparisons, m.outputs) == (27, 27 * 140, 27 * 139, 500)
    assert m.sorted_elements == 140 and m.max_sort_length == 100
    assert count_ops("knn", 1024, n_queries=10, k=16) == k
    assert count_ops("fps", 1000, n_queries=100) == f
    assert count_ops("voxelize", 1000, n_out=300).op == "voxelize"
    assert count_ops("kernel_map", 100, n_out=40, kernel_volume=27, n_pairs=500) == m


def test_stats_add_and_serialize() -> None:
    total = fps_stats(100, 10) + knn_stats(10, 100, 4)
    assert total.op == "fps+knn" and total.distance_computations == 900 + 1000 and total.max_sort_length == 100
    assert json.loads(total.model_dump_json())["sort_calls"] == 10
    with pytest.raises(ValueError):
        RankingStats(op="x", sort_calls=-1)


def test_kernel_map_stats_match_the_map() -> None:
    coords = voxel_downsample(np.random.default_rng(1).integers(0, 10, size=(200, 3)), 1)[0]
    km = kernel_map(coords, None, 2, 2)
    s = km.stats
    assert (s.merge_calls, s.outputs, s.sorted_elements) == (8, km.total, coords.shape[0] + km.out_coords.shape[0])


def test_merge_equal_finds_every_equal_key() -> None:
    a = np.array([1, 2, 2, 5, 7, 9])
    b = np.array([0, 2, 5, 6, 9])
    ia, ib = merge_equal(a, b)
    assert list(zip(a[ia].tolist(), b[ib].tolist(), strict=True)) == [(2, 2), (2, 2), (5, 5), (9, 9)]
    ia, ib = merge_equal(np.array([3]), np.array([1]))
    assert ia.size == 0 and ib.size == 0
