"""Flow Euler: the first-order sampler of a rectified-flow model.

SANA (Xie et al., ICLR 2025) compares its Flow-DPM-Solver against the plain Euler integrator of the
flow ODE ``dx/dt = v(x, t)``, which its ``FlowEuler`` sampler runs through diffusers'
``FlowMatchEulerDiscreteScheduler`` (28 steps by default). Each step is
``x <- x + (sigma_next - sigma) * v`` along a shifted grid that ends at ``t = 0``; ``steps`` steps
cost ``steps`` model evaluations.
"""

from __future__ import annotations

import torch

from linear_dit.sampling import (
    Denoiser,
    Schedule,
    _check_noise,
    _check_velocity,
    _steps,
    _timestep_batch,
    flow_sigmas,
    flow_timesteps,
)

__all__ = ["flow_euler_sample"]


def flow_euler_sample(
    denoiser: Denoiser,
    noise: torch.Tensor,
    steps: int = 28,
    shift: float = 3.0,
    progress: bool = False,
    *,
    schedule: Schedule = "flow_match_euler",
    integer_timesteps: bool = False,
) -> torch.Tensor:
    """Integrate the flow ODE from ``noise`` to ``t = 0`` with Euler steps.

    The default grid is that of ``FlowMatchEulerDiscreteScheduler(shift=shift)`` (starts at ``t = 1``;
    see :func:`~linear_dit.sampling.flow_sigmas`), and given the same model outputs every update
    equals that scheduler's ``step`` bit for bit in float32. ``schedule="time_uniform"`` uses the
    Flow-DPM-Solver's grid instead. The latent is carried in float32 (float64 for float64 noise)
    between steps and handed to the denoiser in ``noise``'s dtype; the result has ``noise``'s dtype.
    Gradient mode is left as the caller set it.
    """
    noise = _check_noise(noise)
    sigmas = flow_sigmas(steps, shift, schedule=schedule)
    # Step sizes are float32 differences of the float32 grid, as in diffusers.
    dts = (sigmas[1:] - sigmas[:-1]).tolist()
    timesteps = flow_timesteps(steps, shift, schedule=schedule, integer_timesteps=integer_timesteps).tolist()
    acc = torch.float64 if noise.dtype == torch.float64 else torch.float32
    x = noise.to(acc)
    for i in _steps(steps, "Flow Euler", progress):
        v = _check_velocity(denoiser(x.to(noise.dtype), _timestep_batch(timesteps[i], x)), x)
        x = x + dts[i] * v.to(acc)
    return x.to(noise.dtype)
