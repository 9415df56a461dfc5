"""Baselines of the DOTA evaluation: a microring (MRR) weight-bank photonic accelerator of the same area, and an
electronic systolic array; both through the same latency / memory model as DOTA (`arch`).

DOTA / Lightening-Transformer (arXiv:2305.19533), Sec. 5.1: prior photonic tensor cores (MRR banks, MZI meshes) are
weight-stationary and encode in light intensity, which is non-negative: a signed operand takes two passes
(`full_range_support_factor` 2), and the weight bank must be re-programmed (thermally tuned rings held at their
bias, 1.2 mW each) for every operand block, which is what DOTA's dynamic crossbar avoids.

MRR bank model (ours, from the paper's description and the reference simulator's 7-tile x 2-core, 12 x 12 preset):
a core holds an Nh x Nw block of operand 1 on Nh·Nw rings (each ring a weight on one of Nw wavelengths); one column
of operand 2 (Nw values) is modulated per cycle by Nw microring modulators and broadcast to the Nh rows, which each
give one Nw-long dot product per cycle (Nh·Nw MACs/cycle). Cycles: `ceil(ceil(N1/Nh)·N2·ceil(D/Nw)·h / cores) x 2`.
Energy: ring static power for every ring-cycle, the input modulators (42 fJ/bit x bits + 1.2 mW static), DACs for
inputs and weights, a PD + TIA + ADC + adder per readout (no temporal integration, no ADC sharing), the laser from
its own link budget (`mrr_laser_power_mw`), and the same memory model.

Electronic baseline (ours): an output-stationary R x C systolic array of b-bit MACs at f, with the MAC energy from
Horowitz ISSCC'14 45 nm (INT8 multiply 0.2 pJ scaled by (b/8)^2, INT32 accumulate 0.1 pJ), scaled to 14 nm by
C·V^2 (14/45 x (0.8/0.9)^2 = 0.246; our assumption, the node the reference simulator scales its adders to). Cycles
per output tile: D, plus R + C fill once per product. Operands travel PE to PE through registers (two register
accesses per MAC) and the buffers / DRAM as in `arch.memory_energy_pj`.
"""

from __future__ import annotations

import math

from pydantic import Field

from accel_sims.dota.arch import (
    AREA_COMPONENTS,
    ENERGY_COMPONENTS,
    AreaReport,
    DotaConfig,
    MatmulResult,
    ModelResult,
    _adc_pj,
    _dac_pj,
    _result,
    combine,
    memory_area_mm2,
    memory_energy_pj,
    memory_seconds,
    simulate,
    splitter_tree_um2,
)
from accel_sims.dota.params import Frozen, MemoryParams
from accel_sims.dota.workloads import Matmul, TransformerSpec, matmuls

_TECH_14NM = 14.0 / 45.0 * (0.8 / 0.9) ** 2


def mrr_laser_power_mw(config: DotaConfig) -> float:
    """MRR-bank laser power per core (ours): sensitivity + modulator (drop) + 2 routers + 1:Nh split + weight ring
    drop + (Nw - 1) through losses of the other rings, split over Nh·Nw outputs; / η_wp x 2^act_bit."""
    c, o = config.core, config.core.optics
    il = (
        o.mrr_mod_il_db
        + 2 * o.mrr_router_il_db
        + o.ybranch_il_db * math.ceil(math.log2(max(c.height, 2)))
        + o.mrr_mod_il_db
        + (c.width - 1) * o.mrr_mod_il_uncoupled_db
    )
    p_dbm = o.pd_sensitivity_dbm + il + 10 * math.log10(c.width * c.height)
    return 10 ** (p_dbm / 10) / o.laser_wall_plug_eff * 2**c.act_bit


