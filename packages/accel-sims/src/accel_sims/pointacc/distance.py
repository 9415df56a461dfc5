"""Squared Euclidean distances, the distance stage in front of PointAcc's ranking kernel (arXiv:2110.07600, Mapping
unit: kNN, ball query and FPS each start from a distance array).

Every op computes distances the same way, sum over columns of (q - p)^2 accumulated column by column in float64, so
the ops and their references agree bit for bit and ties are decided by index rather than by rounding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Query rows per block: keeps each [block, N] array near 2 MB, so 100K-point clouds fit in memory and the passes over
# a block stay in cache (measured on the 2-core bench machine: 4M-element blocks ran kNN 25% slower).
_BLOCK_ELEMENTS = 262_144


def squared_distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[M, N] squared distances between float64 rows of queries [M, D] and points [N, D]."""
    acc = np.subtract.outer(queries[:, 0], points[:, 0])
    np.multiply(acc, acc, out=acc)
    diff = np.empty_like(acc)  # in-place column passes: no fresh [M, N] temporaries per operation
    for d in range(1, queries.shape[1]):
        np.subtract.outer(queries[:, d], points[:, d], out=diff)
        np.multiply(diff, diff, out=diff)
        acc += diff
    return acc


def query_blocks(n_queries: int, n_points: int) -> Iterator[slice]:
    """Slices of query rows so that each [rows, n_points] block stays near _BLOCK_ELEMENTS elements."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, n_points))
    for start in range(0, n_queries, rows):
        yield slice(start, min(n_queries, start + rows))
