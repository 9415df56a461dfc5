"""RTL of single-dataflow GEMM arrays: Icarus bit-exact vs numpy, cycles == schedule, Yosys, Verilator."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload, preset_names
from lego_hw.design import generate
from lego_hw.errors import LegoError, SimulationMismatchError
from lego_hw.intlinalg import determinant
from lego_hw.schedule import compute_window, total_cycles
from lego_hw.tools import lint, simulate, synthesize, tool_or_skip
from lego_hw.workload import gemm


@pytest.fixture(scope="module")
def sim_tools() -> None:
    tool_or_skip("iverilog")
    tool_or_skip("vvp")


def _check(wl_args: tuple[int, int, int], preset: str, rows: int, cols: int, seed: int) -> int:
    wl = gemm(*wl_args)
    m = map_workload(wl, Dataflow.preset(preset), ArraySpec(rows=rows, cols=cols))
    d = generate(m)
    inputs = wl.random_inputs(np.random.default_rng(seed))
    res = simulate(d, inputs, check=True)
    assert np.array_equal(res.outputs["C"], wl.reference(inputs)["C"])
    assert res.cycles == total_cycles(m)
    return res.cycles


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_bit_exact_and_cycles(sim_tools: None, preset: str) -> None:
    # 5 x 7 x 6 on a 3 x 3 array: no loop is divided by the array.
    _check((5, 7, 6), preset, 3, 3, seed=1)


@pytest.mark.parametrize("preset", ["output-stationary", "weight-stationary"])
def test_random_sizes_os_ws(sim_tools: None, preset: str) -> None:
    rng = np.random.default_rng(7)
    done = 0
    while done < 5:
        m, n, k = (int(x) for x in rng.integers(1, 9, 3))
        rows, cols = (int(x) for x in rng.integers(1, 5, 2))
        first = m if preset == "output-stationary" else k
        if rows > first or cols > n:
            continue
        _check((m, n, k), preset, rows, cols, seed=done)
        done += 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    preset=st.sampled_from(preset_names()),
    size=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)
def test_hypothesis_sizes_and_presets(
    sim_tools: None, preset: str, size: tuple[int, int, int], shape: tuple[int, int]
) -> None:
    m, n, k = size
    rows, cols = shape
    first = k if preset == "weight-stationary" else m
    second = k if preset == "input-stationary" else n
    assume(rows <= first and cols <= second)
    _check(size, preset, rows, cols, seed=m * 100 + n * 10 + k)


def test_square_divisible_4x4(sim_tools: None) -> None:
    _check((8, 8, 4), "weight-stationary", 4, 4, seed=3)
    _check((8, 8, 4), "output-stationary", 4, 4, seed=4)


def test_tile_override_on_time_loop(sim_tools: None) -> None:
    # Splitting the streamed loop exercises the run-time bound checks on a time-varying loop.
    wl = gemm(5, 4, 7)
    inputs = wl.random_inputs(np.random.default_rng(5))
    for preset, tile in (("output-stationary", {"k": 3}), ("weight-stationary", {"i": 2})):
        m = map_workload(wl, Dataflow.preset(preset), ArraySpec(rows=2, cols=3), tile=tile)
        res = simulate(generate(m), inputs, check=True)
        assert res.cycles == total_cycles(m)


def test_one_dimensional_and_skewed_dataflows(sim_tools: None) -> None:
    wl = gemm(5, 4, 7)
    inputs = wl.random_inputs(np.random.default_rng(6))
    cases = [
        (Dataflow(name="row1d", loops=("i", "k"), stt=((1, 0), (1, 1))), ArraySpec(rows=3, cols=1)),
        (Dataflow(name="col1d", loops=("j", "k"), stt=((0, 1), (1, 1))), ArraySpec(rows=3, cols=1)),
        (
            Dataflow(name="skew", loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (1, 2, 1))),
            ArraySpec(rows=2, cols=3),
        ),
    ]
    for df, arr in cases:
        m = map_workload(wl, df, arr)
        res = simulate(generate(m), inputs, check=True)
        assert res.cycles == total_cycles(m)


def test_mismatch_is_reported(sim_tools: None) -> None:
    wl = gemm(3, 3, 3)
    m = map_workload(wl, Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2))
    d = generate(m)
    inputs = wl.random_inputs(np.random.default_rng(0))
    # Corrupt the core: the accumulator adder subtracts instead.
    d._verilog = d.verilog().replace("+ prod_p0_0", "- prod_p0_0")
    with pytest.raises(SimulationMismatchError, match="differ from the numpy reference"):
        simulate(d, inputs, check=True)


def test_yosys_synth_reports_cells_and_ffs() -> None:
    tool_or_skip("yosys")
    wl = gemm(4, 4, 4)
    for preset in ("output-stationary", "weight-stationary"):
        rep = synthesize(generate(map_workload(wl, Dataflow.preset(preset), ArraySpec(rows=2, cols=2))))
        assert rep.cells > 0 and rep.flip_flops > 0
        assert rep.area_estimate > rep.cells * 0.5
        assert sum(rep.cells_by_type.values()) == rep.cells


@pytest.mark.parametrize("preset", preset_names())
def test_verilator_lint_clean(preset: str) -> None:
    tool_or_skip("verilator")
    m = map_workload(gemm(5, 6, 4), Dataflow.preset(preset), ArraySpec(rows=2, cols=3))
    assert lint(generate(m)).strip() == ""


def test_16x16_generates_fast() -> None:
    t = time.perf_counter()
    m = map_workload(gemm(64, 64, 64), Dataflow.preset("weight-stationary"), ArraySpec(rows=16, cols=16))
    d = generate(m)
    text = d.verilog()
    assert time.perf_counter() - t < 30
    assert text.count("reg vld_") == 256 and "module gemm_weight_stationary" in text


def test_parameterized_widths_in_verilog() -> None:
    m = map_workload(gemm(4, 4, 4), Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2))
    text = generate(m, name="my core").verilog()
    assert "module my_core #(" in text and "parameter DW = 8" in text and "parameter ACCW = 32" in text


def test_data_width_16(sim_tools: None) -> None:
    wl = gemm(3, 4, 5)
    m = map_workload(wl, Dataflow.preset("weight-stationary"), ArraySpec(rows=2, cols=2, data_width=12, acc_width=40))
    inputs = wl.random_inputs(np.random.default_rng(2), bits=12)
    simulate(generate(m), inputs, check=True)


def test_bad_inputs_raise_clear_errors() -> None:
    wl = gemm(4, 4, 4)
    det2 = Dataflow(name="det2", loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (1, 1, 2)))
    with pytest.raises(LegoError, match="unimodular"):
        generate(map_workload(wl, det2, ArraySpec(rows=2, cols=2)))
    with pytest.raises(LegoError, match="acc_width"):
        generate(map_workload(wl, Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2, acc_width=16)))
    d = generate(map_workload(wl, Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2)))
    with pytest.raises(LegoError, match="missing input"):
        d.testbench({"A": np.zeros((4, 4), dtype=np.int64)})
    with pytest.raises(LegoError, match="signed 8-bit"):
        d.testbench({"A": np.full((4, 4), 300), "B": np.zeros((4, 4), dtype=np.int64)})
    with pytest.raises(LegoError, match="no mode"):
        d.mode_index("weight-stationary")
    with pytest.raises(LegoError, match="at least one"):
        generate([])


@pytest.mark.parametrize(
    ("stt", "tile", "window"),
    [
        (((1, 1, 0), (-1, 0, 1), (2, 2, 1)), {"i": 1, "j": 3, "k": 2}, (0, 6)),  # a psum reaches its writer late
        (((0, 0, 1), (1, 0, 2), (1, 1, 1)), {"i": 1, "j": 3, "k": 2}, (-1, 3)),  # a port reads early
        (((0, 0, -1), (0, -1, 0), (-1, 1, 2)), {"i": 3, "j": 1, "k": 3}, (-2, 6)),
    ],
)
def test_widened_compute_window(
    sim_tools: None, stt: tuple[tuple[int, ...], ...], tile: dict[str, int], window: tuple[int, int]
) -> None:
    # Skewed transforms whose links leave the tile box: the controller sweeps a wider time window.
    wl = gemm(5, 4, 6)
    m = map_workload(wl, Dataflow(name="wide", loops=("i", "j", "k"), stt=stt), ArraySpec(rows=3, cols=3), tile=tile)
    assert compute_window(m) == window != (0, m.time_span - 1)
    res = simulate(generate(m), wl.random_inputs(np.random.default_rng(9)), check=True)
    assert res.cycles == total_cycles(m)


def test_random_unimodular_transforms(sim_tools: None) -> None:
    # Any legal unimodular STT (with explicit tiles) generates a bit-exact array: no per-dataflow templates.
    rng = np.random.default_rng(21)
    wl = gemm(5, 4, 6)
    inputs = wl.random_inputs(rng)
    done = 0
    while done < 6:
        stt = tuple(tuple(int(x) for x in rng.choice([-1, 0, 0, 1, 1, 2], 3)) for _ in range(3))
        if abs(determinant(stt)) != 1:
            continue
        try:
            m = map_workload(
                wl,
                Dataflow(name="rnd", loops=("i", "j", "k"), stt=stt),
                ArraySpec(rows=3, cols=3),
                tile={"i": 2, "j": 2, "k": 2},
            )
        except LegoError:
            continue  # illegal (reduction in zero time) or does not fit the array
        res = simulate(generate(m), inputs, check=True)
        assert res.cycles == total_cycles(m)
        done += 1
