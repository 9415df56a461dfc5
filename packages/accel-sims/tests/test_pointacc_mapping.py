"""PointAcc mapping operations (arXiv:2110.07600, mapping unit): each ranking formulation equals its brute-force or
hash-based reference on random clouds, duplicates, empty neighbourhoods, k == N, single points, 2-D and 3-D."""

from __future__ import annotations

import numpy as np
import pytest

from accel_sims.pointacc.ball_query import ball_query_reference
from accel_sims.pointacc.fps import farthest_point_sampling_reference
from accel_sims.pointacc.kernel_map import kernel_map_reference
from accel_sims.pointacc.knn import knn_reference
from accel_sims.pointacc.mapping import (
    ball_query,
    farthest_point_sampling,
    kernel_map,
    kernel_offsets,
    knn,
    voxel_downsample,
    voxelize,
)
from accel_sims.pointacc.voxel import voxel_downsample_reference


def _cloud(n: int, dims: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, dims))


def _with_duplicates(n: int, dims: int = 3, seed: int = 0) -> np.ndarray:
    base = _cloud(n // 2, dims, seed)
    return np.concatenate([base, base[::2], base[:1], base[:1]])


def _as_sets(pairs: tuple[np.ndarray, ...]) -> list[set[tuple[int, int]]]:
    return [set(map(tuple, p.tolist())) for p in pairs]


# ------------------------------------------------------------------------------------------------ FPS


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("start", [0, 17])
def test_fps_equals_reference(dims: int, start: int) -> None:
    pts = _cloud(200, dims, seed=dims)
    np.testing.assert_array_equal(
        farthest_point_sampling(pts, 40, start), farthest_point_sampling_reference(pts, 40, start)
    )


def test_fps_with_duplicates_repeats_lowest_index_once_exhausted() -> None:
    pts = np.array([[0.0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 2, 0]])
    got = farthest_point_sampling(pts, 5, start=1)
    np.testing.assert_array_equal(got, farthest_point_sampling_reference(pts, 5, start=1))
    # 1, then (0,2,0) at 5, then (0,0,0) at index 0; then every distance is 0 and argmax takes index 0.
    np.testing.assert_array_equal(got, [1, 4, 0, 0, 0])


def test_fps_all_points_and_single_point() -> None:
    pts = _cloud(30, seed=3)
    got = farthest_point_sampling(pts, 30)
    assert sorted(got.tolist()) == list(range(30))
    np.testing.assert_array_equal(farthest_point_sampling(pts[:1], 1), [0])
    assert farthest_point_sampling(pts, 5).dtype == np.int64


def test_fps_min_distances_do_not_increase() -> None:
    pts = _cloud(300, seed=4)
    idx = farthest_point_sampling(pts, 50)
    gaps = [((pts[idx[:i]] - pts[idx[i]]) ** 2).sum(axis=1).min() for i in range(1, 50)]
    assert all(a >= b for a, b in zip(gaps, gaps[1:], strict=False))


def test_fps_accepts_float32_and_integer_points() -> None:
    pts = _cloud(64, seed=5)
    np.testing.assert_array_equal(
        farthest_point_sampling(pts.astype(np.float32), 8),
        farthest_point_sampling(pts.astype(np.float32).astype(np.float64), 8),
    )
    assert farthest_point_sampling(np.arange(12).reshape(4, 3), 2).tolist() == [0, 3]


# ------------------------------------------------------------------------------------------------ kNN


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("k", [1, 7, 64])
def test_knn_equals_reference(dims: int, k: int) -> None:
    pts, qs = _cloud(64, dims, seed=1), _cloud(25, dims, seed=2)
    idx, dist = knn(qs, pts, k)
    ridx, rdist = knn_reference(qs, pts, k)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(dist, rdist)
    assert idx.shape == (25, k) and idx.dtype == np.int64 and dist.dtype == np.float64


def test_knn_ties_break_by_index() -> None:
    pts = _with_duplicates(60, seed=6)
    idx, dist = knn(pts, pts, 5)
    ridx, rdist = knn_reference(pts, pts, 5)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(dist, rdist)
    # Integer grid: many exactly equal distances straddle the k-th place.
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), axis=-1).reshape(-1, 2)
    for k in (2, 5, 9, 16):
        np.testing.assert_array_equal(knn(grid, grid, k)[0], knn_reference(grid, grid, k)[0])


