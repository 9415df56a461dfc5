"""Removal and gating of logic unused by the configured dataflows (LEGO Sec. IV, multi-dataflow fusion).

A fused array (primitive_graph over several Interconnects) holds the union of every mode's links plus
a mux wherever a port is fed by different sources in different modes. A deployment that configures only
some modes does not need the rest: primitives and edges that no configured mode uses are removed, and a
mux left with a single input collapses into a wire. Registers that remain but serve only some of the
configured modes can be clock-gated in the others; their share is reported.

The paper states this step as an optimisation over which paths to gate; with per-node and per-edge mode
sets recorded at fusion time the removal is exact and needs no solver: a primitive is kept iff some
configured mode uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lego_hw.backend.primitives import MUX, REGISTER_KINDS, PrimitiveGraph
from lego_hw.errors import LegoError


@dataclass(frozen=True)
class LogicCounts:
    """Size of a primitive graph."""

    nodes: int
    edges: int
    muxes: int
    mode_muxes: int  # muxes whose inputs are used by different modes (fusion muxes)
    registers: int
    register_bits: int

    @classmethod
    def of(cls, pg: PrimitiveGraph) -> LogicCounts:
        g = pg.graph
        muxes = pg.nodes_of(MUX)
        return cls(
            nodes=g.number_of_nodes(),
            edges=g.number_of_edges(),
            muxes=len(muxes),
            mode_muxes=sum(1 for m in muxes if g.nodes[m].get("mode_mux", False)),
            registers=pg.num_registers,
            register_bits=pg.register_bits,
        )


@dataclass(frozen=True)
class UnusedLogicReport:
    """The pruned graph and what pruning and gating achieve."""

    graph: PrimitiveGraph
    configured: tuple[str, ...]
    before: LogicCounts
    after: LogicCounts
    collapsed_muxes: int
    gated_registers: int  # registers used by some but not all configured modes
    gated_register_bits: int

    @property
    def gated_fraction(self) -> float:
        """Fraction of the remaining registers that can be clock-gated in some configured mode."""
        return self.gated_registers / self.after.registers if self.after.registers else 0.0

    @property
    def gated_bit_fraction(self) -> float:
        return self.gated_register_bits / self.after.register_bits if self.after.register_bits else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "configured": list(self.configured),
            "before": vars(self.before),
            "after": vars(self.after),
            "collapsed_muxes": self.collapsed_muxes,
            "gated_registers": self.gated_registers,
            "gated_register_bits": self.gated_register_bits,
            "gated_fraction": self.gated_fraction,
            "gated_bit_fraction": self.gated_bit_fraction,
        }


def remove_unused_logic(pg: PrimitiveGraph, modes: Iterable[str]) -> UnusedLogicReport:
    """Keep only the logic used by `modes` (a subset of `pg.modes`); collapse single-input muxes.

    Raises LegoError when a mode is unknown or none is given.
    """
    keep = frozenset(modes)
    if not keep:
        raise LegoError(f"configure at least one dataflow mode; the graph has {list(pg.modes)}")
    unknown = sorted(keep - set(pg.modes))
    if unknown:
        raise LegoError(f"unknown dataflow mode(s) {unknown}; the fused graph has {list(pg.modes)}")
    before = LogicCounts.of(pg)
    out = pg.copy()
    g = out.graph
    for u, v, d in list(g.edges(data=True)):
        used = d["modes"] & keep
        if used:
            g.edges[u, v]["modes"] = used
        else:
            g.remove_edge(u, v)
    for n, d in list(g.nodes(data=True)):
        used = d["modes"] & keep
        if used:
            g.nodes[n]["modes"] = used
        else:
            g.remove_node(n)
    collapsed = 0
    for m in out.nodes_of(MUX):
        ins = list(g.in_edges(m, data=True))
        if len(ins) > 1:
            g.nodes[m]["mode_mux"] = len({d["modes"] for _, _, d in ins}) > 1
            g.nodes[m]["delay"] = out.delay_model.delay(MUX, g.nodes[m]["width"], inputs=len(ins))
            continue
        collapsed += 1
        outs = list(g.out_edges(m, data=True))
        g.remove_node(m)
        if not ins:
            continue
        src, _, din = ins[0]
        for _, dst, dout in outs:
            g.add_edge(
                src,
                dst,
                width=din["width"],
                distance=din["distance"] + dout["distance"],
                modes=din["modes"] & dout["modes"],
                port=dout["port"],
                balanced=din.get("balanced", True) and dout.get("balanced", True),
            )
    out.modes = tuple(x for x in pg.modes if x in keep)
    regs = out.nodes_of(*REGISTER_KINDS)
    gated = [n for n in regs if g.nodes[n]["modes"] != keep]
    gated_bits = sum(g.nodes[n]["width"] * g.nodes[n]["latency"] for n in gated)
    return UnusedLogicReport(out, out.modes, before, LogicCounts.of(out), collapsed, len(gated), gated_bits)
