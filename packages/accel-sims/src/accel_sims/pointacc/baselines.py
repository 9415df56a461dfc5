"""A GPU-like baseline for the PointAcc comparison: an analytical RTX 2080Ti model on the same workloads.

PointAcc (arXiv:2110.07600), Sec. 5 compares against an RTX 2080Ti running the networks in PyTorch with the
pointnet2 CUDA ops and torchsparse (hash-table kernel maps, gather-matmul-scatter per kernel offset) [M]. We have no
GPU here, so this is a roofline-with-overheads model, not a measurement:

- every kernel costs max(launch overhead, its execution time); execution is max(FLOPs / (peak x efficiency),
  DRAM bytes / (bandwidth x efficiency)). Dense layers run as PyTorch's conv + batch norm + ReLU (3 kernels,
  nothing fused: the output is written, then read and written twice more).
- gathers read rows through the L2 cache (modelled like PointAcc's cache: a direct-mapped simulation of the same
  access map with 128-byte lines over the 5.5 MB L2) and write the gathered copy; sparse convolutions run
  gather, GEMM and scatter-add kernels per non-empty offset (torchsparse 2021 dataflow).
- FPS is the pointnet2 kernel: one thread block per cloud (a single SM), one dependent iteration per sample with a
  block-wide argmax; kNN / ball query are brute force over all (query, point) pairs; voxel downsampling and kernel
  maps are hash-table inserts and probes, each a random 32-byte sector access.
- energy = average board power x time.

Each parameter names its source: [F] = NVIDIA's published specification; [A] = our assumption.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc.simulator import SimResult, direct_mapped_hits, ordered_stream
from accel_sims.pointacc.workloads import Layer, Workload, check_workload


class GPUConfig(BaseModel):
    """An RTX 2080Ti-like GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="rtx2080ti")
    peak_tflops: float = Field(default=13.45, gt=0, description="FP32 peak: 4352 CUDA cores x 1.545 GHz boost x 2 [F].")
    sm_count: int = Field(default=68, ge=1, description="Streaming multiprocessors [F].")
    clock_ghz: float = Field(default=1.545, gt=0, description="Boost clock [F].")
    bandwidth_gb_s: float = Field(default=616.0, gt=0, description="GDDR6, 352-bit at 14 Gb/s [F].")
    l2_mb: float = Field(default=5.5, gt=0, description="L2 cache [F].")
    l2_line_bytes: int = Field(default=128, ge=1, description="L2 line [F].")
    element_bytes: int = Field(default=4, ge=1, description="FP32 features and weights (PyTorch default) [A].")
    index_bytes: int = Field(default=4, ge=1, description="int32 indices [A].")
    launch_us: float = Field(default=5.0, ge=0, description="Per-kernel launch and framework overhead [A].")
    gemm_efficiency: float = Field(
        default=0.5, gt=0, le=1, description="Fraction of peak FLOPs reached by GEMMs of point-cloud shapes [A]."
    )
    stream_efficiency: float = Field(
        default=0.7, gt=0, le=1, description="Fraction of bandwidth reached by streaming kernels [A]."
    )
    random_efficiency: float = Field(
        default=0.35, gt=0, le=1, description="Fraction of bandwidth for random 32-byte accesses (hash probes) [A]."
    )
    search_efficiency: float = Field(
        default=0.3, gt=0, le=1, description="Fraction of peak FLOPs of brute-force kNN / ball query [A]."
    )
    fps_threads: int = Field(default=512, ge=1, description="Threads of the pointnet2 FPS block [F: pointnet2 repo].")
    fps_cycles_per_step: int = Field(
        default=40, ge=1, description="Cycles per thread per point of an FPS iteration (distance + min update) [A]."
    )
    fps_reduction_cycles: int = Field(
        default=400, ge=0, description="Cycles of the block-wide argmax per FPS iteration (9 synced steps) [A]."
    )
    hash_probes: float = Field(default=1.5, gt=0, description="Average probes per hash insert or query [A].")
    kernels_per_dense: int = Field(default=3, ge=1, description="conv/linear + batch norm + ReLU, unfused [A].")
    board_power_w: float = Field(
        default=200.0, gt=0, description="Average board power while running (TDP 250 W [F]; 80% of it [A])."
    )

    @classmethod
    def from_name(cls, name: str) -> GPUConfig:
        """Presets: 'rtx2080ti'."""
        if name != "rtx2080ti":
            raise AccelSimsError(f"unknown GPU preset {name!r}; expected one of ['rtx2080ti']")
        return cls()


class GPULayerResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op: str
    seconds: float
    kernels: int
    flops: float
    dram_bytes: float
    bound: str = Field(description="compute, memory, launch or serial (FPS).")


