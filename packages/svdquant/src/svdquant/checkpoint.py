"""Save and load a model quantized by :func:`svdquant.quantize_` as one self-describing safetensors file.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025); the
layer tensors keep the Nunchaku engine's names (``qweight``, ``wscales``, ``wtscale``, ``wcscales``,
``smooth_factor``, ``proj_down``, ``proj_up``, ``bias``; ``act_shift`` for unsigned inputs), prefixed by the
module name, next to the model's other (16-bit) tensors. ``__metadata__`` holds ``format`` (``svdquant/1``),
``quantization_config`` (the :class:`SVDQuantConfig` as JSON, or ``null``), ``modules`` (JSON: each quantized
module's name and the settings needed to rebuild it empty: its ``kind``, ``linear`` or ``pointwise_conv`` for a
quantized 1x1 convolution, and for layers sharing one input (q/k/v) ``shared_input``, the name of the group's
first member) and the package ``version``.

safetensors refuses tensors that share memory, so the smoothing and down-projection shared by a group are stored
once per member; loading links the members again (one tensor object each, one run-time cache).

The file is written atomically (a temporary file in the same folder, fsync, ``os.replace``), so a crash never
leaves a half-written checkpoint. Loading checks the whole file against the model before changing anything: on
any error the model is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svdquant.config import SVDQuantConfig
from svdquant.errors import CheckpointError, ConfigError, InputError
from svdquant.svdq_linear import SVDQLinear
from svdquant.svdq_pointwise import SVDQPointwiseConv, pointwise_problem
from svdquant.svdq_shared import SVDQSharedLinear, link_shared

__all__ = ["FORMAT", "load_quantized", "save_quantized"]

FORMAT = "svdquant/1"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())  # the bytes reach the disk before the rename makes them the checkpoint
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give what open() would
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _layer_meta(layer: SVDQLinear, shared_with: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "kind": "pointwise_conv" if isinstance(layer, SVDQPointwiseConv) else "linear",
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "rank": layer.rank,
        "fmt": layer.fmt,
        "group_size": layer.group_size,
        "bias": layer.bias is not None,
        "act_unsigned": layer.act_unsigned,
        "w4a16": layer.w4a16,
        "dtype": str(layer.dtype).removeprefix("torch."),
        "wcscales": layer.wcscales is not None,
    }
    if shared_with is not None:
        meta["shared_input"] = shared_with
    return meta


def _shared_leaders(layers: dict[str, SVDQLinear]) -> dict[str, str]:
    """Each member of a shared-input group present in ``layers`` (two or more) -> the group's first name."""
    groups: dict[int, list[str]] = {}
    for name, m in layers.items():
        if isinstance(m, SVDQSharedLinear) and m.shared_input is not None:
            groups.setdefault(id(m.shared_input), []).append(name)
    return {n: g[0] for g in groups.values() if len(g) > 1 for n in g}


def save_quantized(model: nn.Module, path: str | os.PathLike[str], config: SVDQuantConfig | None = None) -> Path:
    """Write ``model``'s whole state dict and the quantization metadata to the safetensors file ``path``.

    ``config`` defaults to ``model.svdquant_config`` (set by :func:`svdquant.quantize_`). Raises
    :class:`InputError` if the model holds no :class:`SVDQLinear`.
    """
    from safetensors.torch import save_file

    from svdquant import __version__

    layers = {name: m for name, m in model.named_modules() if isinstance(m, SVDQLinear)}
    if not layers:
        raise InputError(f"save_quantized: {type(model).__name__} holds no SVDQLinear; run svdquant.quantize_ first")
    cfg = config if config is not None else getattr(model, "svdquant_config", None)
    if cfg is not None and not isinstance(cfg, SVDQuantConfig):
        raise InputError(f"config must be an SVDQuantConfig, found {type(cfg).__name__}")
    tensors: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (tied weights): store a copy of any repeat.
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if ident in seen:
            t = t.clone()
        seen.add(ident)
        tensors[key] = t
    leaders = _shared_leaders(layers)
    metadata = {
        "format": FORMAT,
        "quantization_config": "null" if cfg is None else cfg.model_dump_json(),
        "modules": json.dumps({name: _layer_meta(m, leaders.get(name)) for name, m in layers.items()}),
        "version": __version__,
    }
    dest = Path(path)
    with _atomic_output(dest) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return dest


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 -- safe_open has no __iter__
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    return tensors, metadata


def _parse_modules(path: Path, metadata: dict[str, str]) -> dict[str, dict[str, Any]]:
    fmt = metadata.get("format")
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: expected a checkpoint of format {FORMAT!r}, found format {fmt!r}")
    try:
        modules = json.loads(metadata["modules"])
        cfg = json.loads(metadata["quantization_config"])
        if cfg is not None:
            SVDQuantConfig(**cfg)
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise CheckpointError(f"{path}: bad quantization metadata: {e}") from e
    if not isinstance(modules, dict) or not modules:
        raise CheckpointError(f"{path}: metadata 'modules' must list the quantized modules, found {modules!r}")
    return modules


