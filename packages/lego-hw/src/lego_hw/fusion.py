"""Multi-dataflow fusion: one PE array that runs several dataflows, selected by a `mode` input (LEGO Sec. III-E).

The per-mode plans (`lego_hw.rtl.plan.ModePlan`) are merged PE by PE and tensor by tensor:
- an operand (or partial-sum input) with the same source in every mode is one wire / register chain, shared;
- where the sources differ, the emitter places a mux selected by `mode` in front of the operand register
  (or on the wire), one mux per differing operand;
- memory ports are shared by index (port k of every mode is one physical port whose address generator is
  a mode-selected affine stream), the MACs, accumulators and tile counters are shared by all modes.
`FusedArray.stats()` reports the shared links and muxes; tests check that the fused array synthesizes to
fewer cells than the separate arrays together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from lego_hw.errors import LegoError
from lego_hw.rtl.plan import PE, ModePlan, Source

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
