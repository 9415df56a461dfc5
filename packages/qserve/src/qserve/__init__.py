"""QServe / QoQ in PyTorch: W4A8KV4 quantization, INT8 kernels and a paged-KV engine for Llama-family LLMs.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532).
The public API is re-exported here lazily, so ``import qserve`` stays light (no triton import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qserve.errors import CheckpointError, ConfigError, EngineError, InputError, QServeError, QuantizationError

_LAZY: dict[str, str] = {
    "LlamaConfig": "qserve.config",
    "RopeScaling": "qserve.config",
    "preset_names": "qserve.config",
    "AttentionCache": "qserve.model",
    "DenseKVCache": "qserve.model",
    "LlamaForCausalLM": "qserve.model",
    "RMSNorm": "qserve.model",
    "generate_greedy": "qserve.model",
    "load_config": "qserve.loading",
    "load_model": "qserve.loading",
    "save_model": "qserve.loading",
    "Tokenizer": "qserve.tokenizer",
    "load_tokenizer": "qserve.tokenizer",
    "train_bpe_tokenizer": "qserve.tokenizer",
    "load_token_ids": "qserve.evaluation",
    "perplexity": "qserve.evaluation",
    "unigram_perplexity": "qserve.evaluation",
    "stdlib_splits": "qserve.text_data",
    "write_text_file": "qserve.text_data",
    "QoQConfig": "qserve.qoq",
    "QuantizationReport": "qserve.qoq",
    "calibration_windows": "qserve.qoq",
    "quantize_": "qserve.qoq",
    "load_quantized": "qserve.quant_checkpoint",
    "save_quantized": "qserve.quant_checkpoint",
    "KVQuantizer": "qserve.quant.kv",
    "W4A8Linear": "qserve.quant.w4a8_linear",
    "W8A8Linear": "qserve.quant.w4a8_linear",
    "Engine": "qserve.engine",
    "PagedKVCache": "qserve.engine",
    "RequestOutput": "qserve.engine",
    "SamplingParams": "qserve.engine",
    "kv_bytes_per_token": "qserve.engine",
    "pages_for_budget": "qserve.engine",
}

if TYPE_CHECKING:
    from qserve.config import LlamaConfig, RopeScaling, preset_names
    from qserve.engine import Engine, PagedKVCache, RequestOutput, SamplingParams, kv_bytes_per_token, pages_for_budget
    from qserve.evaluation import load_token_ids, perplexity, unigram_perplexity
    from qserve.loading import load_config, load_model, save_model
    from qserve.model import AttentionCache, DenseKVCache, LlamaForCausalLM, RMSNorm, generate_greedy
    from qserve.qoq import QoQConfig, QuantizationReport, calibration_windows, quantize_
    from qserve.quant.kv import KVQuantizer
    from qserve.quant.w4a8_linear import W4A8Linear, W8A8Linear
    from qserve.quant_checkpoint import load_quantized, save_quantized
    from qserve.text_data import stdlib_splits, write_text_file
    from qserve.tokenizer import Tokenizer, load_tokenizer, train_bpe_tokenizer

__all__ = [
    "AttentionCache",
    "CheckpointError",
    "ConfigError",
    "DenseKVCache",
    "Engine",
    "EngineError",
    "InputError",
    "KVQuantizer",
    "LlamaConfig",
    "LlamaForCausalLM",
    "PagedKVCache",
    "QServeError",
    "QoQConfig",
    "QuantizationError",
    "QuantizationReport",
    "RMSNorm",
    "RequestOutput",
    "RopeScaling",
    "SamplingParams",
    "Tokenizer",
    "W4A8Linear",
    "W8A8Linear",
    "calibration_windows",
    "generate_greedy",
    "kv_bytes_per_token",
    "load_config",
    "load_model",
    "load_quantized",
    "load_token_ids",
    "load_tokenizer",
    "pages_for_budget",
    "perplexity",
    "preset_names",
    "quantize_",
    "save_model",
    "save_quantized",
    "stdlib_splits",
    "train_bpe_tokenizer",
    "unigram_perplexity",
    "write_text_file",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.0.1"
