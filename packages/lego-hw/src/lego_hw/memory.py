"""Memory synthesis: tile counters, per-port affine address streams and buffer banking (LEGO Sec. III-D).

Every buffer access of the generated array is affine: the index of tensor D read (or written) by a port in
phase cycle `pc` of a tile is

    index = tile_offset(counters) + const + slope * pc

where `tile_offset = A_D[:, outer] @ outer_values + A_D[:, inner] @ tile_bases + b_D` is shared by all ports of
the tensor (computed once per tile from the tile counters) and `const`, `slope` are per port, derived from
A_D and the STT inverse: a port at PE p in the compute phase reads the element of local iteration
`a(p) + step * (t_lo + pc)`, a preload/drain port at column j the element of PE `(rows-1-pc, j)`.

Banking follows LEGO's rule: the ports of a tensor that are active in the same cycle differ by constant
index deltas; along each tensor dimension the bank count is the span of those deltas divided by their GCD
(only the cheapest dimension is banked when it alone separates the concurrent elements), and
`bank = sum_d (floor(index_d / gcd_d) mod banks_d) * radix_d`. `verify_conflict_free` enumerates every
tile and cycle and checks that two ports never hit the same bank with different elements. Inside a bank
the word address drops the bank digit of each dimension (`Banking.address_of`), so every bank has the same
depth (`Banking.depth`). The generated core exports one (address, enable) pair per port; `lego_hw.rtl.buffers`
emits the banked buffers (one 1-read/1-write memory per bank, these bank and address functions applied to
each port's flat address) and a system top that connects them to the core, which the testbench simulates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lego_hw.dataflow import Mapping
from lego_hw.errors import LegoError
from lego_hw.schedule import local_origin, time_step

PE = tuple[int, ...]


@dataclass(frozen=True)
class TileCounter:
    """One nested tile counter: an outer loop (step 1) or the tile base of a split inner loop (step = tile)."""

    loop: int  # workload loop index
    step: int
    limit: int  # the loop bound; the counter runs 0, step, ... < limit

    @property
    def count(self) -> int:
        return math.ceil(self.limit / self.step)


def tile_counters(mapping: Mapping) -> tuple[TileCounter, ...]:
    """Tile counters outermost first: outer loops in workload order, then split inner loops in dataflow order."""
    wl = mapping.workload
    out = [TileCounter(w, 1, wl.bounds[w]) for w in mapping.outer if wl.bounds[w] > 1]
    for w, e in zip(mapping.inner, mapping.tile, strict=True):
        if wl.bounds[w] > e:
            out.append(TileCounter(w, e, wl.bounds[w]))
    return tuple(out)


def tile_offset_terms(mapping: Mapping, tensor: str) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Per tensor dimension: (constant b_d, coefficient of each tile counter)."""
    t = mapping.workload.tensor(tensor)
    counters = tile_counters(mapping)
    return tuple((off, tuple(row[c.loop] for c in counters)) for row, off in zip(t.matrix, t.offset, strict=True))


@dataclass(frozen=True)
class AddressStream:
    """index = tile_offset + const + slope * pc for one port of one tensor."""

    tensor: str
    const: tuple[int, ...]
    slope: tuple[int, ...]

    def index(self, tile_offset: Sequence[int], pc: int) -> tuple[int, ...]:
        return tuple(o + c + s * pc for o, c, s in zip(tile_offset, self.const, self.slope, strict=True))


def _inner_access(mapping: Mapping, tensor: str) -> tuple[tuple[int, ...], ...]:
    t = mapping.workload.tensor(tensor)
    return tuple(tuple(row[w] for w in mapping.inner) for row in t.matrix)


def _apply(a: tuple[tuple[int, ...], ...], v: Sequence[int]) -> tuple[int, ...]:
    return tuple(sum(x * y for x, y in zip(row, v, strict=True)) for row in a)


def stream_port(mapping: Mapping, tensor: str, pe: PE, t_start: int) -> AddressStream:
    """Port at PE `pe` that accesses, in phase cycle pc, the element of time step `t_start + pc`."""
    a_in = _inner_access(mapping, tensor)
    a, g = local_origin(mapping, pe), time_step(mapping)
    it0 = [x + gx * t_start for x, gx in zip(a, g, strict=True)]
    return AddressStream(tensor, _apply(a_in, it0), _apply(a_in, g))


