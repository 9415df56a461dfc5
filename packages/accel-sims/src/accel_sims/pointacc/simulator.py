"""Analytical cycle, DRAM-traffic and energy model of the PointAcc accelerator.

PointAcc (arXiv:2110.07600), Sec. 4: the Mapping Unit (a bitonic sorter of width W plus a merger and distance units:
every mapping operation is ranking), the Memory Management Unit (gathers feature rows through a configurable cache),
the Matrix Unit (a weight-stationary systolic array), and temporal fusion of consecutive point-wise layers.

Per layer, the units work as a pipeline, so a layer costs the slowest of its unit times; layers run one after the
other, except that a gather streaming into its dense consumer overlaps with it. The unit times (W = sorter width,
M = merger width, D = distance units, R x C = array):

- mapping operations: the ranking formulation's counters (`accel_sims.pointacc.mapping.*_stats`: distances, sorts,
  merges, compare-reductions) on the mapping unit (`mapping_cycles`): distances at D per cycle stream into the W-wide
  compare-reduce stage; a sort of n keys is ceil(n/W) chunks through the bitonic network (log2 W (log2 W + 1) / 2
  stages, pipelined) then ceil(log2 chunks) merge passes at M keys per cycle (`sort_cycles`); merges take
  ceil(keys/M). FPS iterations depend on each other and each add the log2 W reduction latency. Feature-space kNN
  (DGCNN, dims > 3) computes its distances on the matrix unit as a Q x dims x N product.
- matrix: ceil(c_in/R) ceil(c_out/C) rows + R + C (weights double-buffered, one fill/drain per layer); a pool fused
  after a dense layer takes its max as the array emits rows (no extra cycles).
- MMU: one feature row per cycle (`rows_per_cycle`); DRAM: bytes / sustained bytes per cycle.

Gathers (PointNet++ grouping, DGCNN edges, sparse-conv inputs) replay the workload's access map through a
direct-mapped cache of `cache_kb` with blocks of `block_rows` feature rows; a miss fetches the block. Sparse
convolutions walk the map output-tile-major (`output_tile_rows` outputs' partial sums stay on chip), then offset, then
output. Each layer uses the cache only when it moves fewer DRAM bytes than fetching single rows and the DRAM energy
saved pays for filling the cache (the cache is configurable per layer [M]), so the no-cache ablation can never be
faster or cheaper.

Temporal fusion: a dense layer fed by a gather or interpolation always streams from the MMU; chains of dense layers
(and a closing pool) with the same rows keep intermediates on chip when `config.fusion` is on and the chain's
weights fit `fusion_buffer_kb`. Energy: MACs, comparator ops, distances, SRAM bytes, DRAM bytes and static power,
from `config.energy`.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc.config import MappingUnitConfig, MatrixUnitConfig, PointAccConfig
from accel_sims.pointacc.mapping import (
    RankingStats,
    ball_query_stats,
    fps_stats,
    kernel_map_stats,
    knn_stats,
    voxel_downsample_stats,
)
from accel_sims.pointacc.workloads import AccessMap, Layer, Workload, check_workload

UNITS = ("mapping", "mmu", "matrix", "dram")
ENERGY_PARTS = ("mapping", "mmu", "matrix", "dram", "static")
DRAM_PARTS = ("input", "output", "weights", "gather", "maps", "coords")


class LayerResult(BaseModel):
    """Cycles, traffic and energy of one layer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op: str
    cycles: int
    bound: str = Field(
        description="The unit whose time sets the layer's cycles ('overlapped': a gather hidden under its consumer)."
    )
    unit_cycles: dict[str, int] = Field(description="Busy cycles per unit: " + ", ".join(UNITS) + ".")
    dram_bytes: dict[str, int] = Field(description="DRAM bytes per part: " + ", ".join(DRAM_PARTS) + ".")
    energy_pj: dict[str, float] = Field(description="Energy per part: " + ", ".join(ENERGY_PARTS) + ".")
    macs: int = 0
    comparisons: int = 0
    distances: int = 0
    gather_accesses: int = 0
    cache_hits: int = 0
    cache_used: bool = False
    input_on_chip: bool = Field(default=False, description="Input streamed or fused: not read from DRAM.")
    output_on_chip: bool = Field(default=False, description="Output fused into the next layer: not written.")

    @property
    def total_dram_bytes(self) -> int:
        return sum(self.dram_bytes.values())

    @property
    def total_energy_pj(self) -> float:
        return sum(self.energy_pj.values())


