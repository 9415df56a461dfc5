"""Tiny Llama-layout configs and models shared by the qserve tests (QServe, Lin et al., arXiv 2405.04532).

Hidden 128 with 4 query heads over 2 KV heads (head_dim 32) is the smallest shape on which every QoQ path runs:
one 128-channel group per row for g128 weights and a power-of-two head_dim >= 16 for the KV4 kernel.
"""

from __future__ import annotations

from typing import Any

import torch

from qserve.config import LlamaConfig
from qserve.model import LlamaForCausalLM

__all__ = ["tiny_config", "tiny_model"]


def tiny_config(vocab_size: int, **overrides: Any) -> LlamaConfig:
    """Two layers, hidden 128, MLP 256, GQA 4/2; ``overrides`` replace or add ``LlamaConfig`` fields."""
    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    return LlamaConfig(**{**fields, **overrides})


def tiny_model(vocab_size: int, seed: int = 0, **overrides: Any) -> LlamaForCausalLM:
    """A randomly initialised :func:`tiny_config` model in eval mode, seeded by ``seed`` (torch's global RNG)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(vocab_size, **overrides)).eval()
