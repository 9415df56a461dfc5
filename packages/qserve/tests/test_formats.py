"""QoQ formats (QServe Sec. 4.1, 5.2): protective range, progressive g128, per-channel W4, W8, A8, GEMM."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qserve.errors import CheckpointError, InputError
from qserve.quant.formats import (
    PROTECTIVE_RANGE,
    W4A8Weight,
    dequantize_weight,
    fake_quantize_activation,
    protective_range,
    quantize_activation,
    quantize_w4_channel,
    quantize_w4_g128,
    quantize_w8_channel,
    w4a8_matmul_ref,
    weight_from_tensors,
)
from qserve.quant.kv import unpack_u4
from qserve.quant.w4a8_linear import W4A8Linear


def test_protective_range_is_119() -> None:
    assert protective_range() == PROTECTIVE_RANGE == 119


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 1e2))
def test_g128_exact_integer_semantics(seed: int, spread: float) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 256, generator=g) * spread
    w[0, 5] *= 30  # an outlier: its group gets a large integer scale
    w[1, :128] = w[1, :128].abs()  # an all-positive group
    q = quantize_w4_g128(w)
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (8, 128)
    assert q.s2_scales.dtype == torch.uint8 and q.s2_scales.shape == (2, 8)
    assert q.s2_zeros.dtype == torch.int8 and q.s1_scales.dtype == torch.float16
    # reproduce level 0 and level 1 by hand, in integers
    s0 = q.s1_scales.float()
    q8 = torch.round(w / s0[:, None]).clamp(-119, 119).long()
    assert int(q8.abs().max()) == 119
    q8_hat = q.int8_weight().long()
    q4 = unpack_u4(q.qweight).long()
    s1 = q.s2_scales.long().t().repeat_interleave(128, 1)
    zs = q.s2_zeros.long().t().repeat_interleave(128, 1)
    assert torch.equal(q8_hat, q4 * s1 + zs)
    assert int(q8_hat.min()) >= -128 and int(q8_hat.max()) <= 127
    # level-1 error is at most half a group step
    assert bool(((q8_hat - q8).abs() * 2 <= s1).all())
    w_hat = dequantize_weight(q)
    assert torch.equal(w_hat, q8_hat.float() * s0[:, None])


def test_g128_clip_ratio_shrinks_scale() -> None:
    w = torch.randn(4, 128)
    full = quantize_w4_g128(w)
    clipped = quantize_w4_g128(w, clip_ratio=torch.full((4, 1), 0.8))
    assert bool((clipped.s2_scales <= full.s2_scales).all())
    assert bool((clipped.s2_scales < full.s2_scales).any())


def test_channel_w4_and_w8() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 64, generator=g)
    q = quantize_w4_channel(w)
    s = q.s1_scales.float()
    w_hat = dequantize_weight(q)
    z = torch.round(q.s1_szeros.float() / s)
    assert bool((z >= 0).all() and (z <= 15).all())
    assert bool(((w - w_hat).abs() <= s[:, None] * 0.51 + 1e-3 * s[:, None]).all())
    q8 = quantize_w8_channel(w)
    assert q8.qweight.dtype == torch.int8 and int(q8.qweight.abs().max()) == 127
    assert bool(((w - dequantize_weight(q8)).abs() <= q8.s1_scales.float()[:, None] * 0.5 + 1e-6).all())


def test_activation_quant() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 127.0], [0.0, 0.0, 0.0, 0.0]])
    qa, a_scale = quantize_activation(x)
    assert a_scale.dtype == torch.float16 and a_scale.tolist() == [1.0, 0.0]
    assert qa.tolist() == [[1, -2, 0, 127], [0, 0, 0, 0]]  # 0.5 rounds half to even
    assert fake_quantize_activation(x)[1].abs().sum() == 0


@pytest.mark.parametrize("kind", ["g128", "channel", "w8"])
def test_gemm_definition(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 256, generator=g)
    x = torch.randn(5, 256, generator=g) * 3
    bias = torch.randn(16, generator=g)
    weight = {"g128": quantize_w4_g128, "channel": quantize_w4_channel, "w8": quantize_w8_channel}[kind](w)
    qa, a_scale = quantize_activation(x)
    y = w4a8_matmul_ref(qa, a_scale, weight, bias, torch.float32)
    # the same product on dequantized operands, in float64: equal up to fp32 rounding
    y64 = (qa.double() * a_scale.double()[:, None]) @ dequantize_weight(weight, torch.float64).t() + bias.double()
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-4)
    assert y.dtype == torch.float32
    assert w4a8_matmul_ref(qa, a_scale, weight, None, torch.float16).dtype == torch.float16
    if kind != "w8":  # bit-identical with the kernels' reference (same integer sums, same fp32 epilogue)
        from qserve.kernels.w4a8_gemm import w4a8_gemm_ref

        t = weight.tensors()
        other = w4a8_gemm_ref(
            qa,
            a_scale,
            t["qweight"],
            t["s1_scales"],
            t.get("s2_scales"),
            t.get("s2_zeros"),
            bias,
            torch.float32,
            t.get("s1_szeros"),
        )
        assert torch.equal(y, other)
    # and close to the float product
    rel = float((y - (x @ w.t() + bias)).norm() / (x @ w.t()).norm())
    assert rel < {"g128": 0.15, "channel": 0.25, "w8": 0.02}[kind]


def test_gemm_integer_accumulator_is_exact() -> None:
    # a sum that float32 could not hold exactly: 2**24 + 1 must survive into acc
    w = torch.zeros(1, 256)
    w[0, :] = 1.0
    q = quantize_w4_g128(w)
    qa = torch.full((1, 256), 127, dtype=torch.int8)
    acc = q.int8_weight().double() @ qa.double().t()
    y = w4a8_matmul_ref(qa, torch.ones(1, dtype=torch.float16), q, None, torch.float64)
    assert float(y) == pytest.approx(float(acc) * float(q.s1_scales), rel=1e-7)


def test_errors() -> None:
    with pytest.raises(InputError, match="multiple of the group size"):
        quantize_w4_g128(torch.randn(4, 96))
    w = torch.randn(4, 128)
    w[2, 2] = float("nan")
    with pytest.raises(InputError, match="finite"):
        quantize_w4_g128(w)
    with pytest.raises(InputError, match="finite"):
        quantize_activation(torch.tensor([[float("inf")]]))
    q = quantize_w4_g128(torch.randn(4, 128))
    with pytest.raises(InputError, match="int8"):
        w4a8_matmul_ref(torch.zeros(2, 128), torch.ones(2, dtype=torch.float16), q)
    with pytest.raises(InputError, match="clip_ratio"):
        quantize_w4_g128(torch.randn(4, 128), clip_ratio=torch.ones(4))


def test_weight_from_tensors() -> None:
    q = quantize_w4_g128(torch.randn(4, 256))
    back = weight_from_tensors(q.tensors())
    assert isinstance(back, W4A8Weight) and torch.equal(back.int8_weight(), q.int8_weight())
    for f in (quantize_w4_channel, quantize_w8_channel):
        qq = f(torch.randn(4, 128))
        assert type(weight_from_tensors(qq.tensors())) is type(qq)
    bad = dict(q.tensors(), s2_zeros=q.s2_zeros.to(torch.int16))
    with pytest.raises(CheckpointError, match="s2_zeros"):
        weight_from_tensors(bad)
    with pytest.raises(CheckpointError, match="unknown"):
        weight_from_tensors({"qweight": q.qweight})


@pytest.mark.kernels
@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET", "") != "1",
    reason="Triton kernel tests run under TRITON_INTERPRET=1 (nox -s kernels)",
)
@pytest.mark.parametrize("group", [128, -1])
def test_w4a8_linear_triton_path_matches_reference(group: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lin = torch.nn.Linear(256, 32)
    layer = W4A8Linear.from_linear(lin, group)
    x = torch.randn(3, 256)
    got = layer(x)  # Triton (interpreter) through qserve.kernels.dispatch
    monkeypatch.setenv("QSERVE_DISABLE_TRITON", "1")
    want = layer(x)  # the reference of qserve.quant.formats
    assert torch.equal(got, want)
