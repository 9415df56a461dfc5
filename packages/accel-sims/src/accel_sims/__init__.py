"""accel-sims: accelerator algorithms and cycle/energy simulators.

One module per paper: `accel_sims.spatten` (SpAtten, HPCA 2021); PointAcc and DOTA are planned. Each has a config,
a workload, the algorithm in PyTorch, and a simulator returning cycles, energy and breakdowns.
"""

from __future__ import annotations

from accel_sims.errors import AccelSimsError, ModelLoadError, WorkloadError

__version__ = "0.0.1"

__all__ = ["AccelSimsError", "ModelLoadError", "WorkloadError", "__version__"]
