"""Primitive-level graph of a generated array (LEGO Sec. IV, back end).

The front end (Sec. III) yields, per tensor, links between PEs. The back end lowers them to primitives:
operand registers, multipliers and adders (a MAC is split into a multiplier and an adder so a pipeline
register can go between them), muxes, FIFOs (delay chains), wires (delay-0 broadcast segments), memory
ports and a control unit. Each node carries a kind, a bit width, a combinational delay in ns from a
per-primitive delay model, and a latency in cycles (1 for a register, the depth for a FIFO, 0 for
combinational logic).

Multi-dataflow fusion: several Interconnects on the same array are lowered into one graph. Nodes are named
by structure (operand index, PE), so a link that two dataflows share is one edge; each node and edge
records the set of modes (dataflows) that use it, and a port fed by different sources in different
modes gets a mux. Unused-logic removal (unused_logic.py) then drops what a deployment does not configure.

Modelling choices (ours, not the paper's text):
- Operand registers are named by input position (in0, in1, ...) so workloads with different tensor names
  can share an array; the output's accumulator register is `acc`.
- A tensor whose only reuse is stationary is moved by a shift chain along array axis 0 (rows): preload
  for inputs (memory ports on row 0), drain for the output (write ports on the last row, a 2-input drain
  mux in front of each accumulator).
- An accumulator loop (acc -> add -> acc) is a loop-carried edge of distance 1: the LP can add no register
  inside it, so the adder (plus any mux in the loop) must fit the clock on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field

from lego_hw.errors import LegoError
from lego_hw.interconnect import MEMORY, Interconnect, TensorNetwork

PE = tuple[int, ...]

# Kinds of primitives. Sequential kinds hold state (latency >= 1 cycle); the rest are combinational.
REG, FIFO, PIPE = "reg", "fifo", "pipe_reg"
MULT, ADD, MUX, WIRE = "mult", "add", "mux", "wire"
MEM_READ, MEM_WRITE, CTRL = "mem_read", "mem_write", "ctrl"
SEQUENTIAL_KINDS = frozenset({REG, FIFO, PIPE, MEM_READ, CTRL})
REGISTER_KINDS = frozenset({REG, FIFO, PIPE})  # state counted as register bits
COMBINATIONAL_KINDS = frozenset({MULT, ADD, MUX, WIRE})
KINDS = SEQUENTIAL_KINDS | COMBINATIONAL_KINDS | {MEM_WRITE}


class DelayModel(BaseModel):
    """Per-primitive combinational delay in ns as a function of bit width (an assumption, not measured).

    Basis: a textbook gate-delay model at a generic ~28 nm node. A ripple-carry adder's critical path is
    one full-adder carry per bit (`width * t_fa`); an array multiplier's is about two adder rows deep
    (`2 * width * t_fa`); a mux tree is `ceil(log2(inputs))` 2:1 stages; a broadcast wire costs `t_wire_hop`
    per PE pitch it crosses (repeated wire); every register-to-register path also pays the flip-flop's
    clock-to-q plus setup (`t_reg`). With the defaults an 8-bit multiplier is 0.8 ns, a 32-bit accumulate
    adder 1.6 ns: an int8 MAC closes near 2.5 ns unpipelined, and the accumulate loop bounds the clock near
    1.7 ns. Swap in numbers from a synthesis report to retarget.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    t_fa: float = Field(default=0.05, gt=0, description="Full-adder carry delay, ns.")
    t_mux: float = Field(default=0.04, gt=0, description="2:1 mux delay, ns.")
    t_wire_hop: float = Field(default=0.15, ge=0, description="Wire delay per PE hop of a broadcast, ns.")
    t_reg: float = Field(default=0.08, ge=0, description="Flip-flop clock-to-q plus setup, ns.")

    def delay(self, kind: str, width: int, inputs: int = 2, hops: int = 1) -> float:
        """Combinational delay in ns of one primitive (0 for sequential primitives and ports)."""
        if kind == ADD:
            return width * self.t_fa
        if kind == MULT:
            return 2 * width * self.t_fa
        if kind == MUX:
            return max(1, math.ceil(math.log2(max(inputs, 2)))) * self.t_mux
        if kind == WIRE:
            return hops * self.t_wire_hop
        return 0.0


