"""Saving, loading and converting Linear DiT checkpoints in our format, the Sana release and diffusers.

Papers: SANA (Xie et al., ICLR 2025) and SANA-1.5 (ICML 2025). ``linear_dit.load`` must read every
layout the models ship in (/work/shared/reference/sana.md, sec. 1), detect which one it has, refuse
any key mismatch with a message naming the keys, and give the same outputs whichever layout the
weights came from; the diffusers folders we write must load in diffusers' own
``SanaTransformer2DModel`` and compute what ours computes.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ldit_testing import latent, random_model, text_inputs
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import linear_dit
from linear_dit import CheckpointError, ConfigError, LinearDiT, LinearDiTConfig, layouts
from linear_dit import checkpoint as ckpt

TINY = ["tiny", "tiny-1.5", "tiny-pe", "tiny-patch2"]
# (layout, file name): the original layout is written both as the release's .pth and as safetensors.
TARGETS = [
    ("linear_dit", "model.safetensors"),
    ("sana", "sana.pth"),
    ("sana", "sana.safetensors"),
    ("diffusers", "diffusers_folder"),
]


def forward(model: LinearDiT, h: int = 8, w: int = 6) -> torch.Tensor:
    cfg = model.config
    y, mask = text_inputs(cfg, batch=2, length=5)
    with torch.no_grad():
        return model(latent(cfg, batch=2, h=h, w=w), torch.tensor([250.0, 812.5]), y, mask)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("layout", "file"), TARGETS)
@pytest.mark.parametrize("name", TINY)
def test_every_layout_gives_the_same_outputs(tmp_path: Path, name: str, layout: layouts.Layout, file: str) -> None:
    model = random_model(name)
    path = linear_dit.save(model, tmp_path / file, layout=layout)
    loaded = linear_dit.load(path)
    assert not loaded.training
    # The config comes back without config=: from metadata, config.json or (for the .pth) the one
    # preset whose keys, shapes and pos_embed fit.
    assert loaded.config == model.config
    assert same_weights(loaded, model)
    torch.testing.assert_close(forward(loaded), forward(model), rtol=0, atol=1e-5)


def test_video_model_round_trip_and_no_foreign_layouts(tmp_path: Path) -> None:
    model = random_model("tiny-video")
    loaded = linear_dit.load(linear_dit.save(model, tmp_path / "video.safetensors"))
    assert loaded.config == model.config and same_weights(loaded, model)
    for layout, file in TARGETS[1:]:
        with pytest.raises(CheckpointError, match=f"video model .* no {layout} layout"):
            linear_dit.save(model, tmp_path / file, layout=layout)
        assert not (tmp_path / file).exists()


def test_our_format_metadata(tmp_path: Path) -> None:
    model = random_model("tiny-1.5")
    path = linear_dit.save(model, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == set(model.state_dict())
    assert meta["format"] == "linear_dit/1"
    assert LinearDiTConfig.model_validate_json(meta["config"]) == model.config
    assert meta["linear_dit_version"] == linear_dit.__version__
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_sana_pth_is_the_release_layout(tmp_path: Path) -> None:
    model = random_model("tiny-1.5")
    path = linear_dit.save(model, tmp_path / "sana.pth", layout="sana")
    obj = torch.load(path, weights_only=True)
    assert list(obj) == ["state_dict"]
    assert obj["state_dict"].keys() == layouts.expected_shapes(model.config, "sana").keys() | {"pos_embed"}
    assert ckpt.detect_layout(obj["state_dict"]) == "sana"


# --- diffusers' own SanaTransformer2DModel ---------------------------------------------------------


def diffusers_forward(model: torch.nn.Module, cfg: LinearDiTConfig, h: int = 8, w: int = 6) -> torch.Tensor:
    y, mask = text_inputs(cfg, batch=2, length=5)
    with torch.no_grad():
        return model(
            latent(cfg, batch=2, h=h, w=w),
            encoder_hidden_states=y,
            timestep=torch.tensor([250.0, 812.5]),
            encoder_attention_mask=mask,
        ).sample


@pytest.mark.parametrize(
    ("name", "overrides", "hw"),
    [
        ("tiny", {}, (8, 6)),
        ("tiny-1.5", {}, (8, 6)),
        ("tiny-patch2", {}, (6, 10)),
        ("tiny-pe", {}, (8, 8)),  # the training grid: diffusers' cached pos_embed
        ("tiny-pe", {}, (12, 6)),  # another grid: both interpolate against sample_size
        ("tiny-pe", {"pe_interpolation": 2.0}, (10, 10)),
    ],
)
def test_diffusers_folder_runs_in_diffusers(
    tmp_path: Path, name: str, overrides: dict[str, Any], hw: tuple[int, int]
) -> None:
    diffusers = pytest.importorskip("diffusers")
    # diffusers' linear attention uses eps 1e-15; with the same eps both compute the same function.
    model = random_model(name, linear_attention_eps=1e-15, **overrides)
    path = linear_dit.save(model, tmp_path / "transformer", layout="diffusers")
    ref = diffusers.SanaTransformer2DModel.from_pretrained(str(path)).eval()
    assert ref.config.interpolation_scale == (model.config.pe_interpolation if model.config.use_pe else None)
    torch.testing.assert_close(diffusers_forward(ref, model.config, *hw), forward(model, *hw), rtol=0, atol=1e-5)


def test_official_eps_differs_from_diffusers_by_far_less_than_1e5(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    model = random_model("tiny-1.5")  # eps 1e-8, as in the Sana blocks
    ref = diffusers.SanaTransformer2DModel.from_pretrained(
        str(linear_dit.save(model, tmp_path / "d", layout="diffusers"))
    ).eval()
    assert (diffusers_forward(ref, model.config) - forward(model)).abs().max() < 1e-5
    # Loading the diffusers folder back keeps the official eps.
    assert linear_dit.load(tmp_path / "d").config.linear_attention_eps == 1e-8


def native_diffusers_model(qk_norm: bool, interpolation_scale: float | None) -> torch.nn.Module:
    """A SanaTransformer2DModel made by diffusers itself, with every norm weight randomised."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(3)
    ref = diffusers.SanaTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=4,
        attention_head_dim=16,
        num_layers=3,
        num_cross_attention_heads=2,
        cross_attention_head_dim=32,
        cross_attention_dim=64,
        caption_channels=24,
        sample_size=8,
        interpolation_scale=interpolation_scale,
        qk_norm="rms_norm_across_heads" if qk_norm else None,
    ).eval()
    with torch.no_grad():
        for pname, p in ref.named_parameters():
            if "norm" in pname:
                p.copy_(torch.randn_like(p) * 0.3 + 1)
    return ref


