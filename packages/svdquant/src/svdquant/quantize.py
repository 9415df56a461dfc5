"""``quantize_``: swap a model's ``nn.Linear`` layers (and 1x1 ``nn.Conv2d``) for :class:`SVDQLinear` in place.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2 and 5.1: each targeted layer gets a smoothing search (scored on its captured inputs) and a low-rank
branch; embedders and final layers stay in 16 bits and modulation layers go W4A16 (see :class:`SVDQuantConfig`).

Targets: every ``nn.Linear`` and every pointwise ``nn.Conv2d`` (1x1 kernel, stride 1, no padding, one group:
:class:`SVDQPointwiseConv`, SANA's Mix-FFN) that the config does not skip. A subclass of ``nn.Linear`` that
overrides ``forward`` (it may return something other than ``x W^T + b``) is an error unless its qualified class
name is in ``allowed_linear_subclasses`` or the config skips it.

Calibration (:mod:`svdquant.calibration`) keeps a bounded uniform subsample of every targeted layer's input rows
plus exact per-channel ranges, so memory grows with the number of layers times the token cap, not with the
calibration set. ``calibration_mode="whole"`` runs the float model once with hooks on every targeted layer;
``"blocks"`` streams the inputs of the model's repeated blocks one block at a time (quantize block i, then run it
to produce block i + 1's inputs), so the activations of the whole model are never held at once and each block is
calibrated on the output of the quantized blocks before it.

Layers that read one input (q/k/v: the very same tensor object in every calibration call, or a group named in
``shared_groups``) are quantized together (:mod:`svdquant.svdq_shared`): one smoothing search on their
concatenated weights, one down-projection, computed once per input at run time.

A quantize that fails leaves the model exactly as it was: in whole mode every replacement is built before any is
swapped in; in blocks mode the swapped layers are put back before the error propagates. The error names the layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from svdquant.calibration import (
    Calibration,
    InputTokens,
    _Capture,
    install_captures,
    run_hooked,
    stream_blocks,
)
from svdquant.config import SVDQuantConfig
from svdquant.errors import InputError, QuantizationError, SVDQuantError
from svdquant.svdq_linear import SVDQLinear
from svdquant.svdq_pointwise import SVDQPointwiseConv, is_pointwise_conv, pointwise_problem
from svdquant.svdq_shared import build_shared

__all__ = ["Calibration", "LayerReport", "quantize_", "target_modules"]


@dataclass(frozen=True)
class LayerReport:
    """What :func:`quantize_` did to one layer: ``snr_db`` is the output SNR of the quantized layer against the
    float layer on the captured calibration inputs (None without calibration), bytes of the weights before and
    of all the stored tensors after. ``shared_with`` lists the group of a layer sharing its input (else empty)."""

    name: str
    fmt: str
    rank: int
    w4a16: bool
    act_unsigned: bool
    alpha_beta_searched: bool
    snr_db: float | None
    bytes_before: int
    bytes_after: int
    shared_with: tuple[str, ...] = ()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _kind(module: nn.Module) -> str | None:
    # nn.MultiheadAttention reads out_proj.weight directly instead of calling it, so it cannot be swapped.
    if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return None
    if isinstance(module, nn.Linear):
        return "linear"
    if is_pointwise_conv(module):
        return "conv"
    return None


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def target_modules(model: nn.Module, config: SVDQuantConfig) -> list[str]:
    """Names of the modules :func:`quantize_` would replace: every ``nn.Linear`` and pointwise ``nn.Conv2d`` the
    config does not skip.

    Raises :class:`InputError` for a targeted ``nn.Linear`` subclass that overrides ``forward`` and is not in
    ``config.allowed_linear_subclasses``, and for a module named exactly (not by a pattern) in an override or a
    shared group that cannot be quantized (e.g. a 3x3 convolution).
    """
    names = []
    modules = dict(model.named_modules())
    for name, m in modules.items():
        kind = _kind(m)
        if kind is None or config.layer(name).skip:
            continue
        cls = type(m)
        if (
            kind == "linear"
            and cls.forward is not nn.Linear.forward
            and _qualname(cls) not in config.allowed_linear_subclasses
        ):
            raise InputError(
                f"module {name!r} is a {_qualname(cls)}, an nn.Linear subclass with its own forward: replacing it "
                "would change what it returns; add the class to allowed_linear_subclasses if its callers accept the "
                f"plain product x W^T + b, or skip the module (allowed: {list(config.allowed_linear_subclasses)})"
            )
        names.append(name)
    named = [p for p, update in config.overrides if not _is_pattern(p) and not update.get("skip", False)]
    named += [n for group in config.shared_groups for n in group]
    for name in named:
        m = modules.get(name)
        if m is None or _kind(m) is not None:
            continue
        why = pointwise_problem(m) if isinstance(m, nn.Conv2d) else f"it is a {type(m).__name__}"
        raise InputError(
            f"module {name!r} is named in the config but cannot be quantized: {why}; targets are nn.Linear and "
            "pointwise nn.Conv2d modules"
        )
    return names


def _nbytes(tensors: Iterable[Tensor | None]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _groups(
    names: Sequence[str], modules: dict[str, nn.Module], captures: dict[str, _Capture] | None, cfg: SVDQuantConfig
) -> list[list[str]]:
    """Partition ``names`` into shared-input groups (in model order) and single layers."""
    in_call = set(names)
    groups: list[list[str]] = []
    grouped: set[str] = set()
    for group in cfg.shared_groups:
        present = [n for n in group if n in in_call]
        if not present:
            continue
        if len(present) != len(group):
            missing = [n for n in group if n not in in_call]
            raise InputError(
                f"shared group {list(group)}: {missing} are not quantized with the others (not targeted, skipped, "
                "or in another block in blocks mode)"
            )
        for n in group:
            if _kind(modules[n]) != "linear":
                raise InputError(f"shared group {list(group)}: {n!r} must be an nn.Linear")
        settings = {n: cfg.layer(n) for n in group}
        if len({s.model_dump_json() for s in settings.values()}) != 1:
            raise InputError(f"shared group {list(group)}: the members resolve to different settings {settings}")
        groups.append([n for n in names if n in group])
        grouped |= set(group)
    if cfg.share_inputs and captures is not None:
        by_tokens: dict[tuple[object, ...], list[str]] = {}
        for n in names:
            cap = captures.get(n)
            m = modules[n]
            if n in grouped or cap is None or not cap.tokens or _kind(m) != "linear":
                continue
            assert isinstance(m, nn.Linear)
            # Siblings only (one parent module, as q/k/v of one attention): layers of different blocks may read one
            # tensor too (every block's k/v of the text states), but one rank-r branch for all of them would
            # spread its capacity over dozens of layers. They must also resolve to the same settings.
            parent = n.rpartition(".")[0]
            key = (
                parent,
                tuple(cap.tokens),
                cfg.layer(n).model_dump_json(),
                m.in_features,
                m.weight.dtype,
                m.weight.device,
            )
            by_tokens.setdefault(key, []).append(n)
        groups += [g for g in by_tokens.values() if len(g) > 1]
        grouped |= {n for g in groups for n in g}
    singles = [[n] for n in names if n not in grouped]
    order = {n: i for i, n in enumerate(names)}
    return sorted(groups + singles, key=lambda g: order[g[0]])


def _calib_inputs(cap: _Capture | None) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
    if cap is None:
        return None, None
    if cap.nonfinite:
        raise InputError(
            f"calibration inputs must be finite; found {cap.nonfinite} NaN/Inf value(s) in {cap.seen} rows"
        )
    if cap.rows is None or cap.lo is None or cap.hi is None:
        raise InputError("the calibration run never called this layer; it has no inputs to calibrate on")
    return cap.rows, (cap.lo, cap.hi)


def _build(
    names: Sequence[str],
    modules: dict[str, nn.Module],
    captures: dict[str, _Capture] | None,
    cfg: SVDQuantConfig,
) -> tuple[dict[str, SVDQLinear], dict[str, LayerReport]]:
    """Quantize ``names`` (nothing is swapped in); errors name the layer and say the model was left unchanged."""
    built: dict[str, SVDQLinear] = {}
    reports: dict[str, LayerReport] = {}
    xs: dict[str, Tensor | None] = {}
    for group in _groups(names, modules, captures, cfg):
        lead = group[0]
        label = f"layer {lead!r}" + (f" (shared group {group})" if len(group) > 1 else "")
        try:
            for n in group:
                xs[n], rng = _calib_inputs(captures.get(n) if captures is not None else None)
            m = modules[lead]
            if len(group) > 1:
                linears = [modules[n] for n in group]
                assert all(isinstance(lin, nn.Linear) for lin in linears)
                _, rng = _calib_inputs(captures.get(lead) if captures is not None else None)
                layers: list[SVDQLinear] = list(build_shared(linears, group, xs[lead], cfg, channel_range=rng))  # type: ignore[arg-type]
                for n in group:
                    xs[n] = xs[lead]
            elif _kind(m) == "conv":
                layers = [SVDQPointwiseConv.from_conv(m, xs[lead], cfg, name=lead, channel_range=rng)]
            else:
                layers = [SVDQLinear.from_linear(m, xs[lead], cfg, name=lead, channel_range=rng)]
        except SVDQuantError as e:
            msg = str(e).removeprefix(f"layer {lead!r}: ")
            raise type(e)(f"quantize_: {label}: {msg}; the model was left unchanged") from e
        except Exception as e:
            raise QuantizationError(f"quantize_: {label} failed ({e}); the model was left unchanged") from e
        for n, layer in zip(group, layers, strict=True):
            built[n] = layer
            reports[n] = _report(n, modules[n], layer, xs[n], cfg, tuple(group) if len(group) > 1 else ())
    return built, reports


def _report(
    name: str, m: nn.Module, layer: SVDQLinear, x: Tensor | None, cfg: SVDQuantConfig, group: tuple[str, ...]
) -> LayerReport:
    weight, bias = m.weight, m.bias
    assert isinstance(weight, Tensor)
    snr = None
    if x is not None:
        with torch.no_grad():
            xin = x.to(weight.dtype)
            ref = nn.functional.linear(xin, weight.flatten(1), bias if isinstance(bias, Tensor) else None).double()
            err = (SVDQLinear.forward(layer, xin).double() - ref).square().sum()
            snr = float(10 * torch.log10(ref.square().sum() / err.clamp(min=1e-300)))
    st = cfg.layer(name)
    return LayerReport(
        name=name,
        fmt=layer.fmt,
        rank=layer.rank,
        w4a16=layer.w4a16,
        act_unsigned=layer.act_unsigned,
        alpha_beta_searched=x is not None and st.smoothing,
        snr_db=snr,
        bytes_before=_nbytes([weight, bias if isinstance(bias, Tensor) else None]),
        bytes_after=_nbytes(layer.buffers()),
        shared_with=group,
    )


def quantize_(
    model: nn.Module, config: SVDQuantConfig | None = None, calibration: Calibration | None = None
) -> dict[str, LayerReport]:
    """Replace every targeted ``nn.Linear`` (and pointwise ``nn.Conv2d``) of ``model`` by an :class:`SVDQLinear`
    (:class:`SVDQPointwiseConv`), in place.

    ``calibration`` is a callable ``run(model)`` that feeds calibration batches through the model, or an
    iterable of batches, each a tensor or a tuple of positional arguments for ``model(...)``; None quantizes
    without data (no smoothing, weight-error branch). The model runs under ``torch.no_grad()`` in whatever
    train/eval mode it is in (call ``model.eval()`` first). ``config.calibration_mode="blocks"`` streams the
    calibration block by block (see :mod:`svdquant.calibration`; it needs calibration data and, for an iterable,
    reads it once). The config is kept as ``model.svdquant_config`` so that :func:`svdquant.save_quantized`
    records it.

    Returns one :class:`LayerReport` per replaced module, by name (model order). A failure in any layer raises (an
    :class:`SVDQuantError` naming the layer; other exceptions become :class:`QuantizationError`) and leaves the
    model unchanged.
    """
    cfg = config if config is not None else SVDQuantConfig()
    if not isinstance(model, nn.Module):
        raise InputError(f"quantize_ needs an nn.Module, found {type(model).__name__}")
    names = target_modules(model, cfg)
    if not names:
        raise InputError(
            f"quantize_: no nn.Linear (or pointwise nn.Conv2d) to quantize in {type(model).__name__} "
            "(after the skip filter)"
        )
    modules = {name: model.get_submodule(name) for name in names}
    built: dict[str, SVDQLinear] = {}
    reports: dict[str, LayerReport] = {}
    if cfg.calibration_mode == "blocks" and calibration is not None:
        originals: dict[str, nn.Module] = {}

        def build_and_swap(part: list[str], captures: dict[str, _Capture] | None) -> None:
            new, rep = _build(part, modules, captures, cfg)
            for name, layer in new.items():
                originals[name] = modules[name]
                _set_module(model, name, layer)
            built.update(new)
            reports.update(rep)

        try:
            stream_blocks(model, cfg, calibration, modules, build_and_swap)
        except BaseException as e:
            for name, old in reversed(originals.items()):
                _set_module(model, name, old)
            if isinstance(e, SVDQuantError) and "left unchanged" not in str(e):
                raise type(e)(f"{e}; the model was left unchanged") from e
            raise
        model.svdquant_config = cfg  # type: ignore[assignment]
        return {n: reports[n] for n in names}
    captures: dict[str, _Capture] | None = None
    if calibration is not None:
        gen = torch.Generator().manual_seed(cfg.seed)
        captures, handles = install_captures(modules, cfg, gen, InputTokens())
        run_hooked(model, calibration, handles)
    built, reports = _build(names, modules, captures, cfg)
    for name, layer in built.items():
        _set_module(model, name, layer)
    model.svdquant_config = cfg  # type: ignore[assignment]
    return {n: reports[n] for n in names}
