"""Real English text that ships with Python: the stdlib's docstrings and the ``pydoc`` reference topics.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 6 reports WikiText2 perplexity; with no downloads allowed we train and evaluate the demonstration model on
this corpus instead (about 1.3 MB on CPython 3.11). It is deterministic for a given Python version: the modules
are taken in sorted order, and every document (a module's docstring, a public function's, a public class's with
its methods', one ``pydoc_data`` topic) goes to train / validation / test by a CRC32 of its name (90 / 5 / 5 %).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qserve.errors import InputError

__all__ = ["TextSplits", "stdlib_documents", "stdlib_splits", "write_text_file"]

Split = Literal["train", "validation", "test"]


def stdlib_documents() -> list[tuple[str, str]]:
    """``(name, text)`` of every non-empty document, in a fixed order, duplicates dropped.

    Collected in a fresh interpreter without site-packages (``python -I -S``): libraries imported here may patch
    stdlib functions (e.g. ``inspect.getfile``), which would change which docstrings count as the stdlib's own.
    """
    script = Path(__file__).with_name("_stdlib_docs.py")
    proc = subprocess.run([sys.executable, "-I", "-S", str(script)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise InputError(f"collecting the stdlib docstrings failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return [(str(name), str(text)) for name, text in json.loads(proc.stdout.decode("utf-8"))]


def _split_of(name: str) -> Split:
    bucket = zlib.crc32(name.encode()) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


@dataclass(frozen=True)
class TextSplits:
    """The corpus documents by split."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def text(self, split: Split) -> str:
        """The documents of ``split`` joined by blank lines."""
        if split not in ("train", "validation", "test"):
            raise InputError(f"split must be 'train', 'validation' or 'test', found {split!r}")
        return "\n\n".join(getattr(self, split))


def stdlib_splits() -> TextSplits:
    """The stdlib corpus split by document."""
    by_split: dict[Split, list[str]] = {"train": [], "validation": [], "test": []}
    for name, text in stdlib_documents():
        by_split[_split_of(name)].append(text)
    return TextSplits(tuple(by_split["train"]), tuple(by_split["validation"]), tuple(by_split["test"]))


def write_text_file(path: str | Path, split: Split = "test") -> Path:
    """Write one split of the stdlib corpus to a UTF-8 text file (for ``qserve ppl`` and calibration)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(stdlib_splits().text(split) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
