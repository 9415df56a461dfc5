"""Device and memory parameters of DOTA and its photonic baselines, kept as data with the source of every value.

DOTA / Lightening-Transformer (arXiv:2305.19533), Sec. 5 (evaluation setup). Values are the ones of the authors'
public simulator zhuhanqing/Lightening-Transformer (GPL-3.0; we read its parameter files, we do not use its code):
`hardware_simulator/params/device_params/default.yaml` (optical devices), `hardware/ADC.py`, `hardware/DAC.py`
(converters), `hardware/SRAM.py` (bandwidths), `entry_area_power_profile.py` (CACTI memory areas and powers, adder),
summarised in the project's hw.md Sec. 4.3. Lengths and widths are in um, powers in mW, energies as named.

Per-device areas come from those files; the public README only gives the area *totals* of DOTA-B (hw.md 4.3), and the
per-device values below reproduce each of those totals (e.g. DAC 15.84 mm^2 = 1440 DACs x 11000 um^2), which is how
the tests check them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from accel_sims.errors import AccelSimsError

_REPO = "zhuhanqing/Lightening-Transformer"
_YAML = f"{_REPO} hardware_simulator/params/device_params/default.yaml"
_AREA = f"{_REPO} hardware_simulator/entry_area_power_profile.py (CACTI)"


class Frozen(BaseModel):
    """Base of the DOTA configs: frozen, no unknown fields, and invalid values raise AccelSimsError naming the field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            err = e.errors()[0]
            original = err.get("ctx", {}).get("error")
            if isinstance(original, AccelSimsError):  # a cross-field rule already named its field
                raise original from None
            field = ".".join(str(p) for p in err["loc"]) or "(config)"
            raise AccelSimsError(f"{type(self).__name__}.{field}: {err['msg']} (got {err.get('input')!r})") from e


class OpticalDevices(Frozen):
    """Optical devices: modulators, routers, the DDOT's phase shifter and coupler, detectors, laser, comb."""

    mzm_energy_fj_per_symbol: float = Field(
        450.0, gt=0, description=f"MZM dynamic energy, 450 fJ/bit; charged once per modulated symbol per clock. {_YAML}"
    )
    mzm_length_um: float = Field(260.0, gt=0, description=f"MZM length. {_YAML}")
    mzm_width_um: float = Field(20.0, gt=0, description=f"MZM width. {_YAML}")
    mzm_il_db: float = Field(1.2, ge=0, description=f"MZM insertion loss. {_YAML}")
    mrr_mod_energy_fj_per_bit: float = Field(
        42.0, gt=0, description=f"Microring modulator, 42 fJ/bit at 40 Gb/s. {_YAML}; hw.md 4.3"
    )
    mrr_mod_static_mw: float = Field(1.2, ge=0, description=f"Microring static (thermal locking) power. {_YAML}")
    mrr_mod_size_um: float = Field(9.66, gt=0, description=f"Microring modulator footprint side. {_YAML}")
    mrr_mod_il_db: float = Field(0.95, ge=0, description=f"Microring coupled (drop) insertion loss. {_YAML}")
    mrr_mod_il_uncoupled_db: float = Field(0.1, ge=0, description=f"Microring through (uncoupled) loss. {_YAML}")
    mrr_router_static_mw: float = Field(0.275, ge=0, description=f"WDM mux/demux microring static power. {_YAML}")
    mrr_router_size_um: float = Field(4.8, gt=0, description=f"WDM router ring footprint side. {_YAML}")
    mrr_router_il_db: float = Field(0.93, ge=0, description=f"WDM router insertion loss. {_YAML}")
    ps_length_um: float = Field(100.0, gt=0, description=f"DDOT phase shifter (-pi/2) length. {_YAML}")
    ps_width_um: float = Field(45.0, gt=0, description=f"DDOT phase shifter width. {_YAML}")
    ps_il_db: float = Field(0.33, ge=0, description=f"Phase shifter insertion loss. {_YAML}")
    dc_length_um: float = Field(5.25, gt=0, description=f"Directional coupler length. {_YAML}")
    dc_width_um: float = Field(2.4, gt=0, description=f"Directional coupler width. {_YAML}")
    dc_il_db: float = Field(0.33, ge=0, description=f"Directional coupler insertion loss. {_YAML}")
    pd_power_mw: float = Field(1.1, ge=0, description=f"Photodetector power (two per balanced pair). {_YAML}")
    pd_sensitivity_dbm: float = Field(-25.0, description=f"Photodetector sensitivity. {_YAML}; hw.md 4.3")
    pd_length_um: float = Field(4.0, gt=0, description=f"Photodetector length. {_YAML}")
    pd_width_um: float = Field(10.0, gt=0, description=f"Photodetector width. {_YAML}")
    ybranch_il_db: float = Field(0.1, ge=0, description=f"Y-branch splitter insertion loss. {_YAML}")
    ybranch_length_um: float = Field(1.8, gt=0, description=f"Y-branch length. {_YAML}")
    ybranch_width_um: float = Field(1.3, gt=0, description=f"Y-branch width. {_YAML}")
    laser_wall_plug_eff: float = Field(0.2, gt=0, le=1, description=f"Laser wall-plug efficiency. {_YAML}")
    laser_length_um: float = Field(400.0, gt=0, description=f"On-chip laser length. {_YAML}")
    laser_width_um: float = Field(300.0, gt=0, description=f"On-chip laser width. {_YAML}")
    comb_side_um: float = Field(1184.0, gt=0, description=f"Kerr micro-comb footprint side (1184 x 1184). {_YAML}")
    node_spacing_x_um: float = Field(
        30.0, ge=0, description=f"Layout spacing added to a DDOT node's width (5 um gaps). {_REPO} photonic_crossbar.py"
    )
    node_spacing_y_um: float = Field(
        20.0, ge=0, description=f"Layout spacing added to a DDOT node's height. {_REPO} photonic_crossbar.py"
    )


