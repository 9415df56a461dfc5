"""Ball query in PointAcc's ranking formulation.

PointAcc (arXiv:2110.07600), Mapping Unit; hw.md Sec. 3.2: a distance array, a mask dist < r^2, then the
first k by index (a rank by index among the masked points). Semantics of PointNet++'s `ball_query` CUDA kernel: the
test is strict (d^2 < r^2), neighbours come in ascending index order, and a neighbourhood with fewer than k points is
padded with its first found index. PointNet++ leaves an empty neighbourhood as zeros; we mark it explicitly instead:
count 0 and every index -1, so a caller cannot mistake it for point 0.
"""

from __future__ import annotations

import numpy as np

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc._checks import as_points, positive_float, positive_int
from accel_sims.pointacc.distance import query_blocks, squared_distances
from accel_sims.pointacc.ranking import RankingStats


def ball_query(queries: np.ndarray, points: np.ndarray, radius: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to k points within `radius` of each query: (indices [M, k] int64, counts [M] int64).

    counts[i] = min(k, number of points with squared distance < radius^2). Rows with 0 < count < k repeat their first
    index after the found ones; rows with count 0 are all -1.
    """
    pts = as_points("points", points)
    qs = as_points("queries", queries, dims=pts.shape[1])
    r2 = positive_float("radius", radius) ** 2
    k = positive_int("k", k)
    n = pts.shape[0]
    if k > n:
        raise AccelSimsError(f"k must be <= the number of points ({n}); got {k}")
    m = qs.shape[0]
    idx = np.full((m, k), -1, dtype=np.int64)
    counts = np.empty(m, dtype=np.int64)
    for rows in query_blocks(m, n):
        inside = squared_distances(qs[rows], pts) < r2
        rank = np.cumsum(inside, axis=1)  # rank by index among the points inside the ball
        keep = inside & (rank <= k)
        r, c = np.nonzero(keep)
        block = np.full((rows.stop - rows.start, k), -1, dtype=np.int64)
        block[r, rank[r, c] - 1] = c
        cnt = np.minimum(rank[:, -1], k)
        # Pad short neighbourhoods with the first found index (PointNet++); empty rows stay -1.
        pad = (np.arange(k)[None, :] >= cnt[:, None]) & (cnt[:, None] > 0)
        block = np.where(pad, block[:, :1], block)
        idx[rows] = block
        counts[rows] = cnt
    return idx, counts


def ball_query_stats(n_queries: int, n_points: int, k: int, dims: int = 3) -> RankingStats:
    """Mapping-unit work of ball query: M x N distances and radius compares; no sort (index order is stream order)."""
    m = positive_int("n_queries", n_queries)
    n = positive_int("n_points", n_points)
    k = positive_int("k", k)
    return RankingStats(
        op="ball_query",
        distance_computations=m * n,
        coordinate_dims=positive_int("dims", dims),
        reduction_elements=m * n,
        outputs=m * k,
    )


def ball_query_reference(
    queries: np.ndarray, points: np.ndarray, radius: float, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query Python scan in index order, as the PointNet++ kernel does, for tests."""
    pts = as_points("points", points)
    qs = as_points("queries", queries, dims=pts.shape[1])
    r2 = float(radius) ** 2
    idx = np.full((qs.shape[0], k), -1, dtype=np.int64)
    counts = np.zeros(qs.shape[0], dtype=np.int64)
    for i in range(qs.shape[0]):
        row = squared_distances(qs[i : i + 1], pts)[0]
        found: list[int] = []
        for j in range(pts.shape[0]):
            if row[j] < r2:
                found.append(j)
                if len(found) == k:
                    break
        counts[i] = len(found)
        if found:
            idx[i] = found + [found[0]] * (k - len(found))
    return idx, counts
