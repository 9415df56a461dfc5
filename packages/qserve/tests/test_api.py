"""The public API resolves lazily, `import qserve` stays free of torch, and the README's Python example runs.

QServe / QoQ (Lin et al., arXiv 2405.04532): the package's front door, checked as users meet it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from qs_testing import tiny_model

import qserve
from qserve.loading import save_model
from qserve.tokenizer import train_bpe_tokenizer


def test_every_public_name_resolves() -> None:
    for name in qserve.__all__:
        assert getattr(qserve, name) is not None, name


def test_import_does_not_import_torch() -> None:
    code = "import sys, qserve; assert 'torch' not in sys.modules and 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    # The example's files: a small model folder at path/to/llama and two local text files.
    text = " ".join(f"Sentence {i} says that the value of item {i % 7} is {i * 3 % 11}." for i in range(400))
    tok = train_bpe_tokenizer([text], vocab_size=320)
    model = tiny_model(tok.vocab_size, max_position_embeddings=512)
    save_model(model, tmp_path / "path/to/llama", extra_files={"tokenizer.json": tok.inner.to_str()})
    (tmp_path / "calib.txt").write_text(text)
    (tmp_path / "test.txt").write_text(text[: len(text) // 2])
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert (tmp_path / "llama.w4a8kv4.safetensors").is_file()
