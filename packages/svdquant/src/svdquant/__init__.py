"""svdquant: 4-bit weights and activations with a 16-bit low-rank branch (work in progress).

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models"
(ICLR 2025). This release holds the number formats (INT4 in groups of 64, NVFP4), the calibration
algorithm (SVD-aware smoothing search, iterative low-rank branch), the torchao-style module swap
``quantize_(model, SVDQuantConfig(...), calibration=...)``, one-file checkpoints and LoRA merging
without re-quantization; the fused Triton kernels and the CLI follow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from svdquant.errors import CheckpointError, ConfigError, InputError, QuantizationError, SVDQuantError

# Names from modules that import torch load on first access (PEP 562), so `import svdquant` -- and
# a future `svdquant --help` -- stays free of the torch import.
_LAZY: dict[str, str] = {
    "Format": "svdquant.formats",
    "E2M1_VALUES": "svdquant.formats",
    "FP4_MAX": "svdquant.formats",
    "E4M3_MAX": "svdquant.formats",
    "pack_int4": "svdquant.formats",
    "unpack_int4": "svdquant.formats",
    "Int4Tensor": "svdquant.formats",
    "quantize_int4": "svdquant.formats",
    "dequantize_int4": "svdquant.formats",
    "NVFP4Tensor": "svdquant.formats",
    "quantize_nvfp4": "svdquant.formats",
    "dequantize_nvfp4": "svdquant.formats",
    "quantize_activation": "svdquant.formats",
    "dequantize_activation": "svdquant.formats",
    "fake_quantize_weight": "svdquant.formats",
    "fake_quantize_activation": "svdquant.formats",
    "quantize_weight": "svdquant.formats",
    "QuantizedWeight": "svdquant.formats",
    "LowRankResult": "svdquant.low_rank",
    "SharedLowRankResult": "svdquant.low_rank",
    "low_rank_branch": "svdquant.low_rank",
    "low_rank_branch_shared": "svdquant.low_rank",
    "SmoothingResult": "svdquant.smoothing",
    "smooth_scale": "svdquant.smoothing",
    "smoothquant_scale": "svdquant.smoothing",
    "alpha_beta_grid": "svdquant.smoothing",
    "fake_quant_linear": "svdquant.smoothing",
    "search_smoothing": "svdquant.smoothing",
    "SVDQuantConfig": "svdquant.config",
    "LayerSettings": "svdquant.config",
    "SVDQLinear": "svdquant.svdq_linear",
    "SVDQPointwiseConv": "svdquant.svdq_pointwise",
    "SVDQSharedLinear": "svdquant.svdq_shared",
    "SharedInput": "svdquant.svdq_shared",
    "Calibration": "svdquant.calibration",
    "find_blocks": "svdquant.calibration",
    "quantize_": "svdquant.quantize",
    "LayerReport": "svdquant.quantize",
    "target_modules": "svdquant.quantize",
    "save_quantized": "svdquant.checkpoint",
    "load_quantized": "svdquant.checkpoint",
    "apply_lora": "svdquant.lora",
    "set_lora_strength": "svdquant.lora",
    "remove_lora": "svdquant.lora",
    "reset_lora": "svdquant.lora",
    "applied_loras": "svdquant.lora",
    "load_lora_state_dict": "svdquant.lora",
    "LoraHandle": "svdquant.lora",
}

if TYPE_CHECKING:
    from svdquant.calibration import Calibration, find_blocks
    from svdquant.checkpoint import load_quantized, save_quantized
    from svdquant.config import LayerSettings, SVDQuantConfig
    from svdquant.formats import (
        E2M1_VALUES,
        E4M3_MAX,
        FP4_MAX,
        Format,
        Int4Tensor,
        NVFP4Tensor,
        QuantizedWeight,
        dequantize_activation,
        dequantize_int4,
        dequantize_nvfp4,
        fake_quantize_activation,
        fake_quantize_weight,
        pack_int4,
        quantize_activation,
        quantize_int4,
        quantize_nvfp4,
        quantize_weight,
        unpack_int4,
    )
    from svdquant.lora import (
        LoraHandle,
        applied_loras,
        apply_lora,
        load_lora_state_dict,
        remove_lora,
        reset_lora,
        set_lora_strength,
    )
    from svdquant.low_rank import LowRankResult, SharedLowRankResult, low_rank_branch, low_rank_branch_shared
    from svdquant.quantize import LayerReport, quantize_, target_modules
    from svdquant.smoothing import (
        SmoothingResult,
        alpha_beta_grid,
        fake_quant_linear,
        search_smoothing,
        smooth_scale,
        smoothquant_scale,
    )
    from svdquant.svdq_linear import SVDQLinear
    from svdquant.svdq_pointwise import SVDQPointwiseConv
    from svdquant.svdq_shared import SharedInput, SVDQSharedLinear


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'svdquant' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "E2M1_VALUES",
    "E4M3_MAX",
    "FP4_MAX",
    "Format",
    "InputError",
    "Int4Tensor",
    "LayerReport",
    "LayerSettings",
    "LoraHandle",
    "LowRankResult",
    "NVFP4Tensor",
    "QuantizationError",
    "QuantizedWeight",
    "SVDQLinear",
    "SVDQPointwiseConv",
    "SVDQSharedLinear",
    "SharedInput",
    "Calibration",
    "find_blocks",
    "SVDQuantConfig",
    "SVDQuantError",
    "SharedLowRankResult",
    "SmoothingResult",
    "alpha_beta_grid",
    "applied_loras",
    "apply_lora",
    "dequantize_activation",
    "dequantize_int4",
    "dequantize_nvfp4",
    "fake_quant_linear",
    "fake_quantize_activation",
    "fake_quantize_weight",
    "load_lora_state_dict",
    "load_quantized",
    "low_rank_branch",
    "low_rank_branch_shared",
    "pack_int4",
    "quantize_",
    "quantize_activation",
    "quantize_int4",
    "quantize_nvfp4",
    "quantize_weight",
    "remove_lora",
    "reset_lora",
    "save_quantized",
    "search_smoothing",
    "set_lora_strength",
    "smooth_scale",
    "smoothquant_scale",
    "target_modules",
    "unpack_int4",
    "__version__",
]
