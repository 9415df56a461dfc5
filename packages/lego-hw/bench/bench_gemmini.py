"""LEGO design vs a Gemmini-like baseline on ResNet-50 and a transformer block, same performance model.

Usage (from the repository root):
    OMP_NUM_THREADS=1 python packages/lego-hw/bench/bench_gemmini.py            # prints and updates BENCHMARKS.md
    OMP_NUM_THREADS=1 python packages/lego-hw/bench/bench_gemmini.py --no-write --seq 128

Prints markdown tables (per layer and totals) and replaces the "## Gemmini comparison" section of
packages/lego-hw/BENCHMARKS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lego_hw import gemmini
from lego_hw.models import Layer, resnet50, transformer_block
from lego_hw.perf import PerfReport

SECTION = "## Gemmini comparison"
BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def _df(rep: PerfReport) -> str:
    short = {"output-stationary": "OS", "weight-stationary": "WS", "input-stationary": "IS"}
    return f"{short.get(rep.dataflow, rep.dataflow)}({','.join(rep.loops)}) {rep.array_rows}x{rep.array_cols}"


def layer_table(rows: Sequence[gemmini.LayerComparison]) -> str:
    head = (
        "| layer | x | MACs (M) | Gemmini-like mapping | cycles | util | energy (uJ) | LEGO mapping | cycles | util "
        "| energy (uJ) | speedup | energy ratio |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        b, g = r.baseline, r.lego
        lines.append(
            f"| {r.name} | {r.count} | {b.macs / 1e6:.1f} | {_df(b)} | {b.total_cycles:,} | {b.utilization:.2f} "
            f"| {b.energy.total_pj / 1e6:.1f} | {_df(g)} | {g.total_cycles:,} | {g.utilization:.2f} "
            f"| {g.energy.total_pj / 1e6:.1f} | {r.speedup:.2f}x | {r.energy_ratio:.2f}x |"
        )
    return "\n".join(lines)


def _breakdown(rows: Sequence[gemmini.LayerComparison], which: str) -> dict[str, float]:
    out = {"mac": 0.0, "registers": 0.0, "sram": 0.0, "dram": 0.0}
    for r in rows:
        e = getattr(r, which).energy
        for k, v in zip(out, (e.mac_pj, e.register_pj, e.sram_pj, e.dram_pj), strict=True):
            out[k] += v * r.count
    return out


@dataclass
class ModelResult:
    title: str
    layers: list[Layer]
    main: list[gemmini.LayerComparison]
    variants: list[tuple[str, list[gemmini.LayerComparison]]] = field(default_factory=list)


def _stats(rows: Sequence[gemmini.LayerComparison]) -> dict[str, float]:
    t = gemmini.totals(rows)
    bb, lb = _breakdown(rows, "baseline"), _breakdown(rows, "lego")
    return {
        "speedup": t.speedup,
        "energy": t.energy_ratio,
        "compute": sum(r.baseline.cycles * r.count for r in rows) / sum(r.lego.cycles * r.count for r in rows),
        "dram_b": sum(r.baseline.dram_bytes * r.count for r in rows) / 1e6,
        "dram_l": sum(r.lego.dram_bytes * r.count for r in rows) / 1e6,
        "dram_share_b": bb["dram"] / sum(bb.values()),
        "dram_share_l": lb["dram"] / sum(lb.values()),
    }


def run(seq: int) -> list[ModelResult]:
    results = []
    for title, layers in [
        ("ResNet-50 (224x224, batch 1, 53 convs + fc)", resnet50()),
        (f"Transformer block (BERT-base-like, seq {seq})", transformer_block(seq=seq)),
    ]:
        main = gemmini.compare(layers)
        res = ModelResult(title, layers, main)
        res.variants = [
            ("LEGO per-layer min EDP (headline)", main),
            ("LEGO per-layer min cycles", gemmini.compare(layers, objective="cycles")),
            ("LEGO per-layer min energy", gemmini.compare(layers, objective="energy")),
        ]
        if any(gemmini.im2col(lay.workload) != lay.workload for lay in layers):
            # Sensitivity: Gemmini's software lowers convs to im2col GEMMs.
            base_i = [gemmini.baseline_im2col_estimate(lay.workload)[1] for lay in layers]
            lego_i = [gemmini.lego_estimate(gemmini.im2col(lay.workload))[1] for lay in layers]
            res.variants.append(
                (
                    "baseline runs convs as im2col GEMMs; LEGO min EDP",
                    [gemmini.LayerComparison(r.name, r.count, b, r.lego) for r, b in zip(main, base_i, strict=True)],
                )
            )
            res.variants.append(
                (
                    "both run convs as im2col GEMMs; LEGO min EDP",
                    [
                        gemmini.LayerComparison(r.name, r.count, b, g)
                        for r, b, g in zip(main, base_i, lego_i, strict=True)
                    ],
                )
            )
        results.append(res)
    return results


def tables(results: Sequence[ModelResult]) -> str:
    summary = [
        "| model | variant | MACs (G) | Gemmini-like cycles | LEGO cycles | speedup | paper | compute-only speedup | "
        "Gemmini-like energy (uJ) | LEGO energy (uJ) | energy ratio | paper | DRAM MB (Gemmini-like / LEGO) |",
        "|" + "---|" * 13,
    ]
    details = []
    for res in results:
        for name, rows in res.variants:
            t, st = gemmini.totals(rows), _stats(rows)
            summary.append(
                f"| {res.title} | {name} | {t.macs / 1e9:.2f} | {t.baseline_cycles:,} | {t.lego_cycles:,} "
                f"| **{t.speedup:.2f}x** | {gemmini.PAPER_SPEEDUP}x | {st['compute']:.2f}x "
                f"| {t.baseline_energy_pj / 1e6:,.0f} | {t.lego_energy_pj / 1e6:,.0f} | **{t.energy_ratio:.2f}x** "
                f"| {gemmini.PAPER_ENERGY_RATIO}x | {st['dram_b']:,.0f} / {st['dram_l']:,.0f} |"
            )
        bb, lb = _breakdown(res.main, "baseline"), _breakdown(res.main, "lego")
        br = " / ".join(f"{k} {v / 1e6:,.0f}" for k, v in bb.items())
        lr = " / ".join(f"{k} {v / 1e6:,.0f}" for k, v in lb.items())
        details.append(
            f"### {res.title}\n\nEnergy by component (uJ), Gemmini-like: {br}; LEGO: {lr}.\n\n"
            f"Per layer (LEGO = min EDP):\n\n{layer_table(res.main)}\n"
        )
    return "\n\n".join(["\n".join(summary), *details])


def explanation(results: Sequence[ModelResult]) -> str:
    cnn, tfm = results[0], results[1]
    c, t = _stats(cnn.main), _stats(tfm.main)
    small = [
        r
        for r, lay in zip(cnn.main, cnn.layers, strict=True)
        if "x" in lay.workload.loops and lay.workload.bound("x") <= 14
    ]
    ub = [r.baseline.utilization for r in small]
    var = dict(cnn.variants)
    bi = _stats(var["baseline runs convs as im2col GEMMs; LEGO min EDP"])
    both = _stats(var["both run convs as im2col GEMMs; LEGO min EDP"])
    pv_tiles = next(-(-lay.workload.bound("j") // 16) for lay in tfm.layers if lay.name == "attn_pv")
    tu = min(min(r.baseline.utilization, r.lego.utilization) for r in tfm.main)
    return f"""### What drives the difference from the paper

