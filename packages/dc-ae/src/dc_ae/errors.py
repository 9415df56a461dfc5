"""Exception types of the ``dc_ae`` package.

Every error the package raises on purpose derives from :class:`DCAEError`, so callers can catch
the whole family at once, and also from the matching built-in (``ValueError`` or
``RuntimeError``) so generic handlers keep working. Messages say what was expected and what was
found (see the monorepo's DESIGN.md, "Cross-cutting conventions").
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DCAEError",
    "InputError",
    "TrainingError",
]


class DCAEError(Exception):
    """Base class of every error raised on purpose by ``dc_ae``."""


class ConfigError(DCAEError, ValueError):
    """A configuration is invalid or names an unknown preset."""


class InputError(DCAEError, ValueError):
    """A tensor, image or data folder has the wrong shape, dtype, range or content."""


class CheckpointError(DCAEError, ValueError):
    """A checkpoint has missing, unexpected or misshaped keys, is truncated, or has the wrong config."""


class TrainingError(DCAEError, RuntimeError):
    """Training cannot start or continue (bad state, diverged loss, inconsistent resume)."""
