"""Top-k engine cycle model (SpAtten Sec. 4.2): hand-checked quick-select traces and the expected-cycles closed form."""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np
import pytest

from accel_sims.errors import AccelSimsError
from accel_sims.spatten.topk import (
    expected_elements_scanned,
    expected_quickselect_cycles,
    expected_rounds,
    quickselect_cycles,
)


def test_hand_checked_three_rounds() -> None:
    # scores [5, 1, 9, 3, 7, 2, 8, 6], k = 3, P = 2, overhead 3, first-element pivot:
    # round 1: 8 candidates, pivot 5, greater {9, 7, 8, 6} (4 >= 3) -> keep greater; ceil(8/2) + 3 = 7 cycles
    # round 2: 4 candidates, pivot 9, greater {} , equal {9}: 0 + 1 < 3 -> k = 3 - 1 = 2, keep {7, 8, 6}; 2 + 3 = 5
    # round 3: 3 candidates, pivot 7, greater {8} (1 < 2), 1 + 1 >= 2 -> threshold 7; ceil(3/2) + 3 = 5
    # rounds 17, fill ceil(8/2) = 4, drain ceil(3/2) = 2 -> 23 cycles; the top 3 are 9, 8, 7.
    tr = quickselect_cycles([5, 1, 9, 3, 7, 2, 8, 6], 3, parallelism=2, round_overhead=3)
    assert tr.round_sizes == (8, 4, 3)
    assert tr.round_cycles == 17
    assert (tr.fill_cycles, tr.drain_cycles) == (4, 2)
    assert tr.cycles == 23
    assert tr.threshold == 7.0
    assert tr.elements_scanned == 15


def test_hand_checked_ties_finish_in_one_round() -> None:
    # [4, 4, 4, 4], k = 2, P = 4: pivot 4, nothing greater, 4 equal >= 2 -> done.
    # round ceil(4/4) + 3 = 4, fill 1, drain ceil(2/4) = 1 -> 6 cycles.
    tr = quickselect_cycles([4, 4, 4, 4], 2, parallelism=4, round_overhead=3)
    assert tr.round_sizes == (4,)
    assert tr.cycles == 6


def test_hand_checked_k_equals_n() -> None:
    # [3, 1, 2], k = 3, P = 1, overhead 0: pivot 3 -> 0 greater, 1 equal < 3 -> k = 2 among {1, 2}: 3 cycles;
    # pivot 1 -> greater {2} (1 < 2), 1 + 1 >= 2 -> threshold 1: 2 cycles. Fill 3 + drain 3 -> 11 cycles.
    tr = quickselect_cycles([3, 1, 2], 3, parallelism=1, round_overhead=0)
    assert tr.round_sizes == (3, 2)
    assert tr.cycles == 11
    assert tr.threshold == 1.0


def test_threshold_selects_exactly_the_top_k() -> None:
    rng = np.random.default_rng(1)
    for seed in range(20):
        x = rng.random(int(rng.integers(1, 200)))
        k = int(rng.integers(1, x.size + 1))
        for pivot in ("first", "random"):
            tr = quickselect_cycles(x, k, pivot=pivot, seed=seed)
            assert tr.threshold == np.sort(x)[::-1][k - 1]


def test_random_pivot_is_seeded() -> None:
    x = np.random.default_rng(0).random(300)
    a = quickselect_cycles(x, 50, pivot="random", seed=7)
    b = quickselect_cycles(x, 50, pivot="random", seed=7)
    assert a == b


@cache
def _exact(n: int, k: int) -> tuple[Fraction, Fraction]:
    """Exact E[rounds], E[sum of round sizes] for the k-th largest of n distinct values, uniform random pivot."""
    rounds, scanned = Fraction(1), Fraction(n)
    for j in range(1, n + 1):  # pivot is the j-th largest: j - 1 greater
        g = j - 1
        if g >= k:
            r, s = _exact(g, k)
        elif g + 1 >= k:
            r, s = Fraction(0), Fraction(0)
        else:
            r, s = _exact(n - j, k - j)
        rounds += r / n
        scanned += s / n
    return rounds, scanned


def test_closed_form_matches_exact_recurrence() -> None:
    for n in range(1, 22):
        for k in range(1, n + 1):
            r, s = _exact(n, k)
            assert float(expected_rounds(n, k)) == pytest.approx(float(r), abs=1e-9)
            assert float(expected_elements_scanned(n, k)) == pytest.approx(float(s), abs=1e-9)
            # P = 1: no rounding, the closed form is exact: fill n + sum of sizes + 3 per round + drain k.
            exp = expected_quickselect_cycles(n, k, parallelism=1, round_overhead=3)
            assert float(exp) == pytest.approx(n + float(s) + 3 * float(r) + k, abs=1e-9)


def test_expected_cycles_match_sampling() -> None:
    rng = np.random.default_rng(0)
    for n, k in [(384, 96), (1024, 307)]:
        samples = [
            quickselect_cycles(
                rng.random(n), k, parallelism=16, round_overhead=3, io_width=8, pivot="random", seed=i
            ).cycles
            for i in range(200)
        ]
        exp = float(expected_quickselect_cycles(n, k, parallelism=16, round_overhead=3, io_width=8))
        assert np.mean(samples) == pytest.approx(exp, rel=0.04)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(AccelSimsError, match="k must be"):
        quickselect_cycles([1.0, 2.0], 3)
    with pytest.raises(AccelSimsError, match="n \\(candidates\\)"):
        quickselect_cycles([], 1)
    with pytest.raises(AccelSimsError, match="parallelism"):
        quickselect_cycles([1.0], 1, parallelism=0)
    with pytest.raises(AccelSimsError, match="1 <= k <= n"):
        expected_quickselect_cycles(np.array([4]), np.array([5]))