class SimResult(BaseModel):
    """Totals of a workload on a PointAcc configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str
    config_name: str
    config: PointAccConfig
    clock_ghz: float
    cycles: int
    unit_cycles: dict[str, int]
    dram_bytes: dict[str, int]
    energy_pj: dict[str, float]
    macs: int
    gather_accesses: int
    cache_hits: int
    layers: tuple[LayerResult, ...]

    @property
    def seconds(self) -> float:
        return self.cycles / (self.clock_ghz * 1e9)

    @property
    def total_dram_bytes(self) -> int:
        return sum(self.dram_bytes.values())

    @property
    def total_energy_pj(self) -> float:
        return sum(self.energy_pj.values())

    @property
    def cache_hit_rate(self) -> float:
        """Hits over gathered rows, counting layers that bypass the cache as all misses."""
        return self.cache_hits / self.gather_accesses if self.gather_accesses else 0.0


# ----------------------------------------------------------------------------------------------- unit cost models


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def sort_cycles(n: int, mapping: MappingUnitConfig) -> tuple[int, int]:
    """(cycles, compare-swaps) to sort n keys: W-wide bitonic chunks, then pairwise merge passes at M keys/cycle."""
    if n <= 1:
        return 0, 0
    w, m, st = mapping.sorter_width, mapping.merger_width, mapping.sorter_stages
    chunks = _cdiv(n, w)
    passes = math.ceil(math.log2(chunks)) if chunks > 1 else 0
    return chunks + st + passes * _cdiv(n, m), chunks * st * (w // 2) + passes * n


def layer_stats(layer: Layer) -> RankingStats:
    """The mapping-unit work of a mapping layer, from the ranking formulation's counters (accel_sims.pointacc.mapping):
    distances, sorts, merges and compare-reductions as functions of the layer's sizes."""
    if layer.op == "fps":
        return fps_stats(layer.n_in, layer.n_out)
    if layer.op == "knn":
        return knn_stats(layer.n_out, layer.n_in, layer.k, dims=layer.dims)
    if layer.op == "ball_query":
        return ball_query_stats(layer.n_out, layer.n_in, layer.k, dims=layer.dims)
    if layer.op == "voxel_downsample":
        return voxel_downsample_stats(layer.n_in, layer.n_out)
    if layer.op == "kernel_map":
        return kernel_map_stats(layer.n_in, layer.n_out, layer.k, layer.pairs)
    raise AccelSimsError(f"layer {layer.name!r}: op {layer.op!r} is not a mapping operation")


