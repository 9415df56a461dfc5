"""Input checks shared by the PointAcc mapping operations: each raises AccelSimsError naming the argument."""

from __future__ import annotations

import math
import numbers

import numpy as np

from accel_sims.errors import AccelSimsError


def as_points(name: str, array: object, dims: int | None = None) -> np.ndarray:
    """A non-empty [N, D] array of finite coordinates as float64 (float64 so every op sees identical distances)."""
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise AccelSimsError(f"{name} must be a 2-D array [N, D]; got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise AccelSimsError(f"{name} is empty: expected at least one point, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise AccelSimsError(f"{name} must have at least one coordinate column; got shape {arr.shape}")
    if dims is not None and arr.shape[1] != dims:
        raise AccelSimsError(f"{name} must have {dims} coordinate columns; got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise AccelSimsError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    out = arr.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        raise AccelSimsError(f"{name} holds NaN or infinite coordinates (first bad row {_first_bad_row(out)})")
    return out


def as_coords(name: str, array: object, dims: int | None = None) -> np.ndarray:
    """A non-empty [N, D] array of integer coordinates as int64."""
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise AccelSimsError(f"{name} must be a 2-D integer array [N, D]; got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise AccelSimsError(f"{name} is empty: expected at least one coordinate, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise AccelSimsError(f"{name} must have at least one coordinate column; got shape {arr.shape}")
    if dims is not None and arr.shape[1] != dims:
        raise AccelSimsError(f"{name} must have {dims} columns to match; got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise AccelSimsError(f"{name} must have an integer dtype (voxel coordinates); got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise AccelSimsError(f"{name} holds values beyond int64")
    return arr.astype(np.int64, copy=False)


def positive_int(name: str, value: object) -> int:
    """A Python int >= 1 (bools rejected: True is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AccelSimsError(f"{name} must be an integer >= 1; got {value!r}")
    if int(value) < 1:
        raise AccelSimsError(f"{name} must be >= 1; got {int(value)}")
    return int(value)


def positive_float(name: str, value: object) -> float:
    """A finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AccelSimsError(f"{name} must be a positive number; got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise AccelSimsError(f"{name} must be finite and > 0; got {out}")
    return out


def _first_bad_row(arr: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
