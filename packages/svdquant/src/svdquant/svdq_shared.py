"""Layers that read one input (q/k/v) sharing the smoothing, the activation quantization and the down-projection.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2: the smoothing and the low-rank branch act on the layer input. Layers fed the same tensor (the
query/key/value projections of one attention) can therefore use one smoothing vector ``s`` and one down-projection
``proj_down``: the engine fuses such layers into one qkv Linear. Here the layers stay separate modules (the
checkpoint keeps one set of engine tensors per module name) and are quantized *as* their row-concatenation:
:func:`build_shared` runs :meth:`SVDQLinear.from_linear` on the concatenated weight (one smoothing search scored on
all outputs, one branch, one NVFP4 per-tensor scale) and splits the result back by output rows.

At run time each member's ``smooth_factor``, ``proj_down`` and ``act_shift`` are the same tensor objects, and the
members hold one :class:`SharedInput`, which caches the last input's quantized smoothed activation and its
down-projection ``x @ proj_down``: for q/k/v both are computed once per input instead of three times. A cache
entry is reused only for the very same input object, unmodified since (``Tensor._version``), and identical
factors (the same tensor, or an equal one: ``module.to()`` copies each member's buffers separately). A member whose
branch a LoRA changed (:mod:`svdquant.lora` concatenates ranks into its ``proj_down``) simply no longer matches and
computes its own down-projection; the other members keep sharing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from svdquant.config import LayerSettings, SVDQuantConfig
from svdquant.errors import InputError
from svdquant.formats import fake_quantize_activation
from svdquant.svdq_linear import SVDQLinear

__all__ = ["SVDQSharedLinear", "SharedInput", "build_shared"]


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is b:
        return True
    if a is None or b is None:
        return False
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))


class _Entry:
    """One cached result: the input it was computed from (weakly held), its version, the factors used."""

    def __init__(self, x: Tensor, factors: tuple[Any, ...], value: Any) -> None:
        self.x = weakref.ref(x)
        self.version = x._version
        self.shape = x.shape
        self.factors = factors
        self.value = value

    def matches(self, x: Tensor, factors: tuple[Any, ...]) -> bool:
        if self.x() is not x or x._version != self.version or x.shape != self.shape:
            return False
        if len(factors) != len(self.factors):
            return False
        for a, b in zip(factors, self.factors, strict=True):
            if isinstance(a, Tensor) or isinstance(b, Tensor) or a is None or b is None:
                if not _same(a, b):
                    return False
            elif a != b:
                return False
        return True


class SharedInput:
    """What the members of one shared-input group hold in common: their module names (``members``, relative to
    the model :func:`svdquant.quantize_` ran on) and a one-entry cache of the shared computations.
    ``act_computed`` and ``down_computed`` count how often each was actually computed."""

    def __init__(self, members: Sequence[str]) -> None:
        self.members = tuple(members)
        self.act_computed = 0
        self.down_computed = 0
        self._act: _Entry | None = None
        self._down: _Entry | None = None
        self._kernel: _Entry | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Weak references do not pickle, and a cached activation is not state: copies start with empty caches.
        state = dict(self.__dict__)
        state["_act"] = state["_down"] = state["_kernel"] = None
        return state

    def clear(self) -> None:
        self._act = self._down = self._kernel = None

    def kernel_inputs(
        self, layer: SVDQLinear, x: Tensor, compute: Callable[[], tuple[Tensor, Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The fused kernel's ``(codes, ascales, lora_act)`` for ``x``: ``compute()`` once per input, then reused
        by every member whose smoothing and down-projection are the group's (the kernel path's sharing)."""
        factors = (layer.smooth_factor, layer.act_shift, layer.group_size, layer.act_unsigned, layer.proj_down)
        if self._kernel is not None and self._kernel.matches(x, factors):
            return self._kernel.value
        value = compute()
        self._kernel = _Entry(x, factors, value)
        self.act_computed += 1
        self.down_computed += 1
        return value

    def activation(self, layer: SVDQLinear, x: Tensor) -> Tensor:
        """``layer``'s smoothed (shifted) input, 4-bit fake-quantized unless W4A16, as float32."""
        factors = (layer.smooth_factor, layer.act_shift, layer.fmt, layer.group_size, layer.act_unsigned, layer.w4a16)
        if self._act is not None and self._act.matches(x, factors):
            return self._act.value
        x32 = x.float()
        s = layer.smooth_factor.float()
        c = layer.act_shift.float() if layer.act_shift is not None else None
        xs = x32 / s if c is None else (x32 + c) / s
        if not layer.w4a16:
            # Quantize in the input's dtype, exactly as SVDQLinear's reference forward does.
            xs = fake_quantize_activation(xs.to(x.dtype), layer.fmt, layer.group_size, layer.act_unsigned).float()  # type: ignore[arg-type]
        self._act = _Entry(x, factors, xs)
        self.act_computed += 1
        return xs

    def down(self, layer: SVDQLinear, x: Tensor) -> Tensor:
        """``x @ layer.proj_down`` in float32."""
        factors = (layer.proj_down,)
        if self._down is not None and self._down.matches(x, factors):
            return self._down.value
        value = x.float() @ layer.proj_down.float()
        self._down = _Entry(x, factors, value)
        self.down_computed += 1
        return value


