"""Exception types of the ``qserve`` package.

Every error the package raises on purpose derives from :class:`QServeError`, and also from the matching built-in
(``ValueError`` or ``RuntimeError``), with a message that says what was expected and what was found.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "EngineError", "InputError", "QServeError", "QuantizationError"]


class QServeError(Exception):
    """Base class of every error raised on purpose by ``qserve``."""


class ConfigError(QServeError, ValueError):
    """A model, quantization, engine or sampling config is invalid (or an architecture is unsupported)."""


class InputError(QServeError, ValueError):
    """A tensor, prompt or file has the wrong shape, dtype or content, or holds NaN/Inf."""


class CheckpointError(QServeError, ValueError):
    """A model folder or quantized checkpoint is missing files or tensors, or is of another format."""


class QuantizationError(QServeError, RuntimeError):
    """Calibration or quantization could not complete (the model is left as it was)."""


class EngineError(QServeError, RuntimeError):
    """The serving engine cannot do what was asked (e.g. a request can never fit in the KV-cache budget)."""
