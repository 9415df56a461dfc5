"""``quantize_``: swap a model's ``nn.Linear`` layers for :class:`SVDQLinear` in place, torchao style.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2 and 5.1: each targeted layer gets its own smoothing search (scored on its captured inputs) and its own
low-rank branch; embedders and final layers stay in 16 bits and modulation layers go W4A16 (see
:class:`SVDQuantConfig`).

Calibration runs the whole model once with forward hooks on every targeted Linear. Each hook keeps a bounded,
uniform random subsample of that layer's input rows (at most ``max_calibration_tokens``, by keeping the rows with
the smallest random keys, so every row seen has the same chance whatever batch it came in) plus exact per-channel
minima and maxima over every row, which set the smoothing spans and the unsigned shift. Memory therefore grows
with the number of layers times the token cap, not with the calibration set. Streaming block by block (quantize
block i, then run the calibration set through the quantized prefix to calibrate block i + 1, so that the
activations of a whole model never have to be held at once, and later blocks see the quantization error of
earlier ones) is future work.

All replacements are built before any is swapped in: if one layer fails, the error names it and the model is left
exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from svdquant.config import SVDQuantConfig
from svdquant.errors import InputError, QuantizationError, SVDQuantError
from svdquant.svdq_linear import SVDQLinear

__all__ = ["LayerReport", "quantize_", "target_modules"]

Calibration = Callable[[nn.Module], Any] | Iterable[Any]


@dataclass(frozen=True)
class LayerReport:
    """What :func:`quantize_` did to one layer: ``snr_db`` is the output SNR of the quantized layer against the
    float layer on the captured calibration inputs (None without calibration), bytes of the weights before and
    of all the stored tensors after."""

    name: str
    fmt: str
    rank: int
    w4a16: bool
    act_unsigned: bool
    alpha_beta_searched: bool
    snr_db: float | None
    bytes_before: int
    bytes_after: int


def _is_target(module: nn.Module) -> bool:
    # nn.MultiheadAttention reads out_proj.weight directly instead of calling it, so it cannot be swapped.
    return isinstance(module, nn.Linear) and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear)


def target_modules(model: nn.Module, config: SVDQuantConfig) -> list[str]:
    """Names of the Linear modules :func:`quantize_` would replace (not skipped by the config)."""
    return [name for name, m in model.named_modules() if _is_target(m) and not config.layer(name).skip]


class _Capture:
    """A bounded uniform subsample of one layer's input rows, with exact per-channel min/max over all rows."""

    def __init__(self, cap: int, generator: torch.Generator) -> None:
        self.cap, self.gen = cap, generator
        self.rows: Tensor | None = None
        self.keys: Tensor | None = None
        self.lo: Tensor | None = None
        self.hi: Tensor | None = None
        self.nonfinite = 0
        self.seen = 0

    def add(self, x: Tensor) -> None:
        x2 = x.detach().reshape(-1, x.shape[-1]).float()
        finite = torch.isfinite(x2)
        if not bool(finite.all()):
            # Counted here and reported when the layer is built, so a NaN in any batch is caught.
            self.nonfinite += int((~finite).sum())
            x2 = torch.nan_to_num(x2, nan=0.0, posinf=0.0, neginf=0.0)
        self.seen += x2.shape[0]
        lo, hi = x2.amin(0), x2.amax(0)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        keys = torch.rand(x2.shape[0], generator=self.gen).to(x2.device)
        rows = x2 if self.rows is None else torch.cat([self.rows, x2])
        keys = keys if self.keys is None else torch.cat([self.keys, keys])
        if rows.shape[0] > self.cap:
            keep = torch.topk(keys, self.cap, largest=False).indices.sort().values
            rows, keys = rows[keep], keys[keep]
        self.rows, self.keys = rows, keys


def _run_calibration(model: nn.Module, calibration: Calibration) -> None:
    with torch.no_grad():
        if callable(calibration):
            calibration(model)
            return
        for batch in calibration:
            if isinstance(batch, Tensor):
                model(batch)
            elif isinstance(batch, tuple | list):
                model(*batch)
            else:
                found = type(batch).__name__
                raise InputError(
                    f"calibration batches must be tensors or tuples of positional arguments, found {found}"
                )