def simulate_mrr_matmul(op: Matmul, config: DotaConfig) -> MatmulResult:
    """Latency and energy of `op` on an MRR weight bank (see the module docstring)."""
    c, a, o, el = config.core, config.arch, config.core.optics, config.core.electronics
    f = c.work_freq_ghz
    frs = a.full_range_support_factor
    f_x = 2 if frs >= 2 else 1  # the streamed operand is non-negative only: two passes
    f_w = 2 if frs == 4 else 1  # add-drop rings give signed weights
    h, n1, d, n2 = op.heads, op.n1, op.d, op.n2
    i1, i_d = math.ceil(n1 / c.height), math.ceil(d / c.width)
    core_cycles = h * i1 * n2 * i_d * frs
    cycles = math.ceil(h * i1 * n2 * i_d / config.cores) * frs
    mod_in = h * i1 * n2 * d * f_x
    weights = h * n1 * d * f_w  # each weight programmed once (fully weight-stationary)
    readouts = h * n1 * n2 * i_d * frs
    energy = dict.fromkeys(ENERGY_COMPONENTS, 0.0)
    energy["laser"] = core_cycles * mrr_laser_power_mw(config) / f
    energy["dac"] = mod_in * _dac_pj(config, c.in_bit) + weights * _dac_pj(config, c.w_bit)
    energy["modulator"] = mod_in * (o.mrr_mod_energy_fj_per_bit * 1e-3 * c.in_bit + o.mrr_mod_static_mw / f)
    energy["weight_rings"] = core_cycles * c.height * c.width * o.mrr_mod_static_mw / f
    energy["detector"] = readouts * 2 * o.pd_power_mw / f
    energy["tia"] = readouts * el.tia_power_mw / f
    energy["adc"] = readouts * _adc_pj(config)
    energy["adder"] = readouts * el.adder_power_mw / f
    streamed = h * (n1 * d * f_w + n2 * d * i1 * f_x)
    energy.update(memory_energy_pj(config, op, mod_in + weights, readouts, streamed, c.in_bit))
    compute_s = cycles / (f * 1e9)
    memory_s = memory_seconds(config, op, c.height * a.num_tiles, c.in_bit)
    return _result(op, cycles, compute_s, memory_s, energy)


def mrr_area(config: DotaConfig) -> AreaReport:
    """MRR-bank area from device counts (ours; same device table as DOTA). Per core: Nh·Nw weight rings + Nw input
    modulator rings, Nh·Nw + Nw DACs, Nh PD/TIA/ADC chains; one laser + comb per tile; the weight-stationary flow needs
    two 4 KB local buffers per tile."""
    c, a, o, el = config.core, config.arch, config.core.optics, config.core.electronics
    cores, tiles = config.cores, a.num_tiles
    counts: dict[str, float] = {
        "dac": (c.height * c.width + c.width) * cores,
        "rings": (c.height * c.width + c.width) * cores,
        "wdm_router_rings": 2 * c.width * cores,
        "adc": c.height * cores,
        "tia": c.height * cores,
        "splitter_trees": cores,
        "lasers": tiles,
        "combs": tiles,
        "adders": c.height * c.width * tiles,
        "local_buffers": 2 * tiles,
        "pe_buffers": 2 * tiles + 2 * cores,
    }
    ring_pitch = o.mrr_mod_size_um + o.node_spacing_y_um  # ring plus its heater / routing gap (ours)
    um2 = {
        "DAC": counts["dac"] * el.dac.area_um2,
        "MZM": counts["wdm_router_rings"] * o.mrr_router_size_um**2,  # no MZMs: WDM routers only
        "ADC": counts["adc"] * el.adc.area_um2,
        "TIA": counts["tia"] * el.tia_area_um2,
        "photonic_core": counts["rings"] * ring_pitch**2
        + counts["splitter_trees"] * splitter_tree_um2(o, c.height, c.width),
        "laser": counts["lasers"] * o.laser_length_um * o.laser_width_um,
        "micro_comb": counts["combs"] * o.comb_side_um**2,
        "adder": counts["adders"] * el.adder_area_um2,
    }
    comps = {k: v * 1e-6 for k, v in um2.items()}
    comps["memory"] = memory_area_mm2(config, counts["local_buffers"], counts["pe_buffers"])
    comps = {k: comps[k] for k in AREA_COMPONENTS}
    return AreaReport(
        accelerator=config.name, total_mm2=sum(comps.values()), components_mm2=comps, device_counts=counts
    )


