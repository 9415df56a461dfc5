import os
import re
from pathlib import Path

from lego_hw.tools import tool_or_skip

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, capsys):
    for tool in ("iverilog", "vvp", "yosys"):
        tool_or_skip(tool)
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "{'C': 'stationary', 'A': 'systolic', 'B': 'systolic'}" in out
    assert (tmp_path / "rtl" / "gemm_os_ws.v").is_file()
