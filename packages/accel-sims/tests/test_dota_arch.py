"""DOTA architecture model (arXiv:2305.19533, Sec. 4-5; hw.md 4.3): area acceptance, latency formula, energy, presets."""

from __future__ import annotations

import math

import pytest

from accel_sims.dota.arch import (
    AREA_COMPONENTS,
    ArchConfig,
    CoreConfig,
    DotaConfig,
    area,
    laser_power_mw,
    preset_names,
    simulate,
    simulate_matmul,
)
from accel_sims.dota.workloads import Matmul, TransformerSpec, matmuls, workload_names
from accel_sims.errors import AccelSimsError

# Lightening-Transformer README, DOTA-B 4-bit (hw.md 4.3)
REFERENCE = {
    "DAC": 15.84,
    "memory": 14.70,
    "photonic_core": 11.32,
    "micro_comb": 8.41,
    "MZM": 7.59,
    "ADC": 1.64,
    "laser": 0.72,
    "TIA": 0.058,
    "adder": 0.051,
}
REFERENCE_TOTAL = 60.33


def test_dota_b_4bit_area_acceptance() -> None:
    r = area("dota-b-4bit")
    assert r.total_mm2 == pytest.approx(REFERENCE_TOTAL, rel=0.02)
    assert set(r.components_mm2) == set(AREA_COMPONENTS)
    for k, ref in REFERENCE.items():
        # each component within 5% of its share (relative), and its mm² within 5%
        assert r.share(k) == pytest.approx(ref / REFERENCE_TOTAL, rel=0.05), k
        assert r.components_mm2[k] == pytest.approx(ref, rel=0.05), k


def test_area_comes_from_device_counts() -> None:
    r = area("dota-b-4bit")
    cfg = DotaConfig.from_name("dota-b-4bit")
    # 12x12x8 height-side + 12x12x2 broadcast width-side channels, one DAC each
    assert r.device_counts["dac"] == 1440
    assert r.components_mm2["DAC"] == pytest.approx(1440 * cfg.core.electronics.dac.area_um2 * 1e-6)
    # a bigger DAC makes the DAC share grow; more tiles make everything but the broadcast banks scale
    big = DotaConfig.from_name("dota-l-4bit")
    assert area(big).total_mm2 > 1.8 * r.total_mm2
    assert area("dota-b-8bit").total_mm2 == pytest.approx(r.total_mm2)


def test_latency_formula_deit_tiny_attention() -> None:
    cfg = DotaConfig.from_name("dota-b-4bit")
    spec = TransformerSpec.from_name("deit-t")
    qk = next(m for m in matmuls(spec) if m.kind == "qk")
    r = simulate_matmul(qk, cfg)
    per_layer = math.ceil(math.ceil(197 / 12) * math.ceil(197 / 12) * math.ceil(64 / 12) * 3 / 8)
    assert r.compute_cycles == per_layer * 12
    assert r.compute_s == pytest.approx(per_layer * 12 / 5e9)
    assert r.latency_s == pytest.approx(max(r.compute_s, r.memory_s))


def test_memory_bound_when_dram_is_slow() -> None:
    cfg = DotaConfig.from_name("dota-b-4bit")
    slow = cfg.model_copy(update={"memory": cfg.memory.model_copy(update={"dram_bytes_per_s": 1e9})})
    op = Matmul(name="fc", kind="ffn1", heads=1, n1=197, d=512, n2=512, static_operand2=True)
    assert simulate_matmul(op, cfg).bound == "compute"
    r = simulate_matmul(op, slow)
    assert r.bound == "memory" and r.latency_s == pytest.approx(512 * 512 * 4 / 8 / 1e9)


def test_laser_power_link_budget() -> None:
    cfg = DotaConfig.from_name("dota-b-4bit")
    o = cfg.core.optics
    il = o.mzm_il_db + 2 * o.mrr_router_il_db + o.ybranch_il_db * 4 + o.ybranch_il_db + o.ps_il_db + o.dc_il_db
    p = 10 ** ((o.pd_sensitivity_dbm + il + 10 * math.log10(144)) / 10) / 0.2 * 16
    assert laser_power_mw(cfg) == pytest.approx(p)
    assert laser_power_mw(DotaConfig.from_name("dota-b-8bit")) == pytest.approx(p * 16)


