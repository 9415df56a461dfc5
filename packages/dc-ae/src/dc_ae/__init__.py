"""dc-ae: Deep Compression Autoencoders (DC-AE) in pure PyTorch.

Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025): 32x/64x/128x image latents, the released checkpoints in every layout, tiled coding
of any image size, and the three-phase training recipe.
"""

from dc_ae.autoencoder import DCAE
from dc_ae.checkpoint import detect_layout, load, load_state_dict, save
from dc_ae.config import DCAEConfig, preset_names
from dc_ae.errors import CheckpointError, ConfigError, DCAEError, InputError, TrainingError

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
    "__version__",
]
