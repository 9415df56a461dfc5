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
    assert info["buffers"]["A"] == {"banks": 3, "depth": 14, "width": 8}  # type: ignore[index]


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
    for pair, share in ((maps[:2], False), (maps[2:], False), (maps[:2], True), (maps[1:3], True)):
        d = generate(pair, share_links=share)
        for mode in range(2):
            assert simulate(d, inputs, mode=mode, check=True).cycles == total_cycles(pair[mode])


def test_select_links_alone_is_the_min_cost_interconnect() -> None:
    from lego_hw.fusion import select_links
    from lego_hw.interconnect import build_interconnect

    m = map_workload(gemm(4, 4, 4), Dataflow.preset("weight-stationary"), ArraySpec(rows=3, cols=3))
    (ic,) = select_links([m])
    ref = build_interconnect(m)
    for n, net in ref.networks.items():
        assert ic.networks[n].links == net.links and ic.networks[n].cost == pytest.approx(net.cost)
    with pytest.raises(LegoError, match="discount"):
        select_links([m], discount=2.0)


def test_port_numbering_follows_the_hint() -> None:
    from lego_hw.rtl.plan import _number_ports

    fed = [(0, 0), (1, 0), (2, 0)]
    assert _number_ports("A", fed, {}) == fed
    # (2, 0) used port 0 in an earlier mode: it keeps it; an out-of-range hint is ignored.
    assert _number_ports("A", fed, {("A", (2, 0)): 0, ("A", (0, 0)): 5}) == [(2, 0), (0, 0), (1, 0)]
    assert _number_ports("B", fed, {("A", (2, 0)): 0}) == fed


def test_link_sharing_changes_nothing_for_gemm_os_ws() -> None:
    """OS and WS GEMM have one reuse direction per tensor: their links are forced, sharing cannot help."""
    wl = gemm(4, 4, 4)
    arr = ArraySpec(rows=4, cols=4)
    for presets in (
        ("output-stationary", "weight-stationary"),
        ("output-stationary", "weight-stationary", "input-stationary"),
    ):
        maps = [map_workload(wl, Dataflow.preset(p), arr) for p in presets]
        assert generate(maps, share_links=True).fusion_stats() == generate(maps).fusion_stats()


def test_link_sharing_cuts_muxes_and_stays_bit_exact() -> None:
    """conv2d on (y, x, r): OS-broadcast and OS read W/I from memory at different PEs; aligned ports share muxes."""
    tool_or_skip("iverilog")
    wl = conv2d(2, 2, 4, 4, 3, 3)
    arr = ArraySpec(rows=3, cols=3)
    maps = [
        map_workload(wl, Dataflow.preset("os-broadcast", ("x", "y", "r")), arr),
        map_workload(wl, Dataflow.preset("output-stationary", ("y", "r", "x")), arr),
    ]
    before, after = generate(maps), generate(maps, share_links=True)
    assert after.fusion_stats().muxes < before.fusion_stats().muxes
    inputs = wl.random_inputs(np.random.default_rng(9))
    for mode in range(2):
        res = simulate(after, inputs, mode=mode, check=True)
        assert res.cycles == total_cycles(maps[mode]) and res.bank_conflicts == 0


def test_joint_link_selection_shares_chains() -> None:
    """Two transforms of conv2d where W/I can flow along several directions: re-selected links coincide more."""
    tool_or_skip("iverilog")
    from lego_hw.fusion import select_links

    wl = conv2d(2, 2, 4, 4, 3, 3)
    arr = ArraySpec(rows=3, cols=3)
    stts = (((0, -1, 0), (1, -1, 0), (0, 2, 1)), ((0, 1, 1), (1, 0, 1), (0, 0, 1)))
    maps = [
        map_workload(wl, Dataflow(name=f"t{i}", loops=("y", "x", "r"), stt=s), arr, tile={"y": 2, "x": 2, "r": 2})
        for i, s in enumerate(stts)
    ]
    alone = fuse([build_plan(m) for m in maps]).stats()
    joint = fuse([build_plan(m, ic) for m, ic in zip(maps, select_links(maps), strict=True)]).stats()
    assert joint.muxes < alone.muxes and joint.shared_links > alone.shared_links
    d = generate(maps, share_links=True)
    assert d.fusion_stats().muxes <= joint.muxes
    inputs = wl.random_inputs(np.random.default_rng(4))
    for mode in range(2):
        assert simulate(d, inputs, mode=mode, check=True).cycles == total_cycles(maps[mode])
