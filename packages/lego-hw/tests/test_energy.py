"""The cited energy table: values as published, interpolation, presets, immutability."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from lego_hw.energy import EnergyEntry, EnergyTable, SramPoint, preset_names
from lego_hw.errors import LegoError

KIB = 1024


def test_cited_values_and_sources() -> None:
    e = EnergyTable.default()
    assert (e.int8_add.pj, e.int8_mult.pj, e.int32_add.pj, e.int32_mult.pj) == (0.03, 0.2, 0.1, 3.1)
    assert [(p.capacity_bytes, p.read_64b.pj) for p in e.sram_64b] == [
        (8 * KIB, 10.0),
        (32 * KIB, 20.0),
        (1024 * KIB, 100.0),
    ]
    assert 1300.0 <= e.dram_64b.pj <= 2600.0
    assert e.register_bit.pj == pytest.approx(0.146 / 16)
    for name, src in e.sources().items():
        assert src, name
    assert "Horowitz" in e.int8_mult.source and "Horowitz" in e.dram_64b.source
    assert "Accelergy" in e.register_bit.source
    assert EnergyTable.preset("horowitz-45nm") == e
    assert preset_names() == ("horowitz-45nm",)


def test_sram_interpolates_in_log_capacity() -> None:
    e = EnergyTable.default()
    assert e.sram_read_64b(8 * KIB) == 10.0
    assert e.sram_read_64b(32 * KIB) == 20.0
    assert e.sram_read_64b(1024 * KIB) == 100.0
    assert e.sram_read_64b(16 * KIB) == pytest.approx(15.0)  # halfway in log2 between 8 and 32 KiB
    assert e.sram_read_64b(64 * KIB) == pytest.approx(20.0 + 80.0 / 5)  # one of five octaves to 1 MiB
    assert e.sram_read_64b(1 * KIB) == 10.0  # clamped below the smallest cited SRAM
    assert e.sram_read_64b(2048 * KIB) == pytest.approx(116.0)  # last slope extended
    caps = [2**k for k in range(10, 23)]
    vals = [e.sram_read_64b(c) for c in caps]
    assert vals == sorted(vals)
    assert e.sram_bit(32 * KIB) == pytest.approx(20.0 / 64)
    assert e.dram_bit() == pytest.approx(e.dram_64b.pj / 64)


def test_operand_width_power_law_hits_cited_points() -> None:
    e = EnergyTable.default()
    assert e.mult(8) == pytest.approx(0.2) and e.mult(32) == pytest.approx(3.1)
    assert e.add(8) == pytest.approx(0.03) and e.add(32) == pytest.approx(0.1)
    assert e.mult(8) < e.mult(16) < e.mult(32)
    assert e.mac(8, 32) == pytest.approx(0.3)
    with pytest.raises(LegoError, match="width"):
        e.mult(0)


def test_bad_tables_and_presets() -> None:
    e = EnergyTable.default()
    with pytest.raises(ValidationError):
        e.int8_add = EnergyEntry(pj=1.0, source="x")  # type: ignore[misc]
    with pytest.raises(LegoError, match="choose one of"):
        EnergyTable.preset("7nm")
    with pytest.raises(ValidationError, match="increasing"):  # LegoError inside the validator
        e.model_validate({**e.model_dump(), "sram_64b": tuple(reversed(e.model_dump()["sram_64b"]))})
    with pytest.raises(ValidationError):
        EnergyEntry(pj=-1.0, source="negative")
    with pytest.raises(ValidationError):
        SramPoint(capacity_bytes=0, read_64b=EnergyEntry(pj=1.0, source="s"))
    with pytest.raises(LegoError, match="positive"):
        e.sram_read_64b(0)
    assert math.isfinite(e.sram_read_64b(1))
