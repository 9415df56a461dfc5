"""The RTL plan of one dataflow mode: PE sources, memory ports, validity and control (LEGO Sec. III-C/D, IV).

A `ModePlan` is everything the Verilog emitter needs about one Mapping, derived from the analyses only:
- per input tensor and PE, the operand source: a memory port, a neighbour's operand through `delay`
  registers (delay 0 = wire), or the preload shift chain (stationary inputs: one element per PE per tile);
- per PE the output's incoming partial-sum links (systolic outputs) or the in-place accumulator
  (stationary outputs, drained by shift chains);
- memory ports as affine address streams (`lego_hw.memory`), the tile counters and tile offsets;
- per PE the cycle range in which it runs an iteration of the tile box, plus run-time checks against the
  loop bounds for split loops (edge tiles). Invalid iterations multiply to zero, so out-of-box work can
  never reach a valid output; writes of out-of-range output indices are masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lego_hw.dataflow import Mapping
from lego_hw.errors import LegoError
from lego_hw.interconnect import MEMORY, Interconnect, build_interconnect
from lego_hw.memory import AddressStream, TileCounter, chain_port, stream_port, tile_counters, tile_offset_terms
from lego_hw.schedule import (
    compute_window,
    is_stationary,
    local_origin,
    pes,
    stt_inverse,
    tile_phases,
    time_step,
    valid_times,
)

PE = tuple[int, ...]
PortHint = dict[tuple[str, PE], int]


def _number_ports(tensor: str, fed: list[PE], hint: PortHint) -> list[PE]:
    """The memory-fed PEs in port order: hinted PEs at their index when it is free and in range, then the rest."""
    slots: list[PE | None] = [None] * len(fed)
    rest = []
    for pe in fed:
        k = hint.get((tensor, pe), -1)
        if 0 <= k < len(fed) and slots[k] is None:
            slots[k] = pe
        else:
            rest.append(pe)
    it = iter(rest)
    return [s if s is not None else next(it) for s in slots]


@dataclass(frozen=True)
class Source:
    """Where a PE's operand comes from in one mode."""

    kind: Literal["port", "link", "preload"]
    port: int = -1  # read-port index (kind "port"; for "preload" the column's port)
    src: PE | None = None  # neighbour PE (kind "link"; for "preload" the PE above, None in row 0)
    delay: int = 0


@dataclass(frozen=True)
class Port:
    """A buffer port: which phase it is active in and its address stream."""

    phase: Literal["compute", "preload", "drain", "write"]
    pe: PE  # the PE it feeds / is fed by (for chain ports the chain's end PE)
    stream: AddressStream


@dataclass(frozen=True)
class Validity:
    """PE runs a valid iteration for read cycle pc iff lo <= pc <= hi and every bound check holds."""

    lo: int
    hi: int
    # (counter index, local loop value at pc=0, per-cycle step): requires counter_value + v0 + step*pc < limit
    bound_checks: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class ModePlan:
    mapping: Mapping
    name: str
    pe_list: tuple[PE, ...]
    pe_shape: tuple[int, ...]
    inputs: tuple[str, ...]
    output: str
    in_sources: dict[str, dict[PE, Source]]
    in_ports: dict[str, tuple[Port, ...]]
    out_stationary: bool
    out_links: dict[PE, tuple[tuple[PE, int], ...]]  # PE -> incoming (source PE, delay) partial sums
    out_ports: tuple[Port, ...]
    writer_port: dict[PE, int]  # PE -> write port index (systolic output)
    valid: dict[PE, Validity | None]
    counters: tuple[TileCounter, ...]
    offsets: dict[str, tuple[tuple[int, tuple[int, ...]], ...]]
    shapes: dict[str, tuple[int, ...]]
    t_lo: int
    window: int  # time steps swept in the compute phase
    preload: int
    compute: int
    drain: int


