"""Checkpoint key layouts of the Linear DiT: ours, the original Sana release and diffusers.

SANA (Xie et al., ICLR 2025) was released as NVlabs/Sana ``.pth`` checkpoints (``SanaMS`` module
names) and as diffusers' ``SanaTransformer2DModel``; SANA-1.5 (ICML 2025) adds RMSNorm on the
queries and keys of both attentions. Our module tree keeps the original names, with two
differences: the Mix-FFN convs are plain ``nn.Conv2d`` (``mlp.inverted_conv.weight`` where the
release has ``mlp.inverted_conv.conv.weight``), and we hold no ``pos_embed`` buffer (the sin-cos
embedding is computed from the config) and no null caption ``y_embedder.y_embedding`` (an input
of classifier-free guidance, not a weight).

diffusers splits two fused projections: ``attn.qkv`` is ``cat(to_q, to_k, to_v)`` along the output
dimension and ``cross_attn.kv_linear`` is ``cat(to_k, to_v)`` (weights and biases).

The map is built per parameter from the config (a meta-device model gives the names and
shapes), so missing, unexpected and mis-shaped keys are all found before anything is loaded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch

from linear_dit.config import LinearDiTConfig, preset_names
from linear_dit.errors import CheckpointError

__all__ = [
    "LAYOUTS",
    "Layout",
    "check_layout_supported",
    "config_from_diffusers",
    "detect_layout",
    "diffusers_config",
    "expected_shapes",
    "from_layout",
    "our_shapes",
    "sana_pos_embed",
    "sana_pos_embed_mismatch",
    "to_layout",
]

Layout = Literal["linear_dit", "sana", "diffusers"]
LAYOUTS: tuple[Layout, ...] = ("linear_dit", "sana", "diffusers")

# Present in the original checkpoints, with no counterpart in ours: the fixed sin-cos buffer (we
# compute it), the null caption embedding for CFG (an input), and the optional log-variance head
# of the training loss. They are dropped on load; pos_embed is first checked against the config.
SANA_POS_EMBED = "pos_embed"
_SANA_DROPPED_KEYS = frozenset({SANA_POS_EMBED, "y_embedder.y_embedding"})
_SANA_DROPPED_PREFIXES = ("logvar_linear.",)

_DIFFUSERS_TOP = {
    "x_embedder.proj": "patch_embed.proj",
    "t_embedder.mlp.0": "time_embed.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_embed.emb.timestep_embedder.linear_2",
    "t_block.1": "time_embed.linear",
    "y_embedder.y_proj.fc1": "caption_projection.linear_1",
    "y_embedder.y_proj.fc2": "caption_projection.linear_2",
    "attention_y_norm": "caption_norm",
    "final_layer.linear": "proj_out",
}
# Below ``blocks.i`` -> below ``transformer_blocks.i``; several names: the tensor is their
# concatenation along dim 0, in this order.
_DIFFUSERS_BLOCK: dict[str, tuple[str, ...]] = {
    "attn.qkv": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
    "attn.proj": ("attn1.to_out.0",),
    "attn.q_norm": ("attn1.norm_q",),
    "attn.k_norm": ("attn1.norm_k",),
    "cross_attn.q_linear": ("attn2.to_q",),
    "cross_attn.kv_linear": ("attn2.to_k", "attn2.to_v"),
    "cross_attn.proj": ("attn2.to_out.0",),
    "cross_attn.q_norm": ("attn2.norm_q",),
    "cross_attn.k_norm": ("attn2.norm_k",),
    "mlp.inverted_conv": ("ff.conv_inverted",),
    "mlp.depth_conv": ("ff.conv_depth",),
    "mlp.point_conv": ("ff.conv_point",),
}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
_SANA_FFN_KEY = re.compile(r"(blocks\.\d+\.mlp\.(?:inverted|depth|point)_conv)\.(weight|bias)")
_DIFFUSERS_QK_NORM = "rms_norm_across_heads"
# diffusers' SanaModulatedNorm before proj_out hard-codes this eps; its config's norm_eps only
# reaches the block norms.
_DIFFUSERS_FINAL_NORM_EPS = 1e-6


# --- names and shapes ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _our_shapes_json(config_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from linear_dit.linear_dit import LinearDiT

    with torch.device("meta"):
        model = LinearDiT(LinearDiTConfig.model_validate_json(config_json))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def our_shapes(cfg: LinearDiTConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes for ``cfg`` (from a meta-device model: no memory)."""
    return dict(_our_shapes_json(cfg.model_dump_json()))


