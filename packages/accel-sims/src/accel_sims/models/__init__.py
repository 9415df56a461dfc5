"""Minimal PyTorch BERT, GPT-2 and Llama in the Hugging Face key layout, loaded from local folders, whose attention is
a pluggable function (`set_attention` / `use_attention`), so SpAtten (arXiv:2012.09852, Sec. 3) runs on real models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from accel_sims.errors import ModelLoadError
from accel_sims.models.attention import AttentionFn, HasAttention, TokenSelector, attention_bias, dense_attention
from accel_sims.models.bert import BertConfig, BertModel, BertOutput, load_bert, mean_pool
from accel_sims.models.gpt2 import CausalLMOutput, GPT2Config, GPT2Model, KVCache, load_gpt2
from accel_sims.models.llama import LlamaConfig, LlamaModel, load_llama
from accel_sims.models.loading import read_config

Model = BertModel | GPT2Model | LlamaModel

__all__ = [
    "AttentionFn",
    "BertConfig",
    "BertModel",
    "BertOutput",
    "CausalLMOutput",
    "GPT2Config",
    "GPT2Model",
    "HasAttention",
    "KVCache",
    "LlamaConfig",
    "LlamaModel",
    "Model",
    "TokenSelector",
    "attention_bias",
    "dense_attention",
    "load_bert",
    "load_gpt2",
    "load_llama",
    "load_model",
    "mean_pool",
    "save_model",
]


def load_model(folder: str | Path) -> Model:
    """Load a local Hugging Face folder as BERT, GPT-2 or Llama, chosen by `model_type` in its config.json."""
    kind = read_config(folder).get("model_type")
    loaders: dict[str, Callable[[str | Path], Model]] = {"bert": load_bert, "gpt2": load_gpt2, "llama": load_llama}
    if kind not in loaders:
        raise ModelLoadError(f"{Path(folder) / 'config.json'}: model_type {kind!r} is not one of {sorted(loaders)}")
    return loaders[kind](folder)


def save_model(model: Model, folder: str | Path) -> Path:
    """Write `config.json` and `model.safetensors` in the Hugging Face layout (used by tests and examples)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2))
    state = {k: v.detach().contiguous() for k, v in nn.Module.state_dict(model).items()}
    save_file(state, str(folder / "model.safetensors"))
    return folder
