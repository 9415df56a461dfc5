"""DOTA reports (arXiv:2305.19533, Sec. 5.3): rows, markdown and the inline-SVG energy breakdown."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from accel_sims.dota.arch import area, simulate
from accel_sims.dota.report import area_markdown, html_report, markdown, matmul_rows, svg_energy_breakdown


def test_rows_markdown_svg() -> None:
    results = [simulate("tiny", "dota-b-4bit"), simulate("tiny", "mrr-bank-4bit")]
    rows = matmul_rows(results[0])
    assert [r["name"] for r in rows] == ["qkv", "q@k^T", "p@v", "proj", "ffn1", "ffn2"]
    assert sum(float(r["energy_uj"]) for r in rows) * 1e6 == pytest.approx(results[0].energy_pj)
    md = markdown(results)
    assert "| tiny | dota-b-4bit |" in md and "### tiny on mrr-bank-4bit" in md
    svg = svg_energy_breakdown(results)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("rect")]) > 10
    assert "<svg" in html_report(results) and "laser" in svg
    assert "| DAC |" in area_markdown(area("dota-b-4bit"), {"DAC": 15.84})
