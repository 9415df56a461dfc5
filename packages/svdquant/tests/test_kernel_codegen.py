"""The W4A4 GEMM compiled for sm_90a on the CPU (no GPU runs): the per-group rescaling that bounds its speed
(SVDQuant, ICLR 2025, Sec. 4.3), counted by ``bench/inspect_sass.py``."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "inspect_sass.py"


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "") == "1", reason="compiles real kernels: not under the interpreter"
)
def test_rescale_costs_three_fp32_instructions_per_output_per_group() -> None:
    pytest.importorskip("triton")
    spec = importlib.util.spec_from_file_location("svdquant_inspect_sass", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    try:
        mod._sass_tools()._tool("cuobjdump")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    r = mod.inspect(64, 64, False, 4, 2)
    assert r["igmma"] > 0  # the group's product is an INT8 wgmma
    # I2FP + FMUL + FFMA for each of the thread's output elements, every group: the FP32-pipe floor.
    assert r["scale_instructions"] >= 3 * r["elements_per_thread"]
    assert r["ceiling_vs_bf16"] <= 4 / 3 + 1e-9
