"""Verilog-2005 emitter of a (fused) PE array core (LEGO Sec. IV, RTL generation).

The emitted module is the synthesizable core: PE operand registers and delay chains (from the
interconnect's links), MACs, accumulators / partial-sum chains, the phase controller (`lego_hw.schedule`),
tile counters and the affine address generators of every buffer port (`lego_hw.memory`). Buffers are NOT
inside: each port is an (address, enable) pair plus data, so Yosys counts array + control + address
generation; `lego_hw.rtl.buffers` emits the banked memories (`<name>_buffers`, `<name>_system`). Reads are
combinational (returning 0 when the enable is low, i.e. for out-of-range indices); writes accumulate into
the output buffer. Data widths are module parameters `DW` (operands, signed) and `ACCW` (accumulators);
ACCW must exceed the product width (inputs x DW).

Module ports: clk, rst (synchronous), start, done, [mode], and per input tensor X and read port k
`rd_X_addr_k`, `rd_X_en_k`, `rd_X_data_k`; per write port k of output O `wr_O_addr_k`, `wr_O_en_k`,
`wr_O_data_k`. Addresses are flat row-major indices of the tensor in the selected mode's shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lego_hw.fusion import FusedArray, group_modes
from lego_hw.memory import AddressStream
from lego_hw.rtl.plan import PE, ModePlan, Port, Source

S_IDLE, S_PRE, S_COMP, S_DRAIN, S_NEXT, S_DONE = range(6)
_STATES = ("S_IDLE", "S_PRE", "S_COMP", "S_DRAIN", "S_NEXT", "S_DONE")


def pe_name(pe: PE) -> str:
    return "p" + "_".join(str(x) for x in pe)


def index_width(fused: FusedArray) -> int:
    """Bits of the signed index/counter arithmetic: enough for every constant, bound and flat address."""
    big = 1
    for m in fused.modes:
        big = max(big, m.preload, m.compute, m.drain, *(c.limit + c.step for c in m.counters))
        for n, shape in m.shapes.items():
            big = max(big, math.prod(shape), *shape)
            terms = m.offsets[n]
            for d, (b, coefs) in enumerate(terms):
                off = abs(b) + sum(abs(k) * (c.limit + c.step) for k, c in zip(coefs, m.counters, strict=True))
                ports = [*m.in_ports.get(n, ()), *(m.out_ports if n == m.output else ())]
                for p in ports:
                    big = max(big, off + abs(p.stream.const[d]) + abs(p.stream.slope[d]) * m.compute)
                big = max(big, off)
        for v in m.valid.values():
            if v is not None:
                for _, v0, st in v.bound_checks:
                    big = max(big, abs(v0) + abs(st) * m.compute + max(c.limit for c in m.counters))
    return max(8, (2 * big).bit_length() + 1)


class _Emitter:
    def __init__(self, fused: FusedArray, name: str) -> None:
        self.f = fused
        self.name = name
        self.iw = index_width(fused)
        self.nm = len(fused.modes)
        self.mw = max(1, (self.nm - 1).bit_length())
        self.decl: list[str] = []
        self.assigns: list[str] = []
        self.seq: list[str] = []
        self.delays: set[tuple[str, int]] = set()

    # -- helpers ---------------------------------------------------------------------------
    def s(self, v: int) -> str:
        """Signed IW-bit literal."""
        return f"-{self.iw}'sd{-v}" if v < 0 else f"{self.iw}'sd{v}"

    def u(self, v: int) -> str:
        return f"{self.iw}'d{v}"

    def mux(self, values: Sequence[str]) -> str:
        groups = group_modes(values)
        if len(groups) == 1:
            return groups[0][1]
        expr = groups[-1][1]
        for modes, v in reversed(groups[:-1]):
            cond = " || ".join(f"mode == {self.mw}'d{m}" for m in modes)
            expr = f"(({cond}) ? {v} : {expr})"
        return expr

    def wire(self, name: str, width: str, expr: str, signed: bool = False) -> None:
        sg = "signed " if signed else ""
        self.decl.append(f"  wire {sg}{width}{name};")
        self.assigns.append(f"  assign {name} = {expr};")

    def affine(self, terms: Sequence[tuple[str, int]], const: int) -> str:
        """Signed sum `const + sum(coef * signal)` at IW bits; signals are IW-bit (unsigned) vectors."""
        parts = []
        for sig, k in terms:
            if k == 0:
                continue
            parts.append(f"$signed({sig})" if k == 1 else f"($signed({sig}) * {self.s(k)})")
        if const != 0 or not parts:
            parts.append(self.s(const))
        return " + ".join(parts)

    def delayed(self, kind: str | None, src: PE, k: int, width: str) -> str:
        """`src`'s operand of input `kind` (or its partial sum, kind None) delayed k cycles; chains are shared."""
        base = f"opv_{kind}_{pe_name(src)}" if kind is not None else f"acc_{pe_name(src)}"
        stem = f"dl_{kind}_{pe_name(src)}" if kind is not None else f"dlp_{pe_name(src)}"
        for j in range(1, k + 1):
            key = (stem, j)
            if key not in self.delays:
                self.delays.add(key)
                prev = base if j == 1 else f"{stem}_{j - 1}"
                self.decl.append(f"  reg {width}{stem}_{j};")
                self.seq.append(f"    {stem}_{j} <= {prev};")
        return base if k == 0 else f"{stem}_{k}"

    def state_is(self, st: int) -> str:
        return f"(state == {_STATES[st]})"

    # -- controller ------------------------------------------------------------------------
    def controller(self) -> None:
        f, iw = self.f, self.iw
        nk = max((len(m.counters) for m in f.modes), default=0)
        self.nk = nk
        self.decl.append("  reg [2:0] state;")
        self.decl.append(f"  reg [{iw - 1}:0] pc;")
        for k in range(nk):
            self.decl.append(f"  reg [{iw - 1}:0] cnt{k};")

        def per_mode_counter(k: int) -> tuple[list[str], list[str]]:
            steps, limits = [], []
            for m in f.modes:
                if k < len(m.counters):
                    steps.append(self.u(m.counters[k].step))
                    limits.append(self.u(m.counters[k].limit))
                else:
                    steps.append(self.u(1))
                    limits.append(self.u(1))
            return steps, limits

        for k in range(nk):
            steps, limits = per_mode_counter(k)
            self.wire(f"step{k}", f"[{iw - 1}:0] ", self.mux(steps))
            self.wire(f"last{k}", "", f"(cnt{k} + step{k} >= {self.mux(limits)})")
        all_last = " && ".join(f"last{k}" for k in range(nk)) if nk else "1'b1"
        self.wire("last_tile", "", all_last)
        pre = self.mux([self.u(max(m.preload - 1, 0)) for m in f.modes])
        comp = self.mux([self.u(m.compute - 1) for m in f.modes])
        drn = self.mux([self.u(max(m.drain - 1, 0)) for m in f.modes])
        first = self.mux(["S_PRE" if m.preload else "S_COMP" for m in f.modes])
        after = self.mux(["S_DRAIN" if m.drain else "S_NEXT" for m in f.modes])
        self.wire("first_phase", "[2:0] ", first)
        self.wire("after_compute", "[2:0] ", after)
        lines = [
            "  always @(posedge clk) begin",
            "    if (rst) begin",
            "      state <= S_IDLE;",
            f"      pc <= {self.u(0)};",
        ]
        lines += [f"      cnt{k} <= {self.u(0)};" for k in range(nk)]
        lines += ["    end else begin", "      case (state)"]
        restart = ["          state <= first_phase;", f"          pc <= {self.u(0)};"]
        restart += [f"          cnt{k} <= {self.u(0)};" for k in range(nk)]
        lines += ["        S_IDLE, S_DONE: if (start) begin", *restart, "        end"]
        for st, length, nxt in (
            ("S_PRE", pre, "S_COMP"),
            ("S_COMP", comp, "after_compute"),
            ("S_DRAIN", drn, "S_NEXT"),
        ):
            lines += [
                f"        {st}: if (pc == {length}) begin",
                f"          state <= {nxt};",
                f"          pc <= {self.u(0)};",
                f"        end else pc <= pc + {self.u(1)};",
            ]
        lines += ["        S_NEXT: begin", "          if (last_tile) state <= S_DONE;", "          else begin"]
        lines += ["            state <= first_phase;"]
        for k in range(nk):
            carry = " && ".join(f"last{j}" for j in range(k + 1, nk)) or "1'b1"
            lines.append(f"            if ({carry}) cnt{k} <= last{k} ? {self.u(0)} : cnt{k} + step{k};")
        lines += [
            "          end",
            "        end",
            "        default: state <= S_IDLE;",
            "      endcase",
            "    end",
            "  end",
        ]
        self.ctrl = lines
        self.assigns.append("  assign done = (state == S_DONE);")
        # tile offsets per tensor and dimension
        tensors = [*f.inputs, f.output]
        for n in tensors:
            dims = len(f.modes[0].shapes[n])
            for d in range(dims):
                exprs = []
                for m in f.modes:
                    b, coefs = m.offsets[n][d]
                    exprs.append(self.affine([(f"cnt{k}", c) for k, c in enumerate(coefs)], b))
                self.wire(f"off_{n}_{d}", f"[{iw - 1}:0] ", self.mux(exprs), signed=True)
        if not any(p.phase == "write" for m in f.modes for p in m.out_ports):
            return  # mac_en only gates systolic-output writes
        self.wire("mac_cond", "", self.mux([f"({self.state_is(S_COMP)} && pc < {self.u(m.window)})" for m in f.modes]))
        self.decl.append("  reg mac_en;")
        self.seq.append("    mac_en <= mac_cond;")

    # -- memory ports ----------------------------------------------------------------------
    def port_exprs(self, m: ModePlan, mi: int, tensor: str, port: Port, tag: str) -> tuple[str, str]:
        """(enable, flat address) of one port in mode m."""
        st: AddressStream = port.stream
        shape = m.shapes[tensor]
        conds, addr_terms = [], []
        strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
        for d, (c, sl) in enumerate(zip(st.const, st.slope, strict=True)):
            nm = f"ix_{tag}_m{mi}_{d}"
            terms = [(f"off_{tensor}_{d}", 1), ("pc", sl)]
            self.wire(nm, f"[{self.iw - 1}:0] ", self.affine(terms, c), signed=True)
            conds.append(f"({nm} >= {self.s(0)}) && ({nm} < {self.s(shape[d])})")
            addr_terms.append((nm, strides[d]))
        phase = {
            "preload": self.state_is(S_PRE),
            "compute": f"({self.state_is(S_COMP)} && pc < {self.u(m.window)})",
            "drain": self.state_is(S_DRAIN),
            "write": "mac_en",
        }[port.phase]
        en = f"{phase} && " + " && ".join(conds)
        return en, self.affine(addr_terms, 0)

    def ports(self) -> list[str]:
        f, iw = self.f, self.iw
        io: list[str] = []
        for n in f.inputs:
            for k in range(f.read_ports(n)):
                io += [
                    f"  output [{iw - 1}:0] rd_{n}_addr_{k},",
                    f"  output rd_{n}_en_{k},",
                    f"  input [DW-1:0] rd_{n}_data_{k},",
                ]
                ens, addrs = [], []
                for mi, m in enumerate(f.modes):
                    if k < len(m.in_ports[n]):
                        en, addr = self.port_exprs(m, mi, n, m.in_ports[n][k], f"{n}_{k}")
                    else:
                        en, addr = "1'b0", self.s(0)
                    ens.append(en)
                    addrs.append(addr)
                self.assigns.append(f"  assign rd_{n}_en_{k} = {self.mux(ens)};")
                self.assigns.append(f"  assign rd_{n}_addr_{k} = {self.mux(addrs)};")
        o = f.output
        for k in range(f.write_ports):
            io += [
                f"  output [{iw - 1}:0] wr_{o}_addr_{k},",
                f"  output wr_{o}_en_{k},",
                f"  output [ACCW-1:0] wr_{o}_data_{k},",
            ]
            ens, addrs, datas = [], [], []
            for mi, m in enumerate(f.modes):
                if k < len(m.out_ports):
                    port = m.out_ports[k]
                    en, addr = self.port_exprs(m, mi, o, port, f"{o}_w{k}")
                    data = f"acc_{pe_name(port.pe)}" if port.phase == "drain" else f"sum_{pe_name(port.pe)}"
                else:
                    en, addr, data = "1'b0", self.s(0), "{ACCW{1'b0}}"
                ens.append(en)
                addrs.append(addr)
                datas.append(data)
            self.assigns.append(f"  assign wr_{o}_en_{k} = {self.mux(ens)};")
            self.assigns.append(f"  assign wr_{o}_addr_{k} = {self.mux(addrs)};")
            self.assigns.append(f"  assign wr_{o}_data_{k} = {self.mux(datas)};")
        return io

    # -- PEs -------------------------------------------------------------------------------
    def operand(self, tensor: str, pe: PE) -> None:
        srcs = self.f.sources(tensor, pe)
        pn = pe_name(pe)
        opv, reg = f"opv_{tensor}_{pn}", f"op_{tensor}_{pn}"

        def next_expr(s: Source) -> str | None:
            if s.kind == "port":
                return f"rd_{tensor}_data_{s.port}"
            if s.kind == "link":
                assert s.src is not None
                return None if s.delay == 0 else self.delayed(tensor, s.src, s.delay - 1, "[DW-1:0] ")
            shift = f"rd_{tensor}_data_{s.port}" if s.src is None else f"op_{tensor}_{pe_name(s.src)}"
            return f"({self.state_is(S_PRE)} ? {shift} : {reg})"

        nexts = [next_expr(s) for s in srcs]
        wires = [f"opv_{tensor}_{pe_name(s.src)}" if s.src is not None else "" for s in srcs]
        regs = [e for e in nexts if e is not None]
        if not regs:  # a wire (broadcast) in every mode: no register, at most a mux on the wire
            self.wire(opv, "[DW-1:0] ", self.mux(wires))
            return
        # Modes that use a wire do not care about the register: give them another mode's input (no extra arm).
        self.decl.append(f"  reg [DW-1:0] {reg};")
        self.seq.append(f"    {reg} <= {self.mux([e if e is not None else regs[0] for e in nexts])};")
        vals = [reg if e is not None else w for e, w in zip(nexts, wires, strict=True)]
        self.wire(opv, "[DW-1:0] ", self.mux(vals))

    def mac(self, pe: PE) -> None:
        f = self.f
        pn = pe_name(pe)
        n_in = len(f.inputs)
        conds = []
        for m in f.modes:
            v = m.valid[pe]
            if v is None:
                conds.append("1'b0")
                continue
            parts = [self.state_is(S_COMP)]
            if v.lo > 0:
                parts.append(f"pc >= {self.u(v.lo)}")
            parts.append(f"pc <= {self.u(v.hi)}")
            for k, v0, st in v.bound_checks:
                lim = m.counters[k].limit
                if st == 0:
                    parts.append(f"($signed(cnt{k}) < {self.s(lim - v0)})")
                else:
                    parts.append(f"({self.affine([(f'cnt{k}', 1), ('pc', st)], v0)} < {self.s(lim)})")
            conds.append("(" + " && ".join(parts) + ")")
        self.decl.append(f"  reg vld_{pn};")
        self.seq.append(f"    vld_{pn} <= {self.mux(conds)};")
        ops = [f"opv_{t}_{pn}" for t in f.inputs]
        if n_in == 1:
            mul = ops[0]
        else:
            mul = " * ".join(f"$signed({{{{(PW-DW){{{o}[DW-1]}}}}, {o}}})" for o in ops)
        self.wire(f"mul_{pn}", "[PW-1:0] ", mul, signed=True)
        self.wire(
            f"prod_{pn}", "[ACCW-1:0] ", f"vld_{pn} ? {{{{(ACCW-PW){{mul_{pn}[PW-1]}}}}, mul_{pn}}} : {{ACCW{{1'b0}}}}"
        )

    def accumulate(self, pe: PE) -> None:
        f = self.f
        pn = pe_name(pe)
        addends, nexts = [], []
        for m in f.modes:
            if m.out_stationary:
                addends.append(f"acc_{pn}")
                above = "{ACCW{1'b0}}" if pe[0] == 0 else f"acc_{pe_name((pe[0] - 1, *pe[1:]))}"
                nexts.append(f"({self.state_is(S_COMP)} ? sum_{pn} : {self.state_is(S_DRAIN)} ? {above} : acc_{pn})")
            else:
                terms = [self.delayed(None, q, d - 1, "[ACCW-1:0] ") for q, d in m.out_links[pe]]
                addends.append(" + ".join(terms) if terms else "{ACCW{1'b0}}")
                nexts.append(f"({self.state_is(S_COMP)} ? sum_{pn} : {{ACCW{{1'b0}}}})")
        self.wire(f"sum_{pn}", "[ACCW-1:0] ", f"{self.mux(addends)} + prod_{pn}")
        if not self.acc_needed(pe):
            return  # a writing PE of a systolic output in every mode: its sum goes straight to the buffer
        self.decl.append(f"  reg [ACCW-1:0] acc_{pn};")
        self.acc_lines.append(f"      acc_{pn} <= {{ACCW{{1'b0}}}};")
        self.acc_next.append(f"      acc_{pn} <= {self.mux(nexts)};")

    def acc_needed(self, pe: PE) -> bool:
        for m in self.f.modes:
            if m.out_stationary:
                return True
            if any(q == pe for links in m.out_links.values() for q, _ in links):
                return True
        return False

    # -- module ----------------------------------------------------------------------------
    def emit(self) -> str:
        f = self.f
        self.acc_lines: list[str] = []
        self.acc_next: list[str] = []
        self.controller()
        io = self.ports()
        for pe in f.pe_list:
            for t in f.inputs:
                self.operand(t, pe)
        for pe in f.pe_list:
            self.mac(pe)
            self.accumulate(pe)
        n_in = len(f.inputs)
        head = [
            f"// Generated by lego_hw: {self.nm} dataflow mode(s) "
            + ", ".join(f"{i}={m.name}" for i, m in enumerate(f.modes))
            + f" on a {'x'.join(map(str, f.pe_shape))} PE array.",
            "// Core only: buffers are outside (see the rd_*/wr_* ports); Verilog-2005.",
            f"module {self.name} #(",
            "  parameter DW = 8,",
            "  parameter ACCW = 32",
            ") (",
            "  input clk,",
            "  input rst,",
            "  input start,",
        ]
        if self.nm > 1:
            head.append(f"  input [{self.mw - 1}:0] mode,")
        head += io
        head.append("  output done")
        head.append(");")
        head.append(f"  localparam PW = {n_in} * DW;")
        head.append("  localparam [2:0] " + ", ".join(f"{s} = 3'd{i}" for i, s in enumerate(_STATES)) + ";")
        body = [*self.decl, *self.assigns, *self.ctrl]
        body += ["  always @(posedge clk) begin", *self.seq, "  end"]
        body += ["  always @(posedge clk) begin", "    if (rst) begin", *self.acc_lines, "    end else begin"]
        body += self.acc_next + ["    end", "  end"]
        return "\n".join([*head, *body, "endmodule", ""])


def emit_core(fused: FusedArray, name: str) -> str:
    """Verilog-2005 text of the core module `name`."""
    return _Emitter(fused, name).emit()
