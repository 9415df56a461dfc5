"""Baselines of DOTA (arXiv:2305.19533, Sec. 5): the same-area MRR bank and the electronic systolic array."""

from __future__ import annotations

import math

import pytest

from accel_sims.dota.arch import DotaConfig, area, simulate, simulate_matmul
from accel_sims.dota.baselines import ElectronicConfig, compare, simulate_electronic, simulate_electronic_matmul
from accel_sims.dota.workloads import Matmul
from accel_sims.errors import AccelSimsError


def test_mrr_bank_same_area_and_paper_direction() -> None:
    assert area("mrr-bank-4bit").total_mm2 == pytest.approx(area("dota-b-4bit").total_mm2, rel=0.1)
    for w in ("deit-t", "bert-b"):
        c = compare(w, 4)
        d, m = c["dota-b"], c["mrr-bank"]
        assert m.latency_s / d.latency_s > 10  # paper: > 10x latency vs photonic baselines
        assert m.energy_pj / d.energy_pj > 4  # paper: > 4x energy
        assert m.energy_breakdown_pj["weight_rings"] > 0


def test_mrr_cycles_two_passes() -> None:
    cfg = DotaConfig.from_name("mrr-bank-4bit")
    op = Matmul(name="qk", kind="qk", heads=2, n1=30, d=20, n2=17, static_operand2=False)
    r = simulate_matmul(op, cfg)
    assert r.compute_cycles == math.ceil(2 * math.ceil(30 / 12) * 17 * math.ceil(20 / 12) / 14) * 2


def test_electronic_baseline() -> None:
    cfg = ElectronicConfig(rows=8, cols=4, bits=8)
    op = Matmul(name="fc", kind="proj", heads=1, n1=16, d=10, n2=12, static_operand2=True)
    r = simulate_electronic_matmul(op, cfg)
    assert r.compute_cycles == 2 * 3 * 10 + 8 + 4
    assert r.energy_pj["mac"] == pytest.approx(16 * 10 * 12 * cfg.mac_pj)
    assert r.energy_pj["dram"] > 0 and r.energy_pj["laser"] == 0
    assert cfg.mac_pj == pytest.approx((0.2 + 0.1) * 14 / 45 * (0.8 / 0.9) ** 2)
    assert ElectronicConfig(bits=4).mac_pj < cfg.mac_pj
    res = simulate_electronic("deit-t")
    assert res.latency_s > simulate("deit-t").latency_s
    with pytest.raises(AccelSimsError, match="rows"):
        ElectronicConfig(rows=0)
    with pytest.raises(AccelSimsError, match="bits"):
        ElectronicConfig(bits=32)
