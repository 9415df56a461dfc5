"""Multi-dataflow fusion: one PE array that runs several dataflows, selected by a `mode` input (LEGO Sec. III-E).

The per-mode plans (`lego_hw.rtl.plan.ModePlan`) are merged PE by PE and tensor by tensor:
- an operand (or partial-sum input) with the same source in every mode is one wire / register chain, shared;
- where the sources differ, the emitter places a mux selected by `mode` in front of the operand register
  (or on the wire), one mux per differing operand;
- memory ports are shared by index (port k of every mode is one physical port whose address generator is
  a mode-selected affine stream), the MACs, accumulators and tile counters are shared by all modes.
`FusedArray.stats()` reports the shared links and muxes; tests check that the fused array synthesizes to
fewer cells than the separate arrays together.

Link sharing (LEGO's heuristic for coexisting dataflows, `select_links`, `generate(..., share_links=True)`):
instead of building every mode's arborescence alone, the modes are taken in order and each re-selects its
links with the links an earlier mode already uses made free, so among its own equally valid trees it picks
the one that coincides most with the others (a link is only ever taken from the mode's own reuse
candidates, so every mode stays correct). `plan_modes` then numbers each mode's buffer ports so that a PE
fed by memory in several modes uses the same port index in each. Both cut operand / partial-sum muxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import networkx as nx

from lego_hw.dataflow import Mapping
from lego_hw.errors import LegoError
from lego_hw.interconnect import (
    MEMORY,
    Interconnect,
    Link,
    LinkCosts,
    TensorNetwork,
    _candidate_graph,  # the same candidate links as build_interconnect
    _pes,
)
from lego_hw.reuse import TensorReuse, analyze
from lego_hw.rtl.plan import PE, ModePlan, PortHint, Source, build_plan

T = TypeVar("T")


def group_modes(values: Sequence[T]) -> list[tuple[tuple[int, ...], T]]:
    """Group mode indices by equal value, first-seen order: the arms of a mode mux."""
    groups: list[tuple[list[int], T]] = []
    for m, v in enumerate(values):
        for ms, w in groups:
            if w == v:
                ms.append(m)
                break
        else:
            groups.append(([m], v))
    return [(tuple(ms), v) for ms, v in groups]


@dataclass(frozen=True)
class FusionStats:
    modes: int
    shared_links: int  # PE operand / partial-sum inputs with one source in every mode
    muxes: int  # PE operand / partial-sum inputs whose source depends on the mode
    read_ports: int
    write_ports: int


@dataclass(frozen=True)
class FusedArray:
    """Several ModePlans on one PE array (one plan = a plain single-dataflow array)."""

    modes: tuple[ModePlan, ...]

    @property
    def pe_list(self) -> tuple[PE, ...]:
        return self.modes[0].pe_list

    @property
    def pe_shape(self) -> tuple[int, ...]:
        return self.modes[0].pe_shape

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.modes[0].inputs

    @property
    def output(self) -> str:
        return self.modes[0].output

    def sources(self, tensor: str, pe: PE) -> tuple[Source, ...]:
        return tuple(m.in_sources[tensor][pe] for m in self.modes)

    def read_ports(self, tensor: str) -> int:
        return max(len(m.in_ports[tensor]) for m in self.modes)

    @property
    def write_ports(self) -> int:
        return max(len(m.out_ports) for m in self.modes)

    def psum_sources(self, pe: PE) -> tuple[tuple[str, tuple[tuple[PE, int], ...]], ...]:
        """Per mode: ('acc', ()) for an in-place accumulator or ('links', incoming links)."""
        return tuple(("acc", ()) if m.out_stationary else ("links", m.out_links[pe]) for m in self.modes)

    def stats(self) -> FusionStats:
        shared = muxes = 0
        for pe in self.pe_list:
            for t in self.inputs:
                if len(group_modes(self.sources(t, pe))) == 1:
                    shared += 1
                else:
                    muxes += 1
            if len(group_modes(self.psum_sources(pe))) == 1:
                shared += 1
            else:
                muxes += 1
        return FusionStats(
            modes=len(self.modes),
            shared_links=shared,
            muxes=muxes,
            read_ports=sum(self.read_ports(t) for t in self.inputs),
            write_ports=self.write_ports,
        )


def fuse(plans: Sequence[ModePlan]) -> FusedArray:
    """Merge per-mode plans; they must share the array shape and the tensors (names, roles, ranks)."""
    if not plans:
        raise LegoError("fuse: need at least one mapping")
    first = plans[0]
    for p in plans[1:]:
        if p.pe_shape != first.pe_shape or p.mapping.array != first.mapping.array:
            raise LegoError(
                f"fuse: mode {p.name} uses array {p.mapping.array} but mode {first.name} uses "
                f"{first.mapping.array}; fused dataflows must share one ArraySpec"
            )
        if p.inputs != first.inputs or p.output != first.output:
            raise LegoError(
                f"fuse: mode {p.name} has tensors {p.inputs}->{p.output} but mode {first.name} has "
                f"{first.inputs}->{first.output}; fused modes must use the same tensor names"
            )
        for n in (*p.inputs, p.output):
            if len(p.shapes[n]) != len(first.shapes[n]):
                raise LegoError(f"fuse: tensor {n} has a different rank in mode {p.name} than in {first.name}")
    return FusedArray(tuple(plans))


LinkKey = tuple[PE | str, PE | str, int]  # (src, dst, delay) in the direction the data flows


def _network_preferring(
    mapping: Mapping, reuse: TensorReuse, prefer: set[LinkKey], costs: LinkCosts, discount: float
) -> TensorNetwork:
    """`build_network` with the weight of every link in `prefer` scaled by `discount` (cost reported unscaled)."""
    width = mapping.array.acc_width if reuse.role == "output" else mapping.array.data_width
    pes = _pes(mapping)
    stationary = any(v.kind == "stationary" for v in reuse.basis)
    g = _candidate_graph(pes, mapping.pe_shape(), reuse.candidates, width, costs)
    out = reuse.role == "output"
    if out:  # partial sums flow against the tree edges; memory stays the root (as in build_network)
        g = g.reverse(copy=True)
        for p in pes:
            data = g[p][MEMORY]
            g.remove_edge(p, MEMORY)
            g.add_edge(MEMORY, p, **data)
    for u, v, d in g.edges(data=True):
        d["cost"] = d["weight"]
        if u != MEMORY and ((v, u, d["delay"]) if out else (u, v, d["delay"])) in prefer:
            d["weight"] = d["weight"] * discount
    tree = nx.minimum_spanning_arborescence(g, attr="weight", preserve_attrs=True)
    links: list[Link] = []
    for u, v, d in tree.edges(data=True):
        if not out:
            links.append(Link(u, v, int(d["delay"])))
        elif u == MEMORY:
            links.append(Link(v, MEMORY, 0))
        else:
            links.append(Link(v, u, int(d["delay"])))
    links.sort(key=lambda lk: (str(lk.src), str(lk.dst)))
    cost = float(sum(d["cost"] for _, _, d in tree.edges(data=True)))
    return TensorNetwork(reuse.tensor, reuse.role, reuse, stationary, tuple(links), cost)


def select_links(
    mappings: Sequence[Mapping], costs: LinkCosts | None = None, discount: float = 0.0, passes: int = 0
) -> list[Interconnect]:
    """Joint link selection of coexisting dataflows (LEGO's sharing heuristic).

    Mode 0 takes its minimum-cost arborescences; each later mode rebuilds its own with the PE-to-PE links
    of every earlier mode weighted by `discount` (0: free), so it reuses their chains where its reuse
    allows. Each of `passes` further rounds rebuilds every mode against all the other modes' current links
    (mode 0 too). A single mapping gives `build_interconnect`'s links.
    """
    if passes < 0:
        raise LegoError(f"select_links: passes must be >= 0, got {passes}")
    if not 0.0 <= discount <= 1.0:
        raise LegoError(f"select_links: discount must be in [0, 1], got {discount}")
    costs = costs or LinkCosts()
    reuses = [analyze(m.workload, m.dataflow) for m in mappings]

    def keys(net: TensorNetwork) -> set[LinkKey]:
        return {(lk.src, lk.dst, lk.delay) for lk in net.links if MEMORY not in (lk.src, lk.dst)}

    out: list[Interconnect] = []
    for i, m in enumerate(mappings):
        nets = {
            name: _network_preferring(m, r, set().union(*(keys(ic.networks[name]) for ic in out)), costs, discount)
            for name, r in reuses[i].items()
        }
        out.append(Interconnect(m, nets))
    for _ in range(passes):  # revisit every mode against all the others' current links
        for i, m in enumerate(mappings):
            others = [ic for j, ic in enumerate(out) if j != i]
            nets = {
                name: _network_preferring(
                    m, r, set().union(*(keys(ic.networks[name]) for ic in others)), costs, discount
                )
                for name, r in reuses[i].items()
            }
            out[i] = Interconnect(m, nets)
    return out


def plan_modes(mappings: Sequence[Mapping], share_links: bool = False) -> list[ModePlan]:
    """Per-mode RTL plans for fusion; with share_links, joint link selection and aligned port numbering."""
    if not share_links:
        return [build_plan(m) for m in mappings]
    plans: list[ModePlan] = []
    hint: PortHint = {}
    for m, ic in zip(mappings, select_links(mappings, passes=1), strict=True):
        p = build_plan(m, ic, hint)
        for t in p.inputs:
            for k, port in enumerate(p.in_ports[t]):
                if port.phase == "compute":
                    hint.setdefault((t, port.pe), k)
        for k, port in enumerate(p.out_ports):
            if port.phase == "write":
                hint.setdefault((p.output, port.pe), k)
        plans.append(p)
    return plans
