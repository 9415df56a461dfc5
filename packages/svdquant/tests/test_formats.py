"""The 4-bit formats: nibble packing, INT4 and NVFP4 rounding rules, error bounds, stored weights, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from svdquant.errors import CheckpointError, InputError
from svdquant.formats import (
    E2M1_VALUES,
    Int4Tensor,
    NVFP4Tensor,
    QuantizedWeight,
    dequantize_activation,
    dequantize_int4,
    dequantize_nvfp4,
    e2m1_codes,
    e2m1_decode,
    fake_quantize_activation,
    fake_quantize_weight,
    pack_int4,
    quantize_activation,
    quantize_int4,
    quantize_nvfp4,
    quantize_weight,
    unpack_int4,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def snr_db(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    return 10 * math.log10(float(x.square().sum() / (x - y).square().sum()))


def e4m3_positive_values() -> torch.Tensor:
    """Every finite non-negative float8_e4m3fn value, built from the bit layout (bias 7, no infinities,
    S.1111.111 is NaN), independently of torch's float8 support."""
    vals = [m * 2.0**-9 for m in range(8)]  # zero and subnormals
    vals += [(1 + m / 8) * 2.0 ** (e - 7) for e in range(1, 16) for m in range(8) if (e, m) != (15, 7)]
    return torch.tensor(vals, dtype=torch.float64)


def e4m3_round_reference(v: torch.Tensor) -> torch.Tensor:
    """Round non-negative values to the nearest E4M3 value, ties to the even mantissa, saturating at 448."""
    grid = e4m3_positive_values()
    v = v.double().clamp(max=448.0)
    idx = torch.searchsorted(grid, v).clamp(max=len(grid) - 1)
    hi = grid[idx]
    lo = grid[(idx - 1).clamp(min=0)]
    d_lo, d_hi = v - lo, hi - v
    # Index parity equals mantissa parity: consecutive grid entries alternate the mantissa's last bit.
    tie_up = (d_lo == d_hi) & (idx % 2 == 0)
    return torch.where((d_hi < d_lo) | tie_up, hi, lo)


# ------------------------------------------------------------------------------------------- packing


