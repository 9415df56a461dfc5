"""The ranking kernel of PointAcc's mapping unit: sort, merge and operation counters.

PointAcc (arXiv:2110.07600), Mapping Unit: every mapping operation (kernel map, kNN, ball query, FPS,
output-coordinate generation) is cast as ranking: sort keys, merge sorted streams, compare neighbours, reduce. This
module holds the shared pieces:

- `pack_keys`: one int64 key per integer coordinate row that preserves lexicographic order (first column most
  significant), with guard space so that shifting a coordinate by a kernel offset is adding a constant to its key:
  the shifted sorted input list stays sorted, which is what lets the hardware merge it with the output list.
- `merge_equal`: merge two sorted key streams and emit a pair wherever equal keys meet.
- `RankingStats`: how much work an operation hands the mapping unit (elements sorted, merge lengths, comparisons,
  distance computations, reductions), computed from sizes alone so a simulator can charge it without running the op.
- `bitonic_sort_cost` / `merge_cost`: the comparator counts of a bitonic sorting network and of a linear merge.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from accel_sims.errors import AccelSimsError


class RankingStats(BaseModel):
    """Work one mapping operation hands the mapping unit. All counts are totals over the operation.

    Sorts are counted as calls and elements; `sort_comparisons` uses the comparator count of a merge sort
    (n * ceil(log2 n) per sort of n), and `bitonic_sort_cost` gives the network's stages if the simulator models a
    bitonic sorter instead. `max_sort_length` is the longest single sort, which a fixed-width sorter must tile.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: str = Field(description="Operation name: fps, knn, ball_query, voxel_downsample, voxelize, kernel_map.")
    distance_computations: int = Field(default=0, ge=0, description="Squared Euclidean distances evaluated.")
    coordinate_dims: int = Field(default=3, ge=1, description="D of each distance (D subtractions, D multiplies).")
    sort_calls: int = Field(default=0, ge=0, description="Independent sorts.")
    sorted_elements: int = Field(default=0, ge=0, description="Sum of the lengths of all sorts.")
    max_sort_length: int = Field(default=0, ge=0, description="Length of the longest single sort.")
    sort_comparisons: int = Field(default=0, ge=0, description="Merge-sort comparisons: sum of n*ceil(log2 n).")
    merge_calls: int = Field(default=0, ge=0, description="Two-way merges of sorted streams.")
    merged_elements: int = Field(default=0, ge=0, description="Sum of len(a) + len(b) over merges.")
    merge_comparisons: int = Field(default=0, ge=0, description="Linear-merge comparisons: len(a) + len(b) - 1.")
    reduction_elements: int = Field(
        default=0, ge=0, description="Elements through a compare-reduce (FPS min-update and argmax, radius masks)."
    )
    outputs: int = Field(default=0, ge=0, description="Items produced (samples, neighbours, coordinates, pairs).")

    def __add__(self, other: RankingStats) -> RankingStats:
        """Totals of two operations (op names joined with '+')."""
        if not isinstance(other, RankingStats):
            return NotImplemented
        fields = {
            name: getattr(self, name) + getattr(other, name)
            for name in type(self).model_fields
            if name not in ("op", "coordinate_dims", "max_sort_length")
        }
        return RankingStats(
            op=f"{self.op}+{other.op}",
            coordinate_dims=max(self.coordinate_dims, other.coordinate_dims),
            max_sort_length=max(self.max_sort_length, other.max_sort_length),
            **fields,
        )


def sort_comparisons(n: int) -> int:
    """Comparisons of a merge sort of n keys: n * ceil(log2 n) (0 for n <= 1)."""
    return 0 if n <= 1 else n * math.ceil(math.log2(n))


def bitonic_sort_cost(n: int) -> tuple[int, int]:
    """(stages, compare-swaps) of a bitonic sorting network on n keys padded to the next power of two m:
    log2 m * (log2 m + 1) / 2 stages of m / 2 compare-swaps (Batcher 1968; hw.md Sec. 3.2)."""
    if n < 0:
        raise AccelSimsError(f"n must be >= 0; got {n}")
    if n <= 1:
        return 0, 0
    lg = math.ceil(math.log2(n))
    stages = lg * (lg + 1) // 2
    return stages, stages * (1 << lg) // 2


def merge_cost(len_a: int, len_b: int) -> int:
    """Comparisons of a linear two-way merge: len_a + len_b - 1 (0 when either side is empty)."""
    if len_a < 0 or len_b < 0:
        raise AccelSimsError(f"merge lengths must be >= 0; got {len_a}, {len_b}")
    return 0 if len_a == 0 or len_b == 0 else len_a + len_b - 1


def pack_keys(arrays: list[np.ndarray], guard: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Pack integer coordinate rows [N, D] of every array into int64 keys ordered lexicographically (column 0 most
    significant), sharing one encoding across the arrays. Returns (keys per array, weights [D]).

    Each column c is mapped to c - min + guard in a radix of (max - min + 1 + 2 * guard), so any coordinate within
    `guard` of the joint range packs without carrying into the next column: key(c + delta) = key(c) + delta @ weights.
    Raises AccelSimsError when the keys would not fit in 63 bits (coordinates spanning too wide a range).
    """
    if not arrays:
        raise AccelSimsError("pack_keys needs at least one array")
    dims = arrays[0].shape[1]
    stacked_min = np.min([a.min(axis=0) for a in arrays], axis=0).astype(np.int64)
    stacked_max = np.max([a.max(axis=0) for a in arrays], axis=0).astype(np.int64)
    radix = [int(hi) - int(lo) + 1 + 2 * guard for lo, hi in zip(stacked_min, stacked_max, strict=True)]
    total = 1
    for r in radix:
        total *= r
    if total >= 2**62:
        raise AccelSimsError(
            f"coordinates span too wide a range to pack into 63-bit keys (ranges {radix}); re-centre or voxelize them"
        )
    weights = np.ones(dims, dtype=np.int64)
    for d in range(dims - 2, -1, -1):
        weights[d] = weights[d + 1] * radix[d + 1]
    base = stacked_min - guard
    # Column loop (D is 2-4): the sum of (c - base) * weight never overflows because total < 2**62.
    keys = []
    for a in arrays:
        key = np.zeros(a.shape[0], dtype=np.int64)
        for d in range(dims):
            key += (a[:, d] - base[d]) * weights[d]
        keys.append(key)
    return keys, weights


def merge_equal(a_sorted: np.ndarray, b_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge two ascending int64 key streams; return positions (ia, ib) with a[ia] == b[ib].

    `b_sorted` must hold unique keys; `a_sorted` may repeat keys (each repeat pairs with the one equal b). The merge is
    a stable sort of the concatenation with b first, so on equal keys the b element precedes its a elements, and an a
    element matches the nearest b before it when their keys agree (numpy's stable sort detects the two runs and
    merges them in linear time). Pairs come out in ascending key order.
    """
    nb = b_sorted.shape[0]
    keys = np.concatenate([b_sorted, a_sorted])
    order = np.argsort(keys, kind="stable")
    merged = keys[order]
    is_b = order < nb
    last_b = np.maximum.accumulate(np.where(is_b, np.arange(order.shape[0]), -1))
    pos = np.flatnonzero(~is_b)
    prev = last_b[pos]
    hit = prev >= 0
    hit[hit] = merged[prev[hit]] == merged[pos[hit]]
    return order[pos[hit]] - nb, order[prev[hit]]
