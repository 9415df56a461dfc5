"""Farthest point sampling (FPS) in PointAcc's ranking formulation.

PointAcc (arXiv:2110.07600), Mapping Unit; hw.md Sec. 3.2: FPS is iterative. Each of the n_samples - 1
iterations after the start point is one distance pass from the last chosen point, an element-wise min-update of
`mindist`, and an argmax reduction over it (a max-ranking of N keys). Same semantics as PointNet++'s
`furthest_point_sample` CUDA kernel: the first sample is `start`, ties go to the lowest index, and when the cloud has
fewer distinct points than n_samples the remaining samples repeat the lowest-index point at distance 0.
"""

from __future__ import annotations

import numpy as np

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc._checks import as_points, positive_int
from accel_sims.pointacc.distance import squared_distances
from accel_sims.pointacc.ranking import RankingStats


def farthest_point_sampling(points: np.ndarray, n_samples: int, start: int = 0) -> np.ndarray:
    """Indices [n_samples] (int64) of the farthest-point samples of points [N, D], beginning at index `start`."""
    pts = as_points("points", points)
    n_samples = positive_int("n_samples", n_samples)
    n = pts.shape[0]
    if n_samples > n:
        raise AccelSimsError(f"n_samples must be <= the number of points ({n}); got {n_samples}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= int(start) < n:
        raise AccelSimsError(f"start must be an integer index in [0, {n}); got {start!r}")
    out = np.empty(n_samples, dtype=np.int64)
    out[0] = int(start)
    mindist = np.full(n, np.inf)
    last = int(start)
    # One loop iteration per sample (the hardware's iteration); each is vectorized over all N points.
    for i in range(1, n_samples):
        np.minimum(mindist, squared_distances(pts[last : last + 1], pts)[0], out=mindist)
        last = int(np.argmax(mindist))  # first maximum: ties go to the lowest index
        out[i] = last
    return out


def fps_stats(n_points: int, n_samples: int, dims: int = 3) -> RankingStats:
    """Mapping-unit work of FPS: n_samples - 1 passes of N distances, N min-updates and an N-way argmax."""
    n_points = positive_int("n_points", n_points)
    n_samples = positive_int("n_samples", n_samples)
    passes = n_samples - 1
    return RankingStats(
        op="fps",
        distance_computations=passes * n_points,
        coordinate_dims=positive_int("dims", dims),
        reduction_elements=2 * passes * n_points,
        outputs=n_samples,
    )


def farthest_point_sampling_reference(points: np.ndarray, n_samples: int, start: int = 0) -> np.ndarray:
    """Brute-force FPS for tests: every iteration recomputes each point's distance to every chosen sample and picks
    the point whose nearest sample is farthest (lowest index on ties). O(n_samples^2 * N)."""
    pts = as_points("points", points)
    chosen = [int(start)]
    for _ in range(1, n_samples):
        nearest = squared_distances(pts[np.asarray(chosen)], pts).min(axis=0)
        best = 0
        for j in range(1, pts.shape[0]):
            if nearest[j] > nearest[best]:
                best = j
        chosen.append(best)
    return np.asarray(chosen, dtype=np.int64)
