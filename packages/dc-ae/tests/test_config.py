"""Tests of the DC-AE configs and presets against the released model zoo.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025); presets follow efficientvit's ``ae_model_zoo.py``, scaling factors the model cards
and diffusers' conversion script (see /work/shared/reference/dcae.md, sec. 1).
"""

from __future__ import annotations

import pydantic
import pytest
import torch

import dc_ae
from dc_ae import DCAE, ConfigError, DCAEConfig, preset_names

# name -> (spatial factor f, latent channels c, scaling factor, stages), from the reference tables.
RELEASED = {
    "dc-ae-f32c32-in-1.0": (32, 32, 0.3189, 6),
    "dc-ae-f32c32-mix-1.0": (32, 32, 0.4552, 6),
    "dc-ae-f64c128-in-1.0": (64, 128, 0.2889, 7),
    "dc-ae-f64c128-mix-1.0": (64, 128, 0.4538, 7),
    "dc-ae-f128c512-in-1.0": (128, 512, 0.4883, 8),
    "dc-ae-f128c512-mix-1.0": (128, 512, 0.3620, 8),
    "dc-ae-f32c32-sana-1.0": (32, 32, 0.41407, 6),
    "dc-ae-f32c32-sana-1.1": (32, 32, 0.41407, 6),
    "dc-ae-lite-f32c32-sana-1.1": (32, 32, 0.41407, 6),
    "dc-ae-f32c128-1.5": (32, 128, None, 6),
    "dc-ae-f64c128-1.5": (64, 128, None, 7),
}
TINY = ["tiny-f4", "tiny-f8", "tiny-f4-resblock", "tiny-f8-in"]


def n_params(cfg: DCAEConfig) -> int:
    with torch.device("meta"):
        model = DCAE(cfg)
    return sum(p.numel() for p in model.parameters())


def test_every_released_preset_and_the_tiny_ones_are_listed() -> None:
    names = preset_names()
    assert set(RELEASED) <= set(names)
    assert set(TINY) <= set(names)
    assert names[: len(RELEASED)] == list(RELEASED), "released models come first"


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_preset_factor_channels_scaling(name: str) -> None:
    f, c, sf, stages = RELEASED[name]
    cfg = DCAEConfig.from_name(name)
    assert cfg.name == name
    assert cfg.spatial_compression == f
    assert cfg.num_stages == stages
    assert cfg.latent_channels == c
    assert cfg.in_channels == 3
    if sf is not None:
        assert cfg.scaling_factor == pytest.approx(sf, abs=0)
    with torch.device("meta"):
        model = DCAE(cfg)
    assert (model.spatial_compression, model.latent_channels, model.scaling_factor) == (f, c, cfg.scaling_factor)


@pytest.mark.parametrize("name", ["dc-ae-f32c32-in-1.0", "dc-ae-f64c128-mix-1.0", "dc-ae-f128c512-in-1.0"])
def test_in_mix_architecture(name: str) -> None:
    cfg = DCAEConfig.from_name(name)
    n = cfg.num_stages
    assert cfg.width_list[:6] == (128, 256, 512, 512, 1024, 1024)
    assert cfg.width_list[6:] == (2048,) * (n - 6)
    assert cfg.encoder_depth_list == (0, 4, 8) + (2,) * (n - 3)
    assert cfg.decoder_depth_list == (0, 5, 10) + (2,) * (n - 3)
    assert cfg.encoder_block_types == ("ResBlock",) * 3 + ("EViT_GLU",) * (n - 3)
    assert cfg.decoder_block_types == ("ResBlock",) * 3 + ("EViT_GLU",) * (n - 3)
    assert cfg.downsample_block_type == "ConvPixelUnshuffle"
    assert cfg.upsample_block_type == "ConvPixelShuffle"
    assert cfg.decoder_norms == ("bn2d",) * 3 + ("rms2d",) * (n - 3)
    assert cfg.decoder_acts == ("relu",) * 3 + ("silu",) * (n - 3)
    assert cfg.encoder_out_shortcut and cfg.decoder_in_shortcut
    assert cfg.decoder_out_act == "relu"
    assert cfg.attention_head_dim == 32


