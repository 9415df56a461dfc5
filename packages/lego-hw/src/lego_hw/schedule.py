"""The cycle schedule of a generated array: tile order and phase lengths (the contract RTL and model share).

LEGO Sec. III (dataflow mapping f_{TS->I}) and Sec. IV (control). A mapped workload runs as a sequence of
tiles: the outer loops in workload order (outermost first), then the tiles of the inner loops in dataflow
order (last loop fastest). Each tile runs, without overlap:

1. preload (`array.rows` cycles, only when an input is stationary, i.e. each PE uses one element of it per
   tile): the element of every PE shifts in along the row axis, one row per cycle;
2. compute (`window + 1` cycles): a time counter sweeps the tile's space-time window `t_lo..t_hi`; memory
   ports are read in the cycle of their time step and the MACs run one cycle later (operand registers),
   hence the `+ 1`. The window is the tile box's time span `0..time_span-1`, widened where a memory port
   must be read before its data reaches a PE (`t_lo < 0`) or a partial sum reaches its writing PE after
   the box's last step (`t_hi > time_span - 1`); both come from tracing the interconnect's links;
3. drain (`array.rows` cycles, only when the output is stationary): accumulators shift out along the row
   axis into the output buffer (which accumulates, so tiles over reduction loops simply add);
4. one hand-over cycle (`TILE_OVERHEAD`) that advances the tile counters.

The run adds `RUN_OVERHEAD` cycle (leaving idle). The generated controller follows exactly this schedule:
the RTL simulation's cycle count from the clock edge that samples `start` to the edge that raises `done`
equals `total_cycles` (tested for every preset and workload in tests/test_rtl*.py).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

from lego_hw import intlinalg as la
from lego_hw.dataflow import Mapping
from lego_hw.errors import LegoError
from lego_hw.interconnect import MEMORY, build_interconnect

# Cycles the controller spends between tiles (advancing the tile counters) and once per run (leaving idle).
TILE_OVERHEAD = 1
RUN_OVERHEAD = 1
# Cycles between a memory read of a time step and the MAC of that step (the PE operand register).
COMPUTE_LATENCY = 1

PE = tuple[int, ...]


@dataclass(frozen=True)
class TilePhases:
    preload: int
    compute: int
    drain: int
    overhead: int

    @property
    def total(self) -> int:
        return self.preload + self.compute + self.drain + self.overhead


@functools.lru_cache(maxsize=256)
def _integer_inverse(stt: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    # Cached: valid_times needs it for every PE, and exact Fraction inversion dominated the model's runtime.
    return la.integer_inverse(stt)


def stt_inverse(mapping: Mapping) -> tuple[tuple[int, ...], ...]:
    """Integer inverse of the STT; the RTL needs a unimodular STT so every (PE, cycle) is one iteration."""
    try:
        return _integer_inverse(mapping.dataflow.stt)
    except ValueError:
        raise LegoError(
            f"dataflow {mapping.dataflow.name}: STT {mapping.dataflow.stt} has determinant "
            f"{la.determinant(mapping.dataflow.stt)}; RTL generation needs a unimodular STT (determinant +-1) so "
            "that every PE runs an integer iteration in every cycle; use a unimodular transform"
        ) from None


def local_origin(mapping: Mapping, pe: PE) -> tuple[int, ...]:
    """Local iteration (inner loops) that PE `pe` runs at tile cycle 0; at cycle t add `t * time_step`."""
    inv = stt_inverse(mapping)
    st = [p + o for p, o in zip(pe, mapping.space_offset, strict=True)] + [mapping.time_offset]
    return la.matvec(inv, st)


def time_step(mapping: Mapping) -> tuple[int, ...]:
    """Change of the local iteration per cycle at a fixed PE (the STT inverse's time column)."""
    return tuple(row[-1] for row in stt_inverse(mapping))


def pes(mapping: Mapping) -> list[PE]:
    return [tuple(p) for p in itertools.product(*[range(s) for s in mapping.pe_shape()])]


def valid_times(mapping: Mapping, pe: PE) -> tuple[int, int] | None:
    """Inclusive cycle range in which `pe` runs an iteration of the (full) tile box, or None if never."""
    a, g = local_origin(mapping, pe), time_step(mapping)
    lo, hi = -(10**12), 10**12
    for ac, gc, e in zip(a, g, mapping.tile, strict=True):
        # 0 <= ac + gc * t <= e - 1
        if gc == 0:
            if not 0 <= ac <= e - 1:
                return None
            continue
        b1, b2 = Fraction(-ac, gc), Fraction(e - 1 - ac, gc)
        lo = max(lo, math.ceil(min(b1, b2)))
        hi = min(hi, math.floor(max(b1, b2)))
    return (lo, hi) if lo <= hi else None


def is_stationary(mapping: Mapping, tensor: str) -> bool:
    """True when each PE uses a single element of `tensor` per tile (its index ignores time)."""
    t = mapping.workload.tensor(tensor)
    g = time_step(mapping)
    return all(sum(row[w] * gc for w, gc in zip(mapping.inner, g, strict=True)) == 0 for row in t.matrix)


@functools.lru_cache(maxsize=256)
def compute_window(mapping: Mapping) -> tuple[int, int]:
    """(t_lo, t_hi): first and last time step the compute phase sweeps (see the module docstring)."""
    t_lo, t_hi = 0, mapping.time_span - 1
    ic = build_interconnect(mapping)
    ranges = {p: valid_times(mapping, p) for p in pes(mapping)}
    for name, net in ic.networks.items():
        if is_stationary(mapping, name):
            continue
        if net.role == "input":
            parent = {lk.dst: lk for lk in net.links}
            for p, rng in ranges.items():
                if rng is None:
                    continue
                q: PE | str = p
                delay = 0
                while q != MEMORY:
                    lk = parent[q]
                    delay += lk.delay
                    q = lk.src
                t_lo = min(t_lo, rng[0] - delay)
        else:
            child = {lk.src: lk for lk in net.links}
            for p, rng in ranges.items():
                if rng is None:
                    continue
                q = p
                delay = 0
                while q != MEMORY:
                    lk = child[q]
                    delay += lk.delay
                    q = lk.dst
                t_hi = max(t_hi, rng[1] + delay)
    return t_lo, t_hi


def tile_phases(mapping: Mapping) -> TilePhases:
    """Phase lengths of one tile (every tile has the same; edge tiles are masked, not shortened)."""
    t_lo, t_hi = compute_window(mapping)
    rows = mapping.array.rows
    wl = mapping.workload
    stationary_in = any(is_stationary(mapping, t.name) for t in wl.inputs)
    stationary_out = is_stationary(mapping, wl.output.name)
    return TilePhases(
        preload=rows if stationary_in else 0,
        compute=t_hi - t_lo + 1 + COMPUTE_LATENCY,
        drain=rows if stationary_out else 0,
        overhead=TILE_OVERHEAD,
    )


def total_cycles(mapping: Mapping) -> int:
    """Cycles of the whole workload on the array, start to done."""
    return mapping.num_tiles * tile_phases(mapping).total + RUN_OVERHEAD
