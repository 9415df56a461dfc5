"""Generated self-running testbench for a core (LEGO Sec. V, verification against the golden model).

The testbench simulates `<core>_system`, the core with its banked buffers (`lego_hw.rtl.buffers`), so the
banking is verified too: it holds the core in reset while it loads every input element and clears the
output through the host ports (flat row-major addresses in the selected mode's shape, mapped to banks by
the buffers' own bank functions), pulses `start`, counts the clock edges from the one that samples `start`
to the one that raises `done`, reads every output element back through the host port and prints it
(`OUT <flat> <value>`), then `CYCLES <n>` and `CONFLICTS <n>` (clock edges at which the buffers' `conflict`
flag was high); `lego_hw.tools.simulate` parses that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from lego_hw.errors import LegoError
from lego_hw.fusion import FusedArray


def emit_testbench(
    fused: FusedArray, core: str, iw: int, mode: int, inputs: Mapping[str, np.ndarray], max_cycles: int
) -> str:
    plan = fused.modes[mode]
    wl = plan.mapping.workload
    arr = plan.mapping.array
    dw, accw = arr.data_width, arr.acc_width
    lines = ["`timescale 1ns/1ps", "module tb;", "  reg clk = 1'b0;", "  always #5 clk = ~clk;"]
    lines += ["  reg rst = 1'b1;", "  reg start = 1'b0;", "  integer cyc = 0;", "  integer t0;", "  integer t1;"]
    lines += ["  integer i;", "  integer conflicts = 0;", "  always @(posedge clk) cyc <= cyc + 1;"]
    conns = [".clk(clk)", ".rst(rst)", ".start(start)", ".done(done)", ".conflict(conflict)"]
    lines += ["  wire done;", "  wire conflict;"]
    # The buffers' conflict flag, sampled every clock edge: a bank asked for two words in one cycle.
    lines.append("  always @(posedge clk) if (conflict === 1'b1) conflicts = conflicts + 1;")
    if len(fused.modes) > 1:
        mw = max(1, (len(fused.modes) - 1).bit_length())
        lines.append(f"  wire [{mw - 1}:0] mode = {mw}'d{mode};")
        conns.append(".mode(mode)")
    o = wl.output.name
    osize = math.prod(wl.shape(o))
    data: dict[str, list[int]] = {}
    for t in wl.inputs:
        n = t.name
        shape = wl.shape(n)
        if n not in inputs:
            raise LegoError(f"testbench: missing input array {n!r} (shape {shape})")
        a = np.asarray(inputs[n])
        if a.ndim != len(shape) or any(x < y for x, y in zip(a.shape, shape, strict=True)):
            raise LegoError(f"testbench: input {n} has shape {a.shape}, needs at least {shape}")
        flat = a[tuple(slice(0, s) for s in shape)].astype(np.int64).reshape(-1)
        lo, hi = -(1 << (dw - 1)), (1 << (dw - 1)) - 1
        if flat.size and (flat.min() < lo or flat.max() > hi):
            raise LegoError(f"testbench: input {n} has values outside the signed {dw}-bit range [{lo}, {hi}]")
        data[n] = [int(v) & ((1 << dw) - 1) for v in flat]
    data[o] = [0] * osize  # the output buffer starts cleared
    for n in data:
        w = accw if n == o else dw
        lines += [
            f"  reg host_{n}_we = 1'b0;",
            f"  reg [{iw - 1}:0] host_{n}_addr = {iw}'d0;",
            f"  reg [{w - 1}:0] host_{n}_wdata = {w}'d0;",
            f"  wire [{w - 1}:0] host_{n}_rdata;",
        ]
        conns += [f".host_{n}_{s}(host_{n}_{s})" for s in ("we", "addr", "wdata", "rdata")]
    lines.append(f"  {core}_system #(.DW({dw}), .ACCW({accw})) dut ({', '.join(conns)});")
    # Load through the host ports (and so through the banks' address functions), one word per tensor per cycle.
    load: list[str] = []
    for i in range(max(len(v) for v in data.values())):
        parts = []
        for n, vals in data.items():
            w = accw if n == o else dw
            if i < len(vals):
                parts.append(f"host_{n}_we = 1'b1; host_{n}_addr = {iw}'d{i}; host_{n}_wdata = {w}'h{vals[i]:x};")
            elif i == len(vals):
                parts.append(f"host_{n}_we = 1'b0;")
        load.append("    " + " ".join(parts) + " @(negedge clk);")
    load.append("    " + " ".join(f"host_{n}_we = 1'b0;" for n in data))
    lines += ["  initial begin", "    repeat (2) @(negedge clk);", *load]
    lines += [
        "    @(negedge clk);",
        "    rst = 1'b0;",
        "    @(negedge clk);",
        "    start = 1'b1;",
        "    t0 = cyc;",
        "    @(negedge clk);",
        "    start = 1'b0;",
        "    while (!done) begin",
        "      @(negedge clk);",
        f"      if (cyc - t0 > {max_cycles}) begin",
        '        $display("TIMEOUT");',
        "        $finish;",
        "      end",
        "    end",
        "    t1 = cyc;",
        f"    for (i = 0; i < {osize}; i = i + 1) begin",
        f"      host_{o}_addr = i;",
        "      #1;",
        f'      $display("OUT %0d %0d", i, $signed(host_{o}_rdata));',
        "    end",
        '    $display("CYCLES %0d", t1 - t0);',
        '    $display("CONFLICTS %0d", conflicts);',
        "    $finish;",
        "  end",
        "endmodule",
        "",
    ]
    return "\n".join(lines)