@settings(max_examples=60, deadline=None)
@given(
    lead=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    half_k=st.integers(1, 19),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pack_unpack_round_trip(lead: list[int], half_k: int, signed: bool, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shape = (*lead, 2 * half_k)
    if signed:
        q = torch.randint(-8, 8, shape, generator=gen).to(torch.int8)
    else:
        q = torch.randint(0, 16, shape, generator=gen).to(torch.uint8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (*lead, half_k)
    back = unpack_int4(packed, signed=signed)
    assert back.dtype == q.dtype and torch.equal(back, q)
    # Low nibble holds the even index, high nibble the odd one.
    assert torch.equal(packed & 0x0F, q[..., 0::2].to(torch.uint8) & 0x0F)
    assert torch.equal(packed >> 4, q[..., 1::2].to(torch.uint8) & 0x0F)


def test_pack_all_sixteen_codes_bit_exact() -> None:
    signed = torch.arange(-8, 8, dtype=torch.int8)
    packed = pack_int4(signed)
    # Pairs (-8,-7), (-6,-5), ...: two's complement nibbles 8|9<<4 = 0x98, 0xBA, 0xDC, 0xFE, 0x10, ...
    assert packed.tolist() == [0x98, 0xBA, 0xDC, 0xFE, 0x10, 0x32, 0x54, 0x76]
    assert torch.equal(unpack_int4(packed), signed)
    unsigned = torch.arange(16, dtype=torch.uint8)
    assert pack_int4(unsigned).tolist() == [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]
    assert torch.equal(unpack_int4(pack_int4(unsigned), signed=False), unsigned)
    every_byte = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    assert torch.equal(pack_int4(unpack_int4(every_byte)), every_byte)
    assert torch.equal(pack_int4(unpack_int4(every_byte, signed=False)), every_byte)


def test_pack_errors() -> None:
    with pytest.raises(InputError, match="even"):
        pack_int4(torch.zeros(3, 5, dtype=torch.int8))
    with pytest.raises(InputError, match=r"\[-8, 7\]"):
        pack_int4(torch.tensor([8, 0], dtype=torch.int8))
    with pytest.raises(InputError, match=r"\[0, 15\]"):
        pack_int4(torch.tensor([16, 0], dtype=torch.uint8))
    with pytest.raises(InputError, match="int8"):
        pack_int4(torch.zeros(2, dtype=torch.int32))
    with pytest.raises(InputError, match="uint8"):
        unpack_int4(torch.zeros(2, dtype=torch.int8))


# ---------------------------------------------------------------------------------------------- INT4


def test_int4_integer_group_maps_exactly_and_ties_to_even() -> None:
    ints = torch.tensor([-7, -3, 0, 1, 2, 5, 6, 7] * 8, dtype=torch.float32)
    t = quantize_int4(ints.unsqueeze(0), 64)
    assert t.scales.tolist() == [[1.0]]
    assert torch.equal(unpack_int4(t.packed)[0], ints.to(torch.int8))
    assert torch.equal(dequantize_int4(t)[0], ints)
    # absmax 7 -> scale 1; halves round to the even integer.
    x = torch.tensor([[7.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]])
    codes = unpack_int4(quantize_int4(x, 8).packed)
    assert codes.tolist() == [[7, 0, 2, 2, 0, -2, -2, 4]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_int4_error_bound_and_code_range(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(7, 3, 256, generator=gen) * torch.rand(7, 3, 1, generator=gen) * 5).to(dtype)
    t = quantize_int4(x, 64)
    assert t.scales.dtype == dtype and t.scales.shape == (7, 3, 4)
    codes = unpack_int4(t.packed)
    # scale = absmax/7: the code -8 is never used, the extreme code is +-7 in every group.
    assert int(codes.min()) >= -7 and int(codes.max()) <= 7
    assert torch.equal(codes.reshape(7, 3, 4, 64).abs().amax(-1), torch.full((7, 3, 4), 7, dtype=torch.int8))
    deq = dequantize_int4(t, torch.float32)
    err = (x.float() - deq).abs().reshape(7, 3, 4, 64)
    bound = t.scales.float().unsqueeze(-1) / 2
    assert bool((err <= bound * (1 + 1e-6)).all())
    assert torch.allclose(t.scales.float(), (x.float().reshape(7, 3, 4, 64).abs().amax(-1) / 7).to(dtype).float())


def test_int4_zero_group_and_tiny_group() -> None:
    x = torch.zeros(2, 128)
    x[0, 64:] = torch.linspace(-1, 1, 64)
    x[1, :64] = 1e-30  # absmax / 7 underflows nothing in fp32: a real scale
    t = quantize_int4(x, 64)
    assert t.scales[0, 0] == 0 and t.scales[1, 1] == 0
    deq = dequantize_int4(t)
    assert torch.isfinite(deq).all()
    assert torch.equal(deq[0, :64], torch.zeros(64)) and torch.equal(deq[1, 64:], torch.zeros(64))
    assert torch.allclose(deq[1, :64], x[1, :64])
    # fp16: 1e-7 / 7 underflows the fp16 scale to 0 -> codes 0, exact zeros, no NaN.
    h = torch.full((1, 64), 1e-7, dtype=torch.float16)
    th = quantize_int4(h, 64)
    assert th.scales.item() == 0 and torch.equal(dequantize_int4(th), torch.zeros(1, 64, dtype=torch.float16))
    # A subnormal fp16 scale is coarse: -1e-6 / 1.19e-7 = -8.4, the documented case where the clamp gives -8.
    sub = quantize_int4(torch.full((1, 64), -1e-6, dtype=torch.float16), 64)
    assert 0 < sub.scales.item() < 6.1e-5 and bool((unpack_int4(sub.packed) == -8).all())


def test_int4_unsigned_activation_path() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.nn.functional.gelu(torch.randn(5, 3, 128, generator=gen)) + 0.17  # shifted post-GELU
    t = quantize_activation(x, "int4", 64, unsigned=True)
    assert isinstance(t, Int4Tensor) and t.unsigned
    codes = unpack_int4(t.packed, signed=False)
    assert codes.dtype == torch.uint8 and int(codes.max()) == 15
    assert torch.allclose(t.scales, x.reshape(5, 3, 2, 64).amax(-1) / 15)
    deq = dequantize_activation(t)
    assert bool(((x - deq).abs().reshape(5, 3, 2, 64) <= t.scales.unsqueeze(-1) / 2 * (1 + 1e-6)).all())
    assert torch.equal(fake_quantize_activation(x, "int4", 64, unsigned=True), deq)
    # Unsigned uses all 16 levels: error about half that of the signed path on non-negative data.
    assert snr_db(x, deq) > snr_db(x, fake_quantize_activation(x, "int4", 64)) + 4
    exact = torch.arange(16, dtype=torch.float32).repeat(4).unsqueeze(0)
    assert torch.equal(fake_quantize_activation(exact, "int4", 64, unsigned=True), exact)
    below = torch.tensor([[-0.01] + [1.0] * 63])  # a value under the calibrated shift clamps to code 0
    assert unpack_int4(quantize_int4(below, 64, unsigned=True).packed, signed=False)[0, 0] == 0
    # The scale comes from the largest non-negative value, not from a larger negative outlier.
    below[0, 0] = -5.0
    assert quantize_int4(below, 64, unsigned=True).scales.item() == pytest.approx(1 / 15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_dtypes_shapes_and_fake_equals_real(dtype: torch.dtype, fmt: str) -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(24, 192, generator=gen).to(dtype)
    g = 64 if fmt == "int4" else 16
    fq = fake_quantize_weight(w, fmt, g)  # type: ignore[arg-type]
    assert fq.shape == w.shape and fq.dtype == dtype and torch.isfinite(fq).all()
    q = quantize_weight(w, fmt)  # type: ignore[arg-type]
    assert torch.equal(q.dequantize(), fq)
    # Activations with odd leading dims: per token, the same as quantizing the flattened rows.
    x = torch.randn(3, 5, 7, 192, generator=gen).to(dtype)
    fa = fake_quantize_activation(x, fmt, g)  # type: ignore[arg-type]
    assert fa.shape == x.shape and fa.dtype == dtype
    assert torch.equal(fa.reshape(-1, 192), fake_quantize_activation(x.reshape(-1, 192), fmt, g))  # type: ignore[arg-type]
    assert torch.equal(fa[1, 2], fake_quantize_activation(x[1, 2], fmt, g))  # type: ignore[arg-type]
    qa = quantize_activation(x, fmt, g)  # type: ignore[arg-type]
    assert torch.equal(dequantize_activation(qa, dtype), fa)


def test_snr_on_gaussian_weights() -> None:
    w = torch.randn(256, 1024, generator=torch.Generator().manual_seed(4))
    int4 = snr_db(w, fake_quantize_weight(w, "int4", 64))
    nvfp4 = snr_db(w, fake_quantize_weight(w, "nvfp4", 16))
    # Uniform noise of step absmax/7 (~0.35 sigma at g64) gives ~19.5 dB; NVFP4 g16 is close to it.
    assert 17.0 < int4 < 21.0, int4
    assert 17.0 < nvfp4 < 22.0, nvfp4
    assert 17.0 < snr_db(w, fake_quantize_activation(w, "nvfp4", 16)) < 22.0


# --------------------------------------------------------------------------------------------- NVFP4


def test_e2m1_grid_points_map_to_themselves_and_ties_to_even() -> None:
    grid = torch.tensor(E2M1_VALUES)
    codes = e2m1_codes(torch.cat([grid, -grid[1:]]))
    assert codes.tolist() == list(range(8)) + list(range(9, 16))
    assert torch.equal(e2m1_decode(codes), torch.cat([grid, -grid[1:]]))
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    expect = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0])
    assert torch.equal(e2m1_decode(e2m1_codes(ties)), expect)
    assert torch.equal(e2m1_decode(e2m1_codes(-ties)), -expect)
    near = torch.tensor([0.26, 0.74, 2.49, 2.51, 4.99, 5.01, 6.5, 100.0, -0.2])
    assert e2m1_decode(e2m1_codes(near)).tolist() == [0.5, 0.5, 2.0, 3.0, 4.0, 6.0, 6.0, 6.0, 0.0]
    assert e2m1_codes(torch.tensor([-0.1])).item() == 0  # zero is never encoded as -0


def test_nvfp4_grid_block_is_exact() -> None:
    vals = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES))  # 16 values, amax 6
    x = torch.stack([vals, vals * 0.5, vals * 2.0**-6])
    t = quantize_nvfp4(x, 16, tensor_scale=1.0)
    assert t.block_scales.float().tolist() == [[1.0], [0.5], [2.0**-6]]
    assert torch.equal(dequantize_nvfp4(t), x)
    single = quantize_nvfp4(x, 16, two_level=False)
    assert single.tensor_scale is None and torch.equal(dequantize_nvfp4(single), x)
    # Single level: a block whose amax/6 passes 448 takes the largest E4M3 scale and saturates at 6 * 448.
    big = quantize_nvfp4(torch.full((1, 16), 6000.0), 16, two_level=False)
    assert big.block_scales.float().item() == 448.0
    assert torch.equal(dequantize_nvfp4(big), torch.full((1, 16), 2688.0))


def test_torch_e4m3_cast_matches_independent_rounding() -> None:
    grid = e4m3_positive_values()
    mids = (grid[1:] + grid[:-1]) / 2
    rnd = torch.rand(4000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    samples = torch.cat([grid, mids, 2.0 ** (rnd * 20 - 11), torch.tensor([447.9, 448.0, 460.0, 470.0])])
    samples = samples.float().double()  # values the fp32 scale computation can produce
    torch_cast = samples.float().to(torch.float8_e4m3fn).double()
    assert torch.equal(torch_cast, e4m3_round_reference(samples))


def test_nvfp4_block_scales_follow_e4m3_rounding() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(16, 256, generator=gen) * torch.logspace(-3, 1, 16).unsqueeze(1)
    t = quantize_nvfp4(x, 16)
    assert t.block_scales.dtype == torch.float8_e4m3fn and t.block_scales.shape == (16, 16)
    ts = x.abs().amax() / (448 * 6)
    assert t.tensor_scale is not None and t.tensor_scale.dtype == torch.float32
    assert torch.equal(t.tensor_scale, ts.reshape(1))
    want = e4m3_round_reference(((x.reshape(16, 16, 16).abs().amax(-1) / 6) / ts).double())
    assert torch.equal(t.block_scales.double(), want)
    assert t.block_scales.float().max() == 448.0  # the largest block uses the top of the E4M3 range


@pytest.mark.parametrize("two_level", [True, False])
def test_nvfp4_error_bound(two_level: bool) -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(9, 128, generator=gen) * 3
    t = quantize_nvfp4(x, 16, two_level=two_level)
    s = t.block_scales.float() * (t.tensor_scale if t.tensor_scale is not None else torch.ones(1))
    s = s.unsqueeze(-1)
    v = x.reshape(9, 8, 16) / s  # scaled values; |v| may pass 6 a little because the scale was rounded
    deq = dequantize_nvfp4(t).reshape(9, 8, 16) / s
    half_gap = torch.where(v.abs() <= 2, 0.25, torch.where(v.abs() <= 4, 0.5, 1.0))
    bound = half_gap + (v.abs() - 6).clamp(min=0)
    assert bool(((v - deq).abs() <= bound + 1e-5).all())


def test_nvfp4_zero_tensor_and_zero_block() -> None:
    t = quantize_nvfp4(torch.zeros(2, 32))
    assert t.tensor_scale is not None and t.tensor_scale.item() == 1.0
    assert torch.equal(dequantize_nvfp4(t), torch.zeros(2, 32))
    x = torch.zeros(1, 32)
    x[0, 16:] = 1.0
    t2 = quantize_nvfp4(x)
    assert t2.block_scales[0, 0].float() == 0 and torch.equal(dequantize_nvfp4(t2), x)


# -------------------------------------------------------------------------------------- stored weight


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_quantized_weight_round_trip(fmt: str, dtype: torch.dtype) -> None:
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(8)).to(dtype)
    q = quantize_weight(w, fmt)  # type: ignore[arg-type]
    tensors = q.to_tensors()
    g = 64 if fmt == "int4" else 16
    assert tensors["qweight"].dtype == torch.uint8 and tensors["qweight"].shape == (48, 64)
    assert tensors["wscales"].shape == (128 // g, 48)  # Nunchaku layout: one row per K group
    assert q.group_size == g and q.in_features == 128 and q.out_features == 48
    if fmt == "int4":
        assert set(tensors) == {"qweight", "wscales"} and tensors["wscales"].dtype == dtype
    else:
        assert set(tensors) == {"qweight", "wscales", "wtscale"}
        assert tensors["wscales"].dtype == torch.float8_e4m3fn and tensors["wtscale"].shape == (1,)
    back = QuantizedWeight.from_tensors({k: v.clone() for k, v in tensors.items()}, dtype=dtype)
    assert back.fmt == fmt and back.dtype == dtype
    for k, v in back.to_tensors().items():
        assert v.dtype == tensors[k].dtype and torch.equal(v.view(torch.uint8), tensors[k].view(torch.uint8))
    assert torch.equal(back.dequantize(), q.dequantize())
    with pytest.raises(AttributeError):
        q.fmt = "nvfp4"  # type: ignore[misc]


def test_nvfp4_wcscales_scale_output_rows() -> None:
    w = torch.randn(4, 32, generator=torch.Generator().manual_seed(9))
    q = quantize_weight(w, "nvfp4")
    c = torch.tensor([1.0, 2.0, 0.5, -1.0])
    tensors = {**q.to_tensors(), "wcscales": c}
    qc = QuantizedWeight.from_tensors(tensors)
    assert qc.dtype == torch.float32
    assert torch.equal(qc.dequantize(), q.dequantize() * c.unsqueeze(1))
    assert set(qc.to_tensors()) == {"qweight", "wscales", "wtscale", "wcscales"}


def test_from_tensors_errors() -> None:
    q = quantize_weight(torch.randn(8, 128), "int4").to_tensors()
    with pytest.raises(CheckpointError, match="wscales"):
        QuantizedWeight.from_tensors({"qweight": q["qweight"]})
    with pytest.raises(CheckpointError, match="unexpected"):
        QuantizedWeight.from_tensors({**q, "wtscale": torch.ones(1)})
    with pytest.raises(CheckpointError, match="wscales"):
        QuantizedWeight.from_tensors({**q, "wscales": q["wscales"][:, :4]})
    with pytest.raises(CheckpointError, match="qweight"):
        QuantizedWeight.from_tensors({**q, "qweight": q["qweight"].view(torch.int8)})
    f = quantize_weight(torch.randn(8, 128), "nvfp4").to_tensors()
    with pytest.raises(CheckpointError, match="wtscale"):
        QuantizedWeight.from_tensors({"qweight": f["qweight"], "wscales": f["wscales"]})
    with pytest.raises(CheckpointError, match="wcscales"):
        QuantizedWeight.from_tensors({**f, "wcscales": torch.ones(3)})


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_bad_inputs(fmt: str) -> None:
    x = torch.randn(4, 64)
    for bad, word in ((float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")):
        y = x.clone()
        y[1, 3] = bad
        with pytest.raises(InputError, match=word):
            fake_quantize_weight(y, fmt, 16)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=word):
            quantize_activation(y, fmt, 16)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="K=64.*multiple of the group size 48"):
        fake_quantize_weight(x, fmt, 48)  # type: ignore[arg-type]
    for g in (0, -16, True):
        with pytest.raises(InputError, match="group size"):
            fake_quantize_activation(x, fmt, g)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="2-D"):
        quantize_weight(torch.randn(2, 4, 64), fmt)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="floating-point"):
        fake_quantize_weight(torch.ones(4, 64, dtype=torch.int32), fmt, 16)  # type: ignore[arg-type]


def test_other_errors() -> None:
    x = torch.randn(2, 64)
    with pytest.raises(InputError, match="format"):
        fake_quantize_weight(x, "int8", 64)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="INT4 only"):
        fake_quantize_activation(x, "nvfp4", 16, unsigned=True)
    with pytest.raises(InputError, match="INT4 only"):
        quantize_activation(x, "nvfp4", 16, unsigned=True)
    with pytest.raises(InputError, match="overflows"):
        quantize_int4(torch.full((1, 64), 1e6), 64, scale_dtype=torch.float16)
    with pytest.raises(InputError, match="tensor_scale"):
        quantize_nvfp4(x, tensor_scale=0.0)
    with pytest.raises(InputError, match="tensor_scale"):
        quantize_nvfp4(x, tensor_scale=1.0, two_level=False)
    with pytest.raises(InputError, match="do not fit"):
        dequantize_nvfp4(
            NVFP4Tensor(torch.zeros(2, 16, dtype=torch.uint8), torch.zeros(2, 3).to(torch.float8_e4m3fn), None)
        )