class GPUResult(BaseModel):
    """Time and energy of a workload on the GPU model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str
    config: GPUConfig
    seconds: float
    energy_pj: float
    kernels: int
    dram_bytes: float
    layers: tuple[GPULayerResult, ...]

    @property
    def total_energy_pj(self) -> float:
        return self.energy_pj


def _gather_bytes(wl: Workload, ly: Layer, accesses: int, row_bytes: int, cfg: GPUConfig) -> float:
    """DRAM bytes of `accesses` row reads through the L2 (direct-mapped model of the workload's access map)."""
    m = wl.maps.get(ly.map_id) if ly.map_id is not None else None
    block_rows = max(1, cfg.l2_line_bytes // row_bytes)  # rows per 128-byte line; a wider row is its own block
    block_bytes = block_rows * row_bytes
    lines = int(cfg.l2_mb * 2**20) // block_bytes
    if m is None or lines < 1:
        return float(accesses * row_bytes)
    # torchsparse walks one kernel offset at a time, outputs in order: tile = whole output set.
    s = ordered_stream(m, 0) if ly.op != "sparse_conv" else m.in_idx
    hits = direct_mapped_hits(s, lines, block_rows)
    return float(min((s.size - hits) * block_bytes, accesses * row_bytes))


def simulate_gpu(workload: Workload, config: GPUConfig | None = None) -> GPUResult:
    """Run `workload` on the GPU model (default: 'rtx2080ti')."""
    cfg = config if config is not None else GPUConfig()
    check_workload(workload)
    e, ib = cfg.element_bytes, cfg.index_bytes
    bw = cfg.bandwidth_gb_s * 1e9
    peak = cfg.peak_tflops * 1e12
    launch = cfg.launch_us * 1e-6
    out: list[GPULayerResult] = []
    for ly in workload.layers:
        n_in, n_out, k = ly.n_in, ly.n_out, ly.k
        flops = 0.0
        stream_bytes = 0.0
        random_bytes = 0.0
        kernels = 1
        serial = 0.0
        gemm = True
        if ly.op == "fps":
            steps = math.ceil(n_in / cfg.fps_threads) * cfg.fps_cycles_per_step + cfg.fps_reduction_cycles
            serial = n_out * steps / (cfg.clock_ghz * 1e9)
            flops = 8.0 * n_in * n_out
            stream_bytes = n_in * 3 * 4
        elif ly.op in ("knn", "ball_query"):
            sel = math.log2(max(k, 2)) if ly.op == "knn" else 1.0
            flops = n_out * n_in * (3.0 * ly.dims + sel)
            stream_bytes = (n_in + n_out) * ly.dims * e + n_out * k * ib
            if ly.op == "knn" and ly.dims > 3:  # DGCNN: PyTorch builds the Q x N distance matrix, then topk
                stream_bytes += 2.0 * n_out * n_in * e
                kernels = 3
            gemm = False
        elif ly.op == "voxel_downsample":
            random_bytes = n_in * cfg.hash_probes * 32 * 2  # insert every coordinate, then look each up
            stream_bytes = n_in * 3 * ib + n_out * 3 * ib
            kernels = 4
        elif ly.op == "kernel_map":
            random_bytes = (n_out + k * n_in) * cfg.hash_probes * 32  # build on outputs, query every shifted input
            stream_bytes = ly.pairs * 2 * ib + k * n_in * 3 * ib
            kernels = 2 + k
        elif ly.op in ("gather", "interpolate"):
            acc = n_out * k
            stream_bytes = _gather_bytes(workload, ly, acc, ly.c_in * e, cfg) + acc * ib
            rows_out = acc if ly.op == "gather" else n_out
            stream_bytes += rows_out * ly.c_out * e + n_out * ly.skip_channels * e
            flops = 2.0 * acc * ly.c_in if ly.op == "interpolate" else 0.0
            kernels = 2
            gemm = False
        elif ly.op == "sparse_conv":
            m = workload.maps.get(ly.map_id) if ly.map_id is not None else None
            nonzero = int(np.count_nonzero(m.sizes)) if m is not None and m.offset is not None else k
            p = ly.pairs
            flops = 2.0 * p * ly.c_in * ly.c_out
            gathered = _gather_bytes(workload, ly, p, ly.c_in * e, cfg)
            # gather (read rows, write copy), GEMM (read copy, write products), scatter-add (read, atomically add)
            stream_bytes = gathered + p * ly.c_in * e * 2 + p * ly.c_out * e * 3 + p * 2 * ib
            stream_bytes += k * ly.c_in * ly.c_out * e + n_out * ly.c_out * e * 4  # weights; output + BN + ReLU
            kernels = 3 * nonzero + 2
        elif ly.op == "dense":
            flops = 2.0 * n_in * ly.c_in * ly.c_out
            stream_bytes = n_in * ly.c_in * e + ly.c_in * ly.c_out * e + n_out * ly.c_out * e * 5
            kernels = cfg.kernels_per_dense
        elif ly.op == "pool":
            flops = float(n_in * ly.c_in)
            stream_bytes = n_in * ly.c_in * e + n_out * ly.c_out * e
            gemm = False
        eff = cfg.gemm_efficiency if gemm else cfg.search_efficiency
        compute = flops / (peak * eff) if ly.op != "fps" else 0.0
        memory = stream_bytes / (bw * cfg.stream_efficiency) + random_bytes / (bw * cfg.random_efficiency)
        parts = {"compute": compute, "memory": memory, "launch": kernels * launch, "serial": serial}
        bound = max(parts, key=lambda key: parts[key])
        out.append(
            GPULayerResult(
                name=ly.name,
                op=ly.op,
                seconds=parts[bound],
                kernels=kernels,
                flops=flops,
                dram_bytes=stream_bytes + random_bytes,
                bound=bound,
            )  # fmt: skip
        )
    seconds = sum(r.seconds for r in out)
    return GPUResult(
        workload=workload.name,
        config=cfg,
        seconds=seconds,
        energy_pj=seconds * cfg.board_power_w * 1e12,
        kernels=sum(r.kernels for r in out),
        dram_bytes=sum(r.dram_bytes for r in out),
        layers=tuple(out),
    )


def compare_gpu(result: SimResult, gpu: GPUResult) -> dict[str, float]:
    """Speedup and energy saving of a PointAcc run over the GPU model on the same workload."""
    if result.workload != gpu.workload:
        raise AccelSimsError(f"workloads differ: {result.workload!r} vs {gpu.workload!r}")
    return {
        "speedup": gpu.seconds / max(result.seconds, 1e-30),
        "energy_saving": gpu.energy_pj / max(result.total_energy_pj, 1e-30),
    }
