"""The public API resolves lazily and `import svdquant` stays free of torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import svdquant


def test_every_public_name_resolves() -> None:
    for name in svdquant.__all__:
        assert getattr(svdquant, name) is not None, name


def test_import_does_not_import_torch() -> None:
    code = "import sys, svdquant; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)  # the example writes its checkpoint to the working directory
    exec(compile(blocks[0], "README.md", "exec"), {})
