"""DOTA reports: per-product rows, markdown tables, and an inline-SVG stacked-bar plot of the energy breakdown.

DOTA / Lightening-Transformer (arXiv:2305.19533), Sec. 5.3 breaks the energy of each workload down by component
(laser, DAC, modulation, detection, ADC, data movement); `svg_energy_breakdown` draws the same from `ModelResult`s
as plain SVG, so reports need no plotting library.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from accel_sims.dota.arch import ENERGY_COMPONENTS, AreaReport, ModelResult

_COLORS = {
    "laser": "#c00000",
    "dac": "#4472c4",
    "modulator": "#70ad47",
    "weight_rings": "#7f6000",
    "detector": "#ffc000",
    "tia": "#ed7d31",
    "adc": "#5b9bd5",
    "adder": "#a5a5a5",
    "mac": "#264478",
    "rf": "#9e480e",
    "noc": "#636363",
    "local_buffer": "#997300",
    "global_buffer": "#43682b",
    "dram": "#000000",
}


def matmul_rows(result: ModelResult) -> list[dict[str, float | str]]:
    """One row per product: shape, MACs, cycles, latency (compute / memory / total, µs), bound, energy (µJ) per
    component and in total."""
    rows: list[dict[str, float | str]] = []
    for r in result.matmuls:
        row: dict[str, float | str] = {
            "name": r.name,
            "kind": r.kind,
            "shape": f"{r.count}x {r.heads}x[{r.n1}x{r.d}]@[{r.d}x{r.n2}]",
            "macs": float(r.macs),
            "cycles": float(r.compute_cycles),
            "compute_us": r.compute_s * 1e6,
            "memory_us": r.memory_s * 1e6,
            "latency_us": r.latency_s * 1e6,
            "bound": r.bound,
            "energy_uj": r.total_energy_pj * 1e-6,
        }
        row.update({f"{k}_uj": v * 1e-6 for k, v in r.energy_pj.items()})
        rows.append(row)
    return rows


def markdown(results: Sequence[ModelResult]) -> str:
    """A summary table (latency, energy, energy without DRAM, pJ/MAC) and each result's per-product table."""
    lines = [
        "| workload | accelerator | latency (µs) | energy (µJ) | on-chip energy (µJ) | pJ/MAC |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.workload} | {r.accelerator} | {r.latency_s * 1e6:,.2f} | {r.energy_pj * 1e-6:,.1f} | "
            f"{r.on_chip_energy_pj * 1e-6:,.1f} | {r.energy_pj / r.macs:.3f} |"
        )
    for r in results:
        lines += ["", f"### {r.workload} on {r.accelerator}", ""]
        lines += ["| product | shape | cycles | latency (µs) | bound | energy (µJ) |", "|---|---|---:|---:|---|---:|"]
        for row in matmul_rows(r):
            lines.append(
                f"| {row['name']} | {row['shape']} | {row['cycles']:,.0f} | {row['latency_us']:,.2f} | "
                f"{row['bound']} | {row['energy_uj']:,.2f} |"
            )
    return "\n".join(lines) + "\n"


def area_markdown(report: AreaReport, reference: dict[str, float] | None = None) -> str:
    """Area per component (mm² and share), with a reference column when given."""
    head = "| component | area (mm²) | share |" + (" reference (mm²) |" if reference else "")
    lines = [head, "|---|---:|---:|" + ("---:|" if reference else "")]
    for k, v in [*report.components_mm2.items(), ("total", report.total_mm2)]:
        cell = f"| {k} | {v:.3f} | {v / report.total_mm2 * 100:.1f}% |"
        if reference:
            cell += f" {reference.get(k, float('nan')):.3f} |"
        lines.append(cell)
    return "\n".join(lines) + "\n"


def svg_energy_breakdown(results: Sequence[ModelResult], width: int = 760, height: int = 340) -> str:
    """Stacked bars, one per result, of energy per component (µJ, log-free linear axis); a legend on the right."""
    left, right, top, bottom = 70, 150, 20, 60
    pw, ph = width - left - right, height - top - bottom
    n = max(len(results), 1)
    peak = max([r.energy_pj for r in results] + [1.0]) * 1e-6
    slot = pw / n
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<text x="{left - 6}" y="{top - 6}">energy (µJ)</text>',
    ]
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + ph * (1 - frac)
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{peak * frac:,.1f}</text>')
    for i, r in enumerate(results):
        x = left + i * slot + slot * 0.15
        w = slot * 0.7
        y = top + ph
        for k in ENERGY_COMPONENTS:
            e = r.energy_breakdown_pj.get(k, 0.0) * 1e-6
            if e <= 0:
                continue
            h = ph * e / peak
            y -= h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{_COLORS[k]}">'
                f"<title>{html.escape(r.workload)} / {html.escape(r.accelerator)} {k}: {e:,.2f} µJ</title></rect>"
            )
        label = html.escape(f"{r.workload} / {r.accelerator}")
        cx = left + i * slot + slot / 2
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 14}" text-anchor="middle">{label}</text>')
    for j, k in enumerate(ENERGY_COMPONENTS):
        ly = top + j * 16
        out.append(f'<rect x="{left + pw + 12}" y="{ly}" width="10" height="10" fill="{_COLORS[k]}"/>')
        out.append(f'<text x="{left + pw + 26}" y="{ly + 9}">{k}</text>')
    out.append("</svg>")
    return "\n".join(out)


def html_report(results: Sequence[ModelResult], title: str = "DOTA energy and latency") -> str:
    """A standalone HTML page: the energy-breakdown plot and the tables (markdown inside <pre>)."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>{svg_energy_breakdown(results)}<pre>{html.escape(markdown(results))}</pre>"
        "</body></html>\n"
    )
