"""Pipeline-register LP vs naive insertion on generated GEMM arrays (LEGO Sec. IV); prints markdown.

For each array size and dataflow, at the tightest feasible clock and at a relaxed 5 ns clock:
- LP: fewest register bits (pulp/CBC), balanced, fan-out shared; checked against the min-cost-flow dual;
- ASAP: balanced as-soon-as-possible insertion, fan-out shared (the natural heuristic);
- naive: a register on every edge of the primitive graph (no sharing, no balancing analysis).
Then unused-logic removal on a fused OS+WS array.

Run: OMP_NUM_THREADS=1 python packages/lego-hw/bench/bench_pipeline_lp.py [--sizes 4 8 16]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

from lego_hw.backend import compare_register_insertion, min_feasible_clock, primitive_graph, remove_unused_logic
from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.interconnect import build_interconnect
from lego_hw.workload import gemm

DATAFLOWS = ("output-stationary", "weight-stationary", "os-broadcast")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--relaxed-ns", type=float, default=5.0)
    args = ap.parse_args()
    print(f"<!-- bench_pipeline_lp.py, {datetime.date.today()}, {platform.machine()} {platform.python_version()} -->")
    print("Default delay model (ripple add = width x 0.05 ns, array mult = 2 x width x 0.05 ns, mux 0.04 ns/level,")
    print("wire 0.15 ns/PE hop, flip-flop 0.08 ns); int8 operands, 32-bit accumulators; GEMM 64x64x64.\n")
    print(
        "| array | dataflow | nodes | clock (ns) | LP bits | ASAP bits | naive bits | LP/naive | LP/ASAP | min-cost-flow = LP | latency (cycles) | CBC solve (s) | LP + baselines + dual (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        arr = ArraySpec(rows=n, cols=n)
        for df in DATAFLOWS:
            pg = primitive_graph(build_interconnect(map_workload(gemm(64, 64, 64), Dataflow.preset(df), arr)))
            tight = min_feasible_clock(pg)
            for label, clock in (("tight", tight), ("relaxed", args.relaxed_ns)):
                t0 = time.perf_counter()
                c = compare_register_insertion(pg, clock)
                seconds = time.perf_counter() - t0
                print(
                    f"| {n}x{n} | {df} | {pg.graph.number_of_nodes()} | {clock:.2f} ({label}) | {c.lp_bits} | "
                    f"{c.asap_bits} | {c.naive_bits} | {c.lp_over_naive:.3f} | {c.lp_over_asap:.3f} | "
                    f"{'yes' if c.dual_bits == c.lp_bits else f'NO ({c.dual_bits})'} | {c.latency} | "
                    f"{c.solve_seconds:.2f} | {seconds:.2f} |"
                )
    print("\nUnused-logic removal on a fused output-stationary + weight-stationary array:\n")
    print("| array | configured | muxes | mode muxes | registers | register bits | gated register fraction |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        arr = ArraySpec(rows=n, cols=n)
        ics = [build_interconnect(map_workload(gemm(64, 64, 64), Dataflow.preset(d), arr)) for d in DATAFLOWS[:2]]
        fused = primitive_graph(ics)
        for modes in ((DATAFLOWS[0], DATAFLOWS[1]), (DATAFLOWS[0],), (DATAFLOWS[1],)):
            rep = remove_unused_logic(fused, modes)
            b, a = rep.before, rep.after
            print(
                f"| {n}x{n} | {' + '.join(modes)} | {b.muxes} -> {a.muxes} | {b.mode_muxes} -> {a.mode_muxes} | "
                f"{b.registers} -> {a.registers} | {b.register_bits} -> {a.register_bits} | {rep.gated_fraction:.3f} |"
            )


if __name__ == "__main__":
    main()
