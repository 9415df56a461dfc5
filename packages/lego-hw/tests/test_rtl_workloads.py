"""RTL of conv2d, attention GEMMs and other workloads: bit-exact simulation, cycles, synthesis, lint."""

from __future__ import annotations

import numpy as np
import pytest

from lego_hw.dataflow import ArraySpec, Dataflow, Mapping, map_workload
from lego_hw.design import generate
from lego_hw.schedule import total_cycles
from lego_hw.tools import lint, simulate, synthesize, tool_or_skip
from lego_hw.workload import Workload, attention_pv, attention_qk, batched_gemm, conv2d, depthwise_conv2d, mttkrp


@pytest.fixture(scope="module")
def sim_tools() -> None:
    tool_or_skip("iverilog")
    tool_or_skip("vvp")


def _run(m: Mapping, seed: int) -> None:
    wl: Workload = m.workload
    inputs = wl.random_inputs(np.random.default_rng(seed))
    res = simulate(generate(m), inputs, check=True)
    out = wl.output.name
    assert np.array_equal(res.outputs[out], wl.reference(inputs)[out])
    assert res.cycles == total_cycles(m)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("preset", ["output-stationary", "weight-stationary"])
def test_conv2d(sim_tools: None, stride: int, preset: str) -> None:
    wl = conv2d(k=3, c=2, oh=3, ow=5, r=2, s=3, stride=stride)
    _run(map_workload(wl, Dataflow.preset(preset, ("k", "x", "c")), ArraySpec(rows=2, cols=3)), seed=stride)


def test_conv2d_random_sizes(sim_tools: None) -> None:
    rng = np.random.default_rng(11)
    for case in range(3):
        k, c, oh, ow = (int(x) for x in rng.integers(2, 5, 4))
        r, s, stride = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        wl = conv2d(k=k, c=c, oh=oh, ow=ow, r=r, s=s, stride=stride, batch=1 + case % 2)
        preset = ("weight-stationary", "output-stationary", "input-stationary")[case]
        arr = ArraySpec(rows=2, cols=2)
        _run(map_workload(wl, Dataflow.preset(preset, ("k", "x", "c")), arr), seed=case)


@pytest.mark.parametrize("preset", ["output-stationary", "weight-stationary", "input-stationary"])
def test_attention_qk_and_pv_batched_over_heads(sim_tools: None, preset: str) -> None:
    qk = attention_qk(heads=2, q_len=3, kv_len=5, head_dim=4)
    pv = attention_pv(heads=2, q_len=3, kv_len=5, head_dim=4)
    _run(map_workload(qk, Dataflow.preset(preset, ("i", "j", "d")), ArraySpec(rows=2, cols=2)), seed=1)
    _run(map_workload(pv, Dataflow.preset(preset, ("i", "d", "j")), ArraySpec(rows=2, cols=3)), seed=2)


def test_other_workloads(sim_tools: None) -> None:
    arr = ArraySpec(rows=2, cols=2)
    _run(map_workload(batched_gemm(2, 3, 4, 5), Dataflow.preset("weight-stationary"), arr), seed=3)
    _run(
        map_workload(depthwise_conv2d(2, 3, 4, 2, 2, 1), Dataflow.preset("output-stationary", ("y", "x", "r")), arr), 4
    )
    # Three inputs: the MAC multiplies X * B * C.
    _run(map_workload(mttkrp(3, 4, 2, 3), Dataflow.preset("output-stationary", ("i", "r", "j")), arr), seed=5)


def test_conv_and_attention_synthesize_and_lint() -> None:
    tool_or_skip("yosys")
    tool_or_skip("verilator")
    arr = ArraySpec(rows=2, cols=2)
    maps = [
        map_workload(conv2d(3, 2, 3, 5, 2, 3, 2), Dataflow.preset("weight-stationary", ("k", "x", "c")), arr),
        map_workload(attention_qk(2, 3, 5, 4), Dataflow.preset("output-stationary", ("i", "j", "d")), arr),
    ]
    for m in maps:
        d = generate(m)
        rep = synthesize(d)
        assert rep.cells > 0 and rep.flip_flops > 0
        assert lint(d).strip() == ""
    assert (
        lint(generate(map_workload(mttkrp(3, 4, 2, 3), Dataflow.preset("weight-stationary", ("i", "r", "j")), arr)))
        == ""
    )
