"""Sparse-convolution kernel maps in PointAcc's ranking formulation.

PointAcc (arXiv:2110.07600), Mapping Unit; hw.md Sec. 3.2: for each kernel offset delta, shift the sorted
input coordinates by -delta and merge the shifted stream with the sorted output coordinates; equal keys in the merged
stream emit (input index, output index) for that offset. PointAcc's merge-sorter replaces the GPU hash table of
torchsparse, which is the functional oracle: pair (i, j) under offset delta means in_coords[i] == out_coords[j] +
delta. Coordinates are packed into int64 keys with guard space (`ranking.pack_keys`), so shifting a coordinate is
adding a constant to its key and the shifted input list stays sorted: each offset costs one merge, no re-sort.

Offsets follow torchsparse's `get_kernel_offsets`: per column arange(-k // 2 + 1, k // 2 + 1) * tensor_stride *
dilation (odd k: -(k-1)/2..(k-1)/2; even k: 0..k-1), ordered with column 0 fastest when the kernel volume is odd and
the last column fastest when it is even (torchsparse's MinkowskiEngine-compatible weight layout).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc._checks import as_coords, positive_int
from accel_sims.pointacc.ranking import RankingStats, merge_cost, merge_equal, pack_keys, sort_comparisons
from accel_sims.pointacc.voxel import voxel_downsample


@dataclass(frozen=True, eq=False)
class KernelMap:
    """Input/output index pairs of a sparse convolution, one [P_k, 2] int64 array (in_idx, out_idx) per offset.

    Pairs of each offset come in ascending lexicographic order of the output coordinate (merge order).
    """

    offsets: np.ndarray  # [K, D] int64
    pairs: tuple[np.ndarray, ...]
    out_coords: np.ndarray  # [M, D] int64: the output coordinates the pairs index
    n_in: int

    @property
    def sizes(self) -> np.ndarray:
        """Pairs per offset [K] int64."""
        return np.asarray([p.shape[0] for p in self.pairs], dtype=np.int64)

    @property
    def total(self) -> int:
        """Pairs over all offsets (one multiply-accumulate row each in the matrix unit)."""
        return int(sum(p.shape[0] for p in self.pairs))

    @property
    def stats(self) -> RankingStats:
        """Mapping-unit work of building this map."""
        return kernel_map_stats(
            self.n_in, self.out_coords.shape[0], self.offsets.shape[0], self.total, dims=self.offsets.shape[1]
        )


def kernel_offsets(kernel_size: int, dims: int = 3, dilation: int = 1, tensor_stride: int = 1) -> np.ndarray:
    """Kernel offsets [kernel_size**dims, dims] int64 in torchsparse's order (module docstring)."""
    ks = positive_int("kernel_size", kernel_size)
    dims = positive_int("dims", dims)
    step = positive_int("dilation", dilation) * positive_int("tensor_stride", tensor_stride)
    axis = np.arange(-ks // 2 + 1, ks // 2 + 1, dtype=np.int64) * step
    grid = np.asarray(list(itertools.product(axis, repeat=dims)), dtype=np.int64).reshape(-1, dims)
    # product() varies the last column fastest; odd volumes want column 0 fastest, so reverse the columns.
    return grid[:, ::-1].copy() if (ks**dims) % 2 == 1 else grid


def kernel_map(
    in_coords: np.ndarray,
    out_coords: np.ndarray | None,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    *,
    tensor_stride: int = 1,
) -> KernelMap:
    """Kernel map of a sparse convolution from in_coords [N, D] to out_coords [M, D] (integer, out_coords unique).

    Offsets are kernel_offsets(kernel_size, D, dilation, tensor_stride), tensor_stride being the spacing of the input
    coordinates (1 at full resolution, s after a stride-s downsampling). `stride` is the convolution's stride: with
    out_coords None the outputs are in_coords (stride 1) or voxel_downsample(in_coords, stride * tensor_stride);
    given out_coords must be multiples of stride * tensor_stride.
    """
    cin = as_coords("in_coords", in_coords)
    stride = positive_int("stride", stride)
    tensor_stride = positive_int("tensor_stride", tensor_stride)
    step = stride * tensor_stride
    if out_coords is None:
        cout = cin if stride == 1 else voxel_downsample(cin, step)[0]
    else:
        cout = as_coords("out_coords", out_coords, dims=cin.shape[1])
        if step > 1 and np.any(cout % step):
            raise AccelSimsError(f"out_coords must be multiples of stride * tensor_stride = {step}")
    offsets = kernel_offsets(kernel_size, cin.shape[1], dilation, tensor_stride)
    guard = int(np.abs(offsets).max())
    (kin, kout), weights = pack_keys([cin, cout], guard=guard)
    in_order = np.argsort(kin, kind="stable")
    out_order = np.argsort(kout, kind="stable")
    kin_sorted, kout_sorted = kin[in_order], kout[out_order]
    if kout_sorted.shape[0] > 1 and np.any(kout_sorted[1:] == kout_sorted[:-1]):
        what = "in_coords (the outputs when out_coords is None and stride is 1)" if out_coords is None else "out_coords"
        raise AccelSimsError(f"{what} must be unique; deduplicate them with voxel_downsample(coords, 1)")
    pairs = []
    # One merge per offset (K = kernel_size**D, e.g. 27): shifting keys by a constant keeps them sorted.
    for delta in offsets:
        ia, ib = merge_equal(kin_sorted - int(delta @ weights), kout_sorted)
        pairs.append(np.stack([in_order[ia], out_order[ib]], axis=1).astype(np.int64, copy=False))
    return KernelMap(offsets=offsets, pairs=tuple(pairs), out_coords=cout, n_in=cin.shape[0])


def kernel_map_stats(n_in: int, n_out: int, kernel_volume: int, n_pairs: int = 0, dims: int = 3) -> RankingStats:
    """Mapping-unit work of a kernel map: sort inputs and outputs once, then one merge of N + M keys per offset."""
    n = positive_int("n_in", n_in)
    m = positive_int("n_out", n_out)
    k = positive_int("kernel_volume", kernel_volume)
    return RankingStats(
        op="kernel_map",
        coordinate_dims=positive_int("dims", dims),
        sort_calls=2,
        sorted_elements=n + m,
        max_sort_length=max(n, m),
        sort_comparisons=sort_comparisons(n) + sort_comparisons(m),
        merge_calls=k,
        merged_elements=k * (n + m),
        merge_comparisons=k * merge_cost(n, m),
        outputs=n_pairs,
    )


def kernel_map_reference(
    in_coords: np.ndarray, out_coords: np.ndarray, kernel_size: int = 3, dilation: int = 1, tensor_stride: int = 1
) -> list[set[tuple[int, int]]]:
    """Hash-based reference for tests (torchsparse's method): a dict from input coordinate to its indices, queried
    with out + delta for every output and offset. Returns one set of (in_idx, out_idx) per offset."""
    cin = as_coords("in_coords", in_coords)
    table: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(cin.tolist()):
        table.setdefault(tuple(row), []).append(i)
    result = []
    for delta in kernel_offsets(kernel_size, cin.shape[1], dilation, tensor_stride).tolist():
        found = set()
        for j, row in enumerate(np.asarray(out_coords).tolist()):
            for i in table.get(tuple(a + b for a, b in zip(row, delta, strict=True)), []):
                found.add((i, j))
        result.append(found)
    return result
