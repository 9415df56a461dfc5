"""Cycle-level model of the SpAtten attention datapath, with DRAM traffic and energy accounting.

SpAtten (arXiv:2012.09852), Sec. 4 (architecture: fetchers, Q.K and P.V multiplier arrays, softmax, progressive
quantization, top-k engine) and Sec. 5 (evaluation). The structure follows the reference behavioural model
(mit-han-lab/spatten `simulator/src/bert.cpp`, hw.md Sec. 2.3): per (iteration, layer),

    cycles = DRAM + fill + drain + token top-k

where, per head record,
- DRAM: K rows at the MSB width, the K LSBs again when `requant`, and the V rows kept by local value pruning, each
  tensor ceil(transactions / channels) cycles (`accel_sims.spatten.dram`). Queries arrive with the request and the
  result leaves with the response (RTL `SpAttenRequest`/`SpAttenResponse`), so they are I/O, not DRAM traffic.
- fill (compute): each query streams its keys through the Q.K array, D multipliers per key, so
  ceil(keys / (qk_multipliers / D)) cycles per query, twice when `requant` (the scores are recomputed with the
  LSBs). The P.V array (its own multipliers) and the softmax pipeline run concurrently on the previous query, so a
  query costs the slowest stage: max(Q.K, P.V[, value top-k]). The value top-k is hidden, as bert.cpp has it
  (`latencyTopK = 1`), unless `value_topk_on_critical_path=True`.
- drain: the fixed pipeline latency of the layer's last head (SRAM 1 + multiplier 1 + reduction tree 9, softmax
  dequantize 7 + exp 21 + accumulate 23 + divide 29 + quantize 7 + FIFO of ceil(keys / par), requantize decision 1,
  top-k 1, P.V 3).
- token top-k (cascade token pruning) runs after the head that carries `topk`, serially, on the top-k engine.

Overlap: with `config.overlap_fetch_compute` (default) a head's fetch is double-buffered against its compute, so a
head costs max(DRAM, compute); without it the costs add as in bert.cpp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from accel_sims.errors import AccelSimsError
from accel_sims.spatten.config import SpAttenConfig
from accel_sims.spatten.dram import channel_cycles, fetch_transactions, packed_bits_array
from accel_sims.spatten.topk import expected_elements_scanned, expected_quickselect_cycles, quickselect_cycles
from accel_sims.spatten.workload import HeadRecord, Workload

TENSORS = ("key", "key_lsb", "value")
ENERGY_PARTS = ("dram", "sram", "qk_multipliers", "pv_multipliers", "softmax", "topk")


class LayerResult(BaseModel):
    """Totals of one (iteration, layer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iteration_id: int
    layer_id: int
    heads: int = Field(description="Head records simulated (heads left after head pruning).")
    seq_len: int = Field(description="Largest seq_len of the layer's records (context before pruning).")
    keys_fetched: int = Field(description="Sum over heads of key_fetch_num.")
    values_fetched: int = Field(description="Sum over heads of value_fetch_num.")
    keep_ratio: float = Field(description="Mean over heads of key_fetch_num / seq_len.")
    value_keep_ratio: float = Field(description="Mean over heads of value_fetch_num / seq_len.")
    dram_bytes: int
    dram_cycles: int
    compute_cycles: int
    drain_cycles: int
    topk_cycles: int
    cycles: int
    energy_pj: float


class SimResult(BaseModel):
    """Cycles, DRAM traffic and energy of a workload on a SpAtten configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    config_name: str
    config: SpAttenConfig = Field(description="The configuration simulated (makes --json output self-describing).")
    clock_ghz: float
    cycles: int
    cycle_breakdown: dict[str, int] = Field(description="Sums over layers: dram, compute, drain, topk.")
    dram_bytes: dict[str, int] = Field(description="DRAM bytes per tensor (key, key_lsb, value).")
    dram_transactions: dict[str, int]
    io_bytes: dict[str, int] = Field(description="Query in and result out over the request/response ports.")
    energy_pj: dict[str, float] = Field(description="Energy per part: " + ", ".join(ENERGY_PARTS) + ".")
    operations: dict[str, int] = Field(description="qk_macs, pv_macs, softmax_elements, topk_elements.")
    layers: tuple[LayerResult, ...]

    @property
    def total_dram_bytes(self) -> int:
        return sum(self.dram_bytes.values())

    @property
    def total_energy_pj(self) -> float:
        return sum(self.energy_pj.values())

    @property
    def seconds(self) -> float:
        return self.cycles / (self.clock_ghz * 1e9)

    def by_layer(self) -> list[dict[str, float]]:
        """Per layer_id, summed over iterations (means for ratios): the rows of the per-layer report."""
        rows: dict[int, dict[str, float]] = {}
        counts: dict[int, int] = {}
        for lr in self.layers:
            row = rows.setdefault(
                lr.layer_id,
                {"layer_id": lr.layer_id, "heads": 0.0, "keep_ratio": 0.0, "value_keep_ratio": 0.0, "dram_bytes": 0.0,
                 "cycles": 0.0, "energy_pj": 0.0},
            )  # fmt: skip
            counts[lr.layer_id] = counts.get(lr.layer_id, 0) + 1
            row["heads"] += lr.heads
            row["keep_ratio"] += lr.keep_ratio
            row["value_keep_ratio"] += lr.value_keep_ratio
            row["dram_bytes"] += lr.dram_bytes
            row["cycles"] += lr.cycles
            row["energy_pj"] += lr.energy_pj
        for lid, row in rows.items():
            for key in ("heads", "keep_ratio", "value_keep_ratio"):
                row[key] /= counts[lid]
        return [rows[k] for k in sorted(rows)]


def _field(records: Sequence[HeadRecord], name: str) -> np.ndarray:
    return np.fromiter((getattr(r, name) for r in records), dtype=np.int64, count=len(records))


def _where(r: HeadRecord, i: int) -> str:
    return f"record {i} (iteration {r.iteration_id}, layer {r.layer_id}, head {r.head_id})"


def check_workload(workload: Workload, config: SpAttenConfig) -> None:
    """Reject records the datapath cannot run; the error names the record and the field."""
    widest = config.packed_bit_widths[-1]
    for i, r in enumerate(workload.records):
        if r.head_dim > config.max_head_dim:
            raise AccelSimsError(
                f"{_where(r, i)}: field head_dim = {r.head_dim} exceeds the datapath's max_head_dim "
                f"{config.max_head_dim} (config {config.name!r})"
            )
        for name in ("key_bits", "value_bits", "query_bits", "requant_extra_bits"):
            if getattr(r, name) > widest:
                raise AccelSimsError(
                    f"{_where(r, i)}: field {name} = {getattr(r, name)} exceeds the widest packed width {widest}"
                )
        if r.requant and r.requant_extra_bits < 1:
            raise AccelSimsError(f"{_where(r, i)}: field requant_extra_bits must be >= 1 when requant is set")


def simulate(
    workload: Workload,
    config: SpAttenConfig | None = None,
    *,
    topk_seed: int | None = None,
    value_topk_on_critical_path: bool = False,
) -> SimResult:
    """Simulate `workload` on `config` (default: the 'spatten' preset).

    Token top-k cycles use the expected quick-select cost (`expected_quickselect_cycles`) unless `topk_seed` is given,
    in which case each top-k runs `quickselect_cycles` on uniform random scores with a random pivot seeded by
    `topk_seed` plus its record index (bert.cpp does the same with a per-layer seed).
    """
    cfg = config if config is not None else SpAttenConfig.from_name("spatten")
    check_workload(workload, cfg)
    recs = workload.records
    lat = cfg.latency
    en = cfg.energy

    d = _field(recs, "head_dim")
    seq = _field(recs, "seq_len")
    nq = _field(recs, "num_queries")
    kf = _field(recs, "key_fetch_num")
    vf = _field(recs, "value_fetch_num")
    kb = _field(recs, "key_bits")
    vb = _field(recs, "value_bits")
    qb = _field(recs, "query_bits")
    rq = _field(recs, "requant")
    rqb = _field(recs, "requant_extra_bits") * rq
    tk_on = _field(recs, "topk").astype(bool)
    tk = _field(recs, "topk_k")

    # --- DRAM: transactions per tensor, cycles per tensor (each spread over the channels).
    txn = {
        "key": fetch_transactions(kf, d, kb, cfg),
        "key_lsb": fetch_transactions(kf * rq, d, np.maximum(rqb, 1), cfg) * rq,
        "value": fetch_transactions(vf, d, vb, cfg),
    }
    dram_cyc = np.asarray(sum(channel_cycles(t, cfg) for t in txn.values()), dtype=np.int64)
    dram_bytes_rec = np.asarray(sum(txn.values()), dtype=np.int64) * cfg.transaction_bytes

    # --- Compute: per-query stage times of the pipelined Q.K -> softmax -> (top-k) -> P.V chain.
    par_k = cfg.qk_multipliers // d
    par_v = cfg.pv_multipliers // d
    qk_q = -(-kf // par_k) * (1 + rq)
    pv_q = -(-vf // par_v)
    v_prune = (vf > 0) & (vf < kf)
    vk_n = np.where(v_prune, kf, 1)
    vk_k = np.where(v_prune, vf, 1)
    vtopk_q = np.where(
        v_prune,
        expected_quickselect_cycles(
            vk_n, vk_k, parallelism=cfg.topk_parallelism, round_overhead=cfg.topk_round_overhead, io_width=par_k
        ),
        0.0,
    )
    stage = np.maximum(qk_q, pv_q)
    if value_topk_on_critical_path:
        stage = np.maximum(stage, np.ceil(vtopk_q).astype(np.int64))
    compute = nq * stage
    head_cycles = np.maximum(dram_cyc, compute) if cfg.overlap_fetch_compute else dram_cyc + compute

    # --- Token top-k (cascade token pruning), serial after its head.
    topk_cyc = np.zeros(len(recs), dtype=np.int64)
    topk_scan = np.zeros(len(recs), dtype=np.float64)
    idx = np.flatnonzero(tk_on)
    if idx.size:
        if topk_seed is None:
            exp = expected_quickselect_cycles(
                kf[idx], tk[idx], parallelism=cfg.topk_parallelism, round_overhead=cfg.topk_round_overhead,
                io_width=par_k[idx],
            )  # fmt: skip
            topk_cyc[idx] = np.ceil(exp).astype(np.int64)
            topk_scan[idx] = expected_elements_scanned(kf[idx], tk[idx])
        else:
            for j in idx:
                scores = np.random.default_rng(topk_seed + int(j)).random(int(kf[j]))
                tr = quickselect_cycles(
                    scores, int(tk[j]), parallelism=cfg.topk_parallelism, round_overhead=cfg.topk_round_overhead,
                    io_width=int(par_k[j]), pivot="random", seed=topk_seed + int(j),
                )  # fmt: skip
                topk_cyc[j] = tr.cycles
                topk_scan[j] = tr.elements_scanned

    # --- Energy per record.
    kbits = packed_bits_array(kb, cfg)
    lbits = packed_bits_array(rqb, cfg)
    vbits = packed_bits_array(vb, cfg)
    qk_macs = nq * kf * d * (1 + rq)
    pv_macs = nq * vf * d
    soft_el = nq * kf * (1 + rq)
    topk_el = nq * np.where(v_prune, expected_elements_scanned(vk_n, vk_k), 0.0) + topk_scan
    sram_bits = dram_bytes_rec * 8 + nq * d * (kf * (kbits + lbits) + vf * vbits)
    e_parts = {
        "dram": dram_bytes_rec * 8 * en.dram_pj_per_bit,
        "sram": sram_bits * en.sram_pj_per_bit,
        "qk_multipliers": qk_macs * (en.multiply_pj + en.add_pj),
        "pv_multipliers": pv_macs * (en.multiply_pj + en.add_pj),
        "softmax": soft_el * en.softmax_pj_per_element,
        "topk": topk_el * en.topk_pj_per_element,
    }
    e_rec = np.asarray(sum(np.asarray(v, dtype=np.float64) for v in e_parts.values()), dtype=np.float64)

    # --- Group by (iteration, layer) in record order.
    keys = [(r.iteration_id, r.layer_id) for r in recs]
    group_of: dict[tuple[int, int], int] = {}
    gid = np.fromiter((group_of.setdefault(k, len(group_of)) for k in keys), dtype=np.int64, count=len(keys))
    ng = len(group_of)

    def gsum(x: np.ndarray) -> np.ndarray:
        return np.bincount(gid, weights=np.asarray(x, dtype=np.float64), minlength=ng)

    last = np.zeros(ng, dtype=np.int64)
    last[gid] = np.arange(len(recs))  # the layer's last head drains the pipeline
    drain = (
        lat.key_path + lat.softmax + -(-kf[last] // par_k[last]) + lat.requant_decision + lat.topk_passthrough
        + lat.value_path
    )  # fmt: skip
    g_head = gsum(head_cycles).astype(np.int64)
    g_topk = gsum(topk_cyc).astype(np.int64)
    g_cycles = g_head + drain + g_topk
    g_dram_c = gsum(dram_cyc).astype(np.int64)
    g_comp = gsum(compute).astype(np.int64)
    g_bytes = gsum(dram_bytes_rec).astype(np.int64)
    g_energy = gsum(e_rec)
    g_heads = np.bincount(gid, minlength=ng)
    g_kf = gsum(kf).astype(np.int64)
    g_vf = gsum(vf).astype(np.int64)
    g_keep = gsum(kf / seq) / g_heads
    g_vkeep = gsum(vf / seq) / g_heads
    g_seq = np.zeros(ng, dtype=np.int64)
    np.maximum.at(g_seq, gid, seq)

    layers = tuple(
        LayerResult(
            iteration_id=k[0], layer_id=k[1], heads=int(g_heads[g]), seq_len=int(g_seq[g]),
            keys_fetched=int(g_kf[g]), values_fetched=int(g_vf[g]), keep_ratio=float(g_keep[g]),
            value_keep_ratio=float(g_vkeep[g]), dram_bytes=int(g_bytes[g]), dram_cycles=int(g_dram_c[g]),
            compute_cycles=int(g_comp[g]), drain_cycles=int(drain[g]), topk_cycles=int(g_topk[g]),
            cycles=int(g_cycles[g]), energy_pj=float(g_energy[g]),
        )
        for k, g in group_of.items()
    )  # fmt: skip
    return SimResult(
        model=workload.model,
        config_name=cfg.name,
        config=cfg,
        clock_ghz=cfg.clock_ghz,
        cycles=int(g_cycles.sum()),
        cycle_breakdown={
            "dram": int(g_dram_c.sum()),
            "compute": int(g_comp.sum()),
            "drain": int(drain.sum()),
            "topk": int(g_topk.sum()),
        },
        dram_bytes={t: int(v.sum()) * cfg.transaction_bytes for t, v in txn.items()},
        dram_transactions={t: int(v.sum()) for t, v in txn.items()},
        io_bytes={
            "query": int((nq * -(-(d * packed_bits_array(qb, cfg)) // 8)).sum()),
            "output": int((nq * -(-(d * packed_bits_array(qb, cfg)) // 8)).sum()),
        },
        energy_pj={p: float(np.sum(v)) for p, v in e_parts.items()},
        operations={
            "qk_macs": int(qk_macs.sum()),
            "pv_macs": int(pv_macs.sum()),
            "softmax_elements": int(soft_el.sum()),
            "topk_elements": int(math.ceil(float(np.sum(topk_el)))),
        },
        layers=layers,
    )


def dense_baseline(workload: Workload, num_heads: int | None = None, bits: int = 16) -> Workload:
    """The unpruned `bits`-bit workload of the same model: every head, every key and value, no top-k, no requant.

    Heads: `num_heads` per layer, or the most heads any (iteration, layer) has (max head_id + 1); heads removed by
    head pruning get the layer's head_dim. Queries: a record with more than one query is a full-sequence pass
    (encoder or prompt), so its dense form has seq_len queries; a one-query record is a decode step and stays one.
    """
    groups = workload.layers()
    if num_heads is None:
        num_heads = max(max(len(g), max(r.head_id for r in g) + 1) for g in groups.values())
    if num_heads < 1:
        raise AccelSimsError(f"dense_baseline: num_heads must be >= 1, got {num_heads}")
    out: list[HeadRecord] = []
    for (it, layer), recs in groups.items():
        ref = recs[0]
        seq_len = max(r.seq_len for r in recs)
        queries = seq_len if max(r.num_queries for r in recs) > 1 else 1
        for h in range(num_heads):
            out.append(
                HeadRecord(
                    iteration_id=it, layer_id=layer, head_id=h, head_dim=ref.head_dim, seq_len=seq_len,
                    num_queries=queries, key_fetch_num=seq_len, key_bits=bits, query_bits=bits,
                    requant_threshold=0.0, requant=False, requant_extra_bits=0, value_fetch_num=seq_len,
                    value_bits=bits, accumulate_importance=False, rescale_previous_importance=False, topk=False,
                    topk_k=0,
                )
            )  # fmt: skip
    return Workload(model=f"{workload.model}-dense{bits}", records=tuple(out))


def compare(pruned: SimResult, dense: SimResult) -> dict[str, float]:
    """Ratios dense / pruned: DRAM bytes (the paper's 'DRAM access reduction'), cycles (speedup) and energy."""
    return {
        "dram_reduction": dense.total_dram_bytes / max(pruned.total_dram_bytes, 1),
        "speedup": dense.cycles / max(pruned.cycles, 1),
        "energy_saving": dense.total_energy_pj / max(pruned.total_energy_pj, 1e-30),
    }


def layer_report(pruned: SimResult, dense: SimResult | None = None) -> list[dict[str, float]]:
    """Per layer_id (summed over iterations): heads, keep ratios, DRAM bytes and cycles, with the dense baseline's
    DRAM bytes and cycles and the reduction when `dense` is given. The rows of `accel-sims spatten report`."""
    rows = pruned.by_layer()
    if dense is not None:
        base = {int(r["layer_id"]): r for r in dense.by_layer()}
        for row in rows:
            b = base.get(int(row["layer_id"]))
            if b is None:
                raise AccelSimsError(f"layer_report: dense result has no layer {int(row['layer_id'])}")
            row["dense_dram_bytes"] = b["dram_bytes"]
            row["dense_cycles"] = b["cycles"]
            row["dram_reduction"] = b["dram_bytes"] / max(row["dram_bytes"], 1.0)
    return rows
