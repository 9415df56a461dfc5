"""Tests of the ``dc-ae`` command line: every command, --json output, clean errors, the demo."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, safe_open, save_file
from typer.testing import CliRunner

import dc_ae
from dc_ae import pretrained
from dc_ae.cli import app
from dc_ae.data import save_image

SRC = Path(dc_ae.__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_json(*args: str | Path) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fails_cleanly(result: object, *needles: str) -> None:
    """Exit code 2, one message naming the problem, and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = dc_ae.DCAE(dc_ae.DCAEConfig.from_name("tiny-f4")).eval()
    gen = torch.Generator().manual_seed(0)
    out = {
        "ckpt": dc_ae.save(model, root / "tiny-f4.safetensors"),
        "ckpt_f8": dc_ae.save(dc_ae.DCAE(dc_ae.DCAEConfig.from_name("tiny-f8")), root / "tiny-f8.safetensors"),
        "image": save_image(torch.rand(3, 23, 37, generator=gen) * 2 - 1, root / "images" / "odd.png"),
        "image2": save_image(torch.rand(3, 16, 20, generator=gen) * 2 - 1, root / "images" / "sub" / "small.png"),
        "tiny_image": save_image(torch.zeros(3, 5, 5), root / "five.png"),
    }
    data = out["ckpt"].read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated"] = root / "truncated.safetensors"
    return out


# --------------------------------------------------------------------------------------------
# --help and import cost
# --------------------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("info", "encode", "decode", "reconstruct", "convert", "train", "eval", "demo"):
        assert command in result.stdout