def _empty_layer(path: Path, name: str, meta: Any) -> SVDQLinear:
    try:
        dtype = _DTYPES[meta["dtype"]]
        kind = meta.get("kind", "linear")
        if kind not in ("linear", "pointwise_conv"):
            raise ValueError(f"unknown kind {kind!r}")
        if kind == "pointwise_conv" and "shared_input" in meta:
            raise ValueError("a pointwise convolution cannot share its input")
        cls = (
            SVDQPointwiseConv
            if kind == "pointwise_conv"
            else SVDQSharedLinear
            if "shared_input" in meta
            else SVDQLinear
        )
        return cls(
            int(meta["in_features"]),
            int(meta["out_features"]),
            int(meta["rank"]),
            fmt=str(meta["fmt"]),
            group_size=int(meta["group_size"]),
            bias=bool(meta["bias"]),
            act_unsigned=bool(meta["act_unsigned"]),
            w4a16=bool(meta["w4a16"]),
            dtype=dtype,
            wcscales=bool(meta["wcscales"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: bad settings for module {name!r}: {meta!r} ({e})") from e


def _compatible(old: nn.Module, layer: SVDQLinear) -> bool:
    shape = (layer.in_features, layer.out_features)
    if isinstance(layer, SVDQPointwiseConv):
        if isinstance(old, SVDQPointwiseConv):
            return (old.in_features, old.out_features) == shape
        return (
            isinstance(old, nn.Conv2d)
            and pointwise_problem(old) is None
            and (old.in_channels, old.out_channels) == shape
        )
    if isinstance(old, SVDQPointwiseConv) or not isinstance(old, nn.Linear | SVDQLinear):
        return False
    return (old.in_features, old.out_features) == shape


def _shared_groups(path: Path, modules: dict[str, Any], new: dict[str, SVDQLinear]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, meta in modules.items():
        if "shared_input" in meta:
            groups.setdefault(str(meta["shared_input"]), []).append(name)
    for leader, names in groups.items():
        if leader not in names or len(names) < 2:
            raise CheckpointError(
                f"{path}: shared-input group {leader!r} must list its leader and a second member, found {names}"
            )
        k = {new[n].in_features for n in names}
        if len(k) != 1:
            raise CheckpointError(f"{path}: shared-input group {leader!r} mixes in_features {sorted(k)}")
    return groups


def load_quantized(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a :func:`save_quantized` file into ``model``, the float skeleton of the same architecture.

    The quantized modules listed in the file replace the model's ``nn.Linear`` (or, for ``pointwise_conv``
    entries, 1x1 ``nn.Conv2d``) modules of those names (the in/out features must match), every tensor is loaded
    strictly, and the members of each shared-input group are linked again. Raises :class:`CheckpointError` naming the
    file and the keys for another format, a truncated file, or missing, unexpected or misshaped tensors; the
    model is then unchanged. Returns ``model``.
    """
    p = Path(path)
    tensors, metadata = _read(p)
    modules = _parse_modules(p, metadata)
    new: dict[str, SVDQLinear] = {}
    for name, meta in modules.items():
        try:
            old = model.get_submodule(name)
        except AttributeError as e:
            raise CheckpointError(f"{p}: quantized module {name!r} does not exist in {type(model).__name__}") from e
        layer = _empty_layer(p, name, meta)
        if not _compatible(old, layer):
            what = "a 1x1 Conv2d" if isinstance(layer, SVDQPointwiseConv) else "a Linear"
            raise CheckpointError(
                f"{p}: module {name!r} must be {what}({layer.in_features}, {layer.out_features}) in the model, "
                f"found {old!r}"
            )
        new[name] = layer
    groups = _shared_groups(p, modules, new)
    # The state dict the model will have after the swap: the kept modules' tensors plus the new layers'.
    expected: dict[str, Tensor] = {}
    replaced = tuple(f"{n}." for n in new)
    for key, t in model.state_dict().items():
        if not key.startswith(replaced):
            expected[key] = t
    for name, layer in new.items():
        for key, t in layer.state_dict().items():
            expected[f"{name}.{key}"] = t
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{p}: tensors do not match the model: missing {missing[:20]}, unexpected {unexpected[:20]}"
        )
    bad = [
        f"{k}: expected {tuple(t.shape)} {t.dtype}, found {tuple(tensors[k].shape)} {tensors[k].dtype}"
        for k, t in expected.items()
        if tensors[k].shape != t.shape or tensors[k].dtype != t.dtype
    ]
    if bad:
        raise CheckpointError(f"{p}: misshaped tensors: {bad[:20]}")
    with torch.no_grad():
        for name, layer in new.items():
            old = model.get_submodule(name)
            device = next(iter(old.buffers() if isinstance(old, SVDQLinear) else old.parameters())).device
            layer.to(device)  # only moves: the dtypes come from the file's settings
    originals = {name: model.get_submodule(name) for name in new}
    try:
        for name, layer in new.items():
            _set_module(model, name, layer)
        kept = {k: v for k, v in tensors.items() if not k.startswith(replaced)}
        model.load_state_dict({**kept, **{k: tensors[k] for k in expected if k.startswith(replaced)}}, strict=True)
    except Exception as e:
        for name, old in originals.items():
            _set_module(model, name, old)
        raise CheckpointError(f"{p}: loading failed, the model was left unchanged: {e}") from e
    for names in groups.values():
        link_shared([new[n] for n in names], names)  # type: ignore[misc]
    cfg = json.loads(metadata["quantization_config"])
    if cfg is not None:
        model.svdquant_config = SVDQuantConfig(**cfg)  # type: ignore[assignment]
    return model


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
