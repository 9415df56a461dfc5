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
    "InputError",
    "LinearDiT",
    "LinearDiTBlock",
    "LinearDiTConfig",
    "LinearDiTError",
    "TrainingError",
    "preset_names",
    "__version__",
]
