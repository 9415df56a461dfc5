"""SVDQLinear (SVDQuant, Li et al., ICLR 2025, Sec. 4.2): stored buffers, the reference forward, from_linear."""

from __future__ import annotations

import pytest
import torch
from sq_testing import outlier_activations, rtn_int4, snr_db, structured_weight
from torch import nn

from svdquant.config import SVDQuantConfig
from svdquant.errors import InputError
from svdquant.formats import fake_quantize_activation
from svdquant.svdq_linear import SVDQLinear

FAST = SVDQuantConfig(rank=16, svd="randomized", lowrank_iters=10, num_grids=8)


def _linear(n: int, k: int, seed: int = 4, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(structured_weight(n, k, seed=seed))
        if bias:
            lin.bias.normal_(generator=torch.Generator().manual_seed(seed))
    return lin.requires_grad_(False)


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_buffers_follow_the_contract(fmt: str) -> None:
    lin = _linear(96, 128)
    x = outlier_activations(256, 128, seed=1)
    layer = SVDQLinear.from_linear(lin, x, FAST.model_copy(update={"fmt": fmt}))
    g = 64 if fmt == "int4" else 16
    sd = layer.state_dict()
    expected = {"qweight", "wscales", "smooth_factor", "proj_down", "proj_up", "bias"}
    assert set(sd) == (expected | {"wtscale"} if fmt == "nvfp4" else expected)
    assert sd["qweight"].dtype == torch.uint8 and sd["qweight"].shape == (96, 64)
    assert sd["wscales"].shape == (128 // g, 96)
    assert sd["wscales"].dtype == (torch.float32 if fmt == "int4" else torch.float8_e4m3fn)
    assert sd["proj_down"].shape == (128, 16) and sd["proj_up"].shape == (96, 16)
    assert layer.rank == 16 and layer.group_size == g and layer.fmt == fmt
    assert not torch.equal(layer.smooth_factor, torch.ones(128))  # the search moved the outliers


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_forward_is_the_documented_formula(fmt: str) -> None:
    lin = _linear(64, 128)
    layer = SVDQLinear.from_linear(lin, outlier_activations(128, 128, seed=2), FAST.model_copy(update={"fmt": fmt}))
    x = outlier_activations(7, 128, seed=9).reshape(7, 1, 128)
    s = layer.smooth_factor
    w = layer.dequantized_weight()
    main = fake_quantize_activation(x / s, fmt, layer.group_size) @ w.T  # type: ignore[arg-type]
    want = main + (x @ layer.proj_down) @ layer.proj_up.T + layer.bias
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-4)


def test_forward_reads_the_rank_from_the_buffers() -> None:
    layer = SVDQLinear.from_linear(_linear(64, 128), None, FAST)
    x = torch.randn(5, 128)
    before = layer(x)
    # A LoRA merge concatenates along the rank: extra zero columns must not change the output.
    layer.proj_down = torch.cat([layer.proj_down, torch.randn(128, 4)], dim=1)
    layer.proj_up = torch.cat([layer.proj_up, torch.zeros(64, 4)], dim=1)
    assert layer.rank == 20
    torch.testing.assert_close(layer(x), before)


def test_without_calibration_no_smoothing() -> None:
    layer = SVDQLinear.from_linear(_linear(64, 128), None, FAST)
    assert torch.equal(layer.smooth_factor, torch.ones(128))
    x = torch.randn(32, 128)
    assert snr_db(_linear(64, 128)(x), layer(x)) > 15.0


def test_beats_rtn_w4a4_on_outliers() -> None:
    lin = _linear(128, 256)
    x = outlier_activations(256, 256, seed=3)
    ref = lin(x)
    layer = SVDQLinear.from_linear(lin, x, SVDQuantConfig(rank=32, svd="randomized", lowrank_iters=20))
    rtn = rtn_int4(x) @ rtn_int4(lin.weight).T + lin.bias
    svdq, w4a16 = snr_db(ref, layer(x)), snr_db(ref, x @ rtn_int4(lin.weight).T + lin.bias)
    assert svdq > snr_db(ref, rtn) + 10.0, svdq
    assert svdq > w4a16 - 3.0, (svdq, w4a16)


def test_unsigned_post_gelu_inputs() -> None:
    lin = _linear(64, 128, bias=False)
    x = nn.functional.gelu(outlier_activations(256, 128, seed=5) / 4)
    cfg = FAST.model_copy(update={"unsigned_act": ("*",)})
    layer = SVDQLinear.from_linear(lin, x, cfg, name="fc2")
    assert layer.act_unsigned and layer.act_shift is not None
    assert float(layer.act_shift) == pytest.approx(-float(x.min()))
    # The shift's contribution is removed exactly: compare with the formula.
    c, s, w = layer.act_shift, layer.smooth_factor, layer.dequantized_weight()
    xq = fake_quantize_activation((x + c) / s, "int4", 64, unsigned=True)
    want = xq @ w.T - (c / s) @ w.T + (x @ layer.proj_down) @ layer.proj_up.T
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-4)
    signed = SVDQLinear.from_linear(lin, x, FAST, name="other")
    assert not signed.act_unsigned
    assert snr_db(lin(x), layer(x)) > snr_db(lin(x), signed(x))


