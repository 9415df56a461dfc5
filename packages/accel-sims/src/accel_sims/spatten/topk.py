"""The top-k engine: quick-select with parallel comparators and a zero eliminator, as a cycle model.

SpAtten (arXiv:2012.09852), Sec. 4.2 "Top-k Engine". Each round streams the n candidates through P comparators
against a pivot (ceil(n / P) cycles); a zero eliminator compacts the survivors on one side into a FIFO; the pipeline
costs a fixed overhead per round (comparator, zero eliminator and FIFO latency: 3 in the reference's
`sim/TopKLatencyModel.scala`). The engine recurses into the side that holds the k-th largest element and stops when
the pivot's rank brackets k. Around the rounds, the scores are filled into the engine's buffer and the k survivors
drained out at the width of the stream that feeds it (bert.cpp: ceil(L / par) and ceil(k / par)).

Two models: `quickselect_cycles` runs the algorithm on actual score values (pivot: the first candidate, or a seeded
random one as the hardware's random pivot); `expected_quickselect_cycles` is a closed form over random pivots for
workloads that carry no values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from accel_sims.errors import AccelSimsError


@dataclass(frozen=True)
class TopKTrace:
    """Cycles of one top-k, and the candidate count of every quick-select round."""

    fill_cycles: int
    round_sizes: tuple[int, ...]
    round_cycles: int
    drain_cycles: int
    threshold: float

    @property
    def cycles(self) -> int:
        return self.fill_cycles + self.round_cycles + self.drain_cycles

    @property
    def rounds(self) -> int:
        return len(self.round_sizes)

    @property
    def elements_scanned(self) -> int:
        """Comparator operations (one per candidate per round), for the energy model."""
        return sum(self.round_sizes)


def _check(n: int, k: int, parallelism: int, overhead: int) -> None:
    if n < 1:
        raise AccelSimsError(f"top-k: n (candidates) must be >= 1, got {n}")
    if not 1 <= k <= n:
        raise AccelSimsError(f"top-k: k must be in 1..n ({n}), got {k}")
    if parallelism < 1:
        raise AccelSimsError(f"top-k: parallelism must be >= 1, got {parallelism}")
    if overhead < 0:
        raise AccelSimsError(f"top-k: round overhead must be >= 0, got {overhead}")


def quickselect_cycles(
    scores: Sequence[float] | np.ndarray,
    k: int,
    *,
    parallelism: int = 16,
    round_overhead: int = 3,
    io_width: int | None = None,
    pivot: Literal["first", "random"] = "first",
    seed: int = 0,
) -> TopKTrace:
    """Cycles for the engine to find the k largest of `scores` (ties at the threshold count as selected).

    Round cost: ceil(n / parallelism) + round_overhead. Fill: ceil(len(scores) / io_width); drain: ceil(k / io_width)
    (io_width defaults to `parallelism`). `pivot="first"` takes the first remaining candidate in stream order;
    `"random"` draws it uniformly with `numpy.random.default_rng(seed)`, as the hardware's random pivot.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    n = values.size
    _check(n, k, parallelism, round_overhead)
    width = parallelism if io_width is None else io_width
    if width < 1:
        raise AccelSimsError(f"top-k: io_width must be >= 1, got {width}")
    if pivot not in ("first", "random"):
        raise AccelSimsError(f"top-k: pivot must be 'first' or 'random', got {pivot!r}")
    rng = np.random.default_rng(seed)
    cand = values
    remaining = k  # rank (1 = largest) of the threshold inside `cand`
    sizes: list[int] = []
    while True:
        m = cand.size
        sizes.append(m)
        p = cand[0] if pivot == "first" else cand[int(rng.integers(m))]
        greater = cand[cand > p]
        n_equal = int(np.count_nonzero(cand == p))
        if greater.size >= remaining:
            cand = greater  # the k-th largest is above the pivot
        elif greater.size + n_equal >= remaining:
            threshold = float(p)  # the pivot is the k-th largest
            break
        else:
            remaining -= greater.size + n_equal
            cand = cand[cand < p]
    round_cycles = sum(math.ceil(s / parallelism) + round_overhead for s in sizes)
    return TopKTrace(
        fill_cycles=math.ceil(n / width),
        round_sizes=tuple(sizes),
        round_cycles=round_cycles,
        drain_cycles=math.ceil(k / width),
        threshold=threshold,
    )


