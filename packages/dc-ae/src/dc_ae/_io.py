"""Atomic file writes: a crash or an error never leaves a half-written file where a user's was."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_output", "read_safetensors"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same folder so the rename is atomic, and it gets the
    permissions a plain ``open()`` would (mkstemp makes it owner-only). On error it is removed
    and ``path`` keeps its previous content.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # Flush the bytes to disk before the rename, so a power cut cannot leave an empty file.
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def read_safetensors(path: Path, error: type[Exception], what: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and ``__metadata__`` of a safetensors file; a truncated or corrupt file raises ``error``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise error(f"cannot read {what} {path} as safetensors (truncated or corrupt?): {e}") from None