def check_layout_supported(cfg: LinearDiTConfig, layout: str) -> None:
    """Raise a :class:`CheckpointError` if ``cfg`` cannot be expressed in ``layout``."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if cfg.video and layout != "linear_dit":
        raise CheckpointError(
            f"config {cfg.name!r} is a video model (temporal Mix-FFN conv, [B,C,T,H,W] latents), which has "
            f"no {layout} layout; save it in the linear_dit layout"
        )


def _source_names(key: str, layout: Layout) -> tuple[str, ...]:
    """Names that our parameter ``key`` has in ``layout`` (several: concatenated along dim 0)."""
    if layout == "linear_dit":
        return (key,)
    if layout == "sana":
        m = _SANA_FFN_KEY.fullmatch(key)
        return (f"{m[1]}.conv.{m[2]}",) if m else (key,)
    if key == "final_layer.scale_shift_table":
        return ("scale_shift_table",)
    m = _BLOCK_KEY.fullmatch(key)
    if m:
        if m[2] == "scale_shift_table":
            return (f"transformer_blocks.{m[1]}.scale_shift_table",)
        module, param = m[2].rsplit(".", 1)
        if module in _DIFFUSERS_BLOCK:
            return tuple(f"transformer_blocks.{m[1]}.{name}.{param}" for name in _DIFFUSERS_BLOCK[module])
    else:
        module, param = key.rsplit(".", 1)
        if module in _DIFFUSERS_TOP:
            return (f"{_DIFFUSERS_TOP[module]}.{param}",)
    raise CheckpointError(f"parameter {key!r} has no diffusers SanaTransformer2DModel counterpart")


def _split(shape: tuple[int, ...], parts: int) -> tuple[int, ...]:
    return (shape[0] // parts, *shape[1:])


def expected_shapes(cfg: LinearDiTConfig, layout: Layout) -> dict[str, tuple[int, ...]]:
    """Every key a ``layout`` checkpoint of ``cfg`` must hold, with its shape (optional keys of
    the original release, such as ``pos_embed``, are not listed)."""
    check_layout_supported(cfg, layout)
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in our_shapes(cfg).items():
        names = _source_names(key, layout)
        for name in names:
            out[name] = _split(shape, len(names))
    return out


def _is_dropped(key: str, layout: Layout) -> bool:
    return layout == "sana" and (key in _SANA_DROPPED_KEYS or key.startswith(_SANA_DROPPED_PREFIXES))


# --- conversion ----------------------------------------------------------------------------------


def to_layout(state: Mapping[str, torch.Tensor], cfg: LinearDiTConfig, layout: Layout) -> dict[str, torch.Tensor]:
    """Our state dict -> ``layout``. The original layout also gets the ``pos_embed`` buffer the
    release has (zeros unless ``cfg.use_pe``), which records the training grid and PE."""
    check_layout_supported(cfg, layout)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        names = _source_names(key, layout)
        if len(names) == 1:
            out[names[0]] = value
        else:
            # clone: chunks share storage, which safetensors refuses to write.
            for name, part in zip(names, value.chunk(len(names), dim=0), strict=True):
                out[name] = part.clone()
    if layout == "sana":
        out[SANA_POS_EMBED] = sana_pos_embed(cfg)
    return out


def from_layout(
    state: Mapping[str, torch.Tensor], cfg: LinearDiTConfig, layout: Layout, *, strict: bool = True
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """A ``layout`` state dict -> (our state dict, our missing keys, unexpected source keys).

    Mis-shaped keys always raise :class:`CheckpointError`; so do missing and unexpected keys when
    ``strict`` (the message lists them). Keys the original release holds and we do not need
    (``pos_embed``, ``y_embedder.y_embedding``, ``logvar_linear.*``) are dropped, after checking
    that ``pos_embed`` agrees with ``cfg``'s positional embedding.
    """
    expected = expected_shapes(cfg, layout)
    present = {k for k in state if not _is_dropped(k, layout)}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    misshaped = sorted(
        f"{k}: expected {list(expected[k])}, found {list(state[k].shape)}"
        for k in set(expected) & present
        if tuple(state[k].shape) != expected[k]
    )
    if layout == "sana" and SANA_POS_EMBED in state:
        reason = sana_pos_embed_mismatch(state[SANA_POS_EMBED], cfg, exact_grid=False)
        if reason is not None:
            raise CheckpointError(f"sana checkpoint does not match the config {cfg.name!r}: {reason}")
    if misshaped or (strict and (missing or unexpected)):
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items and (strict or title == "wrong shape"):
                parts.append(f"{len(items)} {title}: " + _clip(items))
        raise CheckpointError(f"{layout} checkpoint does not match the config {cfg.name!r}: " + "; ".join(parts))
    ours: dict[str, torch.Tensor] = {}
    ours_missing: list[str] = []
    for key in our_shapes(cfg):
        names = _source_names(key, layout)
        if not all(n in state for n in names):
            ours_missing.append(key)
        elif len(names) == 1:
            ours[key] = state[names[0]]
        else:
            ours[key] = torch.cat([state[n] for n in names], dim=0)
    return ours, ours_missing, unexpected


def _clip(items: Iterable[str], n: int = 8) -> str:
    items = list(items)
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def detect_layout(keys: Iterable[str]) -> Layout:
    """Which layout a state dict (or its keys) is in: ``linear_dit``, ``sana`` or ``diffusers``."""
    keys = set(keys)
    if any(k.startswith(("transformer_blocks.", "patch_embed.", "caption_projection.", "time_embed.")) for k in keys):
        return "diffusers"
    if any(_is_dropped(k, "sana") for k in keys) or any(
        re.fullmatch(r"blocks\.\d+\.mlp\.(?:inverted|depth|point)_conv\.conv\.\w+", k) for k in keys
    ):
        return "sana"
    if any(k.startswith(("x_embedder.", "blocks.", "final_layer.")) for k in keys):
        return "linear_dit"
    raise CheckpointError(
        "not a Linear DiT checkpoint: no keys of the linear_dit, sana or diffusers layout "
        f"(first keys: {sorted(keys)[:5]})"
    )


# --- the original release's pos_embed buffer -----------------------------------------------------


def sana_pos_embed(cfg: LinearDiTConfig) -> torch.Tensor:
    """The ``pos_embed`` buffer ``(1, base_size**2, C)`` an original checkpoint of ``cfg`` holds:
    the sin-cos embedding of the training grid if ``cfg.use_pe``, zeros otherwise."""
    from linear_dit.positional_embedding import sincos_2d

    n = cfg.base_size
    if not cfg.use_pe:
        return torch.zeros(1, n * n, cfg.hidden_size, device="cpu")
    return sincos_2d(cfg.hidden_size, n, n, n, cfg.pe_interpolation, torch.device("cpu"))[None]


def sana_pos_embed_mismatch(pos_embed: torch.Tensor, cfg: LinearDiTConfig, *, exact_grid: bool) -> str | None:
    """Why an original checkpoint's ``pos_embed`` contradicts ``cfg``, or None if it does not.

    The buffer is zeros when the model adds no positional embedding, else the sin-cos embedding
    of its training grid; its length is that grid's token count. Without a PE the grid changes
    nothing, so it is compared only with ``exact_grid`` (used to tell presets apart).
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] != cfg.hidden_size:
        return f"pos_embed has shape {list(pos_embed.shape)}, expected [1, tokens, {cfg.hidden_size}]"
    tokens = pos_embed.shape[1]
    grid = cfg.base_size**2
    if pos_embed.device.type == "meta":  # shape-only read: the values cannot be checked
        return (
            f"pos_embed covers {tokens} tokens, config {cfg.name!r} {grid}" if exact_grid and tokens != grid else None
        )
    has_pe = bool(pos_embed.detach().abs().amax() > 0)
    if has_pe != cfg.use_pe:
        found = "holds a sin-cos embedding" if has_pe else "is all zeros (no positional embedding)"
        return f"pos_embed {found}, but config {cfg.name!r} has use_pe={cfg.use_pe}"
    if (cfg.use_pe or exact_grid) and tokens != grid:
        return (
            f"pos_embed covers {tokens} tokens, config {cfg.name!r} trains on a {cfg.base_size}x{cfg.base_size} "
            f"grid ({grid} tokens; sample_size={cfg.sample_size}, patch_size={cfg.patch_size})"
        )
    if cfg.use_pe:
        want = sana_pos_embed(cfg)
        err = (pos_embed.detach().float().cpu() - want).abs().amax().item()
        if err > 1e-3:
            return (
                f"pos_embed differs from the sin-cos embedding of config {cfg.name!r} "
                f"(pe_interpolation={cfg.pe_interpolation:g}) by up to {err:.3g}"
            )
    return None


