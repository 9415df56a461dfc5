"""Generated self-running testbench for a core (LEGO Sec. V, verification against the golden model).

The testbench holds the buffers as behavioural memories (one flat array per tensor, in the selected
mode's shape, row-major), loads the inputs, pulses `start`, counts the clock edges from the one that
samples `start` to the one that raises `done`, then prints every output element (`OUT <flat> <value>`)
and `CYCLES <n>`; `lego_hw.tools.simulate` parses that. Reads are combinational and return 0 when the
port's enable is low; writes accumulate (`mem += data`), applied in port order within a cycle.
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
    lines += ["  integer i;", "  always @(posedge clk) cyc <= cyc + 1;"]
    conns = [".clk(clk)", ".rst(rst)", ".start(start)", ".done(done)"]
    lines.append("  wire done;")
    if len(fused.modes) > 1:
        mw = max(1, (len(fused.modes) - 1).bit_length())
        lines.append(f"  wire [{mw - 1}:0] mode = {mw}'d{mode};")
        conns.append(".mode(mode)")
    init: list[str] = []
    for t in wl.inputs:
        n = t.name
        shape = wl.shape(n)
        size = math.prod(shape)
        if n not in inputs:
            raise LegoError(f"testbench: missing input array {n!r} (shape {shape})")
        a = np.asarray(inputs[n])
        if a.ndim != len(shape) or any(x < y for x, y in zip(a.shape, shape, strict=True)):
            raise LegoError(f"testbench: input {n} has shape {a.shape}, needs at least {shape}")
        flat = a[tuple(slice(0, s) for s in shape)].astype(np.int64).reshape(-1)
        lo, hi = -(1 << (dw - 1)), (1 << (dw - 1)) - 1
        if flat.size and (flat.min() < lo or flat.max() > hi):
            raise LegoError(f"testbench: input {n} has values outside the signed {dw}-bit range [{lo}, {hi}]")
        lines.append(f"  reg [{dw - 1}:0] mem_{n} [0:{size - 1}];")
        mask = (1 << dw) - 1
        init += [f"    mem_{n}[{i}] = {dw}'h{int(v) & mask:x};" for i, v in enumerate(flat)]
        for k in range(fused.read_ports(n)):
            lines += [f"  wire [{iw - 1}:0] rd_{n}_addr_{k};", f"  wire rd_{n}_en_{k};"]
            lines.append(f"  wire [{dw - 1}:0] rd_{n}_data_{k} = rd_{n}_en_{k} ? mem_{n}[rd_{n}_addr_{k}] : {dw}'d0;")
            conns += [f".rd_{n}_addr_{k}(rd_{n}_addr_{k})", f".rd_{n}_en_{k}(rd_{n}_en_{k})"]
            conns.append(f".rd_{n}_data_{k}(rd_{n}_data_{k})")
    o = wl.output.name
    osize = math.prod(wl.shape(o))
    lines.append(f"  reg [{accw - 1}:0] mem_{o} [0:{osize - 1}];")
    writes = []
    for k in range(fused.write_ports):
        lines += [
            f"  wire [{iw - 1}:0] wr_{o}_addr_{k};",
            f"  wire wr_{o}_en_{k};",
            f"  wire [{accw - 1}:0] wr_{o}_data_{k};",
        ]
        conns += [
            f".wr_{o}_addr_{k}(wr_{o}_addr_{k})",
            f".wr_{o}_en_{k}(wr_{o}_en_{k})",
            f".wr_{o}_data_{k}(wr_{o}_data_{k})",
        ]
        writes.append(f"    if (wr_{o}_en_{k}) mem_{o}[wr_{o}_addr_{k}] = mem_{o}[wr_{o}_addr_{k}] + wr_{o}_data_{k};")
    lines += ["  always @(posedge clk) begin", *writes, "  end"]
    lines.append(f"  {core} #(.DW({dw}), .ACCW({accw})) dut ({', '.join(conns)});")
    lines += ["  initial begin", *init, f"    for (i = 0; i < {osize}; i = i + 1) mem_{o}[i] = {accw}'d0;"]
    lines += [
        "    repeat (2) @(negedge clk);",
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
        f'    for (i = 0; i < {osize}; i = i + 1) $display("OUT %0d %0d", i, $signed(mem_{o}[i]));',
        '    $display("CYCLES %0d", t1 - t0);',
        "    $finish;",
        "  end",
        "endmodule",
        "",
    ]
    return "\n".join(lines)