@pytest.mark.parametrize(("qk_norm", "scale"), [(True, None), (False, 1.0)])
def test_load_diffusers_save_pretrained_sharded(tmp_path: Path, qk_norm: bool, scale: float | None) -> None:
    ref = native_diffusers_model(qk_norm, scale)
    ref.save_pretrained(str(tmp_path), max_shard_size="40KB")
    assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("diffusion_pytorch_model-*.safetensors"))) > 2
    ours = linear_dit.load(tmp_path)
    cfg = ours.config
    assert (cfg.depth, cfg.hidden_size, cfg.qk_norm, cfg.cross_norm, cfg.use_pe) == (
        3,
        64,
        qk_norm,
        qk_norm,
        scale == 1.0,
    )
    # The official eps (1e-8) against diffusers' 1e-15: still within 1e-5.
    assert (diffusers_forward(ref, cfg) - forward(ours)).abs().max() < 1e-5
    # Naming the index file works as well as naming the folder.
    assert same_weights(linear_dit.load(tmp_path / "diffusion_pytorch_model.safetensors.index.json"), ours)


def test_diffusers_pipeline_folder_and_single_file(tmp_path: Path) -> None:
    model = random_model("tiny-1.5")
    folder = linear_dit.save(model, tmp_path / "pipe" / "transformer", layout="diffusers")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == layouts.diffusers_config(model.config)
    assert same_weights(linear_dit.load(tmp_path / "pipe"), model)
    # The weights file alone: config.json beside it is found; moved away, config= must say it.
    weights = folder / "diffusion_pytorch_model.safetensors"
    assert linear_dit.load(weights).config == model.config
    lone = tmp_path / "lone.safetensors"
    weights.rename(lone)
    assert linear_dit.load(lone).config == model.config  # keys and shapes fit one preset: tiny-1.5
    dcfg = json.loads((folder / "config.json").read_text())
    assert linear_dit.load(lone, config=dcfg).config == model.config  # a config.json dict
    assert linear_dit.load(lone, config=folder / "config.json").config == model.config  # its path
    assert linear_dit.load(lone, config="tiny-1.5").config == model.config


# --- config resolution -----------------------------------------------------------------------------