@pytest.mark.parametrize("name", ["dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-sana-1.1"])
def test_sana_architecture(name: str) -> None:
    cfg = DCAEConfig.from_name(name)
    assert cfg.width_list == (128, 256, 512, 512, 1024, 1024)
    assert cfg.encoder_depth_list == (2, 2, 2, 3, 3, 3)
    assert cfg.decoder_depth_list == (3, 3, 3, 3, 3, 3)
    assert cfg.encoder_block_types == ("ResBlock",) * 3 + ("EViTS5_GLU",) * 3
    assert cfg.decoder_block_types == ("ResBlock",) * 3 + ("EViTS5_GLU",) * 3
    assert cfg.downsample_block_type == "Conv"
    assert cfg.upsample_block_type == "InterpolateConv"
    assert cfg.decoder_norms == ("rms2d",) * 6 and cfg.decoder_acts == ("silu",) * 6
    assert cfg.encoder_out_shortcut and cfg.decoder_in_shortcut


def test_lite_and_v15_architecture() -> None:
    lite = DCAEConfig.from_name("dc-ae-lite-f32c32-sana-1.1")
    sana = DCAEConfig.from_name("dc-ae-f32c32-sana-1.1")
    # The Lite model keeps the SANA encoder and swaps in an all-ResBlock decoder.
    for field in ("width_list", "encoder_depth_list", "encoder_block_types", "downsample_block_type"):
        assert getattr(lite, field) == getattr(sana, field), field
    assert lite.decoder_depth_list == (0, 3, 5, 4, 4, 4)
    assert lite.decoder_block_types == ("ResBlock",) * 6
    assert lite.decoder_out_act == "silu"
    assert not lite.encoder_out_shortcut and not lite.decoder_in_shortcut
    for name, n in (("dc-ae-f32c128-1.5", 6), ("dc-ae-f64c128-1.5", 7)):
        cfg = DCAEConfig.from_name(name)
        assert cfg.structured_latent
        assert cfg.encoder_depth_list == cfg.decoder_depth_list == (0, 5, 10) + (4,) * (n - 3)
        assert cfg.encoder_block_types == cfg.decoder_block_types == ("ResBlock",) * n
        assert not cfg.encoder_out_shortcut and not cfg.decoder_in_shortcut
    assert not sana.structured_latent


def test_parameter_counts_on_meta_device() -> None:
    # SANA-1.0's diffusers safetensors is 1.25 GB of fp32, about 312M parameters.
    assert n_params(DCAEConfig.from_name("dc-ae-f32c32-sana-1.0")) == pytest.approx(312e6, rel=0.01)
    counts = {name: n_params(DCAEConfig.from_name(name)) for name in RELEASED}
    assert counts["dc-ae-f32c32-sana-1.1"] == counts["dc-ae-f32c32-sana-1.0"]
    for fc in ("f32c32", "f64c128", "f128c512"):
        assert counts[f"dc-ae-{fc}-in-1.0"] == counts[f"dc-ae-{fc}-mix-1.0"]
    # Order of magnitude: hundreds of millions, growing with the number of stages.
    for name, count in counts.items():
        assert 1e8 < count < 2e9, (name, count)
    assert counts["dc-ae-f32c32-in-1.0"] < counts["dc-ae-f64c128-in-1.0"] < counts["dc-ae-f128c512-in-1.0"]
    assert counts["dc-ae-f32c128-1.5"] < counts["dc-ae-f64c128-1.5"]
    for name in TINY:
        assert n_params(DCAEConfig.from_name(name)) < 1e6, name


def test_unknown_preset_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="unknown DC-AE preset 'dc-ae-f32c32-sana-9.9'") as info:
        DCAEConfig.from_name("dc-ae-f32c32-sana-9.9")
    for name in RELEASED:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_frozen() -> None:
    cfg = DCAEConfig.from_name("tiny-f4")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.latent_channels = 8  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.scaling_factor = 2.0  # type: ignore[misc]
    assert hash(cfg) == hash(DCAEConfig.from_name("tiny-f4")), "tuples keep presets hashable"


