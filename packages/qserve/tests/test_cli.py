"""The ``qserve`` CLI (QServe, Lin et al., arXiv 2405.04532, Sec. 4-5) through typer's runner on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qs_testing import tiny_model
from typer.testing import CliRunner

from qserve.cli import app
from qserve.loading import save_model
from qserve.tokenizer import train_bpe_tokenizer

runner = CliRunner()
TEXT = " ".join(
    f"The {a} {b} of the {c} returns a {d} value when the {e} is set."
    for a in ("first", "second", "third", "last", "next")
    for b in ("item", "element", "record", "field")
    for c in ("list", "table", "queue", "stream")
    for d in ("new", "copy", "sorted", "default")
    for e in ("flag", "option")
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = train_bpe_tokenizer([TEXT], vocab_size=300)
    model = tiny_model(tok.vocab_size, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    folder = tmp_path_factory.mktemp("cli") / "model"
    save_model(model, folder, extra_files={"tokenizer.json": tok.inner.to_str()})
    (folder.parent / "text.txt").write_text(TEXT)
    return folder


def _ok(args: list[str]) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("method", ["qoq", "rtn-w4a8kv4"])
def test_quantize_then_ppl_and_generate(model_dir: Path, method: str) -> None:
    out = model_dir.parent / method / "model.qserve.safetensors"
    out.parent.mkdir()
    text = model_dir.parent / "text.txt"
    q = _ok(["quantize", str(model_dir), str(text), str(out), "--method", method, "--samples", "4", "--seq-len", "32"])
    assert out.is_file() and q["kv_bits"] == 4 and q["quantized_linears"] == 14
    assert (out.parent / "tokenizer.json").is_file()  # copied beside the quantized file for ppl/generate
    p_float = _ok(["ppl", str(model_dir), str(text), "--seq-len", "64"])["perplexity"]
    p_quant = _ok(["ppl", str(out), str(text), "--seq-len", "64"])["perplexity"]
    assert p_float > 1 and p_quant > 1 and p_quant != p_float
    g = _ok(["generate", str(out), "The first", "The last item", "--max-tokens", "5"])
    assert [o["tokens"] for o in g["outputs"]] == [5, 5]
    # Greedy output of the engine equals the stream's concatenation.
    res = runner.invoke(app, ["generate", str(out), "The first", "--max-tokens", "5", "--stream"])
    assert res.exit_code == 0 and res.stdout.strip() == g["outputs"][0]["text"].strip()


def test_bench_reports_both_modes(model_dir: Path) -> None:
    r = _ok(["bench", str(model_dir), "--requests", "6", "--max-num-seqs", "3"])
    assert r["same_outputs"] is True
    assert r["inflight_tokens_per_s"] > 0 and r["static_tokens_per_s"] > 0
    assert r["kv_bytes_per_token"] == r["kv_bytes_per_token_fp16"]  # a float model has a 16-bit cache


def test_errors_are_one_line(model_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["ppl", str(tmp_path / "missing"), str(model_dir.parent / "text.txt")])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["ppl", str(model_dir), str(tmp_path / "none.txt")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["generate", str(model_dir), "hi", "--top-p", "1.5"])
    assert res.exit_code == 2 and "top_p" in res.output