def release_state(name: str, pos_embed: bool = True) -> dict[str, torch.Tensor]:
    """A real-size original-layout state dict on the meta device (pos_embed for real)."""
    cfg = LinearDiTConfig.from_name(name)
    with torch.device("meta"):
        state = layouts.to_layout(LinearDiT(cfg).state_dict(), cfg, "sana")
    state["pos_embed"] = layouts.sana_pos_embed(cfg)
    if not pos_embed:
        del state["pos_embed"]
    return state


def test_release_pos_embed_tells_resolutions_apart() -> None:
    # 512px, 1024px, 2K and 4K share every weight shape; the pos_embed buffer (its length is the
    # training grid, its values the PE or zeros) is what tells them apart.
    for name in ("sana-0.6b-512px", "sana-0.6b-1024px", "sana-0.6b-2k", "sana-0.6b-4k", "sana-1.5-4.8b-1024px"):
        assert linear_dit.load_state_dict(release_state(name)).config.name == name
    with pytest.raises(CheckpointError, match=r"fit several presets \(sana-0.6b-512px, sana-0.6b-1024px, .*config="):
        linear_dit.load_state_dict(release_state("sana-0.6b-1024px", pos_embed=False))
    state, cfg, layout = linear_dit.load_state_dict(
        release_state("sana-0.6b-1024px", pos_embed=False), config="sana-0.6b-1024px"
    )
    assert (cfg.name, layout, len(state)) == ("sana-0.6b-1024px", "sana", len(layouts.our_shapes(cfg)))


def test_explicit_config_against_pos_embed() -> None:
    with pytest.raises(CheckpointError, match="pos_embed is all zeros .* use_pe=True"):
        linear_dit.load_state_dict(release_state("sana-1.6b-1024px"), config="sana-1.6b-4k")
    with pytest.raises(CheckpointError, match=r"differs from the sin-cos embedding .*pe_interpolation=1"):
        bad = LinearDiTConfig.from_name("sana-1.6b-4k").model_copy(update={"pe_interpolation": 1.0})
        linear_dit.load_state_dict(release_state("sana-1.6b-4k"), config=bad)


def test_custom_architecture_needs_config(tmp_path: Path) -> None:
    model = random_model("tiny", depth=3)
    file = tmp_path / "sana.pth"
    linear_dit.save(model, file, layout="sana")
    with pytest.raises(CheckpointError, match="fits no preset; pass config="):
        linear_dit.load(file)
    assert same_weights(linear_dit.load(file, config=model.config), model)
    assert same_weights(linear_dit.load(file, config=model.config.model_dump()), model)  # our fields as a dict


def test_config_that_contradicts_the_file(tmp_path: Path) -> None:
    model = random_model("tiny")
    path = linear_dit.save(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"saved for config 'tiny'.*'tiny-1.5'.*qk_norm=True \(stored False\)"):
        linear_dit.load(path, config="tiny-1.5")
    renamed = model.config.model_copy(update={"name": "mine"})
    assert linear_dit.load(path, config=renamed).config == renamed
    folder = linear_dit.save(model, tmp_path / "d", layout="diffusers")
    with pytest.raises(CheckpointError, match=r"contradicts .*config.json: num_layers=3 \(config.json 2\)"):
        linear_dit.load(folder, config=model.config.model_copy(update={"depth": 3}))
    # What config.json does not record (our eps, sampling defaults) may differ.
    eps = model.config.model_copy(update={"linear_attention_eps": 1e-15, "flow_shift": 1.0})
    assert linear_dit.load(folder, config=eps).config == eps
    with pytest.raises(ConfigError, match="unknown preset 'tiny-2'"):
        linear_dit.load(path, config="tiny-2")


# --- .pth files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_pth_wrappers(tmp_path: Path, wrapper: str | None) -> None:
    model = random_model("tiny-pe")
    state = layouts.to_layout(model.state_dict(), model.config, "sana")
    torch.save({wrapper: state, "epoch": 3} if wrapper else state, tmp_path / "m.pth")
    loaded = linear_dit.load(tmp_path / "m.pth")
    assert loaded.config == model.config and same_weights(loaded, model)
    assert same_weights(linear_dit.load(tmp_path), model)  # a folder with one checkpoint file


