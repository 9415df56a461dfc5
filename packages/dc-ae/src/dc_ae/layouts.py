"""Checkpoint key layouts: our module tree, the original efficientvit/DC-AE release and diffusers.

The mapping is derived from the config, parameter by parameter, so it is exact for every preset
rather than a list of string replaces. Two tensors change shape across layouts in diffusers: the
fused per-head-interleaved ``qkv`` 1x1 conv is split into ``to_q/to_k/to_v`` linears (its three
row-thirds, *not* all queries, all keys, all values), and the attention ``proj`` 1x1 conv becomes
the ``to_out`` linear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from dc_ae.config import DCAEConfig
from dc_ae.errors import CheckpointError

__all__ = [
    "to_efficientvit",
    "from_efficientvit",
    "to_diffusers",
    "from_diffusers",
    "diffusers_config",
    "config_from_diffusers",
]

_RES = {"conv1": "main.conv1.conv", "conv2": "main.conv2.conv", "norm": "main.conv2.norm"}
_RES_DIFF = {"conv1": "conv1", "conv2": "conv2", "norm": "norm"}
_EVIT = {
    "attn.qkv": "context_module.main.qkv.conv",
    "attn.proj": "context_module.main.proj.conv",
    "attn.norm": "context_module.main.proj.norm",
    "ffn.inverted_conv": "local_module.main.inverted_conv.conv",
    "ffn.depth_conv": "local_module.main.depth_conv.conv",
    "ffn.point_conv": "local_module.main.point_conv.conv",
    "ffn.norm": "local_module.main.point_conv.norm",
}
_EVIT_DIFF = {
    "attn.qkv": "attn.qkv",  # split into to_q/to_k/to_v by the converters
    "attn.proj": "attn.to_out",
    "attn.norm": "attn.norm_out",
    "ffn.inverted_conv": "conv_out.conv_inverted",
    "ffn.depth_conv": "conv_out.conv_depth",
    "ffn.point_conv": "conv_out.conv_point",
    "ffn.norm": "conv_out.norm",
}


def _block_key(rest: str, original: bool) -> str:
    """Translate the part of a key below a block (``conv1.weight``, ``attn.qkv.weight``...)."""
    m = re.fullmatch(r"attn\.aggreg\.(\d+)\.([01])\.(\w+)", rest)
    if m:
        if original:
            return f"context_module.main.aggreg.{m[1]}.{m[2]}.{m[3]}"
        return f"attn.to_qkv_multiscale.{m[1]}.{'proj_in' if m[2] == '0' else 'proj_out'}.{m[3]}"
    module, param = rest.rsplit(".", 1)
    table = (_RES if original else _RES_DIFF) if "." not in module else (_EVIT if original else _EVIT_DIFF)
    if module not in table:
        raise CheckpointError(f"no layout rule for block parameter {rest!r}")
    return f"{table[module]}.{param}"


def _our_to_other(key: str, cfg: DCAEConfig, original: bool) -> str:
    """Name of our parameter ``key`` in the efficientvit (``original``) or diffusers layout."""
    pu = cfg.downsample_block_type == "ConvPixelUnshuffle"
    enc_d, dec_d = cfg.encoder_depth_list, cfg.decoder_depth_list
    m = re.fullmatch(r"encoder\.conv_in\.(conv\.)?(\w+)", key)
    if m:
        if not original:
            return key
        nested = "conv.conv." if (m[1] and pu) else "conv."
        return f"encoder.project_in.{nested}{m[2]}"
    m = re.fullmatch(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if m:
        if original:
            return f"encoder.stages.{m[1]}.op_list.{m[2]}.{_block_key(m[3], True)}"
        return f"encoder.down_blocks.{m[1]}.{m[2]}.{_block_key(m[3], False)}"
    m = re.fullmatch(r"encoder\.stages\.(\d+)\.down\.conv\.(\w+)", key)
    if m:
        j = enc_d[int(m[1])]
        if original:
            return f"encoder.stages.{m[1]}.op_list.{j}.main.conv.{'conv.' if pu else ''}{m[2]}"
        return f"encoder.down_blocks.{m[1]}.{j}.conv.{m[2]}"
    m = re.fullmatch(r"encoder\.conv_out\.(\w+)", key)
    if m:
        if not original:
            return key
        return f"encoder.project_out.{'main.' if cfg.encoder_out_shortcut else ''}op_list.0.conv.{m[1]}"
    m = re.fullmatch(r"decoder\.conv_in\.(\w+)", key)
    if m:
        if not original:
            return key
        return f"decoder.project_in.{'main.' if cfg.decoder_in_shortcut else ''}conv.{m[1]}"
    m = re.fullmatch(r"decoder\.stages\.(\d+)\.up\.conv\.(\w+)", key)
    if m:
        return (
            f"decoder.stages.{m[1]}.op_list.0.main.conv.conv.{m[2]}"
            if original
            else f"decoder.up_blocks.{m[1]}.0.conv.{m[2]}"
        )
    m = re.fullmatch(r"decoder\.stages\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if m:
        i = int(m[1])
        j = int(m[2]) + (1 if i < cfg.num_stages - 1 and dec_d[i] > 0 else 0)
        if original:
            return f"decoder.stages.{i}.op_list.{j}.{_block_key(m[3], True)}"
        return f"decoder.up_blocks.{i}.{j}.{_block_key(m[3], False)}"
    m = re.fullmatch(r"decoder\.norm_out\.(\w+)", key)
    if m:
        return f"decoder.project_out.op_list.0.{m[1]}" if original else key
    m = re.fullmatch(r"decoder\.conv_out\.(conv\.)?(\w+)", key)
    if m:
        return f"decoder.project_out.op_list.2.{m[1] or ''}conv.{m[2]}" if original else key
    raise CheckpointError(f"no layout rule for parameter {key!r}")


def _our_keys(cfg: DCAEConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes for ``cfg``, built on the meta device (no memory)."""
    from dc_ae.autoencoder import DCAE

    with torch.device("meta"):
        model = DCAE(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _is_qkv(key: str) -> bool:
    return key.endswith("attn.qkv.weight")


def _is_proj(key: str) -> bool:
    return key.endswith("attn.proj.weight")


def to_efficientvit(state: dict[str, torch.Tensor], cfg: DCAEConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> the original DC-AE ``model.safetensors`` layout."""
    return {_our_to_other(k, cfg, True): v for k, v in state.items()}


def from_efficientvit(state: dict[str, torch.Tensor], cfg: DCAEConfig) -> dict[str, torch.Tensor]:
    """The original DC-AE layout -> our state dict; strict (see :func:`check_keys`)."""
    names = {_our_to_other(k, cfg, True): k for k in _our_keys(cfg)}
    check_keys(state, names, cfg, "efficientvit")
    return {names[k]: v for k, v in state.items()}


def to_diffusers(state: dict[str, torch.Tensor], cfg: DCAEConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> diffusers ``AutoencoderDC`` layout."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        name = _our_to_other(k, cfg, False)
        if _is_qkv(k):
            base = name.rsplit(".", 2)[0]  # ...attn
            for part, w in zip(("to_q", "to_k", "to_v"), v.chunk(3, dim=0), strict=True):
                out[f"{base}.{part}.weight"] = w[:, :, 0, 0].contiguous()
        elif _is_proj(k):
            out[name] = v[:, :, 0, 0].contiguous()
        else:
            out[name] = v
    return out


def from_diffusers(state: dict[str, torch.Tensor], cfg: DCAEConfig) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderDC`` layout -> our state dict; strict."""
    ours = _our_keys(cfg)
    expected: dict[str, tuple[int, ...]] = {}
    for k, shape in ours.items():
        name = _our_to_other(k, cfg, False)
        if _is_qkv(k):
            base = name.rsplit(".", 2)[0]
            for part in ("to_q", "to_k", "to_v"):
                expected[f"{base}.{part}.weight"] = (shape[0] // 3, shape[1])
        elif _is_proj(k):
            expected[name] = shape[:2]
        else:
            expected[name] = shape
    _check(state, expected, "diffusers", cfg.name)
    out: dict[str, torch.Tensor] = {}
    for k in ours:
        name = _our_to_other(k, cfg, False)
        if _is_qkv(k):
            base = name.rsplit(".", 2)[0]
            w = torch.cat([state[f"{base}.{p}.weight"] for p in ("to_q", "to_k", "to_v")], dim=0)
            out[k] = w[:, :, None, None]
        elif _is_proj(k):
            out[k] = state[name][:, :, None, None]
        else:
            out[k] = state[name]
    return out


def check_keys(state: dict[str, torch.Tensor], names: dict[str, str], cfg: DCAEConfig, layout: str) -> None:
    """Raise a :class:`CheckpointError` listing missing, unexpected and mis-shaped keys."""
    ours = _our_keys(cfg)
    _check(state, {other: ours[k] for other, k in names.items()}, layout, cfg.name)


def _check(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], layout: str, config_name: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: expected {list(expected[k])}, found {list(state[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or misshaped:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                parts.append(f"{len(items)} {title}: " + _clip(items))
        raise CheckpointError(f"{layout} checkpoint does not match the config {config_name!r}: " + "; ".join(parts))


def _clip(items: Iterable[str], n: int = 8) -> str:
    items = list(items)
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


_DIFF_NORM = {"rms2d": "rms_norm", "bn2d": "batch_norm"}
_DIFF_BLOCK = {"ResBlock": "ResBlock", "EViT_GLU": "EfficientViTBlock", "EViTS5_GLU": "EfficientViTBlock"}


def diffusers_config(cfg: DCAEConfig) -> dict[str, Any]:
    """The ``config.json`` of an equivalent diffusers ``AutoencoderDC``."""
    if cfg.structured_latent:
        raise CheckpointError(f"diffusers AutoencoderDC has no structured-latent (DC-AE 1.5) variant: {cfg.name}")
    if cfg.encoder_norm != "rms2d" or cfg.encoder_act != "silu":
        raise CheckpointError("diffusers AutoencoderDC fixes the encoder norm/act to rms_norm/silu")

    def scales(kinds: tuple[str, ...]) -> list[list[int]]:
        return [[5] if k == "EViTS5_GLU" else [] for k in kinds]

    return {
        "_class_name": "AutoencoderDC",
        "in_channels": cfg.in_channels,
        "latent_channels": cfg.latent_channels,
        "attention_head_dim": cfg.attention_head_dim,
        "encoder_block_types": [_DIFF_BLOCK[k] for k in cfg.encoder_block_types],
        "decoder_block_types": [_DIFF_BLOCK[k] for k in cfg.decoder_block_types],
        "encoder_block_out_channels": list(cfg.width_list),
        "decoder_block_out_channels": list(cfg.decoder_widths),
        "encoder_layers_per_block": list(cfg.encoder_depth_list),
        "decoder_layers_per_block": list(cfg.decoder_depth_list),
        "encoder_qkv_multiscales": scales(cfg.encoder_block_types),
        "decoder_qkv_multiscales": scales(cfg.decoder_block_types),
        "upsample_block_type": "pixel_shuffle" if cfg.upsample_block_type == "ConvPixelShuffle" else "interpolate",
        "downsample_block_type": "pixel_unshuffle" if cfg.downsample_block_type == "ConvPixelUnshuffle" else "Conv",
        "decoder_norm_types": [_DIFF_NORM[n] for n in cfg.decoder_norms],
        "decoder_act_fns": list(cfg.decoder_acts),
        "encoder_out_shortcut": cfg.encoder_out_shortcut,
        "decoder_in_shortcut": cfg.decoder_in_shortcut,
        "decoder_conv_act_fn": cfg.decoder_out_act,
        "scaling_factor": cfg.scaling_factor,
    }


def config_from_diffusers(d: dict[str, Any], name: str = "custom") -> DCAEConfig:
    """Our config from a diffusers ``AutoencoderDC`` ``config.json`` dict (defaults as diffusers)."""
    if d.get("_class_name", "AutoencoderDC") != "AutoencoderDC":
        raise CheckpointError(f"config.json describes a {d['_class_name']}, not an AutoencoderDC")
    n = len(d.get("encoder_block_out_channels", (128, 256, 512, 512, 1024, 1024)))

    def per_stage(key: str, default: Any) -> list[Any]:
        v = d.get(key, default)
        return [v] * n if isinstance(v, str) else list(v)

    enc_types = per_stage("encoder_block_types", "ResBlock")
    dec_types = per_stage("decoder_block_types", "ResBlock")
    default_scales = [[], [], [], [5], [5], [5]]
    enc_scales = d.get("encoder_qkv_multiscales", default_scales)
    dec_scales = d.get("decoder_qkv_multiscales", default_scales)

    def ours(kind: str, sc: Any) -> str:
        if kind == "ResBlock":
            return "ResBlock"
        if kind != "EfficientViTBlock":
            raise CheckpointError(f"unknown diffusers block type {kind!r}")
        sc = list(sc)
        if sc not in ([], [5]):
            raise CheckpointError(f"unsupported qkv multiscales {sc}: DC-AE uses () or (5,)")
        return "EViTS5_GLU" if sc == [5] else "EViT_GLU"

    inv_norm = {v: k for k, v in _DIFF_NORM.items()}
    widths = tuple(d.get("encoder_block_out_channels", (128, 256, 512, 512, 1024, 1024)))
    decoder_widths = tuple(d.get("decoder_block_out_channels", (128, 256, 512, 512, 1024, 1024)))
    try:
        return DCAEConfig(
            name=name,
            in_channels=d.get("in_channels", 3),
            latent_channels=d.get("latent_channels", 32),
            attention_head_dim=d.get("attention_head_dim", 32),
            width_list=widths,
            # None when equal, as in the presets, so that equal architectures compare equal.
            decoder_width_list=None if decoder_widths == widths else decoder_widths,
            encoder_depth_list=tuple(d.get("encoder_layers_per_block", (2, 2, 2, 3, 3, 3))),
            decoder_depth_list=tuple(d.get("decoder_layers_per_block", (3, 3, 3, 3, 3, 3))),
            encoder_block_types=tuple(ours(k, s) for k, s in zip(enc_types, enc_scales, strict=True)),
            decoder_block_types=tuple(ours(k, s) for k, s in zip(dec_types, dec_scales, strict=True)),
            downsample_block_type=(
                "ConvPixelUnshuffle"
                if d.get("downsample_block_type", "pixel_unshuffle") == "pixel_unshuffle"
                else "Conv"
            ),
            upsample_block_type=(
                "ConvPixelShuffle"
                if d.get("upsample_block_type", "pixel_shuffle") == "pixel_shuffle"
                else "InterpolateConv"
            ),
            decoder_norms=tuple(inv_norm[x] for x in per_stage("decoder_norm_types", "rms_norm")),
            decoder_acts=tuple(per_stage("decoder_act_fns", "silu")),
            encoder_out_shortcut=d.get("encoder_out_shortcut", True),
            decoder_in_shortcut=d.get("decoder_in_shortcut", True),
            decoder_out_act=d.get("decoder_conv_act_fn", "relu"),
            scaling_factor=d.get("scaling_factor", 1.0),
        )
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"cannot read the diffusers config.json: {e}") from e