def _nbytes(tensors: Iterable[Tensor | None]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def quantize_(
    model: nn.Module, config: SVDQuantConfig | None = None, calibration: Calibration | None = None
) -> dict[str, LayerReport]:
    """Replace every targeted ``nn.Linear`` of ``model`` by an :class:`SVDQLinear`, in place.

    ``calibration`` is a callable ``run(model)`` that feeds calibration batches through the model, or an
    iterable of batches, each a tensor or a tuple of positional arguments for ``model(...)``; None quantizes
    without data (no smoothing, weight-error branch). The model runs under ``torch.no_grad()`` in whatever
    train/eval mode it is in (call ``model.eval()`` first). The config is kept as ``model.svdquant_config``
    so that :func:`svdquant.save_quantized` records it.

    Returns one :class:`LayerReport` per replaced module, by name. A failure in any layer raises (an
    :class:`SVDQuantError` naming the layer; other exceptions become :class:`QuantizationError`) and leaves the
    model unchanged.
    """
    cfg = config if config is not None else SVDQuantConfig()
    if not isinstance(model, nn.Module):
        raise InputError(f"quantize_ needs an nn.Module, found {type(model).__name__}")
    names = target_modules(model, cfg)
    if not names:
        raise InputError(f"quantize_: no nn.Linear to quantize in {type(model).__name__} (after the skip filter)")
    modules: dict[str, nn.Linear] = {}
    for name in names:
        found = model.get_submodule(name)
        assert isinstance(found, nn.Linear)  # target_modules only lists Linear modules
        modules[name] = found
    captures: dict[str, _Capture] = {}
    if calibration is not None:
        gen = torch.Generator().manual_seed(cfg.seed)
        handles = []
        for name, m in modules.items():
            captures[name] = _Capture(cfg.max_calibration_tokens, gen)

            def hook(
                _m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any, cap: _Capture = captures[name]
            ) -> None:
                cap.add(args[0] if args else kwargs["input"])

            handles.append(m.register_forward_hook(hook, with_kwargs=True))
        try:
            _run_calibration(model, calibration)
        except SVDQuantError:
            raise
        except Exception as e:
            raise QuantizationError(f"quantize_: running the calibration data through the model failed: {e}") from e
        finally:
            for h in handles:
                h.remove()

    built: dict[str, SVDQLinear] = {}
    reports: dict[str, LayerReport] = {}
    for name, m in modules.items():
        cap = captures.get(name)
        try:
            x: Tensor | None = None
            if cap is not None:
                if cap.nonfinite:
                    raise InputError(
                        f"calibration inputs must be finite; found {cap.nonfinite} NaN/Inf value(s) in {cap.seen} rows"
                    )
                if cap.rows is None:
                    raise InputError("the calibration run never called this layer; it has no inputs to calibrate on")
                x = cap.rows
            rng = (cap.lo, cap.hi) if cap is not None and cap.lo is not None and cap.hi is not None else None
            layer = SVDQLinear.from_linear(m, x, cfg, name=name, channel_range=rng)
        except SVDQuantError as e:
            msg = str(e) if str(e).startswith(f"layer {name!r}") else f"layer {name!r}: {e}"
            raise type(e)(f"quantize_: {msg}; the model was left unchanged") from e
        except Exception as e:
            raise QuantizationError(f"quantize_: layer {name!r} failed ({e}); the model was left unchanged") from e
        built[name] = layer
        snr = None
        if x is not None:
            with torch.no_grad():
                xin = x.to(m.weight.dtype)
                ref = m(xin).double()
                err = (layer(xin).double() - ref).square().sum()
                snr = float(10 * torch.log10(ref.square().sum() / err.clamp(min=1e-300)))
        st = cfg.layer(name)
        reports[name] = LayerReport(
            name=name,
            fmt=layer.fmt,
            rank=layer.rank,
            w4a16=layer.w4a16,
            act_unsigned=layer.act_unsigned,
            alpha_beta_searched=x is not None and st.smoothing,
            snr_db=snr,
            bytes_before=_nbytes([m.weight, m.bias]),
            bytes_after=_nbytes(layer.buffers()),
        )
    for name, layer in built.items():
        _set_module(model, name, layer)
    model.svdquant_config = cfg  # type: ignore[assignment]
    return reports
