"""A minimal BERT encoder in the Hugging Face `BertModel` key layout (post-LN blocks), e.g. all-MiniLM-L6-v2.

SpAtten (arXiv:2012.09852), Sec. 3.1 and 5: BERT is the paper's discriminative benchmark; cascade token pruning
removes tokens from the keys, values *and* queries (hidden states) of every later layer, which is why the encoder asks
its attention function (when it is a `TokenSelector`) which tokens each layer keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from accel_sims.errors import ModelLoadError
from accel_sims.models.attention import HasAttention, TokenSelector
from accel_sims.models.loading import config_value, load_strict, read_config


class BertConfig(BaseModel):
    """The fields of a BERT `config.json` the encoder uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vocab_size: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    max_position_embeddings: int = Field(default=512, ge=1)
    type_vocab_size: int = Field(default=2, ge=1)
    layer_norm_eps: float = Field(default=1e-12, gt=0)

    @classmethod
    def from_hf(cls, raw: dict[str, Any], folder: str | Path = ".") -> BertConfig:
        """Read a Hugging Face BERT config dict; unsupported variants are a ModelLoadError naming the field."""
        act = config_value(raw, "hidden_act", folder, "gelu")
        pos = config_value(raw, "position_embedding_type", folder, "absolute")
        if act != "gelu" or pos != "absolute":
            raise ModelLoadError(
                f"{Path(folder) / 'config.json'}: expected hidden_act 'gelu' and position_embedding_type 'absolute', "
                f"found {act!r} and {pos!r}"
            )
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        fields = {f: config_value(raw, f, folder) for f in required}
        for f, default in (("max_position_embeddings", 512), ("type_vocab_size", 2), ("layer_norm_eps", 1e-12)):
            fields[f] = config_value(raw, f, folder, default)
        cfg = cls.model_validate(fields)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ModelLoadError(
                f"{Path(folder) / 'config.json'}: hidden_size {cfg.hidden_size} is not a multiple of "
                f"num_attention_heads {cfg.num_attention_heads}"
            )
        return cfg

    def to_hf(self) -> dict[str, Any]:
        """This config as a Hugging Face `config.json` dict."""
        return {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute", **self.model_dump()}


class BertOutput(NamedTuple):
    """Hidden states of the last layer `[B, L', hidden]` and which of those positions are real tokens `[B, L']`.

    With cascade token pruning L' < L: `positions` `[B, L']` gives each row's original token index (-1 on padding).
    """

    last_hidden_state: Tensor
    mask: Tensor
    positions: Tensor


class _Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: Tensor, types: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _DenseNorm(nn.Module):
    """`dense` then dropout-free residual add and `LayerNorm` (HF's BertSelfOutput / BertOutput)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.add_module("self", _SelfAttention(cfg))  # HF key `attention.self.*`
        self.output = _DenseNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    @property
    def qkv(self) -> _SelfAttention:
        module = self._modules["self"]
        assert isinstance(module, _SelfAttention)
        return module


class _Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)


class _Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class BertModel(nn.Module, HasAttention):
    """BERT encoder (no pooler); `forward(input_ids, attention_mask)` -> `BertOutput`."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.set_attention(None)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> BertOutput:
        b, n = input_ids.shape
        mask = torch.ones(b, n, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        mask = mask.to(input_ids.device)
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.embeddings(input_ids, types)
        positions = torch.where(mask, torch.arange(n, device=x.device)[None].expand(b, n), -1)
        h, d = self.config.num_attention_heads, self.config.hidden_size // self.config.num_attention_heads
        fn = self.attention_fn
        for i, layer in enumerate(self.encoder.layer):
            assert isinstance(layer, _Layer)
            if isinstance(fn, TokenSelector):
                picked = fn.select_tokens(i, mask)
                if picked is not None:  # cascade: the dropped tokens leave queries, keys and values for good
                    index, mask = picked
                    x = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))
                    positions = torch.where(mask, torch.gather(positions, 1, index), -1)
            qkv = layer.attention.qkv
            bq, lq = x.shape[:2]
            q, k, v = (m(x).view(bq, lq, h, d).transpose(1, 2) for m in (qkv.query, qkv.key, qkv.value))
            a = fn(q, k, v, layer=i, key_mask=mask, causal=False).transpose(1, 2).reshape(bq, lq, h * d)
            x = layer.attention.output(a, x)
            x = layer.output(F.gelu(layer.intermediate.dense(x)), x)
        return BertOutput(x, mask, positions)


def mean_pool(hidden: Tensor, mask: Tensor, normalize: bool = True) -> Tensor:
    """Mean over real tokens (the sentence-transformers pooling of all-MiniLM-L6-v2), L2-normalised by default."""
    m = mask.to(hidden.dtype)[..., None]
    out = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return F.normalize(out, dim=-1) if normalize else out


def load_bert(folder: str | Path) -> BertModel:
    """A `BertModel` from a local Hugging Face folder (BertModel keys, or a task model's `bert.*` keys)."""
    raw = read_config(folder)
    if raw.get("model_type", "bert") != "bert":
        raise ModelLoadError(f"{Path(folder) / 'config.json'}: model_type {raw.get('model_type')!r} is not 'bert'")
    model = BertModel(BertConfig.from_hf(raw, folder))
    load_strict(model, folder, prefixes=("bert.",), ignore=("position_ids", "pooler.", "cls.", "classifier."))
    return model.eval()
