"""Flow-DPM-Solver: SANA's sampler, DPM-Solver++(2M) on the rectified-flow schedule.

SANA (Xie et al., ICLR 2025) samples its flow-matching model with DPM-Solver++ (Lu et al., 2022,
arXiv:2211.01095, Alg. 2, multistep second order, "midpoint" variant) written for the flow schedule
``alpha_t = 1 - t``, ``sigma_t = t``, ``lambda_t = log(alpha_t / sigma_t)``. The model's velocity
``v = noise - x0`` gives the data prediction ``x0_hat = x_t - t * v`` and, with ``h = lambda_t -
lambda_s``, each step is::

    first order:   x_t = (sigma_t / sigma_s) * x_s - alpha_t * expm1(-h) * m0
    second order:  x_t = (sigma_t / sigma_s) * x_s - alpha_t * expm1(-h) * (m0 + (m0 - m1) / (2 r0))

with ``m0, m1`` the current and previous ``x0_hat`` and ``r0 = h_prev / h``. The first step has no
history and the last step (to ``t = 0``, where ``h`` is infinite) is first order, which returns
``x0_hat`` exactly, so ``steps`` steps cost ``steps`` model evaluations. The first-order step is the
flow Euler step ``x + (sigma_t - sigma_s) * v`` in another form.

The grid is SANA's ``time_uniform_flow`` (:func:`linear_dit.sampling.flow_sigmas`). Given the same
model outputs, the sigmas and every update equal diffusers'
``DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction")``
(order 2, ``dpmsolver++``, ``midpoint``, ``final_sigmas_type="zero"``, ``lower_order_final``). The
step coefficients are computed once, in float64, from the float32 grid (the anchors use float32
logs), and the update runs in float32 (float64 for float64 input) whatever the input dtype.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from linear_dit.errors import InputError
from linear_dit.sampling import (
    Denoiser,
    _check_noise,
    _check_steps_shift,
    _check_velocity,
    _steps,
    _timestep_batch,
    flow_sigmas,
    flow_timesteps,
)

__all__ = ["FlowDPMSolver", "flow_dpm_solver_sample"]


def _lambda(sigma: float) -> float:
    """``log(alpha / sigma)`` of the flow schedule, infinite at the ends of ``[0, 1]``."""
    if sigma <= 0.0:
        return math.inf
    if sigma >= 1.0:
        return -math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


class FlowDPMSolver:
    """Stateful Flow-DPM-Solver (see the module docstring): call :meth:`step` once per entry of
    :attr:`timesteps`, with the model's velocity at that timestep and the current latent.

    ``order=1`` gives the first-order solver (the flow Euler / DDIM step) on the same grid;
    ``integer_timesteps=True`` truncates :attr:`timesteps` to integers like the anchors do.
    """

    def __init__(
        self, steps: int = 20, shift: float = 3.0, *, order: Literal[1, 2] = 2, integer_timesteps: bool = False
    ) -> None:
        _check_steps_shift(steps, shift)
        if order not in (1, 2):
            raise InputError(f"order must be 1 or 2, got {order!r}")
        self.steps = steps
        self.shift = float(shift)
        self.order = order
        self.integer_timesteps = integer_timesteps
        self.sigmas: torch.Tensor = flow_sigmas(steps, shift)
        """The float32 flow-time grid, ``steps + 1`` values from ``shift(0.999)`` down to 0."""
        self.timesteps: torch.Tensor = flow_timesteps(steps, shift, integer_timesteps=integer_timesteps)
        """Model timesteps ``sigma * 1000`` (float32, ``[steps]``) at which to evaluate the model."""

        sig = [float(s) for s in self.sigmas]
        self._sig = sig
        lam = [_lambda(s) for s in sig]
        # x_next = ratio * x + coef * (m0 + weight * (m0 - m1)); coef = -alpha_t * expm1(-h) written
        # without logs (exp(-h) = sigma_t alpha_s / (alpha_t sigma_s)), so it stays exact at the ends.
        self._ratio: list[float] = []
        self._coef: list[float] = []
        self._weight: list[float] = []
        for i in range(steps):
            s, t = sig[i], sig[i + 1]
            self._ratio.append(t / s)
            self._coef.append((1.0 - t) - t * (1.0 - s) / s)
            h = lam[i + 1] - lam[i]
            h_prev = lam[i] - lam[i - 1] if i > 0 else math.nan
            ok = order == 2 and math.isfinite(h) and h != 0 and math.isfinite(h_prev) and h_prev != 0
            self._weight.append(0.5 * h / h_prev if ok else 0.0)  # 1 / (2 r0); 0 means first order
        self._index = 0
        self._prev_x0: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the history and start again from the first timestep."""
        self._index = 0
        self._prev_x0 = None

    @property
    def step_index(self) -> int:
        """How many steps have been taken since construction or :meth:`reset`."""
        return self._index

    def step(self, velocity: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One solver step from ``x`` at ``sigmas[step_index]`` to ``sigmas[step_index + 1]``, given
        the model's ``velocity`` at ``timesteps[step_index]``. Returns the new latent in ``x``'s dtype."""
        i = self._index
        if i >= self.steps:
            raise InputError(f"the solver has taken all {self.steps} steps; call reset() to sample again")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise InputError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        velocity = _check_velocity(velocity, x)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        xs = x.to(acc)
        x0 = xs - self._sig[i] * velocity.to(acc)
        if self._sig[i + 1] == 0.0:
            out = x0  # h is infinite: the update is x0_hat itself
        else:
            d = x0
            if self._weight[i] != 0.0 and self._prev_x0 is not None:
                d = x0 + self._weight[i] * (x0 - self._prev_x0.to(device=x0.device, dtype=acc))
            out = self._ratio[i] * xs + self._coef[i] * d
        self._prev_x0 = x0
        self._index = i + 1
        return out.to(x.dtype)


def flow_dpm_solver_sample(
    denoiser: Denoiser,
    noise: torch.Tensor,
    steps: int = 20,
    shift: float = 3.0,
    progress: bool = False,
    *,
    integer_timesteps: bool = False,
) -> torch.Tensor:
    """Integrate the flow ODE from ``noise`` (at the grid's first time) to ``t = 0`` with the
    Flow-DPM-Solver: exactly ``steps`` calls of ``denoiser(x, timestep[B])``. The latent is carried
    in float32 (float64 for float64 noise) between steps and handed to the denoiser in ``noise``'s
    dtype; the result has ``noise``'s dtype. Gradient mode is left as the caller set it.
    """
    noise = _check_noise(noise)
    solver = FlowDPMSolver(steps, shift, integer_timesteps=integer_timesteps)
    acc = torch.float64 if noise.dtype == torch.float64 else torch.float32
    x = noise.to(acc)
    timesteps = solver.timesteps.tolist()
    for i in _steps(steps, "Flow-DPM-Solver", progress):
        v = _check_velocity(denoiser(x.to(noise.dtype), _timestep_batch(timesteps[i], x)), x)
        x = solver.step(v, x)
    return x.to(noise.dtype)
