"""The mapping benchmark script (bench/bench_pointacc_mapping.py): a tiny run agrees with the references, and
--write replaces only its own section of BENCHMARKS.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_pointacc_mapping.py"


def _load() -> ModuleType:
    # The bench scripts import their shared helper (bench/_sections.py) from their own folder, as `python bench/x.py`
    # puts it on sys.path.
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_pointacc_mapping", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_run_matches_references() -> None:
    bench = _load()
    rows = bench.bench_size(512)
    assert [r[1] for r in rows] == [
        "farthest_point_sampling", "knn", "ball_query", "voxelize", "voxel_downsample", "kernel_map", "kernel_map"
    ]  # fmt: skip
    assert all(r[-1] == "yes" for r in rows)


def test_write_replaces_only_its_section(tmp_path: Path) -> None:
    bench = _load()
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# title\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n")
    bench.replace_section(f"{bench.BEGIN}\nfirst\n{bench.END}", bench.BEGIN, bench.END, md)
    bench.replace_section(f"{bench.BEGIN}\nsecond\n{bench.END}", bench.BEGIN, bench.END, md)
    text = md.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count(bench.BEGIN) == 1 and text.index("keep me") < text.index(bench.BEGIN)
