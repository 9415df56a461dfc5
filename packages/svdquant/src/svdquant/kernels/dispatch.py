"""Choose the Triton kernels or the PyTorch reference for SVDQuant's W4A4 layer (Li et al., ICLR 2025, Sec. 4.3).

:func:`use_triton` is True for a CUDA tensor when Triton is importable, and False when ``SVDQUANT_DISABLE_TRITON=1``.
``TRITON_INTERPRET=1`` also selects Triton for CPU tensors (the interpreter), which is how the CPU tests run the
kernels. Triton is imported lazily, only when a kernel is about to run, so ``import svdquant`` never imports it and
the package works without it (reference path).

Only the INT4 path has kernels: NVFP4 layers and weight-only (W4A16) layers stay on the reference path for now.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from svdquant.svdq_linear import SVDQLinear

__all__ = ["fused_forward", "quantize_act", "use_triton", "w4a4_gemm"]

_KERNEL_GROUPS = (64, 128, 256)  # int8 dots need K >= 32 per half group


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(t: Tensor) -> bool:
    """Whether the Triton kernels should run on ``t``'s device (see the module docstring)."""
    if os.environ.get("SVDQUANT_DISABLE_TRITON", "") == "1" or not _triton_available():
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET", "") == "1"


def quantize_act(
    x: Tensor,
    smooth: Tensor,
    proj_down: Tensor,
    group_size: int = 64,
    unsigned: bool = False,
    shift: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """INT4 activation quantization fused with the down-projection: ``(codes, ascales, lora_act)``.

    Triton when :func:`use_triton` and the group size suits the kernel, else
    :func:`svdquant.kernels.quantize_act.quantize_act_fused_ref`.
    """
    if use_triton(x) and group_size in _KERNEL_GROUPS:
        from svdquant.kernels.quantize_act import quantize_act_fused

        return quantize_act_fused(x, smooth, proj_down, group_size, unsigned, shift)
    from svdquant.kernels.quantize_act import quantize_act_fused_ref

    return quantize_act_fused_ref(x, smooth, proj_down, group_size, unsigned, shift)


def w4a4_gemm(
    codes: Tensor,
    ascales: Tensor,
    qweight: Tensor,
    wscales: Tensor,
    lora_act: Tensor,
    proj_up: Tensor,
    bias: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """INT4 W4A4 GEMM with the low-rank up-projection and bias: Triton or
    :func:`svdquant.kernels.gemm_w4a4.gemm_w4a4_ref`."""
    group = codes.shape[-1] // max(int(ascales.shape[-1]), 1)
    if use_triton(codes) and group in _KERNEL_GROUPS:
        from svdquant.kernels.gemm_w4a4 import gemm_w4a4

        return gemm_w4a4(codes, ascales, qweight, wscales, lora_act, proj_up, bias, out_dtype)
    from svdquant.kernels.gemm_w4a4 import gemm_w4a4_ref

    return gemm_w4a4_ref(codes, ascales, qweight, wscales, lora_act, proj_up, bias, out_dtype)


def _shifted_bias(layer: SVDQLinear, shift: float) -> Tensor:
    """``bias - (shift / smooth) W^T`` in fp32, cached on the layer: dequantizing the weight costs a full pass over
    it, so it is redone only when a tensor it depends on changed (in place: version counter; replaced: identity)."""
    deps = (layer.qweight, layer.wscales, layer.smooth_factor, layer.bias)
    key = (shift, *((id(t), t._version) if t is not None else None for t in deps))
    cached = getattr(layer, "_shifted_bias_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    correction = (shift / layer.smooth_factor.float()) @ layer.dequantized_weight().float().T
    bias = -correction if layer.bias is None else layer.bias.float() - correction
    layer._shifted_bias_cache = (key, bias)  # type: ignore[assignment]  # plain attribute: not saved
    return bias


def fused_forward(layer: SVDQLinear, x: Tensor) -> Tensor | None:
    """The kernel forward of an INT4 W4A4 ``layer`` on ``x [..., K]``, or None where the reference must run
    (no Triton for this device, NVFP4, W4A16, a group size the kernel lacks, or ``x``'s dtype not the layer's).

    An unsigned layer's shift is removed through the bias: ``bias - ((c / s) W^T)``, as the engine folds it.
    """
    if layer.fmt != "int4" or layer.w4a16 or layer.group_size not in _KERNEL_GROUPS or x.dtype != layer.dtype:
        return None
    if not use_triton(x):
        return None
    lead = x.shape[:-1]
    x2 = x.reshape(-1, layer.in_features)
    shift = float(layer.act_shift) if layer.act_shift is not None else 0.0

    def compute() -> tuple[Tensor, Tensor, Tensor]:
        return quantize_act(x2, layer.smooth_factor, layer.proj_down, layer.group_size, layer.act_unsigned, shift)

    # Members of a shared-input group (q/k/v) quantize the common input and project it down once.
    shared = getattr(layer, "shared_input", None)
    codes, ascales, lora_act = shared.kernel_inputs(layer, x, compute) if shared is not None else compute()
    bias: Tensor | None = layer.bias
    if shift != 0.0:
        bias = _shifted_bias(layer, shift)
    y = w4a4_gemm(codes, ascales, layer.qweight, layer.wscales, lora_act, layer.proj_up, bias, x.dtype)
    return y.reshape(*lead, layer.out_features)
