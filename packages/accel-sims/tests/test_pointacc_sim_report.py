"""PointAcc report rows and SVG plot, the GPU-like baseline, and whole-workload simulation time."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc.baselines import GPUConfig, compare_gpu, simulate_gpu
from accel_sims.pointacc.config import PointAccConfig
from accel_sims.pointacc.report import breakdown_svg, html_report, layer_rows, markdown
from accel_sims.pointacc.simulator import simulate
from accel_sims.pointacc.workloads import AccessMap, Layer, Workload, make_workload


def test_layer_rows_and_markdown() -> None:
    wl = make_workload("pointnet2-cls", 256)
    r = simulate(wl)
    rows = layer_rows(r)
    assert [row["name"] for row in rows] == [ly.name for ly in wl.layers]
    assert sum(int(row["cycles"]) for row in rows) == r.cycles
    assert sum(float(row["dram_kb"]) for row in rows) == pytest.approx(r.total_dram_bytes / 1e3)
    group = next(row for row in rows if row["name"] == "sa1.group")
    assert 0.0 < float(group["cache_hit_rate"]) <= 1.0
    md = markdown(r)
    assert md.count("\n| ") == len(rows) + 1 and "sa1.fps" in md
    page = html_report(r)
    assert page.count("<svg") == 2 and page.count("<tr>") == len(rows) + 1


@pytest.mark.parametrize("metric", ["cycles", "energy"])
def test_breakdown_svg_is_valid_xml(metric: str) -> None:
    r = simulate(make_workload("dgcnn", 128))
    svg = breakdown_svg(r, metric)  # type: ignore[arg-type]
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    rects = [el for el in root.iter() if el.tag.endswith("rect")]
    assert len(rects) > len(r.layers) // 2
    assert "matrix" in svg and "mapping" in svg
    with pytest.raises(AccelSimsError, match="metric"):
        breakdown_svg(r, "area")  # type: ignore[arg-type]


def test_gpu_baseline_by_hand() -> None:
    cfg = GPUConfig()
    fc = Layer(name="fc", op="dense", n_in=1, n_out=1, c_in=4, c_out=4)
    g = simulate_gpu(Workload(name="w", layers=(fc,)), cfg)
    # a tiny layer is launch-bound: 3 kernels (linear, batch norm, ReLU) x 5 us
    assert g.layers[0].bound == "launch" and g.seconds == pytest.approx(15e-6)
    assert g.energy_pj == pytest.approx(15e-6 * cfg.board_power_w * 1e12)
    # sparse conv: 3 kernels per non-empty offset + BN + ReLU
    m = AccessMap(in_idx=np.arange(10), out_idx=np.arange(10), offset=np.array([0] * 5 + [2] * 5), n_in=10, n_out=10,
                  kernel_volume=27)  # fmt: skip
    conv = Layer(name="c", op="sparse_conv", n_in=10, n_out=10, k=27, c_in=4, c_out=4, pairs=10, map_id="c")
    g2 = simulate_gpu(Workload(name="w", layers=(conv,)).with_maps({"c": m}), cfg)
    assert g2.layers[0].kernels == 3 * 2 + 2
    # FPS: one block, 1024 points / 512 threads x 40 cycles + 400 per sample
    fps = Layer(name="f", op="fps", n_in=1024, n_out=100)
    g3 = simulate_gpu(Workload(name="w", layers=(fps,)), cfg)
    assert g3.layers[0].bound == "serial"
    assert g3.seconds == pytest.approx(100 * (2 * 40 + 400) / 1.545e9)
    with pytest.raises(AccelSimsError, match="unknown GPU preset"):
        GPUConfig.from_name("a100")


def test_compare_gpu_and_workload_mismatch() -> None:
    a = make_workload("pointnet", 256)
    r = simulate(a)
    g = simulate_gpu(a)
    out = compare_gpu(r, g)
    assert out["speedup"] == pytest.approx(g.seconds / r.seconds)
    assert out["energy_saving"] > 1.0
    with pytest.raises(AccelSimsError, match="workloads differ"):
        compare_gpu(r, simulate_gpu(make_workload("dgcnn", 64)))


def test_minkunet_100k_points_simulates_within_budget() -> None:
    wl = make_workload("minkunet-outdoor", 100_000)
    assert 50_000 <= wl.points <= 100_000
    cfg = PointAccConfig.from_name("server")
    t = time.perf_counter()
    r = simulate(wl, cfg)
    elapsed = time.perf_counter() - t
    assert elapsed < 10.0
    assert 0.5 < r.cache_hit_rate < 1.0
    assert r.unit_cycles["matrix"] > 0 and r.unit_cycles["mapping"] > 0