class Converter(Frozen):
    """A data converter at its reference operating point; power scales to the working clock and bit width."""

    area_um2: float = Field(gt=0, description="Area of one converter.")
    bits: int = Field(ge=1, description="Reference resolution.")
    power_mw: float = Field(gt=0, description="Power at the reference resolution and sample rate.")
    sample_rate_gsps: float = Field(gt=0, description="Maximum sample rate; the working clock may not exceed it.")
    source: str = Field(description="Where the values come from.")

    def power(self, bits: int, freq_ghz: float, scaling: str = "linear") -> float:
        """Power in mW at `bits` and `freq_ghz`: P ~ f * bits ('linear', SAR ADC) or f * 2^b / b ('capacitive')."""
        if scaling == "capacitive":  # capacitive DAC: switched capacitance doubles per bit
            bit_factor = (2**bits / bits) / (2**self.bits / self.bits)
        else:
            bit_factor = bits / self.bits
        return self.power_mw * bit_factor * freq_ghz / self.sample_rate_gsps


ADC_SAR_8B = Converter(
    area_um2=2850.0,
    bits=8,
    power_mw=14.8,
    sample_rate_gsps=10.0,
    source=f"8-bit SAR ADC, 14.8 mW at 10 GS/s, 2850 um^2. {_REPO} hardware/ADC.py; hw.md 4.3",
)
DAC_8B = Converter(
    area_um2=11000.0,
    bits=8,
    power_mw=50.0,
    sample_rate_gsps=14.0,
    source=f"8-bit capacitive DAC, 50 mW at 14 GS/s, 11000 um^2. {_REPO} hardware/DAC.py; hw.md 4.3",
)


class Electronics(Frozen):
    """Receiver and digital periphery of a core."""

    adc: Converter = Field(default=ADC_SAR_8B)
    dac: Converter = Field(default=DAC_8B)
    dac_power_scaling: str = Field(
        "linear",
        pattern="^(linear|capacitive)$",
        description=(
            "How DAC power scales with bits: 'linear' (P ~ f * bits, our default, as for the ADC) or 'capacitive' "
            f"(P ~ f * 2^b / b, what {_REPO} hardware/DAC.py uses)."
        ),
    )
    tia_power_mw: float = Field(3.0, ge=0, description=f"TIA power. {_REPO} Dota_B_4bit.yaml; hw.md 4.3")
    tia_area_um2: float = Field(
        50.0,
        gt=0,
        description=(
            f"TIA area. {_REPO} Dota_B_4bit.yaml. The README's DOTA-B TIA total 0.0576 mm^2 = 1152 TIAs x 50 um^2, "
            "i.e. one TIA per DDOT node per core (not shared like the ADCs)."
        ),
    )
    adder_power_mw: float = Field(
        0.2 / 4.39, ge=0, description=f"Digital partial-sum adder: ISAAC's 0.2 mW scaled to 14 nm (/4.39). {_AREA}"
    )
    adder_area_um2: float = Field(
        240.0 / 2.7, gt=0, description=f"Adder area: ISAAC's 240 um^2 scaled to 14 nm (/2.7). {_AREA}"
    )


class MemoryParams(Frozen):
    """On-chip buffers, DRAM, data-movement energies (pJ per 2 bytes) and bandwidths."""

    global_buffer_area_mm2: float = Field(
        14.348352, gt=0, description=f"2 MB global buffer (GB) per 4 tiles; scaled by tiles/4. {_AREA}"
    )
    global_buffer_bytes: int = Field(2 * 1024 * 1024, gt=0, description="Global buffer capacity (hw.md 4.3: 2 MB).")
    local_buffer_area_mm2: float = Field(0.0683105, gt=0, description=f"4 KB local buffer (one per tile). {_AREA}")
    pe_buffer_area_mm2: float = Field(0.000305237, gt=0, description=f"256 B operand/output buffer. {_AREA}")
    dram_pj: float = Field(62.4, gt=0, description=f"DRAM access, pJ per 2 B. {_YAML} datamovement; hw.md 4.3")
    gb_pj: float = Field(1.655, gt=0, description=f"Global buffer (32 KB banks), pJ per 2 B. {_YAML}")
    lb_pj: float = Field(0.92, gt=0, description=f"Local buffer, pJ per 2 B. {_YAML}")
    noc_pj: float = Field(2.0, gt=0, description=f"NoC hop to the partial-sum adder, pJ per 2 B (Eyeriss). {_YAML}")
    rf_pj: float = Field(0.073, gt=0, description=f"Register file, pJ per 2 B. {_YAML}")
    dram_bytes_per_s: float = Field(1.0e12, gt=0, description=f"DRAM -> SRAM bandwidth, 1 TB/s. {_REPO} SRAM.py")
    sram_bytes_per_s: float = Field(
        4096 * 2**30 / 0.604347,
        gt=0,
        description=f"Global buffer read bandwidth: 4096 B per 0.604 ns CACTI access (~7.3 TB/s). {_REPO} SRAM.py",
    )