# --- diffusers config.json -----------------------------------------------------------------------


def diffusers_config(cfg: LinearDiTConfig) -> dict[str, Any]:
    """The ``config.json`` of the equivalent diffusers ``SanaTransformer2DModel``.

    diffusers has no video variant, one ``qk_norm`` switch for both attentions, and a final norm
    whose eps is fixed at 1e-6; configs it cannot express raise :class:`CheckpointError`. Its
    linear attention uses eps 1e-15 (ours: ``linear_attention_eps``, 1e-8 as in the Sana blocks),
    which is not part of the file.
    """
    check_layout_supported(cfg, "diffusers")
    if cfg.qk_norm != cfg.cross_norm:
        raise CheckpointError(
            f"config {cfg.name!r} has qk_norm={cfg.qk_norm} but cross_norm={cfg.cross_norm}; diffusers' "
            "SanaTransformer2DModel has one qk_norm setting that switches the q/k RMSNorms of both attentions"
        )
    if cfg.norm_eps != _DIFFUSERS_FINAL_NORM_EPS:
        raise CheckpointError(
            f"config {cfg.name!r} has norm_eps={cfg.norm_eps:g}; diffusers' SanaTransformer2DModel fixes the eps "
            f"of its final norm at {_DIFFUSERS_FINAL_NORM_EPS:g}, so only norm_eps={_DIFFUSERS_FINAL_NORM_EPS:g} "
            "converts exactly"
        )
    c = cfg.hidden_size
    return {
        "_class_name": "SanaTransformer2DModel",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.output_channels,
        "num_attention_heads": cfg.num_attention_heads,
        "attention_head_dim": cfg.attention_head_dim,
        "num_layers": cfg.depth,
        "num_cross_attention_heads": cfg.num_cross_attention_heads,
        "cross_attention_head_dim": cfg.cross_attention_head_dim,
        "cross_attention_dim": c,
        "caption_channels": cfg.caption_channels,
        "mlp_ratio": cfg.mlp_ratio,
        "dropout": 0.0,
        "attention_bias": False,
        "sample_size": cfg.sample_size,
        "patch_size": cfg.patch_size,
        "norm_elementwise_affine": False,
        "norm_eps": cfg.norm_eps,
        # diffusers adds the sin-cos PE exactly when interpolation_scale is not None.
        "interpolation_scale": cfg.pe_interpolation if cfg.use_pe else None,
        "guidance_embeds": False,
        "qk_norm": _DIFFUSERS_QK_NORM if cfg.qk_norm else None,
        "timestep_scale": 1.0,
    }


