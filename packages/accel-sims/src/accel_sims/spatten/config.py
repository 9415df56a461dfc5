"""SpAtten hardware parameters: datapath sizes, pipeline latencies and per-access energies, with named presets.

SpAtten (Wang, Zhang, Han; HPCA 2021, arXiv:2012.09852), Sec. 4 (architecture) and Sec. 5 (evaluation setup).
Sizes and latencies follow the reference design mit-han-lab/spatten as summarised in the project's hw.md Sec. 2.3:
the RTL `SpAttenConfig` (sizeD 64, 512 multipliers, 16 DRAM channels, 32-byte AXI data bus), the behavioural model
`simulator/src/bert.cpp` (512 x 2 multipliers for Q.K and P.V, pipeline latencies, 6-bit widths packed as 8) and the
top-k latency model `sim/TopKLatencyModel.scala` (16 comparators, ceil(n/16) + 3 cycles per quick-select round).

Energies are a cited table (`EnergyTable`), not the paper's numbers: the paper's power/area table could not be read
(hw.md marks its ~8.3 W / 18.7 mm^2 as unverified), so every value below names its source and the scaling applied.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from accel_sims.errors import AccelSimsError

# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm at 0.9 V; SpAtten is a
# 40 nm design, so we scale switched capacitance linearly with feature size at the same voltage (40/45). This is our
# assumption; a real 40 nm library would differ by tens of percent.
_TECH_SCALE = 40.0 / 45.0


class LatencyTable(BaseModel):
    """Fixed pipeline latencies in cycles (bert.cpp's drain terms; hw.md Sec. 2.3 [F])."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_sram: int = Field(default=1, ge=0, description="Key buffer SRAM read.")
    key_multiplier: int = Field(default=1, ge=0, description="Q.K multiplier stage.")
    key_reduction_tree: int = Field(default=9, ge=0, description="Adder tree over D products (log2(512)).")
    softmax_dequantize: int = Field(default=7, ge=0)
    softmax_exp: int = Field(default=21, ge=0)
    softmax_accumulate: int = Field(default=23, ge=0)
    softmax_divide: int = Field(default=29, ge=0)
    softmax_quantize: int = Field(default=7, ge=0)
    requant_decision: int = Field(default=1, ge=0, description="max(prob) < threshold compare (bert.cpp: 1).")
    topk_passthrough: int = Field(default=1, ge=0, description="Top-k stage when it only forwards (bert.cpp: 1).")
    value_sram: int = Field(default=1, ge=0)
    value_multiplier: int = Field(default=1, ge=0)
    value_accumulate: int = Field(default=1, ge=0)

    @property
    def key_path(self) -> int:
        """Q.K path: SRAM + multiplier + reduction tree (bert.cpp: 11)."""
        return self.key_sram + self.key_multiplier + self.key_reduction_tree

    @property
    def softmax(self) -> int:
        """Softmax pipeline without its FIFO (bert.cpp: 7 + 21 + 23 + 29 + 7 = 87)."""
        return (
            self.softmax_dequantize
            + self.softmax_exp
            + self.softmax_accumulate
            + self.softmax_divide
            + self.softmax_quantize
        )

    @property
    def value_path(self) -> int:
        """P.V path: SRAM + multiplier + accumulator (bert.cpp: 3)."""
        return self.value_sram + self.value_multiplier + self.value_accumulate


class EnergyTable(BaseModel):
    """Energy per access or operation in pJ. Each default names its source; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dram_pj_per_bit: float = Field(
        default=3.9,
        gt=0,
        description=(
            "HBM2 access energy. 3.9 pJ/bit: O'Connor et al., 'Fine-Grained DRAM', MICRO 2017 (HBM2 ~3.9 pJ/bit, "
            "from memory of the paper, unverified); the same figure appears in zhuhanqing/Lightening-Transformer's "
            "simulator config as 62.4 pJ per 2 bytes (hw.md Sec. 4.3 [F])."
        ),
    )
    sram_pj_per_bit: float = Field(
        default=20.0 / 64.0 * _TECH_SCALE,
        gt=0,
        description="Horowitz ISSCC'14 45 nm: 64-bit read of a 32 KB SRAM = 20 pJ; per bit, scaled by 40/45.",
    )
    multiply_pj: float = Field(
        default=0.2 * (12 / 8) ** 2 * _TECH_SCALE,
        gt=0,
        description=(
            "One 12-bit fixed-point multiply (RTL widthQuantValue=12). Horowitz INT8 mult 0.2 pJ, scaled by "
            "(12/8)^2 for an array multiplier and by 40/45."
        ),
    )
    add_pj: float = Field(
        default=0.1 * _TECH_SCALE,
        gt=0,
        description="One accumulate/adder-tree add at 32 bits: Horowitz INT32 add 0.1 pJ, scaled by 40/45.",
    )
    softmax_pj_per_element: float = Field(
        default=(2 * 0.2 * (12 / 8) ** 2 + 4 * 3.7 + 4 * 0.9 + 0.9 + 3.7) * _TECH_SCALE,
        gt=0,
        description=(
            "Our assumption, built from Horowitz ops: dequantize + quantize (two 12-bit mults), e^x as a degree-4 "
            "polynomial (4 FP32 mult + 4 FP32 add), accumulate (FP32 add), divide as a multiply by the row's "
            "reciprocal (FP32 mult); scaled by 40/45."
        ),
    )
    topk_pj_per_element: float = Field(
        default=(0.03 * 12 / 8 + 20.0 / 64.0 * 12) * _TECH_SCALE,
        gt=0,
        description=(
            "One element through a quick-select round: a 12-bit compare (Horowitz INT8 add 0.03 pJ x 12/8) plus a "
            "12-bit FIFO/SRAM write of the survivor (Horowitz 32 KB SRAM per bit x 12); our assumption, scaled 40/45."
        ),
    )


class SpAttenConfig(BaseModel):
    """The SpAtten datapath: sizes, clock, DRAM, top-k engine, latencies and energies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="custom", description="Preset name, for reports.")
    max_head_dim: int = Field(default=64, ge=1, description="sizeD: the longest head the datapath holds (RTL: 64).")
    qk_multipliers: int = Field(default=512, ge=1, description="Multipliers of the Q.K array (bert.cpp: 512).")
    pv_multipliers: int = Field(default=512, ge=1, description="Multipliers of the P.V array (bert.cpp: 512).")
    dram_channels: int = Field(default=16, ge=1, description="DRAM channels (RTL numDRAMChannel: 16).")
    transaction_bytes: int = Field(default=32, ge=1, description="Bytes per DRAM transaction (256-bit AXI bus).")
    transactions_per_cycle_per_channel: float = Field(
        default=1.0, gt=0, description="bert.cpp charges one transaction per channel per cycle (no Ramulator)."
    )
    packed_bit_widths: tuple[int, ...] = Field(
        default=(1, 2, 4, 8, 12, 16, 32),
        description=(
            "Widths the fetchers pack into DRAM lines; others round up to the next one (hw.md: 6-bit widths are "
            "rounded up to 8). 12 is the RTL's widthQuantValue."
        ),
    )
    topk_parallelism: int = Field(
        default=16, ge=1, description="Comparators (and zero-eliminator lanes) of the top-k engine (P=16)."
    )
    topk_round_overhead: int = Field(
        default=3, ge=0, description="Cycles added per quick-select round: comparator, ZE and FIFO latency."
    )
    clock_ghz: float = Field(default=1.0, gt=0, description="Clock frequency (paper: 1 GHz [M]).")
    dram_kind: Literal["HBM2", "DDR4", "custom"] = Field(default="HBM2")
    overlap_fetch_compute: bool = Field(
        default=True,
        description=(
            "True: fetch of a head overlaps its compute (double-buffered), a head costs max(DRAM, compute). "
            "False: bert.cpp's serial sum DRAM + compute."
        ),
    )
    latency: LatencyTable = Field(default_factory=LatencyTable)
    energy: EnergyTable = Field(default_factory=EnergyTable)

    @model_validator(mode="after")
    def _check(self) -> SpAttenConfig:
        if not self.packed_bit_widths or list(self.packed_bit_widths) != sorted(set(self.packed_bit_widths)):
            raise ValueError(
                f"packed_bit_widths must be strictly increasing and non-empty, got {self.packed_bit_widths}"
            )
        if self.packed_bit_widths[0] < 1:
            raise ValueError(f"packed_bit_widths must be >= 1, got {self.packed_bit_widths}")
        if self.qk_multipliers < self.max_head_dim or self.pv_multipliers < self.max_head_dim:
            raise ValueError(
                f"qk_multipliers ({self.qk_multipliers}) and pv_multipliers ({self.pv_multipliers}) must be >= "
                f"max_head_dim ({self.max_head_dim}): one key per cycle needs D multipliers"
            )
        return self

    @property
    def dram_bytes_per_cycle(self) -> float:
        """Peak DRAM bandwidth in bytes per cycle (16 x 32 B = 512 B/cycle = 512 GB/s at 1 GHz)."""
        return self.dram_channels * self.transaction_bytes * self.transactions_per_cycle_per_channel

    @property
    def dram_gb_per_s(self) -> float:
        return self.dram_bytes_per_cycle * self.clock_ghz

    @classmethod
    def from_name(cls, name: str) -> SpAttenConfig:
        """A named preset: 'spatten' (the paper/RTL design), 'spatten-1/8' (A3 iso-resource), 'bert-cpp', 'tiny'."""
        if name not in _PRESETS:
            raise AccelSimsError(f"unknown SpAtten preset {name!r}; expected one of {sorted(_PRESETS)}")
        return cls.model_validate({"name": name, **_PRESETS[name]})


