"""dc-ae: Deep Compression Autoencoders (DC-AE) in pure PyTorch.

Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025): 32x/64x/128x image latents, the released checkpoints in every layout, tiled coding
of any image size, and the three-phase training recipe.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dc_ae.config import DCAEConfig, preset_names
from dc_ae.errors import CheckpointError, ConfigError, DCAEError, InputError, TrainingError

# Names from modules that import torch load on first access (PEP 562), so `import dc_ae` -- and
# with it `dc-ae --help` -- stays free of the ~2 s torch import. Add such a public name to _LAZY
# (and to the TYPE_CHECKING block and __all__), never as a top-level import: one eager torch
# import here makes every CLI call slow again (tests/test_cli.py checks this).
_LAZY: dict[str, str] = {
    "DCAE": "dc_ae.autoencoder",
    "detect_layout": "dc_ae.checkpoint",
    "load": "dc_ae.checkpoint",
    "load_state_dict": "dc_ae.checkpoint",
    "save": "dc_ae.checkpoint",
    "reconstruct": "dc_ae.tiling",
    "tiled_decode": "dc_ae.tiling",
    "tiled_encode": "dc_ae.tiling",
    "EvalResult": "dc_ae.evaluate",
    "ImageRecord": "dc_ae.evaluate",
    "compression_ratio": "dc_ae.evaluate",
    "evaluate_folder": "dc_ae.evaluate",
    "DEFAULT_MODEL": "dc_ae.pretrained",
    "load_default": "dc_ae.pretrained",
    "TrainConfig": "dc_ae.train",
    "TrainResult": "dc_ae.train",
}

if TYPE_CHECKING:
    from dc_ae.autoencoder import DCAE
    from dc_ae.checkpoint import detect_layout, load, load_state_dict, save
    from dc_ae.evaluate import EvalResult, ImageRecord, compression_ratio, evaluate_folder
    from dc_ae.pretrained import DEFAULT_MODEL, load_default
    from dc_ae.tiling import reconstruct, tiled_decode, tiled_encode
    from dc_ae.train import TrainConfig, TrainResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dc_ae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "DCAE",
    "DCAEConfig",
    "CheckpointError",
    "ConfigError",
    "DCAEError",
    "InputError",
    "TrainingError",
    "detect_layout",
    "load",
    "load_state_dict",
    "preset_names",
    "save",
    "reconstruct",
    "tiled_decode",
    "tiled_encode",
    "EvalResult",
    "ImageRecord",
    "compression_ratio",
    "evaluate_folder",
    "DEFAULT_MODEL",
    "load_default",
    "TrainConfig",
    "TrainResult",
    "__version__",
]
