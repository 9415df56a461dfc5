"""Fused multi-dataflow arrays vs separate arrays: Yosys cells and flip-flops (LEGO Sec. III-D); prints markdown.

For GEMM arrays of several sizes, the output-stationary and weight-stationary arrays are generated and synthesized
separately (`yosys synth`), then one fused array that runs both (a `mode` input, muxes only where the two
dataflows feed a PE operand from different sources). The ratio fused / (OS + WS) is what fusion saves. Every array
is also simulated in Icarus (each mode of the fused one) and checked bit-exactly against numpy.

Run: OMP_NUM_THREADS=1 python packages/lego-hw/bench/bench_fusion.py [--sizes 2 4 8]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np

from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
from lego_hw.design import generate
from lego_hw.tools import simulate, synthesize
from lego_hw.workload import gemm

PAIR = ("output-stationary", "weight-stationary")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    args = ap.parse_args()
    print(f"<!-- bench_fusion.py, {datetime.date.today()}, {platform.machine()} {platform.python_version()} -->")
    print("GEMM (2n+1) x (2n+3) x (2n+2) on an n x n array; int8 operands, 32-bit accumulators; Yosys 0.23 `synth`.\n")
    print(
        "| array | OS cells | WS cells | fused cells | fused / (OS + WS) | OS FFs | WS FFs | fused FFs | muxes | shared links | all modes bit-exact | synth (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        wl = gemm(2 * n + 1, 2 * n + 3, 2 * n + 2)
        arr = ArraySpec(rows=n, cols=n)
        maps = [map_workload(wl, Dataflow.preset(p), arr) for p in PAIR]
        t0 = time.perf_counter()
        separate = [synthesize(generate(m)) for m in maps]
        fused_design = generate(maps)
        fused = synthesize(fused_design)
        seconds = time.perf_counter() - t0
        inputs = wl.random_inputs(np.random.default_rng(n))
        exact = all(simulate(fused_design, inputs, mode=i, check=True) for i in range(len(PAIR)))
        exact = exact and all(simulate(generate(m), inputs, check=True) for m in maps)
        stats = fused_design.fusion_stats()
        ratio = fused.cells / sum(s.cells for s in separate)
        print(
            f"| {n}x{n} | {separate[0].cells} | {separate[1].cells} | {fused.cells} | **{ratio:.3f}** | "
            f"{separate[0].flip_flops} | {separate[1].flip_flops} | {fused.flip_flops} | {stats.muxes} | "
            f"{stats.shared_links} | {'yes' if exact else 'NO'} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
