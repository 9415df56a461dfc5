"""Multi-dataflow fusion: one array running OS and WS (and more) bit-exactly, smaller than separate arrays."""

from __future__ import annotations

import numpy as np
import pytest

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.design import generate
from lego_hw.errors import LegoError
from lego_hw.fusion import fuse, group_modes
from lego_hw.intlinalg import determinant
from lego_hw.rtl.plan import build_plan
from lego_hw.schedule import total_cycles
from lego_hw.tools import lint, simulate, synthesize, tool_or_skip
from lego_hw.workload import conv2d, gemm


def test_group_modes() -> None:
    assert group_modes(["a", "b", "a"]) == [((0, 2), "a"), ((1,), "b")]
    assert group_modes([1, 1]) == [((0, 1), 1)]


def test_stats_count_shared_and_muxed_operands() -> None:
    wl = gemm(5, 6, 7)
    arr = ArraySpec(rows=3, cols=3)
    os_, ws = (map_workload(wl, Dataflow.preset(p), arr) for p in ("output-stationary", "weight-stationary"))
    st = generate([os_, ws]).fusion_stats()
    # A flows right in both modes (shared); B and the partial sums change source (muxed).
    assert st.modes == 2
    assert st.shared_links == 9 and st.muxes == 18
    single = generate(os_).fusion_stats()
    assert single.muxes == 0 and single.shared_links == 27


def test_fused_os_ws_runs_both_modes() -> None:
    tool_or_skip("iverilog")
    wl = gemm(5, 7, 6)
    arr = ArraySpec(rows=3, cols=3)
    maps = [map_workload(wl, Dataflow.preset(p), arr) for p in ("output-stationary", "weight-stationary")]
    d = generate(maps, name="gemm_fused")
    inputs = wl.random_inputs(np.random.default_rng(0))
    for mode in ("output-stationary", "weight-stationary"):
        res = simulate(d, inputs, mode=mode, check=True)
        assert np.array_equal(res.outputs["C"], wl.reference(inputs)["C"])
        assert res.cycles == total_cycles(maps[d.mode_index(mode)])


def test_fused_three_modes_and_conv() -> None:
    tool_or_skip("iverilog")
    wl = gemm(4, 5, 3)
    arr = ArraySpec(rows=2, cols=3)
    maps = [
        map_workload(wl, Dataflow.preset(p), arr)
        for p in ("output-stationary", "weight-stationary", "input-stationary")
    ]
    d = generate(maps)
    inputs = wl.random_inputs(np.random.default_rng(1))
    for mode in range(3):
        simulate(d, inputs, mode=mode, check=True)
    cv = conv2d(3, 2, 3, 5, 2, 3, 2)
    cmaps = [
        map_workload(cv, Dataflow.preset(p, ("k", "x", "c")), arr) for p in ("output-stationary", "weight-stationary")
    ]
    dc = generate(cmaps)
    cin = cv.random_inputs(np.random.default_rng(2))
    for mode in range(2):
        simulate(dc, cin, mode=mode, check=True)


def test_fused_array_is_smaller_than_separate_arrays() -> None:
    tool_or_skip("yosys")
    tool_or_skip("verilator")
    wl = gemm(4, 4, 4)
    arr = ArraySpec(rows=2, cols=2)
    maps = [map_workload(wl, Dataflow.preset(p), arr) for p in ("output-stationary", "weight-stationary")]
    fused = generate(maps)
    assert lint(fused).strip() == ""
    sep = [synthesize(generate(m)).cells for m in maps]
    both = synthesize(fused).cells
    assert both < sum(sep), (both, sep)


def test_fuse_rejects_mismatched_modes() -> None:
    wl = gemm(4, 4, 4)
    a = build_plan(map_workload(wl, Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2)))
    b = build_plan(map_workload(wl, Dataflow.preset("weight-stationary"), ArraySpec(rows=2, cols=4)))
    with pytest.raises(LegoError, match="share one ArraySpec"):
        fuse([a, b])
    c = build_plan(
        map_workload(
            conv2d(2, 2, 2, 2, 1, 1), Dataflow.preset("output-stationary", ("k", "x", "c")), ArraySpec(rows=2, cols=2)
        )
    )
    with pytest.raises(LegoError, match="same tensor names"):
        fuse([a, c])
    with pytest.raises(LegoError, match="at least one"):
        fuse([])


def test_describe_summarizes_the_design() -> None:
    wl = gemm(5, 6, 7)
    arr = ArraySpec(rows=3, cols=3)
    maps = [map_workload(wl, Dataflow.preset(p), arr) for p in ("output-stationary", "weight-stationary")]
    info = generate(maps).describe()
    assert info["modes"] == ["output-stationary", "weight-stationary"]
    assert info["pe_shape"] == [3, 3] and info["muxes"] == 18
    assert info["cycles"] == {"output-stationary": total_cycles(maps[0]), "weight-stationary": total_cycles(maps[1])}


def test_fused_random_transform_pairs() -> None:
    tool_or_skip("iverilog")
    rng = np.random.default_rng(5)
    wl = gemm(5, 4, 6)
    inputs = wl.random_inputs(rng)
    maps = []
    while len(maps) < 4:
        stt = tuple(tuple(int(x) for x in rng.choice([-1, 0, 0, 1, 1, 2], 3)) for _ in range(3))
        if abs(determinant(stt)) != 1:
            continue
        try:
            df = Dataflow(name=f"r{len(maps)}", loops=("i", "j", "k"), stt=stt)
            maps.append(map_workload(wl, df, ArraySpec(rows=3, cols=3), tile={"i": 2, "j": 2, "k": 2}))
        except LegoError:
            continue
    for pair in (maps[:2], maps[2:]):
        d = generate(pair)
        for mode in range(2):
            assert simulate(d, inputs, mode=mode, check=True).cycles == total_cycles(pair[mode])
