"""Banked on-chip buffers and the system top (LEGO Sec. III-D, memory synthesis; Sec. IV, RTL generation).

`emit_buffers` writes the module `<core>_buffers`: per tensor the planned number of banks (`lego_hw.memory`,
`Design.memory_banks`; for a fused array the most any mode needs), each a plain memory (`reg` array) with one
read and one write port and the planned depth. Each core port's flat address is decoded into the tensor
index of the selected mode's shape, then the mode's bank function picks the bank and its in-bank address
function the word (`Banking.bank_of` / `Banking.address_of`, the same arithmetic in Verilog). Reads are
combinational like the core expects (0 when the port's enable is low); ports that hit the same bank with the
same word share the bank's one read (a multicast). The output banks read-modify-write: `bank[a] += data`.

A host port per tensor (`host_<T>_we/addr/wdata/rdata`, flat addresses in the mode's shape, through the
same bank functions) loads inputs, clears the output and reads results; it must only be used while the core
is idle (core ports win the bank). The `conflict` output is high in any cycle in which a bank is asked for
two different words (input) or two writes (output, one write port): the RTL-side check of conflict-freedom,
which the testbench counts, next to the Python enumeration `verify_conflict_free`.

`emit_system` writes `<core>_system`: the core and its buffers wired port to port, with the host ports,
`conflict`, clk/rst/start/done and `mode` on the outside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lego_hw.errors import LegoError
from lego_hw.fusion import FusedArray, group_modes
from lego_hw.memory import Banking

_ZERO = "1'b0"


@dataclass(frozen=True)
class BufferLayout:
    """The physical buffer of one tensor: `banks` memories of `depth` words of `width` bits."""

    tensor: str
    banks: int
    depth: int
    width: int
    per_mode: tuple[Banking, ...]  # the bank function of each mode

    @property
    def bits(self) -> int:
        return self.banks * self.depth * self.width


def buffer_layouts(fused: FusedArray, banks: Sequence[Mapping[str, Banking]]) -> dict[str, BufferLayout]:
    """Per tensor: the bank count and depth that cover every mode (`banks[m]` is mode m's plan)."""
    arr = fused.modes[0].mapping.array
    out: dict[str, BufferLayout] = {}
    for n in (*fused.inputs, fused.output):
        per = tuple(b[n] for b in banks)
        nb = max(b.num_banks for b in per)
        depth = max(b.depth(m.shapes[n]) for b, m in zip(per, fused.modes, strict=True))
        width = arr.acc_width if n == fused.output else arr.data_width
        out[n] = BufferLayout(n, nb, depth, width, per)
    return out


class _BufferEmitter:
    def __init__(self, fused: FusedArray, name: str, iw: int, layouts: Mapping[str, BufferLayout]) -> None:
        self.f = fused
        self.name = name
        self.iw = iw
        self.lay = layouts
        self.nm = len(fused.modes)
        self.mw = max(1, (self.nm - 1).bit_length())
        self.lines: list[str] = []
        self.unused: list[str] = []  # wires whose upper bits are not used (slices into the bank address)
        for lay in layouts.values():
            # Decoding runs at the core's index width; every bank number and word address must fit in it.
            if max(lay.depth, lay.banks) >= 1 << (iw - 1):
                raise LegoError(
                    f"buffer of {lay.tensor}: {lay.banks} banks x {lay.depth} words do not fit the {iw}-bit "
                    "address arithmetic; use fewer banks (a smaller array) or a smaller tensor"
                )

    def u(self, v: int) -> str:
        return f"{self.iw}'d{v}"

    def mux(self, values: Sequence[str]) -> str:
        groups = group_modes(values)
        expr = groups[-1][1]
        for modes, v in reversed(groups[:-1]):
            cond = " || ".join(f"mode == {self.mw}'d{m}" for m in modes)
            expr = f"(({cond}) ? {v} : {expr})"
        return expr

    def decode(self, tensor: str, addr: str, tag: str) -> tuple[str, str]:
        """Wires (bank, in-bank address) of flat address `addr` of `tensor`, per mode's shape and banking."""
        banks, words = [], []
        for m, b in zip(self.f.modes, self.lay[tensor].per_mode, strict=True):
            shape = m.shapes[tensor]
            sizes = b.dim_sizes(shape)
            bank_terms, word_terms = [], []
            radix = [math.prod(b.banks[d + 1 :]) for d in range(len(shape))]
            wstride = [math.prod(sizes[d + 1 :]) for d in range(len(shape))]
            for d, (s, g, nb) in enumerate(zip(shape, b.gcd, b.banks, strict=True)):
                stride = math.prod(shape[d + 1 :])
                x = addr if stride == 1 else f"({addr} / {self.u(stride)})"
                if d > 0:
                    x = f"({x} % {self.u(s)})"
                q = x if g == 1 else f"({x} / {self.u(g)})"
                if nb > 1:
                    digit = f"({q} % {self.u(nb)})"
                    bank_terms.append(digit if radix[d] == 1 else f"({digit} * {self.u(radix[d])})")
                    hi = f"({q} / {self.u(nb)})"
                    word = hi if g == 1 else f"(({hi} * {self.u(g)}) + ({x} % {self.u(g)}))"
                else:
                    word = x
                word_terms.append(word if wstride[d] == 1 else f"({word} * {self.u(wstride[d])})")
            banks.append(" + ".join(bank_terms) if bank_terms else self.u(0))
            words.append(" + ".join(word_terms))
        bk, wd = f"bk_{tag}", f"wa_{tag}"
        self.lines.append(f"  wire [{self.iw - 1}:0] {bk} = {self.mux(banks)};")
        self.unused.append(f"  wire [{self.iw - 1}:0] {wd} = {self.mux(words)};")
        return bk, wd

    def loose(self, line: str) -> None:
        """A wire at the core's index width of which only the low bits address a bank."""
        self.lines += ["  /* verilator lint_off UNUSEDSIGNAL */", line, "  /* verilator lint_on UNUSEDSIGNAL */"]

    def aw(self, tensor: str) -> int:
        return max(1, (self.lay[tensor].depth - 1).bit_length())

    def read_tensor(self, n: str) -> list[str]:
        """Input tensor: banks written by the host, read by the core's read ports (and the host when idle)."""
        lay, aw, f = self.lay[n], self.aw(n), self.f
        io = [
            f"  input host_{n}_we,",
            f"  input [{self.iw - 1}:0] host_{n}_addr,",
            f"  input [DW-1:0] host_{n}_wdata,",
            f"  output [DW-1:0] host_{n}_rdata,",
        ]
        nports = f.read_ports(n)
        for k in range(nports):
            io += [f"  input [{self.iw - 1}:0] rd_{n}_addr_{k},", f"  input rd_{n}_en_{k},"]
            io.append(f"  output [DW-1:0] rd_{n}_data_{k},")
        hb, ha = self.decode(n, f"host_{n}_addr", f"{n}_h")
        ports = [self.decode(n, f"rd_{n}_addr_{k}", f"{n}_r{k}") for k in range(nports)]
        for b in range(lay.banks):
            hits = [f"hit_{n}_r{k}_b{b}" for k in range(nports)]
            for k, (pb, _) in enumerate(ports):
                self.lines.append(f"  wire {hits[k]} = rd_{n}_en_{k} && ({pb} == {self.u(b)});")
            ra = ha
            for k in reversed(range(nports)):
                ra = f"{hits[k]} ? {ports[k][1]} : {ra}"
            self.loose(f"  wire [{self.iw - 1}:0] ra_{n}_b{b} = {ra};")
            self.lines.append(f"  reg [DW-1:0] bank_{n}_{b} [0:{lay.depth - 1}];")
            self.lines.append(f"  wire [DW-1:0] rq_{n}_b{b} = bank_{n}_{b}[ra_{n}_b{b}[{aw - 1}:0]];")
            self.lines.append(f"  always @(posedge clk) if (host_{n}_we && ({hb} == {self.u(b)}))")
            self.lines.append(f"    bank_{n}_{b}[{ha}[{aw - 1}:0]] <= host_{n}_wdata;")
            # A bank has one read: every port that hits it must want the selected word.
            clash = [f"({hits[k]} && ({ports[k][1]} != ra_{n}_b{b}))" for k in range(nports)]
            self.conflicts.append(f"cf_{n}_b{b}")
            self.lines.append(f"  wire cf_{n}_b{b} = {' || '.join(clash) if clash else _ZERO};")
        for k, (pb, _) in enumerate([*ports, (hb, ha)]):
            sel = "{DW{1'b0}}"
            for b in reversed(range(lay.banks)):
                sel = f"({pb} == {self.u(b)}) ? rq_{n}_b{b} : {sel}"
            if k < nports:
                self.lines.append(f"  assign rd_{n}_data_{k} = rd_{n}_en_{k} ? ({sel}) : {{DW{{1'b0}}}};")
            else:
                self.lines.append(f"  assign host_{n}_rdata = {sel};")
        return io

    def write_tensor(self, n: str) -> list[str]:
        """Output tensor: each bank accumulates the write that hits it; the host clears and reads when idle."""
        lay, aw, f = self.lay[n], self.aw(n), self.f
        io = [
            f"  input host_{n}_we,",
            f"  input [{self.iw - 1}:0] host_{n}_addr,",
            f"  input [ACCW-1:0] host_{n}_wdata,",
            f"  output [ACCW-1:0] host_{n}_rdata,",
        ]
        nports = f.write_ports
        for k in range(nports):
            io += [f"  input [{self.iw - 1}:0] wr_{n}_addr_{k},", f"  input wr_{n}_en_{k},"]
            io.append(f"  input [ACCW-1:0] wr_{n}_data_{k},")
        hb, ha = self.decode(n, f"host_{n}_addr", f"{n}_h")
        ports = [self.decode(n, f"wr_{n}_addr_{k}", f"{n}_w{k}") for k in range(nports)]
        for b in range(lay.banks):
            hits = [f"hit_{n}_w{k}_b{b}" for k in range(nports)]
            for k, (pb, _) in enumerate(ports):
                self.lines.append(f"  wire {hits[k]} = wr_{n}_en_{k} && ({pb} == {self.u(b)});")
            wa, wd = ha, "{ACCW{1'b0}}"
            for k in reversed(range(nports)):
                wa = f"{hits[k]} ? {ports[k][1]} : {wa}"
                wd = f"{hits[k]} ? wr_{n}_data_{k} : {wd}"
            cw = " || ".join(hits) if hits else "1'b0"
            self.lines.append(f"  wire cw_{n}_b{b} = {cw};")
            self.loose(f"  wire [{self.iw - 1}:0] ba_{n}_b{b} = {wa};")
            self.lines.append(f"  wire [ACCW-1:0] wd_{n}_b{b} = {wd};")
            self.lines.append(f"  reg [ACCW-1:0] bank_{n}_{b} [0:{lay.depth - 1}];")
            self.lines.append(f"  wire [ACCW-1:0] rq_{n}_b{b} = bank_{n}_{b}[ba_{n}_b{b}[{aw - 1}:0]];")
            self.lines += [
                "  always @(posedge clk)",
                f"    if (cw_{n}_b{b}) bank_{n}_{b}[ba_{n}_b{b}[{aw - 1}:0]] <= rq_{n}_b{b} + wd_{n}_b{b};",
                f"    else if (host_{n}_we && ({hb} == {self.u(b)})) bank_{n}_{b}[ba_{n}_b{b}[{aw - 1}:0]] <= "
                f"host_{n}_wdata;",
            ]
            # One write port per bank: two core writes in one cycle cannot both accumulate.
            pairs = [f"({hits[i]} && {hits[j]})" for i in range(nports) for j in range(i + 1, nports)]
            self.conflicts.append(f"cf_{n}_b{b}")
            self.lines.append(f"  wire cf_{n}_b{b} = {' || '.join(pairs) if pairs else _ZERO};")
        sel = "{ACCW{1'b0}}"
        for b in reversed(range(lay.banks)):
            sel = f"({hb} == {self.u(b)}) ? rq_{n}_b{b} : {sel}"
        self.lines.append(f"  assign host_{n}_rdata = {sel};")
        return io

    def emit(self) -> str:
        self.conflicts: list[str] = []
        io: list[str] = []
        for n in self.f.inputs:
            io += self.read_tensor(n)
        io += self.write_tensor(self.f.output)
        shapes = ", ".join(f"{n}: {lay.banks} x {lay.depth} x {lay.width} b" for n, lay in self.lay.items())
        head = [
            f"// Generated by lego_hw: banked buffers of core {self.name} ({shapes}); Verilog-2005.",
            f"module {self.name}_buffers #(",
            "  parameter DW = 8,",
            "  parameter ACCW = 32",
            ") (",
            "  input clk,",
        ]
        if self.nm > 1:
            # Modes with identical bank functions leave `mode` unused here.
            head += ["  /* verilator lint_off UNUSEDSIGNAL */", f"  input [{self.mw - 1}:0] mode,"]
            head.append("  /* verilator lint_on UNUSEDSIGNAL */")
        head += io
        head += ["  output conflict", ");"]
        # In-bank addresses are computed at the core's index width; only the low bits address a bank.
        body = ["  /* verilator lint_off UNUSEDSIGNAL */", *self.unused, "  /* verilator lint_on UNUSEDSIGNAL */"]
        body += self.lines
        body.append(f"  assign conflict = {' || '.join(self.conflicts) if self.conflicts else _ZERO};")
        return "\n".join([*head, *body, "endmodule", ""])


def emit_buffers(fused: FusedArray, name: str, iw: int, layouts: Mapping[str, BufferLayout]) -> str:
    """Verilog-2005 text of `<name>_buffers` (see the module docstring)."""
    return _BufferEmitter(fused, name, iw, layouts).emit()


def emit_system(fused: FusedArray, name: str, iw: int) -> str:
    """Verilog-2005 text of `<name>_system`: core `name` + `<name>_buffers`, host ports outside."""
    io = ["  input clk,", "  input rst,", "  input start,"]
    multi = len(fused.modes) > 1
    mw = max(1, (len(fused.modes) - 1).bit_length())
    if multi:
        io.append(f"  input [{mw - 1}:0] mode,")
    wires: list[str] = []
    core = [".clk(clk)", ".rst(rst)", ".start(start)", ".done(done)"]
    buf = [".clk(clk)", ".conflict(conflict)"]
    if multi:
        core.append(".mode(mode)")
        buf.append(".mode(mode)")
    o = fused.output
    for n in (*fused.inputs, o):
        w = "ACCW" if n == o else "DW"
        io += [
            f"  input host_{n}_we,",
            f"  input [{iw - 1}:0] host_{n}_addr,",
            f"  input [{w}-1:0] host_{n}_wdata,",
            f"  output [{w}-1:0] host_{n}_rdata,",
        ]
        buf += [f".host_{n}_{s}(host_{n}_{s})" for s in ("we", "addr", "wdata", "rdata")]
    for n in fused.inputs:
        for k in range(fused.read_ports(n)):
            wires += [f"  wire [{iw - 1}:0] rd_{n}_addr_{k};", f"  wire rd_{n}_en_{k};"]
            wires.append(f"  wire [DW-1:0] rd_{n}_data_{k};")
            for s in ("addr", "en", "data"):
                core.append(f".rd_{n}_{s}_{k}(rd_{n}_{s}_{k})")
                buf.append(f".rd_{n}_{s}_{k}(rd_{n}_{s}_{k})")
    for k in range(fused.write_ports):
        wires += [f"  wire [{iw - 1}:0] wr_{o}_addr_{k};", f"  wire wr_{o}_en_{k};"]
        wires.append(f"  wire [ACCW-1:0] wr_{o}_data_{k};")
        for s in ("addr", "en", "data"):
            core.append(f".wr_{o}_{s}_{k}(wr_{o}_{s}_{k})")
            buf.append(f".wr_{o}_{s}_{k}(wr_{o}_{s}_{k})")
    lines = [
        f"// Generated by lego_hw: core {name} + banked buffers {name}_buffers; Verilog-2005.",
        f"module {name}_system #(",
        "  parameter DW = 8,",
        "  parameter ACCW = 32",
        ") (",
        *io,
        "  output conflict,",
        "  output done",
        ");",
        *wires,
        f"  {name} #(.DW(DW), .ACCW(ACCW)) core ({', '.join(core)});",
        f"  {name}_buffers #(.DW(DW), .ACCW(ACCW)) buffers ({', '.join(buf)});",
        "endmodule",
        "",
    ]
    return "\n".join(lines)
