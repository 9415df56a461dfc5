"""KV4/KV8 per-token per-head quantization (QServe Sec. 4.2): packing, rounding rule, error bound, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qserve.errors import ConfigError, InputError
from qserve.quant.kv import KVQuantizer, pack_u4, unpack_u4


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_pack_unpack_round_trip(values: list[int]) -> None:
    codes = torch.tensor(values, dtype=torch.uint8)
    packed = pack_u4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (len(values) // 2,)
    assert torch.equal(unpack_u4(packed), codes)
    # low nibble holds the even channel
    assert int(packed[0]) == values[0] + 16 * values[1]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([4, 8]),
    st.floats(1e-3, 1e3),
    st.floats(-100.0, 100.0),
)
def test_error_bound(seed: int, bits: int, spread: float, offset: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 2, 5, 16, generator=g) * spread + offset
    kvq = KVQuantizer(bits)
    codes, scales, zeros = kvq.quantize(x)
    assert scales.dtype == zeros.dtype == torch.float16 and scales.shape == (3, 2, 5)
    assert codes.shape == ((3, 2, 5, 8) if bits == 4 else (3, 2, 5, 16))
    x_hat = kvq.dequantize(codes, scales, zeros)
    bound = scales.float() / 2 + 2**-9 * x.abs().amax(-1) + kvq.levels * 2**-25
    assert bool(((x - x_hat).abs().amax(-1) <= bound).all())


def test_exact_rule_and_code_round_trip() -> None:
    x = torch.tensor([[0.0, 1.5, 3.0, 7.5, 15.0, 2.2]])
    kvq = KVQuantizer(4)
    codes, scales, zeros = kvq.quantize(x)
    assert float(scales) == 1.0 and float(zeros) == 0.0
    # 2.2 -> 2, 7.5 -> 8 (half to even), 1.5 -> 2
    assert unpack_u4(codes).tolist() == [[0, 2, 3, 8, 15, 2]]
    x_hat = kvq.dequantize(codes, scales, zeros)
    assert x_hat.tolist() == [[0.0, 2.0, 3.0, 8.0, 15.0, 2.0]]
    # re-quantizing a dequantized tensor gives back the same codes (the grid is a fixed point)
    again = kvq.quantize(x_hat)
    assert torch.equal(again.codes, codes) and torch.equal(again.scales, scales)


def test_constant_vector_and_dtypes() -> None:
    kvq = KVQuantizer(4)
    x = torch.full((2, 8), 3.25, dtype=torch.bfloat16)
    codes, scales, zeros = kvq.quantize(x)
    assert bool((scales == 0).all()) and bool((unpack_u4(codes) == 0).all())
    y = kvq.fake(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, x)


def test_kv16_identity_and_bytes() -> None:
    x = torch.randn(4, 2, 8)
    assert KVQuantizer(16).fake(x) is x
    assert KVQuantizer(4).bytes_per_token_head(128) == 68
    assert KVQuantizer(8).bytes_per_token_head(128) == 132
    assert KVQuantizer(16).bytes_per_token_head(128) == 256


def test_errors() -> None:
    with pytest.raises(ConfigError, match="4, 8 or 16"):
        KVQuantizer(3)
    kvq = KVQuantizer(4)
    for bad in (float("nan"), float("inf")):
        x = torch.zeros(2, 8)
        x[1, 3] = bad
        with pytest.raises(InputError, match="finite"):
            kvq.quantize(x)
    with pytest.raises(InputError, match="even head_dim"):
        kvq.quantize(torch.zeros(2, 7))
    with pytest.raises(InputError, match="float"):
        kvq.quantize(torch.zeros(2, 8, dtype=torch.int32))
    with pytest.raises(InputError, match=r"\[0, 15\]"):
        pack_u4(torch.tensor([0, 16]))
    with pytest.raises(InputError, match="scales/zeros"):
        kvq.dequantize(torch.zeros(2, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.float16), torch.zeros(3))
