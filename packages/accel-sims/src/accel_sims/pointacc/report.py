"""Per-layer PointAcc reports: rows for tables and an inline-SVG breakdown plot (no plotting library).

PointAcc (arXiv:2110.07600), Sec. 5 breaks latency and energy down by unit (mapping, memory management, matrix,
DRAM). `layer_rows` gives one row per layer of a `SimResult`; `breakdown_svg` draws stacked bars per layer: the
energy split by unit, or the cycles attributed to the unit that bounds each layer.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, Literal

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc.simulator import ENERGY_PARTS, UNITS, SimResult

_COLOURS = {
    "mapping": "#4e79a7",
    "mmu": "#f28e2b",
    "matrix": "#59a14f",
    "dram": "#e15759",
    "static": "#bab0ac",
}


def layer_rows(result: SimResult) -> list[dict[str, Any]]:
    """One dict per layer: name, op, cycles, bound unit, per-unit cycles, DRAM KB, energy in uJ (total and per part),
    MACs, gathered rows, cache hit rate, and whether input/output stay on chip."""
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(result.layers):
        row: dict[str, Any] = {
            "index": i,
            "name": r.name,
            "op": r.op,
            "cycles": r.cycles,
            "bound": r.bound,
        }
        row.update({f"{u}_cycles": r.unit_cycles[u] for u in UNITS})
        row["dram_kb"] = r.total_dram_bytes / 1e3
        row["energy_uj"] = r.total_energy_pj / 1e6
        row.update({f"{p}_uj": r.energy_pj[p] / 1e6 for p in ENERGY_PARTS})
        row["macs"] = r.macs
        row["gather_rows"] = r.gather_accesses
        row["cache_hit_rate"] = r.cache_hits / r.gather_accesses if r.gather_accesses else 0.0
        row["cache_used"] = r.cache_used
        row["input_on_chip"] = r.input_on_chip
        row["output_on_chip"] = r.output_on_chip
        rows.append(row)
    return rows


def markdown(result: SimResult) -> str:
    """The per-layer table as markdown, with a totals line."""
    head = ["#", "layer", "op", "cycles", "bound", "DRAM (KB)", "energy (uJ)", "cache hit", "fused in/out"]
    lines = [
        f"## {result.workload} on PointAcc '{result.config_name}'",
        "",
        f"{result.cycles:,} cycles ({result.seconds * 1e3:.3f} ms), DRAM {result.total_dram_bytes / 1e6:.2f} MB, "
        f"energy {result.total_energy_pj / 1e6:.1f} uJ, cache hit rate {result.cache_hit_rate:.3f}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in layer_rows(result):
        hit = f"{r['cache_hit_rate']:.2f}" if r["gather_rows"] else ""
        fused = f"{'y' if r['input_on_chip'] else 'n'}/{'y' if r['output_on_chip'] else 'n'}"
        lines.append(
            f"| {r['index']} | {r['name']} | {r['op']} | {r['cycles']:,} | {r['bound']} | {r['dram_kb']:.1f} | "
            f"{r['energy_uj']:.2f} | {hit} | {fused} |"
        )
    return "\n".join(lines) + "\n"


def breakdown_svg(
    result: SimResult, metric: Literal["cycles", "energy"] = "cycles", width: int = 900, height: int = 320
) -> str:
    """Stacked bars per layer. metric "energy": energy split by part (mapping, mmu, matrix, dram, static);
    "cycles": each layer's cycles coloured by the unit that bounds it (mapping, mmu, matrix, dram)."""
    if metric not in ("cycles", "energy"):
        raise AccelSimsError(f"metric must be 'cycles' or 'energy', got {metric!r}")
    parts: Sequence[str] = ENERGY_PARTS if metric == "energy" else UNITS
    stacks: list[dict[str, float]] = []
    for r in result.layers:
        if metric == "energy":
            stacks.append({p: r.energy_pj[p] / 1e6 for p in parts})
        else:
            stacks.append({p: float(r.cycles if p == r.bound else 0) for p in parts})
    n = max(len(stacks), 1)
    left, right, top, bottom = 70, 120, 24, 90
    pw, ph = width - left - right, height - top - bottom
    peak = max([sum(s.values()) for s in stacks] + [1e-12])
    slot = pw / n
    unit = "energy (uJ)" if metric == "energy" else "cycles"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f"<title>{html.escape(result.workload)}: {unit} per layer</title>",
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<text x="{left}" y="{top - 8}">{html.escape(result.workload)}: {unit} per layer</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + ph * (1 - frac)
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{peak * frac:,.3g}</text>')
    for i, (s, r) in enumerate(zip(stacks, result.layers, strict=True)):
        x = left + i * slot + slot * 0.1
        y = top + ph
        for p in parts:
            h = ph * s[p] / peak
            if h <= 0:
                continue
            y -= h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{h:.1f}" fill="{_COLOURS[p]}">'
                f"<title>{html.escape(r.name)} {p}: {s[p]:,.4g}</title></rect>"
            )
        if n <= 80:
            lx, ly = x + slot * 0.4, top + ph + 6
            out.append(
                f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="7" text-anchor="end" '
                f'transform="rotate(-60 {lx:.1f} {ly:.1f})">{html.escape(r.name)}</text>'
            )
    for j, p in enumerate(parts):
        y = top + 12 + j * 14
        out.append(f'<rect x="{left + pw + 12}" y="{y - 8}" width="10" height="10" fill="{_COLOURS[p]}"/>')
        out.append(f'<text x="{left + pw + 26}" y="{y}">{p}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def html_report(result: SimResult, title: str | None = None) -> str:
    """A standalone HTML page: totals, the cycles and energy breakdown plots, and the per-layer table."""
    head = ["#", "layer", "op", "cycles", "bound", "DRAM (KB)", "energy (uJ)", "cache hit", "fused in/out"]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                r["index"],
                r["name"],
                r["op"],
                f"{r['cycles']:,}",
                r["bound"],
                f"{r['dram_kb']:.1f}",
                f"{r['energy_uj']:.2f}",
                f"{r['cache_hit_rate']:.2f}" if r["gather_rows"] else "",
                f"{'y' if r['input_on_chip'] else 'n'}/{'y' if r['output_on_chip'] else 'n'}",
            )
        )
        + "</tr>"
        for r in layer_rows(result)
    )
    name = html.escape(title or f"{result.workload} on PointAcc '{result.config_name}'")
    summary = (
        f"{result.cycles:,} cycles ({result.seconds * 1e3:.3f} ms), DRAM {result.total_dram_bytes / 1e6:.2f} MB, "
        f"energy {result.total_energy_pj / 1e6:.1f} uJ, cache hit rate {result.cache_hit_rate:.3f}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name}</title></head><body>"
        f"<h2>{name}</h2><p>{html.escape(summary)}</p>"
        f"{breakdown_svg(result, 'cycles')}{breakdown_svg(result, 'energy')}"
        f"<table border='1' cellspacing='0'><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{body}</table>"
        "</body></html>\n"
    )
