"""The ``linear-dit`` CLI through typer's runner: every command, its JSON output and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ldit_testing import random_model
from safetensors.torch import load_file
from typer.testing import CliRunner

import linear_dit
from linear_dit.cli import app
from linear_dit.text_embeddings import save_text_embeddings

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_does_not_import_torch() -> None:
    code = "import sys; from linear_dit.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_info_lists_presets_as_json() -> None:
    code, out, _ = invoke("info", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["sana-1.6b-1024px"]["parameters"] == 1_604_462_752
    assert rows["sana-0.6b-1024px"]["tokens"] == 1024


def test_info_one_preset_flops_grow_with_resolution() -> None:
    _, out1, _ = invoke("info", "sana-1.6b-4k", "--resolution", "1024", "--json")
    _, out4, _ = invoke("info", "sana-1.6b-4k", "--resolution", "4096", "--json")
    f1, f4 = json.loads(out1)["flops_per_step"]["total"], json.loads(out4)["flops_per_step"]["total"]
    # 16x the tokens: the linear layers scale 16x and nothing grows faster than linearly.
    assert 14 < f4 / f1 <= 16.5
    code, out, _ = invoke("info", "tiny", "--resolution", "256")
    assert code == 0 and "tiny" in out


def test_info_errors() -> None:
    code, _, err = invoke("info", "sana-9b")
    assert code == 2 and "neither an existing checkpoint" in err
    code, _, err = invoke("info", "tiny", "--resolution", "100")
    assert code == 2 and "not a multiple" in err


def test_convert_round_trip_keeps_outputs(tmp_path: Path) -> None:
    model = random_model("tiny-1.5")
    src = linear_dit.save(model, tmp_path / "ours.safetensors")
    code, out, err = invoke("convert", str(src), str(tmp_path / "hf"), "--layout", "diffusers")
    assert code == 0, err
    code, _, err = invoke("convert", str(tmp_path / "hf"), str(tmp_path / "sana.pth"), "--layout", "sana")
    assert code == 0, err
    back = linear_dit.load(tmp_path / "sana.pth", config="tiny-1.5")
    x, y = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 24)
    with torch.no_grad():
        torch.testing.assert_close(back(x, 500.0, y), model(x, 500.0, y), rtol=1e-5, atol=1e-5)


def test_convert_missing_file() -> None:
    code, _, err = invoke("convert", "nope.safetensors", "out.safetensors")
    assert code == 2 and "nope.safetensors" in err


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    return save_text_embeddings(
        tmp_path / "prompts.safetensors",
        torch.randn(2, 5, 24, generator=g),
        torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
        negative_hidden_states=torch.randn(1, 2, 24, generator=g),
    )


def test_sample_writes_dc_ae_latents(tmp_path: Path, prompts: Path) -> None:
    ckpt = linear_dit.save(random_model("tiny"), tmp_path / "m.safetensors")
    out = tmp_path / "samples"
    code, stdout, err = invoke(
        "sample", str(ckpt), str(prompts), str(out), "--steps", "3", "--resolution", "256", "--scaling-factor", "0.5"
    )
    assert code == 0, err
    files = sorted(out.glob("*.safetensors"))
    assert [f.name for f in files] == ["0000.safetensors", "0001.safetensors"]
    z = load_file(str(files[0]))["latent"]
    assert z.shape == (1, 4, 8, 8) and torch.isfinite(z).all()
    # Same seed, same latents; the scaling factor only divides.
    code, _, _ = invoke("sample", str(ckpt), str(prompts), str(tmp_path / "s2"), "--steps", "3", "--resolution", "256")
    z2 = load_file(str(tmp_path / "s2" / "0000.safetensors"))["latent"]
    torch.testing.assert_close(z * 0.5, z2)


def test_sample_errors(tmp_path: Path, prompts: Path) -> None:
    code, _, err = invoke("sample", "sana-0.6b-1024px", str(prompts), str(tmp_path / "o"), "--steps", "1")
    assert code == 2 and "2304" in err  # 24-wide states for a Gemma-conditioned model
    bare = save_text_embeddings(tmp_path / "bare.safetensors", torch.randn(1, 3, 24))
    code, _, err = invoke("sample", "tiny", str(bare), str(tmp_path / "o"), "--steps", "1")
    assert code == 2 and "unconditional embedding" in err
    code, _, err = invoke("sample", "tiny", str(prompts), str(tmp_path / "o"), "--dtype", "fp8")
    assert code == 2 and "--dtype" in err


def test_bench_json() -> None:
    code, out, err = invoke("bench", "tiny", "--resolution", "256", "--repeats", "2", "--text-tokens", "4", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["forward_s"] > 0 and result["seconds_per_image_cfg"] == pytest.approx(2 * 20 * result["forward_s"])


def test_train_runs_resumes_and_reports(tmp_path: Path) -> None:
    from linear_dit.data import make_synthetic_dataset, save_latent_dataset

    data = save_latent_dataset(make_synthetic_dataset(samples_per_class=4), tmp_path / "data.safetensors")
    out = tmp_path / "run"
    args = ["train", str(data), str(out), "--config", "tiny", "--batch-size", "4", "--json"]
    code, stdout, err = invoke(*args, "--steps", "2")
    assert code == 0, err
    first = json.loads(stdout)
    assert first["step"] == 2 and Path(first["model_path"]).is_file()
    code, stdout, err = invoke(*args, "--steps", "4")  # continues from step 2
    assert code == 0, err
    assert json.loads(stdout)["step"] == 4
    assert linear_dit.load(first["model_path"]).config.name == "tiny"


def test_train_errors(tmp_path: Path) -> None:
    code, _, err = invoke("train", str(tmp_path / "none.safetensors"), str(tmp_path / "run"), "--steps", "1")
    assert code == 2 and "none.safetensors" in err
    bad = tmp_path / "cfg.json"
    bad.write_text("{not json")
    code, _, err = invoke("train", "d", "o", "--train-config", str(bad))
    assert code == 2 and "not valid JSON" in err
    bad.write_text('{"stepz": 3}')
    code, _, err = invoke("train", "d", "o", "--train-config", str(bad))
    assert code == 2 and "stepz" in err


def test_info_reads_a_checkpoint_without_loading_weights(tmp_path: Path) -> None:
    ckpt = linear_dit.save(random_model("tiny-pe"), tmp_path / "m.safetensors")
    code, out, err = invoke("info", str(ckpt), "--resolution", "256", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["use_pe"] and row["latent"] == [8, 8] and row["parameters"] == random_model("tiny-pe").num_parameters()
