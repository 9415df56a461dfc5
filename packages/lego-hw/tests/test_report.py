import xml.etree.ElementTree as ET

from lego_hw.report import LayerRow, markdown, render, utilization_svg

ROWS = [
    LayerRow(
        "conv1", "weight-stationary", 1000, 100, 0.5, 2e6, 4096, count=1, baseline_cycles=300, baseline_energy_pj=4e6
    ),
    LayerRow(
        "fc<1>", "output-stationary", 500, 50, 0.25, 1e6, 1024, count=2, baseline_cycles=100, baseline_energy_pj=1e6
    ),
]


def test_markdown_totals_and_ratios():
    md = markdown(ROWS, "ResNet", pes=20)
    lines = md.splitlines()
    assert lines[0] == "## ResNet"
    total = lines[-1]
    # cycles 100 + 2*50, baseline 300 + 2*100 -> 2.50x; energy (4 + 2) / (2 + 2) = 1.50x
    assert "200" in total and "**2.50x**" in total and "**1.50x**" in total
    assert "| conv1 | 1 | weight-stationary | 1,000 | 100 | 0.50 |" in md
    # utilization of the total: 2000 MACs / (200 cycles * 20 PEs)
    assert "| 0.50 |" in total


def test_html_has_a_valid_svg_plot():
    page = render(ROWS, "ResNet", pes=20, fmt="html")
    assert page.startswith("<!doctype html>") and "<table>" in page and "fc&lt;1&gt;" in page
    svg = utilization_svg(ROWS)
    root = ET.fromstring(svg)
    rects = [e for e in root.iter() if e.tag.endswith("rect")]
    assert len(rects) == 2
    assert float(rects[0].get("height")) == 2 * float(rects[1].get("height"))  # 0.50 vs 0.25