def build_plan(
    mapping: Mapping, interconnect: Interconnect | None = None, port_hint: PortHint | None = None
) -> ModePlan:
    """Derive the RTL plan of one mapping; raises LegoError for mappings the RTL cannot run.

    `interconnect` replaces the mapping's own min-cost links (fusion's joint selection passes one);
    `port_hint` maps (tensor, PE) to a preferred buffer-port index, so that a PE fed by memory in several
    fused modes uses the same port in each (no operand mux); unhinted ports take the free indices in PE order.
    """
    stt_inverse(mapping)  # unimodular check with a clear message
    wl = mapping.workload
    if len(wl.inputs) > 3:
        raise LegoError(f"workload {wl.name}: the PE MAC multiplies at most 3 inputs, got {len(wl.inputs)}")
    ic = interconnect if interconnect is not None else build_interconnect(mapping)
    if ic.mapping != mapping:
        raise LegoError("build_plan: the interconnect was built for another mapping")
    hint = port_hint or {}
    t_lo, t_hi = compute_window(mapping)
    phases = tile_phases(mapping)
    shape = mapping.pe_shape()
    pe_list = tuple(pes(mapping))
    rows = shape[0]
    cols = shape[1] if len(shape) == 2 else 1

    def chain_pe(r: int, c: int) -> PE:
        return (r, c) if len(shape) == 2 else (r,)

    in_sources: dict[str, dict[PE, Source]] = {}
    in_ports: dict[str, tuple[Port, ...]] = {}
    for t in wl.inputs:
        net = ic.networks[t.name]
        srcs: dict[PE, Source] = {}
        ports: list[Port] = []
        if is_stationary(mapping, t.name):
            for c in range(cols):
                ports.append(Port("preload", chain_pe(0, c), chain_port(mapping, t.name, c)))
                for r in range(rows):
                    srcs[chain_pe(r, c)] = Source("preload", port=c, src=chain_pe(r - 1, c) if r else None)
        else:
            fed = sorted(lk.dst for lk in net.links if lk.src == MEMORY and isinstance(lk.dst, tuple))
            order = _number_ports(t.name, fed, hint)
            for pe in order:
                srcs[pe] = Source("port", port=len(ports))
                ports.append(Port("compute", pe, stream_port(mapping, t.name, pe, t_lo)))
            for lk in net.links:
                if lk.src != MEMORY:
                    assert isinstance(lk.src, tuple) and isinstance(lk.dst, tuple)
                    srcs[lk.dst] = Source("link", src=lk.src, delay=lk.delay)
        in_sources[t.name] = srcs
        in_ports[t.name] = tuple(ports)

    out = wl.output.name
    out_stat = is_stationary(mapping, out)
    out_links: dict[PE, list[tuple[PE, int]]] = {p: [] for p in pe_list}
    out_ports: list[Port] = []
    writer: dict[PE, int] = {}
    if out_stat:
        for c in range(cols):
            out_ports.append(Port("drain", chain_pe(rows - 1, c), chain_port(mapping, out, c)))
    else:
        fed = sorted(lk.src for lk in ic.networks[out].links if lk.dst == MEMORY and isinstance(lk.src, tuple))
        for pe in _number_ports(out, fed, hint):
            writer[pe] = len(out_ports)
            # Writes happen in the MAC cycle, one cycle after the time step's read: stream from t_lo - 1.
            out_ports.append(Port("write", pe, stream_port(mapping, out, pe, t_lo - 1)))
        for lk in sorted(ic.networks[out].links, key=lambda lk: lk.src):  # type: ignore[arg-type,return-value,unused-ignore]
            assert isinstance(lk.src, tuple)
            if lk.dst != MEMORY:
                assert isinstance(lk.dst, tuple)
                if lk.delay < 1:
                    raise LegoError(f"output {out}: a partial-sum link with delay {lk.delay} needs a reduction tree")
                out_links[lk.dst].append((lk.src, lk.delay))

    counters = tile_counters(mapping)
    g = time_step(mapping)
    valid: dict[PE, Validity | None] = {}
    for p in pe_list:
        rng = valid_times(mapping, p)
        if rng is None:
            valid[p] = None
            continue
        a = local_origin(mapping, p)
        checks = []
        for k, cnt in enumerate(counters):
            if cnt.loop in mapping.inner:
                c = mapping.inner.index(cnt.loop)
                checks.append((k, a[c] + g[c] * t_lo, g[c]))
        # In read-cycle units (pc = t - t_lo); the valid bit is registered alongside the operands.
        valid[p] = Validity(rng[0] - t_lo, rng[1] - t_lo, tuple(checks))
    tensors = [t.name for t in wl.tensors]
    return ModePlan(
        mapping=mapping,
        name=mapping.dataflow.name,
        pe_list=pe_list,
        pe_shape=shape,
        inputs=tuple(t.name for t in wl.inputs),
        output=out,
        in_sources=in_sources,
        in_ports=in_ports,
        out_stationary=out_stat,
        out_links={p: tuple(v) for p, v in out_links.items()},
        out_ports=tuple(out_ports),
        writer_port=writer,
        valid=valid,
        counters=counters,
        offsets={n: tile_offset_terms(mapping, n) for n in tensors},
        shapes={n: wl.shape(n) for n in tensors},
        t_lo=t_lo,
        window=t_hi - t_lo + 1,
        preload=phases.preload,
        compute=phases.compute,
        drain=phases.drain,
    )
