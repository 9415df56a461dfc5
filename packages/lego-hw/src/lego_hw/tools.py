"""Runners for the external EDA tools: Icarus Verilog, Yosys, Verilator (LEGO Sec. V, evaluation flow).

- `simulate`: iverilog + vvp on the system (core + banked buffers) and its generated testbench in a temporary
  directory; the outputs are parsed back into numpy and optionally checked bit-exactly against
  `Workload.reference`, the cycle count against the schedule and the buffers' bank-conflict flag against 0.
- `synthesize`: `yosys -p "read_verilog; synth -top <core>; stat"` on the core (or, `part="buffers"`, on the
  banked buffers); cells, flip-flops, cells by type and an area estimate in NAND2 equivalents (weights in
  `AREA_NAND2`; rough CMOS standard-cell ratios).
- `lint`: `verilator --lint-only -Wall` on the core and on the system, which must be clean on generated code.
Missing binaries raise ToolNotFoundError naming the Debian package; a tool that fails raises
ToolFailedError with the tail of its output.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from lego_hw.errors import LegoError, SimulationMismatchError, ToolFailedError, ToolNotFoundError

if TYPE_CHECKING:
    from lego_hw.design import Design

# Binary -> Debian/Ubuntu package that provides it.
TOOL_PACKAGES = {"iverilog": "iverilog", "vvp": "iverilog", "yosys": "yosys", "verilator": "verilator"}

# Area of Yosys' internal gate cells in NAND2 equivalents (typical standard-cell library ratios; flip-flops
# with reset/enable cost more). Unknown cell types count 1.0.
AREA_NAND2: dict[str, float] = {
    "$_NOT_": 0.67,
    "$_BUF_": 1.0,
    "$_NAND_": 1.0,
    "$_NOR_": 1.0,
    "$_AND_": 1.33,
    "$_OR_": 1.33,
    "$_ANDNOT_": 1.33,
    "$_ORNOT_": 1.33,
    "$_XOR_": 2.33,
    "$_XNOR_": 2.33,
    "$_MUX_": 2.33,
    "$_AOI3_": 1.33,
    "$_OAI3_": 1.33,
    "$_AOI4_": 1.67,
    "$_OAI4_": 1.67,
    "DFF": 4.33,  # any $_DFF*/$_SDFF*/$_DFFE* cell
}


def require_tool(name: str) -> str:
    """Absolute path of `name` on PATH, or ToolNotFoundError saying which package to install."""
    path = shutil.which(name)
    if path is None:
        pkg = TOOL_PACKAGES.get(name, name)
        raise ToolNotFoundError(
            f"{name} is not on PATH; install it with `sudo apt-get install {pkg}` (Debian/Ubuntu package "
            f"{pkg!r}) or add its directory to PATH"
        )
    return path


def tool_or_skip(name: str) -> str:
    """For tests: the tool's path; skip when missing, but FAIL when the env var CI is set."""
    # pytest is a test dependency, not a runtime one: imported by name so the package type-checks without it.
    pytest = importlib.import_module("pytest")

    try:
        return require_tool(name)
    except ToolNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and a required tool is missing: {e}")
        pytest.skip(str(e))
    raise AssertionError("unreachable")


def _run(cmd: list[str], cwd: Path, timeout: float) -> str:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or "") if isinstance(e.stdout, str) else ""
        raise ToolFailedError(f"{cmd[0]} timed out after {timeout} s; output tail:\n{out[-3000:]}") from None
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise ToolFailedError(f"{' '.join(cmd[:3])} ... exited with {r.returncode}; output tail:\n{out[-3000:]}")
    return out


@dataclass(frozen=True)
class SimResult:
    outputs: dict[str, np.ndarray]
    cycles: int
    log: str = field(repr=False)
    bank_conflicts: int = 0  # clock edges at which the buffers' `conflict` flag was high


