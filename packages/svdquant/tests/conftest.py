"""Makes shared test helpers importable (pytest runs in importlib mode)."""

import importlib.util
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# test_dit_quality.py imports linear_dit at module level; it is an `integration` test (svdquant does not depend on
# linear-dit), run by `nox -s integration` with every package installed, where it must import.
collect_ignore = (
    ["test_dit_quality.py"]
    if importlib.util.find_spec("linear_dit") is None and os.environ.get("MONOREPO_INTEGRATION") != "1"
    else []
)
