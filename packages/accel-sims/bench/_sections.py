"""BENCHMARKS.md sections: each bench script owns the block between its own begin/end markers."""

from __future__ import annotations

import os
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def replace_section(text: str, begin: str, end: str, path: Path = BENCHMARKS_MD) -> None:
    """Put `text` (which starts with `begin` and ends with `end`) in place of the old block, or append it.

    Written to a temporary file and renamed, so an interrupted run never leaves a half-written BENCHMARKS.md.
    """
    old = path.read_text() if path.exists() else "# accel-sims benchmarks\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
