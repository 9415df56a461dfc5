"""Per-operation and per-access energies as a cited data table (used by the performance model, LEGO Sec. VI).

The default preset is Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
45 nm, the table most accelerator papers (Eyeriss, Timeloop/Accelergy defaults, LEGO's own baselines) start
from. Every number carries its source string so a report can print where it came from.

Derived quantities, each stated where it is computed:
- operand widths other than 8 and 32 bits: a power law through the two cited points of the same operation
  (the multiplier grows ~quadratically with width, the adder ~linearly, and the cited points agree);
- SRAM of another capacity: linear in log2(capacity) between the cited capacities (the access energy of an
  SRAM grows with its bit-line and word-line lengths, i.e. roughly with the log of its size across this range);
- any access width: the 64-bit access energy scaled linearly per bit.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lego_hw.errors import LegoError

_FROZEN = ConfigDict(frozen=True, extra="forbid")

HOROWITZ = "Horowitz, ISSCC 2014, 45 nm (shared/reference/hw.md sec. 5.1)"


class EnergyEntry(BaseModel):
    """One cited energy in picojoules."""

    model_config = _FROZEN

    pj: float = Field(gt=0, description="Energy in pJ.")
    source: str = Field(min_length=1, description="Where the number comes from and how it was derived.")


class SramPoint(BaseModel):
    """Energy of one 64-bit read of an SRAM of `capacity_bytes`."""

    model_config = _FROZEN

    capacity_bytes: int = Field(gt=0)
    read_64b: EnergyEntry


class EnergyTable(BaseModel):
    """The energy model's parameters: arithmetic, registers, SRAM by capacity, DRAM; all in pJ."""

    model_config = _FROZEN

    name: str = Field(default="horowitz-45nm")
    int8_add: EnergyEntry
    int8_mult: EnergyEntry
    int32_add: EnergyEntry
    int32_mult: EnergyEntry
    register_bit: EnergyEntry = Field(description="One bit written to or read from a PE register or FIFO stage.")
    sram_64b: tuple[SramPoint, ...] = Field(description="64-bit read energy by capacity, at least one point.")
    sram_write_factor: float = Field(default=1.0, gt=0, description="Write energy / read energy of the SRAM.")
    dram_64b: EnergyEntry = Field(description="One 64-bit off-chip DRAM access.")

    @model_validator(mode="after")
    def _check(self) -> EnergyTable:
        caps = [p.capacity_bytes for p in self.sram_64b]
        if not caps or caps != sorted(set(caps)):
            raise LegoError(f"energy table {self.name}: SRAM points need strictly increasing capacities, got {caps}")
        return self

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def default(cls) -> EnergyTable:
        """The Horowitz 45 nm table (`preset("horowitz-45nm")`)."""
        return cls.preset("horowitz-45nm")

    @classmethod
    def preset(cls, name: str) -> EnergyTable:
        if name != "horowitz-45nm":
            raise LegoError(f"unknown energy preset {name!r}; choose one of {preset_names()}")
        kib = 1024
        return cls(
            name="horowitz-45nm",
            int8_add=EnergyEntry(pj=0.03, source=f"{HOROWITZ}: 8-bit integer add"),
            int8_mult=EnergyEntry(pj=0.2, source=f"{HOROWITZ}: 8-bit integer multiply"),
            int32_add=EnergyEntry(pj=0.1, source=f"{HOROWITZ}: 32-bit integer add"),
            int32_mult=EnergyEntry(pj=3.1, source=f"{HOROWITZ}: 32-bit integer multiply"),
            # Horowitz gives no register energy. Basis: the Eyeriss-like Accelergy ERT (exercise 04, hw.md
            # sec. 5.1) charges 0.146 pJ per 16-bit access of its smallest scratchpad (ifmap_spad, a
            # 12-entry register file), i.e. 0.146/16 pJ per bit; a flip-flop write is of the same order
            # (a few full-adder equivalents, cf. 0.03 pJ for an 8-bit add above).
            register_bit=EnergyEntry(
                pj=0.146 / 16,
                source="Accelergy exercise 04 Eyeriss-like ERT, ifmap_spad 0.146 pJ per 16-bit access, per bit "
                "(hw.md sec. 5.1)",
            ),
            sram_64b=(
                SramPoint(capacity_bytes=8 * kib, read_64b=EnergyEntry(pj=10.0, source=f"{HOROWITZ}: 8 KB SRAM")),
                SramPoint(capacity_bytes=32 * kib, read_64b=EnergyEntry(pj=20.0, source=f"{HOROWITZ}: 32 KB SRAM")),
                SramPoint(capacity_bytes=1024 * kib, read_64b=EnergyEntry(pj=100.0, source=f"{HOROWITZ}: 1 MB SRAM")),
            ),
            # Horowitz gives 1.3-2.6 nJ. DMA moves whole tiles as sequential bursts that mostly hit open DRAM
            # rows, the cheap end of the range; the low end also keeps the model from overstating what a
            # dataflow saves by cutting DRAM traffic.
            dram_64b=EnergyEntry(pj=1300.0, source=f"{HOROWITZ}: DRAM 1.3-2.6 nJ per 64 bits; low end (burst DMA)"),
        )

    # -- derived energies ---------------------------------------------------------------------
    def mult(self, bits: int) -> float:
        """pJ of one `bits`-wide integer multiply: power law through the cited 8- and 32-bit points."""
        return _power_law(bits, self.int8_mult.pj, self.int32_mult.pj)

    def add(self, bits: int) -> float:
        """pJ of one `bits`-wide integer add: power law through the cited 8- and 32-bit points."""
        return _power_law(bits, self.int8_add.pj, self.int32_add.pj)

    def mac(self, data_bits: int, acc_bits: int) -> float:
        """pJ of one multiply-accumulate: a data-width multiply plus an accumulator-width add."""
        return self.mult(data_bits) + self.add(acc_bits)

    def sram_read_64b(self, capacity_bytes: int) -> float:
        """pJ of one 64-bit read of an SRAM (bank) of `capacity_bytes`, linear in log2(capacity).

        Between cited points: interpolation. Below the smallest point: the smallest point's energy (a small
        SRAM still pays sense amplifiers and decoders; this errs high). Above the largest: the last
        segment's slope extended.
        """
        if capacity_bytes <= 0:
            raise LegoError(f"SRAM capacity must be positive, got {capacity_bytes} bytes")
        pts = [(math.log2(p.capacity_bytes), p.read_64b.pj) for p in self.sram_64b]
        x = math.log2(capacity_bytes)
        if x <= pts[0][0] or len(pts) == 1:
            return pts[0][1] if x <= pts[0][0] else pts[-1][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        return y1 + (y1 - y0) * (x - x1) / (x1 - x0)

    def sram_bit(self, capacity_bytes: int, write: bool = False) -> float:
        """pJ per bit read (or written) from an SRAM bank of `capacity_bytes`."""
        e = self.sram_read_64b(capacity_bytes) / 64.0
        return e * self.sram_write_factor if write else e

    def dram_bit(self) -> float:
        """pJ per bit moved to or from DRAM."""
        return self.dram_64b.pj / 64.0

    def sources(self) -> dict[str, str]:
        """Entry name -> source string, for reports."""
        out = {
            k: getattr(self, k).source
            for k in ("int8_add", "int8_mult", "int32_add", "int32_mult", "register_bit", "dram_64b")
        }
        for p in self.sram_64b:
            out[f"sram_64b@{p.capacity_bytes}B"] = p.read_64b.source
        return out


def preset_names() -> tuple[str, ...]:
    """Names accepted by `EnergyTable.preset`."""
    return ("horowitz-45nm",)


def _power_law(bits: int, e8: float, e32: float) -> float:
    if bits < 1:
        raise LegoError(f"operand width must be >= 1 bit, got {bits}")
    alpha = math.log(e32 / e8) / math.log(4.0)
    return e8 * (bits / 8.0) ** alpha