# Preset overrides of the defaults above (which are the paper/RTL design).
_PRESETS: dict[str, dict[str, object]] = {
    # The full design: 512 + 512 multipliers, 16 HBM channels, 16-way top-k, 1 GHz.
    "spatten": {},
    # SpAtten-1/8 for the iso-resource comparison with A3 [M]: every resource divided by 8 (the RTL's
    # SpAttenConfigScaledown divides multipliers and DRAM channels by the ratio): 64 + 64 multipliers (= D, one key
    # per cycle), 2 DRAM channels; top-k parallelism 16 / 8 = 2 is our assumption.
    "spatten-1/8": {"qk_multipliers": 64, "pv_multipliers": 64, "dram_channels": 2, "topk_parallelism": 2},
    # Close to bert.cpp's behavioural model: serial DRAM + compute, zero eliminator of 4 (sizeZE) and 4 cycles of
    # overhead per round (bert.cpp floors n/4 where this model takes ceil(n/4); its 12-bit-as-8 rounding is not copied).
    "bert-cpp": {"overlap_fetch_compute": False, "topk_parallelism": 4, "topk_round_overhead": 4},
    # For tests: small enough to count by hand.
    "tiny": {"max_head_dim": 4, "qk_multipliers": 8, "pv_multipliers": 8, "dram_channels": 2, "topk_parallelism": 2},
}


def preset_names() -> tuple[str, ...]:
    """Names accepted by `SpAttenConfig.from_name`."""
    return tuple(_PRESETS)