# diffusers' defaults for keys a config.json may omit (SanaTransformer2DModel.__init__).
_DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "in_channels": 32,
    "out_channels": 32,
    "num_attention_heads": 70,
    "attention_head_dim": 32,
    "num_layers": 20,
    "num_cross_attention_heads": 20,
    "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240,
    "caption_channels": 2304,
    "mlp_ratio": 2.5,
    "attention_bias": False,
    "sample_size": 32,
    "patch_size": 1,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "interpolation_scale": None,
    "guidance_embeds": False,
    "qk_norm": None,
}
# Fields that do not come from a config.json: a preset with every other field equal lends them.
_NOT_IN_DIFFUSERS = {"name", "flow_shift", "text_max_length", "caption_norm_init", "linear_attention_eps"}


def config_from_diffusers(d: Mapping[str, Any], name: str = "custom") -> LinearDiTConfig:
    """Our config from a diffusers ``SanaTransformer2DModel`` ``config.json`` dict.

    ``interpolation_scale`` None means no positional embedding (``use_pe=False``); a number turns
    the sin-cos PE on with that ``pe_interpolation``. The linear-attention eps stays at the Sana
    blocks' 1e-8 (diffusers computes with 1e-15; the outputs differ by far less than 1e-5).
    ``timestep_scale`` and ``dropout`` do not change the transformer's forward and are ignored.
    If exactly one preset has the same architecture, that preset is returned (it also carries
    the sampling defaults, such as ``flow_shift``, that a config.json does not record).
    """
    cls = d.get("_class_name", "SanaTransformer2DModel")
    if cls != "SanaTransformer2DModel":
        raise CheckpointError(f"config.json describes a {cls}, not a SanaTransformer2DModel")
    g = {**_DIFFUSERS_DEFAULTS, **{k: v for k, v in d.items() if not k.startswith("_")}}
    unsupported = [
        (g["guidance_embeds"], "guidance_embeds=true (SANA-Sprint guidance embedding)"),
        (g["attention_bias"], "attention_bias=true (q/k/v biases in the linear attention)"),
        (g["norm_elementwise_affine"], "norm_elementwise_affine=true"),
        (g["cross_attention_dim"] is None, "cross_attention_dim=null (no cross-attention)"),
        (g["qk_norm"] not in (None, _DIFFUSERS_QK_NORM), f"qk_norm={g['qk_norm']!r}"),
    ]
    bad = [why for flag, why in unsupported if flag]
    if bad:
        raise CheckpointError("unsupported SanaTransformer2DModel config: " + ", ".join(bad))
    width = g["num_attention_heads"] * g["attention_head_dim"]
    cross = g["num_cross_attention_heads"] * g["cross_attention_head_dim"]
    if not width == cross == g["cross_attention_dim"]:
        raise CheckpointError(
            "SanaTransformer2DModel config widths disagree: num_attention_heads*attention_head_dim = "
            f"{width}, num_cross_attention_heads*cross_attention_head_dim = {cross}, cross_attention_dim = "
            f"{g['cross_attention_dim']}; the Linear DiT needs all three equal"
        )
    if g["norm_eps"] != _DIFFUSERS_FINAL_NORM_EPS:
        raise CheckpointError(
            f"norm_eps={g['norm_eps']:g} in config.json: diffusers uses it in the blocks but "
            f"{_DIFFUSERS_FINAL_NORM_EPS:g} in the final norm, which one norm_eps cannot express"
        )
    scale = g["interpolation_scale"]
    try:
        cfg = LinearDiTConfig(
            name=name,
            in_channels=g["in_channels"],
            out_channels=None if g["out_channels"] in (None, g["in_channels"]) else g["out_channels"],
            patch_size=g["patch_size"],
            hidden_size=width,
            depth=g["num_layers"],
            attention_head_dim=g["attention_head_dim"],
            num_cross_attention_heads=g["num_cross_attention_heads"],
            caption_channels=g["caption_channels"],
            mlp_ratio=g["mlp_ratio"],
            norm_eps=g["norm_eps"],
            qk_norm=g["qk_norm"] is not None,
            cross_norm=g["qk_norm"] is not None,
            sample_size=g["sample_size"],
            use_pe=scale is not None,
            pe_interpolation=1.0 if scale is None else float(scale),
        )
    except ValueError as e:
        raise CheckpointError(f"cannot turn the SanaTransformer2DModel config.json into a LinearDiTConfig: {e}") from e
    if name != "custom":
        return cfg
    arch = cfg.model_dump(exclude=_NOT_IN_DIFFUSERS)
    matches = [p for p in preset_names() if LinearDiTConfig.from_name(p).model_dump(exclude=_NOT_IN_DIFFUSERS) == arch]
    return LinearDiTConfig.from_name(matches[0]) if len(matches) == 1 else cfg
