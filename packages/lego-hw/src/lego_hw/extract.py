"""Workloads of a PyTorch model's Linear and Conv2d layers for given inputs (LEGO Sec. III-A front end).

Forward hooks record each call's input and output shapes, so the workloads are exactly the shapes the
model runs (a module called twice gives two workloads). torch is an optional dependency, imported only
when `extract_workloads` runs (`pip install 'lego-hw[torch]'`).

Mapping to workloads:
- `nn.Linear(in, out)` on an input `[..., in]`: `gemm(M = tokens (all leading dims), N = out, K = in)`;
- `nn.Conv2d`, `groups == 1`: `conv2d(k, c, oh, ow, r, s, stride, batch)` with the output size the layer
  produced; padding is not modelled as such: the workload runs on the padded input (same MACs as the
  layer), as `lego_hw.models` writes its convs; unequal strides or a dilation give the same loop nest with
  those coefficients;
- `groups == in_channels == out_channels`: `depthwise_conv2d`; any other grouped conv raises LegoError.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lego_hw.errors import LegoError
from lego_hw.models import Layer
from lego_hw.workload import Workload, conv2d, depthwise_conv2d, gemm

if TYPE_CHECKING:
    import torch


def _torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise ImportError("lego_hw.extract needs PyTorch; install it with pip install 'lego-hw[torch]'") from None


def _ident(name: str) -> str:
    return name.replace(".", "_") or "model"


def _linear(name: str, module: Any, x: Any) -> Workload:
    in_f, out_f = int(module.in_features), int(module.out_features)
    tokens = int(x.numel()) // in_f
    return gemm(tokens, out_f, in_f, name=_ident(name))


def _conv(name: str, module: Any, x: Any, y: Any) -> Workload:
    if x.dim() == 3:  # unbatched input [C, H, W]
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    batch, c_in = int(x.shape[0]), int(x.shape[1])
    k_out, oh, ow = int(y.shape[1]), int(y.shape[2]), int(y.shape[3])
    r, s = (int(v) for v in module.kernel_size)
    sh, sw = (int(v) for v in module.stride)
    dh, dw = (int(v) for v in module.dilation)
    groups = int(module.groups)
    wname = _ident(name)
    if groups == 1:
        if sh == sw and dh == dw == 1:
            return conv2d(k_out, c_in, oh, ow, r, s, stride=sh, batch=batch, name=wname)
        expr = f"O[n, k, y, x] += W[k, c, r, s] * I[n, c, {sh}*y + {dh}*r, {sw}*x + {dw}*s]"
        bounds = {"n": batch, "k": k_out, "c": c_in, "y": oh, "x": ow, "r": r, "s": s}
        return Workload.from_expr(expr, bounds, name=wname)
    if groups == c_in and k_out == c_in:
        if sh == sw and dh == dw == 1:
            return depthwise_conv2d(c_in, oh, ow, r, s, stride=sh, batch=batch, name=wname)
        expr = f"O[n, c, y, x] += W[c, r, s] * I[n, c, {sh}*y + {dh}*r, {sw}*x + {dw}*s]"
        bounds = {"n": batch, "c": c_in, "y": oh, "x": ow, "r": r, "s": s}
        return Workload.from_expr(expr, bounds, name=wname)
    kind = "a depthwise conv with a channel multiplier" if groups == c_in else f"a grouped conv ({groups} groups)"
    raise LegoError(
        f"layer {name!r} is {kind} ({c_in} -> {k_out} channels); lego_hw models only groups=1 and depthwise "
        "(groups = in_channels = out_channels) convs; split the layer into per-group convs or skip it"
    )


def extract_layers(model: torch.nn.Module, *example_inputs: Any) -> list[Layer]:
    """Run `model(*example_inputs)` once and return a `Layer(name, workload, 1)` per Linear/Conv2d call."""
    torch_mod = _torch()
    nn = torch_mod.nn
    found: list[Layer] = []
    errors: list[LegoError] = []

    def make_hook(name: str) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            try:
                if isinstance(module, nn.Linear):
                    found.append(Layer(name, _linear(name, module, inputs[0]), 1))
                else:
                    found.append(Layer(name, _conv(name, module, inputs[0], output), 1))
            except LegoError as e:  # raised after the forward pass, not from inside torch
                errors.append(e)

        return hook

    handles = [
        m.register_forward_hook(make_hook(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    ]
    try:
        with torch_mod.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    if errors:
        raise errors[0]
    return found


def extract_workloads(model: torch.nn.Module, *example_inputs: Any) -> list[Workload]:
    """Workloads of every nn.Linear / nn.Conv2d call of `model(*example_inputs)`, in call order."""
    return [lay.workload for lay in extract_layers(model, *example_inputs)]
