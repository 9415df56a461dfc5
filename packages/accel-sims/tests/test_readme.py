import os
import re
from pathlib import Path

import pytest

from accel_sims.errors import ModelLoadError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    from accel_sims.spatten.accuracy import minilm_folder

    try:
        minilm_folder()
    except ModelLoadError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the model package: {e}")
        pytest.skip(str(e))
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert "'dram_reduction': 5.85" in out[0]
    assert float(out[1].split()[1]) > 1.5
