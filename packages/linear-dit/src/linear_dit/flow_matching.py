"""The flow-matching training objective of SANA: straight noise paths, velocity targets, timestep sampling.

SANA (Xie et al., ICLR 2025), Sec. 2.3 trains the Linear DiT as a rectified flow (Liu et al., 2023;
Lipman et al., 2023): a clean latent ``x0`` and Gaussian ``noise`` are joined by the straight path

    x_t = (1 - t) * x0 + t * noise,        t in [0, 1]

whose velocity ``v = d x_t / d t = noise - x0`` is the regression target; the model sees the
timestep ``t * 1000`` (``config.max_timestep``). The loss is the mean squared error over every
element. Training times are drawn from the logit-normal density of Esser et al. (SD3, ICML 2024,
Sec. 3.1), ``t = sigmoid(m + s * n)`` with ``n ~ N(0, 1)`` -- SANA's configs use ``m = 0, s = 1``
(``weighting_scheme: logit_normal``) -- or uniformly, and then optionally moved towards the noise
end by the timestep shift ``t' = shift * t / (1 + (shift - 1) * t)`` (SD3 Sec. 5.3.2; SANA's
``flow_shift``, 3 at 1K). The same shift shapes the sampler's grid (:mod:`linear_dit.sampling`),
so a model is trained on the noise levels it will be sampled at. Times stay continuous floats;
SANA truncates ``t * 1000`` to an integer, which only matters for bit-parity with its code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from linear_dit.errors import InputError
from linear_dit.sampling import shift_timesteps

__all__ = ["TimestepSampling", "flow_matching_loss", "interpolate", "sample_flow_timesteps", "velocity_target"]

TimestepSampling = Literal["logit_normal", "uniform"]


def sample_flow_timesteps(
    batch: int,
    *,
    sampling: TimestepSampling = "logit_normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``batch`` flow times in ``[0, 1]`` (float32 ``[batch]``): logit-normal or uniform, then shifted.

    ``shift = 1`` leaves the times as drawn. The draw uses ``generator`` (its device wins over
    ``device``), so a seeded generator gives the same times on every call.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise InputError(f"batch must be a non-negative integer, got {batch!r}")
    if not (math.isfinite(logit_mean) and math.isfinite(logit_std) and logit_std > 0):
        raise InputError(f"logit-normal parameters must be finite with std > 0, got mean {logit_mean}, std {logit_std}")
    dev = generator.device if generator is not None else device
    if sampling == "logit_normal":
        n = torch.randn(batch, generator=generator, device=dev, dtype=torch.float32)
        t = torch.sigmoid(n * logit_std + logit_mean)
    elif sampling == "uniform":
        t = torch.rand(batch, generator=generator, device=dev, dtype=torch.float32)
    else:
        raise InputError(f"timestep sampling must be 'logit_normal' or 'uniform', got {sampling!r}")
    return shift_timesteps(t, shift) if shift != 1 else t


def _broadcast_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise InputError(f"flow time must be a scalar or have shape [{b}] (one per sample), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputError(f"flow time must be floating point in [0, 1], got dtype {t.dtype}")
    return t.reshape(b, *([1] * (x.ndim - 1)))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point ``x_t = (1 - t) x0 + t noise`` of the straight path, for per-sample times ``t [B]``."""
    if x0.shape != noise.shape:
        raise InputError(f"noise must have the latent's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    tt = _broadcast_time(t, x0).to(torch.promote_types(x0.dtype, torch.float32))
    return (1 - tt) * x0 + tt * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The regression target ``v = noise - x0`` (constant along the straight path)."""
    if x0.shape != noise.shape:
        raise InputError(f"noise must have the latent's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    return noise - x0


def flow_matching_loss(
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
    *,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_timestep: float = 1000.0,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Flow-matching loss of ``model`` on clean latents ``x0`` with their text conditioning.

    ``model`` has the :class:`~linear_dit.LinearDiT` signature ``model(x, timestep, states, mask)``.
    ``t [B]`` (flow times in ``[0, 1]``) and ``noise`` (shaped like ``x0``) are drawn with
    ``generator`` when not given (logit-normal times, no shift). Returns the mean squared error of
    the predicted velocity against ``noise - x0`` over all elements (``reduction="mean"``, a
    scalar), or one mean per sample (``"none"``, ``[B]``). The error is computed in float32 even
    when the model runs under autocast.
    """
    if reduction not in ("mean", "none"):
        raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2 or not x0.is_floating_point():
        raise InputError(f"x0 must be a floating-point latent batch [B, ...], got {getattr(x0, 'shape', type(x0))}")
    b = x0.shape[0]
    if t is None:
        gen_device = generator.device if generator is not None else x0.device
        t = sample_flow_timesteps(b, generator=generator, device=gen_device).to(x0.device)
    if noise is None:
        gen_device = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
    t = torch.as_tensor(t, device=x0.device)
    if t.ndim == 0:
        t = t.expand(b)
    if t.is_floating_point() and bool(((t < 0) | (t > 1) | ~torch.isfinite(t)).any()):
        raise InputError(f"flow times must lie in [0, 1], got min {t.min().item():g}, max {t.max().item():g}")
    x_t = interpolate(x0, noise, t)
    target = velocity_target(x0, noise).float()
    pred = model(x_t, t.float() * max_timestep, encoder_hidden_states, encoder_attention_mask)
    if pred.shape != x0.shape:
        raise InputError(f"model returned shape {tuple(pred.shape)}, expected the latent's {tuple(x0.shape)}")
    if reduction == "mean":
        return F.mse_loss(pred.float(), target)
    return (pred.float() - target).pow(2).flatten(1).mean(1)
