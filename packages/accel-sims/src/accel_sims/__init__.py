"""accel-sims: accelerator algorithms and simulators (SpAtten; PointAcc and DOTA to come)."""

from __future__ import annotations

__version__ = "0.0.1"
