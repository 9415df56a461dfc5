"""Key maps and config maps between our layout, the original Sana release and diffusers.

Papers: SANA (Xie et al., ICLR 2025) and SANA-1.5 (ICML 2025, q/k RMSNorm). The map follows the
weight key table of /work/shared/reference/sana.md, sec. 1 (from diffusers'
``convert_sana_to_diffusers.py``); the diffusers side is checked against the key set and shapes
of diffusers' own ``SanaTransformer2DModel`` built from the config we write for it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ldit_testing import random_model

from linear_dit import CheckpointError, LinearDiT, LinearDiTConfig, layouts, preset_names

IMAGE_PRESETS = [n for n in preset_names() if not LinearDiTConfig.from_name(n).video]
TINY = ["tiny", "tiny-1.5", "tiny-pe", "tiny-patch2"]


def meta_state(cfg: LinearDiTConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return LinearDiT(cfg).state_dict()


def diffusers_model(cfg: LinearDiTConfig) -> torch.nn.Module:
    diffusers = pytest.importorskip("diffusers")
    kwargs = {k: v for k, v in layouts.diffusers_config(cfg).items() if not k.startswith("_")}
    with torch.device("meta"):
        return diffusers.SanaTransformer2DModel(**kwargs)


# --- key maps ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*TINY, "sana-1.5-1.6b-1024px", "sana-0.6b-4k"])
def test_diffusers_keys_and_shapes_equal_diffusers_own(name: str) -> None:
    cfg = LinearDiTConfig.from_name(name)
    ref = {k: tuple(v.shape) for k, v in diffusers_model(cfg).state_dict().items()}
    assert layouts.expected_shapes(cfg, "diffusers") == ref
    converted = layouts.to_layout(meta_state(cfg), cfg, "diffusers")
    assert {k: tuple(v.shape) for k, v in converted.items()} == ref


def test_reference_key_table() -> None:
    """Spot checks of /work/shared/reference/sana.md sec. 1, one row each."""
    cfg = LinearDiTConfig.from_name("tiny-1.5")
    c, h = cfg.hidden_size, cfg.mlp_hidden
    diff = layouts.expected_shapes(cfg, "diffusers")
    sana = layouts.expected_shapes(cfg, "sana")
    assert diff["patch_embed.proj.weight"] == (c, cfg.in_channels, 1, 1)
    assert diff["time_embed.emb.timestep_embedder.linear_1.weight"] == (c, 256)
    assert diff["time_embed.linear.weight"] == (6 * c, c)
    assert diff["caption_projection.linear_1.weight"] == (c, cfg.caption_channels)
    assert diff["caption_norm.weight"] == (c,)
    assert diff["transformer_blocks.1.scale_shift_table"] == (6, c)
    assert diff["transformer_blocks.0.attn1.to_v.weight"] == (c, c)
    assert "transformer_blocks.0.attn1.to_q.bias" not in diff  # qkv has no bias
    assert diff["transformer_blocks.0.attn2.to_v.bias"] == (c,)
    assert diff["transformer_blocks.0.attn1.norm_k.weight"] == (c,)
    assert diff["transformer_blocks.0.attn2.norm_q.weight"] == (c,)
    assert diff["transformer_blocks.0.ff.conv_inverted.weight"] == (2 * h, c, 1, 1)
    assert diff["transformer_blocks.0.ff.conv_depth.weight"] == (2 * h, 1, 3, 3)
    assert diff["transformer_blocks.0.ff.conv_point.weight"] == (c, h, 1, 1)
    assert "transformer_blocks.0.ff.conv_point.bias" not in diff
    assert diff["scale_shift_table"] == (2, c)
    assert diff["proj_out.weight"] == (cfg.in_channels, c)
    assert sana["blocks.0.mlp.inverted_conv.conv.weight"] == (2 * h, c, 1, 1)
    assert sana["blocks.0.mlp.point_conv.conv.weight"] == (c, h, 1, 1)
    assert sana["blocks.0.attn.q_norm.weight"] == sana["blocks.0.cross_attn.k_norm.weight"] == (c,)
    assert "blocks.0.mlp.inverted_conv.weight" not in sana


def test_fused_projections_split_in_order() -> None:
    model = random_model("tiny-1.5")
    state = model.state_dict()
    diff = layouts.to_layout(state, model.config, "diffusers")
    q, k, v = state["blocks.1.attn.qkv.weight"].chunk(3)
    assert torch.equal(diff["transformer_blocks.1.attn1.to_q.weight"], q)
    assert torch.equal(diff["transformer_blocks.1.attn1.to_k.weight"], k)
    assert torch.equal(diff["transformer_blocks.1.attn1.to_v.weight"], v)
    for param in ("weight", "bias"):
        kk, vv = state[f"blocks.0.cross_attn.kv_linear.{param}"].chunk(2)
        assert torch.equal(diff[f"transformer_blocks.0.attn2.to_k.{param}"], kk)
        assert torch.equal(diff[f"transformer_blocks.0.attn2.to_v.{param}"], vv)
    assert torch.equal(diff["scale_shift_table"], state["final_layer.scale_shift_table"])
    assert torch.equal(diff["transformer_blocks.0.attn2.norm_q.weight"], state["blocks.0.cross_attn.q_norm.weight"])


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
@pytest.mark.parametrize("name", TINY)
def test_round_trip_is_identity(name: str, layout: layouts.Layout) -> None:
    model = random_model(name)
    state = model.state_dict()
    converted = layouts.to_layout(state, model.config, layout)
    assert layouts.detect_layout(converted) == layout
    back, missing, unexpected = layouts.from_layout(converted, model.config, layout)
    assert missing == [] and unexpected == []
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_sana_layout_carries_pos_embed_and_drops_release_extras() -> None:
    model = random_model("tiny-pe")
    cfg = model.config
    sana = layouts.to_layout(model.state_dict(), cfg, "sana")
    pe = sana["pos_embed"]
    assert pe.shape == (1, cfg.base_size**2, cfg.hidden_size) and pe.abs().amax() > 0
    assert not layouts.to_layout(random_model("tiny").state_dict(), random_model("tiny").config, "sana")[
        "pos_embed"
    ].any()
    # The release also holds the CFG null caption and, in some configs, a log-variance head.
    extras = {
        "y_embedder.y_embedding": torch.randn(cfg.text_max_length, cfg.caption_channels),
        "logvar_linear.weight": torch.randn(1, cfg.hidden_size),
        "logvar_linear.bias": torch.randn(1),
    }
    back, missing, unexpected = layouts.from_layout({**sana, **extras}, cfg, "sana")
    assert missing == unexpected == [] and back.keys() == model.state_dict().keys()
    # Without pos_embed it loads as well (nothing to check it against).
    del sana["pos_embed"]
    assert layouts.from_layout(sana, cfg, "sana")[0].keys() == back.keys()


def test_pos_embed_must_agree_with_the_config() -> None:
    pe_cfg = LinearDiTConfig.from_name("tiny-pe")
    plain = LinearDiTConfig.from_name("tiny")
    state = layouts.to_layout(random_model("tiny").state_dict(), plain, "sana")
    with_pe = {**state, "pos_embed": layouts.sana_pos_embed(pe_cfg)}
    with pytest.raises(
        CheckpointError, match=r"pos_embed holds a sin-cos embedding, but config 'tiny' has use_pe=False"
    ):
        layouts.from_layout(with_pe, plain, "sana")
    with pytest.raises(CheckpointError, match=r"pos_embed is all zeros .* config 'tiny-pe' has use_pe=True"):
        layouts.from_layout(state, pe_cfg, "sana")
    stretched = pe_cfg.model_copy(update={"pe_interpolation": 2.0})
    with pytest.raises(CheckpointError, match=r"differs from the sin-cos embedding .*pe_interpolation=2"):
        layouts.from_layout(with_pe, stretched, "sana")
    bigger = pe_cfg.model_copy(update={"sample_size": 16})
    with pytest.raises(CheckpointError, match=r"covers 64 tokens, config 'tiny-pe' trains on a 16x16 grid"):
        layouts.from_layout(with_pe, bigger, "sana")
    # Without a PE, the training grid changes nothing: another sample_size loads.
    assert layouts.from_layout(state, plain.model_copy(update={"sample_size": 16}), "sana")[1] == []


def test_strict_key_errors_name_the_keys() -> None:
    model = random_model("tiny")
    cfg = model.config
    diff = layouts.to_layout(model.state_dict(), cfg, "diffusers")
    broken = dict(diff)
    del broken["transformer_blocks.1.attn1.to_k.weight"]
    broken["transformer_blocks.0.attn1.norm_q.weight"] = torch.ones(cfg.hidden_size)
    broken["proj_out.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        layouts.from_layout(broken, cfg, "diffusers")
    msg = str(info.value)
    assert "diffusers checkpoint does not match the config 'tiny'" in msg
    assert "1 missing: transformer_blocks.1.attn1.to_k.weight" in msg
    assert "1 unexpected: transformer_blocks.0.attn1.norm_q.weight" in msg
    assert "1 wrong shape: proj_out.bias: expected [4], found [7]" in msg
    # Non-strict: missing and unexpected are reported, not raised; a wrong shape still raises.
    del broken["proj_out.bias"]
    ours, missing, unexpected = layouts.from_layout(broken, cfg, "diffusers", strict=False)
    assert missing == ["blocks.1.attn.qkv.weight", "final_layer.linear.bias"]
    assert unexpected == ["transformer_blocks.0.attn1.norm_q.weight"]
    assert "blocks.1.attn.qkv.weight" not in ours and "blocks.0.attn.qkv.weight" in ours
    with pytest.raises(CheckpointError, match="wrong shape"):
        layouts.from_layout({**diff, "proj_out.bias": torch.zeros(7)}, cfg, "diffusers", strict=False)


def test_many_missing_keys_are_clipped() -> None:
    cfg = LinearDiTConfig.from_name("sana-1.6b-1024px")
    with pytest.raises(CheckpointError, match=r"missing: .* \.\.\. \(\+\d+ more\)"):
        layouts.from_layout({}, cfg, "sana")


def test_detect_layout() -> None:
    model = random_model("tiny")
    for layout in layouts.LAYOUTS:
        assert layouts.detect_layout(layouts.to_layout(model.state_dict(), model.config, layout).keys()) == layout
    with pytest.raises(CheckpointError, match="not a Linear DiT checkpoint"):
        layouts.detect_layout(["encoder.conv_in.weight", "decoder.conv_out.weight"])


def test_video_configs_have_no_other_layout() -> None:
    model = random_model("tiny-video")
    for layout in ("sana", "diffusers"):
        with pytest.raises(CheckpointError, match=f"video model .* has no {layout} layout"):
            layouts.to_layout(model.state_dict(), model.config, layout)
    with pytest.raises(CheckpointError, match="video model"):
        layouts.diffusers_config(model.config)
    with pytest.raises(CheckpointError, match="unknown layout 'onnx'"):
        layouts.check_layout_supported(model.config, "onnx")


# --- diffusers config.json -----------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGE_PRESETS)
def test_diffusers_config_round_trip_names_the_preset(name: str) -> None:
    cfg = LinearDiTConfig.from_name(name)
    assert layouts.config_from_diffusers(layouts.diffusers_config(cfg)) == cfg


def test_released_diffusers_configs() -> None:
    # Field values of the released SanaTransformer2DModel config.json files (reference sec. 1 and
    # convert_sana_to_diffusers.py): 1.6B at 1024px, 0.6B at 4K (PE with interpolation 2), 1.5 4.8B.
    base = {
        "_class_name": "SanaTransformer2DModel",
        "_diffusers_version": "0.32.0.dev0",
        "attention_bias": False,
        "attention_head_dim": 32,
        "caption_channels": 2304,
        "cross_attention_dim": 2240,
        "cross_attention_head_dim": 112,
        "dropout": 0.0,
        "in_channels": 32,
        "interpolation_scale": None,
        "mlp_ratio": 2.5,
        "norm_elementwise_affine": False,
        "norm_eps": 1e-06,
        "num_attention_heads": 70,
        "num_cross_attention_heads": 20,
        "num_layers": 20,
        "out_channels": 32,
        "patch_size": 1,
        "sample_size": 32,
    }
    assert layouts.config_from_diffusers(base) == LinearDiTConfig.from_name("sana-1.6b-1024px")
    small_4k = {
        **base,
        "cross_attention_dim": 1152,
        "cross_attention_head_dim": 72,
        "num_attention_heads": 36,
        "num_cross_attention_heads": 16,
        "num_layers": 28,
        "sample_size": 128,
        "interpolation_scale": 2.0,
    }
    cfg = layouts.config_from_diffusers(small_4k)
    assert cfg.name == "sana-0.6b-4k" and cfg.use_pe and cfg.pe_interpolation == 2.0 and cfg.flow_shift == 6.0
    big = {**base, "num_layers": 60, "qk_norm": "rms_norm_across_heads", "timestep_scale": 1.0}
    assert layouts.config_from_diffusers(big).name == "sana-1.5-4.8b-1024px"
    # Not a preset: a custom config with the same fields, eps left at the Sana blocks' 1e-8.
    custom = layouts.config_from_diffusers({**base, "num_layers": 7})
    assert custom.name == "custom" and custom.depth == 7 and custom.linear_attention_eps == 1e-8
    # Omitted keys take diffusers' defaults (which are the 1.6B model's).
    assert layouts.config_from_diffusers({"_class_name": "SanaTransformer2DModel"}).name == "sana-1.6b-1024px"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"_class_name": "PixArtTransformer2DModel"}, "describes a PixArtTransformer2DModel"),
        ({"guidance_embeds": True}, "guidance_embeds=true"),
        ({"attention_bias": True}, "attention_bias=true"),
        ({"qk_norm": "layer_norm"}, "qk_norm='layer_norm'"),
        ({"cross_attention_dim": None}, "no cross-attention"),
        ({"cross_attention_head_dim": 64}, "widths disagree"),
        ({"norm_eps": 1e-5}, "norm_eps=1e-05 in config.json"),
        ({"sample_size": 7, "patch_size": 2}, "sample_size 7 is not a multiple of patch_size 2"),
    ],
)
def test_unsupported_diffusers_configs(change: dict[str, Any], match: str) -> None:
    d = {**layouts.diffusers_config(LinearDiTConfig.from_name("tiny")), **change}
    with pytest.raises(CheckpointError, match=match):
        layouts.config_from_diffusers(d)


def test_configs_diffusers_cannot_express() -> None:
    tiny = LinearDiTConfig.from_name("tiny")
    with pytest.raises(CheckpointError, match="one qk_norm setting that switches the q/k RMSNorms of both"):
        layouts.diffusers_config(tiny.model_copy(update={"qk_norm": True}))
    with pytest.raises(CheckpointError, match="fixes the eps of its final norm at 1e-06"):
        layouts.diffusers_config(tiny.model_copy(update={"norm_eps": 1e-5}))


@settings(max_examples=40, deadline=None)
@given(
    heads=st.integers(1, 6),
    head_dim=st.sampled_from([8, 16, 32]),
    cross_heads=st.sampled_from([1, 2, 4]),
    depth=st.integers(1, 30),
    patch=st.sampled_from([1, 2]),
    grid=st.integers(1, 64),
    qk=st.booleans(),
    pe=st.sampled_from([None, 1.0, 2.0, 0.5]),
    ratio=st.sampled_from([2.5, 4.0, 1.0]),
    out=st.sampled_from([None, 8]),
)
def test_diffusers_config_round_trip_property(
    heads: int,
    head_dim: int,
    cross_heads: int,
    depth: int,
    patch: int,
    grid: int,
    qk: bool,
    pe: float | None,
    ratio: float,
    out: int | None,
) -> None:
    width = heads * head_dim * 12  # divisible by every cross-head count and by 4 (for the PE)
    cfg = LinearDiTConfig(
        hidden_size=width,
        depth=depth,
        attention_head_dim=head_dim,
        num_cross_attention_heads=cross_heads,
        patch_size=patch,
        sample_size=grid * patch,
        qk_norm=qk,
        cross_norm=qk,
        use_pe=pe is not None,
        pe_interpolation=pe or 1.0,
        mlp_ratio=ratio,
        in_channels=4,
        out_channels=out,
    )
    back = layouts.config_from_diffusers(layouts.diffusers_config(cfg))
    if back.name == "custom":
        assert back == cfg
    else:  # the fields equal a preset's: that preset, same architecture
        assert back.model_dump(exclude={"name", "flow_shift", "text_max_length"}) == cfg.model_dump(
            exclude={"name", "flow_shift", "text_max_length"}
        )
