"""Saving, loading and converting Linear DiT checkpoints in every layout the models ship in.

SANA (Xie et al., ICLR 2025) and SANA-1.5 (ICML 2025) were released as NVlabs/Sana checkpoints
(``.pth`` holding ``{"state_dict": ...}``, or ``.safetensors``) and as diffusers
``SanaTransformer2DModel`` folders (``config.json`` + ``diffusion_pytorch_model.safetensors``,
possibly sharded with an ``.index.json``). :func:`load` reads those and our own format, detects
the layout from the keys and checks every key and shape before anything is built: a mismatch is
a :class:`~linear_dit.errors.CheckpointError` that lists the keys, never a half-loaded model.

Our format is one safetensors file whose ``__metadata__`` holds ``format`` (``linear_dit/1``),
``config`` (the :class:`~linear_dit.config.LinearDiTConfig` as JSON) and ``linear_dit_version``.
Every write is atomic (temporary file in the same folder, fsync, rename).

The config comes from, in order: the file's own metadata, the diffusers ``config.json``, the
``config=`` argument, or else the one preset whose keys and shapes (and, for original
checkpoints, ``pos_embed`` buffer: its length is the training grid, its values the sin-cos PE or
zeros) fit the weights. An explicit ``config=`` that contradicts the file's own is an error.
Never a file name. Loading a diffusers checkpoint keeps our linear-attention eps of 1e-8 (the
Sana blocks' value; diffusers computes with 1e-15, a difference far below 1e-5 in the outputs).

Sana training checkpoints (``epoch_*.pth``) also hold ``state_dict_ema`` next to ``state_dict``,
plus optimizer and RNG state (with NumPy arrays); ``ema=True`` loads the EMA weights. Pickles
are read with ``torch.load(weights_only=True)``; the NumPy RNG-state types are the only globals
additionally allowed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from linear_dit import layouts
from linear_dit._io import atomic_output, atomic_write_text, read_safetensors
from linear_dit.config import LinearDiTConfig, preset_names
from linear_dit.errors import CheckpointError
from linear_dit.layouts import Layout, detect_layout
from linear_dit.linear_dit import LinearDiT

__all__ = ["FORMAT", "LoadedState", "convert", "detect_layout", "load", "load_state_dict", "save"]

FORMAT = "linear_dit/1"
Source = str | os.PathLike[str] | Mapping[str, Any]
ConfigArg = LinearDiTConfig | str | os.PathLike[str] | Mapping[str, Any] | None

_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
_DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
_DIFFUSERS_PICKLE = "diffusion_pytorch_model.bin"
# Our config in the metadata of an original-layout safetensors written by us (the release's
# files carry no config; ours keep it so that a round trip needs no config=).
_SANA_CONFIG_KEY = "linear_dit_config"


class LoadedState(NamedTuple):
    """What :func:`load_state_dict` returns: our state dict, its config and the source's layout."""

    state_dict: dict[str, torch.Tensor]
    config: LinearDiTConfig
    layout: Layout


# --- writing -----------------------------------------------------------------------------------------


def save(model: torch.nn.Module, path: str | os.PathLike[str], *, layout: Layout = "linear_dit") -> Path:
    """Write ``model`` to ``path`` atomically and return the path written.

    ``layout="linear_dit"`` (default) writes our self-describing safetensors file; ``"sana"``
    writes the original layout (``{"state_dict": ...}`` if ``path`` ends in ``.pth``/``.pt``,
    else safetensors); ``"diffusers"`` writes a ``SanaTransformer2DModel`` folder at ``path``.
    """
    net = _unwrap_model(model)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return _write(state, net.config, Path(path), layout)


def convert(source: Source, dest: str | os.PathLike[str], layout: Layout, config: ConfigArg = None) -> Path:
    """Read ``source`` in any layout (strictly) and write it to ``dest`` in ``layout``; returns the
    path written. ``config`` is as in :func:`load` (needed only when the source does not say)."""
    state, cfg, _ = load_state_dict(source, config)
    return _write(state, cfg, Path(dest), layout)