def test_knn_self_query_first_and_single_point() -> None:
    pts = _cloud(50, seed=7)
    idx, dist = knn(pts, pts, 3)
    np.testing.assert_array_equal(idx[:, 0], np.arange(50))
    assert (dist[:, 0] == 0).all() and (np.diff(dist, axis=1) >= 0).all()
    idx, dist = knn(np.zeros((2, 3)), np.ones((1, 3)), 1)
    assert idx.tolist() == [[0], [0]] and dist.tolist() == [[3.0], [3.0]]


def test_knn_blocks_give_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import accel_sims.pointacc.distance as distance

    pts, qs = _cloud(100, seed=8), _cloud(37, seed=9)
    whole = knn(qs, pts, 6)
    monkeypatch.setattr(distance, "_BLOCK_ELEMENTS", 250)  # 2 query rows per block
    blocked = knn(qs, pts, 6)
    np.testing.assert_array_equal(whole[0], blocked[0])


# ------------------------------------------------------------------------------------------------ ball query


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("radius", "k"), [(0.05, 4), (0.2, 8), (0.5, 16), (2.0, 100)])
def test_ball_query_equals_reference(dims: int, radius: float, k: int) -> None:
    pts, qs = _cloud(100, dims, seed=10), _cloud(30, dims, seed=11)
    idx, cnt = ball_query(qs, pts, radius, k)
    ridx, rcnt = ball_query_reference(qs, pts, radius, k)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(cnt, rcnt)
    assert idx.dtype == np.int64 and cnt.dtype == np.int64


def test_ball_query_empty_neighbourhood_and_padding() -> None:
    pts = np.array([[0.0, 0, 0], [0.1, 0, 0], [5, 5, 5], [0.05, 0, 0]])
    qs = np.array([[0.0, 0, 0], [10, 10, 10], [5, 5, 5.1]])
    idx, cnt = ball_query(qs, pts, 0.5, 4)
    assert cnt.tolist() == [3, 0, 1]
    assert idx.tolist() == [[0, 1, 3, 0], [-1, -1, -1, -1], [2, 2, 2, 2]]


def test_ball_query_radius_is_strict_and_k_caps_count() -> None:
    pts = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0.5, 0]])
    idx, cnt = ball_query(np.zeros((1, 3)), pts, 1.0, 3)
    assert cnt.tolist() == [2] and idx.tolist() == [[1, 2, 1]]  # distance exactly 1 is outside, as in PointNet++
    idx, cnt = ball_query(np.zeros((1, 3)), pts, 1.5, 2)
    assert cnt.tolist() == [2] and idx.tolist() == [[0, 1]]


def test_ball_query_duplicates_and_k_equals_n() -> None:
    pts = _with_duplicates(40, seed=12)
    idx, cnt = ball_query(pts, pts, 0.3, pts.shape[0])
    ridx, rcnt = ball_query_reference(pts, pts, 0.3, pts.shape[0])
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(cnt, rcnt)
    assert (cnt >= 1).all()


# ------------------------------------------------------------------------------------------------ voxels


@pytest.mark.parametrize("dims", [2, 3, 4])
@pytest.mark.parametrize("stride", [1, 2, 3, 8])
def test_voxel_downsample_equals_hash_reference(dims: int, stride: int) -> None:
    coords = np.random.default_rng(dims * 10 + stride).integers(-20, 20, size=(300, dims))
    out, inv = voxel_downsample(coords, stride)
    rout, rinv = voxel_downsample_reference(coords, stride)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(inv, rinv)
    np.testing.assert_array_equal(out[inv], np.floor_divide(coords, stride) * stride)
    assert len({tuple(r) for r in out.tolist()}) == out.shape[0]


def test_voxel_downsample_floors_negative_coordinates() -> None:
    out, inv = voxel_downsample(np.array([[-1, 0], [1, 0], [-2, 1], [0, 0], [0, 0]]), 2)
    assert out.tolist() == [[-2, 0], [0, 0]]  # torch.floor(-1 / 2) * 2 == -2; lexicographic order
    assert inv.tolist() == [0, 1, 0, 1, 1]


def test_voxel_downsample_single_and_all_duplicates() -> None:
    out, inv = voxel_downsample(np.array([[3, 4, 5]]), 4)
    assert out.tolist() == [[0, 4, 4]] and inv.tolist() == [0]
    out, inv = voxel_downsample(np.full((6, 3), 7, dtype=np.int32), 1)
    assert out.tolist() == [[7, 7, 7]] and inv.tolist() == [0] * 6 and out.dtype == np.int64


def test_voxelize_matches_floor_and_dict() -> None:
    pts = np.random.default_rng(13).normal(size=(500, 3))
    coords, inv = voxelize(pts, 0.25)
    cells = np.floor(pts / 0.25).astype(np.int64)
    np.testing.assert_array_equal(coords[inv], cells)
    assert sorted({tuple(r) for r in cells.tolist()}) == [tuple(r) for r in coords.tolist()]


