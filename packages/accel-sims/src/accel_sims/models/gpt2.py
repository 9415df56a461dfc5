"""A minimal GPT-2 decoder in the Hugging Face key layout: pre-LN blocks, Conv1D weights, lm head tied to `wte`.

SpAtten (arXiv:2012.09852), Sec. 3.1 and 5: GPT-2 is the paper's generative benchmark. Generation runs one query per
step against a growing KV cache, which is where the start / important / recent split of cascade token pruning acts; the
model keeps its cache and hands the whole cache to the attention function, which decides which keys take part.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from accel_sims.errors import ModelLoadError
from accel_sims.models.attention import HasAttention
from accel_sims.models.loading import config_value, load_strict, read_config

KVCache = list[tuple[Tensor, Tensor]]


class GPT2Config(BaseModel):
    """The fields of a GPT-2 `config.json` the decoder uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vocab_size: int = Field(ge=1)
    n_positions: int = Field(ge=1)
    n_embd: int = Field(ge=1)
    n_layer: int = Field(ge=1)
    n_head: int = Field(ge=1)
    n_inner: int | None = Field(default=None, ge=1, description="MLP width; None means 4 * n_embd.")
    layer_norm_epsilon: float = Field(default=1e-5, gt=0)
    activation_function: str = Field(default="gelu_new")

    @classmethod
    def from_hf(cls, raw: dict[str, Any], folder: str | Path = ".") -> GPT2Config:
        """Read a Hugging Face GPT-2 config dict."""
        fields = {f: config_value(raw, f, folder) for f in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
        fields["n_inner"] = raw.get("n_inner")
        fields["layer_norm_epsilon"] = config_value(raw, "layer_norm_epsilon", folder, 1e-5)
        fields["activation_function"] = config_value(raw, "activation_function", folder, "gelu_new")
        if fields["activation_function"] not in _ACT:
            raise ModelLoadError(
                f"{Path(folder) / 'config.json'}: activation_function {fields['activation_function']!r} is not one "
                f"of {sorted(_ACT)}"
            )
        cfg = cls.model_validate(fields)
        if cfg.n_embd % cfg.n_head:
            raise ModelLoadError(f"{Path(folder) / 'config.json'}: n_embd {cfg.n_embd} not a multiple of n_head")
        return cfg

    def to_hf(self) -> dict[str, Any]:
        """This config as a Hugging Face `config.json` dict."""
        return {"model_type": "gpt2", **self.model_dump()}


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


_ACT: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu": F.gelu,
    "relu": F.relu,
}


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored `[in, out]`, y = x @ W + b."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class _Attn(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_attn, self.c_proj = Conv1D(d, 3 * d), Conv1D(d, d)


class _MLP(nn.Module):
    def __init__(self, d: int, inner: int) -> None:
        super().__init__()
        self.c_fc, self.c_proj = Conv1D(d, inner), Conv1D(inner, d)


class _Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        d = cfg.n_embd
        self.ln_1 = nn.LayerNorm(d, eps=cfg.layer_norm_epsilon)
        self.attn = _Attn(d)
        self.ln_2 = nn.LayerNorm(d, eps=cfg.layer_norm_epsilon)
        self.mlp = _MLP(d, cfg.n_inner or 4 * d)


class CausalLMOutput(NamedTuple):
    """Next-token logits `[B, L, vocab]` and the KV cache (per layer `(k, v)` `[B, H_kv, L_total, D]`)."""

    logits: Tensor
    past_key_values: KVCache


class GPT2Model(nn.Module, HasAttention):
    """GPT-2 with its tied lm head; `forward(input_ids, past_key_values=None)` -> `CausalLMOutput`."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.set_attention(None)

    @property
    def num_layers(self) -> int:
        return self.config.n_layer

    @property
    def num_heads(self) -> int:
        return self.config.n_head

    def forward(self, input_ids: Tensor, past_key_values: KVCache | None = None) -> CausalLMOutput:
        b, n = input_ids.shape
        start = 0 if not past_key_values else past_key_values[0][0].shape[2]
        if start + n > self.config.n_positions:
            raise ValueError(f"sequence of {start + n} tokens exceeds n_positions {self.config.n_positions}")
        x = self.wte(input_ids) + self.wpe(torch.arange(start, start + n, device=input_ids.device))[None]
        h, d = self.config.n_head, self.config.n_embd // self.config.n_head
        act = _ACT[self.config.activation_function]
        cache: KVCache = []
        for i, block in enumerate(self.h):
            assert isinstance(block, _Block)
            q, k, v = block.attn.c_attn(block.ln_1(x)).view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
            if past_key_values:
                k = torch.cat([past_key_values[i][0], k], dim=2)
                v = torch.cat([past_key_values[i][1], v], dim=2)
            cache.append((k, v))
            a = self.attention_fn(q, k, v, layer=i, key_mask=None, causal=True)
            x = x + block.attn.c_proj(a.transpose(1, 2).reshape(b, n, h * d))
            x = x + block.mlp.c_proj(act(block.mlp.c_fc(block.ln_2(x))))
        return CausalLMOutput(self.ln_f(x) @ self.wte.weight.T, cache)


def load_gpt2(folder: str | Path) -> GPT2Model:
    """A `GPT2Model` from a local Hugging Face folder (GPT2Model keys or GPT2LMHeadModel's `transformer.*` keys)."""
    raw = read_config(folder)
    if raw.get("model_type", "gpt2") != "gpt2":
        raise ModelLoadError(f"{Path(folder) / 'config.json'}: model_type {raw.get('model_type')!r} is not 'gpt2'")
    model = GPT2Model(GPT2Config.from_hf(raw, folder))
    # attn.bias / attn.masked_bias are causal-mask buffers; lm_head.weight is the tied copy of wte.
    load_strict(model, folder, prefixes=("transformer.",), ignore=("attn.bias", "attn.masked_bias", "lm_head."))
    return model.eval()