@dataclass
class PrimitiveGraph:
    """A networkx DiGraph of primitives plus the delay model its delays came from.

    Node attributes: kind, width (bits), delay (ns, combinational), latency (cycles), modes (frozenset of
    mode names), and optionally pe, tensor. Edge attributes: width (bits carried, the driver's width),
    distance (loop-carried iteration distance: 1 on the accumulator feedback, else 0), modes, port, and
    balanced (False for preload/drain shifts that no mode uses while computing: their data is static or
    time-multiplexed, so the LP does not balance latency across them; they are register-to-register
    through at most a mux and never need a pipeline register).
    """

    graph: nx.DiGraph
    delay_model: DelayModel = field(default_factory=DelayModel)
    modes: tuple[str, ...] = ()

    def nodes_of(self, *kinds: str) -> list[str]:
        return [n for n, k in self.graph.nodes(data="kind") if k in kinds]

    def count(self, *kinds: str) -> int:
        return len(self.nodes_of(*kinds))

    @property
    def register_bits(self) -> int:
        """Bits of state in registers, FIFOs and pipeline registers (memory ports and control excluded)."""
        g = self.graph
        return sum(g.nodes[n]["width"] * g.nodes[n]["latency"] for n in self.nodes_of(*REGISTER_KINDS))

    @property
    def num_registers(self) -> int:
        return self.count(*REGISTER_KINDS)

    @property
    def num_muxes(self) -> int:
        return self.count(MUX)

    def max_primitive_delay(self) -> tuple[str, float]:
        """The slowest single primitive and its delay (ns), register overhead not included."""
        g = self.graph
        name = max(g.nodes, key=lambda n: (g.nodes[n]["delay"], n))
        return name, float(g.nodes[name]["delay"])

    def copy(self) -> PrimitiveGraph:
        return PrimitiveGraph(self.graph.copy(), self.delay_model, self.modes)

    def summary(self) -> dict[str, int]:
        """Counts per kind plus register bits."""
        out = {k: self.count(k) for k in sorted(KINDS)}
        out["register_bits"] = self.register_bits
        out["nodes"] = self.graph.number_of_nodes()
        out["edges"] = self.graph.number_of_edges()
        return out


# ---------------------------------------------------------------------------------------------------------
# Lowering one Interconnect to per-mode connections, then merging modes.


@dataclass(frozen=True)
class _Node:
    name: str
    kind: str
    width: int
    latency: int = 0
    hops: int = 1
    op_width: int = 0  # operand width for the delay model (a multiplier's output is twice as wide)
    pe: PE | None = None
    tensor: str | None = None


@dataclass(frozen=True)
class _Conn:
    """`src` drives input `port` of `dst` (with loop-carried `distance`)."""

    src: str
    dst: str
    port: str
    distance: int = 0
    balanced: bool = True  # False: a preload/drain shift, used only outside the compute phase


def _pe_name(p: PE) -> str:
    return "_".join(str(c) for c in p)


def _up(p: PE) -> PE:
    return (p[0] - 1, *p[1:])