class ElectronicConfig(Frozen):
    """An output-stationary systolic array (see the module docstring for the energy sources)."""

    name: str = Field("systolic-64x64", description="For reports.")
    rows: int = Field(64, gt=0, description="R: array rows (operand-1 rows per tile).")
    cols: int = Field(64, gt=0, description="C: array columns (operand-2 columns per tile).")
    freq_ghz: float = Field(1.0, gt=0, description="Clock (GHz).")
    bits: int = Field(8, ge=1, le=16, description="Operand bits (1-16).")
    tech_scale: float = Field(
        _TECH_14NM, gt=0, description="Energy scale from Horowitz 45 nm / 0.9 V to 14 nm / 0.8 V (C·V^2)."
    )
    mult8_pj: float = Field(0.2, gt=0, description="Horowitz ISSCC'14 45 nm INT8 multiply (hw.md 5.1).")
    add32_pj: float = Field(0.1, gt=0, description="Horowitz ISSCC'14 45 nm INT32 add, the accumulator (hw.md 5.1).")
    memory: MemoryParams = Field(default_factory=MemoryParams)

    @property
    def mac_pj(self) -> float:
        """Energy of one MAC at `bits` (multiplier ~ bits^2, 32-bit accumulator), scaled to the node."""
        return (self.mult8_pj * (self.bits / 8) ** 2 + self.add32_pj) * self.tech_scale


def simulate_electronic_matmul(op: Matmul, config: ElectronicConfig) -> MatmulResult:
    """Latency and energy of `op` on the systolic array."""
    h, n1, d, n2 = op.heads, op.n1, op.d, op.n2
    t1, t2 = math.ceil(n1 / config.rows), math.ceil(n2 / config.cols)
    cycles = h * t1 * t2 * d + config.rows + config.cols
    macs = h * n1 * d * n2
    feeds = h * (n1 * d * t2 + n2 * d * t1)
    streamed = h * (n1 * d + n2 * d * t1)
    energy = dict.fromkeys(ENERGY_COMPONENTS, 0.0)
    energy["mac"] = macs * config.mac_pj
    # the shared memory model needs only the memory table and the weight bits
    shim = DotaConfig(name=config.name, memory=config.memory)
    shim = shim.model_copy(update={"core": shim.core.model_copy(update={"w_bit": config.bits})})
    energy.update(memory_energy_pj(shim, op, feeds, 0.0, streamed, config.bits))
    m = config.memory
    energy["rf"] += 2 * macs * m.rf_pj * config.bits / 16  # PE-to-PE operand registers
    compute_s = cycles / (config.freq_ghz * 1e9)
    memory_s = memory_seconds(shim, op, config.rows, config.bits)
    return _result(op, cycles, compute_s, memory_s, energy)


def simulate_electronic(workload: str | TransformerSpec, config: ElectronicConfig | None = None) -> ModelResult:
    """A whole workload on the electronic baseline (default: 64 x 64 at 1 GHz, 8 bits)."""
    spec = TransformerSpec.from_name(workload) if isinstance(workload, str) else workload
    cfg = config or ElectronicConfig()
    return combine(spec.name, cfg.name, spec.tokens, [simulate_electronic_matmul(op, cfg) for op in matmuls(spec)])


def compare(workload: str | TransformerSpec, bits: int = 4) -> dict[str, ModelResult]:
    """DOTA-B, the same-area MRR bank and the electronic array (at `bits`) on one workload."""
    return {
        "dota-b": simulate(workload, f"dota-b-{bits}bit"),
        "mrr-bank": simulate(workload, f"mrr-bank-{bits}bit"),
        "electronic": simulate_electronic(workload, ElectronicConfig(bits=bits)),
    }