# ------------------------------------------------------------------------------------------------ kernel maps


def _voxel_cloud(n: int, dims: int = 3, span: int = 8, seed: int = 0) -> np.ndarray:
    raw = np.random.default_rng(seed).integers(-span, span, size=(n, dims))
    return voxel_downsample(raw, 1)[0]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
def test_kernel_map_submanifold_equals_hash(dims: int, kernel_size: int) -> None:
    coords = _voxel_cloud(300, dims, seed=dims + kernel_size)
    km = kernel_map(coords, coords, kernel_size)
    assert _as_sets(km.pairs) == kernel_map_reference(coords, coords, kernel_size)
    assert km.offsets.shape == (kernel_size**dims, dims)
    assert km.total == int(km.sizes.sum()) and len(km.pairs) == kernel_size**dims


def test_kernel_map_centre_offset_is_identity() -> None:
    coords = _voxel_cloud(200, seed=1)
    km = kernel_map(coords, None, 3)
    centre = np.flatnonzero((km.offsets == 0).all(axis=1))[0]
    np.testing.assert_array_equal(np.sort(km.pairs[centre], axis=0), np.stack([np.arange(coords.shape[0])] * 2, axis=1))
    # Symmetry of a submanifold map: offset d maps (i, j) iff offset -d maps (j, i).
    for a, delta in enumerate(km.offsets):
        b = int(np.flatnonzero((km.offsets == -delta).all(axis=1))[0])
        assert _as_sets((km.pairs[a],))[0] == {(j, i) for i, j in km.pairs[b].tolist()}


@pytest.mark.parametrize(
    ("kernel_size", "stride", "tensor_stride", "dilation"), [(2, 2, 1, 1), (3, 2, 1, 1), (3, 2, 2, 1), (3, 1, 1, 2)]
)
def test_kernel_map_strided_equals_hash(kernel_size: int, stride: int, tensor_stride: int, dilation: int) -> None:
    coords = _voxel_cloud(400, seed=kernel_size * stride) * tensor_stride
    km = kernel_map(coords, None, kernel_size, stride, dilation, tensor_stride=tensor_stride)
    expected_out = coords if stride == 1 else voxel_downsample(coords, stride * tensor_stride)[0]
    np.testing.assert_array_equal(km.out_coords, expected_out)
    ref = kernel_map_reference(coords, expected_out, kernel_size, dilation, tensor_stride)
    assert _as_sets(km.pairs) == ref
    if (kernel_size, stride) == (2, 2):
        # A 2x2x2 stride-2 kernel partitions the inputs: each input lands in exactly one (offset, output) pair.
        assert km.total == coords.shape[0]


def test_kernel_map_duplicate_inputs_pair_each_copy() -> None:
    coords = _voxel_cloud(100, seed=2)
    doubled = np.concatenate([coords, coords[:10]])
    km = kernel_map(doubled, coords, 3)
    assert _as_sets(km.pairs) == kernel_map_reference(doubled, coords, 3)


def test_kernel_map_single_coordinate_and_pair_dtype() -> None:
    km = kernel_map(np.array([[4, 4, 4]]), np.array([[4, 4, 4]]), 3)
    assert km.sizes.tolist() == [0] * 13 + [1] + [0] * 13
    assert km.pairs[13].tolist() == [[0, 0]] and km.pairs[0].dtype == np.int64 and km.pairs[0].shape == (0, 2)


def test_kernel_offsets_follow_torchsparse_order() -> None:
    odd = kernel_offsets(3)
    assert odd[:4].tolist() == [[-1, -1, -1], [0, -1, -1], [1, -1, -1], [-1, 0, -1]]  # x fastest (odd volume)
    even = kernel_offsets(2)
    assert even.tolist() == [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]  # z fastest (even volume)
    assert kernel_offsets(3, dims=3, dilation=2, tensor_stride=4)[0].tolist() == [-8, -8, -8]
    assert kernel_offsets(3, dims=2).shape == (9, 2)


def test_kernel_map_wide_coordinates_and_realistic_cloud() -> None:
    from accel_sims.pointacc.points import lidar_scan

    coords, _ = voxelize(lidar_scan(3000, seed=1), 0.1)
    coords = coords + np.array([10**6, -(10**6), 0])
    km = kernel_map(coords, None, 3)
    assert _as_sets(km.pairs) == kernel_map_reference(coords, coords, 3)
    assert km.sizes[13] == coords.shape[0]