class _ModeLowering:
    """Nodes and connections of one dataflow (one Interconnect)."""

    def __init__(self, ic: Interconnect) -> None:
        self.ic = ic
        m = ic.mapping
        self.shape = m.pe_shape()
        self.pes: list[PE] = [tuple(p) for p in itertools.product(*[range(s) for s in self.shape])]
        self.dw = m.array.data_width
        self.aw = m.array.acc_width
        self.nodes: dict[str, _Node] = {}
        self.conns: list[_Conn] = []

    def node(self, n: _Node) -> str:
        self.nodes.setdefault(n.name, n)
        return n.name

    def conn(self, src: str, dst: str, port: str = "in", distance: int = 0, balanced: bool = True) -> None:
        self.conns.append(_Conn(src, dst, port, distance, balanced))

    def mem_read(self, op: str, p: PE, tensor: str) -> str:
        name = self.node(_Node(f"{op}.rd@{_pe_name(p)}", MEM_READ, self.dw, latency=1, pe=p, tensor=tensor))
        self.conn("ctrl", name, "en")
        return name

    def fifo(self, src: str, depth: int, width: int, label: str, tensor: str) -> str:
        """`depth` extra cycles after `src` (a FIFO node), or `src` itself for depth 0."""
        if depth <= 0:
            return src
        name = self.node(_Node(f"{label}.fifo", FIFO, width, latency=depth, tensor=tensor))
        self.conn(src, name)
        return name

    def lower(self) -> None:
        self.node(_Node("ctrl", CTRL, 1, latency=1))
        wl = self.ic.mapping.workload
        inputs = wl.inputs
        for idx, t in enumerate(inputs):
            self._input(f"in{idx}", self.ic.networks[t.name])
        for p in self.pes:
            pn = _pe_name(p)
            prod = f"in0.reg@{pn}"
            width = self.dw
            for idx in range(1, len(inputs)):
                width = min(2 * width, self.aw) if idx == 1 else min(width + self.dw, self.aw)
                mul = self.node(_Node(f"mul{idx}@{pn}", MULT, width, op_width=self.dw, pe=p))
                self.conn(prod, mul, "a")
                self.conn(f"in{idx}.reg@{pn}", mul, "b")
                prod = mul
            add = self.node(_Node(f"add@{pn}", ADD, self.aw, pe=p, tensor=wl.output.name))
            self.conn(prod, add, "a")
            self.node(_Node(f"acc@{pn}", REG, self.aw, latency=1, pe=p, tensor=wl.output.name))
        self._output(self.ic.networks[wl.output.name])

    def _input(self, op: str, net: TensorNetwork) -> None:
        all_mem = all(lk.src == MEMORY for lk in net.links)
        for p in self.pes:
            self.node(_Node(f"{op}.reg@{_pe_name(p)}", REG, self.dw, latency=1, pe=p, tensor=net.tensor))
        if net.stationary and all_mem:
            # Preload shift chain down axis 0: row 0 reads memory, row r takes row r-1's register.
            for p in self.pes:
                reg = f"{op}.reg@{_pe_name(p)}"
                if p[0] == 0:
                    self.conn(self.mem_read(op, p, net.tensor), reg)
                else:
                    self.conn(f"{op}.reg@{_pe_name(_up(p))}", reg, balanced=False)
            return
        parent = net.parent()
        feed: dict[PE, str] = {}  # node driving each PE's operand register in this mode

        def feed_of(p: PE) -> str:
            if p in feed:
                return feed[p]
            lk = parent[p]
            if lk.src == MEMORY:
                src = self.mem_read(op, p, net.tensor)
            elif lk.delay == 0:
                # Broadcast: a wire segment carries what the source PE's register is about to load.
                q = lk.src
                assert isinstance(q, tuple)
                hops = sum(abs(a - b) for a, b in zip(p, q, strict=True))
                src = self.node(_Node(f"{op}.wire@{_pe_name(p)}", WIRE, self.dw, hops=hops, pe=p, tensor=net.tensor))
                self.conn(feed_of(q), src)
            else:
                q = lk.src
                assert isinstance(q, tuple)
                src = self.fifo(
                    f"{op}.reg@{_pe_name(q)}", lk.delay - 1, self.dw, f"{op}.{_pe_name(q)}>{_pe_name(p)}", net.tensor
                )
            feed[p] = src
            return src

        for p in self.pes:
            self.conn(feed_of(p), f"{op}.reg@{_pe_name(p)}")

    def _output(self, net: TensorNetwork) -> None:
        all_mem = all(lk.dst == MEMORY for lk in net.links)
        last = self.shape[0] - 1
        if net.stationary and all_mem:
            # Output-stationary: accumulate in place (loop-carried edge), drain down axis 0 to the last row.
            for p in self.pes:
                pn = _pe_name(p)
                self.conn(f"acc@{pn}", f"add@{pn}", "psum", distance=1)
                self.conn(f"add@{pn}", f"acc@{pn}")
                if p[0] > 0:
                    # Drain shift (a second source of acc: a mux), used only after the compute phase.
                    self.conn(f"acc@{_pe_name(_up(p))}", f"acc@{pn}", balanced=False)
                if p[0] == last:
                    self._write(p, net.tensor)
            return
        for p in self.pes:
            self.conn(f"add@{_pe_name(p)}", f"acc@{_pe_name(p)}")
        incoming: dict[PE, list[str]] = {}  # partial sums each PE receives (a reduction tree may send several)
        for lk in net.links:
            src = lk.src
            assert isinstance(src, tuple)
            if lk.dst == MEMORY:
                self._write(src, net.tensor)
                continue
            dst = lk.dst
            assert isinstance(dst, tuple)
            if lk.delay == 0:
                psum = f"add@{_pe_name(src)}"  # spatial adder chain
            else:
                label = f"psum.{_pe_name(src)}>{_pe_name(dst)}"
                psum = self.fifo(f"acc@{_pe_name(src)}", lk.delay - 1, self.aw, label, net.tensor)
            incoming.setdefault(dst, []).append(psum)
        for dst, psums in sorted(incoming.items()):
            dn = _pe_name(dst)
            acc = psums[0]
            for i, extra in enumerate(psums[1:]):
                # Two children in the reduction tree: an extra adder merges their partial sums first.
                merge = self.node(_Node(f"psum_add{i}@{dn}", ADD, self.aw, pe=dst, tensor=net.tensor))
                self.conn(acc, merge, "a")
                self.conn(extra, merge, "b")
                acc = merge
            self.conn(acc, f"add@{dn}", "psum")

    def _write(self, p: PE, tensor: str) -> None:
        name = self.node(_Node(f"out.wr@{_pe_name(p)}", MEM_WRITE, self.aw, pe=p, tensor=tensor))
        self.conn(f"acc@{_pe_name(p)}", name, "d")
        self.conn("ctrl", name, "en")


