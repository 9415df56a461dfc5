"""PointAcc (Lin, Zhang, Tang, Wang, Han; MICRO 2021, arXiv:2110.07600): the ranking-based mapping unit and a
point-cloud accelerator simulator.

Mapping operations (farthest point sampling, kNN, ball query, voxel downsampling, sparse-convolution kernel maps) live
in `accel_sims.pointacc.mapping`; point files and synthetic clouds in `accel_sims.pointacc.points`.
"""

from __future__ import annotations
