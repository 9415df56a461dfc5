"""The W4A8 GEMM's packed dequantization (QServe, arXiv 2405.04532, Sec. 5.2.1): the PTX's arithmetic against the
written rule ``q8_hat = q4 * s2 + z2``, and the machine code Triton makes of it for sm_90a (compiled ahead of time
on the CPU; nothing runs on a GPU)."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qserve.kernels.w4a8_gemm import PACKED_DEQUANT_OPS, emulate_packed_dequant

BENCH = Path(__file__).resolve().parents[1] / "bench"
needs_compiler = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "") == "1", reason="compiles real kernels: not under the interpreter"
)


def _words(b: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 4]`` -> the little-endian 32-bit words (int64) a GPU register holds."""
    b = b.to(torch.int64)
    return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)


def _bytes(w: torch.Tensor) -> torch.Tensor:
    """int64 words -> int8 ``[..., 4]`` (the bytes as the tensor cores read them)."""
    out = torch.stack([(w >> (8 * i)) & 0xFF for i in range(4)], dim=-1)
    return torch.where(out > 127, out - 256, out).to(torch.int8)


@st.composite
def scale_zero(draw: st.DrawFn) -> tuple[int, int]:
    """Any (s2, z2) whose ``q4 * s2 + z2`` stays int8 for every q4 in 0..15 (what the reference accepts)."""
    s = draw(st.integers(0, 17))
    return s, draw(st.integers(-128, 127 - 15 * s))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), n_words=st.integers(1, 64))
def test_packed_dequant_ptx_matches_the_rule(data: st.DataObject, seed: int, n_words: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (n_words, 4), generator=gen, dtype=torch.int64).to(torch.uint8)
    s, z = data.draw(scale_zero())
    s_word = torch.full((n_words,), s * 0x01010101, dtype=torch.int64)
    z_word = torch.full((n_words,), (z & 0xFF) * 0x01010101, dtype=torch.int64)
    lo, hi = emulate_packed_dequant(_words(packed), s_word, z_word)
    q_lo, q_hi = (packed & 15).to(torch.int64), (packed >> 4).to(torch.int64)
    assert torch.equal(_bytes(lo), (q_lo * s + z).to(torch.int8))
    assert torch.equal(_bytes(hi), (q_hi * s + z).to(torch.int8))


def test_packed_dequant_covers_the_protective_range_extremes() -> None:
    # Largest scale and both ends of the int8 range, every nibble value in every byte position.
    q = torch.arange(16, dtype=torch.uint8)
    packed = (q[:, None] | (q.flip(0)[:, None] << 4)).repeat(1, 4)  # [16, 4] bytes
    for s, z in ((16, -128), (8, -120), (1, 112), (0, -5), (17, -128)):
        lo, hi = emulate_packed_dequant(
            _words(packed), torch.full((16,), s * 0x01010101), torch.full((16,), (z & 0xFF) * 0x01010101)
        )
        assert torch.equal(_bytes(lo), (q[:, None].long() * s + z).expand(16, 4).to(torch.int8)), (s, z)
        assert torch.equal(_bytes(hi), (q.flip(0)[:, None].long() * s + z).expand(16, 4).to(torch.int8)), (s, z)


def test_packed_dequant_ops_are_ptx_the_emulator_knows() -> None:
    arity = {"and.b32": 2, "xor.b32": 2, "shr.u32": 2, "mad.lo.u32": 3}
    assert all(op in arity and len(srcs) == arity[op] for op, _, *srcs in PACKED_DEQUANT_OPS)
    # Both outputs written, every input read.
    assert {d for _, d, *_ in PACKED_DEQUANT_OPS} >= {"$0", "$1"}
    assert {"$2", "$3", "$4"} <= {x for _, _, *srcs in PACKED_DEQUANT_OPS for x in srcs}


@functools.cache  # one load of the script per test session
def _inspect_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qserve_inspect_sass", BENCH / "inspect_sass.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@needs_compiler
def test_packed_dequant_halves_the_main_loop_on_sm90() -> None:
    pytest.importorskip("triton")
    mod = _inspect_module()
    try:
        mod._tool("cuobjdump")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    byte_wise = mod.inspect(128, 128, False, 8, 3, packed=False)
    packed = mod.inspect(128, 128, False, 8, 3, packed=True)
    # INT8 wgmma in both; the same tensor-core work, far fewer CUDA-core instructions per K step.
    assert byte_wise["igmma"] == packed["igmma"] > 0
    assert packed["instructions"] < 0.6 * byte_wise["instructions"], (packed, byte_wise)
    assert packed["stack_bytes"] == 0


def _scale_registers_are_splats(ptx: str) -> list[str]:
    """The packed code multiplies by byte 0 of its ``s2`` register, so each such register must hold one channel's
    scale in all four bytes: a constant splat or ``prmt`` of one byte into all four. Returns the offenders."""
    defs: dict[str, tuple[str, list[str]]] = {}
    for line in ptx.splitlines():
        m = re.match(r"\s*([a-z][\w.]*)\s+(%r\d+),\s*(.*);", line)
        if m:
            defs[m.group(2)] = (m.group(1), [x.strip() for x in m.group(3).split(",")])
    bad = []
    for reg in re.findall(r"and\.b32 s, (%r\d+), 0xFF;", ptx):
        op, args = defs.get(reg, ("?", []))
        if op == "mov.b32" and args and int(args[0], 0) % 0x01010101 == 0:
            continue  # a constant with four equal bytes
        if op == "prmt.b32" and args[0] == args[1] and args[2] == "0x5410U":
            inner_op, inner = defs.get(args[0], ("?", []))
            if inner_op == "prmt.b32" and inner[0] == inner[1] and inner[2] == "0x3340U":
                continue  # one byte copied into all four
        bad.append(f"{reg} = {op} {', '.join(args)}")
    return bad


@needs_compiler
@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"EVEN_M": False, "EVEN_N": False, "HAS_BIAS": True, "OUT_BF16": True},
        {"PER_GROUP": False},
        {"RAW_INT": True},
    ],
)
@pytest.mark.parametrize(("block_m", "block_n", "warps"), [(32, 64, 4), (16, 16, 4), (128, 128, 8), (256, 128, 8)])
def test_packed_dequant_keeps_one_channel_per_register_on_sm90(
    flags: dict[str, bool], block_m: int, block_n: int, warps: int
) -> None:
    # The interpreter never runs the inline PTX: ptxas must accept every variant, and in each the four bytes a
    # register holds must share one channel's scale.
    pytest.importorskip("triton")
    k = _inspect_module().compile_sm90(block_m, block_n, False, warps, 2, packed=True, **flags)
    ptx = k.asm["ptx"]
    assert "mad.lo.u32 lo, lo, s, zb" in ptx and len(k.asm["cubin"]) > 0
    assert re.findall(r"and\.b32 s, (%r\d+), 0xFF;", ptx)
    assert _scale_registers_are_splats(ptx) == []


@needs_compiler
def test_the_swapped_layout_would_mix_channels_in_a_register() -> None:
    # Why w4a8_gemm refuses packed_dequant with swap=True: there a register's bytes come from two channels.
    pytest.importorskip("triton")
    k = _inspect_module().compile_sm90(32, 64, True, 4, 2, packed=True)
    assert _scale_registers_are_splats(k.asm["ptx"]) != []