def _mode_names(ics: Sequence[Interconnect]) -> list[str]:
    names: list[str] = []
    for ic in ics:
        base = ic.mapping.dataflow.name
        name = base if base not in names else f"{ic.mapping.workload.name}:{base}"
        k = 2
        while name in names:
            name, k = f"{base}#{k}", k + 1
        names.append(name)
    return names


def primitive_graph(
    interconnects: Interconnect | Sequence[Interconnect], delay_model: DelayModel | None = None
) -> PrimitiveGraph:
    """Lower one Interconnect, or several on the same array (multi-dataflow fusion), to primitives.

    Raises LegoError when the fused Interconnects use arrays of different shapes or widths.
    """
    ics = [interconnects] if isinstance(interconnects, Interconnect) else list(interconnects)
    if not ics:
        raise LegoError("primitive_graph needs at least one Interconnect")
    dm = delay_model or DelayModel()
    arrays = {(ic.mapping.pe_shape(), ic.mapping.array.data_width, ic.mapping.array.acc_width) for ic in ics}
    if len(arrays) > 1:
        raise LegoError(
            f"fused dataflows must share one array (PE shape, data and accumulator widths); got {sorted(arrays)}; "
            "map every workload onto the same ArraySpec with dataflows of the same number of space dimensions"
        )
    modes = _mode_names(ics)
    nodes: dict[str, _Node] = {}
    node_modes: dict[str, set[str]] = {}
    # (dst, port) -> {(src, distance): modes}
    sources: dict[tuple[str, str], dict[tuple[str, int], set[str]]] = {}
    balanced: dict[tuple[str, str, str, int], bool] = {}  # any mode uses the connection in its compute phase
    for mode, ic in zip(modes, ics, strict=True):
        low = _ModeLowering(ic)
        low.lower()
        for n in low.nodes.values():
            old = nodes.setdefault(n.name, n)
            if (old.kind, old.width, old.latency) != (n.kind, n.width, n.latency):
                raise LegoError(f"fused dataflows disagree on primitive {n.name}: {old} vs {n}")
            node_modes.setdefault(n.name, set()).add(mode)
        for c in low.conns:
            sources.setdefault((c.dst, c.port), {}).setdefault((c.src, c.distance), set()).add(mode)
            key = (c.dst, c.port, c.src, c.distance)
            balanced[key] = balanced.get(key, False) or c.balanced

    g = nx.DiGraph()
    for n in nodes.values():
        g.add_node(
            n.name,
            kind=n.kind,
            width=n.width,
            latency=n.latency,
            delay=dm.delay(n.kind, n.op_width or n.width, hops=n.hops),
            modes=frozenset(node_modes[n.name]),
            pe=n.pe,
            tensor=n.tensor,
        )
    for (dst, port), srcs in sorted(sources.items()):
        if len(srcs) == 1:
            ((src, dist), ms) = next(iter(srcs.items()))
            bal = balanced[(dst, port, src, dist)]
            g.add_edge(
                src, dst, width=g.nodes[src]["width"], distance=dist, modes=frozenset(ms), port=port, balanced=bal
            )
            continue
        # Several sources for one port (across modes, or a drain shift within one): a mux picks one.
        width = max(g.nodes[s]["width"] for s, _ in srcs)
        mux = f"mux.{port}>{dst}"
        all_modes = frozenset().union(*srcs.values())
        per_src_modes = {frozenset(ms) for ms in srcs.values()}
        g.add_node(
            mux,
            kind=MUX,
            width=width,
            latency=0,
            delay=dm.delay(MUX, width, inputs=len(srcs)),
            modes=all_modes,
            pe=g.nodes[dst]["pe"],
            tensor=g.nodes[dst]["tensor"],
            mode_mux=len(per_src_modes) > 1,  # sources differ between modes (not a within-mode drain mux)
        )
        for i, ((src, dist), ms) in enumerate(sorted(srcs.items())):
            bal = balanced[(dst, port, src, dist)]
            g.add_edge(
                src, mux, width=g.nodes[src]["width"], distance=dist, modes=frozenset(ms), port=f"i{i}", balanced=bal
            )
        g.add_edge(mux, dst, width=width, distance=0, modes=all_modes, port=port, balanced=True)
    return PrimitiveGraph(g, dm, tuple(modes))