def simulate(
    design: Design,
    inputs: Mapping[str, np.ndarray],
    mode: int | str = 0,
    check: bool = False,
    timeout: float = 300.0,
) -> SimResult:
    """Run `mode` of `design` on `inputs` in Icarus Verilog; with check=True compare with the numpy reference.

    Simulates `<name>_system`: the core with its banked buffers, loaded and read back through the host ports.
    With check=True, first enumerates the bank plan in Python (`Design.memory_banks(verify=True)`, LegoError
    on a conflict), then raises SimulationMismatchError when the buffers flagged a bank conflict, or an output
    element or the cycle count differs from the reference / `lego_hw.schedule.total_cycles`.
    """
    iverilog, vvp = require_tool("iverilog"), require_tool("vvp")
    m = design.mode_index(mode)
    if check and design.banking is None:
        design.memory_banks(m, verify=True)  # the Python enumeration; the RTL's conflict flag is checked below
    wl = design.mappings[m].workload
    with tempfile.TemporaryDirectory(prefix="lego_sim_") as tmp:
        d = Path(tmp)
        (d / "core.v").write_text(design.verilog())
        (d / "buffers.v").write_text(design.buffers_verilog())
        (d / "system.v").write_text(design.system_verilog())
        (d / "tb.v").write_text(design.testbench(inputs, mode=m))
        _run([iverilog, "-g2005", "-o", "sim.vvp", "tb.v", "system.v", "buffers.v", "core.v"], d, timeout)
        log = _run([vvp, "-n", "sim.vvp"], d, timeout)
    if "TIMEOUT" in log:
        raise ToolFailedError(f"simulation of {design.name} mode {m} did not raise done; log tail:\n{log[-2000:]}")
    o = wl.output.name
    shape = wl.shape(o)
    flat = np.zeros(int(np.prod(shape)), dtype=np.int64)
    cycles = conflicts = -1
    for line in log.splitlines():
        if line.startswith("OUT "):
            _, i, v = line.split()
            flat[int(i)] = int(v)
        elif line.startswith("CYCLES "):
            cycles = int(line.split()[1])
        elif line.startswith("CONFLICTS "):
            conflicts = int(line.split()[1])
    if cycles < 0 or conflicts < 0:
        raise ToolFailedError(f"simulation log of {design.name} has no CYCLES/CONFLICTS line; tail:\n{log[-2000:]}")
    res = SimResult({o: flat.reshape(shape)}, cycles, log, conflicts)
    if check:
        if conflicts:
            raise SimulationMismatchError(
                f"{design.name} mode {design.modes[m]}: a buffer bank was asked for two words in one cycle at "
                f"{conflicts} clock edge(s); the bank plan is not conflict-free (see Design.memory_banks)"
            )
        ref = wl.reference(inputs)[o]
        got = res.outputs[o]
        if not np.array_equal(ref, got):
            bad = np.argwhere(ref != got)
            at = tuple(int(x) for x in bad[0])
            raise SimulationMismatchError(
                f"{design.name} mode {design.modes[m]}: {len(bad)} of {ref.size} elements of {o} differ from the "
                f"numpy reference, first at {at}: RTL {got[at]} vs reference {ref[at]}"
            )
        want = design.expected_cycles(m)
        if cycles != want:
            raise SimulationMismatchError(
                f"{design.name} mode {design.modes[m]}: RTL took {cycles} cycles but the schedule says {want}"
            )
    return res


@dataclass(frozen=True)
class SynthReport:
    cells: int
    flip_flops: int
    cells_by_type: dict[str, int]
    area_estimate: float  # NAND2 equivalents, weights in AREA_NAND2
    log: str = field(default="", repr=False)


def parse_stat(text: str) -> tuple[int, dict[str, int]]:
    """Total cells and cells by type from the last `stat` block of a Yosys log."""
    blocks = text.split("Number of cells:")
    if len(blocks) < 2:
        raise ToolFailedError(f"no 'Number of cells' in the yosys log; tail:\n{text[-2000:]}")
    last = blocks[-1]
    total = int(last.split()[0])
    by_type: dict[str, int] = {}
    for line in last.splitlines()[1:]:
        mt = re.match(r"\s+(\$?\S+)\s+(\d+)\s*$", line)
        if mt:
            by_type[mt.group(1)] = int(mt.group(2))
        elif line.strip() and not line.startswith(" "):
            break
    return total, by_type


def area_of(by_type: Mapping[str, int]) -> float:
    total = 0.0
    for t, n in by_type.items():
        w = AREA_NAND2["DFF"] if "DFF" in t else AREA_NAND2.get(t, 1.0)
        total += w * n
    return round(total, 2)


def synthesize(design: Design, timeout: float = 600.0, part: Literal["core", "buffers"] = "core") -> SynthReport:
    """Yosys generic synthesis of the core (default) or of its banked buffers; ToolFailedError when Yosys fails.

    The core is the PE array, control and address generators, the figure the fused-vs-separate comparisons
    use. `part="buffers"` synthesizes `<name>_buffers` alone: Yosys maps each bank's reg array to
    flip-flops and multiplexers (no SRAM macros), plus the bank/address decoders and the conflict check.
    """
    yosys = require_tool("yosys")
    if part not in ("core", "buffers"):
        raise LegoError(f"synthesize: part must be 'core' or 'buffers', got {part!r}")
    text, top = (
        (design.verilog(), design.name) if part == "core" else (design.buffers_verilog(), f"{design.name}_buffers")
    )
    with tempfile.TemporaryDirectory(prefix="lego_syn_") as tmp:
        d = Path(tmp)
        (d / "core.v").write_text(text)
        log = _run([yosys, "-q", "-p", f"read_verilog core.v; synth -top {top}; tee -o stat.txt stat"], d, timeout)
        stat = (d / "stat.txt").read_text() if (d / "stat.txt").exists() else log
    cells, by_type = parse_stat(stat)
    ffs = sum(n for t, n in by_type.items() if "DFF" in t)
    return SynthReport(cells, ffs, by_type, area_of(by_type), stat)


def lint(design: Design, timeout: float = 300.0) -> str:
    """`verilator --lint-only -Wall` on the core alone, then on the system (core + buffers); returns the
    (empty) output, ToolFailedError on any warning."""
    verilator = require_tool("verilator")
    with tempfile.TemporaryDirectory(prefix="lego_lint_") as tmp:
        d = Path(tmp)
        files = design.write(d)
        out = _run([verilator, "--lint-only", "-Wall", "--top-module", design.name, files[0].name], d, timeout)
        if "%Warning" not in out and "%Error" not in out:
            top = f"{design.name}_system"
            out += _run([verilator, "--lint-only", "-Wall", "--top-module", top, *(p.name for p in files)], d, timeout)
    if "%Warning" in out or "%Error" in out:
        raise ToolFailedError(f"verilator lint of {design.name} is not clean:\n{out[-3000:]}")
    return out