def _unwrap_model(model: torch.nn.Module) -> LinearDiT:
    # DDP/FSDP wrappers keep the model in .module, torch.compile in ._orig_mod.
    for _ in range(4):
        if isinstance(model, LinearDiT):
            return model
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            break
        model = inner
    raise CheckpointError(f"save expects a LinearDiT (or a DDP/compiled wrapper of one), got {type(model).__name__}")


def _write(state: Mapping[str, torch.Tensor], cfg: LinearDiTConfig, path: Path, layout: str) -> Path:
    from safetensors.torch import save_file

    from linear_dit import __version__

    layouts.check_layout_supported(cfg, layout)
    version = {"linear_dit_version": __version__}
    if layout == "diffusers":
        dcfg = layouts.diffusers_config(cfg)  # raises for what diffusers cannot express: before any write
        if path.exists() and not path.is_dir():
            raise CheckpointError(f"the diffusers layout is a folder, but {path} is a file")
        if (path / _DIFFUSERS_INDEX).exists():
            raise CheckpointError(
                f"{path} already holds a sharded checkpoint ({_DIFFUSERS_INDEX}), which would shadow the "
                "file written now; write to an empty folder"
            )
        tensors = _contiguous(layouts.to_layout(state, cfg, "diffusers"))
        with atomic_output(path / _DIFFUSERS_WEIGHTS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        atomic_write_text(path / "config.json", json.dumps(dcfg, indent=2) + "\n")
        return path
    if path.is_dir():
        raise CheckpointError(f"the {layout} layout is one file, but {path} is a folder")
    if layout == "linear_dit":
        meta = {"format": FORMAT, "config": cfg.model_dump_json(), **version}
        with atomic_output(path) as tmp:
            save_file(_contiguous(state), str(tmp), metadata=meta)
        return path
    tensors = _contiguous(layouts.to_layout(state, cfg, "sana"))
    with atomic_output(path) as tmp:
        if path.suffix in _PICKLE_SUFFIXES:
            torch.save({"state_dict": tensors}, tmp)
        else:
            save_file(tensors, str(tmp), metadata={"format": "pt", _SANA_CONFIG_KEY: cfg.model_dump_json(), **version})
    return path


def _contiguous(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in state.items()}


# --- reading -----------------------------------------------------------------------------------------


@dataclass
class _Raw:
    state: dict[str, torch.Tensor]
    where: str  # the source, for messages
    meta: dict[str, str] = field(default_factory=dict)  # safetensors __metadata__
    folder_config: dict[str, Any] | None = None  # a diffusers config.json beside the weights
    folder_config_path: Path | None = None


def _read(source: Source, *, ema: bool, meta: bool) -> _Raw:
    if isinstance(source, Mapping):
        state = _unwrap_state(source, "the state dict passed to load", ema)
        # Cloned so that the loaded model never shares storage with the caller's tensors.
        return _Raw({k: v.detach().clone() for k, v in state.items()}, "the state dict passed to load")
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        path = _weights_in_folder(path)
    if ema and not path.name.endswith(_PICKLE_SUFFIXES):
        raise CheckpointError(f"ema=True reads 'state_dict_ema' from a Sana training .pth; {path} is not one")
    if path.name.endswith(".index.json"):
        state, metadata = _read_sharded(path, meta)
    elif path.name.endswith(_PICKLE_SUFFIXES):
        state, metadata = _unwrap_state(_torch_load(path, meta), str(path), ema), {}
    else:
        state, metadata = read_safetensors(path, meta=meta, keep=frozenset({layouts.SANA_POS_EMBED}))
    raw = _Raw(state, str(path), metadata)
    cfg_path = path.parent / "config.json"
    if cfg_path.is_file():
        try:
            parsed = json.loads(cfg_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"cannot parse {cfg_path}: {e}") from None
        if isinstance(parsed, dict):
            raw.folder_config, raw.folder_config_path = parsed, cfg_path
    return raw


def _weights_in_folder(folder: Path) -> Path:
    for name in (_DIFFUSERS_INDEX, _DIFFUSERS_WEIGHTS, _DIFFUSERS_PICKLE):
        if (folder / name).is_file():
            return folder / name
    if (folder / "transformer").is_dir():  # a diffusers pipeline folder
        return _weights_in_folder(folder / "transformer")
    found = sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name.endswith((".safetensors", *_PICKLE_SUFFIXES))
    )
    if len(found) == 1:
        return folder / found[0]
    what = f"several ({', '.join(found)}); name the file" if found else "none"
    raise CheckpointError(
        f"folder {folder} holds no {_DIFFUSERS_WEIGHTS} (or {_DIFFUSERS_INDEX}, or a transformer/ subfolder) "
        f"and no single checkpoint file: found {what}"
    )


