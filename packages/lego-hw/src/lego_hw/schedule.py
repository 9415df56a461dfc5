"""The cycle schedule of a generated array: tile order and phase lengths (the contract RTL and model share).

A mapped workload runs as a sequence of tiles: outer loops in workload order (outermost first), then the
tiles of the inner loops in dataflow order. Each tile runs, without overlap:
1. preload: inputs with stationary reuse shift into the PEs along the array's row axis (one row per cycle);
2. compute: the tile's space-time box (`Mapping.time_span` cycles) plus the datapath latency;
3. drain: an output with stationary reuse shifts out of the PEs along the row axis.
The generated controller follows exactly this schedule, and `total_cycles` equals the RTL simulation's
cycle count from `start` to `done` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

from lego_hw.dataflow import Mapping
from lego_hw.reuse import analyze

# Cycles the controller spends between tiles (phase hand-over) and once per run (start, done).
TILE_OVERHEAD = 1
RUN_OVERHEAD = 1
# Cycles from the last iteration's operands being in the PE registers to its result leaving the array.
COMPUTE_LATENCY = 2


@dataclass(frozen=True)
class TilePhases:
    preload: int
    compute: int
    drain: int
    overhead: int

    @property
    def total(self) -> int:
        return self.preload + self.compute + self.drain + self.overhead


def tile_phases(mapping: Mapping) -> TilePhases:
    """Phase lengths of one tile (every tile has the same, edge tiles are zero-padded)."""
    reuse = analyze(mapping.workload, mapping.dataflow)
    rows = mapping.array.rows
    stationary_in = any(r.role == "input" and "stationary" in r.kinds for r in reuse.values())
    stationary_out = any(r.role == "output" and "stationary" in r.kinds for r in reuse.values())
    return TilePhases(
        preload=rows if stationary_in else 0,
        compute=mapping.time_span + COMPUTE_LATENCY,
        drain=rows if stationary_out else 0,
        overhead=TILE_OVERHEAD,
    )


def total_cycles(mapping: Mapping) -> int:
    """Cycles of the whole workload on the array, start to done."""
    return mapping.num_tiles * tile_phases(mapping).total + RUN_OVERHEAD