def combinational_paths(pg: PrimitiveGraph) -> Iterator[tuple[str, dict[str, float]]]:
    """For each combinational node u: the longest delay (ns, both ends included) to each node reachable from
    u through combinational nodes only. Raises LegoError on a combinational loop."""
    g = pg.graph
    comb = [n for n in g.nodes if g.nodes[n]["latency"] == 0 and g.nodes[n]["kind"] in COMBINATIONAL_KINDS]
    sub = g.subgraph(comb)
    if not nx.is_directed_acyclic_graph(sub):
        cycle = nx.find_cycle(sub)
        raise LegoError(f"combinational loop through {cycle}; a loop needs a register")
    order = {n: i for i, n in enumerate(nx.topological_sort(sub))}
    for u in comb:
        reach = nx.descendants(sub, u) | {u}
        dist: dict[str, float] = {}
        for v in sorted(reach, key=order.__getitem__):
            preds = [dist[p] for p in sub.predecessors(v) if p in dist]
            dist[v] = g.nodes[v]["delay"] + (max(preds) if preds and v != u else 0.0)
        yield u, dist


def critical_path_ns(pg: PrimitiveGraph) -> float:
    """Longest register-to-register delay of the graph as built (ns, flip-flop overhead included)."""
    best = 0.0
    for _, dist in combinational_paths(pg):
        best = max(best, max(dist.values(), default=0.0))
    return best + pg.delay_model.t_reg
