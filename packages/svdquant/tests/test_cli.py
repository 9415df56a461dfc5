"""The ``svdquant`` command line through typer's CliRunner: quantize, inspect, apply-lora, bench, and their errors.

SVDQuant (Li et al., ICLR 2025), Sec. 4-5 (calibration, checkpoint, LoRA merging); the models come from the
``sq_cli_models`` factories (``--arch sq_cli_models:tiny_mlp``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from sq_cli_models import tiny_mlp, two_input
from sq_testing import outlier_activations
from typer.testing import CliRunner

from svdquant.checkpoint import load_quantized
from svdquant.cli import app
from svdquant.svdq_linear import SVDQLinear

runner = CliRunner()
FAST = ["--svd", "randomized", "--rank", "8", "--lowrank-iters", "2", "--num-grids", "3"]


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result: Any, *fragments: str) -> None:
    """Exit code 2 with a one-line ``error:`` message on stderr containing every fragment (no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in err, (f, err)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    model = tiny_mlp()
    weights = d / "mlp.safetensors"
    save_file(model.state_dict(), str(weights))
    calib = d / "calib.safetensors"
    save_file({"inputs": outlier_activations(64, 64, seed=5).reshape(8, 8, 64)}, str(calib))
    out = d / "mlp-int4.safetensors"
    r = invoke("quantize", weights, calib, out, "--arch", "sq_cli_models:tiny_mlp", *FAST, "--json")
    assert r.exit_code == 0, r.output
    return {"dir": d, "weights": weights, "calib": calib, "quantized": out, "report": json.loads(r.stdout)}


def test_help_does_not_import_torch() -> None:
    code = "import sys; from svdquant.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    r = invoke("--help")
    assert r.exit_code == 0
    for command in ("quantize", "inspect", "apply-lora", "bench"):
        assert command in r.stdout


def test_quantize_writes_a_loadable_checkpoint(files: dict[str, Path]) -> None:
    report: Any = files["report"]
    layers = {row["name"]: row for row in report["layers"]}
    assert set(layers) == {"fc1", "fc2"}
    for row in layers.values():
        assert row["fmt"] == "int4" and row["rank"] == 8
        assert row["snr_db"] > 10.0, row
        assert row["bytes_after"] < row["bytes_before"]
    assert report["totals"]["file_bytes"] == files["quantized"].stat().st_size
    model = load_quantized(tiny_mlp(), files["quantized"])
    assert isinstance(model.fc1, SVDQLinear) and isinstance(model.fc2, SVDQLinear)
    assert model.fc2.act_unsigned  # fc2 reads a GELU output: the default unsigned filter applies
    ref = tiny_mlp()
    ref.load_state_dict(load_file(str(files["weights"])))
    x = load_file(str(files["calib"]))["inputs"]  # the smoothing fits these inputs' outlier channels
    with torch.no_grad():
        y, y_ref = model(x), ref(x)
    snr = 10 * torch.log10(y_ref.square().sum() / (y - y_ref).square().sum())
    assert snr > 8.0


def test_quantize_text_table_and_multi_input_nvfp4_with_skip(tmp_path: Path) -> None:
    model = two_input()
    weights = tmp_path / "two.safetensors"
    save_file(model.state_dict(), str(weights))
    calib = tmp_path / "calib.safetensors"
    save_file({"arg0": torch.randn(6, 4, 64), "arg1": torch.randn(6, 4, 64)}, str(calib))
    out = tmp_path / "q.safetensors"
    args = ["quantize", weights, calib, out, "--arch", "sq_cli_models:two_input", "--fmt", "nvfp4", *FAST]
    r = invoke(*args, "--skip", "cond", "--batch-size", "4")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["layer", "fmt", "rank"]
    assert lines[1].split()[:3] == ["proj", "nvfp4", "8"] and len(lines) == 3  # header, proj, totals
    assert lines[2].startswith("total: 1 layers")
    loaded = load_quantized(two_input(), out)
    assert isinstance(loaded.proj, SVDQLinear) and loaded.proj.fmt == "nvfp4"
    assert isinstance(loaded.cond, torch.nn.Linear)


def test_quantize_errors(files: dict[str, Path], tmp_path: Path) -> None:
    w, c, out = files["weights"], files["calib"], tmp_path / "o.safetensors"
    arch = ["--arch", "sq_cli_models:tiny_mlp"]
    assert_clean_error(invoke("quantize", tmp_path / "none.safetensors", c, out, *arch), "no such file")
    assert_clean_error(invoke("quantize", w, tmp_path / "none.safetensors", out, *arch), "calibration file")
    assert_clean_error(invoke("quantize", w, c, out, "--arch", "sq_cli_models.tiny_mlp"), "module:function")
    assert_clean_error(invoke("quantize", w, c, out, "--arch", "no_such_mod_xyz:f"), "cannot import")
    assert_clean_error(invoke("quantize", w, c, out, "--arch", "sq_cli_models:missing"), "expected a callable")
    assert_clean_error(invoke("quantize", w, c, out, "--arch", "sq_cli_models:not_a_module"), "nn.Module")
    assert_clean_error(invoke("quantize", w, c, out, "--arch", "sq_cli_models:two_input"), "do not fit")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    assert_clean_error(invoke("quantize", garbage, c, out, *arch), "expected a safetensors file")
    wrong_keys = tmp_path / "wrong.safetensors"
    save_file({"x": torch.randn(2, 64)}, str(wrong_keys))
    assert_clean_error(invoke("quantize", w, wrong_keys, out, *arch), "'inputs'", "['x']")
    nan = tmp_path / "nan.safetensors"
    save_file({"inputs": torch.full((2, 64), float("nan"))}, str(nan))
    assert_clean_error(invoke("quantize", w, nan, out, *arch, *FAST), "finite")
    assert_clean_error(invoke("quantize", w, c, out, *arch, "--rank", "100"), "rank 100")
    assert not out.exists()


def test_inspect_metadata_and_snr(files: dict[str, Path]) -> None:
    q = files["quantized"]
    r = invoke("inspect", q, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    rows = {row["name"]: row for row in info["layers"]}
    assert rows["fc1"]["shape"] == "128x64" and rows["fc1"]["rank"] == 8 and rows["fc1"]["group_size"] == 64
    assert rows["fc1"]["bytes_bf16"] == 2 * (128 * 64 + 128)
    assert "snr_db" not in rows["fc1"]
    assert info["quantization_config"]["rank"] == 8
    text = invoke("inspect", q)
    assert text.exit_code == 0 and "fc2" in text.stdout and "SNR" not in text.stdout
    args = ["inspect", q, "--arch", "sq_cli_models:tiny_mlp", "--reference", files["weights"], "--json"]
    rand = json.loads(invoke(*args).stdout)
    given = json.loads(invoke(*args, "--inputs", files["calib"]).stdout)
    # Gaussian rows lack the outlier channels the smoothing was fitted to, so they score lower, but still score.
    assert all(isinstance(row["snr_db"], float) for row in rand["layers"])
    # On the calibration inputs each layer scores exactly what quantize reported (same inputs, same layer).
    report = {row["name"]: row for row in files["report"]["layers"]}  # type: ignore[index]
    for row in given["layers"]:
        assert row["snr_db"] == pytest.approx(report[row["name"]]["snr_db"], abs=1e-6)
        assert row["snr_db"] > 10.0


def test_inspect_errors(files: dict[str, Path], tmp_path: Path) -> None:
    assert_clean_error(invoke("inspect", tmp_path / "none.safetensors"), "no such file")
    assert_clean_error(invoke("inspect", files["weights"]), "expected a quantized checkpoint", "found None")
    assert_clean_error(invoke("inspect", files["quantized"], "--reference", files["weights"]), "--arch")
    bad = ["inspect", files["quantized"], "--arch", "sq_cli_models:two_input", "--reference", files["weights"]]
    assert_clean_error(invoke(*bad), "do not fit")


def _lora(path: Path, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {"fc1.lora_A.weight": torch.randn(4, 64, generator=g), "fc1.lora_B.weight": torch.randn(128, 4, generator=g)}
    save_file(sd, str(path))
    return sd


def test_apply_lora_merges_two_loras(files: dict[str, Path], tmp_path: Path) -> None:
    a, b = _lora(tmp_path / "a.safetensors", 1), _lora(tmp_path / "b.safetensors", 2)
    out = tmp_path / "merged.safetensors"
    arch = ["--arch", "sq_cli_models:tiny_mlp"]
    r = invoke("apply-lora", files["quantized"], tmp_path / "a.safetensors", out, *arch, "--strength", "0.5",
               "--lora", f"{tmp_path / 'b.safetensors'}=-2", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert [m["strength"] for m in json.loads(r.stdout)["loras"]] == [0.5, -2.0]
    base, merged = load_quantized(tiny_mlp(), files["quantized"]), load_quantized(tiny_mlp(), out)
    b1, m1 = base.get_submodule("fc1"), merged.get_submodule("fc1")
    b2, m2 = base.get_submodule("fc2"), merged.get_submodule("fc2")
    assert isinstance(b1, SVDQLinear) and isinstance(m1, SVDQLinear)
    assert isinstance(b2, SVDQLinear) and isinstance(m2, SVDQLinear)
    assert m1.rank == b1.rank + 8 and m2.rank == b2.rank
    x = torch.randn(5, 64)
    with torch.no_grad():
        delta = 0.5 * (x @ a["fc1.lora_A.weight"].T) @ a["fc1.lora_B.weight"].T
        delta -= 2.0 * (x @ b["fc1.lora_A.weight"].T) @ b["fc1.lora_B.weight"].T
        torch.testing.assert_close(m1(x), b1(x) + delta, rtol=1e-4, atol=1e-3)
    # The inspect table shows the widened branch.
    rows = {row["name"]: row for row in json.loads(invoke("inspect", out, "--json").stdout)["layers"]}
    assert rows["fc1"]["rank"] == b1.rank + 8


def test_apply_lora_errors(files: dict[str, Path], tmp_path: Path) -> None:
    q, out = files["quantized"], tmp_path / "o.safetensors"
    arch = ["--arch", "sq_cli_models:tiny_mlp"]
    lora = tmp_path / "a.safetensors"
    _lora(lora, 1)
    assert_clean_error(invoke("apply-lora", q, tmp_path / "none.safetensors", out, *arch), "no such file")
    assert_clean_error(invoke("apply-lora", q, lora, out, *arch, "--lora", "nostrength"), "PATH=STRENGTH")
    stray = tmp_path / "stray.safetensors"
    save_file({"fc1.lora_A.weight": torch.randn(4, 64), "fc1.lora_B.weight": torch.randn(128, 4),
               "other.weight": torch.randn(3)}, str(stray))  # fmt: skip
    assert_clean_error(invoke("apply-lora", q, stray, out, *arch), "unconsumed", "other.weight")
    assert_clean_error(invoke("apply-lora", files["weights"], lora, out, *arch), "expected a checkpoint of format")
    assert not out.exists()


def test_bench_json_and_errors() -> None:
    r = invoke("bench", "--m", "8", "--n", "64", "--k", "64", "--rank", "4", "--repeats", "1", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["device"] == "cpu" and res["dtype"] == "fp32"
    assert res["linear_ms"] > 0 and res["svdq_ms"] > 0 and res["speedup"] == res["linear_ms"] / res["svdq_ms"]
    text = invoke("bench", "--m", "4", "--n", "32", "--k", "32", "--rank", "2", "--fmt", "nvfp4", "--repeats", "1")
    assert text.exit_code == 0 and "speed-up" in text.stdout
    assert_clean_error(invoke("bench", "--dtype", "fp8"), "--dtype")
    assert_clean_error(invoke("bench", "--device", "nodevice"), "--device")
    assert_clean_error(invoke("bench", "--k", "100", "--n", "32"), "group size")
