"""Helpers of the ``svdquant`` CLI: one-line errors, building a model from ``--arch``, reading tensor files, tables.

SVDQuant (Li et al., ICLR 2025), Sec. 4-5: the command line around :func:`svdquant.quantize_`,
:func:`svdquant.save_quantized`/:func:`svdquant.load_quantized` and :func:`svdquant.apply_lora`. Kept apart from
:mod:`svdquant.cli` so that the command module stays a list of commands; like it, this module imports torch only
inside functions, so ``svdquant --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from torch import Tensor, nn

_ARCH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


@contextlib.contextmanager
def clean_errors() -> Iterator[None]:
    """Turn the package's own errors into one line on stderr and exit code 2 (no traceback)."""
    from pydantic import ValidationError

    from svdquant.errors import SVDQuantError

    try:
        yield
    except (SVDQuantError, ValidationError) as exc:
        raise fail(one_line(exc)) from None
    except OSError as exc:  # unreadable input, unwritable output, full disk
        raise fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


def load_factory(arch: str) -> Callable[[], nn.Module]:
    """The zero-argument model factory named ``module:function`` (the module must be importable)."""
    from svdquant.errors import InputError

    if not _ARCH_RE.match(arch):
        raise InputError(f"--arch must name a factory as 'module:function' (e.g. 'my_models:tiny_dit'), found {arch!r}")
    module_name, func_name = arch.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"--arch {arch!r}: cannot import module {module_name!r} ({e}); is it on PYTHONPATH?") from e
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise InputError(f"--arch {arch!r}: expected a callable {func_name!r} in {module_name!r}, found {factory!r}")
    return factory


def build_model(arch: str) -> nn.Module:
    """Call the ``--arch`` factory; the result must be an ``nn.Module``, put in eval mode."""
    from torch import nn

    from svdquant.errors import InputError

    factory = load_factory(arch)
    try:
        model = factory()
    except Exception as e:
        raise InputError(f"--arch {arch!r}: the factory raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise InputError(f"--arch {arch!r}: expected the factory to return an nn.Module, found {type(model).__name__}")
    return model.eval()


def read_tensors(path: Path, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of the safetensors file ``path`` (``what`` names it in errors)."""
    from safetensors import SafetensorError, safe_open

    from svdquant.errors import CheckpointError, InputError

    if not path.is_file():
        raise InputError(f"{what} {str(path)!r}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 -- safe_open has no __iter__
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{what} {str(path)!r}: expected a safetensors file, found an unreadable one ({e})"
        ) from e
    return tensors, metadata


def load_float_model(arch: str, weights: Path) -> nn.Module:
    """The ``--arch`` model with the float weights of ``weights`` loaded strictly."""
    from svdquant.errors import CheckpointError

    tensors, _ = read_tensors(weights, "model weights")
    model = build_model(arch)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"model weights {str(weights)!r} do not fit --arch {arch!r}: {one_line(e)}") from e
    return model


def calibration_batches(tensors: dict[str, Tensor], batch_size: int) -> list[Tensor | tuple[Tensor, ...]]:
    """Split the calibration file's tensors into batches: key ``inputs``, or ``arg0``, ``arg1``, ... (one per
    positional argument of the model, all with the same leading size)."""
    from svdquant.errors import InputError

    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, found {batch_size}")
    if "inputs" in tensors:
        if len(tensors) != 1:
            raise InputError(
                f"calibration file: expected only the key 'inputs', found also {sorted(set(tensors) - {'inputs'})}"
            )
        args = [tensors["inputs"]]
    else:
        n_args = len(tensors)
        expected = [f"arg{i}" for i in range(n_args)]
        if n_args == 0 or sorted(tensors) != sorted(expected):
            raise InputError(
                f"calibration file: expected the key 'inputs' or keys {expected or ['arg0', '...']}, "
                f"found {sorted(tensors)}"
            )
        args = [tensors[k] for k in expected]
    sizes = {int(a.shape[0]) if a.dim() else 0 for a in args}
    if len(sizes) != 1 or 0 in sizes:
        found = [tuple(a.shape) for a in args]
        raise InputError(f"calibration tensors must share a non-zero leading (batch) size, found shapes {found}")
    total = sizes.pop()
    out: list[Tensor | tuple[Tensor, ...]] = []
    for start in range(0, total, batch_size):
        chunk = tuple(a[start : start + batch_size] for a in args)
        out.append(chunk[0] if "inputs" in tensors else chunk)
    return out


def parse_lora_pair(spec: str) -> tuple[Path, float]:
    """``PATH=STRENGTH`` (the strength after the last ``=``)."""
    from svdquant.errors import InputError

    path, sep, strength = spec.rpartition("=")
    try:
        if not sep or not path:
            raise ValueError
        return Path(path), float(strength)
    except ValueError:
        raise InputError(f"--lora expects PATH=STRENGTH (e.g. style.safetensors=0.8), found {spec!r}") from None


def fmt_bytes(n: float) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain left-aligned text table of ``rows`` (``columns``: key, header); floats to 2 decimals."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    cells = [[cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