Our headline ratios (LEGO picking per layer the least energy x delay) are {c["speedup"]:.2f}x speed and
{c["energy"]:.2f}x energy on ResNet-50 and {t["speedup"]:.2f}x / {t["energy"]:.2f}x on the transformer block,
against the paper's 3.2x / 2.4x. They come only from the dataflow and loop-binding choice, because both
designs share the array size, the buffers and one analytical model. Speed on ResNet-50 comes from the
conv formulation: convs are 7-loop affine nests, so the weight-stationary baseline holds a 16x16 block of
W and streams one line of output pixels (56 down to 7 of them) per tile. At 14x14 and 7x7 the per-tile preload (16
cycles), systolic skew (~30) and hand-over dominate, and its utilization falls to {min(ub):.2f}-{max(ub):.2f},
while LEGO holds outputs (OS) and streams the channel reduction. This is not a hardware advantage we can
claim. If the baseline lowers convs to im2col GEMMs as Gemmini's software does, its compute schedule is
faster than LEGO's (compute-only ratio {bi["compute"]:.2f}x). In this model, though, it then becomes
DRAM-bound ({bi["dram_b"]:,.0f} MB), so that variant still reads {bi["speedup"]:.2f}x end to end; with both on
im2col it reads {both["speedup"]:.2f}x / {both["energy"]:.2f}x. Energy is dominated by DRAM in both designs
({100 * c["dram_share_b"]:.0f}% of the baseline's ResNet-50 energy, {100 * c["dram_share_l"]:.0f}% of LEGO's).
The schedule's tile order is fixed (outer loops in workload order, then row, column, reduction tiles) and
one tile is one array-sized block. So any tensor larger than half the scratchpad is refetched once per
iteration of an enclosing loop it does not depend on, and LEGO's energy gain is mostly a binding whose
fixed order refetches less ({c["dram_b"]:,.0f} vs {c["dram_l"]:,.0f} MB). A real Gemmini tiler reorders loops
and packs many 16x16 tiles in the scratchpad; this model does that for neither design, so its DRAM
numbers are pessimistic for both. On the transformer block every GEMM streams 512 tokens, every dataflow
keeps the array at least {tu:.2f} busy, and only attention-PV differs much in energy (WS read-modify-writes
partial sums in the accumulator for each of the {pv_tiles} reduction tiles; OS keeps them in the PEs). The paper's
further gains come from what this model charges to neither design: the LEGO back end (fewer pipeline
registers, removal of unused logic, per-tensor banked buffers sized for the dataflow), Gemmini's real
RTL overheads (instruction decode, reservation stations, DMA/TLB), its workload set and its technology
and synthesized power. Read our ratios as a dataflow-only comparison, not a reproduction of the paper.
"""


def section(results: Sequence[ModelResult], seq: int, seconds: float) -> str:
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return f"""{SECTION}