def test_sana_training_checkpoint_with_ema_and_rng_state(tmp_path: Path) -> None:
    # As Sana's save_checkpoint_ddp writes it: state_dict, state_dict_ema, optimizer, scheduler,
    # epoch and an RNG state that pickles NumPy arrays (not loadable with plain weights_only=True).
    model, ema = random_model("tiny-1.5", seed=0), random_model("tiny-1.5", seed=1)
    cfg = model.config
    torch.save(
        {
            "state_dict": layouts.to_layout(model.state_dict(), cfg, "sana"),
            "state_dict_ema": layouts.to_layout(ema.state_dict(), cfg, "sana"),
            "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5, "params": [0, 1]}]},
            "epoch": 7,
            "rng_state": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        },
        tmp_path / "epoch_7_step_100.pth",
    )
    assert same_weights(linear_dit.load(tmp_path / "epoch_7_step_100.pth"), model)
    assert same_weights(linear_dit.load(tmp_path / "epoch_7_step_100.pth", ema=True), ema)
    torch.save({"state_dict": layouts.to_layout(model.state_dict(), cfg, "sana")}, tmp_path / "release.pth")
    with pytest.raises(CheckpointError, match="holds no EMA weights"):
        linear_dit.load(tmp_path / "release.pth", ema=True)


def test_pickle_with_foreign_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"x_embedder.proj.weight": torch.ones(1)}, "cfg": Path("x")}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"weights_only=True.*PosixPath"):
        linear_dit.load(tmp_path / "evil.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_weights.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors.*epoch"):
        linear_dit.load(tmp_path / "no_weights.pth")


# --- errors --------------------------------------------------------------------------------------


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.safetensors does not exist"):
        linear_dit.load(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="holds no diffusion_pytorch_model.safetensors .* found none"):
        linear_dit.load(tmp_path)
    (tmp_path / "a.pth").write_bytes(b"")
    (tmp_path / "b.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"found several \(a.pth, b.safetensors\)"):
        linear_dit.load(tmp_path)


@pytest.mark.parametrize("file", ["m.safetensors", "m.pth"])
def test_truncated_or_corrupt_files_name_the_file(tmp_path: Path, file: str) -> None:
    path = tmp_path / file
    linear_dit.save(random_model("tiny"), path, layout="linear_dit" if file.endswith("safetensors") else "sana")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"cannot read {re.escape(str(path))}.*truncated or corrupt"):
        linear_dit.load(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=f"cannot read {re.escape(str(path))}"):
        linear_dit.load(path)


def test_broken_shards(tmp_path: Path) -> None:
    ref = native_diffusers_model(False, None)
    ref.save_pretrained(str(tmp_path), max_shard_size="40KB")
    shard = sorted(tmp_path.glob("diffusion_pytorch_model-*.safetensors"))[1]
    tensors = load_file(shard)
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, shard)
    with pytest.raises(CheckpointError, match=f"lists keys that no shard holds: \\['{dropped}'\\]"):
        linear_dit.load(tmp_path)
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"shard {re.escape(str(shard))} listed in .* does not exist"):
        linear_dit.load(tmp_path)


def test_key_errors_list_the_keys_and_nothing_loads(tmp_path: Path) -> None:
    model = random_model("tiny")
    state = dict(model.state_dict())
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"][:, :10].contiguous()
    del state["final_layer.linear.bias"]
    state["blocks.2.scale_shift_table"] = torch.zeros(6, 64)
    save_file(
        state,
        tmp_path / "bad.safetensors",
        metadata={"format": "linear_dit/1", "config": model.config.model_dump_json()},
    )
    with pytest.raises(CheckpointError) as info:
        linear_dit.load(tmp_path / "bad.safetensors")
    msg = str(info.value)
    assert "missing: final_layer.linear.bias" in msg
    assert "unexpected: blocks.2.scale_shift_table" in msg
    assert "blocks.0.attn.qkv.weight: expected [192, 64], found [192, 10]" in msg
    with pytest.raises(
        CheckpointError, match="non-floating-point tensors for parameters: \\['attention_y_norm.weight'\\]"
    ):
        good = dict(model.state_dict())
        good["attention_y_norm.weight"] = good["attention_y_norm.weight"].long()
        linear_dit.load(good, config="tiny")
    with pytest.raises(CheckpointError, match="format 'linear_dit/9'"):
        save_file(model.state_dict(), tmp_path / "future.safetensors", metadata={"format": "linear_dit/9"})
        linear_dit.load(tmp_path / "future.safetensors")


