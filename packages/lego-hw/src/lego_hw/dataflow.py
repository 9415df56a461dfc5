"""Spatial dataflows as space-time transforms, their legality, and tiled mappings (LEGO Sec. III-A).

A dataflow picks `n_space + 1` loops of a workload (the inner loops) and an integer square matrix STT over
them: the first `n_space` rows give a PE coordinate, the last row the cycle, `(s, t) = STT @ i`. This is the
dataflow mapping f_{TS->I} of the paper, inverted. The remaining loops of the workload run sequentially,
outside, as do the tiles of the inner loops that do not fit the array.

Presets are written for GEMM roles (i: output rows, j: output columns, k: reduction) and bound to a
workload's loops by name, e.g. `Dataflow.preset("weight-stationary", loops=("k", "x", "c"))` for a conv.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lego_hw import intlinalg as la
from lego_hw.errors import ArrayTooLargeError, IllegalMappingError, LegoError
from lego_hw.workload import Workload

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# STT columns are (i, j, k) = (output row, output column, reduction) of a GEMM.
_PRESETS: dict[str, tuple[tuple[int, ...], ...]] = {
    # Kung-Leiserson output-stationary: A flows right, B flows down, C accumulates in place.
    "output-stationary": ((1, 0, 0), (0, 1, 0), (1, 1, 1)),
    # TPU/Gemmini weight-stationary: B held, A flows right, partial sums flow down.
    "weight-stationary": ((0, 0, 1), (0, 1, 0), (1, 1, 1)),
    # Input-stationary: A held, B flows down the rows, partial sums flow right.
    "input-stationary": ((1, 0, 0), (0, 0, 1), (1, 1, 1)),
    # Output-stationary with multicast: A broadcast along a row, B along a column, one k per cycle.
    "os-broadcast": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    # Output-stationary, A multicast along rows, B systolic down the columns.
    "os-multicast-a": ((1, 0, 0), (0, 1, 0), (1, 0, 1)),
}


def preset_names() -> tuple[str, ...]:
    """Names accepted by `Dataflow.preset`."""
    return tuple(_PRESETS)


class ArraySpec(BaseModel):
    """The PE array: shape and datapath widths."""

    model_config = _FROZEN

    rows: int = Field(ge=1, le=256, description="PEs along spatial axis 0.")
    cols: int = Field(default=1, ge=1, le=256, description="PEs along spatial axis 1 (1 for a 1-D array).")
    data_width: int = Field(default=8, ge=2, le=32, description="Bits of each input operand (signed).")
    acc_width: int = Field(default=32, ge=4, le=64, description="Bits of the accumulators and outputs (signed).")

    @property
    def num_pes(self) -> int:
        return self.rows * self.cols


class Dataflow(BaseModel):
    """A space-time transform over `loops`: rows 0..n_space-1 are PE axes, the last row is time."""

    model_config = _FROZEN

    name: str = Field(default="custom", description="Name used in reports and module names.")
    loops: tuple[str, ...] = Field(description="The workload loops the transform acts on, in STT column order.")
    stt: tuple[tuple[int, ...], ...] = Field(description="Square integer matrix; last row is the time row.")

    @model_validator(mode="after")
    def _check(self) -> Dataflow:
        n = len(self.loops)
        if n < 2 or n > 3:
            raise LegoError(f"dataflow {self.name}: needs 2 or 3 loops (1-D or 2-D array plus time), got {n}")
        if len(set(self.loops)) != n:
            raise LegoError(f"dataflow {self.name}: loops repeat: {self.loops}")
        if len(self.stt) != n or any(len(r) != n for r in self.stt):
            raise LegoError(f"dataflow {self.name}: STT must be {n}x{n} for loops {self.loops}, got {self.stt}")
        return self

    @property
    def n_space(self) -> int:
        return len(self.loops) - 1

    @property
    def space_rows(self) -> tuple[tuple[int, ...], ...]:
        return self.stt[:-1]

    @property
    def time_row(self) -> tuple[int, ...]:
        return self.stt[-1]

    @classmethod
    def preset(cls, name: str, loops: Sequence[str] = ("i", "j", "k")) -> Dataflow:
        """A named dataflow bound to `loops` = (output-row loop, output-column loop, reduction loop)."""
        if name not in _PRESETS:
            raise LegoError(f"unknown dataflow preset {name!r}; choose one of {preset_names()}")
        return cls(name=name, loops=tuple(loops), stt=_PRESETS[name])


@dataclass(frozen=True)
class Mapping:
    """A dataflow applied to one workload on one array: inner loops, tile extents and the tile grid.

    Built by `map_workload`, which checks legality. Local iteration `i` (within a tile, inner loops only)
    runs on PE `space(i)` at cycle `time(i)` after the tile starts.
    """

    workload: Workload
    dataflow: Dataflow
    array: ArraySpec
    inner: tuple[int, ...]  # workload loop index of each dataflow loop
    outer: tuple[int, ...]  # workload loop indices run sequentially, outermost first
    tile: tuple[int, ...]  # extent of each inner loop per tile
    space_offset: tuple[int, ...]  # subtracted from STT space rows so PE coordinates start at 0
    time_offset: int

    @property
    def tiles_per_loop(self) -> tuple[int, ...]:
        return tuple(math.ceil(self.workload.bounds[w] / e) for w, e in zip(self.inner, self.tile, strict=True))

    @property
    def num_tiles(self) -> int:
        return math.prod(self.tiles_per_loop) * math.prod(self.workload.bounds[w] for w in self.outer)

    @property
    def time_span(self) -> int:
        """Cycles from the first to the last iteration of one (full) tile, inclusive."""
        row = self.dataflow.time_row
        return sum(abs(c) * (e - 1) for c, e in zip(row, self.tile, strict=True)) + 1

    def space(self, local: Sequence[int]) -> tuple[int, ...]:
        s = la.matvec(self.dataflow.space_rows, local)
        return tuple(a - o for a, o in zip(s, self.space_offset, strict=True))

    def time(self, local: Sequence[int]) -> int:
        return sum(c * v for c, v in zip(self.dataflow.time_row, local, strict=True)) - self.time_offset

    def iteration(self, pe: Sequence[int], t: int) -> tuple[int, ...] | None:
        """Local iteration run by PE `pe` at cycle `t`, or None when that space-time point has none in Z^n."""
        st = [p + o for p, o in zip(pe, self.space_offset, strict=True)] + [t + self.time_offset]
        inv = la.inverse(self.dataflow.stt)
        it = [sum(Fraction(c) * v for c, v in zip(row, st, strict=True)) for row in inv]
        if any(v.denominator != 1 for v in it):
            return None
        return tuple(int(v) for v in it)

    def pe_shape(self) -> tuple[int, ...]:
        return (self.array.rows, self.array.cols)[: self.dataflow.n_space]


def check_legality(workload: Workload, dataflow: Dataflow) -> None:
    """Raise IllegalMappingError unless `dataflow` is a legal space-time mapping of `workload`.

    Legal: the STT is injective on the integer iteration lattice (non-zero determinant, hence a bijection
    onto its image on any bounded box), and every reduction dependence of the output advances in time (a
    zero time step would need a spatial reduction tree, which this generator does not build).
    """
    for lp in dataflow.loops:
        workload.loop_index(lp)  # raises with the workload's loop names
    det = la.determinant(dataflow.stt)
    if det == 0:
        ker = la.kernel_basis(dataflow.stt)[0]
        raise IllegalMappingError(
            f"dataflow {dataflow.name}: STT {dataflow.stt} is singular, so iterations that differ by "
            f"{dict(zip(dataflow.loops, ker, strict=True))} run on the same PE in the same cycle; "
            "choose rows that are linearly independent"
        )
    cols = [workload.loop_index(lp) for lp in dataflow.loops]
    out = workload.output
    a_inner = tuple(tuple(row[c] for c in cols) for row in out.matrix)
    for u in la.kernel_basis(a_inner, len(cols)):
        dt = sum(c * v for c, v in zip(dataflow.time_row, u, strict=True))
        if dt == 0:
            ds = la.matvec(dataflow.space_rows, u)
            raise IllegalMappingError(
                f"dataflow {dataflow.name}: the reduction of {out.name} along "
                f"{dict(zip(dataflow.loops, u, strict=True))} moves {ds} PEs in 0 cycles, which needs a spatial "
                "reduction tree; give the reduction loop a non-zero coefficient in the time row"
            )


def map_workload(
    workload: Workload, dataflow: Dataflow, array: ArraySpec, tile: MappingABC[str, int] | None = None
) -> Mapping:
    """Check legality and fit, and choose tile extents for the inner loops.

    A loop whose STT column drives one PE axis alone (a unit space row) is tiled by that axis' size; a loop
    only in the time row streams whole. `tile` overrides extents for other transforms; the tile's image must
    fit the array. An array axis longer than its loop raises ArrayTooLargeError.
    """
    check_legality(workload, dataflow)
    n_space = dataflow.n_space
    if n_space == 1 and array.cols != 1:
        raise LegoError(f"dataflow {dataflow.name} is 1-D but the array has {array.cols} columns; use cols=1")
    sizes = (array.rows, array.cols)[:n_space]
    inner = tuple(workload.loop_index(lp) for lp in dataflow.loops)
    extents: list[int | None] = [None] * len(inner)
    for axis, row in enumerate(dataflow.space_rows):
        nz = [c for c, v in enumerate(row) if v != 0]
        if len(nz) == 1 and abs(row[nz[0]]) == 1 and extents[nz[0]] is None:
            loop = nz[0]
            bound = workload.bounds[inner[loop]]
            if sizes[axis] > bound:
                raise ArrayTooLargeError(
                    f"array axis {axis} has {sizes[axis]} PEs but loop {dataflow.loops[loop]!r} of "
                    f"{workload.name} has only {bound} iterations; use an array of at most {bound} PEs "
                    "along that axis or map a longer loop to it"
                )
            extents[loop] = sizes[axis]
    for c in range(len(inner)):
        name = dataflow.loops[c]
        if tile is not None and name in tile:
            if not 1 <= tile[name] <= workload.bounds[inner[c]]:
                raise LegoError(f"tile extent {tile[name]} for loop {name!r} is outside 1..{workload.bounds[inner[c]]}")
            extents[c] = int(tile[name])
        elif extents[c] is None:
            if any(dataflow.space_rows[a][c] != 0 for a in range(n_space)):
                raise LegoError(
                    f"dataflow {dataflow.name}: loop {name!r} enters a PE coordinate with other loops; "
                    "pass its tile extent explicitly (tile={...})"
                )
            extents[c] = workload.bounds[inner[c]]
    ext = tuple(int(e) for e in extents if e is not None)
    assert len(ext) == len(inner)
    # The tile box's image under the space rows must fit the array.
    corners = list(itertools.product(*[(0, e - 1) for e in ext]))
    offs = []
    for axis, row in enumerate(dataflow.space_rows):
        vals = [sum(c * v for c, v in zip(row, p, strict=True)) for p in corners]
        if max(vals) - min(vals) + 1 > sizes[axis]:
            raise LegoError(
                f"dataflow {dataflow.name}: a tile {dict(zip(dataflow.loops, ext, strict=True))} spans "
                f"{max(vals) - min(vals) + 1} PEs along axis {axis}, more than the array's {sizes[axis]}"
            )
        offs.append(min(vals))
    tvals = [sum(c * v for c, v in zip(dataflow.time_row, p, strict=True)) for p in corners]
    outer = tuple(w for w in range(len(workload.loops)) if w not in inner)
    return Mapping(workload, dataflow, array, inner, outer, ext, tuple(offs), min(tvals))
