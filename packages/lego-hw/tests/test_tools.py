"""EDA tool runners: missing tools, failures, Yosys stat parsing, the CI fail-not-skip rule."""

from __future__ import annotations

import numpy as np
import pytest

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.design import generate
from lego_hw.errors import ToolFailedError, ToolNotFoundError
from lego_hw.tools import area_of, lint, parse_stat, require_tool, simulate, synthesize, tool_or_skip
from lego_hw.workload import gemm

_STAT = """
=== top ===

   Number of wires:                 10
   Number of cells:                 7
     $_AND_                          2
     $_DFF_P_                        3
     $_XOR_                          2

"""


def _design():  # type: ignore[no-untyped-def]
    return generate(map_workload(gemm(3, 3, 3), Dataflow.preset("output-stationary"), ArraySpec(rows=2, cols=2)))


def test_missing_tool_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))
    for tool, pkg in (("iverilog", "iverilog"), ("yosys", "yosys"), ("verilator", "verilator"), ("vvp", "iverilog")):
        with pytest.raises(ToolNotFoundError, match=f"apt-get install {pkg}"):
            require_tool(tool)
    d = _design()
    wl = d.mappings[0].workload
    with pytest.raises(ToolNotFoundError, match="iverilog"):
        simulate(d, wl.random_inputs(np.random.default_rng(0)))
    with pytest.raises(ToolNotFoundError, match="yosys"):
        synthesize(d)
    with pytest.raises(ToolNotFoundError, match="verilator"):
        lint(d)


def test_tool_or_skip_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        tool_or_skip("yosys")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        tool_or_skip("yosys")


def test_parse_stat_and_area() -> None:
    cells, by_type = parse_stat(_STAT)
    assert cells == 7 and by_type == {"$_AND_": 2, "$_DFF_P_": 3, "$_XOR_": 2}
    assert area_of(by_type) == pytest.approx(2 * 1.33 + 3 * 4.33 + 2 * 2.33)
    with pytest.raises(ToolFailedError, match="Number of cells"):
        parse_stat("nothing here")


def test_tool_failures_carry_output() -> None:
    tool_or_skip("verilator")
    tool_or_skip("yosys")
    tool_or_skip("iverilog")
    d = _design()
    d._verilog = d.verilog().replace("endmodule", "  wire [3:0] spare_sig = 4'd1;\nendmodule")
    with pytest.raises(ToolFailedError, match="spare_sig"):
        lint(d)
    d._verilog = "module broken(; endmodule\n"
    with pytest.raises(ToolFailedError):
        synthesize(d)
    with pytest.raises(ToolFailedError):
        simulate(d, d.mappings[0].workload.random_inputs(np.random.default_rng(0)))


def test_write_and_testbench(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = _design()
    paths = d.write(tmp_path / "out")
    assert paths[0].name == f"{d.name}.v" and paths[0].read_text() == d.verilog()
    tb = d.testbench(d.mappings[0].workload.random_inputs(np.random.default_rng(0)))
    assert "module tb;" in tb and "CYCLES" in tb and f"{d.name}_system #(.DW(8), .ACCW(32)) dut" in tb
    assert "CONFLICTS" in tb and "host_C_rdata" in tb
