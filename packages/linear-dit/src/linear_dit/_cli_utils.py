"""Helpers of the ``linear-dit`` CLI: one-line errors, model loading from an argument, tables.

Kept apart from :mod:`linear_dit.cli` so that the command module stays a list of commands. Like
it, this module imports torch only inside functions, so ``linear-dit --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import torch

    from linear_dit.config import LinearDiTConfig
    from linear_dit.linear_dit import LinearDiT

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the package's own errors into one line on stderr and exit code 2 (no traceback)."""
    from pydantic import ValidationError

    from linear_dit.errors import LinearDiTError

    try:
        yield
    except (LinearDiTError, ValidationError) as exc:
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


def preset(name: str, what: str = "") -> LinearDiTConfig:
    """The preset ``name``, or an error that tells a missing file from a misspelt preset."""
    from linear_dit.config import LinearDiTConfig
    from linear_dit.errors import ConfigError

    try:
        return LinearDiTConfig.from_name(name)
    except ConfigError as exc:
        if os.sep in name or Path(name).suffix in CHECKPOINT_SUFFIXES:
            raise ConfigError(f"{what}{name!r}: no such checkpoint file or folder (nor a preset)") from None
        raise ConfigError(f"{what}{name!r} is neither an existing checkpoint file/folder nor a preset: {exc}") from None


@dataclass
class Loaded:
    model: LinearDiT
    source: str  # how the weights were found, for people
    random_weights: bool


def load_model(model: str, config: str | None, *, dtype: torch.dtype | None = None, device: str = "cpu") -> Loaded:
    """A checkpoint (any layout) or, with a warning, a preset with seeded random weights."""
    import torch

    import linear_dit
    from linear_dit.errors import ConfigError

    path = Path(model)
    if path.exists():
        net = linear_dit.load(path, config=config, dtype=dtype, device=device).eval()
        return Loaded(net, f"checkpoint {path}", False)
    if config is not None:
        raise ConfigError(f"{model!r}: no such checkpoint file or folder (--config is for checkpoints)")
    cfg = preset(model)
    torch.manual_seed(0)
    net = linear_dit.LinearDiT(cfg).eval().to(device=device, dtype=dtype or torch.float32)
    warn(f"WARNING: {model} is a preset with RANDOM, UNTRAINED weights (no checkpoint was loaded).")
    return Loaded(net, f"preset {model} (random weights)", True)


def model_config(model: str, config: str | None) -> LinearDiTConfig:
    """The config of a preset name or of a checkpoint (read without building the model in memory)."""
    import linear_dit

    path = Path(model)
    if path.exists():
        import torch

        with torch.device("meta"):
            # Loading onto the meta device reads shapes and metadata only.
            return linear_dit.load(path, config=config, device="meta").config
    return preset(model)


def fmt_count(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def parse_dtype(name: str) -> torch.dtype:
    import torch

    from linear_dit.errors import InputError

    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    table |= {"fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise InputError(f"--dtype must be one of fp32, bf16, fp16; got {name!r}")
    return table[name]


def latent_side(resolution: int, compression: int, patch: int) -> int:
    from linear_dit.errors import InputError

    if resolution % compression:
        raise InputError(f"--resolution {resolution} is not a multiple of the autoencoder's {compression}x compression")
    side = resolution // compression
    if side % patch:
        raise InputError(f"latent side {side} (= {resolution}/{compression}) is not a multiple of patch size {patch}")
    return side
