"""QServe's kernels (Lin et al., arXiv 2405.04532, Sec. 5): the W4A8 GEMM and paged KV4 decode attention.

Unmarked tests check the PyTorch references against naive dequantize-then-float computations and the dispatch on the
CPU. Tests marked ``kernels`` run the Triton kernels under ``TRITON_INTERPRET=1``: the GEMM must match its reference
bit for bit (its integer part is exact and its fp32 epilogue does the same operations), the attention up to
summation order.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch
from kernel_helpers import quantize_kv, quantize_weight_g128, quantize_weight_per_channel
from torch import nn

from qserve.errors import InputError
from qserve.kernels import dispatch
from qserve.kernels.kv4_attention import AttentionConfig, paged_decode_attention_ref
from qserve.kernels.w4a8_gemm import W4A8Config, dequantize_int8_weight, w4a8_gemm_ref, w4a8_integer_sums
from qserve.quant.formats import quantize_activation, quantize_w4_g128, w4a8_matmul_ref
from qserve.quant.kv import KVQuantizer

HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"
needs_interpreter = pytest.mark.skipif(
    not (HAVE_TRITON and INTERPRET), reason="Triton kernel tests run under TRITON_INTERPRET=1 (nox -s kernels)"
)


def _gemm_inputs(m: int, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Heavy-tailed weights and activations with a zero row (scale 0) exercise the clamps and the zero range.
    w = torch.randn(n, k, generator=gen) * torch.logspace(-1, 0.5, k)[torch.randperm(k, generator=gen)]
    x = torch.randn(m, k, generator=gen) * 3
    x[0] = 0.0
    return w, x, torch.randn(n, generator=gen)


# --------------------------------------------------------------------------------- references (CPU, unmarked)


def test_gemm_reference_is_the_integer_definition() -> None:
    m, n, k = 9, 48, 256
    w, x, bias = _gemm_inputs(m, n, k, seed=1)
    qweight, s1, s2, z2, q8_hat = quantize_weight_g128(w)
    qa, a_scale = quantize_activation(x)
    assert torch.equal(dequantize_int8_weight(qweight, s2, z2).float(), q8_hat)
    sums = w4a8_integer_sums(qa, qweight, s2, z2)
    assert sums.dtype == torch.int32 and torch.equal(sums.long(), qa.long() @ q8_hat.long().T)
    y = w4a8_gemm_ref(qa, a_scale, qweight, s1, s2, z2, bias, torch.float32)
    # Naive: dequantize both operands to float64 and multiply.
    naive = (qa.double() * a_scale.double()[:, None]) @ (q8_hat.double() * s1.double()[:, None]).T + bias.double()
    torch.testing.assert_close(y.double(), naive, rtol=1e-6, atol=1e-6 * float(naive.abs().max()))
    assert torch.equal(y[0], bias)  # the all-zero token: scale 0, only the bias remains
    # The quantizer of qserve.quant.formats writes the same format, and its GEMM agrees up to fp32 rounding.
    q = quantize_w4_g128(w)
    y2 = w4a8_gemm_ref(qa, a_scale, q.qweight, q.s1_scales, q.s2_scales, q.s2_zeros, bias, torch.float32)
    torch.testing.assert_close(y2, w4a8_matmul_ref(qa, a_scale, q, bias, torch.float32), rtol=1e-6, atol=1e-4)


def test_gemm_reference_per_channel_removes_the_zero_with_row_sums() -> None:
    m, n, k = 5, 32, 96  # the per-channel variant has no group: K needs no multiple of 128
    w, x, _ = _gemm_inputs(m, n, k, seed=2)
    qweight, s1, szeros, q4 = quantize_weight_per_channel(w)
    qa, a_scale = quantize_activation(x)
    y = w4a8_gemm_ref(qa, a_scale, qweight, s1, None, None, None, torch.float32, s1_szeros=szeros)
    z = torch.round(szeros.float() / s1.float())
    w_hat = (q4.double() - z.double()[:, None]) * s1.double()[:, None]
    naive = (qa.double() * a_scale.double()[:, None]) @ w_hat.T
    torch.testing.assert_close(y.double(), naive, rtol=1e-6, atol=1e-6 * float(naive.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gemm_reference_rounds_once_to_the_output_dtype(dtype: torch.dtype) -> None:
    w, x, bias = _gemm_inputs(7, 32, 128, seed=3)
    qweight, s1, s2, z2, _ = quantize_weight_g128(w)
    qa, a_scale = quantize_activation(x)
    y32 = w4a8_gemm_ref(qa, a_scale, qweight, s1, s2, z2, bias, torch.float32)
    y = w4a8_gemm_ref(qa, a_scale, qweight, s1, s2, z2, bias, dtype)
    assert y.dtype == dtype and torch.equal(y, y32.to(dtype))
    assert w4a8_gemm_ref(qa, a_scale, qweight, s1, s2, z2).dtype == a_scale.dtype  # default: a_scale's dtype


def _bad_gemm_args() -> list[tuple[str, dict[str, object]]]:
    w, x, bias = _gemm_inputs(3, 16, 128, seed=4)
    qweight, s1, s2, z2, _ = quantize_weight_g128(w)
    qa, a_scale = quantize_activation(x)
    good: dict[str, object] = {
        "qa": qa, "a_scale": a_scale, "qweight": qweight, "s1_scales": s1, "s2_scales": s2, "s2_zeros": z2,
    }  # fmt: skip
    return [
        ("qa must be 2-D int8", {**good, "qa": qa.float()}),
        ("qweight must be [N, K/2]", {**good, "qweight": qweight[:, :32]}),
        ("qweight must be 2-D uint8", {**good, "qweight": qweight.to(torch.int8)}),
        ("a_scale must be", {**good, "a_scale": a_scale[:2]}),
        ("s1_scales must be", {**good, "s1_scales": s1[:3]}),
        ("s2_scales must be uint8", {**good, "s2_scales": s2.to(torch.int16)}),
        ("s2_zeros must be int8", {**good, "s2_zeros": z2[:, :4]}),
        ("needs s2_scales and s2_zeros", {**good, "s2_zeros": None}),
        ("either s1_szeros", {**good, "s1_szeros": s1}),
        ("bias must have shape", {**good, "bias": bias[:3]}),
        ("multiple of the group size", {**good, "qa": qa[:, :64], "qweight": qweight[:, :32]}),
    ]


@pytest.mark.parametrize(("message", "args"), _bad_gemm_args())
def test_gemm_reference_rejects_bad_inputs(message: str, args: dict[str, object]) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        w4a8_gemm_ref(**args)  # type: ignore[arg-type]


def test_int8_weight_outside_the_protective_range_is_an_error() -> None:
    qweight = torch.full((4, 64), 0xFF, dtype=torch.uint8)  # every code 15
    s2 = torch.full((1, 4), 16, dtype=torch.uint8)  # 15 * 16 = 240 > 127
    with pytest.raises(InputError, match="protective range"):
        dequantize_int8_weight(qweight, s2, torch.zeros(1, 4, dtype=torch.int8))


def _paged(
    lens: list[int], hq: int, hkv: int, d: int, page: int, bits: int, dtype: torch.dtype, seed: int
) -> tuple[
    torch.Tensor, tuple[torch.Tensor | None, ...], torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]
]:
    """q, the cache tensors of one layer, block tables, context lengths and the dense K/V ``[B, L, Hkv, D]``."""
    gen = torch.Generator().manual_seed(seed)
    b = len(lens)
    per_seq = -(-max(lens) // page)
    n_pages = b * per_seq + 3  # spare pages that no sequence owns
    k = torch.randn(n_pages, page, hkv, d, generator=gen) * 2 + 0.5
    v = torch.randn(n_pages, page, hkv, d, generator=gen)
    k[0, 0, 0] = 1.0  # a constant vector: scale 0, codes 0
    table = torch.randperm(n_pages, generator=gen)[: b * per_seq].reshape(b, per_seq).int()
    q = torch.randn(b, hq, d, generator=gen).to(dtype)
    if bits == 16:
        cache: tuple[torch.Tensor | None, ...] = (k.to(dtype), None, None, v.to(dtype), None, None)
    else:
        cache = (*quantize_kv(k, bits), *quantize_kv(v, bits))
    dense_k = k[table.long()].flatten(1, 2)  # [B, per_seq * page, Hkv, D]
    dense_v = v[table.long()].flatten(1, 2)
    return q, cache, table, torch.tensor(lens, dtype=torch.int32), (dense_k, dense_v)


def _naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: list[int], scale: float, bits: int
) -> torch.Tensor:
    """Quantize-dequantize the dense K/V with qserve.quant.kv, then per-sequence float64 attention."""
    out = []
    for i, n in enumerate(lens):
        kk, vv = k[i, :n], v[i, :n]  # [L, Hkv, D]
        if bits != 16:
            kk, vv = KVQuantizer(bits).fake(kk), KVQuantizer(bits).fake(vv)
        kk, vv = kk.to(q.dtype).double(), vv.to(q.dtype).double()
        rep = q.shape[1] // kk.shape[1]
        kk, vv = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
        p = torch.softmax(torch.einsum("hd,lhd->hl", q[i].double(), kk) * scale, dim=-1)
        out.append(torch.einsum("hl,lhd->hd", p, vv))
    return torch.stack(out)


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize(("hq", "hkv", "d", "page"), [(4, 4, 32, 4), (8, 4, 64, 16), (8, 2, 32, 16)])
def test_attention_reference_matches_naive(bits: int, hq: int, hkv: int, d: int, page: int) -> None:
    lens = [1, page, 2 * page + 3, 37]  # one token, exactly one page, partly filled last pages
    q, cache, table, cl, (k, v) = _paged(lens, hq, hkv, d, page, bits, torch.float32, seed=bits + d)
    got = paged_decode_attention_ref(q, *cache, table, cl, 0.3, bits)  # type: ignore[arg-type]
    want = _naive_attention(q, k, v, lens, 0.3, bits)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_attention_reference_ignores_pages_past_the_context() -> None:
    lens = [5, 9]
    q, cache, table, cl, _ = _paged(lens, 4, 2, 32, 4, 4, torch.float32, seed=5)
    want = paged_decode_attention_ref(q, *cache, table, cl, 0.2)  # type: ignore[arg-type]
    poisoned = [t.clone() if t is not None else None for t in cache]
    for i, n in enumerate(lens):  # overwrite the unused slots of the last page and the pages after it
        last = table[i, (n - 1) // 4].long()
        for t in poisoned:
            assert t is not None
            t[last, (n - 1) % 4 + 1 :] = t[last, (n - 1) % 4 + 1 :].flip(0) + 1
            t[table[i, (n - 1) // 4 + 1 :].long()] = 7
    got = paged_decode_attention_ref(q, *poisoned, table, cl, 0.2)  # type: ignore[arg-type]
    assert torch.equal(got, want)


def test_attention_reference_rejects_bad_inputs() -> None:
    q, cache, table, cl, _ = _paged([3, 6], 4, 2, 32, 4, 4, torch.float32, seed=6)
    kc, ks, kz, vc, vs, vz = cache
    with pytest.raises(InputError, match="kv_bits"):
        paged_decode_attention_ref(q, *cache, table, cl, 0.1, kv_bits=3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="last dim 32"):
        paged_decode_attention_ref(q, *cache, table, cl, 0.1, kv_bits=8)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="k_scales"):
        paged_decode_attention_ref(q, kc, None, kz, vc, vs, vz, table, cl, 0.1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="block_tables must be int32"):
        paged_decode_attention_ref(q, *cache, table.long(), cl, 0.1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="context_lens must be int32"):
        paged_decode_attention_ref(q, *cache, table, cl[:1], 0.1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="multiple of the"):
        paged_decode_attention_ref(q[:, :3], *cache, table, cl, 0.1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"context_lens\[1\] must be in \[1, 8\]"):
        paged_decode_attention_ref(q, *cache, table, torch.tensor([3, 9], dtype=torch.int32), 0.1)  # type: ignore[arg-type]


class _FakeW4A8Linear(nn.Module):
    """The tensors a quantized linear holds (the engine's key names)."""

    def __init__(self, w: torch.Tensor, bias: torch.Tensor | None, per_channel: bool) -> None:
        super().__init__()
        if per_channel:
            qweight, s1, szeros, _ = quantize_weight_per_channel(w)
            self.register_buffer("s1_szeros", szeros)
        else:
            qweight, s1, s2, z2, _ = quantize_weight_g128(w)
            self.register_buffer("s2_scales", s2)
            self.register_buffer("s2_zeros", z2)
        self.register_buffer("qweight", qweight)
        self.register_buffer("s1_scales", s1)
        self.register_buffer("bias", bias)


class dispatch_disabled:  # noqa: N801 - used as a context manager like a function
    """Force the reference path (what a CPU run without the interpreter gets)."""

    def __enter__(self) -> None:
        self._old = os.environ.get("QSERVE_DISABLE_TRITON")
        os.environ["QSERVE_DISABLE_TRITON"] = "1"

    def __exit__(self, *exc: object) -> None:
        if self._old is None:
            del os.environ["QSERVE_DISABLE_TRITON"]
        else:
            os.environ["QSERVE_DISABLE_TRITON"] = self._old


def test_dispatch_picks_the_reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("QSERVE_DISABLE_TRITON", raising=False)
    assert not dispatch.use_triton(torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.use_triton(torch.zeros(1)) == HAVE_TRITON
    monkeypatch.setenv("QSERVE_DISABLE_TRITON", "1")
    assert not dispatch.use_triton(torch.zeros(1))


@pytest.mark.parametrize("per_channel", [False, True])
def test_w4a8_linear_is_quantize_then_gemm(per_channel: bool) -> None:
    _, x, bias = _gemm_inputs(6, 24, 128, seed=7)
    w = torch.randn(24, 128, generator=torch.Generator().manual_seed(7))  # no outlier columns (QoQ removes them)
    layer = _FakeW4A8Linear(w, bias.half(), per_channel)
    x3 = x.reshape(2, 3, 128).half()
    with dispatch_disabled():
        y = dispatch.w4a8_linear(x3, layer)
    qa, a_scale = quantize_activation(x3.reshape(6, 128))
    s2, z2 = getattr(layer, "s2_scales", None), getattr(layer, "s2_zeros", None)
    want = w4a8_gemm_ref(qa, a_scale, layer.qweight, layer.s1_scales, s2, z2, layer.bias, torch.float16,
                         getattr(layer, "s1_szeros", None))  # fmt: skip
    assert y.shape == (2, 3, 24) and y.dtype == torch.float16 and torch.equal(y.reshape(6, 24), want)
    # And close to the float layer it approximates (4-bit weights, 8-bit activations).
    dense = x3.float() @ w.T + bias.half().float()
    err = float((y.float() - dense).norm() / dense.norm())
    assert err < (0.15 if per_channel else 0.1), err
    with pytest.raises(InputError, match=r"inputs \[\.\.\., 128\]"):
        dispatch.w4a8_linear(x3[..., :64], layer)


def test_dispatch_attention_accepts_int64_tables_on_the_reference_path() -> None:
    q, cache, table, cl, _ = _paged([3, 6], 4, 2, 32, 4, 4, torch.float32, seed=8)
    want = paged_decode_attention_ref(q, *cache, table, cl, 0.1)  # type: ignore[arg-type]
    with dispatch_disabled():
        got = dispatch.paged_decode_attention(q, *cache, table.long(), cl.long(), 0.1)  # type: ignore[arg-type]
    assert torch.equal(got, want)


def test_import_qserve_kernels_does_not_import_triton() -> None:
    code = "import sys, qserve, qserve.kernels; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------- Triton kernels (interpreter)

GEMM_SHAPES = [(1, 48, 128), (7, 80, 256), (33, 16, 384), (64, 32, 256)]
GEMM_CONFIGS = [
    W4A8Config(block_m=16, block_n=16, num_warps=1, num_stages=1),
    W4A8Config(block_m=16, block_n=32, swap=True, num_warps=1, num_stages=1),
    W4A8Config(block_m=32, block_n=16, swap=True, split_k=2, group_m=2, num_warps=1, num_stages=1),
    W4A8Config(block_m=16, block_n=16, split_k=3, num_warps=1, num_stages=1),
    # Packed dequantization is CUDA-only PTX; on the interpreter the flag must leave the result unchanged.
    W4A8Config(block_m=16, block_n=32, num_warps=1, num_stages=1, packed_dequant=True),
]


@pytest.mark.kernels
@needs_interpreter
@pytest.mark.parametrize(("m", "n", "k"), GEMM_SHAPES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_gemm_kernel_is_bit_exact(m: int, n: int, k: int, per_channel: bool) -> None:
    from qserve.kernels.w4a8_gemm import w4a8_gemm

    w, x, bias = _gemm_inputs(m, n, k, seed=m * n + k)
    qa, a_scale = quantize_activation(x)
    if per_channel:
        qweight, s1, szeros, _ = quantize_weight_per_channel(w)
        wargs: tuple[torch.Tensor | None, ...] = (qweight, s1, None, None)
    else:
        qweight, s1, s2, z2, _ = quantize_weight_g128(w)
        wargs, szeros = (qweight, s1, s2, z2), None
    # Every launch config in fp32, the default one for the 16-bit outputs (rounded once, to nearest even).
    for dtype, b, cfgs in (
        (torch.float32, bias, [None, *GEMM_CONFIGS]),
        (torch.float16, None, [None]),
        (torch.bfloat16, bias.bfloat16(), [None]),
    ):
        want = w4a8_gemm_ref(qa, a_scale, *wargs, b, dtype, szeros)  # type: ignore[arg-type]
        for cfg in cfgs:
            if cfg is not None and (k // 128) % cfg.split_k:
                continue
            got = w4a8_gemm(qa, a_scale, *wargs, b, dtype, szeros, config=cfg)  # type: ignore[arg-type]
            assert got.dtype == dtype and got.shape == (m, n)
            assert torch.equal(got, want), (dtype, cfg)


@pytest.mark.kernels
@needs_interpreter
def test_gemm_kernel_rejects_bad_launches() -> None:
    from qserve.kernels.w4a8_gemm import w4a8_gemm

    w, x, _ = _gemm_inputs(3, 16, 256, seed=9)
    qa, a_scale = quantize_activation(x)
    qweight, s1, s2, z2, _ = quantize_weight_g128(w)
    with pytest.raises(InputError, match="split_k=3 must divide the 2 K steps"):
        w4a8_gemm(qa, a_scale, qweight, s1, s2, z2, config=W4A8Config(split_k=3))
    with pytest.raises(InputError, match="block_n must be a power of two"):
        w4a8_gemm(qa, a_scale, qweight, s1, s2, z2, config=W4A8Config(block_n=24))
    with pytest.raises(InputError, match="swap=False"):
        w4a8_gemm(qa, a_scale, qweight, s1, s2, z2, config=W4A8Config(swap=True, packed_dequant=True))
    with pytest.raises(InputError, match="4 weight bytes per thread"):
        w4a8_gemm(qa, a_scale, qweight, s1, s2, z2, config=W4A8Config(block_n=16, num_warps=16, packed_dequant=True))
    with pytest.raises(InputError, match="qa must be 2-D int8"):
        w4a8_gemm(qa.float(), a_scale, qweight, s1, s2, z2)  # type: ignore[arg-type]


ATTN_CASES = [  # (lens, Hq, Hkv, D, page): GQA ratios 1, 2, 4; pages of 4 and 16; head_dim 32 and 64
    ([1, 13, 37], 2, 2, 32, 4),
    ([16, 45], 4, 2, 64, 16),
    ([50, 2], 4, 1, 32, 16),
    ([9, 33], 8, 2, 64, 4),
]


def _check_attention_kernel(
    lens: list[int], hq: int, hkv: int, d: int, page: int, bits: int, dtype: torch.dtype
) -> None:
    from qserve.kernels.kv4_attention import paged_decode_attention

    q, cache, table, cl, _ = _paged(lens, hq, hkv, d, page, bits, dtype, seed=hq + d + page)
    scale = d**-0.5
    want = paged_decode_attention_ref(q, *cache, table, cl, scale, bits)  # type: ignore[arg-type]
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    # One split over the context, then three (partial outputs merged by log-sum-exp; some splits are empty).
    for cfg in (AttentionConfig(block_t=16, num_splits=1), AttentionConfig(block_t=32, num_splits=3)):
        got = paged_decode_attention(q, *cache, table, cl, scale, bits, config=cfg)  # type: ignore[arg-type]
        assert got.dtype == dtype and got.shape == q.shape
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.kernels
@needs_interpreter
@pytest.mark.parametrize(("lens", "hq", "hkv", "d", "page"), ATTN_CASES)
@pytest.mark.parametrize("bits", [4, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attention_kernel_matches_reference(
    lens: list[int], hq: int, hkv: int, d: int, page: int, bits: int, dtype: torch.dtype
) -> None:
    _check_attention_kernel(lens, hq, hkv, d, page, bits, dtype)


@pytest.mark.kernels
@needs_interpreter
def test_attention_kernel_kv8() -> None:
    _check_attention_kernel(*ATTN_CASES[3], bits=8, dtype=torch.float16)  # type: ignore[arg-type]


@pytest.mark.kernels
@needs_interpreter
def test_dispatch_runs_the_kernels_under_the_interpreter() -> None:
    from qserve.kernels.kv4_attention import paged_decode_attention

    q, cache, table, cl, _ = _paged([7, 20], 8, 2, 32, 4, 4, torch.float32, seed=10)
    got = dispatch.paged_decode_attention(q, *cache, table, cl, 0.2)  # type: ignore[arg-type]
    assert torch.equal(got, paged_decode_attention(q, *cache, table, cl, 0.2))  # type: ignore[arg-type]
    w, x, bias = _gemm_inputs(5, 32, 128, seed=11)
    layer = _FakeW4A8Linear(w, bias, per_channel=False)
    y = dispatch.w4a8_linear(x, layer)
    with dispatch_disabled():
        assert torch.equal(y, dispatch.w4a8_linear(x, layer))
    with pytest.raises(InputError, match="block_t must be a power of two"):
        paged_decode_attention(q, *cache, table, cl, 0.2, config=AttentionConfig(block_t=24))  # type: ignore[arg-type]
