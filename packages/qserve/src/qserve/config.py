"""Architecture config of the Llama-family causal LMs that ``qserve`` serves (Llama-2/3, Mistral, Qwen2, SmolLM).

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 6 (the evaluated models are Llama-1/2/3, Mistral, Yi and Qwen, all of this decoder layout: RMSNorm, RoPE,
grouped-query attention, SwiGLU MLP). Field names follow the Hugging Face ``config.json`` so that
:meth:`LlamaConfig.from_hf` / :meth:`LlamaConfig.to_hf` are a plain mapping.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qserve.errors import ConfigError

__all__ = ["LlamaConfig", "RopeScaling", "SUPPORTED_ARCHITECTURES", "preset_names"]

Architecture = Literal["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]
SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
_MODEL_TYPES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}


class RopeScaling(BaseModel):
    """RoPE frequency scaling (the ``rope_scaling`` entry of an HF config).

    - ``linear``: positions are divided by ``factor`` (position interpolation).
    - ``dynamic``: NTK-aware; beyond ``max_position_embeddings`` the base grows with the sequence length.
    - ``llama3``: wavelengths longer than ``original_max_position_embeddings / low_freq_factor`` are divided by
      ``factor``, shorter than ``.../ high_freq_factor`` kept, and the band between interpolated smoothly.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["linear", "dynamic", "llama3"] = Field(description="Scaling rule.")
    factor: float = Field(gt=0, description="Context extension factor.")
    low_freq_factor: float | None = Field(None, gt=0, description="llama3 only.")
    high_freq_factor: float | None = Field(None, gt=0, description="llama3 only.")
    original_max_position_embeddings: int | None = Field(None, gt=0, description="llama3 only.")

    @model_validator(mode="after")
    def _check(self) -> RopeScaling:
        llama3_fields = (self.low_freq_factor, self.high_freq_factor, self.original_max_position_embeddings)
        if self.type == "llama3":
            if any(v is None for v in llama3_fields):
                raise ConfigError(
                    "llama3 rope_scaling needs factor, low_freq_factor, high_freq_factor and "
                    f"original_max_position_embeddings, found {self.model_dump(exclude_none=True)}"
                )
            assert self.low_freq_factor is not None and self.high_freq_factor is not None
            if self.high_freq_factor <= self.low_freq_factor:
                raise ConfigError(
                    f"llama3 rope_scaling needs high_freq_factor > low_freq_factor, found "
                    f"{self.high_freq_factor} <= {self.low_freq_factor}"
                )
        elif any(v is not None for v in llama3_fields):
            raise ConfigError(
                f"{self.type} rope_scaling takes only 'factor', found {self.model_dump(exclude_none=True)}"
            )
        return self