Command: `OMP_NUM_THREADS=1 python packages/lego-hw/bench/bench_gemmini.py --seq {seq}` ({today}; machine:
2-core CPU, analytical model; {seconds:.0f} s; Python {platform.python_version()}).

Setup. The baseline is Gemmini `defaultConfig` as data ({gemmini.GEMMINI_SOURCE}):
- 16x16 int8 PEs with int32 accumulators;
- weight-stationary, holding the weight operand (conv W, GEMM B, attention K/V); the output loop it
  streams is the best its software could pick;
- a 256 KiB scratchpad in 4 banks, a 64 KiB accumulator in 2 banks, a 128-bit DMA bus (16 B/cycle).

The LEGO design has the same 256 MACs and the same buffers (same total SRAM): a fused OS/WS/IS array
whose dataflow and loop binding are chosen per layer (`lego_hw.perf.estimate_best`). Both go through
`lego_hw.perf.estimate`:
- cycles = the generated controller's schedule (`lego_hw.schedule.total_cycles`, the count the RTL
  simulation reproduces), max'ed with DRAM bytes / 16 B per cycle;
- energy from the Horowitz 45 nm table (`lego_hw.energy`).

Paper: LEGO vs Gemmini, 3.2x speed and 2.4x energy (arXiv:2509.12053 abstract). Speedup = baseline
cycles / LEGO cycles, and energy ratio = baseline energy / LEGO energy, so both > 1 favour LEGO.
"Compute-only" uses the schedule's cycles without the DRAM bound.

{tables(results)}
{explanation(results)}"""


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    old = path.read_text() if path.exists() else "# lego-hw benchmarks\n\nSections are appended by their owners.\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text.rstrip() + "\n\n", old, count=1)
    else:
        new = old.rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(new.rstrip() + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seq", type=int, default=512, help="transformer sequence length")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = run(args.seq)
    seconds = time.perf_counter() - t0
    text = section(results, args.seq, seconds)
    print(text)
    for res in results:
        st = _stats(res.main)
        print(f"{res.title}: speedup {st['speedup']:.2f}x (paper 3.2x), energy ratio {st['energy']:.2f}x (paper 2.4x)")
    if not args.no_write:
        write_section(text)
        print(f"updated {BENCHMARKS}")


if __name__ == "__main__":
    main()