def _harmonic(x: np.ndarray) -> np.ndarray:
    """H_x for integer x >= 0 (exact below 64, asymptotic series above, error < 1e-12)."""
    x = np.asarray(x, dtype=np.float64)
    small = np.cumsum(np.concatenate([[0.0], 1.0 / np.arange(1, 65)]))
    xi = np.clip(x, 0, 64).astype(np.int64)
    safe = np.maximum(x, 1.0)
    big = np.log(safe) + np.euler_gamma + 1 / (2 * safe) - 1 / (12 * safe**2) + 1 / (120 * safe**4)
    return np.where(x <= 64, small[xi], big)


def expected_rounds(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    """Expected quick-select rounds with a uniform random pivot over distinct values: H_k + H_(n+1-k) - 1."""
    n_a, k_a = np.asarray(n, dtype=np.float64), np.asarray(k, dtype=np.float64)
    return np.asarray(_harmonic(k_a) + _harmonic(n_a + 1 - k_a) - 1.0)


def expected_elements_scanned(n: np.ndarray | int, k: np.ndarray | int) -> np.ndarray:
    """Expected sum of round sizes: Knuth's expected comparisons of FIND (Hoare's quick-select) plus the rounds.

    Knuth (TAOCP vol. 3, 5.2.2 ex. 32): C(n, k) = 2((n+1)H_n - (n+3-k)H_(n+1-k) - (k+2)H_k + n + 3) counts the n-1
    comparisons of each round of size n; a round of size m scans m elements, so the sum is C + rounds.
    """
    n_a, k_a = np.asarray(n, dtype=np.float64), np.asarray(k, dtype=np.float64)
    comparisons = 2 * (
        (n_a + 1) * _harmonic(n_a) - (n_a + 3 - k_a) * _harmonic(n_a + 1 - k_a) - (k_a + 2) * _harmonic(k_a) + n_a + 3
    )
    return np.asarray(comparisons + expected_rounds(n_a, k_a))


def expected_quickselect_cycles(
    n: np.ndarray | int,
    k: np.ndarray | int,
    *,
    parallelism: int = 16,
    round_overhead: int = 3,
    io_width: int | np.ndarray | None = None,
) -> np.ndarray:
    """Expected engine cycles for a top-k of k among n distinct values with a random pivot (vectorised over n, k).

    Rounds: E[sum ceil(m / P)] is taken as E[sum m] / P + E[rounds] * (P - 1) / (2P) (a round's rounding adds
    (P - 1) / (2P) on average); exact for P = 1. Plus fill ceil(n / io_width) and drain ceil(k / io_width).
    """
    n_a = np.asarray(n, dtype=np.int64)
    k_a = np.asarray(k, dtype=np.int64)
    if np.any(n_a < 1) or np.any(k_a < 1) or np.any(k_a > n_a):
        raise AccelSimsError("top-k: need 1 <= k <= n for every entry")
    _check(1, 1, parallelism, round_overhead)
    width = np.asarray(parallelism if io_width is None else io_width, dtype=np.int64)
    if np.any(width < 1):
        raise AccelSimsError("top-k: io_width must be >= 1")
    rounds = expected_rounds(n_a, k_a)
    scanned = expected_elements_scanned(n_a, k_a)
    round_cycles = scanned / parallelism + rounds * ((parallelism - 1) / (2 * parallelism) + round_overhead)
    fill = np.ceil(n_a / width)
    drain = np.ceil(k_a / width)
    return np.asarray(fill + round_cycles + drain)
