"""FLOPs of one Linear DiT forward pass, measured and by formula, with a per-operator breakdown.

SANA (Xie et al., ICLR 2025), Sec. 2.2 and Sec. 4 (efficiency comparison in MACs and throughput):
the ReLU linear attention costs ``O(N d^2)`` per head instead of softmax attention's ``O(N^2 d)``,
which is negligible at 1K (1024 tokens) and matters at 2K/4K; the linear layers (qkv, projections,
the 1x1 convs of the Mix-FFN) dominate at every resolution.

Conventions: one multiply-add counts as **2 FLOPs**; only matrix products and convolutions are
counted (the convention of ``torch.utils.flop_counter``): norms, activations, the softmax, the
linear-attention division and residual adds are elementwise and left out. One forward pass is one
sampling step without classifier-free guidance; with CFG pass ``batch=2`` (or double the figure),
and multiply by the number of steps for one image.

:func:`count_flops` measures with :class:`torch.utils.flop_counter.FlopCounterMode` on a model built
from fake tensors (no storage is allocated, so the 4.8B config costs nothing), with two additions
where the counter is blind: the fused CPU attention kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``, which the counter does not know) gets the
standard SDPA formula, and the temporal taps of video Mix-FFNs, which run as elementwise products,
are added by formula. :func:`analytic_flops` gives the same breakdown from closed-form expressions;
the tests hold the two equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from linear_dit.config import LinearDiTConfig
from linear_dit.errors import InputError
from linear_dit.linear_dit import LinearDiT

__all__ = ["FLOP_KEYS", "analytic_flops", "count_flops", "latent_size"]

#: Keys of the breakdown, in display order. ``linear`` is the sum of every weight matrix product
#: (embedders, attention projections, Mix-FFN 1x1 convs); ``total`` is everything counted.
FLOP_KEYS: tuple[str, ...] = (
    "embedders",
    "self_attention_projections",
    "linear_attention",
    "cross_attention_projections",
    "cross_attention",
    "mix_ffn_pointwise",
    "mix_ffn_depthwise",
    "mix_ffn_temporal",
    "other",
    "linear",
    "total",
)
_EMBEDDERS = ("x_embedder", "t_embedder", "t_block", "y_embedder", "final_layer")
_TIMESTEP_FREQUENCIES = 256  # sinusoidal features fed to the timestep MLP (adaln_single.TimestepEmbedder)


def latent_size(image_size: int, spatial_compression: int = 32) -> int:
    """Latent side for an image side in pixels: ``image_size / spatial_compression`` (DC-AE f32:
    1024 px -> 32, 4096 px -> 128). The image side must be a positive multiple of the compression."""
    if spatial_compression <= 0:
        raise InputError(f"spatial_compression must be positive, got {spatial_compression}")
    if image_size <= 0 or image_size % spatial_compression:
        raise InputError(
            f"image size must be a positive multiple of the autoencoder's compression {spatial_compression}, "
            f"got {image_size}"
        )
    return image_size // spatial_compression


def _resolve(
    config: LinearDiTConfig | LinearDiT, height: int, width: int, text_tokens: int, frames: int | None, batch: int
) -> tuple[LinearDiTConfig, int]:
    """The config and the number of latent frames (1 for image configs), after checking the shapes."""
    cfg = config.config if isinstance(config, LinearDiT) else config
    if not isinstance(cfg, LinearDiTConfig):
        raise InputError(f"expected a LinearDiTConfig or a LinearDiT, got {type(config).__name__}")
    p = cfg.patch_size
    if height <= 0 or width <= 0 or height % p or width % p:
        raise InputError(f"latent height and width must be positive multiples of patch size {p}, got {height}x{width}")
    if text_tokens <= 0:
        raise InputError(f"text_tokens must be at least 1, got {text_tokens}")
    if batch <= 0:
        raise InputError(f"batch must be at least 1, got {batch}")
    if cfg.video:
        if frames is None or frames <= 0:
            raise InputError(f"config {cfg.name!r} is a video config: give the number of latent frames, got {frames}")
        return cfg, frames
    if frames is not None:
        raise InputError(f"config {cfg.name!r} is an image config: frames must be None, got {frames}")
    return cfg, 1


def _finish(parts: dict[str, int], total: int) -> dict[str, int]:
    """Add ``other`` (counted but in no named part), ``linear`` and ``total``, in FLOP_KEYS order."""
    parts = dict(parts)
    parts["other"] = total - sum(parts.values())
    parts["linear"] = (
        parts["embedders"]
        + parts["self_attention_projections"]
        + parts["cross_attention_projections"]
        + parts["mix_ffn_pointwise"]
    )
    parts["total"] = total
    return {k: parts[k] for k in FLOP_KEYS}


def analytic_flops(
    config: LinearDiTConfig | LinearDiT,
    height: int,
    width: int,
    text_tokens: int = 300,
    frames: int | None = None,
    batch: int = 1,
) -> dict[str, int]:
    """FLOPs of one forward pass by closed-form expressions; same arguments and keys as
    :func:`count_flops`.

    With ``N`` image tokens, ``L`` text tokens, width ``C``, head dim ``d`` and Mix-FFN width ``F``,
    each block costs ``8NC^2`` (qkv, proj), ``2N(2Cd + C)`` (key-value state, numerator and
    normaliser of the linear attention), ``4NC^2 + 4LC^2`` (cross-attention q, proj and text k, v),
    ``4NLC`` (softmax scores and weighted sum), ``6NCF`` (1x1 convs), ``36NF`` (3x3 depthwise conv
    on 2F channels) and, for video, ``12NF`` (3 temporal taps on 2F channels); all times the batch.
    """
    cfg, t = _resolve(config, height, width, text_tokens, frames, batch)
    p, c, d, f = cfg.patch_size, cfg.hidden_size, cfg.attention_head_dim, cfg.mlp_hidden
    n = t * (height // p) * (width // p)
    length, b, depth = text_tokens, batch, cfg.depth
    embed = (
        n * cfg.in_channels * p * p * c  # patch embedding
        + _TIMESTEP_FREQUENCIES * c
        + c * c  # timestep MLP
        + c * 6 * c  # t_block
        + length * (cfg.caption_channels * c + c * c)  # caption MLP
        + n * c * p * p * cfg.output_channels  # final projection
    )
    parts = {
        "embedders": 2 * b * embed,
        "self_attention_projections": 2 * b * depth * n * 4 * c * c,
        "linear_attention": 2 * b * depth * n * (2 * c * d + c),
        "cross_attention_projections": 2 * b * depth * (2 * n * c * c + 2 * length * c * c),
        "cross_attention": 4 * b * depth * n * length * c,
        "mix_ffn_pointwise": 2 * b * depth * n * 3 * c * f,
        "mix_ffn_depthwise": 2 * b * depth * n * 2 * f * 9,
        "mix_ffn_temporal": 2 * b * depth * n * 2 * f * 3 if cfg.video else 0,
    }
    return _finish(parts, sum(parts.values()))


def _flop_counter(**kwargs: Any) -> Any:
    """A FlopCounterMode that also knows the fused CPU attention kernel (SDPA's usual CPU path)."""
    from torch.utils import flop_counter

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> int:
        return int(flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape))

    sdpa._get_raw = True  # type: ignore[attr-defined]  # receives tensors, not shapes
    mapping: dict[Any, Callable[..., int]] = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None and cpu_flash not in flop_counter.flop_registry:
        mapping[cpu_flash] = sdpa
    return flop_counter.FlopCounterMode(display=False, custom_mapping=mapping, **kwargs)


