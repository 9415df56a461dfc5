"""Exception types of accel_sims: each names the record, field or argument that was wrong and what was expected."""

from __future__ import annotations


class AccelSimsError(ValueError):
    """Base class for invalid input to accel_sims."""


class WorkloadError(AccelSimsError):
    """A workload record or file is malformed (the message names the record and the field)."""


class ModelLoadError(AccelSimsError):
    """A local model folder is missing files or holds keys/shapes that do not match its config."""
