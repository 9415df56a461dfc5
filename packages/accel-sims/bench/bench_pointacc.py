"""PointAcc vs a GPU-like (RTX 2080Ti) model, and vs its own no-cache and no-fusion ablations, per network.

PointAcc (arXiv:2110.07600), Sec. 5: the paper reports 3.7x speedup and 22x energy savings over an RTX 2080Ti, the
mean over 8 models in 4 applications. Here both sides are analytical models (accel_sims.pointacc.simulator and
accel_sims.pointacc.baselines) on the same synthetic workloads (accel_sims.pointacc.workloads), so the ratios show
what our assumptions imply, not a measurement.

    python packages/accel-sims/bench/bench_pointacc.py [--write]    # --write updates BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
from pathlib import Path

from _sections import replace_section  # bench/_sections.py, next to this script

from accel_sims.pointacc.baselines import GPUConfig, compare_gpu, simulate_gpu
from accel_sims.pointacc.config import PointAccConfig
from accel_sims.pointacc.report import layer_rows
from accel_sims.pointacc.simulator import SimResult, compare, simulate
from accel_sims.pointacc.workloads import Workload, make_workload, workload_names

BEGIN = "<!-- pointacc-sim:begin -->"
END = "<!-- pointacc-sim:end -->"
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def _geo(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _pct(r: SimResult, part: str) -> str:
    return f"{100 * r.energy_pj[part] / r.total_energy_pj:.1f}%"


# Cloud sizes of the sweep, per network (points before voxelization for the MinkUNets).
SWEEP = {
    "pointnet": (4096, 16384),
    "pointnet2-cls": (4096, 16384),
    "pointnet2-seg": (16384,),
    "dgcnn": (4096, 8192),
    "minkunet-indoor": (16384, 50000),
    "minkunet-outdoor": (50000, 100000),
}


def _run(wl: Workload, cfg: PointAccConfig) -> tuple[SimResult, SimResult, SimResult, float]:
    t = time.perf_counter()
    full = simulate(wl, cfg)
    elapsed = time.perf_counter() - t
    return full, simulate(wl, cfg.ablate(cache=False)), simulate(wl, cfg.ablate(fusion=False)), elapsed


def section() -> str:
    server, edge, gpu_cfg = PointAccConfig.from_name("server"), PointAccConfig.from_name("edge"), GPUConfig()
    main = [
        "| network | points | PointAcc (ms) | GPU model (ms) | speedup vs GPU | energy saving vs GPU | "
        "vs no-cache: speedup / energy | vs no-fusion: speedup / energy | cache hit rate | DRAM (MB) | "
        "GPU time: compute / memory / launch / serial | simulate (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    edge_rows = [
        "| network | PointAcc-edge (ms) | vs no-cache: speedup / energy / DRAM | vs no-fusion: speedup / energy / DRAM |",
        "|---|---:|---:|---:|",
    ]
    speed, energy = [], []
    nc_s, nc_e, nf_s, nf_e = [], [], [], []
    for name in workload_names():
        wl = make_workload(name)
        full, nocache, nofusion, elapsed = _run(wl, server)
        gpu = simulate_gpu(wl, gpu_cfg)
        vs_gpu = compare_gpu(full, gpu)
        vc, vf = compare(full, nocache), compare(full, nofusion)
        speed.append(vs_gpu["speedup"])
        energy.append(vs_gpu["energy_saving"])
        nc_s.append(vc["speedup"])
        nc_e.append(vc["energy_saving"])
        nf_s.append(vf["speedup"])
        nf_e.append(vf["energy_saving"])
        split = {b: 0.0 for b in ("compute", "memory", "launch", "serial")}
        for lr in gpu.layers:
            split[lr.bound] += lr.seconds / gpu.seconds
        main.append(
            f"| {name} | {wl.points:,} | {full.seconds * 1e3:.3f} | {gpu.seconds * 1e3:.3f} | "
            f"{vs_gpu['speedup']:.2f}x | {vs_gpu['energy_saving']:.1f}x | "
            f"{vc['speedup']:.2f}x / {vc['energy_saving']:.2f}x | {vf['speedup']:.2f}x / {vf['energy_saving']:.2f}x | "
            f"{full.cache_hit_rate:.3f} | {full.total_dram_bytes / 1e6:.2f} | "
            + " / ".join(f"{100 * split[b]:.0f}%" for b in split)
            + f" | {elapsed:.2f} |"
        )
        e_full, e_nc, e_nf, _ = _run(wl, edge)
        ec, ef = compare(e_full, e_nc), compare(e_full, e_nf)
        edge_rows.append(
            f"| {name} | {e_full.seconds * 1e3:.3f} | "
            f"{ec['speedup']:.2f}x / {ec['energy_saving']:.2f}x / {ec['dram_reduction']:.2f}x | "
            f"{ef['speedup']:.2f}x / {ef['energy_saving']:.2f}x / {ef['dram_reduction']:.2f}x |"
        )
    # The classifiers' published inputs are 1K points; the sweep runs every network on 4K to 100K-point clouds.
    sweep = [
        "| network | points | PointAcc (ms) | GPU model (ms) | speedup vs GPU | energy saving vs GPU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, sizes in SWEEP.items():
        for n_points in sizes:
            wl = make_workload(name, n_points=n_points)
            full, gpu = simulate(wl, server), simulate_gpu(wl, gpu_cfg)
            r = compare_gpu(full, gpu)
            sweep.append(
                f"| {name} | {wl.points:,} | {full.seconds * 1e3:.3f} | {gpu.seconds * 1e3:.3f} | "
                f"{r['speedup']:.2f}x | {r['energy_saving']:.1f}x |"
            )
    # Where the server design spends its time and energy on the largest workload.
    wl = make_workload("minkunet-outdoor")
    big = simulate(wl, server)
    by_unit = {u: 0 for u in ("mapping", "mmu", "matrix", "dram")}
    for row in layer_rows(big):
        if row["bound"] in by_unit:
            by_unit[str(row["bound"])] += int(row["cycles"])
    today = datetime.date.today().isoformat()
    n = len(speed)
    return f"""{BEGIN}
