"""Tests of saving and loading DC-AE weights in our format, the efficientvit release and diffusers.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025). ``dc_ae.load`` must read every layout of the released checkpoints, detect which
one it has, refuse any key mismatch with a message listing the keys, and give the same outputs
whichever layout the weights came from. The tests build their own weights, random at tiny and at
real preset sizes (/work/shared/reference/dcae.md, sec. 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dcae_testing import random_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dc_ae
from dc_ae import DCAE, CheckpointError, DCAEConfig, layouts
from dc_ae import checkpoint as checkpoint_module

TINY = ["tiny-f4", "tiny-f8", "tiny-f4-resblock", "tiny-f8-in"]
LAYOUTS = ["dc_ae", "efficientvit", "diffusers"]


def target(tmp_path: Path, layout: str) -> Path:
    """Where ``dc_ae.save`` writes ``layout`` (a folder for diffusers, a file otherwise)."""
    return tmp_path / ("diffusers_model" if layout == "diffusers" else f"{layout}.safetensors")


def weights_file(path: Path, layout: str) -> Path:
    return path / "diffusion_pytorch_model.safetensors" if layout == "diffusers" else path


def outputs(model: DCAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        z = model.encode(x)
        return z, model.decode(z)


def image(size: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def same_config(a: DCAEConfig, b: DCAEConfig) -> bool:
    return a.model_dump(exclude={"name"}) == b.model_dump(exclude={"name"})


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY + ["dc-ae-f32c32-small"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_every_layout(tmp_path: Path, name: str, layout: str) -> None:
    model = random_model(name)
    x = image(2 * model.spatial_compression if model.spatial_compression > 8 else 16)
    z, y = outputs(model, x)
    path = dc_ae.save(model, target(tmp_path, layout), layout=layout)
    with safe_open(str(weights_file(path, layout)), framework="pt") as f:
        assert checkpoint_module.detect_layout(set(f.keys())) == layout
    loaded = dc_ae.load(path)
    assert not loaded.training
    assert same_config(loaded.config, model.config)
    state = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    z2, y2 = outputs(loaded, x)
    assert torch.equal(z2, z) and torch.equal(y2, y)


def test_dc_ae_format_metadata(tmp_path: Path) -> None:
    model = random_model("tiny-f8")
    path = dc_ae.save(model, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "dc_ae/1"
    assert DCAEConfig.model_validate_json(meta["config"]) == model.config
    assert meta["dc_ae_version"] == dc_ae.__version__
    loaded = dc_ae.load(path)
    assert loaded.config == model.config and loaded.config.name == "tiny-f8"


def test_diffusers_folder_holds_config_json(tmp_path: Path) -> None:
    model = random_model("tiny-f8-in")
    path = dc_ae.save(model, tmp_path / "vae", layout="diffusers")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert json.loads((path / "config.json").read_text()) == layouts.diffusers_config(model.config)
    # The file alone, with config.json beside it, loads as well as the folder.
    loaded = dc_ae.load(path / "diffusion_pytorch_model.safetensors")
    assert same_config(loaded.config, model.config)


def test_diffusers_folder_loads_in_diffusers(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers", reason="diffusers reads the folder we write")
    model = random_model("tiny-f8")
    path = dc_ae.save(model, tmp_path / "vae", layout="diffusers")
    ref = diffusers.AutoencoderDC.from_pretrained(str(path)).eval()
    x = image(16)
    z, y = outputs(model, x)
    with torch.no_grad():
        torch.testing.assert_close(ref.encode(x).latent, z, rtol=0, atol=1e-5)
        torch.testing.assert_close(ref.decode(z).sample, y, rtol=0, atol=1e-5)


def test_load_state_dict_mapping_in_each_layout() -> None:
    model = random_model("tiny-f4")
    cfg = model.config
    state = model.state_dict()
    for converted in (state, layouts.to_efficientvit(state, cfg), layouts.to_diffusers(state, cfg)):
        got_cfg, ours = dc_ae.load_state_dict(converted, config=cfg)
        assert got_cfg == cfg
        assert ours.keys() == state.keys() and all(torch.equal(ours[k], v) for k, v in state.items())
        # Without config=, the key set and shapes pick the one preset they fit.
        assert dc_ae.load(converted).config.name == "tiny-f4"


def test_load_dtype_and_device(tmp_path: Path) -> None:
    path = dc_ae.save(random_model("tiny-f4"), tmp_path / "m.safetensors")
    model = dc_ae.load(path, device="cpu", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    assert not model.training


def test_release_without_metadata_at_real_size(tmp_path: Path) -> None:
    # The release's model.safetensors has no metadata, and in and mix share every key and shape:
    # only the config.json beside it ({"model_name": ...}) or config= can tell them apart.
    model = random_model("dc-ae-f32c32-in-1.0")  # seeded default init, 323M parameters
    x = image(64, batch=1)
    z, y = outputs(model, x)
    save_file(layouts.to_efficientvit(model.state_dict(), model.config), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="config=") as info:
        dc_ae.load(tmp_path)
    assert "dc-ae-f32c32-in-1.0" in str(info.value) and "dc-ae-f32c32-mix-1.0" in str(info.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "dc-ae-f32c32-in-1.0"}))
    loaded = dc_ae.load(tmp_path)
    assert loaded.config == model.config
    z2, y2 = outputs(loaded, x)
    assert torch.equal(z2, z) and torch.equal(y2, y)
    (tmp_path / "config.json").unlink()
    assert dc_ae.load(tmp_path, config="dc-ae-f32c32-mix-1.0").scaling_factor == 0.4552
    (tmp_path / "model.safetensors").unlink()  # pytest keeps recent tmp dirs: do not leave 1.3 GB behind


# --- configs: metadata, config.json, config= ---------------------------------------------------


def test_ambiguous_efficientvit_state_asks_for_config() -> None:
    with torch.device("meta"):
        state = DCAE(DCAEConfig.from_name("dc-ae-f32c32-mix-1.0")).state_dict()
    converted = layouts.to_efficientvit(state, DCAEConfig.from_name("dc-ae-f32c32-mix-1.0"))
    with pytest.raises(CheckpointError, match=r"fit several presets \(dc-ae-f32c32-in-1.0, dc-ae-f32c32-mix-1.0\)"):
        dc_ae.load_state_dict(converted)
    cfg, _ = dc_ae.load_state_dict(converted, config="dc-ae-f32c32-mix-1.0")
    assert cfg.scaling_factor == 0.4552


def test_efficientvit_file_without_metadata(tmp_path: Path) -> None:
    model = random_model("tiny-f8-in")
    file = tmp_path / "model.safetensors"
    save_file(layouts.to_efficientvit(model.state_dict(), model.config), file)
    assert dc_ae.load(file).config == model.config  # only one preset has these keys and shapes
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "tiny-f8-in"}))
    assert dc_ae.load(tmp_path).config == model.config
    # A custom architecture no preset matches needs config=.
    custom = DCAEConfig.model_validate({**model.config.model_dump(), "name": "custom", "latent_channels": 16})
    other = random_model(custom)
    (tmp_path / "config.json").unlink()
    save_file(layouts.to_efficientvit(other.state_dict(), custom), file)
    with pytest.raises(CheckpointError, match="fit no preset; pass config="):
        dc_ae.load(file)
    assert dc_ae.load(file, config=custom).config == custom


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_pt_checkpoint(tmp_path: Path, wrapper: str | None) -> None:
    model = random_model("tiny-f8")
    state = layouts.to_efficientvit(model.state_dict(), model.config)
    torch.save({wrapper: state, "epoch": 3} if wrapper else state, tmp_path / "model.pt")
    loaded = dc_ae.load(tmp_path / "model.pt")
    x = image(16)
    assert all(torch.equal(a, b) for a, b in zip(outputs(loaded, x), outputs(model, x), strict=True))
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "tiny-f8"}))
    assert dc_ae.load(tmp_path).config == model.config  # the folder finds model.pt


def test_checkpoint_for_another_config(tmp_path: Path) -> None:
    model = random_model("tiny-f4")
    path = dc_ae.save(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="saved for config 'tiny-f4'.*'tiny-f8'"):
        dc_ae.load(path, config="tiny-f8")
    # Same architecture, other scaling factor (in vs mix): the stored config wins an argument.
    rescaled = DCAEConfig.model_validate({**model.config.model_dump(), "scaling_factor": 0.5})
    with pytest.raises(CheckpointError, match=r"scaling_factor=0.5 \(stored 1.0\)"):
        dc_ae.load(path, config=rescaled)
    # The same config under another name is fine.
    renamed = DCAEConfig.model_validate({**model.config.model_dump(), "name": "mine"})
    assert dc_ae.load(path, config=renamed).config == renamed
    # No metadata: the key check names the config and the mismatching keys.
    bare = tmp_path / "bare.safetensors"
    save_file(layouts.to_efficientvit(model.state_dict(), model.config), bare)
    with pytest.raises(CheckpointError, match="does not match the config 'tiny-f8'") as info:
        dc_ae.load(bare, config="tiny-f8")
    assert "encoder.project_out.main.op_list.0.conv.weight: expected [8, 32, 3, 3], found [4, 32, 3, 3]" in str(
        info.value
    )
    # A diffusers folder whose config.json describes another model.
    folder = dc_ae.save(model, tmp_path / "vae", layout="diffusers")
    (folder / "config.json").write_text(json.dumps(layouts.diffusers_config(DCAEConfig.from_name("tiny-f8"))))
    with pytest.raises(CheckpointError, match="diffusers checkpoint does not match the config"):
        dc_ae.load(folder)


# --- strictness --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path: Path, layout: str) -> None:
    model = random_model("tiny-f8")
    path = dc_ae.save(model, target(tmp_path, layout), layout=layout)
    file = weights_file(path, layout)
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
    clean = load_file(file)
    keys = sorted(clean)
    dropped, reshaped = keys[3], keys[-2]
    cases = {
        "missing": lambda s: s.pop(dropped),
        "unexpected": lambda s: s.__setitem__("encoder.extra_head.weight", torch.zeros(2)),
        "wrong shape": lambda s: s.__setitem__(reshaped, torch.zeros(*s[reshaped].shape, 2)),
    }
    named = {"missing": dropped, "unexpected": "encoder.extra_head.weight", "wrong shape": reshaped}
    for title, mutate in cases.items():
        state = dict(clean)
        mutate(state)
        save_file(state, file, metadata=meta)
        with pytest.raises(CheckpointError) as info:
            dc_ae.load(path)
        message = str(info.value)
        assert f"1 {title}" in message, message
        assert named[title] in message
        assert layout in message
    # All three at once are all listed.
    state = dict(clean)
    for mutate in cases.values():
        mutate(state)
    save_file(state, file, metadata=meta)
    with pytest.raises(CheckpointError) as info:
        dc_ae.load(path)
    for key in (dropped, "encoder.extra_head.weight", reshaped):
        assert key in str(info.value)


def test_long_key_lists_are_clipped_with_a_count() -> None:
    model = random_model("tiny-f8")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    with pytest.raises(CheckpointError, match=r"missing: .* \.\.\. \(\+\d+ more\)"):
        dc_ae.load(state, config="tiny-f8")


def test_truncated_safetensors_names_the_file(tmp_path: Path) -> None:
    path = dc_ae.save(random_model("tiny-f8"), tmp_path / "m.safetensors")
    data = path.read_bytes()
    for cut in (3, 40, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
            dc_ae.load(bad)
        assert str(bad) in str(info.value)


def test_truncated_pt_names_the_file(tmp_path: Path) -> None:
    model = random_model("tiny-f4")
    good = tmp_path / "good.pt"
    torch.save({"state_dict": model.state_dict()}, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=f"cannot read {bad}"):
        dc_ae.load(bad)
    torch.save({"state_dict": {"a": 1}}, tmp_path / "notensors.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        dc_ae.load(tmp_path / "notensors.pt")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        dc_ae.load(tmp_path / "nothing.safetensors")
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        dc_ae.load(tmp_path)
    save_file({"transformer.weight": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="not a DC-AE checkpoint"):
        dc_ae.load(tmp_path / "x.safetensors")
    folder = tmp_path / "vae"
    dc_ae.save(random_model("tiny-f4"), folder, layout="diffusers")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot parse"):
        dc_ae.load(folder)


def test_detect_layout() -> None:
    model = random_model("tiny-f8-in")
    state = model.state_dict()
    assert dc_ae.detect_layout(state.keys()) == "dc_ae"
    assert dc_ae.detect_layout(layouts.to_efficientvit(state, model.config).keys()) == "efficientvit"
    assert dc_ae.detect_layout(layouts.to_diffusers(state, model.config).keys()) == "diffusers"
    with pytest.raises(CheckpointError, match="not a DC-AE checkpoint"):
        dc_ae.detect_layout(["model.diffusion_model.input_blocks.0.weight"])


# --- atomic writes -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_failed_save_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    model = random_model("tiny-f4")

    def broken_save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", broken_save_file)
    path = target(tmp_path, layout)
    with pytest.raises(OSError, match="No space left"):
        dc_ae.save(model, path, layout=layout)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


def test_failed_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = random_model("tiny-f4", seed=1)
    path = dc_ae.save(old, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def broken_save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("interrupted")

    monkeypatch.setattr(checkpoint_module, "save_file", broken_save_file)
    with pytest.raises(OSError):
        dc_ae.save(random_model("tiny-f4", seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_unsupported_save_writes_nothing(tmp_path: Path) -> None:
    cfg = DCAEConfig.model_validate(
        {
            **DCAEConfig.from_name("tiny-f4-resblock").model_dump(),
            "structured_latent": True,
            "encoder_out_shortcut": False,
            "decoder_in_shortcut": False,
        }
    )
    model = random_model(cfg)
    with pytest.raises(CheckpointError, match="no structured-latent"):
        dc_ae.save(model, tmp_path / "vae", layout="diffusers")
    with pytest.raises(CheckpointError, match="unknown layout 'onnx'"):
        dc_ae.save(model, tmp_path / "m.onnx", layout="onnx")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    # The structured-latent model still round-trips in our format and the original layout.
    for layout in ("dc_ae", "efficientvit"):
        loaded = dc_ae.load(dc_ae.save(model, target(tmp_path, layout), layout=layout))
        assert loaded.config == cfg
