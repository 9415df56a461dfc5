"""Helpers of the ``dc-ae`` CLI: clean one-line errors, model loading from ``--model``, LPIPS set-up.

Kept apart from :mod:`dc_ae.cli` so that the command module stays a list of commands. Like it,
this module imports torch only inside functions, so ``dc-ae --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import torch

    from dc_ae.autoencoder import DCAE
    from dc_ae.config import DCAEConfig
    from dc_ae.metrics import LPIPS


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the package's own errors into one line on stderr and exit code 2 (no traceback)."""
    from pydantic import ValidationError

    from dc_ae.errors import DCAEError

    try:
        yield
    except (DCAEError, ValidationError) as exc:
        raise fail(one_line(exc)) from None
    except OSError as exc:  # unreadable input, unwritable output, full disk
        raise fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


def warn(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.YELLOW, bold=True)


@dataclass
class Loaded:
    model: DCAE
    source: str  # how the weights were found, for people
    random_weights: bool


def load_model(model: str | None, config: str | None) -> Loaded:
    """``--model`` -> a model in eval mode: the embedded default, a checkpoint, or a random preset."""
    import torch

    import dc_ae
    from dc_ae.errors import CheckpointError, ConfigError
    from dc_ae.pretrained import DEFAULT_MODEL, default_weights_path, load_default

    if model is None:
        if config is not None:
            raise ConfigError("--config applies to a checkpoint given with --model, not to the embedded default")
        return Loaded(load_default(), f"embedded default {DEFAULT_MODEL} ({default_weights_path()})", False)
    path = Path(model)
    if path.exists():
        try:
            net = dc_ae.load(path, config=config).float()
        except CheckpointError as exc:
            with_config = f" with --config {config}" if config else ""
            raise CheckpointError(f"--model {path}{with_config}: {exc}") from None
        return Loaded(net, f"checkpoint {path}", False)
    if config is not None:
        raise ConfigError(f"--model {model!r}: no such checkpoint file or folder (--config is for checkpoints)")
    cfg = preset(model, "--model ")
    torch.manual_seed(0)  # the same random model on every run, so its outputs at least repeat
    net = dc_ae.DCAE(cfg).eval()
    warn(
        f"WARNING: --model {model} is a preset with RANDOM, UNTRAINED weights (no checkpoint was loaded). "
        "Its outputs are meaningless and its scores say nothing about the reconstruction quality of "
        f"{model}. Pass a checkpoint file, or omit --model for the embedded trained model."
    )
    return Loaded(net, f"preset {model} (random weights)", True)


def preset(name: str, what: str = "") -> DCAEConfig:
    """The preset ``name``, or an error that tells a missing file from a misspelt preset."""
    from dc_ae.config import DCAEConfig
    from dc_ae.errors import ConfigError

    try:
        return DCAEConfig.from_name(name)
    except ConfigError as exc:
        if os.sep in name or Path(name).suffix in (".safetensors", ".pt", ".pth", ".bin", ".ckpt"):
            raise ConfigError(
                f"{what}{name!r}: no such checkpoint file or folder (nor a preset; see `dc-ae info --presets`)"
            ) from None
        raise ConfigError(f"{what}{name!r} is neither an existing checkpoint file/folder nor a preset: {exc}") from None


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_model(cfg: DCAEConfig) -> DCAE:
    import torch

    from dc_ae.autoencoder import DCAE

    # Parameter counts need shapes, not memory: a meta model of f128c512 allocates nothing.
    with torch.device("meta"):
        return DCAE(cfg)


def encode_any_size(model: DCAE, x: torch.Tensor, tile_size: int | None) -> torch.Tensor:
    from dc_ae.tiling import tiled_encode

    f = model.spatial_compression
    if tile_size is None:
        # One tile that covers the padded image is plain whole-image encoding of the padded image.
        tile_size = f * math.ceil(max(x.shape[-2:]) / f)
    return tiled_encode(model, x, tile_size=tile_size)  # [B, c, ceil(H/f), ceil(W/f)]


def check_image_size(model: DCAE, x: torch.Tensor) -> None:
    from dc_ae.errors import InputError

    f, (h, w) = model.spatial_compression, x.shape[-2:]
    if h < f or w < f:
        raise InputError(f"image {h}x{w} is smaller than one latent pixel of {model.config.name} ({f}x{f} pixels)")


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


# Layers of torchvision's vgg16/alexnet whose outputs the official LPIPS compares (relu1_2 ... relu5_3).
LPIPS_ARCHS = {
    "vgg16": ("features.3", "features.8", "features.15", "features.22", "features.29"),
    "alexnet": ("features.1", "features.4", "features.7", "features.9", "features.11"),
}


def build_lpips(net: Path, arch: str, layers: str | None, lin: Path | None) -> LPIPS:
    import importlib

    from torch import nn

    from dc_ae.errors import ConfigError
    from dc_ae.metrics import PerceptualLoss

    if arch in LPIPS_ARCHS:
        try:
            import torchvision
        except ImportError:
            raise ConfigError(
                f"--lpips-arch {arch} needs torchvision, which is not installed; install it, or pass "
                "--lpips-arch module:function naming a function that builds your feature network"
            ) from None
        backbone = getattr(torchvision.models, arch)(weights=None)
        names = tuple(layers.split(",")) if layers else LPIPS_ARCHS[arch]
    else:
        module_name, sep, func_name = arch.partition(":")
        if not sep or not module_name or not func_name:
            raise ConfigError(f"--lpips-arch must be one of {sorted(LPIPS_ARCHS)} or module:function, found {arch!r}")
        if not layers:
            raise ConfigError(f"--lpips-arch {arch} needs --lpips-layers (comma-separated submodule names)")
        try:
            factory = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--lpips-arch {arch}: cannot import it: {exc}") from None
        backbone = factory()
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"--lpips-arch {arch} returned a {type(backbone).__name__}, not a torch nn.Module")
        names = tuple(layers.split(","))
    # The network file's backbone keys load strictly into the backbone; lin keys, if any, with it.
    lpips = PerceptualLoss.from_local(net, backbone=backbone, layer_names=names).lpips
    if lin is not None:
        lpips = PerceptualLoss.from_local(lin, backbone=backbone, layer_names=names).lpips
    assert lpips is not None
    return lpips
