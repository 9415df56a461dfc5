"""Exception types of the ``svdquant`` package.

Every error the package raises on purpose derives from :class:`SVDQuantError`, and also from the
matching built-in (``ValueError`` or ``RuntimeError``), with a message that says what was expected
and what was found.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "InputError", "QuantizationError", "SVDQuantError"]


class SVDQuantError(Exception):
    """Base class of every error raised on purpose by ``svdquant``."""


class ConfigError(SVDQuantError, ValueError):
    """A quantization config is invalid (format, group size, rank, filters)."""


class InputError(SVDQuantError, ValueError):
    """A tensor has the wrong shape or dtype, or holds NaN/Inf; a module is not a Linear."""


class CheckpointError(SVDQuantError, ValueError):
    """A quantized checkpoint is of another format, truncated, or has missing/misshaped tensors."""


class QuantizationError(SVDQuantError, RuntimeError):
    """Calibration or quantization could not complete (the model is left as it was)."""
