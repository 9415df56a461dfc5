"""Banked on-chip buffers as RTL: bank/address bijection, the system top, RTL conflict flag, lint and synthesis."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.design import generate
from lego_hw.errors import LegoError, SimulationMismatchError
from lego_hw.memory import Banking
from lego_hw.schedule import total_cycles
from lego_hw.tools import lint, simulate, synthesize, tool_or_skip
from lego_hw.workload import conv2d, gemm


def _fused_gemm() -> tuple:  # type: ignore[type-arg]
    wl = gemm(5, 6, 7)
    arr = ArraySpec(rows=2, cols=2)
    maps = [map_workload(wl, Dataflow.preset(p), arr) for p in ("output-stationary", "weight-stationary")]
    return wl, maps, generate(maps)


@pytest.mark.parametrize(
    ("banking", "shape"),
    [
        (Banking("X", (1, 1), (3, 1)), (7, 5)),
        (Banking("X", (2, 1), (3, 2)), (11, 5)),
        (Banking("X", (1, 1, 2), (1, 1, 3)), (2, 3, 11)),
        (Banking("X", (1,), (1,)), (4,)),
        (Banking("X", (2, 1), (3, 1)), (12, 2)),
    ],
)
def test_bank_and_address_are_a_bijection(banking: Banking, shape: tuple[int, ...]) -> None:
    seen = set()
    depth = banking.depth(shape)
    for ix in itertools.product(*map(range, shape)):
        b, a = banking.bank_of(ix), banking.address_of(ix, shape)
        assert 0 <= b < banking.num_banks and 0 <= a < depth
        assert (b, a) not in seen
        seen.add((b, a))
    # Tight when the bank count divides the dimension: the banks hold exactly the tensor.
    if all(s % (g * n) == 0 for s, g, n in zip(shape, banking.gcd, banking.banks, strict=True)):
        assert depth * banking.num_banks == np.prod(shape)


def test_layouts_follow_the_bank_plan_of_every_mode() -> None:
    wl, maps, d = _fused_gemm()
    lay = d.buffer_layouts()
    for mode in range(2):
        for n, b in d.memory_banks(mode).items():
            assert lay[n].per_mode[mode] == b
            assert lay[n].banks >= b.num_banks
            assert lay[n].depth >= b.depth(wl.shape(n))
    assert lay["C"].width == 32 and lay["A"].width == 8
    assert lay["A"].bits == lay["A"].banks * lay["A"].depth * 8
    text = d.buffers_verilog()
    for n, la in lay.items():
        for b in range(la.banks):
            assert f"reg [{'ACCW' if n == 'C' else 'DW'}-1:0] bank_{n}_{b} [0:{la.depth - 1}];" in text
        assert f"bank_{n}_{la.banks} " not in text
    sys_text = d.system_verilog()
    assert f"module {d.name}_system" in sys_text and f"{d.name}_buffers #(.DW(DW), .ACCW(ACCW)) buffers" in sys_text


def test_write_emits_core_buffers_and_system(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, _, d = _fused_gemm()
    paths = d.write(tmp_path)
    assert [p.name for p in paths] == [f"{d.name}.v", f"{d.name}_buffers.v", f"{d.name}_system.v"]
    assert paths[1].read_text() == d.buffers_verilog()


def test_system_simulation_is_bit_exact_and_conflict_free() -> None:
    tool_or_skip("iverilog")
    wl, maps, d = _fused_gemm()
    inputs = wl.random_inputs(np.random.default_rng(3))
    for mode in range(2):
        res = simulate(d, inputs, mode=mode, check=True)
        assert res.bank_conflicts == 0 and res.cycles == total_cycles(maps[mode])
    cv = conv2d(3, 2, 3, 5, 2, 3, 2)
    m = map_workload(cv, Dataflow.preset("output-stationary", ("k", "x", "c")), ArraySpec(rows=2, cols=3))
    dc = generate(m)
    assert dc.buffer_layouts()["I"].banks == 3  # three concurrent input ports, three banks
    assert simulate(dc, cv.random_inputs(np.random.default_rng(4)), check=True).bank_conflicts == 0


def test_rtl_flags_a_bank_conflict() -> None:
    """Too few banks: the buffers' conflict flag fires in simulation, and check=True reports it."""
    tool_or_skip("iverilog")
    wl, maps, d = _fused_gemm()
    one = {n: Banking(n, (1, 1), (1, 1)) for n in ("A", "B", "C")}
    bad = dataclasses.replace(d, banking=(one, one))
    assert all(la.banks == 1 for la in bad.buffer_layouts().values())
    inputs = wl.random_inputs(np.random.default_rng(0))
    res = simulate(bad, inputs, mode=0)
    assert res.bank_conflicts > 0
    with pytest.raises(SimulationMismatchError, match="two words in one cycle"):
        simulate(bad, inputs, mode=1, check=True)


def test_buffers_lint_clean_and_synthesize_separately() -> None:
    tool_or_skip("yosys")
    tool_or_skip("verilator")
    wl = gemm(3, 3, 3)
    arr = ArraySpec(rows=2, cols=2)
    maps = [map_workload(wl, Dataflow.preset(p), arr) for p in ("output-stationary", "weight-stationary")]
    d = generate(maps)
    assert lint(d).strip() == ""  # core alone and core + buffers + system
    core = synthesize(d)
    buf = synthesize(d, part="buffers")
    bits = sum(la.bits for la in d.buffer_layouts().values())
    assert buf.flip_flops == bits  # every bank word is a register (no SRAM macros in generic synthesis)
    assert core.cells == synthesize(d, part="core").cells
    with pytest.raises(LegoError, match="part must be"):
        synthesize(d, part="all")  # type: ignore[arg-type]
