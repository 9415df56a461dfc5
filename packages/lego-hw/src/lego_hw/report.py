"""Per-layer reports of a design on a model: a markdown table, or HTML with an inline SVG utilization plot.

The plot is drawn as plain SVG so the report needs no plotting library and opens in any browser; the
numbers come from the performance model (`lego_hw.perf`), one row per layer.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class LayerRow:
    """One layer of a model on one design (and, optionally, on a baseline with the same model)."""

    name: str
    dataflow: str
    macs: int
    cycles: int
    utilization: float
    energy_pj: float
    dram_bytes: int
    count: int = 1  # identical layers in the model (e.g. repeated blocks)
    baseline_cycles: int | None = None
    baseline_energy_pj: float | None = None


def _totals(rows: Sequence[LayerRow]) -> dict[str, float]:
    t: dict[str, float] = {
        "macs": sum(r.macs * r.count for r in rows),
        "cycles": sum(r.cycles * r.count for r in rows),
        "energy_pj": sum(r.energy_pj * r.count for r in rows),
        "dram_bytes": sum(r.dram_bytes * r.count for r in rows),
    }
    if rows and all(r.baseline_cycles is not None for r in rows):
        t["baseline_cycles"] = sum((r.baseline_cycles or 0) * r.count for r in rows)
        t["baseline_energy_pj"] = sum((r.baseline_energy_pj or 0.0) * r.count for r in rows)
    return t


def markdown(rows: Sequence[LayerRow], title: str, pes: int) -> str:
    """A markdown table with one row per layer and a total row (speed and energy ratios if a baseline is set)."""
    base = bool(rows) and all(r.baseline_cycles is not None for r in rows)
    head = ["layer", "x", "dataflow", "MACs", "cycles", "util", "energy (uJ)", "DRAM (KiB)"]
    if base:
        head += ["baseline cycles", "speedup", "baseline energy (uJ)", "energy ratio"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r.name,
            str(r.count),
            r.dataflow,
            f"{r.macs:,}",
            f"{r.cycles:,}",
            f"{r.utilization:.2f}",
            f"{r.energy_pj / 1e6:.3f}",
            f"{r.dram_bytes / 1024:.1f}",
        ]
        if base:
            assert r.baseline_cycles is not None and r.baseline_energy_pj is not None
            cells += [
                f"{r.baseline_cycles:,}",
                f"{r.baseline_cycles / r.cycles:.2f}x",
                f"{r.baseline_energy_pj / 1e6:.3f}",
                f"{r.baseline_energy_pj / r.energy_pj:.2f}x",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    t = _totals(rows)
    util = t["macs"] / (t["cycles"] * pes) if t["cycles"] else 0.0
    total = [
        "**total**",
        "",
        "",
        f"{int(t['macs']):,}",
        f"{int(t['cycles']):,}",
        f"{util:.2f}",
        f"{t['energy_pj'] / 1e6:.3f}",
        f"{t['dram_bytes'] / 1024:.1f}",
    ]
    if base:
        total += [
            f"{int(t['baseline_cycles']):,}",
            f"**{t['baseline_cycles'] / t['cycles']:.2f}x**",
            f"{t['baseline_energy_pj'] / 1e6:.3f}",
            f"**{t['baseline_energy_pj'] / t['energy_pj']:.2f}x**",
        ]
    lines.append("| " + " | ".join(total) + " |")
    return "\n".join(lines) + "\n"


def utilization_svg(rows: Sequence[LayerRow], width: int = 900, height: int = 260) -> str:
    """A bar chart of PE utilization per layer (0..1), as an SVG string."""
    n = max(len(rows), 1)
    left, bottom, top = 40, 60, 10
    plot_h = height - bottom - top
    bar_w = (width - left - 10) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="9">',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="black"/>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{tick:.2f}</text>')
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>')
    for i, r in enumerate(rows):
        u = min(max(r.utilization, 0.0), 1.0)
        x = left + i * bar_w + 1
        h = plot_h * u
        label = html.escape(r.name)
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
            f'fill="#4472c4"><title>{label}: {u:.2f}</title></rect>'
        )
        cx, cy = x + bar_w / 2, top + plot_h + 6
        parts.append(f'<text x="{cx:.1f}" y="{cy:.1f}" transform="rotate(60 {cx:.1f} {cy:.1f})">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def render(rows: Sequence[LayerRow], title: str, pes: int, fmt: Literal["md", "html"] = "md") -> str:
    """The report as markdown, or as a standalone HTML page with the table and the utilization plot."""
    md = markdown(rows, title, pes)
    if fmt == "md":
        return md
    table_lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table_lines[0].strip("|").split("|")]
    body = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    for ln in table_lines[2:]:
        cells = [c.strip().replace("**", "") for c in ln.strip("|").split("|")]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h2>{html.escape(title)}</h2><h3>PE utilization per layer</h3>{utilization_svg(rows)}"
        f"<table>{''.join(body)}</table></body></html>\n"
    )