def chain_port(mapping: Mapping, tensor: str, col: int) -> AddressStream:
    """Preload/drain port of column `col`: in cycle pc it carries the element of PE (rows-1-pc, col)."""
    a_in = _inner_access(mapping, tensor)
    shape = mapping.pe_shape()
    rows = shape[0]

    def pe(r: int) -> PE:
        return (r, col) if len(shape) == 2 else (r,)

    last = _apply(a_in, local_origin(mapping, pe(rows - 1)))
    if rows == 1:
        return AddressStream(tensor, last, tuple(0 for _ in last))
    prev = _apply(a_in, local_origin(mapping, pe(rows - 2)))
    return AddressStream(tensor, last, tuple(p - q for p, q in zip(prev, last, strict=True)))


@dataclass(frozen=True)
class Banking:
    """Bank function of one tensor's buffer: per dimension a GCD stride and a bank count."""

    tensor: str
    gcd: tuple[int, ...]
    banks: tuple[int, ...]

    @property
    def num_banks(self) -> int:
        return math.prod(self.banks)

    def bank_of(self, index: Sequence[int]) -> int:
        b = 0
        for x, g, n in zip(index, self.gcd, self.banks, strict=True):
            b = b * n + (x // g) % n
        return b

    def dim_sizes(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Per dimension, the extent of the in-bank coordinate `(x // (g n)) * g + x % g` over 0 <= x < shape."""
        return tuple(((s - 1) // (g * n) + 1) * g for s, g, n in zip(shape, self.gcd, self.banks, strict=True))

    def depth(self, shape: Sequence[int]) -> int:
        """Words per bank for a tensor of `shape` (every bank gets the same depth)."""
        return math.prod(self.dim_sizes(shape))

    def address_of(self, index: Sequence[int], shape: Sequence[int]) -> int:
        """In-bank word address of `index`: removing the bank digit `(x // g) % n` of each dimension.

        (bank_of, address_of) is a bijection from the tensor's index box onto banks x [0, depth): along a
        dimension x = ((q // n) * n + q % n) * g + r with q = x // g, r = x % g, and the bank keeps q % n.
        """
        a = 0
        for x, g, n, size in zip(index, self.gcd, self.banks, self.dim_sizes(shape), strict=True):
            a = a * size + (x // g // n) * g + x % g
        return a


def plan_banks(tensor: str, streams: Sequence[AddressStream]) -> Banking:
    """Bank counts from the constant index deltas of ports active in the same cycle (LEGO's span / GCD rule)."""
    if not streams:
        raise LegoError(f"tensor {tensor}: no ports to bank")
    dims = len(streams[0].const)
    distinct = {s.const for s in streams}
    gcds, banks = [], []
    for d in range(dims):
        vals = sorted({s.const[d] for s in streams})
        g = 0
        for v in vals:
            g = math.gcd(g, v - vals[0])
        g = max(g, 1)
        gcds.append(g)
        banks.append((vals[-1] - vals[0]) // g + 1)
    # If one dimension alone separates the concurrent elements, bank along it only (fewer banks).
    alone = [d for d in range(dims) if len({c[d] for c in distinct}) == len(distinct)]
    if alone:
        best = min(alone, key=lambda d: banks[d])
        return Banking(tensor, tuple(gcds), tuple(banks[d] if d == best else 1 for d in range(dims)))
    return Banking(tensor, tuple(gcds), tuple(banks))


def verify_conflict_free(
    mapping: Mapping, tensor: str, streams: Sequence[AddressStream], cycles: int, banking: Banking
) -> int:
    """Enumerate every tile and phase cycle; raise LegoError if two ports hit one bank with different elements.

    Returns the number of (tile, cycle) points checked. Out-of-range indices are not accessed (they read as
    zero / are masked) and are skipped.
    """
    wl = mapping.workload
    shape = wl.shape(tensor)
    counters = tile_counters(mapping)
    terms = tile_offset_terms(mapping, tensor)
    checked = 0
    for values in itertools.product(*[range(0, c.limit, c.step) for c in counters]):
        off = [b + sum(k * v for k, v in zip(coef, values, strict=True)) for b, coef in terms]
        for pc in range(cycles):
            seen: dict[int, tuple[int, ...]] = {}
            for s in streams:
                idx = s.index(off, pc)
                if not all(0 <= x < n for x, n in zip(idx, shape, strict=True)):
                    continue
                bank = banking.bank_of(idx)
                if bank in seen and seen[bank] != idx:
                    raise LegoError(
                        f"tensor {tensor}: bank conflict in cycle {pc} of tile {values}: elements {seen[bank]} "
                        f"and {idx} both map to bank {bank} of {banking.banks}; use more banks"
                    )
                seen[bank] = idx
            checked += 1
    return checked
