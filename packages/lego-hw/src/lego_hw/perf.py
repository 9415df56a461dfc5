"""Analytical performance model: cycles, utilization, traffic and energy of a mapping (LEGO Sec. VI).

Cycles are `lego_hw.schedule.total_cycles(mapping)`, the schedule the generated controller runs (so the model
and the RTL simulation agree by construction; the RTL tests check the simulation against the same function).
Everything else is counted in closed form over tiles, never per cycle, so a 16x16 array on ResNet-50 takes
milliseconds per layer. Assumptions, each used below:

- Tile order is schedule.py's: outer loops in workload order (outermost first), then the tile loops of the
  dataflow's loops in dataflow order. Every tile runs as a full tile; edge tiles are zero-padded, so their
  buffer and register traffic is counted as for a full tile, while MAC energy counts the real MACs only
  (a zero operand gates the multiplier).
- On-chip buffers: inputs live in the scratchpad, the output (int32 partial sums) in the accumulator, as in
  Gemmini. The array reads an input from the buffer at each memory-port PE of its interconnect whenever that
  PE needs a new element (once per tile if the tensor is stationary there: the preload), and writes the
  output at each memory-port PE of the output network; partial sums of later tiles are read-modify-written.
- Off-chip: for each tensor the buffer keeps the data that one execution of some sub-nest of the tile loops
  touches (its footprint); the whole tensor is fetched again each time that sub-nest re-runs. The sub-nest
  per tensor is the one minimising DRAM bytes under the capacity (half the buffer when double-buffered: the
  other half prefetches). Overlapping halos (conv windows) of consecutive fetches are refetched. Outputs are
  written to DRAM once at the data width (as Gemmini's mvout scales to int8); partial sums that do not fit
  the accumulator spill and return at the accumulator width. Inputs come from DRAM and outputs go there,
  layer by layer (no inter-layer on-chip reuse).
- Total cycles: double-buffered DMA overlaps compute, so total = max(compute cycles, DRAM bytes / DRAM bytes
  per cycle); without double buffering the two add.
- Registers: each PE writes its operand register once per new element, a link of delay d adds d - 1 FIFO
  writes per element, each MAC reads its operands and reads and writes its accumulator, and a preload or
  drain shift chain clocks every PE's shift register once per phase cycle.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lego_hw import intlinalg as la
from lego_hw import schedule
from lego_hw.dataflow import ArraySpec, Dataflow, Mapping, map_workload
from lego_hw.energy import EnergyTable
from lego_hw.errors import ArrayTooLargeError, IllegalMappingError, LegoError
from lego_hw.interconnect import MEMORY, TensorNetwork, build_interconnect
from lego_hw.reuse import inner_access
from lego_hw.workload import TensorAccess, Workload

_FROZEN = ConfigDict(frozen=True, extra="forbid")
KIB = 1024

DEFAULT_DATAFLOWS: tuple[str, ...] = ("output-stationary", "weight-stationary", "input-stationary")


class MemoryConfig(BaseModel):
    """On-chip buffer capacities and the off-chip bandwidth. Defaults: Gemmini's defaultConfig (gemmini.py)."""

    model_config = _FROZEN

    scratchpad_bytes: int = Field(default=256 * KIB, ge=1, description="Input buffer capacity.")
    scratchpad_banks: int = Field(default=4, ge=1, description="Banks of the input buffer (sets access energy).")
    accumulator_bytes: int = Field(default=64 * KIB, ge=1, description="Output (partial sum) buffer capacity.")
    accumulator_banks: int = Field(default=2, ge=1, description="Banks of the accumulator.")
    dram_bytes_per_cycle: float = Field(default=16.0, gt=0, description="Off-chip bandwidth (DMA bus width).")
    double_buffered: bool = Field(default=True, description="DMA overlaps compute; half of each buffer prefetches.")

    @property
    def scratchpad_bank_bytes(self) -> int:
        return max(1, self.scratchpad_bytes // self.scratchpad_banks)

    @property
    def accumulator_bank_bytes(self) -> int:
        return max(1, self.accumulator_bytes // self.accumulator_banks)

    @property
    def total_bytes(self) -> int:
        return self.scratchpad_bytes + self.accumulator_bytes


class TensorTraffic(BaseModel):
    """Traffic of one tensor over the whole workload."""

    model_config = _FROZEN

    tensor: str
    role: Literal["input", "output"]
    buffer: Literal["scratchpad", "accumulator"]
    buffer_reads: int = Field(description="Element reads of the on-chip buffer (array ports, RMW, write-back).")
    buffer_writes: int = Field(description="Element writes of the on-chip buffer (array ports, DRAM fills).")
    buffer_bits: int = Field(description="Bits per buffer element.")
    dram_read_bytes: int
    dram_write_bytes: int
    compulsory_bytes: int = Field(description="Distinct elements the workload touches, at the DRAM width.")
    resident_loops: tuple[str, ...] = Field(description="Loops whose whole range the on-chip block spans.")
    fetches: int = Field(description="How many times the on-chip block is (re)fetched from DRAM.")

    @property
    def dram_bytes(self) -> int:
        return self.dram_read_bytes + self.dram_write_bytes


class EnergyBreakdown(BaseModel):
    """Energy in pJ by component."""

    model_config = _FROZEN

    mac_pj: float = Field(ge=0)
    register_pj: float = Field(ge=0)
    sram_pj: float = Field(ge=0)
    dram_pj: float = Field(ge=0)
    total_pj: float = Field(default=-1.0, description="The sum of the components (filled in; checked if given).")

    @model_validator(mode="after")
    def _total(self) -> EnergyBreakdown:
        total = self.mac_pj + self.register_pj + self.sram_pj + self.dram_pj
        if self.total_pj < 0:
            object.__setattr__(self, "total_pj", total)  # frozen model: set once, during validation
        elif not math.isclose(self.total_pj, total, rel_tol=1e-9, abs_tol=1e-9):
            raise LegoError(f"energy total {self.total_pj} pJ differs from the sum of its components {total} pJ")
        return self


class PerfReport(BaseModel):
    """The model's estimate for one mapping."""

    model_config = _FROZEN

    workload: str
    dataflow: str
    loops: tuple[str, ...] = Field(description="The dataflow's loops (row, column, reduction roles for presets).")
    array_rows: int = Field(description="Rows of the array the mapping uses.")
    array_cols: int
    pes: int = Field(description="PEs of the physical array (utilization is relative to these).")
    macs: int
    cycles: int = Field(description="On-chip compute schedule, = lego_hw.schedule.total_cycles(mapping).")
    dram_cycles: int = Field(description="DRAM bytes / DRAM bytes per cycle, rounded up.")
    total_cycles: int = Field(description="Cycles including off-chip bandwidth.")
    utilization: float = Field(description="MACs / (cycles * PEs).")
    tensors: tuple[TensorTraffic, ...]
    register_bit_accesses: int = Field(description="Bits written to or read from PE registers and FIFOs.")
    fits_on_chip: bool = Field(description="False when even one tile's data exceeds the buffers (streamed).")
    energy: EnergyBreakdown

    @property
    def dram_bytes(self) -> int:
        return sum(t.dram_bytes for t in self.tensors)

    @property
    def compulsory_dram_bytes(self) -> int:
        return sum(t.compulsory_bytes for t in self.tensors)

    @property
    def buffer_accesses(self) -> int:
        return sum(t.buffer_reads + t.buffer_writes for t in self.tensors)

    def traffic(self, tensor: str) -> TensorTraffic:
        for t in self.tensors:
            if t.tensor == tensor:
                return t
        raise LegoError(f"report for {self.workload} has no tensor {tensor!r}")


# -- tile nest and footprints ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Level:
    loop: int  # workload loop index
    trips: int  # iterations of this level
    step: int  # iterations of the workload loop per step (1 for outer loops, the tile extent for inner)


def tile_nest(mapping: Mapping) -> tuple[_Level, ...]:
    """The tile loops, outermost first, in the order schedule.py runs tiles."""
    wl = mapping.workload
    outer = [_Level(w, wl.bounds[w], 1) for w in mapping.outer]
    inner = [_Level(w, n, e) for w, n, e in zip(mapping.inner, mapping.tiles_per_loop, mapping.tile, strict=True)]
    return tuple(outer + inner)


@functools.lru_cache(maxsize=4096)
def _distinct(terms: tuple[tuple[int, int], ...]) -> int:
    """Distinct values of sum(c * x) over x in [0, e) for the (c, e) terms: one index of a tensor."""
    terms = tuple((abs(c), e) for c, e in terms if c != 0 and e > 1)
    if not terms:
        return 1
    if len(terms) == 1:
        return terms[0][1]
    span = sum(c * (e - 1) for c, e in terms) + 1
    if math.prod(e for _, e in terms) > 4_000_000:
        return span  # bounding range: exact whenever the sums are dense, an upper bound otherwise
    vals = np.zeros(1, dtype=np.int64)
    for c, e in terms:
        vals = np.unique((vals[:, None] + c * np.arange(e, dtype=np.int64)[None, :]).ravel())
    return int(vals.size)


def footprint(tensor: TensorAccess, extents: Sequence[int]) -> int:
    """Elements of `tensor` touched by a box of `extents` iterations per workload loop.

    Exact per index; the product over indices is exact when each loop feeds one index (all presets).
    """
    return math.prod(_distinct(tuple((c, e) for c, e in zip(row, extents, strict=True))) for row in tensor.matrix)


def _box(mapping: Mapping, nest: tuple[_Level, ...], level: int) -> list[int]:
    """Iterations per workload loop of one execution of the sub-nest nest[level:]."""
    wl = mapping.workload
    ext = [0] * len(wl.loops)
    for j, lv in enumerate(nest):
        ext[lv.loop] = wl.bounds[lv.loop] if j >= level else min(lv.step, wl.bounds[lv.loop])
    return ext


# -- on-chip (array side) traffic per tile ---------------------------------------------------------
def _pe_activity(mapping: Mapping) -> np.ndarray:
    """Iterations each PE runs in one (full) tile, shaped like the PE array."""
    df = mapping.dataflow
    shape = mapping.pe_shape()
    counts = np.zeros(shape, dtype=np.int64)
    sel = []
    for row in df.space_rows:
        nz = [c for c, v in enumerate(row) if v != 0]
        sel.append(nz[0] if len(nz) == 1 and abs(row[nz[0]]) == 1 else None)
    if all(s is not None for s in sel) and len(set(sel)) == len(sel):
        # Each PE axis is one loop: PE p runs the full range of the remaining (time-only) loops.
        per_pe = math.prod(e for c, e in enumerate(mapping.tile) if c not in sel)
        counts[tuple(slice(0, mapping.tile[s]) for s in sel if s is not None)] = per_pe
        return counts
    if math.prod(mapping.tile) > 20_000_000:
        raise LegoError(f"tile {mapping.tile} is too large to count PE activity for a non-axis-aligned dataflow")
    grid = np.indices(mapping.tile, dtype=np.int64).reshape(len(mapping.tile), -1)
    space = np.asarray(df.space_rows, dtype=np.int64) @ grid - np.asarray(mapping.space_offset).reshape(-1, 1)
    np.add.at(counts, tuple(space), 1)
    return counts


# Interconnects depend only on the STT, the PE shape, the widths and the inner access matrices, and cost tens
# of milliseconds each on a 16x16 array: share them across layers.
_NETWORKS: dict[tuple[object, ...], dict[str, TensorNetwork]] = {}


def _networks(mapping: Mapping) -> dict[str, TensorNetwork]:
    wl, df = mapping.workload, mapping.dataflow
    accesses = tuple((t.name, t.role, inner_access(t, wl, df)) for t in wl.tensors)
    key = (df.stt, mapping.pe_shape(), mapping.array.data_width, mapping.array.acc_width, accesses)
    if key not in _NETWORKS:
        if len(_NETWORKS) > 1024:
            _NETWORKS.clear()
        _NETWORKS[key] = dict(build_interconnect(mapping).networks)
    return _NETWORKS[key]


@dataclass(frozen=True)
class _TileTraffic:
    port_accesses: dict[str, int]  # buffer reads (inputs) / writes (output) by the array, per tile
    register_bits: int  # register and FIFO bit accesses per tile


def _tile_traffic(mapping: Mapping, networks: dict[str, TensorNetwork]) -> _TileTraffic:
    wl, df, arr = mapping.workload, mapping.dataflow, mapping.array
    counts = _pe_activity(mapping)
    active = counts > 0
    n_active = int(active.sum())
    iters = int(counts.sum())
    # PE p runs the iterations on a line along v, the kernel of the space rows.
    line = la.kernel_basis(df.space_rows, len(df.loops))[0]
    ports: dict[str, int] = {}
    reg = 0
    phases = schedule.tile_phases(mapping)
    for t in wl.tensors:
        net = networks[t.name]
        width = arr.acc_width if t.role == "output" else arr.data_width
        held = not any(la.matvec(inner_access(t, wl, df), line))  # same element along the PE's line
        new_elems = np.where(active, 1, 0) if held else counts  # elements each PE sees per tile
        port_pes = net.memory_ports
        ports[t.name] = int(sum(int(new_elems[p]) for p in port_pes))
        for lk in net.links:
            if lk.src == MEMORY or lk.dst == MEMORY or lk.delay <= 1:
                continue
            pe = lk.dst if t.role == "input" else lk.src
            assert isinstance(pe, tuple)
            reg += (lk.delay - 1) * int(new_elems[pe]) * width  # extra FIFO stages
        if t.role == "input":
            reg += int(new_elems.sum()) * width  # operand register writes
            reg += iters * width  # the MAC reads its operand
            if held:
                reg += phases.preload * n_active * width  # preload shift chain
        else:
            reg += 2 * iters * width  # accumulator read and write per MAC
            if held:
                reg += phases.drain * n_active * width  # drain shift chain
    return _TileTraffic(ports, reg)


# -- off-chip traffic -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Residency:
    level: int
    fetches: int
    block: int  # elements per fetch
    total: int  # elements moved = fetches * block


def _residency_options(mapping: Mapping, nest: tuple[_Level, ...], t: TensorAccess) -> list[_Residency]:
    out = []
    for level in range(len(nest) + 1):
        fetches = math.prod(lv.trips for lv in nest[:level])
        block = footprint(t, _box(mapping, nest, level))
        out.append(_Residency(level, fetches, block, fetches * block))
    return out


def _bytes(bits: int) -> int:
    return (bits + 7) // 8


def estimate(
    mapping: Mapping,
    memory: MemoryConfig | None = None,
    energy: EnergyTable | None = None,
    *,
    physical_array: ArraySpec | None = None,
) -> PerfReport:
    """Cycles, utilization, traffic and energy of `mapping` on buffers `memory` (see the module docstring).

    `physical_array`: the array the design has when `mapping` uses only a corner of it (utilization and
    `pes` count the physical PEs); defaults to `mapping.array`.
    """
    memory = memory or MemoryConfig()
    energy = energy or EnergyTable.default()
    wl, arr = mapping.workload, mapping.array
    phys = physical_array or arr
    if phys.rows < arr.rows or phys.cols < arr.cols:
        raise LegoError(f"physical array {phys.rows}x{phys.cols} is smaller than the mapping's {arr.rows}x{arr.cols}")
    cycles = schedule.total_cycles(mapping)
    networks = _networks(mapping)
    tile = _tile_traffic(mapping, networks)
    ntiles = mapping.num_tiles
    nest = tile_nest(mapping)
    db = 2 if memory.double_buffered else 1
    d_bytes, a_bytes = _bytes(arr.data_width), _bytes(arr.acc_width)

    # Inputs share the scratchpad: pick each input's resident sub-nest jointly to minimise DRAM bytes.
    inputs = wl.inputs
    opts = {t.name: _residency_options(mapping, nest, t) for t in inputs}
    sp_cap = memory.scratchpad_bytes // db
    best: tuple[int, tuple[_Residency, ...]] | None = None
    for combo in itertools.product(*(opts[t.name] for t in inputs)):
        if sum(r.block for r in combo) * d_bytes > sp_cap:
            continue
        cost = sum(r.total for r in combo)
        if best is None or cost < best[0]:
            best = (cost, combo)
    fits = best is not None
    chosen_in = best[1] if best is not None else tuple(opts[t.name][-1] for t in inputs)
    out = wl.output
    out_opts = _residency_options(mapping, nest, out)
    acc_cap = memory.accumulator_bytes // db
    out_fit = [r for r in out_opts if r.block * a_bytes <= acc_cap]
    fits = fits and bool(out_fit)
    chosen_out = min(out_fit, key=lambda r: r.total) if out_fit else out_opts[-1]

    def resident_loops(r: _Residency) -> tuple[str, ...]:
        return tuple(wl.loops[lv.loop] for lv in nest[r.level :])

    traffic: list[TensorTraffic] = []
    sram_pj = 0.0
    sp_bank, acc_bank = memory.scratchpad_bank_bytes, memory.accumulator_bank_bytes
    for t, r in zip(inputs, chosen_in, strict=True):
        reads = tile.port_accesses[t.name] * ntiles
        writes = r.total  # DRAM fills
        compulsory = footprint(t, wl.bounds)
        traffic.append(
            TensorTraffic(
                tensor=t.name, role="input", buffer="scratchpad", buffer_reads=reads, buffer_writes=writes,
                buffer_bits=arr.data_width, dram_read_bytes=r.total * d_bytes, dram_write_bytes=0,
                compulsory_bytes=compulsory * d_bytes, resident_loops=resident_loops(r), fetches=r.fetches,
            )
        )  # fmt: skip
        sram_pj += arr.data_width * (reads * energy.sram_bit(sp_bank) + writes * energy.sram_bit(sp_bank, True))
    distinct_out = footprint(out, wl.bounds)
    array_writes = tile.port_accesses[out.name] * ntiles
    spills = chosen_out.total - distinct_out  # partial-sum visits beyond the first (reads) / last (writes)
    out_reads = (array_writes - distinct_out) + chosen_out.total  # accumulate RMW, then write-back to DRAM
    out_writes = array_writes + spills  # array results, then spilled partial sums coming back
    traffic.append(
        TensorTraffic(
            tensor=out.name, role="output", buffer="accumulator", buffer_reads=out_reads, buffer_writes=out_writes,
            buffer_bits=arr.acc_width, dram_read_bytes=spills * a_bytes,
            dram_write_bytes=distinct_out * d_bytes + spills * a_bytes, compulsory_bytes=distinct_out * d_bytes,
            resident_loops=resident_loops(chosen_out), fetches=chosen_out.fetches,
        )
    )  # fmt: skip
    sram_pj += arr.acc_width * (out_reads * energy.sram_bit(acc_bank) + out_writes * energy.sram_bit(acc_bank, True))

    dram_bytes = sum(t.dram_bytes for t in traffic)
    dram_cycles = math.ceil(dram_bytes / memory.dram_bytes_per_cycle)
    total = max(cycles, dram_cycles) if memory.double_buffered else cycles + dram_cycles
    reg_bits = tile.register_bits * ntiles
    breakdown = EnergyBreakdown(
        mac_pj=wl.macs * energy.mac(arr.data_width, arr.acc_width),
        register_pj=reg_bits * energy.register_bit.pj,
        sram_pj=sram_pj,
        dram_pj=dram_bytes * 8 * energy.dram_bit(),
    )
    return PerfReport(
        workload=wl.name,
        dataflow=mapping.dataflow.name,
        loops=mapping.dataflow.loops,
        array_rows=arr.rows,
        array_cols=arr.cols,
        pes=phys.num_pes,
        macs=wl.macs,
        cycles=cycles,
        dram_cycles=dram_cycles,
        total_cycles=total,
        utilization=wl.macs / (cycles * phys.num_pes),
        tensors=tuple(traffic),
        register_bit_accesses=reg_bits,
        fits_on_chip=fits,
        energy=breakdown,
    )


# -- choosing a dataflow per workload ----------------------------------------------------------------
def candidate_bindings(workload: Workload) -> list[tuple[str, str, str]]:
    """(row, column, reduction) loop roles to try: two distinct output loops and one reduction loop.

    Loops of bound 1 are skipped unless too few loops remain (e.g. a GEMM with M = 1).
    """
    red_all = workload.reduction_loops()
    out_all = [lp for lp in workload.loops if lp not in red_all]
    red = [lp for lp in red_all if workload.bound(lp) > 1] or list(red_all)
    outs = [lp for lp in out_all if workload.bound(lp) > 1]
    if len(outs) < 2:
        outs = outs + [lp for lp in out_all if lp not in outs][: 2 - len(outs)]
    return [(a, b, r) for a in outs for b in outs if a != b for r in red]


def _automorphisms(workload: Workload, limit: int = 64) -> list[dict[str, str]]:
    """Loop renamings (among loops of equal bound) that leave every tensor access the same up to index order.

    E.g. y <-> x and r <-> s of a square conv: bindings related by one give the same cycles and traffic up
    to the order of outer loops, so `estimate_best` evaluates one binding per orbit.
    """
    groups: dict[int, list[str]] = {}
    for lp, b in zip(workload.loops, workload.bounds, strict=True):
        groups.setdefault(b, []).append(lp)
    parts = [list(itertools.permutations(g)) for g in groups.values()]
    if math.prod(len(p) for p in parts) > limit:
        return [{lp: lp for lp in workload.loops}]

    def rows(t: TensorAccess, ren: dict[str, str]) -> list[tuple[tuple[tuple[str, int], ...], int]]:
        out = []
        for row, off in zip(t.matrix, t.offset, strict=True):
            terms = tuple(sorted((ren[lp], c) for lp, c in zip(workload.loops, row, strict=True) if c))
            out.append((terms, off))
        return sorted(out)

    ident = {lp: lp for lp in workload.loops}
    base = {t.name: rows(t, ident) for t in workload.tensors}
    result = []
    for choice in itertools.product(*parts):
        ren: dict[str, str] = {}
        for g, perm in zip(groups.values(), choice, strict=True):
            ren.update(zip(g, perm, strict=True))
        if all(rows(t, ren) == base[t.name] for t in workload.tensors):
            result.append(ren)
    return result


def distinct_bindings(workload: Workload, bindings: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """`bindings` with one representative per orbit of the workload's loop symmetries (`_automorphisms`)."""
    autos = _automorphisms(workload)
    seen: set[tuple[str, ...]] = set()
    out = []
    for b in bindings:
        b = tuple(b)
        if b in seen:
            continue
        out.append(b)
        seen.update(tuple(ren[lp] for lp in b) for ren in autos)
    return out


@functools.lru_cache(maxsize=4096)
def _estimate_cached(
    mapping: Mapping, memory: MemoryConfig, energy: EnergyTable, physical_array: ArraySpec
) -> PerfReport:
    return estimate(mapping, memory, energy, physical_array=physical_array)


def fit_array(workload: Workload, dataflow: Dataflow, array: ArraySpec) -> ArraySpec:
    """The largest corner of `array` the dataflow can use: an axis owned by a shorter loop shrinks to it.

    This is how a tiny layer runs on a big array (the other PEs idle); utilization still counts all PEs.
    """
    sizes = [array.rows, array.cols][: dataflow.n_space]
    for axis, row in enumerate(dataflow.space_rows):
        nz = [c for c, v in enumerate(row) if v != 0]
        if len(nz) == 1:
            sizes[axis] = min(sizes[axis], workload.bound(dataflow.loops[nz[0]]))
    cols = sizes[1] if dataflow.n_space == 2 else array.cols
    return array.model_copy(update={"rows": sizes[0], "cols": cols})


Objective = Literal["cycles", "energy", "edp"]


def estimate_best(
    workload: Workload,
    array: ArraySpec,
    memory: MemoryConfig | None = None,
    dataflows: Sequence[str] = DEFAULT_DATAFLOWS,
    energy: EnergyTable | None = None,
    *,
    bindings: Sequence[Sequence[str]] | None = None,
    objective: Objective = "cycles",
    allow_subarray: bool = True,
) -> tuple[Mapping, PerfReport]:
    """The best legal (preset, loop binding) for `workload` on `array`, and its report.

    Tries every preset in `dataflows` with every binding of `candidate_bindings` (or `bindings`), skipping
    illegal ones; an array axis longer than its loop uses a corner of the array (`fit_array`) when
    `allow_subarray`, else that binding is skipped. Best = fewest total cycles, then least energy
    ("cycles"); least energy, then cycles ("energy"); or least energy x cycles ("edp").
    """
    memory = memory or MemoryConfig()
    energy = energy or EnergyTable.default()
    tried: list[str] = []
    best: tuple[tuple[float, float], Mapping, PerfReport] | None = None
    # Cache by everything but the workload's name: repeated layers and the baseline's bindings recur.
    anonymous = workload.model_copy(update={"name": "workload"})
    cands = distinct_bindings(workload, bindings if bindings is not None else candidate_bindings(workload))
    for name in dataflows:
        for loops in cands:
            df = Dataflow.preset(name, loops=tuple(loops))
            arr = fit_array(workload, df, array) if allow_subarray else array
            try:
                mapping = map_workload(workload, df, arr)
            except (IllegalMappingError, ArrayTooLargeError) as e:
                tried.append(f"{name}{tuple(loops)}: {type(e).__name__}")
                continue
            anon = dataclasses.replace(mapping, workload=anonymous)
            rep = _estimate_cached(anon, memory, energy, array).model_copy(update={"workload": workload.name})
            e_tot = rep.energy.total_pj
            key = {
                "cycles": (float(rep.total_cycles), e_tot),
                "energy": (e_tot, float(rep.total_cycles)),
                "edp": (e_tot * rep.total_cycles, float(rep.total_cycles)),
            }[objective]
            if best is None or key < best[0]:
                best = (key, mapping, rep)
    if best is None:
        raise IllegalMappingError(
            f"no legal mapping of {workload.name} on a {array.rows}x{array.cols} array among dataflows "
            f"{tuple(dataflows)}: {'; '.join(tried) or 'no loop bindings'}; try other dataflows or bindings"
        )
    return best[1], best[2]