def test_w4a16_keeps_activations_in_16_bits() -> None:
    lin = _linear(64, 128)
    layer = SVDQLinear.from_linear(lin, None, FAST.model_copy(update={"w4a16": ("*",)}), name="adaLN")
    assert layer.w4a16
    x = torch.randn(4, 128)
    want = x @ layer.dequantized_weight().T + (x @ layer.proj_down) @ layer.proj_up.T + layer.bias
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)


def test_bf16_layer() -> None:
    lin = _linear(64, 128).to(torch.bfloat16)
    x = outlier_activations(64, 128, seed=6).to(torch.bfloat16)
    layer = SVDQLinear.from_linear(lin, x, FAST)
    assert layer.wscales.dtype == layer.proj_down.dtype == layer.smooth_factor.dtype == torch.bfloat16
    y = layer(x)
    assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
    assert snr_db(lin(x).float(), y.float()) > 15.0


def test_empty_constructor_shapes() -> None:
    e = SVDQLinear(128, 48, 8, fmt="nvfp4", bias=False, wcscales=True, dtype=torch.float16)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in e.state_dict().items()}
    assert shapes == {
        "qweight": ((48, 64), torch.uint8),
        "wscales": ((8, 48), torch.float8_e4m3fn),
        "wtscale": ((1,), torch.float32),
        "wcscales": ((48,), torch.float16),
        "smooth_factor": ((128,), torch.float16),
        "proj_down": ((128, 8), torch.float16),
        "proj_up": ((48, 8), torch.float16),
    }


def test_bad_inputs_are_refused_clearly() -> None:
    with pytest.raises(InputError, match="needs an nn.Linear, found Conv1d"):
        SVDQLinear.from_linear(nn.Conv1d(4, 4, 1), None, FAST, name="conv")
    with pytest.raises(InputError, match=r"'blocks.0.fc'.*in_features=96.*group size 64"):
        SVDQLinear.from_linear(nn.Linear(96, 32), None, FAST, name="blocks.0.fc")
    with pytest.raises(InputError, match=r"rank 16 exceeds min\(out_features, in_features\) = min\(8, 64\)"):
        SVDQLinear.from_linear(nn.Linear(64, 8), None, FAST)
    lin = _linear(32, 64)
    lin.weight[3, 5] = float("nan")
    with pytest.raises(InputError, match=r"'w'.*weight must be finite.*NaN"):
        SVDQLinear.from_linear(lin, None, FAST, name="w")
    x = torch.randn(16, 64)
    x[2, 1] = float("inf")
    with pytest.raises(InputError, match="calibration inputs must be finite"):
        SVDQLinear.from_linear(_linear(32, 64), x, FAST)
    with pytest.raises(InputError, match=r"expects inputs \[\.\.\., 64\]"):
        SVDQLinear.from_linear(_linear(32, 64), None, FAST)(torch.randn(2, 65))