def topk_sort_cycles(n: int, k: int, mapping: MappingUnitConfig) -> tuple[int, int]:
    """(cycles, compare-swaps) to keep the k smallest of n keys: W-wide bitonic chunks stream through the sorter one
    per cycle, and the merger folds each chunk's best min(k, W) into a running top-k list of k, which takes
    ceil(2 min(k, W) / M) cycles and overlaps the next chunk's sort. Unlike a full sort (`sort_cycles`), no pass ever
    handles more than 2k keys, so the cost is linear in n: the early top-k cut-off of a ranking-based kNN."""
    if n <= 1:
        return 0, 0
    w, m, st = mapping.sorter_width, mapping.merger_width, mapping.sorter_stages
    chunks = _cdiv(n, w)
    keep = min(k, w)
    per_chunk = max(1, _cdiv(2 * keep, m))
    return chunks * per_chunk + st, chunks * st * (w // 2) + chunks * 2 * keep


def mapping_cycles(
    stats: RankingStats, mapping: MappingUnitConfig, dependent_steps: int = 0, keep: int | None = None
) -> tuple[int, int]:
    """(cycles, comparator ops) of `stats` on the mapping unit.

    Distances (one 3-D distance per unit per cycle; wider vectors take ceil(dims/3) cycles) stream into the W-wide
    compare-reduce stage, so they overlap: max(ceil(distances/D), ceil(reductions/W)). Sorts (`sort_calls` of the
    average length, back to back through the sorter, `sort_cycles` each without re-paying the stage latency) and
    merges (ceil(merged/M)) follow as separate phases. With `keep` (kNN's k) each sort keeps only its k smallest keys
    (`topk_sort_cycles`). `dependent_steps` iterations that wait on the previous one's result (FPS) each add the
    log2 W latency of the reduction tree; `pipeline_latency` is added once.
    """
    w, m, d, st = mapping.sorter_width, mapping.merger_width, mapping.distance_units, mapping.sorter_stages
    dist = _cdiv(stats.distance_computations * _cdiv(stats.coordinate_dims, 3), d)
    red = _cdiv(stats.reduction_elements, w)
    sort = comps = 0
    if stats.sort_calls:
        length = _cdiv(stats.sorted_elements, stats.sort_calls)
        one, one_comps = sort_cycles(length, mapping) if keep is None else topk_sort_cycles(length, keep, mapping)
        sort = stats.sort_calls * max(one - st, 0) + (st if one else 0)
        comps += stats.sort_calls * one_comps
    merge = _cdiv(stats.merged_elements, m)
    comps += stats.merge_comparisons + stats.reduction_elements
    cycles = max(dist, red) + sort + merge + dependent_steps * int(math.log2(w)) + mapping.pipeline_latency
    return cycles, comps


def matrix_cycles(rows: int, c_in: int, c_out: int, matrix: MatrixUnitConfig) -> int:
    """Weight-stationary systolic array: ceil(c_in/R) * ceil(c_out/C) weight tiles, each streaming `rows` rows,
    plus one R + C fill/drain per layer (weight tiles are double-buffered)."""
    if rows <= 0 or c_in <= 0 or c_out <= 0:
        return 0
    return _cdiv(c_in, matrix.rows) * _cdiv(c_out, matrix.cols) * rows + matrix.rows + matrix.cols


def direct_mapped_hits(stream: np.ndarray, n_lines: int, block_rows: int) -> int:
    """Hits of a direct-mapped cache of `n_lines` blocks of `block_rows` rows on the row-index `stream` (cold start).

    An access hits when the previous access to its set (block mod n_lines) was to the same block. Vectorized: a
    stable sort by set keeps each set's accesses in time order, then neighbours are compared.
    """
    if n_lines < 1 or block_rows < 1:
        raise AccelSimsError(f"n_lines and block_rows must be >= 1, got {n_lines} and {block_rows}")
    s = np.asarray(stream, dtype=np.int64).ravel()
    if s.size < 2:
        return 0
    block = s // block_rows
    sets = block % n_lines
    if n_lines <= 1 << 16:  # set ids fit 16 bits: numpy's stable sort is then a linear-time radix sort
        order = np.argsort(sets.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(sets * s.size + np.arange(s.size), kind="quicksort")
    ss, bb = sets[order], block[order]
    return int(np.count_nonzero((ss[1:] == ss[:-1]) & (bb[1:] == bb[:-1])))


def cache_lines(config: PointAccConfig, row_bytes: int) -> int:
    """Blocks the cache holds for rows of `row_bytes` (0 when the cache is off or a block does not fit)."""
    if not config.mmu.cache_enabled:
        return 0
    return int(config.mmu.cache_kb * 1024) // (config.mmu.block_rows * row_bytes)


# -------------------------------------------------------------------------------------------------- simulation


class _Ctx:
    """Per-simulation memo: gather streams and cache hits shared by layers that replay the same map."""

    def __init__(self, workload: Workload, config: PointAccConfig) -> None:
        self.wl = workload
        self.cfg = config
        self.streams: dict[tuple[str, int], np.ndarray] = {}
        self.hits: dict[tuple[str, int, int, int], int] = {}

    def stream(self, layer: Layer, accesses: int) -> tuple[tuple[str, int], np.ndarray]:
        m = self.wl.maps.get(layer.map_id) if layer.map_id is not None else None
        if m is None:
            key = f"random:{layer.name}"
            if (key, 0) not in self.streams:
                # No map (a hand-added layer): uniform random rows, fixed seed (our assumption, a worst case).
                rng = np.random.default_rng(0)
                self.streams[(key, 0)] = rng.integers(0, layer.n_in, size=accesses, dtype=np.int64)
            return (key, 0), self.streams[(key, 0)]
        assert layer.map_id is not None
        tile = self.cfg.mmu.output_tile_rows if layer.op == "sparse_conv" else 0
        k = (layer.map_id, tile)
        if k not in self.streams:
            self.streams[k] = ordered_stream(m, tile)
        return k, self.streams[k]

    def gather(self, layer: Layer, accesses: int, row_bytes: int) -> tuple[int, int, bool]:
        """(DRAM bytes, hits, cache used) for `accesses` rows of `row_bytes`."""
        bypass = accesses * row_bytes
        lines = cache_lines(self.cfg, row_bytes)
        if lines < 1 or accesses == 0:
            return bypass, 0, False
        key, s = self.stream(layer, accesses)
        hk = (*key, lines, self.cfg.mmu.block_rows)
        if hk not in self.hits:
            self.hits[hk] = direct_mapped_hits(s, lines, self.cfg.mmu.block_rows)
        hits = self.hits[hk]
        cached = (s.size - hits) * self.cfg.mmu.block_rows * row_bytes
        en = self.cfg.energy
        # Use the cache only when it moves fewer DRAM bytes and the saving pays for filling the cache SRAM.
        if cached < bypass and cached * (en.dram_pj_per_byte + en.sram_pj_per_byte) <= bypass * en.dram_pj_per_byte:
            return cached, hits, True
        return bypass, 0, False


def ordered_stream(m: AccessMap, tile: int) -> np.ndarray:
    """Input rows of `m` in the order the MMU reads them: as stored for gathers (tile 0); for kernel maps output-tile
    major (`tile` outputs' partial sums on chip), then kernel offset, then output row."""
    if m.out_idx is None or m.offset is None or tile == 0:
        return m.in_idx
    out = m.out_idx.astype(np.int64)
    key = ((out // tile) * m.kernel_volume + m.offset.astype(np.int64)) * max(m.n_out, 1) + out
    return m.in_idx[np.argsort(key, kind="quicksort")]


def _fusion_plan(layers: tuple[Layer, ...], config: PointAccConfig) -> list[tuple[bool, bool]]:
    """(input on chip, output on chip) per layer: gathers stream into the next dense layer; chains of dense layers
    (and a closing pool) on the same rows fuse while `config.fusion` is on and their weights fit the buffer."""
    plan = [[False, False] for _ in layers]
    e = config.matrix.element_bytes
    budget = config.matrix.fusion_buffer_kb * 1024
    group = 0.0  # weight bytes of the fused chain the previous layer belongs to
    for i, cur in enumerate(layers):
        w = cur.c_in * cur.c_out * e if cur.op == "dense" else 0.0
        prev = layers[i - 1] if i else None
        if prev is not None and prev.op in ("gather", "interpolate") and cur.op == "dense":
            rows = prev.n_out * prev.k if prev.op == "gather" else prev.n_out
            if rows == cur.n_in and prev.c_out == cur.c_in:
                plan[i - 1][1] = plan[i][0] = True  # the MMU streams gathered rows straight into the array
                group = w
                continue
        if (
            prev is not None
            and prev.op == "dense"
            and cur.op in ("dense", "pool")
            and cur.n_in == prev.n_out
            and cur.c_in == prev.c_out
            and config.fusion
            and group + w <= budget
        ):
            plan[i - 1][1] = plan[i][0] = True
            group += w
            continue
        group = w
    return [(a, b) for a, b in plan]


def _layer(ly: Layer, on_chip: tuple[bool, bool], ctx: _Ctx) -> LayerResult:
    cfg = ctx.cfg
    mp, mx, en = cfg.mapping, cfg.matrix, cfg.energy
    e, ib, cb = mx.element_bytes, cfg.index_bytes, cfg.coord_bytes
    cyc = dict.fromkeys(UNITS, 0)
    dram = dict.fromkeys(DRAM_PARTS, 0)
    macs = comps = dists = accesses = hits = 0
    sram = 0  # bytes read/written in on-chip buffers by the MMU and matrix unit
    mmu_sram = 0
    used = False
    in_chip, out_chip = on_chip
    n_in, n_out, k = ly.n_in, ly.n_out, ly.k

    if ly.op in ("fps", "knn", "ball_query", "voxel_downsample", "kernel_map"):
        stats = layer_stats(ly)
        feature_space = ly.op == "knn" and ly.dims > 3
        cyc["mapping"], comps = mapping_cycles(
            stats.model_copy(update={"distance_computations": 0}) if feature_space else stats,
            mp,
            dependent_steps=max(ly.n_out - 1, 0) if ly.op == "fps" else 0,
            keep=k if ly.op == "knn" else None,
        )
        if feature_space:  # DGCNN's later EdgeConvs: Q x N distances as a Q x dims x N product on the matrix unit
            cyc["matrix"] = matrix_cycles(n_out, ly.dims, n_in, mx)
            macs = stats.distance_computations * ly.dims
            sram += (n_out + n_in) * ly.dims * e
            dram["input"] = n_in * ly.dims * e
        else:
            dists = stats.distance_computations
        if ly.op in ("fps", "knn", "ball_query") and not feature_space:
            dram["coords"] = n_in * 3 * cb + (n_out * 3 * cb if ly.op == "fps" else 0)
        if ly.op == "fps":
            dram["maps"] = n_out * ib
        elif ly.op in ("knn", "ball_query"):
            dram["maps"] = n_out * k * ib
        elif ly.op == "voxel_downsample":
            dram["coords"] = n_in * 3 * cb + n_out * 3 * cb
            dram["maps"] = n_in * ib
        else:
            dram["coords"] = (n_in + n_out) * 3 * cb
            dram["maps"] = ly.pairs * 2 * ib
    elif ly.op in ("gather", "interpolate"):
        accesses = n_out * k
        row = ly.c_in * e
        dram["gather"], hits, used = ctx.gather(ly, accesses, row)
        dram["maps"] = accesses * ib
        mmu_sram = accesses * row + (dram["gather"] if used else 0)
        cyc["mmu"] = _cdiv(accesses, cfg.mmu.rows_per_cycle)
        if ly.op == "interpolate":  # weighted sum of k rows on the array's C output lanes
            macs = accesses * ly.c_in
            cyc["matrix"] = _cdiv(macs, mx.cols)
            dram["input"] = n_out * ly.skip_channels * e
            rows_out = n_out
        else:
            rows_out = accesses
        if not out_chip:
            dram["output"] = rows_out * ly.c_out * e
    elif ly.op == "sparse_conv":
        accesses = ly.pairs
        row = ly.c_in * e
        dram["gather"], hits, used = ctx.gather(ly, accesses, row)
        dram["maps"] = ly.pairs * 2 * ib
        dram["weights"] = k * ly.c_in * ly.c_out * e
        mmu_sram = accesses * row + (dram["gather"] if used else 0)
        cyc["mmu"] = _cdiv(accesses, cfg.mmu.rows_per_cycle)
        cyc["matrix"] = matrix_cycles(ly.pairs, ly.c_in, ly.c_out, mx)
        macs = ly.pairs * ly.c_in * ly.c_out
        # Operands: each gathered row enters once per output-column tile; partial sums read+written per pair.
        sram += ly.pairs * row * _cdiv(ly.c_out, mx.cols) + 2 * ly.pairs * ly.c_out * 4 + dram["weights"]
        if not out_chip:
            dram["output"] = n_out * ly.c_out * e
    elif ly.op == "dense":
        cyc["matrix"] = matrix_cycles(n_in, ly.c_in, ly.c_out, mx)
        macs = n_in * ly.c_in * ly.c_out
        dram["weights"] = ly.c_in * ly.c_out * e
        sram += n_in * ly.c_in * e * _cdiv(ly.c_out, mx.cols) + n_in * ly.c_out * e + dram["weights"]
        if not in_chip:
            dram["input"] = n_in * ly.c_in * e
        if not out_chip:
            dram["output"] = n_out * ly.c_out * e
    elif ly.op == "pool":  # max (and average) over groups of k rows on the array's output lanes
        # Fused after a dense layer, the max is taken as the array emits its rows: no extra cycles.
        cyc["matrix"] = 0 if in_chip else _cdiv(n_in * ly.c_in, mx.cols)
        comps = n_in * ly.c_in
        sram += n_in * ly.c_in * e
        if not in_chip:
            dram["input"] = n_in * ly.c_in * e
        if not out_chip:
            dram["output"] = n_out * ly.c_out * e
    else:  # pragma: no cover - OpKind is a closed Literal
        raise AccelSimsError(f"layer {ly.name!r}: unknown op {ly.op!r}")

    total_dram = sum(dram.values())
    cyc["dram"] = math.ceil(total_dram / cfg.dram_bytes_per_cycle)
    bound = max(UNITS, key=lambda u: cyc[u])
    cycles = cyc[bound]
    seconds = cycles / (cfg.clock_ghz * 1e9)
    energy = {
        "mapping": dists * en.distance_pj + (comps if ly.op in ("fps", "knn", "ball_query", "voxel_downsample",
                                                                "kernel_map") else 0) * en.comparator_pj,
        "mmu": mmu_sram * en.sram_pj_per_byte,
        "matrix": macs * en.mac_pj(mx.precision) + sram * en.sram_pj_per_byte
        + (comps if ly.op == "pool" else 0) * en.comparator_pj,
        "dram": total_dram * en.dram_pj_per_byte,
        "static": en.static_power_w * seconds * 1e12,
    }  # fmt: skip
    return LayerResult(
        name=ly.name, op=ly.op, cycles=cycles, bound=bound, unit_cycles=cyc, dram_bytes=dram, energy_pj=energy,
        macs=macs, comparisons=comps, distances=dists, gather_accesses=accesses, cache_hits=hits, cache_used=used,
        input_on_chip=in_chip, output_on_chip=out_chip,
    )  # fmt: skip


def _with_cycles(r: LayerResult, cycles: int, bound: str, cfg: PointAccConfig) -> LayerResult:
    """`r` with new cycles; static energy follows the time."""
    energy = dict(r.energy_pj)
    energy["static"] = cfg.energy.static_power_w * cycles / (cfg.clock_ghz * 1e9) * 1e12
    return r.model_copy(update={"cycles": cycles, "bound": bound, "energy_pj": energy})


def simulate(workload: Workload, config: PointAccConfig | None = None) -> SimResult:
    """Simulate `workload` on `config` (default: the 'server' preset). Raises WorkloadError for bad layers."""
    cfg = config if config is not None else PointAccConfig.from_name("server")
    check_workload(workload)
    ctx = _Ctx(workload, cfg)
    plan = _fusion_plan(workload.layers, cfg)
    layers = [_layer(ly, p, ctx) for ly, p in zip(workload.layers, plan, strict=True)]
    for i, ly in enumerate(workload.layers):
        # A gather streaming into the next dense layer runs concurrently with it: the pair costs the slower one.
        if ly.op in ("gather", "interpolate") and plan[i][1]:
            nxt, cur = layers[i + 1], layers[i]
            if cur.cycles > nxt.cycles:
                nxt = _with_cycles(nxt, cur.cycles, cur.bound, cfg)
            layers[i + 1] = nxt
            layers[i] = _with_cycles(cur, 0, "overlapped", cfg)
    return SimResult(
        workload=workload.name,
        config_name=cfg.name,
        config=cfg,
        clock_ghz=cfg.clock_ghz,
        cycles=sum(r.cycles for r in layers),
        unit_cycles={u: sum(r.unit_cycles[u] for r in layers) for u in UNITS},
        dram_bytes={p: sum(r.dram_bytes[p] for r in layers) for p in DRAM_PARTS},
        energy_pj={p: sum(r.energy_pj[p] for r in layers) for p in ENERGY_PARTS},
        macs=sum(r.macs for r in layers),
        gather_accesses=sum(r.gather_accesses for r in layers),
        cache_hits=sum(r.cache_hits for r in layers),
        layers=tuple(layers),
    )


def compare(result: SimResult, baseline: SimResult) -> dict[str, float]:
    """Speedup, energy saving and DRAM reduction of `result` over `baseline` (same workload)."""
    return {
        "speedup": baseline.cycles / baseline.clock_ghz / max(result.cycles / result.clock_ghz, 1e-30),
        "energy_saving": baseline.total_energy_pj / max(result.total_energy_pj, 1e-30),
        "dram_reduction": baseline.total_dram_bytes / max(result.total_dram_bytes, 1),
    }