class LlamaConfig(BaseModel):
    """Architecture of one Llama-layout decoder. Frozen; a typo in a field name is a validation error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Architecture = Field(
        "LlamaForCausalLM", description="HF architecture name (sets to_hf's model_type)."
    )
    vocab_size: int = Field(gt=0, description="Token vocabulary size V.")
    hidden_size: int = Field(gt=0, description="Residual width C.")
    intermediate_size: int = Field(gt=0, description="SwiGLU hidden width.")
    num_hidden_layers: int = Field(gt=0, description="Number of decoder layers.")
    num_attention_heads: int = Field(gt=0, description="Query heads Hq.")
    num_key_value_heads: int = Field(gt=0, description="Key/value heads Hkv (GQA: Hq is a multiple of Hkv).")
    head_dim: int = Field(0, ge=0, description="Per-head width D; 0 means hidden_size // num_attention_heads.")
    rms_norm_eps: float = Field(1e-6, gt=0, description="RMSNorm epsilon.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")
    rope_scaling: RopeScaling | None = Field(None, description="RoPE frequency scaling, or None.")
    max_position_embeddings: int = Field(2048, gt=0, description="Trained context length (the serving limit).")
    tie_word_embeddings: bool = Field(False, description="lm_head shares the token embedding matrix.")
    bos_token_id: int | None = Field(None, description="Beginning-of-sequence token.")
    eos_token_id: int | tuple[int, ...] | None = Field(None, description="End-of-sequence token(s).")
    attention_bias: bool = Field(False, description="q/k/v projections have biases (Qwen2).")
    attention_out_bias: bool = Field(False, description="o_proj has a bias (Llama with attention_bias=True).")
    mlp_bias: bool = Field(False, description="gate/up/down projections have biases.")
    initializer_range: float = Field(0.02, gt=0, description="Std of the normal init of linears and embeddings.")

    @model_validator(mode="before")
    @classmethod
    def _default_head_dim(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("head_dim"):
            hidden, heads = data.get("hidden_size"), data.get("num_attention_heads")
            if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
                if hidden % heads:
                    raise ConfigError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
                data = {**data, "head_dim": hidden // heads}
        return data

    @model_validator(mode="after")
    def _check(self) -> LlamaConfig:
        hq, hkv = self.num_attention_heads, self.num_key_value_heads
        if hq % hkv:
            raise ConfigError(f"num_attention_heads {hq} is not a multiple of num_key_value_heads {hkv}")
        if self.head_dim % 2:
            raise ConfigError(f"RoPE needs an even head_dim, found {self.head_dim}")
        eos = self.eos_token_id
        ids = [self.bos_token_id] + (list(eos) if isinstance(eos, tuple) else [eos])
        for tid in ids:
            if tid is not None and not 0 <= tid < self.vocab_size:
                raise ConfigError(f"special token id {tid} is outside the vocabulary [0, {self.vocab_size})")
        return self

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The end-of-sequence ids as a tuple (empty when none)."""
        eos = self.eos_token_id
        return () if eos is None else (eos,) if isinstance(eos, int) else eos

    @property
    def num_kv_groups(self) -> int:
        """Query heads per KV head."""
        return self.num_attention_heads // self.num_key_value_heads

    def num_parameters(self) -> int:
        """Parameter count of :class:`qserve.model.LlamaForCausalLM` (tied embeddings counted once)."""
        c, d, i = self.hidden_size, self.head_dim, self.intermediate_size
        q_out, kv_out = self.num_attention_heads * d, self.num_key_value_heads * d
        attn = c * q_out + 2 * c * kv_out + q_out * c
        attn += (q_out + 2 * kv_out) * self.attention_bias + c * self.attention_out_bias
        mlp = 3 * c * i + (2 * i + c) * self.mlp_bias
        layer = attn + mlp + 2 * c
        embed = self.vocab_size * c * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * layer + embed + c

    @classmethod
    def from_name(cls, name: str) -> LlamaConfig:
        """A named preset (see :func:`preset_names`)."""
        if name not in _PRESETS:
            raise ConfigError(f"unknown LlamaConfig preset {name!r}; expected one of {preset_names()}")
        return cls(**_PRESETS[name])

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        """Map an HF ``config.json`` dict of a Llama / Mistral / Qwen2 causal LM; refuse anything else."""
        archs = hf.get("architectures") or []
        model_type = hf.get("model_type")
        if archs:
            if len(archs) != 1 or archs[0] not in SUPPORTED_ARCHITECTURES:
                raise ConfigError(f"unsupported architecture {archs}; expected one of {SUPPORTED_ARCHITECTURES}")
            arch = archs[0]
        elif model_type in _MODEL_TYPES.values():
            arch = next(a for a, t in _MODEL_TYPES.items() if t == model_type)
        else:
            raise ConfigError(
                f"config has no supported 'architectures' or 'model_type' (found {archs!r}, {model_type!r}); "
                f"expected one of {SUPPORTED_ARCHITECTURES}"
            )
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"only SwiGLU with hidden_act 'silu' is supported, found {act!r}")
        max_pos = int(hf.get("max_position_embeddings", 2048))
        if arch == "Qwen2ForCausalLM" and hf.get("use_sliding_window"):
            raise ConfigError("Qwen2 sliding-window attention (use_sliding_window=true) is not supported")
        window = hf.get("sliding_window")
        if arch == "MistralForCausalLM" and window is not None and window < max_pos:
            # Within `window` tokens full attention equals sliding-window attention, so the model is served exactly
            # up to that context length and longer prompts are refused by the engine's limit.
            max_pos = int(window)
        rope_scaling = _rope_scaling_from_hf(hf.get("rope_scaling"))
        if arch == "Qwen2ForCausalLM":
            qkv_bias, o_bias = True, False
        else:
            qkv_bias = o_bias = bool(hf.get("attention_bias", False))
        eos = hf.get("eos_token_id")
        fields: dict[str, Any] = {
            "architecture": arch,
            "vocab_size": hf.get("vocab_size"),
            "hidden_size": hf.get("hidden_size"),
            "intermediate_size": hf.get("intermediate_size"),
            "num_hidden_layers": hf.get("num_hidden_layers"),
            "num_attention_heads": hf.get("num_attention_heads"),
            "num_key_value_heads": hf.get("num_key_value_heads", hf.get("num_attention_heads")),
            "head_dim": hf.get("head_dim") or 0,
            "rms_norm_eps": hf.get("rms_norm_eps", 1e-6),
            "rope_theta": hf.get("rope_theta", 10000.0),
            "rope_scaling": rope_scaling,
            "max_position_embeddings": max_pos,
            "tie_word_embeddings": hf.get("tie_word_embeddings", False),
            "bos_token_id": hf.get("bos_token_id"),
            "eos_token_id": tuple(eos) if isinstance(eos, list) else eos,
            "attention_bias": qkv_bias,
            "attention_out_bias": o_bias,
            "mlp_bias": hf.get("mlp_bias", False),
            "initializer_range": hf.get("initializer_range", 0.02),
        }
        try:
            return cls(**fields)
        except ValidationError as e:
            raise ConfigError(f"invalid {arch} config: {e}") from e

    def to_hf(self) -> dict[str, Any]:
        """The HF ``config.json`` dict; ``LlamaConfig.from_hf(c.to_hf()) == c``."""
        hf: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": _MODEL_TYPES[self.architecture],
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            "mlp_bias": self.mlp_bias,
            "initializer_range": self.initializer_range,
        }
        if self.rope_scaling is not None:
            rs = self.rope_scaling.model_dump(exclude_none=True)
            hf["rope_scaling"] = {"rope_type": rs.pop("type"), **rs}
        if self.architecture == "Qwen2ForCausalLM":
            if not self.attention_bias or self.attention_out_bias:
                raise ConfigError("a Qwen2 config has q/k/v biases and no o_proj bias; this one cannot be written")
            hf["use_sliding_window"] = False
        else:
            if self.attention_bias != self.attention_out_bias:
                raise ConfigError(
                    f"{self.architecture} has one attention_bias flag for q/k/v/o; found q/k/v "
                    f"{self.attention_bias} and o {self.attention_out_bias} (use the Qwen2 architecture for q/k/v only)"
                )
            hf["attention_bias"] = self.attention_bias
        if self.architecture == "MistralForCausalLM":
            hf["sliding_window"] = None
        return hf


