"""Output shared by the qserve benchmarks (QServe, Lin et al., arXiv 2405.04532): one JSON report per run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit_report(report: dict[str, Any], path: Path | None) -> None:
    """Print ``report`` as indented JSON and, when ``path`` is given, write the same text there."""
    text = json.dumps(report, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")