def test_typo_in_field_name_is_rejected_naming_the_field() -> None:
    data = DCAEConfig.from_name("tiny-f4").model_dump()
    data["latnet_channels"] = data.pop("latent_channels")
    with pytest.raises(pydantic.ValidationError) as info:
        DCAEConfig.model_validate(data)
    locs = {err["loc"] for err in info.value.errors()}
    assert ("latnet_channels",) in locs
    assert ("latent_channels",) in locs  # now missing
    assert "latnet_channels" in str(info.value)


@pytest.mark.parametrize("name", preset_names())
def test_json_round_trip(name: str) -> None:
    cfg = DCAEConfig.from_name(name)
    again = DCAEConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    assert isinstance(again.width_list, tuple)


def _tiny(**changes: object) -> dict[str, object]:
    return {**DCAEConfig.from_name("tiny-f8").model_dump(), **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"encoder_depth_list": (1, 1, 1)}, "encoder_depth_list"),
        ({"decoder_depth_list": (1, 1, 1, 1, 1)}, "decoder_depth_list"),
        ({"encoder_block_types": ("ResBlock",) * 3}, "encoder_block_types"),
        ({"decoder_block_types": ("ResBlock",) * 5}, "decoder_block_types"),
        ({"decoder_norms": ("rms2d",) * 3}, "decoder_norms"),
        ({"decoder_acts": ("silu",) * 5}, "decoder_acts"),
        ({"decoder_width_list": (8, 16, 32)}, "decoder_width_list"),
    ],
)
def test_mismatched_list_lengths(changes: dict[str, object], field: str) -> None:
    with pytest.raises((ConfigError, pydantic.ValidationError), match=field):
        DCAEConfig.model_validate(_tiny(**changes))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"width_list": (8,), "encoder_depth_list": (1,)}, "width_list needs at least 2 stages"),
        ({"width_list": (8, 16, 0, 32)}, "width_list"),
        ({"width_list": (8, 16, 36, 32)}, "attention_head_dim"),  # EViT stage width not a head multiple
        ({"width_list": (8, 16, 32, 48)}, "averaging shortcut"),  # 4*32 is not a multiple of 48
        ({"decoder_width_list": (8, 16, 32, 40)}, "duplicating shortcut: 4\\*32 is not a multiple of 40"),
        ({"latent_channels": 7}, "encoder_out_shortcut"),
        ({"latent_channels": 0}, "latent_channels"),
        ({"encoder_depth_list": (1, 0, 1, 1)}, "encoder_depth_list: only stage 0 may be empty"),
        ({"decoder_depth_list": (1, 1, -1, 1)}, "decoder_depth_list must be non-negative"),
        ({"encoder_block_types": ("ResBlock", "ResBlock", "Attention", "ResBlock")}, "encoder_block_types"),
        ({"decoder_norms": ("ln2d",) * 4}, "decoder_norms"),
        ({"scaling_factor": 0.0}, "scaling_factor"),
        ({"attention_head_dim": 0}, "attention_head_dim"),
    ],
)
def test_validators_name_the_problem(changes: dict[str, object], match: str) -> None:
    with pytest.raises((ConfigError, pydantic.ValidationError), match=match) as info:
        DCAEConfig.model_validate(_tiny(**changes))
    assert isinstance(info.value, ValueError)


def test_custom_config_without_shortcuts_allows_any_latent_width() -> None:
    cfg = DCAEConfig.model_validate(_tiny(latent_channels=7, encoder_out_shortcut=False, decoder_in_shortcut=False))
    assert cfg.latent_channels == 7
    assert DCAE(cfg).encode(torch.zeros(1, 3, 8, 8)).shape == (1, 7, 1, 1)


def test_public_api_names() -> None:
    for name in ("DCAE", "DCAEConfig", "preset_names", "load", "save", "ConfigError", "InputError", "CheckpointError"):
        assert name in dc_ae.__all__, name
