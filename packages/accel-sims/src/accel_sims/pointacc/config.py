"""PointAcc hardware parameters: mapping unit, memory management unit, matrix unit, DRAM, clock and energies.

PointAcc (Lin, Zhang, Tang, Wang, Han; MICRO 2021, arXiv:2110.07600), Sec. 4 (architecture: the Mapping Unit's
ranking-based sorter/merger with distance units, the Memory Management Unit with its configurable cache, the Matrix
Unit's systolic array) and Sec. 5 (evaluation setup: a server and an edge configuration).

Provenance tags, as in the project's hw.md: [M] = the paper's number as we remember it, not re-read from the PDF
(the PDF was not available here; treat as unverified); [A] = our assumption. Energies are a cited table
(`EnergyTable`: Horowitz ISSCC'14 45 nm, scaled to PointAcc's 40 nm by 40/45 as for SpAtten), not the paper's power
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from accel_sims.errors import AccelSimsError

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm; PointAcc is a 40 nm design [M], so we scale switched
# capacitance linearly with feature size at the same voltage (our assumption, as in accel_sims.spatten.config).
_TECH_SCALE = 40.0 / 45.0


class MappingUnitConfig(BaseModel):
    """The Mapping Unit: a bitonic sorter of width W, a merger, and distance units (PointAcc Sec. 4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sorter_width: int = Field(
        default=64,
        ge=2,
        description=(
            "W: keys the bitonic sorter takes per cycle (fully pipelined). Power of two. [A]: 64 matches the matrix "
            "unit's 64 columns so one sorted chunk feeds one array row."
        ),
    )
    merger_width: int = Field(
        default=64, ge=1, description="Keys the merger emits per cycle when merging two sorted streams [A]."
    )
    distance_units: int = Field(
        default=64,
        ge=1,
        description="3-D squared-distance units working in parallel (one distance per cycle each) [A].",
    )
    pipeline_latency: int = Field(
        default=0,
        ge=0,
        description="Extra fixed cycles per mapping operation (fill/drain besides the sorter's stages); 0 [A].",
    )

    @model_validator(mode="after")
    def _check(self) -> MappingUnitConfig:
        if self.sorter_width & (self.sorter_width - 1):
            raise ValueError(f"sorter_width must be a power of two (bitonic network), got {self.sorter_width}")
        return self

    @property
    def sorter_stages(self) -> int:
        """Stages of the bitonic sorter: log2 W * (log2 W + 1) / 2 (hw.md Sec. 3.2), each W/2 compare-swaps."""
        return bitonic_stages(self.sorter_width)


def bitonic_stages(width: int) -> int:
    """Stages of a bitonic sorting network of `width` keys: log2(w) * (log2(w) + 1) / 2."""
    if width < 1 or width & (width - 1):
        raise AccelSimsError(f"width must be a positive power of two, got {width}")
    lg = int(math.log2(width))
    return lg * (lg + 1) // 2


class MMUConfig(BaseModel):
    """The Memory Management Unit: gathers/scatters feature rows through a configurable cache (PointAcc Sec. 4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cache_enabled: bool = Field(default=True, description="False: every gathered row comes from DRAM (ablation).")
    cache_kb: float = Field(default=256.0, gt=0, description="Cache capacity in KiB [A].")
    block_rows: int = Field(
        default=4,
        ge=1,
        description=(
            "Cache block size in feature rows (one row = one point's channel vector). The paper configures the "
            "block size per layer [M]; we use one value for the whole run and let each layer bypass the cache "
            "when that is cheaper (see simulator). 4 [A]."
        ),
    )
    rows_per_cycle: int = Field(default=1, ge=1, description="Feature rows the MMU delivers per cycle [A].")
    output_tile_rows: int = Field(
        default=256,
        ge=1,
        description=(
            "Output rows whose partial sums a sparse convolution keeps on chip while it walks all kernel offsets "
            "(output-stationary tiles; 256 rows x 256 channels x 4 B = 256 KiB) [A]. Sets the gather order."
        ),
    )


class MatrixUnitConfig(BaseModel):
    """The Matrix Unit: a weight-stationary systolic array (PointAcc Sec. 4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(default=64, ge=1, description="Systolic array rows (input channels per weight tile) [M]: 64.")
    cols: int = Field(default=64, ge=1, description="Systolic array columns (output channels per tile) [M]: 64.")
    precision: Literal["int8", "fp16"] = Field(
        default="fp16", description="Operand precision; sets bytes per feature element [A] (paper: 16-bit [M])."
    )
    fusion_buffer_kb: float = Field(
        default=512.0,
        gt=0,
        description=(
            "On-chip weight buffer that must hold all weights of a temporally fused group of point-wise layers [A]."
        ),
    )

    @property
    def element_bytes(self) -> int:
        return 1 if self.precision == "int8" else 2


class DRAMConfig(BaseModel):
    """Off-chip memory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["HBM2", "DDR4", "LPDDR4", "custom"] = Field(default="HBM2")
    bandwidth_gb_s: float = Field(default=256.0, gt=0, description="Peak bandwidth in GB/s (server: HBM2 256 [M]).")
    efficiency: float = Field(
        default=0.8, gt=0, le=1, description="Fraction of peak bandwidth sustained on streaming access [A]."
    )


class EnergyTable(BaseModel):
    """Energy per operation or byte in pJ. Each default names its source; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mac_int8_pj: float = Field(
        default=(0.2 + 0.1) * _TECH_SCALE,
        gt=0,
        description="INT8 multiply 0.2 + INT32 accumulate add 0.1 (Horowitz ISSCC'14 45 nm), x 40/45.",
    )
    mac_fp16_pj: float = Field(
        default=(1.1 + 0.4) * _TECH_SCALE,
        gt=0,
        description="FP16 multiply 1.1 + FP16 add 0.4 (Horowitz ISSCC'14 45 nm), x 40/45.",
    )
    sram_pj_per_byte: float = Field(
        default=20.0 / 8 * _TECH_SCALE,
        gt=0,
        description="Horowitz: 64-bit read of a 32 KB SRAM = 20 pJ, i.e. 2.5 pJ/byte (banked buffers), x 40/45.",
    )
    dram_pj_per_byte: float = Field(
        default=3.9 * 8,
        gt=0,
        description=(
            "HBM2 3.9 pJ/bit (O'Connor et al., MICRO 2017, as in accel_sims.spatten.config; unverified). The edge "
            "preset uses Horowitz's DDR figure instead."
        ),
    )
    comparator_pj: float = Field(
        default=0.1 * _TECH_SCALE,
        gt=0,
        description="One 32-bit compare-swap of the sorter/merger ~ one INT32 add (Horowitz 0.1 pJ) [A], x 40/45.",
    )
    distance_pj: float = Field(
        default=(3 * 0.4 + 3 * 1.1 + 2 * 0.4) * _TECH_SCALE,
        gt=0,
        description="One 3-D squared distance in FP16: 3 sub + 3 mult + 2 add (Horowitz), x 40/45 [A].",
    )
    static_power_w: float = Field(
        default=1.0,
        ge=0,
        description="Leakage and clock power while running, charged per second of run time [A].",
    )

    def mac_pj(self, precision: str) -> float:
        return self.mac_int8_pj if precision == "int8" else self.mac_fp16_pj


class PointAccConfig(BaseModel):
    """A PointAcc configuration, with ablation flags for the cache and temporal layer fusion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="custom", description="Preset name, for reports.")
    clock_ghz: float = Field(default=1.0, gt=0, description="Clock [M]: 1 GHz.")
    mapping: MappingUnitConfig = Field(default_factory=MappingUnitConfig)
    mmu: MMUConfig = Field(default_factory=MMUConfig)
    matrix: MatrixUnitConfig = Field(default_factory=MatrixUnitConfig)
    dram: DRAMConfig = Field(default_factory=DRAMConfig)
    energy: EnergyTable = Field(default_factory=EnergyTable)
    fusion: bool = Field(
        default=True, description="Temporal fusion of consecutive point-wise layers (False: ablation)."
    )
    index_bytes: int = Field(default=4, ge=1, description="Bytes per point index in neighbour/kernel maps [A].")
    coord_bytes: int = Field(default=2, ge=1, description="Bytes per coordinate (x, y, z each) [A]: 16-bit.")

    @property
    def dram_bytes_per_cycle(self) -> float:
        """Sustained DRAM bytes per clock cycle."""
        return self.dram.bandwidth_gb_s * self.dram.efficiency / self.clock_ghz

    def ablate(self, *, cache: bool | None = None, fusion: bool | None = None) -> PointAccConfig:
        """A copy with the cache and/or temporal fusion switched (name gets a suffix)."""
        cfg = self
        suffix = ""
        if cache is not None:
            cfg = cfg.model_copy(update={"mmu": cfg.mmu.model_copy(update={"cache_enabled": cache})})
            suffix += "" if cache else "-nocache"
        if fusion is not None:
            cfg = cfg.model_copy(update={"fusion": fusion})
            suffix += "" if fusion else "-nofusion"
        return cfg.model_copy(update={"name": cfg.name + suffix})

    def with_overrides(self, overrides: Mapping[str, object]) -> PointAccConfig:
        """A copy with dotted-path fields replaced, e.g. {"mmu.cache_kb": 128, "fusion": False}; a bad key or value
        raises AccelSimsError naming the field."""
        data = self.model_dump()
        for key, value in overrides.items():
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise AccelSimsError(f"unknown PointAcc config field {key!r}")
                node = node[part]
            if parts[-1] not in node:
                raise AccelSimsError(f"unknown PointAcc config field {key!r}")
            node[parts[-1]] = value
        try:
            return type(self).model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "config"
            raise AccelSimsError(f"PointAcc config field {field}: {err['msg']} (got {err.get('input')!r})") from e

    @classmethod
    def from_name(cls, name: str) -> PointAccConfig:
        """A named preset: 'server', 'edge', 'tiny' (tests)."""
        if name not in _PRESETS:
            raise AccelSimsError(f"unknown PointAcc preset {name!r}; expected one of {sorted(_PRESETS)}")
        return cls.model_validate({"name": name, **_PRESETS[name]})


_PRESETS: dict[str, dict[str, object]] = {
    # Server: 64x64 systolic array [M], HBM2 256 GB/s [M], 1 GHz [M]; sorter/merger 64 wide, 64 distance units,
    # 256 KiB cache with 4-row blocks, 512 KiB weight buffer: [A].
    "server": {},
    # Edge: 16x16 array [M] and DDR4 ~17 GB/s [M]; mapping unit scaled with the array (16 wide) and a 64 KiB cache,
    # 128 KiB weight buffer [A]. DRAM energy: Horowitz's low DDR figure, 1.3 nJ per 64-bit access = 162.5 pJ/byte.
    "edge": {
        "mapping": {"sorter_width": 16, "merger_width": 16, "distance_units": 16},
        "mmu": {"cache_kb": 64.0},
        "matrix": {"rows": 16, "cols": 16, "fusion_buffer_kb": 128.0},
        "dram": {"kind": "DDR4", "bandwidth_gb_s": 17.0},
        "energy": {"dram_pj_per_byte": 1300.0 / 8, "static_power_w": 0.1},
    },
    # For tests: small enough to count by hand (unit efficiency, 8 B/cycle DRAM, 4x4 array, 4-wide sorter).
    "tiny": {
        "mapping": {"sorter_width": 4, "merger_width": 4, "distance_units": 4},
        "mmu": {"cache_kb": 1.0, "block_rows": 2},
        "matrix": {"rows": 4, "cols": 4, "fusion_buffer_kb": 4.0},
        "dram": {"kind": "custom", "bandwidth_gb_s": 8.0, "efficiency": 1.0},
        "energy": {"static_power_w": 0.0},
    },
}


def preset_names() -> tuple[str, ...]:
    """Names accepted by `PointAccConfig.from_name`."""
    return tuple(_PRESETS)
