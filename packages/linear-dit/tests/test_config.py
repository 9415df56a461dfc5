"""Presets and validation of LinearDiTConfig."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from linear_dit import ConfigError, LinearDiT, LinearDiTConfig, preset_names


def test_every_preset_builds_on_meta() -> None:
    for name in preset_names():
        cfg = LinearDiTConfig.from_name(name)
        assert cfg.name == name
        with torch.device("meta"):
            model = LinearDiT(cfg)
        assert model.num_parameters() > 0


@pytest.mark.parametrize(
    ("name", "params", "heads", "cross_heads"),
    [
        # Totals equal diffusers' SanaTransformer2DModel with the released configs (checked once on meta).
        ("sana-0.6b-1024px", 591_747_872, 36, 16),
        ("sana-1.6b-1024px", 1_604_462_752, 70, 20),
    ],
)
def test_released_sizes(name: str, params: int, heads: int, cross_heads: int) -> None:
    cfg = LinearDiTConfig.from_name(name)
    with torch.device("meta"):
        assert LinearDiT(cfg).num_parameters() == params
    assert cfg.num_attention_heads == heads
    assert cfg.num_cross_attention_heads == cross_heads
    assert cfg.mlp_hidden == int(cfg.hidden_size * 2.5)


def test_sana15_has_qk_norm_and_growth_depth() -> None:
    small, big = LinearDiTConfig.from_name("sana-1.5-1.6b-1024px"), LinearDiTConfig.from_name("sana-1.5-4.8b-1024px")
    assert small.qk_norm and small.cross_norm and big.qk_norm
    assert (small.depth, big.depth, big.hidden_size) == (20, 60, 2240)
    with torch.device("meta"):
        assert 4.6e9 < LinearDiT(big).num_parameters() < 4.9e9


def test_high_resolution_presets_use_pe() -> None:
    for width in ("0.6b", "1.6b"):
        assert not LinearDiTConfig.from_name(f"sana-{width}-1024px").use_pe
        k2, k4 = LinearDiTConfig.from_name(f"sana-{width}-2k"), LinearDiTConfig.from_name(f"sana-{width}-4k")
        assert k2.use_pe and k2.pe_interpolation == 1.0 and k2.sample_size == 64
        assert k4.use_pe and k4.pe_interpolation == 2.0 and k4.sample_size == 128 and k4.flow_shift == 6.0


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'sana-9b'.*sana-0.6b-1024px"):
        LinearDiTConfig.from_name("sana-9b")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 70}, "not a multiple of attention_head_dim"),
        ({"num_cross_attention_heads": 3}, "not a multiple of num_cross_attention_heads"),
        ({"use_pe": True, "hidden_size": 48, "attention_head_dim": 16, "num_cross_attention_heads": 2}, None),
        ({"use_pe": True, "video": True, "hidden_size": 64}, "divisible by 6"),
        ({"patch_size": 3}, "sample_size 8 is not a multiple of patch_size 3"),
    ],
)
def test_validation(overrides: dict[str, object], message: str | None) -> None:
    base = LinearDiTConfig.from_name("tiny").model_dump()
    if message is None:
        LinearDiTConfig.model_validate({**base, **overrides})
        return
    with pytest.raises(ValidationError, match=message):
        LinearDiTConfig.model_validate({**base, **overrides})


def test_frozen_and_no_extra_fields() -> None:
    cfg = LinearDiTConfig.from_name("tiny")
    with pytest.raises(ValidationError):
        cfg.depth = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="hiden_size"):
        LinearDiTConfig.model_validate({**cfg.model_dump(), "hiden_size": 3})


def test_public_api_resolves_lazily() -> None:
    import importlib

    import linear_dit

    for name in linear_dit.__all__:
        assert getattr(linear_dit, name) is not None, name
    # The function, not the module of the same stem, even after the module has been imported.
    importlib.import_module("linear_dit.training")
    assert callable(linear_dit.train) and linear_dit.train.__name__ == "train"