## PointAcc simulator: speedup and energy vs a GPU model and vs ablations

Command: `python packages/accel-sims/bench/bench_pointacc.py --write` ({today}; machine: 2-core CPU, analytical
simulator). PointAcc: `PointAccConfig.from_name("server")` (64x64 fp16 systolic array [M], HBM2 256 GB/s [M], 1 GHz
[M]; 64-wide bitonic sorter and merger, 64 distance units, 256 KiB direct-mapped cache with 4-row blocks, 512 KiB
fusion weight buffer, 1 W static: our assumptions). GPU: `GPUConfig()`, an RTX 2080Ti-like roofline model (13.45
TFLOP/s FP32, 616 GB/s, 5.5 MB L2 [spec]; FP32 tensors, 5 us per kernel launch, GEMM at 50% of peak, streaming at
70% and hash probes at 35% of bandwidth, pointnet2's single-block FPS, torchsparse's per-offset gather/GEMM/scatter,
200 W average board power: our assumptions). Workloads: `make_workload(name)` on synthetic clouds (objects for the
classifiers, a 1.5 m room block for segmentation, a voxelized room and a ray-cast 64-beam LiDAR sweep at 5 cm for
the MinkUNets); maps come from the real mapping operations on those clouds.

| network | points | PointAcc (ms) | GPU model (ms) | speedup vs GPU | energy saving vs GPU | vs no-cache: speedup / energy | vs no-fusion: speedup / energy | cache hit rate | DRAM (MB) | GPU time: compute / memory / launch / serial | simulate (s) |
{chr(10).join(main[1:])}

| | ours (mean of {n} networks: geometric / arithmetic) | paper (mean of 8 models) |
|---|---:|---:|
| speedup vs RTX 2080Ti | {_geo(speed):.2f}x / {sum(speed) / n:.2f}x (GPU modelled) | 3.7x (measured) |
| energy saving vs RTX 2080Ti | {_geo(energy):.1f}x / {sum(energy) / n:.1f}x (GPU modelled) | 22x (measured) |
| speedup / energy saving vs no-cache | {_geo(nc_s):.2f}x / {_geo(nc_e):.2f}x (geometric) | not reported as such here |
| speedup / energy saving vs no-fusion | {_geo(nf_s):.2f}x / {_geo(nf_e):.2f}x (geometric) | not reported as such here |

Cloud sizes from 4K to 100K points (the rows above use each network's published input size; the MinkUNets'
points are counted after voxelization):

{chr(10).join(sweep)}

Edge configuration (`PointAccConfig.from_name("edge")`: 16x16 array [M], DDR4 17 GB/s at 162.5 pJ/byte [M]/[A],
16-wide mapping unit and 64 KiB cache [A]) against its own ablations (the paper's edge comparison is against a
Jetson, which we do not model):

{chr(10).join(edge_rows)}

MinkUNet-outdoor on the server design ({big.cycles:,} cycles):

| | mapping | MMU | matrix | DRAM | static |
|---|---:|---:|---:|---:|---:|
| cycles of the layers each unit bounds | {by_unit["mapping"]:,} | {by_unit["mmu"]:,} | {by_unit["matrix"]:,} | {by_unit["dram"]:,} | |
| share of energy | {_pct(big, "mapping")} | {_pct(big, "mmu")} | {_pct(big, "matrix")} | {_pct(big, "dram")} | {_pct(big, "static")} |

What drives the difference from the paper:
- Speedup is below 3.7x because our server design is matrix-bound: its 64x64 array runs 32-96 channel layers at
  25-75% utilization (PointNet++'s 3-channel first layers at 5%), while the GPU model charges its FP32 GEMMs at a
  flat 50% of peak. Mapping operations are charged with the ranking formulation's counts; kNN streams each query's N
  distances through the sorter in W-wide chunks and merges only the best k (`topk_sort_cycles`, linear in N), yet
  its Q x N distances still grow with the square of the cloud, which is why PointNet++ segmentation's 3-NN
  interpolations make it the slowest-scaling network in the sweep. The GPU model is slowest where the paper says GPUs are slow: FPS (one
  thread block, one dependent iteration per sample), launch overheads of small layers, and the gather/GEMM/scatter
  traffic of sparse convolutions (the GPU-time split above).
- Energy saving is above 22x because the GPU is charged 200 W for the whole run while PointAcc's energy is the
  Horowitz 45 nm table (scaled to 40 nm) for FP16 MACs and SRAM plus HBM2 at 3.9 pJ/bit and 1 W static; the paper
  measured the GPU and used its own post-layout power, which we could not read. Halving the GPU power or doubling
  our per-op energies moves this ratio by the same factor.
- The cache and fusion buy little time on either design, since both are matrix-bound in our model; they cut DRAM
  traffic, hence energy, most on the edge design, whose DDR4 costs 5x HBM2's energy per byte. Fusion has no effect
  on the MinkUNets, which have no consecutive point-wise layers. The no-cache ablation fetches every gathered row
  from DRAM; the cache's hit rate is measured on the actual gather streams (output-tile-major for sparse
  convolutions; coordinates in sorted order, so neighbours are near in memory).
{END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the section of BENCHMARKS.md")
    args = parser.parse_args()
    text = section()
    print(text)
    if args.write:
        replace_section(text, BEGIN, END)
        print(f"wrote {BENCHMARKS_MD}")


if __name__ == "__main__":
    main()
