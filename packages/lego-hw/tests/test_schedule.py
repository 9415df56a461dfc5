"""The cycle schedule shared by the RTL controller and the performance model."""

from __future__ import annotations

import pytest

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.errors import LegoError
from lego_hw.schedule import (
    RUN_OVERHEAD,
    TILE_OVERHEAD,
    compute_window,
    is_stationary,
    local_origin,
    tile_phases,
    time_step,
    total_cycles,
    valid_times,
)
from lego_hw.workload import gemm


def _m(preset: str, rows: int = 4, cols: int = 4):  # type: ignore[no-untyped-def]
    return map_workload(gemm(10, 9, 7), Dataflow.preset(preset), ArraySpec(rows=rows, cols=cols))


def test_phases_of_os_and_ws() -> None:
    os_ = _m("output-stationary")
    ph = tile_phases(os_)
    assert (ph.preload, ph.drain, ph.overhead) == (0, 4, TILE_OVERHEAD)
    assert ph.compute == os_.time_span + 1 == (3 + 3 + 6 + 1) + 1
    ws = _m("weight-stationary")
    ph = tile_phases(ws)
    assert (ph.preload, ph.drain) == (4, 0)
    assert ph.compute == (9 + 3 + 3 + 1) + 1
    assert total_cycles(ws) == ws.num_tiles * ph.total + RUN_OVERHEAD
    assert ws.num_tiles == 3 * 2  # j: ceil(9/4), k: ceil(7/4)


def test_stationarity_and_iteration_geometry() -> None:
    os_ = _m("output-stationary")
    assert is_stationary(os_, "C") and not is_stationary(os_, "A")
    ws = _m("weight-stationary")
    assert is_stationary(ws, "B") and not is_stationary(ws, "C")
    # OS: PE (i, j) runs k = t - i - j.
    assert local_origin(os_, (2, 1)) == (2, 1, -3)
    assert time_step(os_) == (0, 0, 1)
    assert valid_times(os_, (2, 1)) == (3, 9)
    assert compute_window(os_) == (0, os_.time_span - 1)


def test_non_unimodular_stt_is_rejected() -> None:
    df = Dataflow(name="det2", loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (1, 1, 2)))
    m = map_workload(gemm(4, 4, 4), df, ArraySpec(rows=2, cols=2))
    with pytest.raises(LegoError, match="unimodular"):
        total_cycles(m)


def test_larger_arrays_take_fewer_cycles() -> None:
    assert total_cycles(_m("output-stationary", 4, 4)) < total_cycles(_m("output-stationary", 2, 2))
