"""Choose the Triton kernels or the PyTorch references for QServe's W4A8 GEMM and KV4 decode attention.

Lin et al., "QServe" (arXiv 2405.04532), Sec. 5. :func:`use_triton` is True for a CUDA tensor when Triton is
importable, and False when ``QSERVE_DISABLE_TRITON=1``. ``TRITON_INTERPRET=1`` also selects Triton for CPU tensors
(the interpreter), which is how the CPU tests run the kernels. Triton is imported lazily, only when a kernel is about
to run, so ``import qserve`` never imports it and the package works without it (reference path).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch
from torch import Tensor, nn

from qserve.errors import InputError

__all__ = ["paged_decode_attention", "use_triton", "w4a8_gemm", "w4a8_linear"]


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(t: Tensor) -> bool:
    """Whether the Triton kernels should run on ``t``'s device (see the module docstring)."""
    if os.environ.get("QSERVE_DISABLE_TRITON", "") == "1" or not _triton_available():
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET", "") == "1"


def w4a8_gemm(
    qa: Tensor,
    a_scale: Tensor,
    qweight: Tensor,
    s1_scales: Tensor,
    s2_scales: Tensor | None,
    s2_zeros: Tensor | None,
    bias: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    s1_szeros: Tensor | None = None,
) -> Tensor:
    """W4A8 GEMM: Triton (:func:`qserve.kernels.w4a8_gemm.w4a8_gemm`) when :func:`use_triton` and K is a multiple
    of 128, else the reference :func:`qserve.kernels.w4a8_gemm.w4a8_gemm_ref`. Both give the same result."""
    from qserve.kernels.w4a8_gemm import GROUP_SIZE, w4a8_gemm_ref
    from qserve.kernels.w4a8_gemm import w4a8_gemm as kernel

    if use_triton(qa) and qa.dim() == 2 and qa.shape[1] % GROUP_SIZE == 0:
        return kernel(qa, a_scale, qweight, s1_scales, s2_scales, s2_zeros, bias, out_dtype, s1_szeros)
    return w4a8_gemm_ref(qa, a_scale, qweight, s1_scales, s2_scales, s2_zeros, bias, out_dtype, s1_szeros)


def w4a8_linear(x: Tensor, layer: nn.Module) -> Tensor:
    """The W4A8 forward of a quantized linear ``layer`` on ``x [..., K]`` -> ``[..., N]`` in ``x``'s dtype:
    per-token INT8 quantization of ``x``, then :func:`w4a8_gemm` with the layer's ``qweight``, ``s1_scales``,
    ``s2_scales``/``s2_zeros`` (g128) or ``s1_szeros`` (per channel) and ``bias``."""
    from qserve.quant.formats import quantize_activation

    qweight: Tensor = layer.qweight  # type: ignore[assignment]
    s1: Tensor = layer.s1_scales  # type: ignore[assignment]
    s2: Tensor | None = getattr(layer, "s2_scales", None)
    z2: Tensor | None = getattr(layer, "s2_zeros", None)
    szeros: Tensor | None = getattr(layer, "s1_szeros", None)
    bias: Tensor | None = getattr(layer, "bias", None)
    k = int(qweight.shape[1]) * 2
    if x.shape[-1] != k:
        raise InputError(f"w4a8_linear expects inputs [..., {k}], found {tuple(x.shape)}")
    lead = x.shape[:-1]
    qa, a_scale = quantize_activation(x.reshape(-1, k))
    y = w4a8_gemm(qa, a_scale, qweight, s1, s2, z2, bias, x.dtype, szeros)
    return y.reshape(*lead, int(qweight.shape[0]))


def paged_decode_attention(
    q: Tensor,
    k_codes: Tensor,
    k_scales: Tensor | None,
    k_zeros: Tensor | None,
    v_codes: Tensor,
    v_scales: Tensor | None,
    v_zeros: Tensor | None,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float,
    kv_bits: int = 4,
    **launch: Any,
) -> Tensor:
    """Paged decode attention ``[B, Hq, D]``: Triton (:func:`qserve.kernels.kv4_attention.paged_decode_attention`)
    when :func:`use_triton` and the head dim is a power of two >= 16, else the reference. Integer block tables and
    context lengths of another integer dtype are converted to int32."""
    from qserve.kernels.kv4_attention import paged_decode_attention as kernel
    from qserve.kernels.kv4_attention import paged_decode_attention_ref

    if block_tables.dtype != torch.int32 and not block_tables.is_floating_point():
        block_tables = block_tables.to(torch.int32)
    if context_lens.dtype != torch.int32 and not context_lens.is_floating_point():
        context_lens = context_lens.to(torch.int32)
    d = int(q.shape[-1])
    args = (q, k_codes, k_scales, k_zeros, v_codes, v_scales, v_zeros, block_tables, context_lens, scale, kv_bits)
    if use_triton(q) and d >= 16 and d & (d - 1) == 0 and q.dtype in (torch.float16, torch.bfloat16, torch.float32):
        return kernel(*args, **launch)
    return paged_decode_attention_ref(*args)