class SVDQSharedLinear(SVDQLinear):
    """An :class:`SVDQLinear` that shares its smoothing, activation quantization and down-projection with the other
    members of its :class:`SharedInput` (``shared_input``; None behaves as a plain SVDQLinear). Same buffers, same
    checkpoint keys."""

    shared_input: SharedInput | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared_input = None

    def extra_repr(self) -> str:
        shared = "" if self.shared_input is None else f", shared_input={list(self.shared_input.members)}"
        return super().extra_repr() + shared

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise InputError(f"SVDQLinear expects inputs [..., {self.in_features}], found shape {tuple(x.shape)}")
        from svdquant.kernels.dispatch import fused_forward

        fused = fused_forward(self, x)
        if fused is not None:
            return fused
        shared = self.shared_input
        if shared is None:
            return super().forward(x)
        w = self.dequantized_weight()
        y = shared.activation(self, x) @ w.T
        if self.act_shift is not None and not self.w4a16:
            c, s = self.act_shift.float(), self.smooth_factor.float()
            y = y - (c / s) @ w.T
        y = y + shared.down(self, x) @ self.proj_up.float().T
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)


def build_shared(
    linears: Sequence[nn.Linear],
    names: Sequence[str],
    calib_x: Tensor | None,
    config: SVDQuantConfig | LayerSettings,
    *,
    channel_range: tuple[Tensor, Tensor] | None = None,
) -> list[SVDQSharedLinear]:
    """Quantize ``linears`` (one input, the same in_features, dtype and device) as their row-concatenation and
    split the result into one :class:`SVDQSharedLinear` per layer, all holding one :class:`SharedInput`.

    The settings are those of ``names[0]`` (callers make sure every member resolves to the same settings);
    ``calib_x`` and ``channel_range`` are the shared input's calibration rows and per-channel range, as for
    :meth:`SVDQLinear.from_linear`. Errors name the group.
    """
    if len(linears) < 2 or len(linears) != len(names):
        raise InputError(f"a shared group needs at least two layers and one name per layer, found {list(names)}")
    for name, lin in zip(names, linears, strict=True):
        if not isinstance(lin, nn.Linear):
            raise InputError(f"shared group {list(names)}: {name!r} must be an nn.Linear, found {type(lin).__name__}")
    first = linears[0].weight
    k = first.shape[1]
    for name, lin in zip(names, linears, strict=True):
        w = lin.weight
        if w.shape[1] != k or w.dtype != first.dtype or w.device != first.device:
            raise InputError(
                f"shared group {list(names)}: every member needs in_features={k}, dtype {first.dtype} and device "
                f"{first.device} (as {names[0]!r}); {name!r} has {w.shape[1]}, {w.dtype}, {w.device}"
            )
    sizes = [lin.out_features for lin in linears]
    has_bias = any(lin.bias is not None for lin in linears)
    cat = nn.Linear(k, sum(sizes), bias=has_bias, dtype=first.dtype, device=first.device)
    with torch.no_grad():
        cat.weight.copy_(torch.cat([lin.weight.detach() for lin in linears]))
        if cat.bias is not None:
            parts = [
                lin.bias.detach() if lin.bias is not None else first.new_zeros(n)
                for lin, n in zip(linears, sizes, strict=True)
            ]
            cat.bias.copy_(torch.cat(parts))
    big = SVDQLinear.from_linear(cat, calib_x, config, name=names[0], channel_range=channel_range)
    shared = SharedInput(names)
    out: list[SVDQSharedLinear] = []
    start = 0
    for lin, n in zip(linears, sizes, strict=True):
        stop = start + n
        layer = SVDQSharedLinear(
            k,
            n,
            big.rank,
            fmt=big.fmt,
            group_size=big.group_size,
            bias=lin.bias is not None,
            act_unsigned=big.act_unsigned,
            w4a16=big.w4a16,
            dtype=big.dtype,
            wcscales=big.wcscales is not None,
            device=first.device,
        )
        with torch.no_grad():
            layer.qweight.copy_(big.qweight[start:stop])
            layer.wscales.copy_(big.wscales[:, start:stop])
            if layer.wtscale is not None and big.wtscale is not None:
                layer.wtscale.copy_(big.wtscale)  # the concatenation's per-tensor scale, as in a fused qkv
            if layer.wcscales is not None and big.wcscales is not None:
                layer.wcscales.copy_(big.wcscales[start:stop])
            layer.proj_up.copy_(big.proj_up[start:stop])
            if layer.bias is not None and big.bias is not None:
                layer.bias.copy_(big.bias[start:stop])
        layer.smooth_factor = big.smooth_factor
        layer.proj_down = big.proj_down
        if big.act_shift is not None:
            layer.act_shift = big.act_shift
        layer.shared_input = shared
        out.append(layer)
        start = stop
    return out


def link_shared(layers: Sequence[SVDQSharedLinear], names: Sequence[str]) -> SharedInput:
    """Give ``layers`` (loaded separately) one :class:`SharedInput` and make equal ``smooth_factor``,
    ``proj_down`` and ``act_shift`` buffers the same tensor objects again (a checkpoint stores one copy each)."""
    shared = SharedInput(names)
    lead = layers[0]
    for layer in layers:
        for attr in ("smooth_factor", "proj_down", "act_shift"):
            if layer is not lead and _same(getattr(layer, attr), getattr(lead, attr)):
                setattr(layer, attr, getattr(lead, attr))
        layer.shared_input = shared
    return shared
