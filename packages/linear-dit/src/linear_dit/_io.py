"""Atomic file writes and checked safetensors reads for the checkpoint code.

A crash or an error while writing never leaves a half-written file where a user's checkpoint
was: everything is written to a temporary file in the destination folder, flushed to disk and
renamed over the destination in one step. Reads turn the many ways a truncated or foreign file
fails (header errors, short reads, OS errors) into one :class:`~linear_dit.errors.CheckpointError`
that names the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from linear_dit.errors import CheckpointError

__all__ = ["atomic_output", "atomic_write_text", "read_safetensors"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same folder so that the rename is atomic, and it gets the
    permissions a plain ``open()`` would give (``mkstemp`` makes files owner-only). On error it is
    removed and ``path`` keeps its previous content.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # Flush the bytes before the rename, so that a power cut cannot leave an empty file behind.
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def read_safetensors(
    path: Path,
    error: type[Exception] = CheckpointError,
    what: str = "",
    *,
    meta: bool = False,
    keep: frozenset[str] = frozenset(),
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and ``__metadata__`` of a safetensors file; a truncated or corrupt file raises
    ``error`` naming the file (``what`` says what the file was meant to be).

    With ``meta=True`` only the header is read and the tensors are shape-and-dtype placeholders
    on the meta device, except the keys in ``keep``, which are read for real (small tensors
    whose values matter to config detection).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            out: dict[str, torch.Tensor] = {}
            for key in f.keys():  # noqa: SIM118 -- safe_open objects have keys() but no __iter__
                if meta and key not in keep:
                    sl = f.get_slice(key)
                    out[key] = torch.empty(sl.get_shape(), dtype=_dtype(sl.get_dtype()), device="meta")
                else:
                    out[key] = f.get_tensor(key)
        return out, metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        name = f"{what} {path}" if what else str(path)
        raise error(f"cannot read {name} as safetensors (truncated or corrupt?): {e}") from None


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise CheckpointError(f"unsupported safetensors dtype {name!r}")
    return _DTYPES[name]
