"""linear-dit: SANA's Linear DiT in plain PyTorch.

Xie et al., "SANA: Efficient High-Resolution Image Synthesis with Linear Diffusion Transformers"
(ICLR 2025) and "SANA 1.5" (ICML 2025): ReLU linear attention, Mix-FFN, AdaLN-single, the
Flow-DPM-Solver, flow-matching training, and loading of the released checkpoints in every layout.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from linear_dit.config import LinearDiTConfig, preset_names
from linear_dit.errors import CheckpointError, ConfigError, InputError, LinearDiTError, TrainingError

# Names from modules that import torch load on first access (PEP 562), so `import linear_dit` --
# and with it `linear-dit --help` -- stays free of the torch import. Add such a public name to
# _LAZY (and to the TYPE_CHECKING block and __all__), never as a top-level import.
_LAZY: dict[str, str] = {
    "LinearDiT": "linear_dit.linear_dit",
    "LinearDiTBlock": "linear_dit.linear_dit",
    "load": "linear_dit.checkpoint",
    "save": "linear_dit.checkpoint",
    "load_state_dict": "linear_dit.checkpoint",
    "detect_layout": "linear_dit.checkpoint",
    "convert": "linear_dit.checkpoint",
    "LoadedState": "linear_dit.checkpoint",
    "sample": "linear_dit.sampling",
    "cfg_denoiser": "linear_dit.sampling",
    "flow_sigmas": "linear_dit.sampling",
    "flow_timesteps": "linear_dit.sampling",
    "shift_timesteps": "linear_dit.sampling",
    "FlowDPMSolver": "linear_dit.flow_dpm_solver",
    "flow_dpm_solver_sample": "linear_dit.flow_dpm_solver",
    "flow_euler_sample": "linear_dit.flow_euler",
    "flow_matching_loss": "linear_dit.flow_matching",
    "sample_flow_timesteps": "linear_dit.flow_matching",
    "EMA": "linear_dit.ema",
    "TrainConfig": "linear_dit.training",
    "TrainResult": "linear_dit.training",
    "train": "linear_dit.training",
    "validation_loss": "linear_dit.training",
    "LatentDataset": "linear_dit.data",
    "load_latent_dataset": "linear_dit.data",
    "save_latent_dataset": "linear_dit.data",
    "make_synthetic_dataset": "linear_dit.data",
    "QualityReport": "linear_dit.quality",
    "evaluate_quality": "linear_dit.quality",
    "TextEmbeddings": "linear_dit.text_embeddings",
    "load_text_embeddings": "linear_dit.text_embeddings",
    "save_text_embeddings": "linear_dit.text_embeddings",
    "count_flops": "linear_dit.flops",
    "analytic_flops": "linear_dit.flops",
    "latent_size": "linear_dit.flops",
}

if TYPE_CHECKING:
    from linear_dit.checkpoint import LoadedState, convert, detect_layout, load, load_state_dict, save
    from linear_dit.data import LatentDataset, load_latent_dataset, make_synthetic_dataset, save_latent_dataset
    from linear_dit.ema import EMA
    from linear_dit.flops import analytic_flops, count_flops, latent_size
    from linear_dit.flow_dpm_solver import FlowDPMSolver, flow_dpm_solver_sample
    from linear_dit.flow_euler import flow_euler_sample
    from linear_dit.flow_matching import flow_matching_loss, sample_flow_timesteps
    from linear_dit.linear_dit import LinearDiT, LinearDiTBlock
    from linear_dit.quality import QualityReport, evaluate_quality
    from linear_dit.sampling import cfg_denoiser, flow_sigmas, flow_timesteps, sample, shift_timesteps
    from linear_dit.text_embeddings import TextEmbeddings, load_text_embeddings, save_text_embeddings
    from linear_dit.training import TrainConfig, TrainResult, train, validation_loss


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'linear_dit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EMA",
    "FlowDPMSolver",
    "InputError",
    "LatentDataset",
    "LinearDiT",
    "LinearDiTBlock",
    "LinearDiTConfig",
    "LinearDiTError",
    "LoadedState",
    "QualityReport",
    "TextEmbeddings",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "analytic_flops",
    "cfg_denoiser",
    "convert",
    "count_flops",
    "detect_layout",
    "evaluate_quality",
    "flow_dpm_solver_sample",
    "flow_euler_sample",
    "flow_matching_loss",
    "flow_sigmas",
    "flow_timesteps",
    "latent_size",
    "load",
    "load_latent_dataset",
    "load_state_dict",
    "load_text_embeddings",
    "make_synthetic_dataset",
    "preset_names",
    "sample",
    "sample_flow_timesteps",
    "save",
    "save_latent_dataset",
    "save_text_embeddings",
    "shift_timesteps",
    "train",
    "validation_loss",
    "__version__",
]
