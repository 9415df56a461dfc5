"""A minimal Llama decoder in the Hugging Face key layout: RMSNorm, rotary positions, grouped-query attention, SwiGLU.

SpAtten (arXiv:2012.09852) predates Llama; its LLM follow-up (`spatten_llm/kv_cache_token_pruning.py` in
mit-han-lab/spatten) prunes the KV cache of such models with the start / important / recent split. Grouped K/V heads
are expanded to the query heads before the attention function is called, so it sees one `[B, H, L, D]` layout for
every model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from accel_sims.errors import ModelLoadError
from accel_sims.models.attention import HasAttention
from accel_sims.models.gpt2 import CausalLMOutput, KVCache
from accel_sims.models.loading import config_value, load_strict, read_config


class LlamaConfig(BaseModel):
    """The fields of a Llama `config.json` the decoder uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vocab_size: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    max_position_embeddings: int = Field(default=2048, ge=1)
    rms_norm_eps: float = Field(default=1e-6, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False

    @classmethod
    def from_hf(cls, raw: dict[str, Any], folder: str | Path = ".") -> LlamaConfig:
        """Read a Hugging Face Llama config dict; rope scaling and non-SiLU activations are refused by name."""
        where = Path(folder) / "config.json"
        if raw.get("rope_scaling") is not None:
            raise ModelLoadError(f"{where}: rope_scaling {raw['rope_scaling']!r} is not supported (expected null)")
        if config_value(raw, "hidden_act", folder, "silu") != "silu":
            raise ModelLoadError(f"{where}: hidden_act {raw['hidden_act']!r} is not supported (expected 'silu')")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        fields: dict[str, Any] = {f: config_value(raw, f, folder) for f in required}
        fields["num_key_value_heads"] = config_value(raw, "num_key_value_heads", folder, fields["num_attention_heads"])
        if fields["hidden_size"] % fields["num_attention_heads"] and "head_dim" not in raw:
            raise ModelLoadError(f"{where}: hidden_size is not a multiple of num_attention_heads and no head_dim")
        fields["head_dim"] = config_value(
            raw, "head_dim", folder, fields["hidden_size"] // fields["num_attention_heads"]
        )
        for f, default in (
            ("max_position_embeddings", 2048),
            ("rms_norm_eps", 1e-6),
            ("rope_theta", 10000.0),
            ("attention_bias", False),
            ("mlp_bias", False),
            ("tie_word_embeddings", False),
        ):
            fields[f] = config_value(raw, f, folder, default)
        cfg = cls.model_validate(fields)
        if cfg.num_attention_heads % cfg.num_key_value_heads:
            raise ModelLoadError(
                f"{where}: num_attention_heads {cfg.num_attention_heads} is not a multiple of num_key_value_heads "
                f"{cfg.num_key_value_heads}"
            )
        return cfg

    def to_hf(self) -> dict[str, Any]:
        """This config as a Hugging Face `config.json` dict."""
        return {"model_type": "llama", "hidden_act": "silu", "rope_scaling": None, **self.model_dump()}


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """Rotary embedding in HF's half-split layout: x `[B, H, L, D]`, positions `[L]`."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    ang = positions.float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class _Attn(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        hq, hk = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, hq, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, hk, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, hk, bias=c.attention_bias)
        self.o_proj = nn.Linear(hq, c.hidden_size, bias=c.attention_bias)


class _MLP(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)


class _Layer(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = _Attn(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = _MLP(c)


class _Body(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class LlamaModel(nn.Module, HasAttention):
    """Llama with its lm head; `forward(input_ids, past_key_values=None)` -> `CausalLMOutput`."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = _Body(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, False)
        self.set_attention(None)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    def forward(self, input_ids: Tensor, past_key_values: KVCache | None = None) -> CausalLMOutput:
        c = self.config
        b, n = input_ids.shape
        start = 0 if not past_key_values else past_key_values[0][0].shape[2]
        pos = torch.arange(start, start + n, device=input_ids.device)
        x = self.model.embed_tokens(input_ids)
        group = c.num_attention_heads // c.num_key_value_heads
        cache: KVCache = []
        for i, layer in enumerate(self.model.layers):
            assert isinstance(layer, _Layer)
            at = layer.self_attn
            y = layer.input_layernorm(x)
            q = at.q_proj(y).view(b, n, c.num_attention_heads, c.head_dim).transpose(1, 2)
            k = at.k_proj(y).view(b, n, c.num_key_value_heads, c.head_dim).transpose(1, 2)
            v = at.v_proj(y).view(b, n, c.num_key_value_heads, c.head_dim).transpose(1, 2)
            q, k = rope(q, pos, c.rope_theta), rope(k, pos, c.rope_theta)
            if past_key_values:
                k = torch.cat([past_key_values[i][0], k], dim=2)
                v = torch.cat([past_key_values[i][1], v], dim=2)
            cache.append((k, v))
            ke, ve = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            a = self.attention_fn(q, ke, ve, layer=i, key_mask=None, causal=True)
            x = x + at.o_proj(a.transpose(1, 2).reshape(b, n, c.num_attention_heads * c.head_dim))
            z = layer.post_attention_layernorm(x)
            x = x + layer.mlp.down_proj(F.silu(layer.mlp.gate_proj(z)) * layer.mlp.up_proj(z))
        x = self.model.norm(x)
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return CausalLMOutput(x @ weight.T, cache)


def load_llama(folder: str | Path) -> LlamaModel:
    """A `LlamaModel` from a local Hugging Face folder (LlamaForCausalLM keys)."""
    raw = read_config(folder)
    if raw.get("model_type", "llama") != "llama":
        raise ModelLoadError(f"{Path(folder) / 'config.json'}: model_type {raw.get('model_type')!r} is not 'llama'")
    cfg = LlamaConfig.from_hf(raw, folder)
    model = LlamaModel(cfg)
    ignore = ("rotary_emb.inv_freq",) + (("lm_head.",) if cfg.tie_word_embeddings else ())
    load_strict(model, folder, ignore=ignore)
    return model.eval()