def test_non_strict_loading_warns_and_initialises_the_rest(tmp_path: Path) -> None:
    # A SANA-1.0 checkpoint into a SANA-1.5 architecture: the q/k norms are new.
    old = random_model("tiny")
    path = linear_dit.save(old, tmp_path / "sana.pth", layout="sana")
    with pytest.raises(CheckpointError, match=r"8 missing: blocks.0.attn.k_norm.weight"):
        linear_dit.load(path, config="tiny-1.5")
    with pytest.warns(UserWarning, match=r"8 parameters missing .*blocks.0.attn.k_norm.weight"):
        grown = linear_dit.load(path, config="tiny-1.5", strict=False)
    assert torch.equal(grown.blocks[1].attn.q_norm.weight, torch.ones(64))
    assert torch.equal(grown.blocks[1].attn.qkv.weight, old.blocks[1].attn.qkv.weight)
    with pytest.warns(UserWarning, match="8 unexpected keys ignored"):
        linear_dit.load(
            linear_dit.save(random_model("tiny-1.5"), tmp_path / "new.pth", layout="sana"), "tiny", strict=False
        )


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = random_model("tiny")
    path = linear_dit.save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        linear_dit.save(random_model("tiny", seed=5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_unknown_layout_and_wrong_destinations(tmp_path: Path) -> None:
    model = random_model("tiny")
    with pytest.raises(CheckpointError, match="unknown layout 'ckpt'"):
        linear_dit.save(model, tmp_path / "m", layout="ckpt")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="is a folder"):
        linear_dit.save(model, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        linear_dit.save(model, tmp_path / "file", layout="diffusers")
    with pytest.raises(CheckpointError, match="qk_norm=True but cross_norm=False"):
        linear_dit.save(random_model("tiny", qk_norm=True), tmp_path / "d", layout="diffusers")
    assert not (tmp_path / "d").exists()


# --- convert, dtypes, devices, state-dict sources ---------------------------------------------------


def test_convert_chain_keeps_outputs(tmp_path: Path) -> None:
    model = random_model("tiny-pe")
    reference = forward(model)
    src = linear_dit.save(model, tmp_path / "release.pth", layout="sana")
    a = ckpt.convert(src, tmp_path / "diffusers", "diffusers")
    b = ckpt.convert(a, tmp_path / "sana.safetensors", "sana")
    c = ckpt.convert(b, tmp_path / "ours.safetensors", "linear_dit")
    for path in (a, b, c):
        loaded = linear_dit.load(path)
        assert loaded.config == model.config
        assert torch.equal(forward(loaded), reference)
    custom = random_model("tiny", depth=1)
    src = linear_dit.save(custom, tmp_path / "custom.pth", layout="sana")
    with pytest.raises(CheckpointError, match="pass config="):
        ckpt.convert(src, tmp_path / "custom.safetensors", "linear_dit")
    out = ckpt.convert(src, tmp_path / "custom.safetensors", "linear_dit", config=custom.config)
    assert linear_dit.load(out).config == custom.config


def test_dtype_device_and_meta(tmp_path: Path) -> None:
    model = random_model("tiny-1.5")
    half = linear_dit.save(model.to(torch.float16), tmp_path / "half.safetensors")
    assert {p.dtype for p in linear_dit.load(half).parameters()} == {torch.float16}  # stored dtype kept
    loaded = linear_dit.load(half, dtype=torch.bfloat16, device="cpu")
    assert {(p.dtype, p.device.type) for p in loaded.parameters()} == {(torch.bfloat16, "cpu")}
    # A shapes-only read, as the CLI does for `info` on a big checkpoint.
    with torch.device("meta"):
        meta = linear_dit.load(half, device="meta")
    assert meta.config == model.config and {p.device.type for p in meta.parameters()} == {"meta"}
    sana = linear_dit.save(random_model("tiny-pe"), tmp_path / "pe.safetensors", layout="sana")
    assert linear_dit.load(sana, device="meta").config.name == "tiny-pe"


def test_state_dict_sources_are_copied() -> None:
    model = random_model("tiny")
    for layout in layouts.LAYOUTS:
        converted = layouts.to_layout(model.state_dict(), model.config, layout)
        if layout != "sana":  # tiny and tiny-pe differ only in the PE, which sana's pos_embed records
            with pytest.raises(CheckpointError, match=r"fit several presets \(tiny, tiny-pe\)"):
                linear_dit.load(converted)
        loaded = linear_dit.load(converted, config=None if layout == "sana" else "tiny")
        assert loaded.config.name == "tiny" and same_weights(loaded, model)
    loaded = linear_dit.load({"state_dict": model.state_dict()}, config="tiny")
    with torch.no_grad():
        loaded.blocks[0].attn.qkv.weight.zero_()
    assert model.blocks[0].attn.qkv.weight.abs().sum() > 0  # the caller's tensors are untouched
