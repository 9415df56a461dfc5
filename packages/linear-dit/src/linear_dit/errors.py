"""Exception types of the ``linear_dit`` package.

Every error the package raises on purpose derives from :class:`LinearDiTError`, and also from the
matching built-in (``ValueError`` or ``RuntimeError``) so generic handlers keep working. Messages
say what was expected and what was found.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "InputError", "LinearDiTError", "TrainingError"]


class LinearDiTError(Exception):
    """Base class of every error raised on purpose by ``linear_dit``."""


class ConfigError(LinearDiTError, ValueError):
    """A configuration is invalid or names an unknown preset."""


class InputError(LinearDiTError, ValueError):
    """A latent, timestep, text embedding or mask has the wrong shape, dtype or range."""


class CheckpointError(LinearDiTError, ValueError):
    """A checkpoint has missing, unexpected or misshaped keys, is truncated, or has the wrong config."""


class TrainingError(LinearDiTError, RuntimeError):
    """Training cannot start or continue (bad data, bad state, diverged loss, inconsistent resume)."""
