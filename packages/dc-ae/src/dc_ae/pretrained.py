"""The embedded default model: a small f32c32 DC-AE shipped inside the package.

Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025), Sec. 3: the residual-autoencoding f32c32 architecture at a size that trains on a CPU
(preset ``dc-ae-f32c32-small``). Its weights are a few MB of safetensors in ``dc_ae/weights/``,
read from the installed package -- nothing is downloaded. ``bench/train_default.py`` reproduces
them from scikit-image's bundled photographs.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dc_ae.config import DCAEConfig
from dc_ae.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from dc_ae.autoencoder import DCAE

__all__ = ["DEFAULT_MODEL", "REPRODUCE_COMMAND", "default_weights_path", "load_default"]

#: Preset of the embedded default model.
DEFAULT_MODEL = "dc-ae-f32c32-small"
#: Command (from the repository root) that trains the embedded weights again.
REPRODUCE_COMMAND = "python packages/dc-ae/bench/train_default.py"

# Fields that training may set without changing the architecture the preset names.
_TRAINED_FIELDS = {"name", "scaling_factor"}


def default_weights_path() -> Path:
    """Where the embedded default weights live inside the installed package (may not exist)."""
    resource = importlib.resources.files("dc_ae").joinpath("weights", f"{DEFAULT_MODEL}.safetensors")
    if not isinstance(resource, os.PathLike):
        # A zipped install has no real file for safetensors to memory-map.
        raise CheckpointError(f"dc_ae is installed as a zip archive; cannot read {resource} as a file")
    return Path(os.fspath(resource))


def load_default(device: torch.device | str | None = None) -> DCAE:
    """Load the embedded ``dc-ae-f32c32-small`` model in fp32 and eval mode.

    Raises :class:`~dc_ae.errors.CheckpointError` if the weights file is missing (saying how to
    reproduce it), unreadable, or holds a model other than the ``dc-ae-f32c32-small`` architecture.
    """
    import torch

    from dc_ae.checkpoint import load

    path = default_weights_path()
    if not path.is_file():
        raise CheckpointError(
            f"the embedded default model {DEFAULT_MODEL} is missing: no file at {path}; "
            f"train it with `{REPRODUCE_COMMAND}` (from the repository root; it writes that file)"
        )
    model = load(path, device=device, dtype=torch.float32)
    expected = DCAEConfig.from_name(DEFAULT_MODEL).model_dump(exclude=_TRAINED_FIELDS)
    found = model.config.model_dump(exclude=_TRAINED_FIELDS)
    differing = sorted(k for k in expected if expected[k] != found[k])
    if differing:
        raise CheckpointError(
            f"{path} is not a {DEFAULT_MODEL} model: its config differs in {differing} "
            f"(e.g. {differing[0]}={found[differing[0]]!r}, expected {expected[differing[0]]!r})"
        )
    return model
