"""accel-sims: accelerator algorithms and cycle/energy simulators.

One module per paper: `accel_sims.spatten` (SpAtten, HPCA 2021), `accel_sims.pointacc` (PointAcc, MICRO 2021) and
`accel_sims.dota` (DOTA / Lightening-Transformer). Each has a config, a workload, the algorithm in PyTorch or numpy,
and a simulator returning cycles, energy and breakdowns.
"""

from __future__ import annotations

from accel_sims.errors import AccelSimsError, ModelLoadError, WorkloadError

__version__ = "0.0.1"

__all__ = ["AccelSimsError", "ModelLoadError", "WorkloadError", "__version__"]
