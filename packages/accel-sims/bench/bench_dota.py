"""DOTA-B against a same-area microring-bank photonic accelerator and an electronic systolic array: latency and
energy on DeiT-T/S/B (197 tokens), BERT-B (384) and BERT-L (320), and the DOTA-B area breakdown against the
reference's 60.33 mm².

DOTA / Lightening-Transformer (arXiv:2305.19533), Sec. 5.3. The paper claims > 4x lower energy and > 10x lower
latency than prior photonic accelerators, and > 20x lower energy than electronic ones. All three accelerators here
run through the same analytical latency / memory model (`accel_sims.dota.arch`, `baselines`).

    python packages/accel-sims/bench/bench_dota.py [--write]    # --write updates the DOTA section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path

from accel_sims.dota.arch import DotaConfig, area, simulate
from accel_sims.dota.baselines import ElectronicConfig, compare, simulate_electronic
from accel_sims.dota.params import Electronics
from accel_sims.dota.report import area_markdown

BEGIN = "<!-- dota:begin -->"
END = "<!-- dota:end -->"
ACC_BEGIN = "<!-- dota-accuracy:begin -->"
ACC_END = "<!-- dota-accuracy:end -->"
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
WORKLOADS = ("deit-t", "deit-s", "deit-b", "bert-b", "bert-l")
REFERENCE_AREA = {
    "DAC": 15.84,
    "memory": 14.70,
    "photonic_core": 11.32,
    "micro_comb": 8.41,
    "MZM": 7.59,
    "ADC": 1.64,
    "laser": 0.72,
    "TIA": 0.058,
    "adder": 0.051,
    "total": 60.33,
}


def comparison_table(bits: int) -> tuple[str, dict[str, list[float]]]:
    """Latency (µs) and energy (µJ) of the three accelerators and DOTA-B's ratios, per workload."""
    lines = [
        f"| workload ({bits}-bit) | DOTA-B µs | MRR µs | electronic µs | DOTA-B µJ (on-chip) | MRR µJ (on-chip) | "
        "electronic µJ (on-chip) | latency vs MRR | energy vs MRR | latency vs electronic | energy vs electronic |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios: dict[str, list[float]] = {"lat_mrr": [], "en_mrr": [], "lat_el": [], "en_el": []}
    for w in WORKLOADS:
        c = compare(w, bits)
        d, m, e = c["dota-b"], c["mrr-bank"], c["electronic"]
        r = {
            "lat_mrr": m.latency_s / d.latency_s,
            "en_mrr": m.energy_pj / d.energy_pj,
            "lat_el": e.latency_s / d.latency_s,
            "en_el": e.energy_pj / d.energy_pj,
        }
        for k, v in r.items():
            ratios[k].append(v)
        lines.append(
            f"| {w} | {d.latency_s * 1e6:,.1f} | {m.latency_s * 1e6:,.1f} | {e.latency_s * 1e6:,.1f} | "
            f"{d.energy_pj * 1e-6:,.0f} ({d.on_chip_energy_pj * 1e-6:,.0f}) | "
            f"{m.energy_pj * 1e-6:,.0f} ({m.on_chip_energy_pj * 1e-6:,.0f}) | "
            f"{e.energy_pj * 1e-6:,.0f} ({e.on_chip_energy_pj * 1e-6:,.0f}) | "
            f"{r['lat_mrr']:.1f}x | {r['en_mrr']:.2f}x | {r['lat_el']:.1f}x | {r['en_el']:.2f}x |"
        )
    return "\n".join(lines) + "\n", ratios


def breakdown_line(workload: str, config: DotaConfig) -> str:
    r = simulate(workload, config)
    parts = sorted(r.energy_breakdown_pj.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / r.energy_pj * 100:.0f}%" for k, v in parts if v / r.energy_pj >= 0.01)


def section() -> str:
    today = datetime.date.today().isoformat()
    a = area("dota-b-4bit")
    worst = max(abs(a.share(k) - REFERENCE_AREA[k] / REFERENCE_AREA["total"]) for k in a.components_mm2)
    t4, r4 = comparison_table(4)
    t8, r8 = comparison_table(8)
    cap = DotaConfig.from_name("dota-b-4bit")
    cap = cap.model_copy(
        update={"core": cap.core.model_copy(update={"electronics": Electronics(dac_power_scaling="capacitive")})}
    )
    cap_d = simulate("deit-t", cap)
    lin_d = simulate("deit-t", "dota-b-4bit")
    el4 = simulate_electronic("deit-t", ElectronicConfig(bits=4))
    mrr_a = area("mrr-bank-4bit")
    gm = statistics.geometric_mean

    def claims(r: dict[str, list[float]]) -> str:
        return (
            f"energy vs MRR {gm(r['en_mrr']):.1f}x, latency vs MRR {gm(r['lat_mrr']):.1f}x, "
            f"energy vs electronic {gm(r['en_el']):.2f}x, latency vs electronic {gm(r['lat_el']):.1f}x"
        )

    return f"""{BEGIN}
## DOTA (Lightening-Transformer): area, latency, energy

Command: `python packages/accel-sims/bench/bench_dota.py --write` ({today}; machine: 2-core CPU, analytical model).
Configurations: `DotaConfig.from_name("dota-b-4bit" / "dota-b-8bit")` (4 tiles x 2 cores of 12 x 12 DDOTs, 12
wavelengths, 5 GHz), `"mrr-bank-4bit" / "-8bit"` (7 tiles x 2 cores of 12 x 12 microring weight banks, non-negative
inputs: two passes), `ElectronicConfig(bits=...)` (64 x 64 output-stationary systolic array, 1 GHz, Horowitz 45 nm
MACs scaled to 14 nm). Same memory model for all three (global buffer 2 MB, data movement in pJ per 2 B, DRAM 62.4 pJ
per 2 B for the linear layers' weights, 1 TB/s).

Area of DOTA-B at 4 bits, from device counts x device areas (`accel_sims.dota.arch.area`), against the reference
README (largest share difference {worst * 100:.2f} points):

{area_markdown(a, REFERENCE_AREA)}
The MRR baseline's area from the same device table (`area("mrr-bank-4bit")`): {mrr_a.total_mm2:.2f} mm² (the
reference sized it to DOTA-B's area with 7 tiles; our ring-bank layout is our own, so it lands within
{abs(mrr_a.total_mm2 / a.total_mm2 - 1) * 100:.0f}%).

Latency and energy (µJ; in brackets without DRAM), ratios = baseline / DOTA-B:

{t4}
{t8}
| claim (paper, v1 abstract) | paper | ours, geometric mean of the 5 workloads, 4-bit | 8-bit |
|---|---|---|---|
| energy vs prior photonic (MRR bank) | > 4x | {gm(r4["en_mrr"]):.1f}x | {gm(r8["en_mrr"]):.1f}x |
| latency vs prior photonic (MRR bank) | > 10x | {gm(r4["lat_mrr"]):.1f}x | {gm(r8["lat_mrr"]):.1f}x |
| energy vs electronic | > 20x | {gm(r4["en_el"]):.2f}x | {gm(r8["en_el"]):.2f}x |
| latency vs electronic | 2-3 orders of magnitude | {gm(r4["lat_el"]):.1f}x | {gm(r8["lat_el"]):.1f}x |

Energy breakdown of DeiT-T on DOTA-B 4-bit: {breakdown_line("deit-t", DotaConfig.from_name("dota-b-4bit"))}.
At 8 bits: {breakdown_line("deit-t", DotaConfig.from_name("dota-b-8bit"))}.

What we find: against the same-area MRR bank DOTA-B reproduces the paper's direction and size (over 10x latency
from 1728 vs 144 MACs per core-cycle and no second pass for signed inputs; over 4x energy: the weight rings'
static power, a laser lit for twice the cycles, and an ADC + TIA per readout, which DOTA avoids). Against our electronic baseline it does **not**: a 14 nm
INT4 systolic array spends {el4.energy_pj / el4.macs:.3f} pJ/MAC on DeiT-T (4-bit) against DOTA-B's
{lin_d.energy_pj / lin_d.macs:.3f}, because DOTA-B pays a DAC conversion and an MZM symbol for every operand element
it modulates (the DAC alone is {lin_d.energy_breakdown_pj["dac"] / lin_d.energy_pj * 100:.0f}% of its energy with
power ~ f x bits). With the reference simulator's capacitive DAC scaling (P ~ f x 2^b / b, much cheaper at 4 bits)
DOTA-B's DeiT-T energy falls to {cap_d.energy_pj * 1e-6:,.0f} µJ, still {cap_d.energy_pj / el4.energy_pj:.2f}x the
electronic array's. The reference repository's `profile/` folder measures GPU power on the same workloads, which
suggests the paper's electronic numbers are GPUs, not a dedicated systolic array; our 64 x 64 array at 1 GHz is a
far stronger baseline, so the > 20x and 2-3 orders are not reproduced here. MRR-bank breakdown (DeiT-T, 4-bit):
{breakdown_line("deit-t", DotaConfig.from_name("mrr-bank-4bit"))}. Summary at 4 bits: {claims(r4)}; at 8 bits: {claims(r8)}.

{ACC_BEGIN}
(run `python packages/accel-sims/bench/bench_dota_accuracy.py --write` to fill in the accuracy table)
{ACC_END}
{END}"""


def write(text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the DOTA section (keeping its accuracy block if one was written) or append it."""
    old = path.read_text()
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        body, tail = rest.split(END, 1)
        if ACC_BEGIN in body and ACC_END in body:
            acc = body[body.index(ACC_BEGIN) : body.index(ACC_END) + len(ACC_END)]
            text = text[: text.index(ACC_BEGIN)] + acc + text[text.index(ACC_END) + len(ACC_END) :]
        new = head + text + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update the DOTA section of BENCHMARKS.md")
    args = parser.parse_args()
    text = section()
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
