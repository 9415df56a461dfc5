"""k-nearest neighbours in PointAcc's ranking formulation.

PointAcc (arXiv:2110.07600), Mapping Unit; hw.md Sec. 3.2: kNN is a distance array followed by top-k by
sorting. We rank each query's N distances with a partial sort: select the k smallest by the k-th order statistic
(ties at the threshold resolved to the lowest indices), then sort those k by (distance, index). The result equals
a full sort of (distance, index) pairs cut at k; `knn_stats` charges the full sort the hardware's sorter performs.
"""

from __future__ import annotations

import numpy as np

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc._checks import as_points, positive_int
from accel_sims.pointacc.distance import query_blocks, squared_distances
from accel_sims.pointacc.ranking import RankingStats, sort_comparisons


def knn(queries: np.ndarray, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest points of each query: (indices [M, k] int64, squared distances [M, k] float64), each row sorted
    by distance, ties by index. Queries that are also points find themselves first (distance 0)."""
    pts = as_points("points", points)
    qs = as_points("queries", queries, dims=pts.shape[1])
    k = positive_int("k", k)
    n = pts.shape[0]
    if k > n:
        raise AccelSimsError(f"k must be <= the number of points ({n}); got {k}")
    m = qs.shape[0]
    idx = np.empty((m, k), dtype=np.int64)
    dist = np.empty((m, k), dtype=np.float64)
    for rows in query_blocks(m, n):
        d = squared_distances(qs[rows], pts)
        kth = np.partition(d, k - 1, axis=1)[:, k - 1 : k]
        below = d < kth
        at = d == kth
        # Take every point strictly below the k-th distance, then the lowest-index points at it until k are chosen.
        need = k - below.sum(axis=1, keepdims=True)
        take = below | at
        tied = np.flatnonzero(at.sum(axis=1) > need[:, 0])  # rows with more points at the k-th distance than places
        if tied.size:
            take[tied] = below[tied] | (at[tied] & (np.cumsum(at[tied], axis=1) <= need[tied]))
        cols = np.nonzero(take)[1].reshape(-1, k)  # row-major nonzero: ascending index within each row
        sel = np.take_along_axis(d, cols, axis=1)
        order = np.argsort(sel, axis=1, kind="stable")  # stable on index-ordered input: ties by index
        idx[rows] = np.take_along_axis(cols, order, axis=1)
        dist[rows] = np.take_along_axis(sel, order, axis=1)
    return idx, dist


def knn_stats(n_queries: int, n_points: int, k: int, dims: int = 3) -> RankingStats:
    """Mapping-unit work of kNN: M x N distances and one sort of N distances per query, k outputs per query."""
    m = positive_int("n_queries", n_queries)
    n = positive_int("n_points", n_points)
    k = positive_int("k", k)
    return RankingStats(
        op="knn",
        distance_computations=m * n,
        coordinate_dims=positive_int("dims", dims),
        sort_calls=m,
        sorted_elements=m * n,
        max_sort_length=n,
        sort_comparisons=m * sort_comparisons(n),
        outputs=m * k,
    )


def knn_reference(queries: np.ndarray, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force for tests: Python's sort of (distance, index) tuples per query."""
    pts = as_points("points", points)
    qs = as_points("queries", queries, dims=pts.shape[1])
    idx = np.empty((qs.shape[0], k), dtype=np.int64)
    dist = np.empty((qs.shape[0], k), dtype=np.float64)
    for i in range(qs.shape[0]):
        row = squared_distances(qs[i : i + 1], pts)[0]
        ranked = sorted((float(row[j]), j) for j in range(pts.shape[0]))[:k]
        idx[i] = [j for _, j in ranked]
        dist[i] = [dd for dd, _ in ranked]
    return idx, dist
