"""QoQ (quattuor-octo-quattuor) W4A8KV4 post-training quantization of a Llama-layout model, and its baselines.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 4. :func:`quantize_` runs the reference's order: rotate -> reorder -> smooth -> weight quantization (the
clipping search, then GPTQ) -> activation quantization (per token, at run time, inside :class:`W4A8Linear`), then
sets the model's KV quantizer. Every decoder linear becomes a W4A8 (or W8A8) layer; the embedding, the norms and lm_head
stay in floating point. Presets: ``QoQConfig.preset("qoq")`` (all transforms, W4 g128, KV4),
``"rtn-w4a8kv4"`` (same formats, plain round-to-nearest, no transforms) and ``"w8a8"`` (per-channel INT8 weights,
per-token INT8 activations, 16-bit KV).

The rotation is chosen on the calibration data by default (``rotate="auto"``): the model is quantized with and
without it and the copy with the lower next-token loss on the calibration tokens is kept. The reference always
rotates, which pays off when activations carry the massive outliers of large LLMs; a model without them can lose
more than it gains (our small trained Llama: +0.16 perplexity rotated, +0.10 not). ``rotate=True`` is the
reference's fixed recipe.

Calibration statistics come from one pass of the float model after rotation: the inputs of every linear
(a seeded subsample of tokens) and the per-channel absmax of the post-RoPE keys. Later transforms are applied to
those statistics analytically (a permutation and a division for down_proj), which is exact because they are
function-preserving in the float model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from qserve.errors import ConfigError, InputError, QServeError, QuantizationError
from qserve.model import LlamaAttention, LlamaForCausalLM
from qserve.quant.clip import clip_grid, search_clip
from qserve.quant.formats import fake_quantize_weight
from qserve.quant.gptq import gptq_w4
from qserve.quant.kv import KVQuantizer
from qserve.quant.reorder import reorder_down, reorder_index
from qserve.quant.rotation import decoder_layers, rotate_model
from qserve.quant.smooth import smooth_attention, smooth_down
from qserve.quant.w4a8_linear import W4A8Linear, W8A8Linear
from qserve.rope import apply_rope, rope_cos_sin

__all__ = ["DECODER_LINEARS", "QoQConfig", "QuantizationReport", "calibration_windows", "quantize_"]

DECODER_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)

Method = Literal["qoq", "rtn-w4a8kv4", "w8a8"]


class QoQConfig(BaseModel):
    """How to quantize. Defaults are QoQ W4A8KV4 g128 (the reference's ``qoq-g128`` recipe)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method = Field("qoq", description="Recorded name of the recipe (presets set the fields below).")
    w_bits: Literal[4, 8] = Field(4, description="Weight bits: 4 (W4A8, UINT4) or 8 (W8A8, per-channel INT8).")
    w_group: Literal[128, -1] = Field(128, description="W4 group size: 128 (progressive) or -1 (per channel).")
    a_bits: Literal[8] = Field(8, description="Activation bits (per-token INT8).")
    kv_bits: Literal[4, 8, 16] = Field(4, description="KV-cache bits (per token, per head).")
    rotate: bool | Literal["auto"] = Field(
        "auto",
        description="Hadamard rotation of the residual stream and the value heads: on, off, or 'auto' (quantize "
        "both ways and keep the one with the lower loss on the calibration tokens).",
    )
    smooth_attention: float | None = Field(0.5, ge=0.0, le=1.0, description="SmoothAttention alpha (None = off).")
    smooth_down: tuple[float, ...] = Field(
        (0.05, 0.1, 0.2, 0.3, 0.4, 0.5), description="down_proj smoothing alpha grid (empty = off)."
    )
    reorder: bool = Field(True, description="Reorder down_proj input channels by absmax (g128 only).")
    clip: bool = Field(True, description="Per-group weight-clipping search (W4 only).")
    clip_steps: int = Field(11, ge=1, description="Number of clip ratios tried in [0.8, 1].")
    gptq: bool = Field(True, description="GPTQ error compensation when rounding the W4 weights.")
    gptq_damp: float = Field(0.01, gt=0.0, description="GPTQ damping, relative to the mean Hessian diagonal.")
    calibration_samples: int = Field(2048, ge=16, description="Tokens kept per linear for the searches.")
    batch_size: int = Field(8, ge=1, description="Calibration sequences per forward pass.")
    seed: int = 0

    @property
    def needs_calibration(self) -> bool:
        """Whether any step of the recipe needs calibration statistics."""
        w4 = self.w_bits == 4
        return (
            self.rotate == "auto"
            or self.smooth_attention is not None
            or bool(self.smooth_down)
            or (w4 and (self.clip or self.gptq or (self.reorder and self.w_group > 0)))
        )

    @classmethod
    def preset(cls, name: str, **overrides: object) -> QoQConfig:
        """``"qoq"``, ``"qoq-gchn"`` (per-channel W4), ``"rtn-w4a8kv4"`` or ``"w8a8"``; fields can be overridden."""
        off: dict[str, object] = {
            "rotate": False,
            "smooth_attention": None,
            "smooth_down": (),
            "reorder": False,
            "clip": False,
            "gptq": False,
        }
        presets: dict[str, dict[str, object]] = {
            "qoq": {},
            "qoq-gchn": {"w_group": -1, "reorder": False},
            "rtn-w4a8kv4": {"method": "rtn-w4a8kv4", **off},
            "w8a8": {"method": "w8a8", "w_bits": 8, "kv_bits": 16, **off},
        }
        if name not in presets:
            raise ConfigError(f"unknown QoQ preset {name!r}; expected one of {sorted(presets)}")
        return cls.model_validate({**presets[name], **overrides})


class QuantizationReport(BaseModel):
    """What :func:`quantize_` did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    linears: int
    calibration_tokens: int
    smooth_down_alphas: tuple[float | None, ...]
    mean_clip_ratio: float | None
    rotated: bool
    calibration_loss_rotated: float | None = None
    calibration_loss_plain: float | None = None
    seconds: float


def calibration_windows(tokens: torch.Tensor, num: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``num`` random windows [num, seq_len] from a 1-D token stream (e.g. a tokenized local text file)."""
    if tokens.dim() != 1 or tokens.numel() < seq_len:
        raise InputError(f"expected a 1-D token stream of at least {seq_len} tokens, found {tuple(tokens.shape)}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - seq_len + 1, (num,), generator=g)
    return torch.stack([tokens[s : s + seq_len] for s in starts.tolist()])


def _check_calibration(calibration: torch.Tensor | Callable[[], torch.Tensor], vocab: int) -> torch.Tensor:
    ids = calibration() if callable(calibration) else calibration
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.numel() == 0:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise InputError(f"calibration must be token ids [N, L], found {shape}")
    if ids.dtype.is_floating_point:
        if not bool(torch.isfinite(ids).all()):
            raise InputError("calibration token ids hold NaN/Inf")
        if not bool((ids == ids.round()).all()):
            raise InputError("calibration must be integer token ids, found fractional values")
        ids = ids.long()
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise InputError(f"calibration ids must be in [0, {vocab}), found [{int(ids.min())}, {int(ids.max())}]")
    return ids.long()


class _Stats:
    """Inputs of every decoder linear (subsampled tokens) and post-RoPE key absmax per layer."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[torch.Tensor]] = {}
        self.key_absmax: dict[int, torch.Tensor] = {}


@torch.no_grad()
def _collect(model: LlamaForCausalLM, ids: torch.Tensor, config: QoQConfig) -> dict[str, object]:
    stats = _Stats()
    g = torch.Generator().manual_seed(config.seed)
    n, seq = ids.shape
    per_batch = max(1, config.calibration_samples * min(config.batch_size, n) // n)
    hooks = []
    batch_rows: dict[str, torch.Tensor] = {}

    def pick(t: int) -> torch.Tensor:
        key = str(t)
        if key not in batch_rows:
            batch_rows[key] = torch.randperm(t, generator=g)[: min(t, per_batch)]
        return batch_rows[key]

    for i, layer in enumerate(decoder_layers(model)):
        for name in DECODER_LINEARS:
            mod = layer.get_submodule(name)

            def save_input(m: nn.Module, args: tuple[torch.Tensor, ...], key: str = f"{i}.{name}") -> None:
                x = args[0].reshape(-1, args[0].shape[-1])
                stats.inputs.setdefault(key, []).append(x[pick(x.shape[0]).to(x.device)].float().cpu())

            hooks.append(mod.register_forward_pre_hook(save_input))
        attn: LlamaAttention = layer.self_attn

        def save_keys(
            m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor, i: int = i, attn: LlamaAttention = attn
        ) -> None:
            b, t, _ = out.shape
            k = out.view(b, t, attn.num_kv_heads, attn.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            pos = torch.arange(t, device=out.device).expand(b, t)
            cos, sin = rope_cos_sin(model.config, pos)
            amax = apply_rope(k, cos, sin).abs().float().amax(dim=(0, 2)).cpu()  # [Hkv, D]
            prev = stats.key_absmax.get(i)
            stats.key_absmax[i] = amax if prev is None else torch.maximum(prev, amax)

        hooks.append(attn.k_proj.register_forward_hook(save_keys))
    try:
        for start in range(0, n, config.batch_size):
            batch_rows.clear()
            model(ids[start : start + config.batch_size].to(model.lm_head.weight.device))
    finally:
        for h in hooks:
            h.remove()
    return {"inputs": {k: torch.cat(v) for k, v in stats.inputs.items()}, "keys": stats.key_absmax}


def _fake_weight(config: QoQConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda w: fake_quantize_weight(w, config.w_group, config.w_bits)


def _check_model(model: LlamaForCausalLM) -> None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise InputError(f"model parameter {name} holds NaN/Inf; cannot quantize")
    if any(isinstance(m, (W4A8Linear, W8A8Linear)) for m in model.modules()):
        raise QuantizationError("the model is already quantized")


def _quantize_copy(model: LlamaForCausalLM, config: QoQConfig, ids: torch.Tensor) -> tuple[LlamaForCausalLM, dict]:
    dtype = model.lm_head.weight.dtype
    work = copy.deepcopy(model).float().eval()
    work.kv_quant = None
    group = config.w_group
    if config.w_bits == 4 and group > 0:
        c = work.config
        sizes = {
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_attention_heads * head_dim": c.num_attention_heads * c.head_dim,
        }
        bad = {k: v for k, v in sizes.items() if v % group}
        if bad:
            raise ConfigError(
                f"W4 g{group} needs input sizes that are multiples of {group}, found {bad} (use w_group=-1)"
            )
    if config.rotate is True:
        rotate_model(work, seed=config.seed)
    stats = _collect(work, ids, config) if config.needs_calibration else {"inputs": {}, "keys": {}}
    inputs: dict[str, torch.Tensor] = stats["inputs"]  # type: ignore[assignment]
    keys: dict[int, torch.Tensor] = stats["keys"]  # type: ignore[assignment]
    alphas: list[float | None] = []
    for i, layer in enumerate(decoder_layers(work)):
        down_key = f"{i}.mlp.down_proj"
        if config.reorder and config.w_bits == 4 and group > 0:
            perm = reorder_index(inputs[down_key].abs().amax(dim=0))
            reorder_down(layer.mlp, perm)
            inputs[down_key] = inputs[down_key][:, perm]
        if config.smooth_attention is not None:
            smooth_attention(layer.self_attn, keys[i], config.smooth_attention)
        if config.smooth_down:
            alpha, s = smooth_down(layer.mlp, inputs[down_key], config.smooth_down, _fake_weight(config))
            inputs[down_key] = inputs[down_key] / s.cpu()
            alphas.append(alpha)
    ratios: list[float] = []
    count = 0
    for i, layer in enumerate(decoder_layers(work)):
        for name in DECODER_LINEARS:
            parent_name, _, attr = name.rpartition(".")
            parent = layer.get_submodule(parent_name)
            lin: nn.Linear = getattr(parent, attr)
            new: nn.Module
            if config.w_bits == 8:
                new = W8A8Linear.from_linear(lin)
            else:
                ratio = None
                if config.clip:
                    ratio = search_clip(lin.weight, inputs[f"{i}.{name}"], group, clip_grid(config.clip_steps))
                    ratios.append(float(ratio.mean()))
                if config.gptq:
                    q = gptq_w4(lin.weight, inputs[f"{i}.{name}"], group, ratio, config.gptq_damp)
                    new = W4A8Linear.from_weight(q, None if lin.bias is None else lin.bias.detach())
                else:
                    new = W4A8Linear.from_linear(lin, group, ratio)
            setattr(parent, attr, new)
            count += 1
    work.to(dtype)
    work.kv_quant = KVQuantizer(config.kv_bits) if config.kv_bits != 16 else None
    info = {"alphas": tuple(alphas), "clip": sum(ratios) / len(ratios) if ratios else None, "linears": count}
    return work, info


def _calibration_loss(model: LlamaForCausalLM, ids: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy of ``model`` on the calibration windows ``ids`` [N, L]."""
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in ids.split(batch_size):
            logits = model(chunk)[:, :-1].float()  # [B, L-1, V]
            target = chunk[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
            )
            total, count = total + float(loss), count + target.numel()
    return total / max(count, 1)


def _best_rotation(model: LlamaForCausalLM, config: QoQConfig, ids: torch.Tensor) -> tuple[LlamaForCausalLM, dict]:
    """Quantize with and without the rotation and keep the copy with the lower calibration loss.

    Rotation spreads the massive activation outliers of large LLMs over all channels, which is why the reference
    always rotates; a model without such outliers can lose more to rotating than it gains (measured on our small
    trained model: +0.16 perplexity rotated, +0.10 not), and the choice costs one more quantization. The loss is
    taken on the calibration tokens only, so the evaluation data plays no part. Needs windows of >= 2 tokens.
    """
    if ids.shape[1] < 2:
        raise InputError(
            f"rotate='auto' scores next-token loss on calibration windows of >= 2 tokens, found {ids.shape[1]}"
        )
    best: tuple[float, LlamaForCausalLM, dict] | None = None
    for rotate in (True, False):
        work, info = _quantize_copy(model, config.model_copy(update={"rotate": rotate}), ids)
        loss = _calibration_loss(work, ids, config.batch_size)
        info = {**info, "rotated": rotate, f"calibration_loss_{'rotated' if rotate else 'plain'}": loss}
        if best is None or loss < best[0]:
            best = (loss, work, {**(best[2] if best else {}), **info})
        else:
            best[2].update({k: v for k, v in info.items() if k.startswith("calibration_loss")})
    assert best is not None
    return best[1], best[2]


def quantize_(
    model: LlamaForCausalLM,
    config: QoQConfig | None = None,
    calibration: torch.Tensor | Callable[[], torch.Tensor] | None = None,
) -> QuantizationReport:
    """Quantize ``model`` in place with ``config`` (default: QoQ W4A8KV4 g128).

    ``calibration`` is token ids [N, L] (or a callable returning them); it is required unless the recipe needs
    no statistics (RTN, W8A8). The work happens on a copy that replaces the model's modules only on success, so
    a failure leaves ``model`` as it was. Raises :class:`InputError` for NaN in the model or calibration data,
    :class:`ConfigError` for shapes the recipe cannot handle, :class:`QuantizationError` otherwise.
    """
    config = config or QoQConfig()
    t0 = time.perf_counter()
    _check_model(model)
    if calibration is None:
        if config.needs_calibration:
            raise InputError(f"the {config.method!r} recipe needs calibration token ids [N, L], found None")
        ids = torch.zeros(1, 1, dtype=torch.long)
    else:
        ids = _check_calibration(calibration, model.config.vocab_size)
    try:
        if config.rotate == "auto":
            work, info = _best_rotation(model, config, ids)
        else:
            work, info = _quantize_copy(model, config, ids)
            info["rotated"] = bool(config.rotate)
    except QServeError:
        raise
    except Exception as e:  # anything else is a failed quantization; the model is untouched
        raise QuantizationError(f"quantization failed: {type(e).__name__}: {e}") from e
    if any(not bool(torch.isfinite(p).all()) for p in work.parameters()):
        raise QuantizationError("quantization produced NaN/Inf parameters; the model is left as it was")
    model._modules = work._modules
    model.config = work.config
    model.kv_quant = work.kv_quant
    model.quantization_config = config  # type: ignore[assignment]
    return QuantizationReport(
        method=config.method,
        linears=info["linears"],
        calibration_tokens=ids.numel() if calibration is not None else 0,
        smooth_down_alphas=info["alphas"],
        mean_clip_ratio=info["clip"],
        rotated=info["rotated"],
        calibration_loss_rotated=info.get("calibration_loss_rotated"),
        calibration_loss_plain=info.get("calibration_loss_plain"),
        seconds=time.perf_counter() - t0,
    )
