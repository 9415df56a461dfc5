"""The W4A4 GEMM compiled for sm_90a on the CPU (no GPU runs): the per-group rescaling that bounds its speed
(SVDQuant, ICLR 2025, Sec. 4.3), counted by ``bench/inspect_sass.py``; and the packed sign extension's PTX
arithmetic, emulated on 32-bit words."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from svdquant.kernels.gemm_w4a4 import SIGN_EXTEND_OPS, emulate_sign_extend

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "inspect_sass.py"
needs_compiler = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "") == "1", reason="compiles real kernels: not under the interpreter"
)


def test_packed_sign_extension_is_exact_for_every_byte_in_every_position() -> None:
    b = torch.arange(256, dtype=torch.int64)
    for pos in range(4):
        words = b << (8 * pos) | (0x5A << (8 * ((pos + 1) % 4)))  # a fixed neighbour byte must stay untouched
        lo, hi = emulate_sign_extend(words)
        got_lo, got_hi = (lo >> (8 * pos)) & 0xFF, (hi >> (8 * pos)) & 0xFF
        want_lo, want_hi = b & 15, b >> 4
        # Two's complement nibbles: 0..7 stay, 8..15 become -8..-1 (as bytes 0xF8..0xFF).
        assert torch.equal(got_lo, torch.where(want_lo > 7, want_lo + 240, want_lo))
        assert torch.equal(got_hi, torch.where(want_hi > 7, want_hi + 240, want_hi))
    assert {op for op, *_ in SIGN_EXTEND_OPS} <= {"and.b32", "add.u32", "xor.b32", "shr.u32"}


@functools.cache  # one load of the script per test session
def _inspect_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("svdquant_inspect_sass", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    try:
        mod._sass_tools()._tool("cuobjdump")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return mod


@needs_compiler
def test_packed_unpacking_shortens_the_main_loop_on_sm90() -> None:
    pytest.importorskip("triton")
    mod = _inspect_module()
    byte_wise, packed = (mod.inspect(128, 128, False, 8, 3, packed=p) for p in (False, True))
    assert byte_wise["igmma"] == packed["igmma"] > 0
    assert packed["instructions"] < 0.8 * byte_wise["instructions"], (packed, byte_wise)
    assert packed["scale_instructions"] == byte_wise["scale_instructions"]


@needs_compiler
@pytest.mark.parametrize("swap", [False, True])
def test_packed_unpacking_compiles_for_sm90(swap: bool) -> None:
    # The interpreter never runs the inline PTX, so ptxas must at least accept the kernel's variants.
    pytest.importorskip("triton")
    r = _inspect_module().inspect(32, 64, swap, 4, 2, packed=True)
    assert r["igmma"] > 0 or r["ops"].get("IMMA", 0) > 0


@needs_compiler
def test_rescale_costs_three_fp32_instructions_per_output_per_group() -> None:
    pytest.importorskip("triton")
    r = _inspect_module().inspect(64, 64, False, 4, 2)
    assert r["igmma"] > 0  # the group's product is an INT8 wgmma
    # I2FP + FMUL + FFMA for each of the thread's output elements, every group: the FP32-pipe floor.
    assert r["scale_instructions"] >= 3 * r["elements_per_thread"]
    assert r["ceiling_vs_bf16"] <= 4 / 3 + 1e-9
