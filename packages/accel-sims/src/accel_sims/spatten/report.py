"""Per-layer SpAtten reports: keep ratio and DRAM traffic per layer, as markdown or HTML with an inline SVG plot.

SpAtten (arXiv:2012.09852), Sec. 5: the cascade prunes more tokens in deeper layers, so DRAM traffic falls with
depth. The rows come from `accel_sims.spatten.simulator.layer_report`; the plot is plain SVG so the report needs no
plotting library.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Literal

Row = Mapping[str, float]


def markdown(rows: Sequence[Row], title: str, summary: Mapping[str, float] | None = None) -> str:
    """One line per layer: heads, token and value keep ratios, DRAM (pruned and dense), reduction, cycles."""
    dense = bool(rows) and all("dense_dram_bytes" in r for r in rows)
    head = ["layer", "heads", "token keep", "value keep", "DRAM (KB)", "cycles"]
    if dense:
        head += ["dense DRAM (KB)", "DRAM reduction", "dense cycles"]
    lines = [f"## {title}", ""]
    if summary:
        lines += [", ".join(f"{k.replace('_', ' ')} {v:.2f}x" for k, v in summary.items()), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            str(int(r["layer_id"])),
            f"{r['heads']:.0f}",
            f"{r['keep_ratio']:.2f}",
            f"{r['value_keep_ratio']:.2f}",
            f"{r['dram_bytes'] / 1e3:.1f}",
            f"{r['cycles']:,.0f}",
        ]
        if dense:
            cells += [f"{r['dense_dram_bytes'] / 1e3:.1f}", f"{r['dram_reduction']:.2f}x", f"{r['dense_cycles']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def svg_plot(rows: Sequence[Row], width: int = 760, height: int = 300) -> str:
    """Bars: DRAM bytes per layer (pruned; dense in grey behind it); line: token keep ratio on a 0..1 right axis."""
    n = max(len(rows), 1)
    left, right, top, bottom = 60, 50, 20, 40
    pw, ph = width - left - right, height - top - bottom
    peak = max([r.get("dense_dram_bytes", r["dram_bytes"]) for r in rows] + [1.0])
    slot = pw / n
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left + pw}" y1="{top}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<text x="{left - 6}" y="{top - 6}" text-anchor="start">DRAM (KB)</text>',
        f'<text x="{left + pw}" y="{top - 6}" text-anchor="middle">keep</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + ph * (1 - frac)
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{peak * frac / 1e3:.0f}</text>')
        out.append(f'<text x="{left + pw + 4}" y="{y + 3:.1f}">{frac:.1f}</text>')
    points = []
    for i, r in enumerate(rows):
        x = left + i * slot
        for key, color, inset in (("dense_dram_bytes", "#cccccc", 0.1), ("dram_bytes", "#4472c4", 0.25)):
            if key not in r:
                continue
            h = ph * r[key] / peak
            out.append(
                f'<rect x="{x + slot * inset:.1f}" y="{top + ph - h:.1f}" width="{slot * (1 - 2 * inset):.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>layer {int(r["layer_id"])} {key}: '
                f"{r[key] / 1e3:.1f} KB</title></rect>"
            )
        points.append(f"{x + slot / 2:.1f},{top + ph * (1 - min(max(r['keep_ratio'], 0.0), 1.0)):.1f}")
        out.append(f'<text x="{x + slot / 2:.1f}" y="{top + ph + 14}" text-anchor="middle">{int(r["layer_id"])}</text>')
    if points:
        out.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#c00000" stroke-width="2"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">layer</text>')
    out.append("</svg>")
    return "\n".join(out)


def render(
    rows: Sequence[Row], title: str, summary: Mapping[str, float] | None = None, fmt: Literal["md", "html"] = "md"
) -> str:
    """The report as markdown, or as a standalone HTML page with the plot and the table."""
    md = markdown(rows, title, summary)
    if fmt == "md":
        return md
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    body = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells[0]) + "</tr>"
    body += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[2:])
    sub = html.escape(", ".join(f"{k.replace('_', ' ')} {v:.2f}x" for k, v in (summary or {}).items()))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h2>{html.escape(title)}</h2><p>{sub}</p>"
        "<p>Bars: DRAM traffic per layer (grey: unpruned 16-bit baseline, blue: SpAtten); "
        "red line: token keep ratio.</p>"
        f"{svg_plot(rows)}<table>{body}</table></body></html>\n"
    )