def test_importing_the_cli_does_not_import_torch() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    code = "import sys, dc_ae.cli; bad = [m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    help_run = subprocess.run(
        [sys.executable, "-m", "dc_ae.cli", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0 and "demo" in help_run.stdout


def test_public_names_still_resolve_lazily() -> None:
    for name in dc_ae.__all__:
        assert getattr(dc_ae, name) is not None
    with pytest.raises(AttributeError):
        dc_ae.no_such_name  # noqa: B018


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------


def test_info_preset_json() -> None:
    info = run_json("info", "dc-ae-f32c32-small")
    assert info["spatial_compression"] == 32 and info["latent_channels"] == 32
    assert info["compression_ratio"] == 96.0
    assert info["parameters"] == info["encoder_parameters"] + info["decoder_parameters"] > 0
    assert "random" in info["weights"]


def test_info_presets_lists_every_preset() -> None:
    rows = run_json("info", "--presets")
    assert [r["name"] for r in rows] == dc_ae.preset_names()
    table = run("info", "--presets")
    assert table.exit_code == 0 and "dc-ae-f128c512-in-1.0" in table.stdout


def test_info_checkpoint_reports_layout(files: dict[str, Path], tmp_path: Path) -> None:
    info = run_json("info", files["ckpt"])
    assert info["layout"] == "dc_ae" and info["name"] == "tiny-f4" and info["format"] == "dc_ae/1"
    assert run("convert", files["ckpt"], tmp_path / "ev.safetensors", "--to", "efficientvit").exit_code == 0
    assert run_json("info", tmp_path / "ev.safetensors")["layout"] == "efficientvit"
    text = run("info", files["ckpt"])
    assert text.exit_code == 0 and "f4" in text.stdout and "12x" in text.stdout


# --------------------------------------------------------------------------------------------
# encode / decode / reconstruct
# --------------------------------------------------------------------------------------------


def test_encode_decode_round_trip(files: dict[str, Path], tmp_path: Path) -> None:
    latent = tmp_path / "odd.latent.safetensors"
    result = run("encode", files["image"], latent, "--model", files["ckpt"])
    assert result.exit_code == 0, result.output
    z = load_file(str(latent))["latent"]
    assert z.shape == (1, 4, 6, 10)  # ceil(23/4), ceil(37/4)
    with safe_open(str(latent), framework="pt") as f:
        meta = f.metadata()
    assert meta["model"] == "tiny-f4" and (meta["image_height"], meta["image_width"]) == ("23", "37")
    assert latent.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not the owner-only mode of a temp file
    out = tmp_path / "decoded.png"
    result = run("decode", latent, out, "--model", files["ckpt"])
    assert result.exit_code == 0, result.output
    # decode(encode(x)) on the command line equals the one-shot reconstruction.
    assert run("reconstruct", files["image"], tmp_path / "rec.png", "--model", files["ckpt"]).exit_code == 0
    assert pixels(out).shape == (23, 37, 3)
    assert np.abs(pixels(out) - pixels(tmp_path / "rec.png")).max() <= 1


def test_reconstruct_json_matches_the_written_file(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rec.png"
    res = run_json("reconstruct", files["image"], out, "--model", files["ckpt"], "--tile-size", "16")
    assert out.is_file() and pixels(out).shape == (23, 37, 3)
    assert res["random_weights"] is False and res["model"] == "tiny-f4"
    x, y = pixels(files["image"]) / 255.0, pixels(out) / 255.0
    assert res["psnr"] == pytest.approx(-10 * np.log10(np.mean((x - y) ** 2)), abs=0.05)
    assert -1.0 <= res["ssim"] <= 1.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_random_preset_is_flagged_loudly(files: dict[str, Path], tmp_path: Path) -> None:
    result = run("reconstruct", files["image"], tmp_path / "r.png", "--model", "tiny-f4")
    assert result.exit_code == 0
    assert "RANDOM" in result.stderr and "meaningless" in result.stderr
    assert "UNTRAINED" in result.stdout and "reconstruction quality" not in result.stdout
    assert run_json("reconstruct", files["image"], tmp_path / "r.png", "--model", "tiny-f4")["random_weights"]


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["efficientvit", "diffusers"])
def test_convert_round_trip(files: dict[str, Path], tmp_path: Path, layout: str) -> None:
    there = tmp_path / ("other" if layout == "diffusers" else "other.safetensors")
    res = run_json("convert", files["ckpt"], there, "--to", layout)
    assert res["source_layout"] == "dc_ae" and res["layout"] == layout
    back = tmp_path / "back.safetensors"
    config = ["--config", "tiny-f4"] if layout == "diffusers" else []
    assert run_json("convert", there, back, *config)["source_layout"] == layout
    original, restored = load_file(str(files["ckpt"])), load_file(str(back))
    assert original.keys() == restored.keys()
    for key, value in original.items():
        torch.testing.assert_close(restored[key], value, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


def test_eval_table_and_json(files: dict[str, Path]) -> None:
    folder = files["image"].parent
    res = run_json("eval", folder, "--model", files["ckpt"])
    names = [r["name"] for r in res["records"]]
    assert names == ["odd.png", "sub/small.png"]
    assert res["mean_psnr"] == pytest.approx(sum(r["psnr"] for r in res["records"]) / 2)
    assert res["mean_lpips"] is None and all(r["lpips"] is None for r in res["records"])
    table = run("eval", folder, "--model", files["ckpt"])
    assert table.exit_code == 0
    assert "sub/small.png" in table.stdout and "mean of 2" in table.stdout and "LPIPS" not in table.stdout


def test_eval_with_a_local_lpips_network(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "dcae_test_lpips_net.py"
    module.write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from dcae_test_lpips_net import build  # type: ignore[import-not-found]

    torch.manual_seed(3)
    weights = {f"backbone.{k}": v for k, v in build().state_dict().items()}
    weights |= {"lin0.model.1.weight": torch.rand(1, 8, 1, 1), "lin1.model.1.weight": torch.rand(1, 8, 1, 1)}
    save_file(weights, str(tmp_path / "net.safetensors"))
    args = ["--lpips-net", tmp_path / "net.safetensors", "--lpips-arch", "dcae_test_lpips_net:build"]
    res = run_json("eval", files["image"].parent, "--model", files["ckpt"], *args, "--lpips-layers", "1,3")
    values = [r["lpips"] for r in res["records"]]
    assert all(isinstance(v, float) and v > 0 for v in values)
    assert res["mean_lpips"] == pytest.approx(sum(values) / len(values))
    table = run("eval", files["image"].parent, "--model", files["ckpt"], *args, "--lpips-layers", "1,3")
    assert "LPIPS" in table.stdout
    fails_cleanly(run("eval", files["image"].parent, "--model", files["ckpt"], *args), "--lpips-layers")
    wrong_layers = run("eval", files["image"].parent, "--model", files["ckpt"], *args, "--lpips-layers", "1,9")
    fails_cleanly(wrong_layers, "'9'")


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed, so vgg16 can be built"
)
def test_eval_vgg16_without_torchvision_says_so(files: dict[str, Path], tmp_path: Path) -> None:
    save_file({"x": torch.zeros(1)}, str(tmp_path / "vgg.safetensors"))
    result = run("eval", files["image"].parent, "--model", files["ckpt"], "--lpips-net", tmp_path / "vgg.safetensors")
    fails_cleanly(result, "torchvision")


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def test_train_from_flags_and_json_config(files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "train.json"
    config.write_text(
        json.dumps(
            {"model": "tiny-f4", "data": str(files["image"].parent), "steps": 50, "out_dir": str(tmp_path / "x")}
        )
    )
    args = ["--config", config, "--steps", "2", "--batch-size", "1", "--resolution", "16", "--out", tmp_path / "run"]
    with pytest.warns(UserWarning, match="weight-free"):
        res = run_json("train", *args)
    assert res["step"] == 2 and res["completed"] is True  # --steps overrides the file's 50
    assert res["model_path"] == str(tmp_path / "run" / "model.safetensors")
    assert dc_ae.load(res["model_path"]).config.name == "tiny-f4"
    assert not (tmp_path / "x").exists()
    # The trained checkpoint is a --model for every other command.
    assert run("reconstruct", files["image"], tmp_path / "r.png", "--model", res["model_path"]).exit_code == 0


def test_train_rejects_bad_config(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"model": "tiny-f4", "bogus_field": 1}))
    fails_cleanly(run("train", "--config", tmp_path / "bad.json", "--out", tmp_path / "o"), "bogus_field")
    (tmp_path / "broken.json").write_text("{not json")
    fails_cleanly(run("train", "--config", tmp_path / "broken.json"), "not valid JSON")
    result = run("train", "--model", "nope", "--data", files["image"].parent, "--out", tmp_path / "o")
    fails_cleanly(result, "unknown DC-AE preset 'nope'")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# bad input: a clear message, exit code 2, nothing written
# --------------------------------------------------------------------------------------------


def test_unknown_preset(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    fails_cleanly(run("reconstruct", files["image"], out, "--model", "dc-ae-f33"), "unknown DC-AE preset 'dc-ae-f33'")
    fails_cleanly(run("info", "dc-ae-f33"), "dc-ae-f33")
    fails_cleanly(run("reconstruct", files["image"], out, "--model", "missing.safetensors"), "no such checkpoint")
    assert not out.exists()


def test_truncated_checkpoint(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    fails_cleanly(
        run("reconstruct", files["image"], out, "--model", files["truncated"]), "truncated", "truncated.safetensors"
    )
    fails_cleanly(run("convert", files["truncated"], tmp_path / "c.safetensors"), "truncated")
    fails_cleanly(run("decode", files["truncated"], out, "--model", files["ckpt"]), "truncated")
    assert not out.exists() and not (tmp_path / "c.safetensors").exists()


def test_checkpoint_for_another_config(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.latent.safetensors"
    result = run("encode", files["image"], out, "--model", files["ckpt"], "--config", "tiny-f8")
    fails_cleanly(result, "tiny-f4.safetensors", "--config tiny-f8", "latent_channels")
    assert not out.exists()


def test_image_smaller_than_one_latent_pixel(files: dict[str, Path], tmp_path: Path) -> None:
    for command, out in (("reconstruct", "out.png"), ("encode", "out.safetensors")):
        result = run(command, files["tiny_image"], tmp_path / out, "--model", files["ckpt_f8"])
        fails_cleanly(result, "5x5", "smaller than one latent pixel")
        assert not (tmp_path / out).exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left either


def test_latent_with_wrong_channel_count_or_dtype(files: dict[str, Path], tmp_path: Path) -> None:
    latent = tmp_path / "f8.safetensors"
    assert run("encode", files["image"], latent, "--model", files["ckpt_f8"]).exit_code == 0
    out = tmp_path / "out.png"
    fails_cleanly(run("decode", latent, out, "--model", files["ckpt"]), "8 channels", "expects 4")
    save_file({"latent": torch.zeros(1, 4, 3, 3, dtype=torch.int32)}, str(tmp_path / "int.safetensors"))
    fails_cleanly(run("decode", tmp_path / "int.safetensors", out, "--model", files["ckpt"]), "torch.int32")
    save_file({"z": torch.zeros(1, 4, 3, 3)}, str(tmp_path / "named.safetensors"))
    fails_cleanly(run("decode", tmp_path / "named.safetensors", out, "--model", files["ckpt"]), "'latent'")
    assert not out.exists()


def test_missing_or_unreadable_image(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    fails_cleanly(run("reconstruct", tmp_path / "nope.png", out, "--model", files["ckpt"]), "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    fails_cleanly(run("reconstruct", tmp_path / "junk.png", out, "--model", files["ckpt"]), "junk.png")
    fails_cleanly(run("eval", tmp_path / "nowhere", "--model", files["ckpt"]), "does not exist")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# demo: the project's main job
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def stand_in_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A randomly initialised dc-ae-f32c32-small where the embedded weights would be."""
    torch.manual_seed(0)
    path = dc_ae.save(
        dc_ae.DCAE(dc_ae.DCAEConfig.from_name(pretrained.DEFAULT_MODEL)), tmp_path / "default.safetensors"
    )
    monkeypatch.setattr(pretrained, "default_weights_path", lambda: path)
    return path


def test_demo_reports_psnr_ssim_and_compression(stand_in_default: Path, tmp_path: Path) -> None:
    saved = tmp_path / "chelsea.png"
    result = run("demo", "--save", saved)
    assert result.exit_code == 0, result.output
    for needle in ("PSNR", "SSIM", "f32", "96x", "[3, 300, 451] -> latent [32, 10, 15]", "held out", "chelsea"):
        assert needle in result.stdout
    assert pixels(saved).shape == (300, 451, 3)
    res = run_json("demo", "--image", "coffee")
    assert res["image_shape"] == [3, 400, 600] and res["latent_shape"] == [32, 13, 19]
    assert res["spatial_compression"] == 32 and res["compression_ratio"] == 96.0
    assert res["held_out"] is True and res["weights"] == str(stand_in_default)
    assert 0 < res["psnr"] < 100 and -1 <= res["ssim"] <= 1


def test_demo_refuses_training_photographs(stand_in_default: Path) -> None:
    fails_cleanly(run("demo", "--image", "astronaut"), "trained on", "--allow-train-image", "chelsea")
    fails_cleanly(run("demo", "--image", "no-such-photo"), "no-such-photo")
    res = run_json("demo", "--image", "motorcycle_left", "--allow-train-image")
    assert res["held_out"] is False


def test_demo_without_embedded_weights_says_how_to_make_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "default_weights_path", lambda: tmp_path / "absent.safetensors")
    fails_cleanly(run("demo"), "absent.safetensors", "bench/train_default.py")
    fails_cleanly(run("info"), "bench/train_default.py")


def test_default_of_another_architecture_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = dc_ae.save(dc_ae.DCAE(dc_ae.DCAEConfig.from_name("tiny-f8")), tmp_path / "wrong.safetensors")
    monkeypatch.setattr(pretrained, "default_weights_path", lambda: path)
    fails_cleanly(run("demo"), "not a dc-ae-f32c32-small model")


def test_demo_with_the_real_embedded_model() -> None:
    # The weights ship inside the package (package-data); an install that lost them fails here.
    assert pretrained.default_weights_path().is_file(), pretrained.default_weights_path()
    from dc_ae.data import sample_photographs, to_tensor
    from dc_ae.metrics import psnr

    res = run_json("demo")
    assert res["image"] == "chelsea" and res["held_out"] is True
    assert res["image_shape"] == [3, 300, 451] and res["latent_shape"] == [32, 10, 15]
    # Bars a working model clears and a broken one does not: the photograph's flat mean colour
    # (17.5 dB on chelsea) and the same architecture at its random initialisation (about 11 dB).
    x = to_tensor(sample_photographs(["chelsea"])["chelsea"]).unsqueeze(0)
    flat = float(psnr(x.mean(dim=(2, 3), keepdim=True).expand_as(x), x)[0])
    assert res["psnr"] > flat + 1.0, (res["psnr"], flat)
    assert 0.0 < res["ssim"] <= 1.0
    info = run_json("info")
    assert info["layout"] == "dc_ae" and info["spatial_compression"] == 32 and info["latent_channels"] == 32