def count_flops(
    config: LinearDiTConfig | LinearDiT,
    height: int,
    width: int,
    text_tokens: int = 300,
    frames: int | None = None,
    batch: int = 1,
) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one forward pass -- one sampling step without CFG -- on a
    latent of ``height x width`` (latent pixels, not image pixels: see :func:`latent_size`) with
    ``text_tokens`` text tokens; video configs need the number of latent ``frames``.

    Returns the breakdown named in :data:`FLOP_KEYS`: ``embedders`` (patch, timestep and caption
    embedding, final projection), ``self_attention_projections`` (qkv, proj), ``linear_attention``
    (the ReLU attention products), ``cross_attention_projections``, ``cross_attention`` (softmax
    scores and weighted sum), ``mix_ffn_pointwise`` (1x1 convs), ``mix_ffn_depthwise`` (3x3
    conv), ``mix_ffn_temporal`` (video only), ``other`` (counted but unattributed; 0 for the
    model as written), ``linear`` (all weight matrix products) and ``total``.

    A one-token latent (``N = 1``) under-counts the linear attention: einsum lowers a size-1
    contraction to an elementwise product, which the counter does not see.

    A :class:`LinearDiT` is measured through its config (a fake-tensor copy is built), so a
    model whose modules were swapped after construction is counted as the plain architecture.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg, t = _resolve(config, height, width, text_tokens, frames, batch)
    counter = _flop_counter()
    with FakeTensorMode():
        model = LinearDiT(cfg).eval()

        def passthrough(
            x: torch.Tensor, timestep: torch.Tensor | float, y: torch.Tensor, mask: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor | None]:
            # The input checks read tensor values, which fake tensors do not have; the inputs
            # below are well-formed by construction.
            return torch.as_tensor(timestep).float().reshape(-1).expand(x.shape[0]), mask

        model._check_inputs = passthrough  # type: ignore[method-assign]
        shape = (batch, cfg.in_channels, t, height, width) if cfg.video else (batch, cfg.in_channels, height, width)
        x = torch.empty(shape)
        y = torch.empty(batch, text_tokens, cfg.caption_channels)
        timestep = torch.full((batch,), 0.5 * cfg.max_timestep)
        with counter, torch.no_grad():
            model(x, timestep, y)
    by_module = counter.get_flop_counts()
    total = int(sum(by_module.get("Global", {}).values()))

    def flops(name: str) -> int:
        # Keys are "<RootClass>.<module path>"; a module's count includes its children's.
        return int(sum(by_module.get(f"{type(model).__name__}.{name}", {}).values()))

    parts = {k: 0 for k in FLOP_KEYS[:8]}
    parts["embedders"] = sum(flops(name) for name in _EMBEDDERS)
    for i in range(cfg.depth):
        blk = f"blocks.{i}"
        attn_proj = flops(f"{blk}.attn.qkv") + flops(f"{blk}.attn.proj")
        cross_proj = sum(flops(f"{blk}.cross_attn.{m}") for m in ("q_linear", "kv_linear", "proj"))
        depthwise = flops(f"{blk}.mlp.depth_conv")
        parts["self_attention_projections"] += attn_proj
        parts["linear_attention"] += flops(f"{blk}.attn") - attn_proj
        parts["cross_attention_projections"] += cross_proj
        parts["cross_attention"] += flops(f"{blk}.cross_attn") - cross_proj
        parts["mix_ffn_depthwise"] += depthwise
        # The 1x1 convs run as matrix products inside MixFFN.forward, not as child modules.
        parts["mix_ffn_pointwise"] += flops(f"{blk}.mlp") - depthwise
    if cfg.video:
        # Elementwise taps, invisible to the counter: costed as the 3-tap depthwise conv they are.
        parts["mix_ffn_temporal"] = analytic_flops(cfg, height, width, text_tokens, frames, batch)["mix_ffn_temporal"]
        total += parts["mix_ffn_temporal"]
    return _finish(parts, total)
