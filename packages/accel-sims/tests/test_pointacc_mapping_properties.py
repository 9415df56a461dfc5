"""Property tests (hypothesis) of the PointAcc mapping operations: the ranking formulation equals the brute-force or
hash reference on arbitrary small clouds, including duplicate points and coarse grids full of distance ties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sims.pointacc.ball_query import ball_query_reference
from accel_sims.pointacc.fps import farthest_point_sampling_reference
from accel_sims.pointacc.kernel_map import kernel_map_reference
from accel_sims.pointacc.knn import knn_reference
from accel_sims.pointacc.mapping import ball_query, farthest_point_sampling, kernel_map, knn, voxel_downsample
from accel_sims.pointacc.voxel import voxel_downsample_reference


@st.composite
def grid_clouds(draw: st.DrawFn, max_points: int = 24) -> np.ndarray:
    """Points on a coarse half-integer grid (exact float arithmetic, many ties and duplicates), D in {2, 3}."""
    dims = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, max_points))
    values = draw(st.lists(st.integers(-4, 4), min_size=n * dims, max_size=n * dims))
    return np.asarray(values, dtype=np.float64).reshape(n, dims) / 2


@st.composite
def int_coords(draw: st.DrawFn, max_points: int = 40) -> np.ndarray:
    dims = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, max_points))
    values = draw(st.lists(st.integers(-6, 6), min_size=n * dims, max_size=n * dims))
    return np.asarray(values, dtype=np.int64).reshape(n, dims)


@settings(max_examples=60, deadline=None)
@given(grid_clouds(), st.data())
def test_fps_property(pts: np.ndarray, data: st.DataObject) -> None:
    n_samples = data.draw(st.integers(1, pts.shape[0]))
    start = data.draw(st.integers(0, pts.shape[0] - 1))
    np.testing.assert_array_equal(
        farthest_point_sampling(pts, n_samples, start), farthest_point_sampling_reference(pts, n_samples, start)
    )


@settings(max_examples=60, deadline=None)
@given(grid_clouds(), st.data())
def test_knn_property(pts: np.ndarray, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, pts.shape[0]))
    qs = pts[: data.draw(st.integers(1, pts.shape[0]))] + 0.25
    idx, dist = knn(qs, pts, k)
    ridx, rdist = knn_reference(qs, pts, k)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(dist, rdist)


@settings(max_examples=60, deadline=None)
@given(grid_clouds(), st.data())
def test_ball_query_property(pts: np.ndarray, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, pts.shape[0]))
    radius = data.draw(st.sampled_from([0.25, 0.5, 1.0, 1.5, 3.0]))
    idx, cnt = ball_query(pts, pts[::-1], radius, k)
    ridx, rcnt = ball_query_reference(pts, pts[::-1], radius, k)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(cnt, rcnt)


@settings(max_examples=60, deadline=None)
@given(int_coords(), st.integers(1, 5))
def test_voxel_downsample_property(coords: np.ndarray, stride: int) -> None:
    out, inv = voxel_downsample(coords, stride)
    rout, rinv = voxel_downsample_reference(coords, stride)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(inv, rinv)


@settings(max_examples=60, deadline=None)
@given(int_coords(), st.sampled_from([(1, 1), (2, 1), (3, 1), (2, 2), (3, 2)]), st.integers(1, 2))
def test_kernel_map_property(raw: np.ndarray, kernel: tuple[int, int], dilation: int) -> None:
    kernel_size, stride = kernel
    coords = voxel_downsample(raw, 1)[0]
    km = kernel_map(raw, None if stride > 1 else coords, kernel_size, stride, dilation)  # raw may repeat inputs
    ref = kernel_map_reference(raw, km.out_coords, kernel_size, dilation)
    assert [set(map(tuple, p.tolist())) for p in km.pairs] == ref