def _read_sharded(index: Path, meta: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot read the shard index {index}: {e}") from None
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = index.parent / shard
        if not file.is_file():
            raise CheckpointError(f"shard {file} listed in {index} does not exist")
        tensors, _ = read_safetensors(file, meta=meta)
        wrong = sorted(k for k in tensors if weight_map.get(k) != shard)
        if wrong:
            raise CheckpointError(f"shard {file} holds keys that {index.name} does not assign to it: {wrong[:8]}")
        state.update(tensors)
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise CheckpointError(f"{index} lists keys that no shard holds: {absent[:8]}")
    return state, {}


def _numpy_globals() -> dict[str, Any]:
    """The NumPy types a Sana training checkpoint pickles in its RNG state, by qualified name."""
    import importlib

    out: dict[str, Any] = {}
    for name in (
        "numpy.ndarray",
        "numpy.dtype",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray._reconstruct",
        "numpy.dtypes.UInt32DType",
    ):
        module, attr = name.rsplit(".", 1)
        try:
            out[name] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    return out


def _torch_load(path: Path, meta: bool) -> Any:
    # mmap makes a shapes-only (meta) read of a zip checkpoint cheap; the legacy format has no mmap.
    kwargs: dict[str, Any] = {"map_location": "cpu", "weights_only": True, "mmap": meta and zipfile.is_zipfile(path)}
    try:
        try:
            return torch.load(path, **kwargs)
        except pickle.UnpicklingError:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            allowed = _numpy_globals()
            if not unsafe or any(name not in allowed for name in unsafe):
                raise CheckpointError(
                    f"cannot read {path} with torch.load(weights_only=True): it pickles objects other than "
                    f"tensors, containers and NumPy RNG state ({', '.join(unsafe) or 'unknown'})"
                ) from None
            with torch.serialization.safe_globals(list(allowed.values())):
                return torch.load(path, **kwargs)
    except CheckpointError:
        raise
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {type(e).__name__}: {e}") from None


def _unwrap_state(obj: Any, where: str, ema: bool) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict or of one wrapped as Sana's trainer saves it."""
    if ema:
        if not (isinstance(obj, Mapping) and isinstance(obj.get("state_dict_ema"), Mapping)):
            top = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{where} holds no EMA weights ('state_dict_ema'); top-level entries: {top}")
        obj = obj["state_dict_ema"]
    elif isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        if isinstance(obj, Mapping):
            found = ", ".join(f"{k} ({type(v).__name__})" for k, v in list(obj.items())[:8])
        else:
            found = type(obj).__name__
        raise CheckpointError(
            f"{where} does not hold a state dict of tensors (plain, or under 'state_dict' or 'model'); found: {found}"
        )
    return {str(k): v for k, v in obj.items()}


# --- configs -----------------------------------------------------------------------------------------


def _as_config(config: ConfigArg) -> LinearDiTConfig | None:
    """A config from a LinearDiTConfig, a preset name, a JSON file, or a dict (ours or a diffusers
    ``config.json``)."""
    if config is None or isinstance(config, LinearDiTConfig):
        return config
    if isinstance(config, Mapping):
        if "hidden_size" in config:  # our field names; diffusers' config has none of this name
            try:
                return LinearDiTConfig.model_validate(dict(config))
            except ValueError as e:
                raise CheckpointError(f"invalid config= dict: {e}") from e
        return layouts.config_from_diffusers(config)
    if isinstance(config, str) and config in preset_names():
        return LinearDiTConfig.from_name(config)
    path = Path(config)
    if path.suffix == ".json" or path.is_file():
        try:
            parsed = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"cannot read the config file {path}: {e}") from None
        if not isinstance(parsed, dict):
            raise CheckpointError(f"config file {path} does not hold a JSON object")
        return _as_config(parsed)
    return LinearDiTConfig.from_name(str(config))  # raises ConfigError listing the presets


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str]) -> str:
    return ", ".join(
        f"{k}={a.get(k)!r} ({names[1]} {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    )


def _stored_config(raw: _Raw) -> LinearDiTConfig | None:
    fmt = raw.meta.get("format", "")
    if fmt.startswith("linear_dit/") and fmt != FORMAT:
        raise CheckpointError(f"{raw.where} is in format {fmt!r}; this version of linear_dit reads {FORMAT!r}")
    text = raw.meta.get("config") if fmt == FORMAT else raw.meta.get(_SANA_CONFIG_KEY)
    if text is None:
        return None
    try:
        return LinearDiTConfig.model_validate_json(text)
    except ValueError as e:
        raise CheckpointError(f"the config stored in the metadata of {raw.where} is invalid: {e}") from e


def _resolve_config(raw: _Raw, layout: Layout, explicit: LinearDiTConfig | None) -> LinearDiTConfig:
    stored = _stored_config(raw)
    if stored is not None:
        if explicit is not None and explicit.model_dump(exclude={"name"}) != stored.model_dump(exclude={"name"}):
            diff = _differences(
                explicit.model_dump(exclude={"name"}), stored.model_dump(exclude={"name"}), ("", "stored")
            )
            raise CheckpointError(
                f"{raw.where} was saved for config {stored.name!r}, which differs from the config "
                f"{explicit.name!r} passed to load: {diff}"
            )
        return explicit or stored
    if layout == "diffusers" and raw.folder_config is not None:
        from_json = layouts.config_from_diffusers(raw.folder_config)
        if explicit is None:
            return from_json
        # Compare what config.json can express: our eps, flow shift etc. may legitimately differ.
        want, have = layouts.diffusers_config(from_json), layouts.diffusers_config(explicit)
        if want["interpolation_scale"] is None and have["interpolation_scale"] is None:
            del want["sample_size"], have["sample_size"]  # no PE: the training grid changes nothing
        if want != have:
            raise CheckpointError(
                f"config {explicit.name!r} passed to load contradicts {raw.folder_config_path}: "
                + _differences(have, want, ("", "config.json"))
            )
        return explicit
    if explicit is not None:
        return explicit
    matches = _match_presets(raw.state, layout)
    if len(matches) == 1:
        return LinearDiTConfig.from_name(matches[0])
    hint = f"its keys and shapes fit several presets ({', '.join(matches)})" if matches else "it fits no preset"
    raise CheckpointError(
        f"cannot tell the config of the {layout} checkpoint {raw.where}: {hint}; pass config=<preset name, "
        "LinearDiTConfig, or diffusers config.json>"
    )


def _match_presets(state: Mapping[str, torch.Tensor], layout: Layout) -> list[str]:
    """Presets whose exact key set and shapes (and pos_embed, for original checkpoints) fit ``state``."""
    depth = 1 + max((int(m[1]) for k in state if (m := re.match(r"(?:transformer_)?blocks\.(\d+)\.", k))), default=-1)
    keys = {k for k in state if not (layout == "sana" and k == layouts.SANA_POS_EMBED)}
    found = []
    for name in preset_names():
        cfg = LinearDiTConfig.from_name(name)
        if cfg.depth != depth or (cfg.video and layout != "linear_dit"):
            continue
        expected = layouts.expected_shapes(cfg, layout)
        present = {k for k in keys if not layouts._is_dropped(k, layout)}
        if present != set(expected) or any(tuple(state[k].shape) != s for k, s in expected.items()):
            continue
        if layout == "sana" and layouts.SANA_POS_EMBED in state:
            if layouts.sana_pos_embed_mismatch(state[layouts.SANA_POS_EMBED], cfg, exact_grid=True) is not None:
                continue
        found.append(name)
    return found


# --- loading -----------------------------------------------------------------------------------------


def load_state_dict(
    source: Source, config: ConfigArg = None, *, strict: bool = True, ema: bool = False, _meta: bool = False
) -> LoadedState:
    """Read ``source`` into our state dict without building a model; see :func:`load`.

    Returns ``(state_dict, config, layout)``: the tensors under our key names (dtypes as stored),
    the resolved config, and the layout the source was in. With ``strict=False`` missing and
    unexpected keys are dropped with a warning instead of raising (wrong shapes still raise).
    """
    raw = _read(source, ema=ema, meta=_meta)
    layout = detect_layout(raw.state)
    cfg = _resolve_config(raw, layout, _as_config(config))
    state, missing, unexpected = layouts.from_layout(raw.state, cfg, layout, strict=strict)
    if missing or unexpected:
        warnings.warn(
            f"loading {raw.where} non-strictly: {len(missing)} parameters missing (kept at their initial values): "
            f"{missing[:8]}; {len(unexpected)} unexpected keys ignored: {unexpected[:8]}",
            stacklevel=2,
        )
    not_float = sorted(k for k, v in state.items() if not v.is_floating_point())
    if not_float:
        raise CheckpointError(f"{raw.where} holds non-floating-point tensors for parameters: {not_float[:8]}")
    return LoadedState(state, cfg, layout)


def load(
    source: Source,
    config: ConfigArg = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    strict: bool = True,
    ema: bool = False,
) -> LinearDiT:
    """Build a :class:`LinearDiT` from a checkpoint in any layout, in eval mode.

    ``source`` is a file (ours or original, ``.safetensors`` or ``.pth``), a folder (diffusers,
    sharded or not, a diffusers pipeline folder with ``transformer/``, or a folder with a single
    checkpoint file) or a state dict (plain or wrapped). ``config`` is a preset name, a
    :class:`LinearDiTConfig`, a diffusers ``config.json`` path or dict; it is needed only when the
    source does not say (see the module docstring). ``dtype=None`` keeps the stored dtype
    (float32 if the stored tensors mix dtypes). ``device="meta"`` reads only shapes and metadata
    where the file allows it. ``ema=True`` loads a Sana training checkpoint's EMA weights.

    Missing, unexpected or mis-shaped keys raise :class:`CheckpointError` listing them (with
    ``strict=False``, missing parameters keep their fresh initial values, with a warning).
    """
    dev = torch.device(device)
    state, cfg, _ = load_state_dict(source, config, strict=strict, ema=ema, _meta=dev.type == "meta")
    if dtype is None:
        dtypes = {v.dtype for v in state.values()}
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    if len(state) == len(layouts.our_shapes(cfg)):
        with torch.device("meta"):
            model = LinearDiT(cfg)
        model.load_state_dict(state, strict=True, assign=True)
    else:  # strict=False with missing parameters: they keep the fresh initialisation
        with torch.device(dev if dev.type == "meta" else "cpu"):
            model = LinearDiT(cfg)
        model.load_state_dict(state, strict=False)
    return model.to(device=dev, dtype=dtype).eval()
