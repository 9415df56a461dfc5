"""FU-to-FU interconnect per tensor by minimum-cost arborescence (LEGO Sec. III-C).

Every PE must receive each input element it uses, either from a memory port or from a PE that used the
same element `dt` cycles earlier at offset `ds` (a link through `dt` registers; `dt = 0` is a wire).
Candidate links come from the reuse lattice; memory is a virtual root whose links cost a buffer read.
Chu-Liu/Edmonds (networkx) picks, per tensor, the cheapest tree that reaches every PE: each PE ends up
with exactly one source. For the output the same construction runs on reversed links: each PE hands its
partial sum to exactly one successor or writes it to memory.

Stationary reuse (ds = 0) needs no link: the PE holds the element. A tensor whose only reuse is
stationary is loaded into the array in a preload phase (inputs) or read out after the tile (output) by
the shift chains of the RTL, not by the arborescence.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import networkx as nx

from lego_hw.dataflow import Mapping
from lego_hw.reuse import ReuseVector, TensorReuse, analyze

MEMORY = "mem"
PE = tuple[int, ...]


@dataclass(frozen=True)
class LinkCosts:
    """Cost weights of the arborescence, in register-bit equivalents."""

    fifo_bit: float = 1.0  # one bit of delay register
    wire_hop: float = 0.25  # per PE hop of a link, per bit (wires and drivers)
    memory_read: float = 64.0  # per bit of a buffer port feeding one PE


@dataclass(frozen=True)
class Link:
    """`dst` receives the element `src` had `delay` cycles earlier (src = MEMORY for a buffer port)."""

    src: PE | str
    dst: PE | str
    delay: int


@dataclass(frozen=True)
class TensorNetwork:
    """The chosen links of one tensor."""

    tensor: str
    role: str
    reuse: TensorReuse
    stationary: bool  # the PE holds the element across cycles (a stationary reuse vector exists)
    links: tuple[Link, ...]  # inputs: one incoming link per PE; output: one outgoing link per PE
    cost: float

    @property
    def memory_ports(self) -> tuple[PE, ...]:
        """PEs that read (inputs) or write (output) the buffer directly, in order."""
        ends = [lk.dst if self.role == "input" else lk.src for lk in self.links if MEMORY in (lk.src, lk.dst)]
        return tuple(sorted(p for p in ends if isinstance(p, tuple)))

    def fifo_bits(self, width: int) -> int:
        """Delay-register bits beyond each PE's own operand register (a dt-cycle link holds dt-1 extra)."""
        return sum(max(lk.delay - 1, 0) * width for lk in self.links if lk.src != MEMORY and lk.dst != MEMORY)

    def parent(self) -> dict[PE, Link]:
        """PE -> its incoming link (inputs)."""
        return {lk.dst: lk for lk in self.links if isinstance(lk.dst, tuple)}


@dataclass(frozen=True)
class Interconnect:
    """Networks of every tensor for one mapping."""

    mapping: Mapping
    networks: dict[str, TensorNetwork] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        return sum(n.cost for n in self.networks.values())


def _pes(mapping: Mapping) -> list[PE]:
    return [tuple(p) for p in itertools.product(*[range(s) for s in mapping.pe_shape()])]


def _candidate_graph(
    pes: list[PE], shape: tuple[int, ...], vectors: tuple[ReuseVector, ...], width: int, costs: LinkCosts
) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(MEMORY)
    for p in pes:
        g.add_edge(MEMORY, p, weight=costs.memory_read * width, delay=0)
    inside = set(pes)
    for v in vectors:
        if not any(v.space):
            continue  # stationary: no link
        hops = sum(abs(d) for d in v.space)
        w = costs.fifo_bit * width * max(v.time - 1, 0) + costs.wire_hop * width * hops
        for p in pes:
            q = tuple(a + d for a, d in zip(p, v.space, strict=True))
            if q in inside and (not g.has_edge(p, q) or g[p][q]["weight"] > w):
                g.add_edge(p, q, weight=w, delay=v.time)
    assert all(0 <= c < s for p in pes for c, s in zip(p, shape, strict=True))
    return g


def build_network(mapping: Mapping, reuse: TensorReuse, costs: LinkCosts | None = None) -> TensorNetwork:
    """Minimum-cost arborescence of one tensor's links, rooted at memory."""
    costs = costs or LinkCosts()
    width = mapping.array.acc_width if reuse.role == "output" else mapping.array.data_width
    pes = _pes(mapping)
    stationary = any(v.kind == "stationary" for v in reuse.basis)
    g = _candidate_graph(pes, mapping.pe_shape(), reuse.candidates, width, costs)
    if reuse.role == "output":
        g = g.reverse(copy=True)
        # The reversed graph has memory as a sink; make it the root again by flipping memory's edges.
        for p in pes:
            data = g[p][MEMORY]
            g.remove_edge(p, MEMORY)
            g.add_edge(MEMORY, p, **data)
    tree = nx.minimum_spanning_arborescence(g, attr="weight", preserve_attrs=True)
    links: list[Link] = []
    for u, v, d in tree.edges(data=True):
        if reuse.role == "input":
            links.append(Link(u, v, int(d["delay"])))
        elif u == MEMORY:
            links.append(Link(v, MEMORY, 0))
        else:
            links.append(Link(v, u, int(d["delay"])))  # partial sum flows v -> u in hardware
    cost = float(sum(d["weight"] for _, _, d in tree.edges(data=True)))
    links.sort(key=lambda lk: (str(lk.src), str(lk.dst)))
    return TensorNetwork(reuse.tensor, reuse.role, reuse, stationary, tuple(links), cost)


def build_interconnect(mapping: Mapping, costs: LinkCosts | None = None) -> Interconnect:
    """Reuse analysis plus one arborescence per tensor."""
    reuse = analyze(mapping.workload, mapping.dataflow)
    return Interconnect(mapping, {name: build_network(mapping, r, costs) for name, r in reuse.items()})
