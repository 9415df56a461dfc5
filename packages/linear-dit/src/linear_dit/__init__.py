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
    "sample": "linear_dit.sampling",
    "cfg_denoiser": "linear_dit.sampling",
    "flow_sigmas": "linear_dit.sampling",
    "shift_timesteps": "linear_dit.sampling",
    "FlowDPMSolver": "linear_dit.flow_dpm_solver",
    "flow_dpm_solver_sample": "linear_dit.flow_dpm_solver",
    "flow_euler_sample": "linear_dit.flow_euler",
    "flow_matching_loss": "linear_dit.flow_matching",
    "sample_flow_timesteps": "linear_dit.flow_matching",
    "EMA": "linear_dit.ema",
    "TrainConfig": "linear_dit.train",
    "TrainResult": "linear_dit.train",
    "train": "linear_dit.train",
    "count_flops": "linear_dit.flops",
}

if TYPE_CHECKING:
    from linear_dit.linear_dit import LinearDiT, LinearDiTBlock


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
    "LinearDiT",
    "LinearDiTBlock",
    "LinearDiTConfig",
    "LinearDiTError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "cfg_denoiser",
    "convert",
    "count_flops",
    "detect_layout",
    "flow_dpm_solver_sample",
    "flow_euler_sample",
    "flow_matching_loss",
    "flow_sigmas",
    "load",
    "load_state_dict",
    "preset_names",
    "sample",
    "sample_flow_timesteps",
    "save",
    "shift_timesteps",
    "train",
    "__version__",
]
