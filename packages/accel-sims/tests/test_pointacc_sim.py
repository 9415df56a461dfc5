"""PointAcc simulator: hand-checked unit costs, a tiny workload counted by hand, the cache model, fusion, ablations
and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from accel_sims.errors import AccelSimsError, WorkloadError
from accel_sims.pointacc.config import MappingUnitConfig, PointAccConfig, bitonic_stages, preset_names
from accel_sims.pointacc.simulator import (
    cache_lines,
    compare,
    direct_mapped_hits,
    layer_stats,
    mapping_cycles,
    matrix_cycles,
    simulate,
    sort_cycles,
)
from accel_sims.pointacc.workloads import AccessMap, Layer, Workload

TINY = PointAccConfig.from_name("tiny")
HBM_PJ = 3.9 * 8


def _wl(layers: list[Layer], maps: dict[str, AccessMap] | None = None, name: str = "hand") -> Workload:
    return Workload(name=name, layers=tuple(layers)).with_maps(maps or {})


def _dense(name: str, n: int, c_in: int, c_out: int) -> Layer:
    return Layer(name=name, op="dense", n_in=n, n_out=n, c_in=c_in, c_out=c_out)


def test_bitonic_stage_counts() -> None:
    # log2 W (log2 W + 1) / 2: W=2 -> 1, 4 -> 3, 8 -> 6, 16 -> 10, 64 -> 21.
    assert [bitonic_stages(w) for w in (1, 2, 4, 8, 16, 64)] == [0, 1, 3, 6, 10, 21]
    assert MappingUnitConfig(sorter_width=64).sorter_stages == 21
    with pytest.raises(AccelSimsError, match="power of two"):
        bitonic_stages(12)
    with pytest.raises(ValidationError, match="sorter_width"):
        MappingUnitConfig(sorter_width=12)


def test_sort_cycles_by_hand() -> None:
    m = TINY.mapping  # W = M = 4: 3 stages
    # 16 keys: 4 chunks + 3 stages + ceil(log2 4) = 2 merge passes of 16 / 4 cycles -> 4 + 3 + 8 = 15 cycles;
    # compare-swaps: 4 chunks x 3 stages x 2 + 2 passes x 16 = 56.
    assert sort_cycles(16, m) == (15, 56)
    assert sort_cycles(4, m) == (1 + 3, 6)  # one chunk, no merge pass
    assert sort_cycles(1, m) == (0, 0)


def test_matrix_cycles_by_hand() -> None:
    mx = TINY.matrix  # 4 x 4
    assert matrix_cycles(10, 4, 4, mx) == 10 + 8  # one weight tile, 10 rows, fill/drain 4 + 4
    assert matrix_cycles(10, 5, 4, mx) == 2 * 10 + 8  # c_in 5 needs two row tiles
    assert matrix_cycles(10, 5, 9, mx) == 2 * 3 * 10 + 8
    assert matrix_cycles(0, 5, 9, mx) == 0


def test_tiny_dense_workload_counted_by_hand() -> None:
    # One dense layer, 10 rows, 4 -> 4 channels, fp16 (2 B), DRAM 8 B/cycle.
    r = simulate(_wl([_dense("fc", 10, 4, 4)]), TINY)
    layer = r.layers[0]
    assert layer.dram_bytes["input"] == 10 * 4 * 2
    assert layer.dram_bytes["weights"] == 4 * 4 * 2
    assert layer.dram_bytes["output"] == 10 * 4 * 2
    assert r.total_dram_bytes == 192
    assert layer.unit_cycles["matrix"] == 18
    assert layer.unit_cycles["dram"] == 192 // 8
    assert r.cycles == 24 and layer.bound == "dram"
    assert r.macs == 10 * 4 * 4
    assert r.energy_pj["dram"] == pytest.approx(192 * HBM_PJ)
    assert r.energy_pj["matrix"] == pytest.approx(
        160 * TINY.energy.mac_fp16_pj + (10 * 4 * 2 * 1 + 10 * 4 * 2 + 32) * TINY.energy.sram_pj_per_byte
    )
    assert r.energy_pj["static"] == 0.0


def test_tiny_mapping_ops_by_hand() -> None:
    layers = [
        Layer(name="fps", op="fps", n_in=16, n_out=4),
        Layer(name="kmap", op="kernel_map", n_in=8, n_out=8, k=27, pairs=40),
        Layer(name="ds", op="voxel_downsample", n_in=16, n_out=5),
    ]
    r = simulate(_wl(layers), TINY)
    fps, kmap, ds = r.layers
    # Counts from the ranking formulation (accel_sims.pointacc.mapping.*_stats), tiny unit: W = M = D = 4, 3 stages.
    # FPS: 3 dependent passes over 16 points: 48 distances (ceil(48/4) = 12 cycles) streaming into 96 compare-
    # reductions (min-update + argmax, ceil(96/4) = 24 cycles), plus 3 x log2(4) reduction latency -> 30.
    assert fps.unit_cycles["mapping"] == 24 + 6 and fps.distances == 48 and fps.comparisons == 96
    # Kernel map: two sorts of 8 keys (sort_cycles(8) = 2 chunks + 3 stages + 1 pass x 2 = 7; back to back the stage
    # latency is paid once: 2 x 4 + 3 = 11), then 27 merges of 8 + 8 keys at 4 per cycle (108) -> 119.
    assert sort_cycles(8, TINY.mapping) == (7, 20)
    assert kmap.unit_cycles["mapping"] == 11 + 108
    assert kmap.comparisons == 2 * 20 + 27 * 15
    assert kmap.dram_bytes["maps"] == 40 * 2 * 4
    # Voxel downsample: one sort of 16 (15 cycles) + 15 neighbour compares (ceil(15/4) = 4) -> 19.
    assert ds.unit_cycles["mapping"] == 4 + 15 and ds.comparisons == 56 + 15


def test_mapping_cycles_scale_with_the_sorter() -> None:
    fps = Layer(name="fps", op="fps", n_in=4096, n_out=1024)
    wide = PointAccConfig.from_name("server")
    narrow = wide.model_copy(update={"mapping": MappingUnitConfig(sorter_width=16, merger_width=16, distance_units=16)})
    c_wide = simulate(_wl([fps]), wide).layers[0].unit_cycles["mapping"]
    c_narrow = simulate(_wl([fps]), narrow).layers[0].unit_cycles["mapping"]
    assert 3.5 < c_narrow / c_wide < 4.5
    assert mapping_cycles(layer_stats(fps), wide.mapping, 1023)[0] == c_wide


def test_fusion_removes_exactly_the_intermediate_traffic() -> None:
    wl = _wl([_dense("a", 10, 4, 8), _dense("b", 10, 8, 8), _dense("c", 10, 8, 4)])
    fused = simulate(wl, TINY)
    unfused = simulate(wl, TINY.ablate(fusion=False))
    intermediate = 2 * (10 * 8 * 2) * 2  # two intermediates, each written and read back, fp16
    assert unfused.total_dram_bytes - fused.total_dram_bytes == intermediate
    assert [ly.input_on_chip for ly in fused.layers] == [False, True, True]
    assert [ly.output_on_chip for ly in fused.layers] == [True, True, False]
    assert unfused.cycles >= fused.cycles
    assert unfused.total_energy_pj > fused.total_energy_pj


def test_fusion_stops_when_weights_do_not_fit() -> None:
    # tiny fusion buffer is 4 KiB = 2048 fp16 weights: 32x32 (1024) + 32x32 fits, a third does not.
    wl = _wl([_dense(n, 4, 32, 32) for n in "abc"])
    r = simulate(wl, TINY)
    assert [ly.output_on_chip for ly in r.layers] == [True, False, False]


def test_direct_mapped_cache_hand_stream() -> None:
    # blocks of 2 rows: rows 0,1,2,3,0,1 -> blocks 0,0,1,1,0,0.
    assert direct_mapped_hits(np.array([0, 1, 2, 3, 0, 1]), n_lines=2, block_rows=2) == 4
    assert direct_mapped_hits(np.array([0, 1, 2, 3, 0, 1]), n_lines=1, block_rows=2) == 3  # block 1 evicts block 0
    # conflict misses: rows 0 and 4 share set 0 of a 4-line cache, not of an 8-line one.
    assert direct_mapped_hits(np.array([0, 4, 0, 4]), n_lines=4, block_rows=1) == 0
    assert direct_mapped_hits(np.array([0, 4, 0, 4]), n_lines=8, block_rows=1) == 2
    assert direct_mapped_hits(np.array([7]), n_lines=8, block_rows=1) == 0
    with pytest.raises(AccelSimsError, match="n_lines"):
        direct_mapped_hits(np.array([1, 2]), n_lines=0, block_rows=1)


def _reference_hits(stream: np.ndarray, n_lines: int, block_rows: int) -> int:
    tags = [-1] * n_lines
    hits = 0
    for row in stream.tolist():
        b = row // block_rows
        hits += tags[b % n_lines] == b
        tags[b % n_lines] = b
    return hits


@pytest.mark.parametrize("n_lines", [1, 3, 16, 70_000])
def test_direct_mapped_cache_matches_loop(n_lines: int) -> None:
    rng = np.random.default_rng(n_lines)
    stream = np.concatenate([rng.integers(0, 500, 3000), np.sort(rng.integers(0, 200_000, 3000))])
    for block in (1, 4):
        assert direct_mapped_hits(stream, n_lines, block) == _reference_hits(stream, n_lines, block)


def _gather_workload(n_in: int = 4000, q: int = 1000, k: int = 16, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    centres = np.sort(rng.integers(0, n_in, q))
    idx = np.clip(centres[:, None] + rng.integers(-40, 40, (q, k)), 0, n_in - 1)
    gather = Layer(name="g", op="gather", n_in=n_in, n_out=q, k=k, c_in=16, c_out=16, map_id="g")
    return _wl([gather], {"g": AccessMap(in_idx=idx.reshape(-1), n_in=n_in, n_out=q)})


def test_cache_off_has_no_hits_and_hit_rate_is_monotone_in_size() -> None:
    wl = _gather_workload()
    off = simulate(wl, TINY.ablate(cache=False))
    assert off.cache_hits == 0 and off.cache_hit_rate == 0.0
    assert off.total_dram_bytes == 1000 * 16 * 16 * 2 + 1000 * 16 * 4 + 1000 * 16 * 16 * 2
    rates = []
    for kb in (0.0625, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32):
        cfg = TINY.model_copy(update={"mmu": TINY.mmu.model_copy(update={"cache_kb": kb})})
        rates.append(simulate(wl, cfg).cache_hit_rate)
    assert rates == sorted(rates)
    assert rates[-1] > 0.8 and rates[-1] > rates[0]
    assert cache_lines(TINY, 32) == 1024 // (2 * 32)
    assert cache_lines(TINY.ablate(cache=False), 32) == 0


def test_ablations_never_faster_on_a_sparse_conv() -> None:
    rng = np.random.default_rng(1)
    n, pairs = 3000, 20000
    m = AccessMap(
        in_idx=rng.integers(0, n, pairs),
        out_idx=np.sort(rng.integers(0, n, pairs)),
        offset=rng.integers(0, 27, pairs),
        n_in=n,
        n_out=n,
        kernel_volume=27,
    )
    conv = Layer(name="conv", op="sparse_conv", n_in=n, n_out=n, k=27, c_in=8, c_out=8, pairs=pairs, map_id="m")
    wl = _wl([conv, _dense("fc", n, 8, 8), _dense("fc2", n, 8, 4)], {"m": m})
    for cfg in (TINY, PointAccConfig.from_name("server"), PointAccConfig.from_name("edge")):
        full = simulate(wl, cfg)
        for abl in (cfg.ablate(cache=False), cfg.ablate(fusion=False), cfg.ablate(cache=False, fusion=False)):
            other = simulate(wl, abl)
            assert other.cycles >= full.cycles
            assert other.total_dram_bytes >= full.total_dram_bytes
            assert compare(full, other)["speedup"] >= 1.0


def test_random_stream_for_layers_without_a_map() -> None:
    g = Layer(name="g", op="gather", n_in=100, n_out=50, k=4, c_in=8, c_out=8)
    r1 = simulate(_wl([g]), TINY)
    r2 = simulate(_wl([g]), TINY)
    assert r1 == r2 and r1.layers[0].gather_accesses == 200


def test_streamed_gather_overlaps_its_consumer() -> None:
    g = Layer(name="g", op="gather", n_in=100, n_out=50, k=4, c_in=8, c_out=8)
    r = simulate(_wl([g, _dense("fc", 200, 8, 4)]), TINY)
    assert r.layers[0].cycles == 0 and r.layers[0].bound == "overlapped"
    assert r.layers[0].output_on_chip and r.layers[1].input_on_chip
    assert r.layers[1].dram_bytes["input"] == 0
    assert r.cycles == r.layers[1].cycles >= r.layers[1].unit_cycles["matrix"]


@pytest.mark.parametrize(
    ("layer", "field"),
    [
        (Layer(name="x", op="dense", n_in=0, n_out=0, c_in=4, c_out=4), "n_in"),
        (Layer(name="x", op="dense", n_in=4, n_out=4, c_in=0, c_out=4), "c_in"),
        (Layer(name="x", op="dense", n_in=4, n_out=5, c_in=4, c_out=4), "n_out"),
        (Layer(name="x", op="knn", n_in=4, n_out=4, k=5), "k"),
        (Layer(name="x", op="fps", n_in=4, n_out=8), "n_out"),
        (Layer(name="x", op="pool", n_in=10, n_out=3, k=3, c_in=4, c_out=4), "n_in"),
        (Layer(name="x", op="sparse_conv", n_in=4, n_out=4, k=27, c_in=4, c_out=4, pairs=0), "pairs"),
        (Layer(name="x", op="gather", n_in=4, n_out=4, k=-1, c_in=4, c_out=4), "k"),
    ],
)
def test_bad_layers_name_the_field(layer: Layer, field: str) -> None:
    with pytest.raises(WorkloadError, match=f"field {field}"):
        simulate(_wl([layer]), TINY)


def test_bad_workload_and_config() -> None:
    with pytest.raises(WorkloadError, match="field layers is empty"):
        simulate(_wl([]), TINY)
    m = AccessMap(in_idx=np.array([0, 9]), n_in=10, n_out=1)
    g = Layer(name="g", op="gather", n_in=5, n_out=1, k=2, c_in=4, c_out=4, map_id="m")
    with pytest.raises(WorkloadError, match="map_id 'm' indexes row 9"):
        simulate(_wl([g], {"m": m}), TINY)
    g3 = g.model_copy(update={"k": 3, "n_in": 10})
    with pytest.raises(WorkloadError, match="holds 2 accesses but n_out \\* k = 3"):
        simulate(_wl([g3], {"m": m}), TINY)
    with pytest.raises(AccelSimsError, match="unknown PointAcc preset"):
        PointAccConfig.from_name("cloud")
    with pytest.raises(ValidationError, match="cache_kb"):
        PointAccConfig.model_validate({"mmu": {"cache_kb": 0}})
    with pytest.raises(ValidationError, match="rows"):
        PointAccConfig.model_validate({"matrix": {"rows": -1}})
    with pytest.raises(ValidationError, match="bandwidth_gb_s"):
        PointAccConfig.model_validate({"dram": {"bandwidth_gb_s": 0}})
    assert set(preset_names()) >= {"server", "edge", "tiny"}


def test_result_is_json_serializable() -> None:
    r = simulate(_wl([_dense("fc", 10, 4, 4)]), TINY)
    text = r.model_dump_json()
    assert '"config_name":"tiny"' in text and '"cycles":24' in text


def test_config_overrides_name_the_field() -> None:
    cfg = PointAccConfig.from_name("server").with_overrides({"mmu.cache_kb": 128, "fusion": False})
    assert cfg.mmu.cache_kb == 128 and not cfg.fusion
    with pytest.raises(AccelSimsError, match="mmu.cache_kb"):
        PointAccConfig.from_name("server").with_overrides({"mmu.cache_kb": -1})
    with pytest.raises(AccelSimsError, match="mapping.sorter_width"):
        PointAccConfig.from_name("server").with_overrides({"mapping.sorter_width": 0})
    with pytest.raises(AccelSimsError, match="unknown PointAcc config field 'mmu.size'"):
        PointAccConfig.from_name("server").with_overrides({"mmu.size": 1})


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.integers(1, 96), min_size=1, max_size=5),
    rows=st.integers(1, 300),
    k=st.integers(1, 8),
    seed=st.integers(0, 10),
    cache_kb=st.sampled_from([0.25, 1.0, 8.0]),
    block_rows=st.sampled_from([1, 2, 8]),
)
def test_ablations_never_faster_property(
    widths: list[int], rows: int, k: int, seed: int, cache_kb: float, block_rows: int
) -> None:
    rng = np.random.default_rng(seed)
    n_in = rows + 5
    idx = rng.integers(0, n_in, rows * k)
    layers = [Layer(name="g", op="gather", n_in=n_in, n_out=rows, k=k, c_in=widths[0], c_out=widths[0], map_id="g")]
    c = widths[0]
    for j, w in enumerate(widths[1:] + [4]):
        layers.append(_dense(f"d{j}", rows * k, c, w))
        c = w
    layers.append(Layer(name="pool", op="pool", n_in=rows * k, n_out=rows, k=k, c_in=c, c_out=c))
    wl = _wl(layers, {"g": AccessMap(in_idx=idx, n_in=n_in, n_out=rows)})
    cfg = TINY.with_overrides({"mmu.cache_kb": cache_kb, "mmu.block_rows": block_rows})
    full = simulate(wl, cfg)
    for abl in (cfg.ablate(cache=False), cfg.ablate(fusion=False)):
        other = simulate(wl, abl)
        assert other.cycles >= full.cycles
        assert other.total_dram_bytes >= full.total_dram_bytes
        assert other.total_energy_pj >= full.total_energy_pj * (1 - 1e-12)


def test_topk_sort_is_linear_and_cheaper_than_a_full_sort() -> None:
    from accel_sims.pointacc.simulator import sort_cycles, topk_sort_cycles

    mp = PointAccConfig.from_name("server").mapping  # 64-wide sorter and merger: 21 bitonic stages
    assert mp.sorter_width == 64 and mp.merger_width == 64 and mp.sorter_stages == 21
    # 256 keys, k = 20: 4 chunks, each chunk's best 20 merged with the running 20 in ceil(40 / 64) = 1 cycle.
    assert topk_sort_cycles(256, 20, mp) == (4 + 21, 4 * 21 * 32 + 4 * 40)
    # k larger than the merger: each fold of 2 x 64 keys takes 2 cycles.
    assert topk_sort_cycles(256, 100, mp)[0] == 4 * 2 + 21
    for n in (1024, 16384, 65536):
        assert topk_sort_cycles(n, 16, mp)[0] < sort_cycles(n, mp)[0]
    assert topk_sort_cycles(65536, 16, mp)[0] - 21 == 16 * (topk_sort_cycles(4096, 16, mp)[0] - 21)
