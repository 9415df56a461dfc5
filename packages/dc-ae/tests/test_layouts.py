"""Tests of the checkpoint key layouts: the original efficientvit release and diffusers' AutoencoderDC.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025). Key names and shapes are checked against the examples listed from the efficientvit
release and diffusers' conversion code (/work/shared/reference/dcae.md, sec. 2), and the diffusers
layout against ``diffusers.AutoencoderDC``'s own state dict; numerical parity with diffusers runs
on the tiny presets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dcae_testing import random_model
from torch import nn

import dc_ae
from dc_ae import DCAE, CheckpointError, DCAEConfig, layouts, preset_names

TINY = ["tiny-f4", "tiny-f8", "tiny-f4-resblock", "tiny-f8-in", "dc-ae-f32c32-small"]
V15 = ["dc-ae-f32c128-1.5", "dc-ae-f64c128-1.5"]
DIFFUSERS_PRESETS = [n for n in preset_names() if n not in V15]


def meta_state(name: str | DCAEConfig) -> dict[str, torch.Tensor]:
    cfg = DCAEConfig.from_name(name) if isinstance(name, str) else name
    with torch.device("meta"):
        return DCAE(cfg).state_dict()


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def efficientvit_shapes(name: str) -> dict[str, tuple[int, ...]]:
    return shapes(layouts.to_efficientvit(meta_state(name), DCAEConfig.from_name(name)))


def diffusers_model(cfg: DCAEConfig, meta: bool = False) -> nn.Module:
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference for the AutoencoderDC layout")
    kwargs = {k: v for k, v in layouts.diffusers_config(cfg).items() if not k.startswith("_")}
    if meta:
        with torch.device("meta"):
            return diffusers.AutoencoderDC(**kwargs)
    return diffusers.AutoencoderDC(**kwargs).eval()


# --- efficientvit key names ----------------------------------------------------------------------

SANA_KEYS = {
    # C = 512 at stage 3: qkv [3C, C, 1, 1], multi-scale [3C, 1, 5, 5] and [3C, 32, 1, 1], proj [C, 2C, 1, 1].
    "encoder.project_in.conv.weight": (128, 3, 3, 3),
    "encoder.project_in.conv.bias": (128,),
    "encoder.stages.0.op_list.0.main.conv1.conv.weight": (128, 128, 3, 3),
    "encoder.stages.0.op_list.0.main.conv1.conv.bias": (128,),
    "encoder.stages.0.op_list.0.main.conv2.conv.weight": (128, 128, 3, 3),
    "encoder.stages.0.op_list.0.main.conv2.norm.weight": (128,),
    "encoder.stages.0.op_list.0.main.conv2.norm.bias": (128,),
    "encoder.stages.0.op_list.2.main.conv.weight": (256, 128, 3, 3),  # stride-2 "Conv" downsample
    "encoder.stages.3.op_list.0.context_module.main.qkv.conv.weight": (1536, 512, 1, 1),
    "encoder.stages.3.op_list.0.context_module.main.aggreg.0.0.weight": (1536, 1, 5, 5),
    "encoder.stages.3.op_list.0.context_module.main.aggreg.0.1.weight": (1536, 32, 1, 1),
    "encoder.stages.3.op_list.0.context_module.main.proj.conv.weight": (512, 1024, 1, 1),
    "encoder.stages.3.op_list.0.context_module.main.proj.norm.weight": (512,),
    "encoder.stages.3.op_list.0.context_module.main.proj.norm.bias": (512,),
    "encoder.stages.3.op_list.0.local_module.main.inverted_conv.conv.weight": (4096, 512, 1, 1),
    "encoder.stages.3.op_list.0.local_module.main.inverted_conv.conv.bias": (4096,),
    "encoder.stages.3.op_list.0.local_module.main.depth_conv.conv.weight": (4096, 1, 3, 3),
    "encoder.stages.3.op_list.0.local_module.main.depth_conv.conv.bias": (4096,),
    "encoder.stages.3.op_list.0.local_module.main.point_conv.conv.weight": (512, 2048, 1, 1),
    "encoder.stages.3.op_list.0.local_module.main.point_conv.norm.weight": (512,),
    "encoder.stages.3.op_list.3.main.conv.weight": (1024, 512, 3, 3),
    "encoder.project_out.main.op_list.0.conv.weight": (32, 1024, 3, 3),
    "encoder.project_out.main.op_list.0.conv.bias": (32,),
    "decoder.project_in.main.conv.weight": (1024, 32, 3, 3),
    "decoder.project_in.main.conv.bias": (1024,),
    "decoder.stages.1.op_list.0.main.conv.conv.weight": (256, 512, 3, 3),  # nearest x2 then conv
    "decoder.stages.1.op_list.0.main.conv.conv.bias": (256,),  # diffusers' DC-AE detector key
    "decoder.stages.1.op_list.1.main.conv1.conv.weight": (256, 256, 3, 3),
    "decoder.stages.5.op_list.0.context_module.main.qkv.conv.weight": (3072, 1024, 1, 1),
    "decoder.project_out.op_list.0.weight": (128,),
    "decoder.project_out.op_list.0.bias": (128,),
    "decoder.project_out.op_list.2.conv.weight": (3, 128, 3, 3),
    "decoder.project_out.op_list.2.conv.bias": (3,),
}

IN_KEYS = {
    # depth[0] == 0: project_in/out do the first 2x down/up-sampling with pixel (un)shuffle.
    "encoder.project_in.conv.conv.weight": (64, 3, 3, 3),
    "encoder.project_in.conv.conv.bias": (64,),  # diffusers reads f32c32 vs f64c128 from this and...
    "decoder.project_in.main.conv.weight": (1024, 32, 3, 3),  # ...shape[1] here
    "encoder.stages.1.op_list.0.main.conv1.conv.weight": (256, 256, 3, 3),
    "encoder.stages.1.op_list.4.main.conv.conv.weight": (128, 256, 3, 3),  # conv to C/4, then unshuffle
    "encoder.stages.3.op_list.0.context_module.main.qkv.conv.weight": (1536, 512, 1, 1),
    "encoder.stages.3.op_list.0.context_module.main.proj.conv.weight": (512, 512, 1, 1),
    "encoder.project_out.main.op_list.0.conv.weight": (32, 1024, 3, 3),
    "decoder.stages.1.op_list.0.main.conv.conv.weight": (1024, 512, 3, 3),  # conv to 4C, then shuffle
    "decoder.stages.1.op_list.0.main.conv.conv.bias": (1024,),
    "decoder.stages.1.op_list.1.main.conv2.norm.weight": (256,),
    "decoder.stages.1.op_list.1.main.conv2.norm.running_mean": (256,),
    "decoder.stages.1.op_list.1.main.conv2.norm.running_var": (256,),
    "decoder.stages.1.op_list.1.main.conv2.norm.num_batches_tracked": (),
    "decoder.stages.2.op_list.10.main.conv2.norm.running_mean": (512,),
    "decoder.stages.3.op_list.2.context_module.main.proj.norm.weight": (512,),
    "decoder.project_out.op_list.0.weight": (256,),
    "decoder.project_out.op_list.2.conv.conv.weight": (12, 256, 3, 3),
    "decoder.project_out.op_list.2.conv.conv.bias": (12,),
}


@pytest.mark.parametrize("name", ["dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-sana-1.1"])
def test_efficientvit_keys_sana(name: str) -> None:
    got = efficientvit_shapes(name)
    for key, shape in SANA_KEYS.items():
        assert key in got, key
        assert got[key] == shape, key
    assert not any("running_mean" in k for k in got)
    assert "encoder.project_in.conv.conv.weight" not in got


@pytest.mark.parametrize("name", ["dc-ae-f32c32-in-1.0", "dc-ae-f32c32-mix-1.0"])
def test_efficientvit_keys_in_mix(name: str) -> None:
    got = efficientvit_shapes(name)
    for key, shape in IN_KEYS.items():
        assert key in got, key
        assert got[key] == shape, key
    assert "encoder.project_in.conv.bias" not in got  # diffusers' sana marker must be absent
    assert not any(k.startswith("encoder.stages.0.") or k.startswith("decoder.stages.0.") for k in got)
    # BatchNorm statistics only in the first three decoder stages; stage 0 is empty.
    bn_stages = {int(k.split(".")[2]) for k in got if k.endswith("running_mean")}
    assert bn_stages == {1, 2}
    assert sum(k.endswith("running_mean") for k in got) == 5 + 10


@pytest.mark.parametrize(("name", "latent"), [("dc-ae-f64c128-in-1.0", 128), ("dc-ae-f128c512-mix-1.0", 512)])
def test_efficientvit_keys_deeper_in_mix(name: str, latent: int) -> None:
    got = efficientvit_shapes(name)
    assert got["encoder.project_in.conv.conv.bias"] == (64,)
    assert got["decoder.project_in.main.conv.weight"] == (2048, latent, 3, 3)
    assert got["encoder.project_out.main.op_list.0.conv.weight"] == (latent, 2048, 3, 3)
    assert got["decoder.stages.1.op_list.0.main.conv.conv.bias"] == (1024,)


def test_efficientvit_keys_lite_and_v15() -> None:
    lite = efficientvit_shapes("dc-ae-lite-f32c32-sana-1.1")
    assert lite["encoder.project_in.conv.weight"] == (128, 3, 3, 3)  # the SANA encoder
    assert lite["encoder.stages.3.op_list.0.context_module.main.aggreg.0.1.weight"] == (1536, 32, 1, 1)
    # No encoder-out / decoder-in shortcut: no ResidualBlock "main." wrapper.
    assert lite["encoder.project_out.op_list.0.conv.weight"] == (32, 1024, 3, 3)
    assert lite["decoder.project_in.conv.weight"] == (1024, 32, 3, 3)
    assert lite["decoder.project_out.op_list.2.conv.conv.weight"] == (12, 256, 3, 3)
    assert lite["decoder.stages.1.op_list.0.main.conv.conv.bias"] == (1024,)
    assert not any("context_module" in k for k in lite if k.startswith("decoder."))
    for name in V15:
        got = efficientvit_shapes(name)
        assert got["encoder.project_out.op_list.0.conv.weight"] == (128, 1024, 3, 3)
        assert "encoder.project_out.main.op_list.0.conv.weight" not in got
        assert not any("context_module" in k or "running_mean" in k for k in got)


@pytest.mark.parametrize("name", preset_names())
def test_efficientvit_round_trip_is_exact(name: str) -> None:
    cfg = DCAEConfig.from_name(name)
    if name in TINY:
        state = random_model(name).state_dict()
    else:
        state = meta_state(name)
    other = layouts.to_efficientvit(state, cfg)
    assert len(other) == len(state)
    back = layouts.from_efficientvit(other, cfg)
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert back[k] is other[layouts._our_to_other(k, cfg, True)]
        if v.device.type != "meta":
            assert torch.equal(back[k], v)


# --- diffusers layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIFFUSERS_PRESETS)
def test_diffusers_layout_matches_autoencoderdc_state_dict(name: str) -> None:
    cfg = DCAEConfig.from_name(name)
    real = name not in TINY
    ref = diffusers_model(cfg, meta=real).state_dict()
    ours = layouts.to_diffusers(random_model(name).state_dict() if not real else meta_state(name), cfg)
    assert set(ours) == set(ref), sorted(set(ours) ^ set(ref))[:10]
    assert shapes(ours) == shapes(ref)


def test_diffusers_config_for_sana_matches_the_released_vae_config() -> None:
    d = layouts.diffusers_config(DCAEConfig.from_name("dc-ae-f32c32-sana-1.0"))
    assert d["_class_name"] == "AutoencoderDC"
    assert d["downsample_block_type"] == "Conv" and d["upsample_block_type"] == "interpolate"
    assert d["encoder_block_types"] == ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3
    assert d["encoder_qkv_multiscales"] == [[], [], [], [5], [5], [5]]
    assert d["encoder_layers_per_block"] == [2, 2, 2, 3, 3, 3]
    assert d["decoder_layers_per_block"] == [3, 3, 3, 3, 3, 3]
    assert d["decoder_norm_types"] == ["rms_norm"] * 6 and d["decoder_act_fns"] == ["silu"] * 6
    assert d["latent_channels"] == 32 and d["attention_head_dim"] == 32
    assert d["scaling_factor"] == 0.41407
    d_in = layouts.diffusers_config(DCAEConfig.from_name("dc-ae-f32c32-in-1.0"))
    assert d_in["downsample_block_type"] == "pixel_unshuffle" and d_in["upsample_block_type"] == "pixel_shuffle"
    assert d_in["decoder_norm_types"] == ["batch_norm"] * 3 + ["rms_norm"] * 3
    assert d_in["decoder_act_fns"] == ["relu"] * 3 + ["silu"] * 3
    assert d_in["encoder_qkv_multiscales"] == [[]] * 6
    lite = layouts.diffusers_config(DCAEConfig.from_name("dc-ae-lite-f32c32-sana-1.1"))
    assert lite["encoder_out_shortcut"] is False and lite["decoder_in_shortcut"] is False
    assert lite["decoder_conv_act_fn"] == "silu"


@pytest.mark.parametrize("name", DIFFUSERS_PRESETS)
def test_diffusers_config_round_trip(name: str) -> None:
    cfg = DCAEConfig.from_name(name)
    back = layouts.config_from_diffusers(layouts.diffusers_config(cfg), name=name)
    assert back == cfg


def test_config_from_diffusers_uses_diffusers_defaults() -> None:
    diffusers = pytest.importorskip("diffusers", reason="diffusers' own defaults are the reference")
    with torch.device("meta"):
        default = diffusers.AutoencoderDC()
    cfg = layouts.config_from_diffusers({"_class_name": "AutoencoderDC"})
    assert shapes(layouts.to_diffusers(meta_state(cfg), cfg)) == shapes(default.state_dict())


def test_config_from_diffusers_rejects_what_it_cannot_express() -> None:
    base = layouts.diffusers_config(DCAEConfig.from_name("tiny-f8"))
    with pytest.raises(CheckpointError, match="not an AutoencoderDC"):
        layouts.config_from_diffusers({**base, "_class_name": "AutoencoderKL"})
    with pytest.raises(CheckpointError, match=r"unsupported qkv multiscales \[3\]"):
        layouts.config_from_diffusers({**base, "encoder_qkv_multiscales": [[], [], [3], [3]]})
    with pytest.raises(CheckpointError, match="unknown diffusers block type 'Attention'"):
        layouts.config_from_diffusers({**base, "decoder_block_types": ["ResBlock"] * 3 + ["Attention"]})
    with pytest.raises(CheckpointError, match="cannot read the diffusers config.json"):
        layouts.config_from_diffusers({**base, "decoder_norm_types": "layer_norm"})


@pytest.mark.parametrize("name", V15)
def test_v15_has_no_diffusers_layout(name: str) -> None:
    with pytest.raises(CheckpointError, match="no structured-latent"):
        layouts.diffusers_config(DCAEConfig.from_name(name))


def test_fused_qkv_is_the_concatenation_of_to_q_to_k_to_v() -> None:
    # to_q is the first third of the per-head-interleaved qkv rows, not "all queries".
    cfg = DCAEConfig.from_name("tiny-f8")
    state = random_model(cfg).state_dict()
    out = layouts.to_diffusers(state, cfg)
    key = "encoder.stages.2.blocks.0.attn.qkv.weight"
    w = state[key]  # (3C, C, 1, 1)
    base = "encoder.down_blocks.2.0.attn"
    q, k, v = (out[f"{base}.{p}.weight"] for p in ("to_q", "to_k", "to_v"))
    assert q.shape == (w.shape[0] // 3, w.shape[1])
    assert torch.equal(torch.cat([q, k, v])[:, :, None, None], w)
    assert torch.equal(
        out[f"{base}.to_out.weight"][:, :, None, None], state["encoder.stages.2.blocks.0.attn.proj.weight"]
    )
    assert torch.equal(
        out[f"{base}.to_qkv_multiscale.0.proj_in.weight"], state["encoder.stages.2.blocks.0.attn.aggreg.0.0.weight"]
    )
    back = layouts.from_diffusers(out, cfg)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], v) for k, v in state.items())


@pytest.mark.parametrize("name", TINY + ["lite-like"])
def test_numerical_parity_with_diffusers(name: str) -> None:
    if name == "lite-like":
        # The Lite wiring: no encoder-out / decoder-in shortcut, SiLU before conv_out, ResBlock decoder.
        base = DCAEConfig.from_name("tiny-f8-in").model_dump()
        cfg = DCAEConfig.model_validate(
            {
                **base,
                "name": "tiny-lite",
                "encoder_depth_list": (1, 1, 1, 1),
                "encoder_block_types": ("ResBlock", "ResBlock", "EViTS5_GLU", "EViTS5_GLU"),
                "downsample_block_type": "Conv",
                "decoder_block_types": ("ResBlock",) * 4,
                "decoder_norms": ("rms2d",) * 4,
                "decoder_acts": ("silu",) * 4,
                "encoder_out_shortcut": False,
                "decoder_in_shortcut": False,
                "decoder_out_act": "silu",
            }
        )
    else:
        cfg = DCAEConfig.from_name(name)
    ours = random_model(cfg, seed=3)
    ref = diffusers_model(cfg)
    ref.load_state_dict(layouts.to_diffusers(ours.state_dict(), cfg), strict=True)
    f = cfg.spatial_compression
    h, w = (2 * f, 3 * f) if f >= 16 else (24, 40)  # latent maps above and below attention_head_dim tokens
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        z_ref = ref.encode(x).latent
        y = ours.decode(z)
        y_ref = ref.decode(z).sample
    assert z.shape == z_ref.shape and y.shape == y_ref.shape
    # Observed: 0, bit-identical (the qkv/proj matmuls and channels-last EfficientViT blocks run the same
    # kernels as diffusers). The bound leaves room for other BLAS/oneDNN builds summing in another order.
    torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-5)


# --- the same weights give the same outputs from every layout, at real preset sizes ------------

REAL = ["dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-in-1.0", "dc-ae-lite-f32c32-sana-1.1"]


@pytest.mark.parametrize("name", REAL)
def test_same_outputs_from_every_layout_at_real_size(tmp_path: Path, name: str) -> None:
    model = random_model(name)  # seeded default init at the full 312M-420M parameters
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1  # 2x2 latent
    with torch.inference_mode():
        z = model.encode(x)
        y = model.decode(z)
    assert z.shape == (1, 32, 2, 2) and torch.isfinite(y).all()
    for layout in ("dc_ae", "efficientvit", "diffusers"):
        path = dc_ae.save(model, tmp_path / layout, layout=layout)
        loaded = dc_ae.load(path)
        assert loaded.config.model_dump(exclude={"name"}) == model.config.model_dump(exclude={"name"}), layout
        with torch.inference_mode():
            z2 = loaded.encode(x)
            y2 = loaded.decode(z2)
        assert torch.equal(z2, z) and torch.equal(y2, y), layout
        del loaded
        (path / "diffusion_pytorch_model.safetensors" if layout == "diffusers" else path).unlink()
