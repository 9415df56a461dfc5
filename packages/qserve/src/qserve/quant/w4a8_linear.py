"""Drop-in W4A8 and W8A8 linear layers: per-token INT8 activations times stored W4 (or W8) weights.

Lin et al., "QServe" (arXiv 2405.04532), Sec. 4 (the W4A8 layer) and Sec. 5.2 (the GEMM). The layers keep the
engine's tensor names as buffers (``qweight``, ``s1_scales``, ``s2_scales``/``s2_zeros`` or ``s1_szeros``,
``bias``), so a quantized model's ``state_dict`` is the checkpoint. ``forward`` quantizes the input per token
and calls the Triton kernel through :mod:`qserve.kernels.dispatch` when that module says it can run, and the
exact PyTorch reference :func:`~qserve.quant.formats.w4a8_matmul_ref` otherwise.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import nn

from qserve.errors import InputError
from qserve.quant.formats import (
    W4A8ChannelWeight,
    W4A8Weight,
    W8A8Weight,
    WeightFormat,
    quantize_activation,
    quantize_w4_channel,
    quantize_w4_g128,
    quantize_w8_channel,
    w4a8_matmul_ref,
)

__all__ = ["QuantLinear", "W4A8Linear", "W8A8Linear", "quant_linear_from_state"]


@cache
def _kernel_dispatch() -> Any:
    """The module ``qserve.kernels.dispatch`` if it imports, else None (then only the reference path runs)."""
    try:
        return importlib.import_module("qserve.kernels.dispatch")
    except ImportError:
        return None


def _triton_forward(x: torch.Tensor, layer: nn.Module) -> torch.Tensor | None:
    """The Triton W4A8 path (``dispatch.w4a8_linear(x, layer)``) when the dispatcher picks Triton for ``x``."""
    mod = _kernel_dispatch()
    if mod is None or not isinstance(layer, W4A8Linear) or not mod.use_triton(x):
        return None
    y: torch.Tensor = mod.w4a8_linear(x, layer)
    return y


class QuantLinear(nn.Module, abc.ABC):
    """Shared forward of the quantized linears; subclasses define the stored weight format."""

    in_features: int
    out_features: int
    qweight: torch.Tensor
    s1_scales: torch.Tensor
    bias: torch.Tensor | None

    @abc.abstractmethod
    def weight_format(self) -> WeightFormat:
        """The stored weight as its format container (W4A8Weight, W4A8ChannelWeight or W8A8Weight)."""

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> QuantLinear:
        # model.half() / model.to(bf16) must not touch the integer codes or the fp16 scales: only devices change.
        for name, buf in self._buffers.items():
            if buf is None:
                continue
            new = fn(buf)
            if name != "bias" and new.dtype != buf.dtype:
                new = buf.to(new.device)
            self._buffers[name] = new
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise InputError(f"expected input [..., {self.in_features}], found {tuple(x.shape)}")
        y = _triton_forward(x, self)
        if y is not None:
            return y
        lead = x.shape[:-1]
        qa, a_scale = quantize_activation(x.reshape(-1, self.in_features))  # [M, K] int8, [M] fp16
        y = w4a8_matmul_ref(qa, a_scale, self.weight_format(), self.bias, x.dtype)
        return y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class W4A8Linear(QuantLinear):
    """W4A8 linear; ``group`` 128 (progressive, :class:`W4A8Weight`) or -1 (per-channel, :class:`W4A8ChannelWeight`).

    Construct empty (for loading a state dict) or with :meth:`from_linear`.
    """

    s2_scales: torch.Tensor
    s2_zeros: torch.Tensor
    s1_szeros: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = False, group: int = 128) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group = in_features, out_features, group
        n, k = out_features, in_features
        self.register_buffer("qweight", torch.zeros(n, k // 2, dtype=torch.uint8))
        self.register_buffer("s1_scales", torch.zeros(n, dtype=torch.float16))
        if group > 0:
            self.register_buffer("s2_scales", torch.ones(k // group, n, dtype=torch.uint8))
            self.register_buffer("s2_zeros", torch.zeros(k // group, n, dtype=torch.int8))
        else:
            self.register_buffer("s1_szeros", torch.zeros(n, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(n) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group: int = 128, clip_ratio: torch.Tensor | None = None) -> W4A8Linear:
        """Quantize ``linear`` (its weight as it is now); ``clip_ratio`` [N, K/group] or [N] from the clip search."""
        w = linear.weight.detach()
        q: W4A8Weight | W4A8ChannelWeight = (
            quantize_w4_g128(w, group, clip_ratio) if group > 0 else quantize_w4_channel(w, clip_ratio)
        )
        return cls.from_weight(q, None if linear.bias is None else linear.bias.detach())

    @classmethod
    def from_weight(cls, weight: W4A8Weight | W4A8ChannelWeight, bias: torch.Tensor | None = None) -> W4A8Linear:
        """Wrap an already quantized weight (e.g. from GPTQ) and an optional float bias [N]."""
        n, k = weight.shape
        group = weight.group if isinstance(weight, W4A8Weight) else -1
        layer = cls(k, n, bias is not None, group)
        for name, t in weight.tensors().items():
            setattr(layer, name, t)
        if bias is not None:
            layer.bias = bias.clone()
        return layer

    def weight_format(self) -> WeightFormat:
        if self.group > 0:
            return W4A8Weight(self.qweight, self.s1_scales, self.s2_scales, self.s2_zeros)
        return W4A8ChannelWeight(self.qweight, self.s1_scales, self.s1_szeros)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group={self.group}"


class W8A8Linear(QuantLinear):
    """W8A8 linear (per-channel INT8 weights, per-token INT8 activations): the baseline of QServe Table 3."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("s1_scales", torch.zeros(out_features, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> W8A8Linear:
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q = quantize_w8_channel(w)
        layer.qweight, layer.s1_scales = q.qweight.to(w.device), q.s1_scales.to(w.device)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def weight_format(self) -> WeightFormat:
        return W8A8Weight(self.qweight, self.s1_scales)


def quant_linear_from_state(state: dict[str, Any], in_features: int, out_features: int) -> QuantLinear:
    """An empty quantized linear whose buffers match the tensor names in ``state`` (checkpoint loading)."""
    bias = "bias" in state
    if "s2_scales" in state:
        groups = state["s2_scales"].shape[0]
        if groups == 0 or in_features % groups:
            raise InputError(f"s2_scales with {groups} groups does not divide {in_features} input channels")
        return W4A8Linear(in_features, out_features, bias, in_features // groups)
    if "s1_szeros" in state:
        return W4A8Linear(in_features, out_features, bias, -1)
    return W8A8Linear(in_features, out_features, bias)
