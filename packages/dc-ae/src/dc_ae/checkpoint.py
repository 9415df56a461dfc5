"""Saving and loading DC-AE weights: our self-describing safetensors, efficientvit and diffusers.

Our format is one safetensors file whose ``__metadata__`` holds ``format`` (``dc_ae/1``), the
config as JSON and the package version. ``load`` also reads the original release
(``model.safetensors`` or a ``.pt``/``.pth`` state dict, optionally wrapped in ``state_dict``,
``model`` or ``module``) and the diffusers ``AutoencoderDC`` folder or file with its
``config.json``. The layout is detected from the keys, the config comes from metadata, a
``config.json`` or the caller -- never from a file name -- and the keys are checked strictly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from dc_ae import layouts
from dc_ae._io import atomic_output, read_safetensors
from dc_ae.autoencoder import DCAE
from dc_ae.config import DCAEConfig, preset_names
from dc_ae.errors import CheckpointError

__all__ = ["save", "load", "load_state_dict", "detect_layout", "FORMAT"]

FORMAT = "dc_ae/1"
Layout = Literal["dc_ae", "efficientvit", "diffusers"]
Source = str | os.PathLike[str] | Mapping[str, torch.Tensor]


def save(model: DCAE, path: str | os.PathLike[str], layout: Layout = "dc_ae") -> Path:
    """Write ``model`` as one safetensors file, atomically (temporary file, then rename).

    ``layout="diffusers"`` writes ``diffusion_pytorch_model.safetensors`` + ``config.json`` into
    the folder ``path``; ``"efficientvit"`` writes the original release layout plus our metadata.
    """
    from dc_ae import __version__

    cfg = model.config
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": cfg.model_dump_json(), "dc_ae_version": __version__}
    path = Path(path)
    if layout == "dc_ae":
        _atomic_save(state, path, meta)
        return path
    if layout == "efficientvit":
        _atomic_save(layouts.to_efficientvit(state, cfg), path, {**meta, "format": "pt"})
        return path
    if layout == "diffusers":
        dcfg = layouts.diffusers_config(cfg)  # raises for configs diffusers cannot express: before any write
        path.mkdir(parents=True, exist_ok=True)
        _atomic_save(layouts.to_diffusers(state, cfg), path / "diffusion_pytorch_model.safetensors", {"format": "pt"})
        _atomic_write_text(path / "config.json", json.dumps(dcfg, indent=2))
        return path
    raise CheckpointError(f"unknown layout {layout!r}; expected dc_ae, efficientvit or diffusers")


def _atomic_save(state: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    with atomic_output(path) as tmp:
        save_file(state, tmp, metadata=meta)


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def detect_layout(keys: Iterable[str]) -> Layout:
    """Which layout a set of state-dict keys is in."""
    keys = set(keys)
    if any(".op_list." in k or k.startswith("encoder.project_in.") for k in keys):
        return "efficientvit"
    if any(k.startswith("encoder.down_blocks.") or k.startswith("decoder.up_blocks.") for k in keys):
        return "diffusers"
    if any(k.startswith("encoder.stages.") or k.startswith("decoder.stages.") for k in keys):
        return "dc_ae"
    raise CheckpointError(
        f"not a DC-AE checkpoint: no encoder/decoder keys of a known layout (first keys: {sorted(keys)[:5]})"
    )


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
        except Exception as e:  # torch raises several types for truncated or foreign pickles
            raise CheckpointError(f"cannot read {path}: {e}") from e
        for wrapper in ("ema_state_dict", "state_dict", "model", "module"):
            if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path} does not hold a state dict of tensors")
        return dict(obj), {}
    return read_safetensors(path, CheckpointError, "checkpoint")


def _config_json(folder: Path) -> dict[str, object] | None:
    p = folder / "config.json"
    if not p.exists():
        return None
    try:
        return dict(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot parse {p}: {e}") from e


def _resolve_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("model.safetensors", "diffusion_pytorch_model.safetensors", "model.pt", "model.pth"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"folder {path} holds no model.safetensors or diffusion_pytorch_model.safetensors")
    return path


def _as_config(config: DCAEConfig | str | None) -> DCAEConfig | None:
    if isinstance(config, str):
        return DCAEConfig.from_name(config)
    return config


def _match_presets(state: Mapping[str, torch.Tensor], layout: Layout) -> list[str]:
    """Presets whose exact key set and shapes equal ``state`` in ``layout``."""
    found = []
    for name in preset_names():
        try:
            _to_ours(dict(state), DCAEConfig.from_name(name), layout)
        except CheckpointError:
            continue
        found.append(name)
    return found


def _to_ours(state: dict[str, torch.Tensor], cfg: DCAEConfig, layout: Layout) -> dict[str, torch.Tensor]:
    if layout == "efficientvit":
        return layouts.from_efficientvit(state, cfg)
    if layout == "diffusers":
        return layouts.from_diffusers(state, cfg)
    names = {k: k for k in layouts._our_keys(cfg)}
    layouts.check_keys(state, names, cfg, "dc_ae")
    return state


def load_state_dict(
    source: Source, config: DCAEConfig | str | None = None
) -> tuple[DCAEConfig, dict[str, torch.Tensor]]:
    """Read ``source`` into (config, our state dict) without building a model. See :func:`load`."""
    meta: dict[str, str] = {}
    folder_cfg: dict[str, object] | None = None
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        file = _resolve_file(path)
        state, meta = _read_file(file)
        folder_cfg = _config_json(file.parent)
    layout = detect_layout(state.keys())
    cfg = _as_config(config)
    if "config" in meta:
        try:
            stored = DCAEConfig.model_validate_json(meta["config"])
        except ValueError as e:
            raise CheckpointError(f"the config stored in the checkpoint metadata is invalid: {e}") from e
        # An explicit config that contradicts the file's own would load the weights under the wrong
        # architecture or scaling factor whenever the shapes happen to agree (in vs mix presets).
        if cfg is not None and cfg.model_dump(exclude={"name"}) != stored.model_dump(exclude={"name"}):
            raise CheckpointError(
                f"checkpoint {source} was saved for config {stored.name!r}, which differs from the config "
                f"{cfg.name!r} passed to load: "
                + ", ".join(
                    f"{k}={v!r} (stored {getattr(stored, k)!r})"
                    for k, v in cfg.model_dump(exclude={"name"}).items()
                    if getattr(stored, k) != v
                )
            )
        cfg = cfg if cfg is not None else stored
    if cfg is None and folder_cfg is not None:
        if "model_name" in folder_cfg:  # efficientvit's PyTorchModelHubMixin config.json
            cfg = DCAEConfig.from_name(str(folder_cfg["model_name"]))
        elif layout == "diffusers":
            cfg = layouts.config_from_diffusers(folder_cfg)
    if cfg is None:
        matches = _match_presets(state, layout)
        if len(matches) != 1:
            hint = f"the keys fit several presets ({', '.join(matches)})" if matches else "the keys fit no preset"
            raise CheckpointError(
                f"cannot tell the config of this {layout} checkpoint: {hint}; pass config=<preset name or "
                "DCAEConfig>, or put a config.json beside it"
            )
        cfg = DCAEConfig.from_name(matches[0])
    return cfg, _to_ours(state, cfg, layout)


def load(
    source: Source,
    config: DCAEConfig | str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DCAE:
    """Build a :class:`DCAE` from a file, a folder or a state dict in any supported layout.

    Missing, unexpected or mis-shaped keys raise :class:`~dc_ae.errors.CheckpointError` listing
    them; nothing is half-loaded. The model is returned in eval mode (BatchNorm stages need it).
    """
    cfg, state = load_state_dict(source, config)
    with torch.device("meta"):
        model = DCAE(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else model
    return model.eval()
