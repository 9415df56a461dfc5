"""SVDQuant's fused INT4 kernels (Li et al., ICLR 2025, Sec. 4.3) against their PyTorch references.

Tests marked ``kernels`` run the Triton kernels; CI runs them on the CPU under ``TRITON_INTERPRET=1``. The
integer part (codes, scales, int32 group sums) must match bit for bit on odd shapes; the fp32 parts
agree up to summation order. Unmarked tests check the references against SVDQLinear and the dispatch on CPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from sq_testing import outlier_activations, structured_weight
from torch import nn

from svdquant.config import SVDQuantConfig
from svdquant.formats import pack_int4, quantize_int4, quantize_weight, unpack_int4
from svdquant.kernels import dispatch
from svdquant.kernels.gemm_w4a4 import GemmConfig, gemm_w4a4_ref, int4_group_sums
from svdquant.kernels.quantize_act import quantize_act_fused_ref
from svdquant.svdq_linear import SVDQLinear

FAST = SVDQuantConfig(rank=16, svd="randomized", lowrank_iters=5, num_grids=4)
HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"
needs_interpreter = pytest.mark.skipif(
    not (HAVE_TRITON and INTERPRET), reason="Triton kernel tests run under TRITON_INTERPRET=1 (nox -s kernels)"
)


def _act(m: int, k: int, r: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, k, generator=gen) * torch.logspace(-2, 1, k)[torch.randperm(k, generator=gen)]).to(dtype)
    x[0, :3] = 0.0  # a row with exact zeros, and below a zero group: its scale is 0
    if m > 1:
        x[1, :64] = 0.0
    smooth = (torch.rand(k, generator=gen) * 3 + 0.25).to(dtype)
    proj_down = (torch.randn(k, r, generator=gen) / k**0.5).to(dtype)
    return x, smooth, proj_down


def _layer(n: int, k: int, dtype: torch.dtype, calib: torch.Tensor | None, **update: object) -> SVDQLinear:
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(structured_weight(n, k, seed=3))
    lin = lin.to(dtype).requires_grad_(False)
    return SVDQLinear.from_linear(lin, calib, FAST.layer("layer").model_copy(update=update))


# --------------------------------------------------------------------------------- references (CPU, unmarked)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_reference_is_formats_rule(dtype: torch.dtype) -> None:
    x, smooth, pd = _act(7, 128, 16, dtype, seed=1)
    codes, scales, lora = quantize_act_fused_ref(x, smooth, pd)
    want = quantize_int4((x.float() / smooth.float()).to(dtype), 64)
    assert codes.dtype == torch.int8 and torch.equal(codes, unpack_int4(want.packed))
    assert torch.equal(scales, want.scales) and scales.dtype == dtype
    torch.testing.assert_close(lora, x.float() @ pd.float())


def test_group_sums_are_the_integer_products() -> None:
    x, smooth, _ = _act(5, 128, 0, torch.float32, seed=2)
    a = quantize_int4(x, 64)
    w = quantize_int4(torch.randn(9, 128), 64)
    sums = int4_group_sums(unpack_int4(a.packed), w.packed, 64)
    ac, wc = unpack_int4(a.packed).long(), unpack_int4(w.packed).long()
    want = torch.stack([ac[:, g * 64 : (g + 1) * 64] @ wc[:, g * 64 : (g + 1) * 64].T for g in range(2)])
    assert sums.dtype == torch.int32 and torch.equal(sums.long(), want)


@pytest.mark.parametrize("unsigned", [False, True])
def test_references_compose_to_svdq_linear_forward(unsigned: bool) -> None:
    k, n = 128, 40
    calib = outlier_activations(64, k, seed=5)
    if unsigned:
        calib = torch.nn.functional.gelu(calib)
    layer = _layer(n, k, torch.float32, calib, act_unsigned=unsigned)
    x = outlier_activations(9, k, seed=6)
    if unsigned:
        x = torch.nn.functional.gelu(x)
    shift = float(layer.act_shift) if layer.act_shift is not None else 0.0
    codes, ascales, lora = quantize_act_fused_ref(x, layer.smooth_factor, layer.proj_down, 64, unsigned, shift)
    if unsigned:
        assert int(codes.min()) >= 0 and int(codes.max()) <= 15
    bias = layer.bias
    if shift:
        bias = bias - (shift / layer.smooth_factor) @ layer.dequantized_weight().T
    y = gemm_w4a4_ref(codes, ascales, layer.qweight, layer.wscales, lora, layer.proj_up, bias)
    with dispatch_disabled():
        want = layer(x)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-4 * float(want.abs().max()))


def test_bf16_reference_is_within_16_bit_rounding_of_the_layer() -> None:
    layer = _layer(40, 128, torch.bfloat16, outlier_activations(64, 128, seed=7).bfloat16())
    x = outlier_activations(9, 128, seed=8).bfloat16()
    codes, ascales, lora = quantize_act_fused_ref(x, layer.smooth_factor, layer.proj_down)
    y = gemm_w4a4_ref(codes, ascales, layer.qweight, layer.wscales, lora, layer.proj_up, layer.bias)
    with dispatch_disabled():
        want = layer(x)
    assert y.dtype == torch.bfloat16
    err = (y.float() - want.float()).norm() / want.float().norm()
    assert err < 1e-2, f"relative error {err:.3g}"


class dispatch_disabled:  # noqa: N801 - used as a context manager like a function
    """Force the reference path (what a CPU run without the interpreter gets)."""

    def __enter__(self) -> None:
        self._old = os.environ.get("SVDQUANT_DISABLE_TRITON")
        os.environ["SVDQUANT_DISABLE_TRITON"] = "1"

    def __exit__(self, *exc: object) -> None:
        if self._old is None:
            del os.environ["SVDQUANT_DISABLE_TRITON"]
        else:
            os.environ["SVDQUANT_DISABLE_TRITON"] = self._old


def test_dispatch_picks_the_reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("SVDQUANT_DISABLE_TRITON", raising=False)
    assert not dispatch.use_triton(torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.use_triton(torch.zeros(1)) == HAVE_TRITON
    monkeypatch.setenv("SVDQUANT_DISABLE_TRITON", "1")
    assert not dispatch.use_triton(torch.zeros(1))
    monkeypatch.delenv("SVDQUANT_DISABLE_TRITON")
    # NVFP4 and W4A16 layers have no kernel: the dispatcher hands them back to the reference.
    x = torch.randn(3, 64)
    assert dispatch.fused_forward(_layer(16, 64, torch.float32, None, fmt="nvfp4"), x) is None
    assert dispatch.fused_forward(_layer(16, 64, torch.float32, None, w4a16=True), x) is None


def test_import_svdquant_does_not_import_triton() -> None:
    code = "import sys, svdquant, svdquant.kernels; import svdquant.svdq_linear; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------- Triton kernels (interpreter)

SHAPES = [(1, 64, 16, 16), (7, 128, 40, 0), (33, 128, 40, 16), (7, 64, 16, 48)]
CONFIGS = [
    GemmConfig(block_m=16, block_n=16, num_warps=1, num_stages=1),
    GemmConfig(block_m=16, block_n=32, swap=True, num_warps=1, num_stages=1),
    GemmConfig(block_m=32, block_n=16, swap=True, split_k=2, group_m=2, num_warps=1, num_stages=1),
    # Packed unpacking is CUDA-only PTX; on the interpreter the flag must leave the result unchanged.
    GemmConfig(block_m=16, block_n=32, num_warps=1, num_stages=1, packed_unpack=True),
]


@pytest.mark.kernels
@needs_interpreter
@pytest.mark.parametrize(("m", "k", "n", "r"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_quantize_kernel_matches_reference(m: int, k: int, n: int, r: int, dtype: torch.dtype) -> None:
    from svdquant.kernels.quantize_act import quantize_act_fused

    x, smooth, pd = _act(m, k, r, dtype, seed=m + k + r)
    want = quantize_act_fused_ref(x, smooth, pd)
    # The default launch, then one with wider K blocks and K split across programs (atomic down-projection).
    for launch in ({}, {"block_m": 32, "block_k": k, "split_k": 1}, {"block_k": 64, "split_k": k // 64}):
        got = quantize_act_fused(x, smooth, pd, **launch)
        assert torch.equal(got[0], want[0]), f"codes differ ({launch})"
        assert torch.equal(got[1], want[1]), f"activation scales differ ({launch})"
        assert got[2].shape == (m, r)
        torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)


@pytest.mark.kernels
@needs_interpreter
def test_quantize_kernel_rounds_ties_to_even_and_unsigned() -> None:
    from svdquant.kernels.quantize_act import quantize_act_fused

    # absmax 7 -> scale 1: the values k + 0.5 are exact ties and must round to the even code.
    row = torch.tensor([7.0, -7.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5] + [0.0] * 54)
    x = torch.stack([row, row.abs()]).to(torch.float16)
    one = torch.ones(64, dtype=torch.float16)
    got = quantize_act_fused(x, one, torch.zeros(64, 0, dtype=torch.float16))
    want = quantize_act_fused_ref(x, one, torch.zeros(64, 0, dtype=torch.float16))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    x2, smooth, pd = _act(9, 128, 16, torch.bfloat16, seed=4)
    got = quantize_act_fused(x2, smooth, pd, unsigned=True, shift=0.17)
    want = quantize_act_fused_ref(x2, smooth, pd, unsigned=True, shift=0.17)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.kernels
@needs_interpreter
@pytest.mark.parametrize(("m", "k", "n", "r"), SHAPES)
@pytest.mark.parametrize("unsigned", [False, True])
def test_gemm_integer_part_is_exact(m: int, k: int, n: int, r: int, unsigned: bool) -> None:
    """Power-of-two scales and no branch: every fp32 operation is exact, so the output exposes the int sums."""
    from svdquant.kernels.gemm_w4a4 import gemm_w4a4

    gen = torch.Generator().manual_seed(m * n + k)
    hi = 16 if unsigned else 8
    codes = torch.randint(0 if unsigned else -8, hi, (m, k), generator=gen).to(torch.int8)
    qweight = pack_int4(torch.randint(-8, 8, (n, k), generator=gen).to(torch.int8))
    ascales = (2.0 ** torch.randint(-2, 2, (m, k // 64), generator=gen)).float()
    wscales = (2.0 ** torch.randint(-2, 2, (k // 64, n), generator=gen)).float()
    none = torch.zeros(m, 0)
    want = gemm_w4a4_ref(codes, ascales, qweight, wscales, none, torch.zeros(n, 0), None)
    # Every launch shape: both operand orders, a K split (atomic fp32 sums: exact here, as all are small
    # multiples of powers of two) and a transposed (group-major) scale layout as the quantize kernel writes it.
    for cfg in CONFIGS:
        if (k // 64) % cfg.split_k:
            continue
        got = gemm_w4a4(codes, ascales.T.contiguous().T, qweight, wscales, none, torch.zeros(n, 0), None, config=cfg)
        assert torch.equal(got, want), cfg


@pytest.mark.kernels
@needs_interpreter
@pytest.mark.parametrize(("m", "k", "n", "r"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gemm_kernel_matches_reference(m: int, k: int, n: int, r: int, dtype: torch.dtype) -> None:
    from svdquant.kernels.gemm_w4a4 import gemm_w4a4

    x, smooth, pd = _act(m, k, r, dtype, seed=k + n)
    codes, ascales, lora = quantize_act_fused_ref(x, smooth, pd)
    qw = quantize_weight(torch.randn(n, k, generator=torch.Generator().manual_seed(n)).to(dtype), "int4")
    pu = (torch.randn(n, r) / 4).to(dtype)
    bias = torch.randn(n).to(dtype)
    want = gemm_w4a4_ref(codes, ascales, qw.qweight, qw.wscales, lora, pu, bias)
    for cfg in [None, *CONFIGS]:
        if cfg is not None and (k // 64) % cfg.split_k:
            continue
        got = gemm_w4a4(codes, ascales, qw.qweight, qw.wscales, lora, pu, bias, config=cfg)
        assert got.dtype == dtype and got.shape == (m, n)
        # Same fp32 operations per element (a K split changes the summation order); allow one 16-bit ulp.
        torch.testing.assert_close(got, want, rtol=2**-7, atol=1e-3)


@pytest.mark.kernels
@needs_interpreter
@pytest.mark.parametrize("unsigned", [False, True])
def test_layer_forward_through_kernels(unsigned: bool) -> None:
    k, n = 128, 40
    calib = outlier_activations(64, k, seed=11)
    x = outlier_activations(7, k, seed=12).reshape(7, 1, k)
    if unsigned:
        calib, x = torch.nn.functional.gelu(calib), torch.nn.functional.gelu(x)
    layer = _layer(n, k, torch.float16, calib.half(), act_unsigned=unsigned)
    x = x.half()
    assert dispatch.fused_forward(layer, x) is not None  # the interpreter path was taken
    y = layer(x)
    with dispatch_disabled():
        want = layer(x)
    assert y.shape == want.shape == (7, 1, n)
    err = (y.float() - want.float()).norm() / want.float().norm()
    assert err < 1e-2, f"relative error {err:.3g}"


@pytest.mark.kernels
@needs_interpreter
def test_shared_group_quantizes_its_input_once_through_the_kernels() -> None:
    from test_shared_down import FAST as SHARED_FAST
    from test_shared_down import Block, _data

    from svdquant.quantize import quantize_

    block = Block()
    quantize_(block, SHARED_FAST, calibration=_data())
    shared = block.attn1.to_q.shared_input
    assert shared is not None
    x, text = _data(1, seed=9)[0]
    with dispatch_disabled():
        want = block(x, text)
    before = shared.act_computed
    h = block.norm1(x)
    h[..., :2] *= 30.0
    ys = [block.get_submodule(n)(h) for n in ("attn1.to_q", "attn1.to_k", "attn1.to_v")]
    assert shared.act_computed == before + 1  # one fused quantize + down-projection for q, k and v
    assert dispatch.fused_forward(block.attn1.to_q, h) is not None  # the kernel path was the one taken
    with dispatch_disabled():
        for n, y in zip(("attn1.to_q", "attn1.to_k", "attn1.to_v"), ys, strict=True):
            ref = block.get_submodule(n)(h.clone())
            assert (y - ref).norm() / ref.norm() < 1e-4, n
    got = block(x, text)
    assert (got - want).norm() / want.norm() < 1e-4