def _rope_scaling_from_hf(rs: Any) -> RopeScaling | None:
    if rs is None:
        return None
    if not isinstance(rs, dict):
        raise ConfigError(f"rope_scaling must be a dict or null, found {rs!r}")
    rs = dict(rs)
    kind = rs.pop("rope_type", None) or rs.pop("type", None)
    rs.pop("type", None)
    if kind == "default":
        return None
    if kind not in ("linear", "dynamic", "llama3"):
        raise ConfigError(f"unsupported rope_scaling type {kind!r}; expected 'linear', 'dynamic' or 'llama3'")
    keep = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    unknown = sorted(k for k in rs if k not in keep)
    if unknown:
        raise ConfigError(f"rope_scaling {kind!r} has unsupported fields {unknown}")
    try:
        return RopeScaling(type=kind, **rs)
    except ValidationError as e:
        raise ConfigError(f"invalid rope_scaling {kind!r}: {e}") from e


_PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: every code path (GQA with 2 groups, untied head) at a size that runs in milliseconds.
    "tiny": {
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    # The model bench/train_tiny_llama.py trains on the stdlib text in minutes on a shared 2-core CPU (vocab = its
    # byte-level BPE's, 2048; ~1.05M parameters). Widths are multiples of 128 so that g128 W4 applies everywhere.
    "small": {
        "vocab_size": 2048,
        "hidden_size": 128,
        "intermediate_size": 384,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
}


def preset_names() -> list[str]:
    """Names accepted by :meth:`LlamaConfig.from_name`."""
    return sorted(_PRESETS)
