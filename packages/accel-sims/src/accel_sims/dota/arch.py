"""The DOTA architecture: tiles x cores of Nh x Nw DDOT crossbars with Nλ wavelengths at clock f; latency, energy,
area.

DOTA / Lightening-Transformer (arXiv:2305.19533), Sec. 4 (architecture, dataflow) and Sec. 5 (evaluation); the
equations are those of hw.md Sec. 4.3, written here from the paper's description and the public simulator's
parameters (`params.py`):

- A core is an Nh x Nw crossbar: operand 1 (Nh rows of Nλ values) is modulated on the height side and operand 2 (Nw
  columns) on the width side; every cross point is a DDOT computing one Nλ-long dot product per clock, so a core does
  Nh·Nw·Nλ MACs per cycle. Modulation is amortised: a row is modulated once and read by Nw DDOTs, a column by Nh.
- Output-stationary tiling: `cycles = ceil(ceil(N1/Nh)·ceil(N2/Nw)·ceil(D/Nλ)·h / (tiles·cores))` at `work_freq`;
  the memory time is the DRAM (weights) and global-buffer (operand streaming) traffic over their bandwidths, and
  `latency = max(compute, memory)`.
- Laser: `P_dBm = S_PD + IL_mod + IL_comp + 10 log10(Nw·Nh)`, `IL_mod = IL_MZM + 2 IL_router + IL_y·ceil(log2
  max(Nh, Nw))`, `IL_comp = IL_y + IL_PS + IL_DC`, `P_mW = 10^(P_dBm/10) / η_wp · 2^act_bit`, per core.
- Energy counts: operand 1 is modulated `h·N1·D·ceil(N2/Nw)` times, operand 2 `h·ceil(N1/Nh)·N2·D` times (divided
  by the tiles when the width-side inputs are broadcast to all tiles); ADC, TIA and adder run once per
  `time_accum_factor` integrated readouts, and once per tile when the cores of a tile share their ADC array.
- Area: device counts x device areas (`area`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from accel_sims.dota.params import Electronics, Frozen, MemoryParams, OpticalDevices
from accel_sims.dota.workloads import Matmul, TransformerSpec, matmuls
from accel_sims.errors import AccelSimsError

BITS_RANGE = (1, 16)
AREA_COMPONENTS = ("DAC", "memory", "photonic_core", "micro_comb", "MZM", "ADC", "laser", "TIA", "adder")
ENERGY_COMPONENTS = (
    "laser",
    "dac",
    "modulator",
    "weight_rings",
    "detector",
    "tia",
    "adc",
    "adder",
    "mac",
    "rf",
    "noc",
    "local_buffer",
    "global_buffer",
    "dram",
)


class CoreConfig(Frozen):
    """One photonic core (hw.md 4.3 `core:`): crossbar size, wavelengths, clock, precision, devices."""

    type: Literal["dota", "mrr_bank"] = Field("dota", description="DDOT crossbar, or the microring weight bank.")
    width: int = Field(12, gt=0, description="Nw: columns (operand-2 vectors) of the crossbar.")
    height: int = Field(12, gt=0, description="Nh: rows (operand-1 vectors) of the crossbar.")
    num_wavelength: int = Field(12, gt=0, description="Nλ: WDM wavelengths, the dot-product length per cycle.")
    work_freq_ghz: float = Field(5.0, gt=0, description="Clock (GHz); may not exceed the ADC/DAC sample rate.")
    in_bit: int = Field(4, ge=BITS_RANGE[0], le=BITS_RANGE[1], description="Operand-1 / input DAC bits (1-16).")
    w_bit: int = Field(4, ge=BITS_RANGE[0], le=BITS_RANGE[1], description="Operand-2 / weight DAC bits (1-16).")
    act_bit: int = Field(4, ge=BITS_RANGE[0], le=BITS_RANGE[1], description="Output ADC bits (1-16).")
    optics: OpticalDevices = Field(default_factory=OpticalDevices)
    electronics: Electronics = Field(default_factory=Electronics)

    @model_validator(mode="after")
    def _check(self) -> CoreConfig:
        for name, conv in (("adc", self.electronics.adc), ("dac", self.electronics.dac)):
            if self.work_freq_ghz > conv.sample_rate_gsps:
                raise AccelSimsError(
                    f"CoreConfig.work_freq_ghz: {self.work_freq_ghz} GHz exceeds the {name.upper()}'s sample rate "
                    f"{conv.sample_rate_gsps} GS/s (electronics.{name})"
                )
        return self


class ArchConfig(Frozen):
    """Tiles and cores (hw.md 4.3 `arch:`)."""

    num_tiles: int = Field(4, gt=0, description="Tiles (DOTA-B 4, DOTA-L 8, MRR baseline 7).")
    num_pe_per_tile: int = Field(2, gt=0, description="Cores (PEs) per tile.")
    full_range_support_factor: Literal[1, 2, 4] = Field(
        1, description="1: signed operands; 2: one operand non-negative (two passes); 4: both (MRR bank: 2)."
    )
    time_accum_factor: int = Field(3, gt=0, description="Readouts integrated on the detector per ADC conversion.")
    input_mod_sharing_flag: bool = Field(True, description="Width-side inputs modulated once and broadcast to tiles.")
    adc_share_flag: bool = Field(True, description="The cores of a tile sum photocurrents into one ADC array.")


class DotaConfig(Frozen):
    """A photonic accelerator: core, architecture and memory. Presets via `from_name` (`preset_names()`)."""

    name: str = Field("custom", description="Preset name, for reports.")
    core: CoreConfig = Field(default_factory=CoreConfig)
    arch: ArchConfig = Field(default_factory=ArchConfig)
    memory: MemoryParams = Field(default_factory=MemoryParams)

    @classmethod
    def from_name(cls, name: str) -> DotaConfig:
        """'dota-b-4bit', 'dota-b-8bit', 'dota-l-4bit', 'dota-l-8bit', 'mrr-bank-4bit', 'mrr-bank-8bit', or the
        short 'dota-b', 'dota-l', 'mrr-bank' (4 bits)."""
        key = name if name in _PRESETS else f"{name}-4bit"
        if key not in _PRESETS:
            raise AccelSimsError(f"accelerator: unknown name {name!r}; expected one of {list(preset_names())}")
        family, bits = key.rsplit("-", 1)
        b = int(bits.removesuffix("bit"))
        core, arch = _PRESETS[key]
        return cls(
            name=key,
            core=CoreConfig(**core, in_bit=b, w_bit=b, act_bit=b),
            arch=ArchConfig(**arch),
        )

    @property
    def cores(self) -> int:
        return self.arch.num_tiles * self.arch.num_pe_per_tile

    @property
    def peak_macs_per_s(self) -> float:
        """Peak MAC/s (DOTA-B: 8 x 1728 x 5 GHz ~ 69 TMAC/s); the MRR bank does Nh·Nw MACs per cycle."""
        c = self.core
        per_cycle = c.height * c.width * (c.num_wavelength if c.type == "dota" else 1)
        return self.cores * per_cycle * c.work_freq_ghz * 1e9 / self.arch.full_range_support_factor


_DOTA_CORE: dict[str, object] = {"type": "dota", "width": 12, "height": 12, "num_wavelength": 12, "work_freq_ghz": 5.0}
_MRR_CORE: dict[str, object] = {
    "type": "mrr_bank",
    "width": 12,
    "height": 12,
    "num_wavelength": 12,
    "work_freq_ghz": 5.0,
}
_DOTA_ARCH: dict[str, object] = {"num_pe_per_tile": 2, "time_accum_factor": 3}
_MRR_ARCH: dict[str, object] = {
    "num_tiles": 7,
    "num_pe_per_tile": 2,
    "full_range_support_factor": 2,
    "time_accum_factor": 1,
    "input_mod_sharing_flag": False,
    "adc_share_flag": False,
}
# Lightening-Transformer params/device_params/{Dota_B,Dota_L,Bs_mrr_bank}_{4,8}bit.yaml (hw.md 4.3).
_PRESETS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "dota-b-4bit": (_DOTA_CORE, {**_DOTA_ARCH, "num_tiles": 4}),
    "dota-b-8bit": (_DOTA_CORE, {**_DOTA_ARCH, "num_tiles": 4}),
    "dota-l-4bit": (_DOTA_CORE, {**_DOTA_ARCH, "num_tiles": 8}),
    "dota-l-8bit": (_DOTA_CORE, {**_DOTA_ARCH, "num_tiles": 8}),
    "mrr-bank-4bit": (_MRR_CORE, _MRR_ARCH),
    "mrr-bank-8bit": (_MRR_CORE, _MRR_ARCH),
}


def preset_names() -> tuple[str, ...]:
    """Names accepted by `DotaConfig.from_name`."""
    return tuple(_PRESETS)


# --------------------------------------------------------------------------------------------------------- results


class MatmulResult(BaseModel):
    """Latency and energy of one product (all `count` runs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: str
    heads: int
    n1: int
    d: int
    n2: int
    count: int
    macs: int
    compute_cycles: int = Field(description="Cycles of all runs at the core clock.")
    compute_s: float
    memory_s: float
    latency_s: float = Field(description="max(compute, memory), summed over runs.")
    bound: Literal["compute", "memory"]
    energy_pj: dict[str, float] = Field(description="Energy per component (`ENERGY_COMPONENTS`), all runs.")

    @property
    def total_energy_pj(self) -> float:
        return sum(self.energy_pj.values())


class ModelResult(BaseModel):
    """A whole workload on one accelerator: totals and per-product results."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str
    accelerator: str
    tokens: int
    latency_s: float
    energy_pj: float
    energy_breakdown_pj: dict[str, float]
    macs: int
    matmuls: list[MatmulResult]

    @property
    def on_chip_energy_pj(self) -> float:
        """Energy without DRAM (the weights' fetch is the same for every accelerator here)."""
        return self.energy_pj - self.energy_breakdown_pj.get("dram", 0.0)


class AreaReport(BaseModel):
    """Area per component (mm²), the device counts behind it, and the total."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accelerator: str
    total_mm2: float
    components_mm2: dict[str, float]
    device_counts: dict[str, float]

    def share(self, component: str) -> float:
        """Fraction of the total."""
        return self.components_mm2[component] / self.total_mm2


# ------------------------------------------------------------------------------------------------ device physics


def laser_power_mw(config: DotaConfig) -> float:
    """Wall-plug laser power of one DDOT core from the link budget (hw.md 4.3), mW."""
    c, o = config.core, config.core.optics
    il_mod = o.mzm_il_db + 2 * o.mrr_router_il_db + o.ybranch_il_db * math.ceil(math.log2(max(c.height, c.width, 2)))
    il_comp = o.ybranch_il_db + o.ps_il_db + o.dc_il_db
    p_dbm = o.pd_sensitivity_dbm + il_mod + il_comp + 10 * math.log10(c.width * c.height)
    return 10 ** (p_dbm / 10) / o.laser_wall_plug_eff * 2**c.act_bit


def _dac_pj(config: DotaConfig, bits: int) -> float:
    e, f = config.core.electronics, config.core.work_freq_ghz
    return e.dac.power(bits, f, e.dac_power_scaling) / f  # mW / GHz = pJ per conversion


def _adc_pj(config: DotaConfig) -> float:
    e, f = config.core.electronics, config.core.work_freq_ghz
    return e.adc.power(config.core.act_bit, f) / f


# ------------------------------------------------------------------------------------------------------ memory


def memory_energy_pj(
    config: DotaConfig, op: Matmul, feeds: float, partial_sums: float, streamed: float, bits: int
) -> dict[str, float]:
    """Data-movement energy of one run (pJ): register-file traffic for every operand element fed to the array
    (`feeds`) and every partial sum (`partial_sums`, read + write), NoC hops of partial sums to the adder, local
    buffer reads of the feeds plus its fills (`streamed` elements from the global buffer) and output writes, global
    buffer reads of `streamed` plus output writes, DRAM for a static operand 2 (weights) once."""
    m = config.memory
    unit = bits / 16  # energies are per 2 bytes
    outputs = op.heads * op.n1 * op.n2
    dram = op.heads * op.d * op.n2 * m.dram_pj * config.core.w_bit / 16 if op.static_operand2 else 0.0
    return {
        "rf": 2 * (feeds + partial_sums) * m.rf_pj * unit,
        "noc": partial_sums * m.noc_pj * unit,
        "local_buffer": (feeds + streamed + outputs) * m.lb_pj * unit,
        "global_buffer": (streamed + outputs) * m.gb_pj * unit,
        "dram": dram,
    }


def memory_seconds(config: DotaConfig, op: Matmul, rows_per_pass: int, bits: int) -> float:
    """One run's memory time: max(DRAM weight fetch, global-buffer streaming). Operand 1 is read once; operand 2 is
    re-streamed for every pass over `rows_per_pass` rows of operand 1 (all tiles work on one block of rows)."""
    m = config.memory
    passes = math.ceil(op.n1 / rows_per_pass)
    sram_bytes = op.heads * (op.n1 * op.d + op.n2 * op.d * passes) * bits / 8
    dram_bytes = op.heads * op.d * op.n2 * config.core.w_bit / 8 if op.static_operand2 else 0.0
    return max(dram_bytes / m.dram_bytes_per_s, sram_bytes / m.sram_bytes_per_s)


# ----------------------------------------------------------------------------------------------------- the model


def simulate_matmul(op: Matmul, config: DotaConfig) -> MatmulResult:
    """Latency and energy of `op` (all `op.count` runs) on a DOTA crossbar config (MRR bank: `baselines`)."""
    if config.core.type != "dota":
        from accel_sims.dota.baselines import simulate_mrr_matmul

        return simulate_mrr_matmul(op, config)
    c, a, o, el = config.core, config.arch, config.core.optics, config.core.electronics
    f = c.work_freq_ghz
    h, n1, d, n2 = op.heads, op.n1, op.d, op.n2
    i1, i2, i_d = math.ceil(n1 / c.height), math.ceil(n2 / c.width), math.ceil(d / c.num_wavelength)
    core_cycles = h * i1 * i2 * i_d
    cycles = math.ceil(core_cycles / config.cores)
    share = a.num_tiles if a.input_mod_sharing_flag else 1
    mod1 = h * n1 * d * i2  # height side: each row chunk once per column block
    mod2 = h * i1 * n2 * d / share  # width side: broadcast to the tiles when shared
    readouts = h * n1 * n2 * i_d
    t_acc = min(a.time_accum_factor, math.ceil(d / (a.num_pe_per_tile * c.num_wavelength)))
    conv_per_output = (
        math.ceil(math.ceil(i_d / t_acc) / a.num_pe_per_tile) if a.adc_share_flag else math.ceil(i_d / t_acc)
    )
    conversions = h * n1 * n2 * conv_per_output
    symbol_pj = o.mzm_energy_fj_per_symbol * 1e-3 + 2 * o.mrr_router_static_mw / f
    energy = dict.fromkeys(ENERGY_COMPONENTS, 0.0)
    energy["laser"] = core_cycles * laser_power_mw(config) / f
    energy["dac"] = mod1 * _dac_pj(config, c.in_bit) + mod2 * _dac_pj(config, c.w_bit)
    energy["modulator"] = (mod1 + mod2) * symbol_pj
    energy["detector"] = readouts * 2 * o.pd_power_mw / f
    energy["tia"] = conversions * el.tia_power_mw / f
    energy["adc"] = conversions * _adc_pj(config)
    energy["adder"] = conversions * el.adder_power_mw / f
    streamed = h * (n1 * d + n2 * d * i1 / share)
    energy.update(memory_energy_pj(config, op, mod1 + mod2, conversions, streamed, c.in_bit))
    compute_s = cycles / (f * 1e9)
    memory_s = memory_seconds(config, op, c.height * a.num_tiles, c.in_bit)
    return _result(op, cycles, compute_s, memory_s, energy)


def _result(op: Matmul, cycles: int, compute_s: float, memory_s: float, energy: dict[str, float]) -> MatmulResult:
    """Scale one run to `op.count` runs."""
    n = op.count
    return MatmulResult(
        name=op.name,
        kind=op.kind,
        heads=op.heads,
        n1=op.n1,
        d=op.d,
        n2=op.n2,
        count=n,
        macs=op.macs,
        compute_cycles=cycles * n,
        compute_s=compute_s * n,
        memory_s=memory_s * n,
        latency_s=max(compute_s, memory_s) * n,
        bound="compute" if compute_s >= memory_s else "memory",
        energy_pj={k: v * n for k, v in energy.items()},
    )


def combine(workload: str, accelerator: str, tokens: int, results: Sequence[MatmulResult]) -> ModelResult:
    """Sum per-product results into a model result (products run one after the other)."""
    breakdown = {k: sum(r.energy_pj.get(k, 0.0) for r in results) for k in ENERGY_COMPONENTS}
    return ModelResult(
        workload=workload,
        accelerator=accelerator,
        tokens=tokens,
        latency_s=sum(r.latency_s for r in results),
        energy_pj=sum(breakdown.values()),
        energy_breakdown_pj=breakdown,
        macs=sum(r.macs for r in results),
        matmuls=list(results),
    )


def simulate(workload: str | TransformerSpec, config: str | DotaConfig = "dota-b-4bit") -> ModelResult:
    """A whole workload (`workload_names()` or a `TransformerSpec`) on a photonic config (name or `DotaConfig`)."""
    spec = TransformerSpec.from_name(workload) if isinstance(workload, str) else workload
    cfg = DotaConfig.from_name(config) if isinstance(config, str) else config
    return combine(spec.name, cfg.name, spec.tokens, [simulate_matmul(op, cfg) for op in matmuls(spec)])


# ------------------------------------------------------------------------------------------------------- area


def ddot_node_um2(o: OpticalDevices) -> float:
    """Footprint of one DDOT cross point: y-branch tap, -pi/2 phase shifter, coupler and balanced PD pair in a row,
    with layout spacing (the reference layout rule)."""
    width = o.ybranch_length_um + o.ps_length_um + o.dc_length_um + o.pd_width_um + o.node_spacing_x_um
    height = o.ybranch_length_um + max(o.ps_width_um, o.dc_width_um, 2 * o.pd_length_um) + o.node_spacing_y_um
    return width * height


def splitter_tree_um2(o: OpticalDevices, height: int, width: int) -> float:
    """1:N y-branch splitter trees that fan rows and columns out over the crossbar (one input branch + both trees)."""
    yb = o.ybranch_length_um
    rows = yb * math.ceil(math.log2(height) + 1) * o.ybranch_width_um * height
    cols = yb * math.ceil(math.log2(width) + 1) * o.ybranch_width_um * width
    return yb * o.ybranch_width_um + rows + cols


def memory_area_mm2(config: DotaConfig, local_buffers: float, pe_buffers: float) -> float:
    """Global buffer (2 MB per 4 tiles), 4 KB local buffers and 256 B operand/output buffers."""
    m = config.memory
    return (
        m.global_buffer_area_mm2 * config.arch.num_tiles / 4
        + m.local_buffer_area_mm2 * local_buffers
        + m.pe_buffer_area_mm2 * pe_buffers
    )


def area(config: str | DotaConfig = "dota-b-4bit") -> AreaReport:
    """Area breakdown from device counts x device areas (`params.py`). MRR bank: `baselines.mrr_area`."""
    cfg = DotaConfig.from_name(config) if isinstance(config, str) else config
    if cfg.core.type != "dota":
        from accel_sims.dota.baselines import mrr_area

        return mrr_area(cfg)
    c, a, o, el = cfg.core, cfg.arch, cfg.core.optics, cfg.core.electronics
    tiles, pes, cores = a.num_tiles, a.num_pe_per_tile, cfg.cores
    # Height-side channels are per core; width-side channels once per core position when broadcast to the tiles.
    width_banks = pes if a.input_mod_sharing_flag else cores
    channels = (c.height * cores + c.width * width_banks) * c.num_wavelength
    counts: dict[str, float] = {
        "dac": channels,
        "mzm": channels,
        "wdm_router_rings": 2 * (c.height + c.width) * c.num_wavelength * cores,
        "adc": c.height * c.width * (tiles if a.adc_share_flag else cores),
        "tia": c.height * c.width * cores,
        "ddot_nodes": c.height * c.width * cores,
        "splitter_trees": cores,
        # one laser + comb per operand-1 source (per tile) and per operand-2 source (per broadcast bank)
        "lasers": tiles + width_banks,
        "combs": tiles + width_banks,
        "adders": c.height * c.width * tiles,
        # one local buffer per tile + one for the broadcast inputs; 256 B buffers: 2 per tile, 1 per core, 1 per bank
        "local_buffers": tiles + 1,
        "pe_buffers": 2 * tiles + cores + width_banks,
    }
    um2 = {
        "DAC": counts["dac"] * el.dac.area_um2,
        "MZM": counts["mzm"] * o.mzm_length_um * o.mzm_width_um + counts["wdm_router_rings"] * o.mrr_router_size_um**2,
        "ADC": counts["adc"] * el.adc.area_um2,
        "TIA": counts["tia"] * el.tia_area_um2,
        "photonic_core": counts["ddot_nodes"] * ddot_node_um2(o)
        + counts["splitter_trees"] * splitter_tree_um2(o, c.height, c.width),
        "laser": counts["lasers"] * o.laser_length_um * o.laser_width_um,
        "micro_comb": counts["combs"] * o.comb_side_um**2,
        "adder": counts["adders"] * el.adder_area_um2,
    }
    comps = {k: v * 1e-6 for k, v in um2.items()}
    comps["memory"] = memory_area_mm2(cfg, counts["local_buffers"], counts["pe_buffers"])
    comps = {k: comps[k] for k in AREA_COMPONENTS}
    return AreaReport(accelerator=cfg.name, total_mm2=sum(comps.values()), components_mm2=comps, device_counts=counts)
