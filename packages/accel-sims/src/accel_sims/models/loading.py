"""Loading Hugging Face-layout checkpoints from a local folder, strictly: every key and shape must match.

SpAtten (arXiv:2012.09852), Sec. 5 evaluates BERT and GPT-2; the algorithms here run on real checkpoints, so the
loader reads what Hugging Face writes (`config.json` plus `model.safetensors`, `pytorch_model.bin`, or a sharded
`*.index.json` of either) without `transformers`. Nothing is inferred from file names; a missing or unexpected key or
a wrong shape is a `ModelLoadError` naming the key and the file, and the model is never left half loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from accel_sims.errors import ModelLoadError

_SINGLE = ("model.safetensors", "pytorch_model.bin")
_INDEXED = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def read_config(folder: str | Path) -> dict[str, Any]:
    """The parsed `config.json` of a model folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{Path(folder)}: no config.json (expected a Hugging Face-layout model folder)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return raw


def _read_file(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or corrupt file: name it
        raise ModelLoadError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ModelLoadError(f"{path}: expected a state dict of tensors")
    return dict(data)


def read_weights(folder: str | Path) -> dict[str, tuple[Tensor, str]]:
    """key -> (tensor, file it came from), from the single or sharded checkpoint of `folder`."""
    folder = Path(folder)
    for name in _SINGLE:
        if (folder / name).is_file():
            return {k: (v, name) for k, v in _read_file(folder / name).items()}
    for name in _INDEXED:
        index = folder / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ModelLoadError(f"{index}: expected a JSON object with a 'weight_map' ({e})") from None
            out: dict[str, tuple[Tensor, str]] = {}
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise ModelLoadError(f"{index}: shard {shard} is listed but missing")
                tensors = _read_file(folder / shard)
                for key, file in weight_map.items():
                    if file == shard:
                        if key not in tensors:
                            raise ModelLoadError(f"{folder / shard}: key {key} listed in {name} is missing")
                        out[key] = (tensors[key], shard)
            return out
    raise ModelLoadError(f"{folder}: no weights; expected one of {list(_SINGLE + _INDEXED)}")


def load_strict(
    model: nn.Module,
    folder: str | Path,
    prefixes: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> None:
    """Copy the folder's weights into `model`, checking every key and shape first.

    `prefixes` are stripped from checkpoint keys when present (e.g. `bert.` of a task model); checkpoint keys ending
    with a suffix in `ignore` (buffers such as `position_ids`, heads the minimal model does not have) are skipped.
    """
    weights = read_weights(folder)
    expected = model.state_dict()
    ignore = tuple(ignore)
    found: dict[str, tuple[Tensor, str]] = {}
    for key, (tensor, file) in weights.items():
        name = key
        for p in prefixes:
            if name.startswith(p):
                name = name[len(p) :]
                break
        if name not in expected and any(name.endswith(s) or name.startswith(s) for s in ignore):
            continue
        if name not in expected:
            raise ModelLoadError(f"{Path(folder) / file}: unexpected key {key!r} for a {type(model).__name__}")
        found[name] = (tensor, file)
    for name, ref in expected.items():
        if name not in found:
            raise ModelLoadError(f"{Path(folder)}: missing key {name!r} for a {type(model).__name__}")
        tensor, file = found[name]
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ModelLoadError(
                f"{Path(folder) / file}: key {name!r} has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)} "
                "from config.json"
            )
    model.load_state_dict({k: t.to(expected[k].dtype) for k, (t, _) in found.items()}, strict=True)


def config_value(raw: dict[str, Any], key: str, folder: str | Path, default: Any = ...) -> Any:
    """`raw[key]`, or a ModelLoadError naming the key and config.json when it is missing and has no default."""
    if key in raw and raw[key] is not None:
        return raw[key]
    if default is ...:
        raise ModelLoadError(f"{Path(folder) / 'config.json'}: missing field {key!r}")
    return default