def test_energy_components_and_amortisation() -> None:
    cfg = DotaConfig.from_name("dota-b-4bit")
    r = simulate("deit-t", cfg)
    assert r.energy_pj == pytest.approx(sum(r.energy_breakdown_pj.values()))
    assert r.energy_breakdown_pj["weight_rings"] == 0 and r.energy_breakdown_pj["mac"] == 0
    for k in ("laser", "dac", "modulator", "detector", "tia", "adc", "adder", "rf", "local_buffer", "dram"):
        assert r.energy_breakdown_pj[k] > 0, k
    # without input sharing and ADC sharing, modulation and conversion energy grow
    plain = cfg.model_copy(
        update={"arch": cfg.arch.model_copy(update={"input_mod_sharing_flag": False, "adc_share_flag": False})}
    )
    p = simulate("deit-t", plain)
    assert p.energy_breakdown_pj["dac"] > r.energy_breakdown_pj["dac"]
    assert p.energy_breakdown_pj["adc"] > r.energy_breakdown_pj["adc"]
    # 8 bits costs more energy, same latency
    r8 = simulate("deit-t", "dota-b-8bit")
    assert r8.energy_pj > r.energy_pj and r8.latency_s == pytest.approx(r.latency_s)


def test_dota_l_is_about_twice_as_fast() -> None:
    b, l_ = simulate("bert-b", "dota-b-4bit"), simulate("bert-b", "dota-l-4bit")
    assert b.latency_s / l_.latency_s == pytest.approx(2.0, rel=0.1)
    assert DotaConfig.from_name("dota-b").peak_macs_per_s == pytest.approx(8 * 1728 * 5e9)


def test_workloads() -> None:
    assert set(workload_names()) >= {"deit-t", "deit-s", "deit-b", "bert-b", "bert-l"}
    spec = TransformerSpec.from_name("bert-l")
    assert spec.tokens == 320 and spec.head_dim == 64
    ops = matmuls(TransformerSpec.from_name("deit-b"))
    assert sum(o.macs for o in ops) == pytest.approx(17.4e9, rel=0.03)  # DeiT-B ~17.5 GMACs incl. attention
    assert {o.kind for o in ops if not o.static_operand2} == {"qk", "pv"}


def test_presets_and_bad_input() -> None:
    assert "dota-b-4bit" in preset_names() and DotaConfig.from_name("mrr-bank").arch.num_tiles == 7
    with pytest.raises(AccelSimsError, match="unknown name"):
        DotaConfig.from_name("dota-x")
    with pytest.raises(AccelSimsError, match="width"):
        CoreConfig(width=0)
    with pytest.raises(AccelSimsError, match="work_freq_ghz"):
        CoreConfig(work_freq_ghz=0.0)
    with pytest.raises(AccelSimsError, match="work_freq_ghz"):
        CoreConfig(work_freq_ghz=20.0)  # beyond the ADC's 10 GS/s
    with pytest.raises(AccelSimsError, match="act_bit"):
        CoreConfig(act_bit=17)
    with pytest.raises(AccelSimsError, match="in_bit"):
        CoreConfig(in_bit=0)
    with pytest.raises(AccelSimsError, match="num_tiles"):
        ArchConfig(num_tiles=0)
    with pytest.raises(AccelSimsError, match="embed_dim"):
        TransformerSpec(name="bad", depth=2, embed_dim=100, num_heads=3, tokens=10)
    with pytest.raises(AccelSimsError, match="tokens"):
        TransformerSpec(name="bad", depth=2, embed_dim=96, num_heads=3, tokens=0)
    with pytest.raises(AccelSimsError, match="unknown name"):
        TransformerSpec.from_name("gpt-5")
    with pytest.raises(AccelSimsError):
        CoreConfig(widht=12)  # typo


def test_results_serialise() -> None:
    r = simulate("tiny", "dota-b-4bit")
    assert type(r).model_validate_json(r.model_dump_json()) == r
    a = area("dota-b-4bit")
    assert type(a).model_validate_json(a.model_dump_json()) == a


def test_bad_matmul_sizes() -> None:
    with pytest.raises(AccelSimsError, match="n1"):
        Matmul(name="x", kind="qk", heads=1, n1=0, d=4, n2=4, static_operand2=False)
    with pytest.raises(AccelSimsError, match="heads"):
        Matmul(name="x", kind="qk", heads=-1, n1=2, d=4, n2=4, static_operand2=False)
