"""Sampling from a flow-matching Linear DiT: sigma grids, timestep shift, classifier-free guidance.

SANA (Xie et al., ICLR 2025) trains the Linear DiT on the straight flow path
``x_t = (1 - t) * x0 + t * noise`` to predict the velocity ``v = noise - x0`` (rectified flow) and
samples it with the Flow-DPM-Solver (:mod:`linear_dit.flow_dpm_solver`, DPM-Solver++(2M) of Lu et al.
2022 rewritten for the flow schedule ``alpha_t = 1 - t``, ``sigma_t = t``) or a flow Euler sampler
(:mod:`linear_dit.flow_euler`). Both step along a *shifted* time grid: the timestep shift of Esser et
al. (SD3, 2024), ``t' = shift * t / (1 + (shift - 1) * t)``, spends more steps at high noise, which
high resolutions need (SANA uses shift 3 at 1K/2K and 6 at 4K).

A sampler drives a :data:`Denoiser`, ``(x, timestep[B] in [0, 1000]) -> velocity``; the timestep is
the flow time ``t`` times 1000. :func:`cfg_denoiser` turns any callable with the model's signature
``model(x, timestep, encoder_hidden_states, encoder_attention_mask)`` into one, with
classifier-free guidance ``v_u + s * (v_c - v_u)`` from a single batched forward pass; :func:`sample`
runs the whole loop from pure noise to a clean latent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch

from linear_dit.errors import InputError

__all__ = ["Denoiser", "cfg_denoiser", "flow_sigmas", "flow_timesteps", "sample", "shift_timesteps"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x, timestep) -> velocity``: ``x`` is the latent at flow time ``t``, ``timestep`` a ``[B]`` float
tensor ``t * 1000`` in ``[0, 1000]``, the result ``noise - x0`` shaped like ``x``."""

Schedule = Literal["time_uniform", "flow_match_euler"]

# diffusers' schedulers and the native Sana grid both sample t on 1000 training timesteps.
_NUM_TRAIN_TIMESTEPS = 1000


def _check_steps_shift(steps: Any, shift: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1 (one model evaluation each), got {steps!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise InputError(f"shift must be a finite number > 0 (1 means no shift; SANA uses 3 or 6), got {shift!r}")


def _linspace_like_numpy(start: float, stop: float, num: int) -> torch.Tensor:
    """``numpy.linspace(start, stop, num)`` in float64, reproduced operation by operation (``i * step +
    start``, endpoint set exactly) so the grids equal diffusers' bit for bit; ``torch.linspace`` fills
    the two halves from opposite ends and can differ in the last bit."""
    if num == 1:
        return torch.tensor([start], dtype=torch.float64)
    step = (stop - start) / (num - 1)
    y = torch.arange(num, dtype=torch.float64) * step + start
    y[-1] = stop
    return y


def _shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * t / (1 + (shift - 1) * t)


def _flow_grid(steps: int, shift: float, schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid before and after rounding to float32: ``(float64 [steps + 1], float32 [steps + 1])``."""
    _check_steps_shift(steps, shift)
    n = _NUM_TRAIN_TIMESTEPS
    if schedule == "time_uniform":
        # DPMSolverMultistepScheduler(use_flow_sigmas=True): flow time 1 - linspace(1, 1/1000, N + 1),
        # shifted, flipped, the trailing shift(0) = 0 replaced by the final sigma 0.
        s64 = _shift(1.0 - _linspace_like_numpy(1.0, 1.0 / n, steps + 1), float(shift)).flip(0)
        s64[-1] = 0.0
    elif schedule == "flow_match_euler":
        # FlowMatchEulerDiscreteScheduler(shift): its smallest training sigma is shift(1/1000), computed
        # in float32; inference timesteps run linearly from 1000 down to 1000 * that sigma and are
        # shifted a second time (so the low end is shift(shift(1/1000))), then 0 is appended.
        s_min = _shift(torch.ones(1, dtype=torch.float32) / n, float(shift)).item()
        head = _shift(_linspace_like_numpy(float(n), s_min * n, steps) / n, float(shift))
        s64 = torch.cat([head, torch.zeros(1, dtype=torch.float64)])
    else:
        raise InputError(f"schedule must be 'time_uniform' or 'flow_match_euler', got {schedule!r}")
    return s64, s64.float()


def flow_sigmas(
    steps: int,
    shift: float = 3.0,
    *,
    schedule: Schedule = "time_uniform",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The shifted flow-time grid a sampler steps along: ``steps + 1`` decreasing values, the last 0.

    ``schedule="time_uniform"`` (the Flow-DPM-Solver's grid) is SANA's ``time_uniform_flow``:
    ``u = 1 - linspace(1, 1e-3, steps + 1)``, ``sigma = shift(u)``, flipped, so it starts at
    ``shift(0.999)`` (0.99967 for shift 3), not at 1, and ends at exactly 0. By default it equals
    ``DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=shift).sigmas`` bit for bit
    (diffusers evaluates the formula in float64 with numpy and rounds to float32). Native Sana
    (``DPM_Solver.get_time_steps``) evaluates the same formula with ``torch.linspace`` in the default
    float32, so its grid can differ from this one by a few float32 ulps (~1e-7).

    ``schedule="flow_match_euler"`` is the grid of diffusers' ``FlowMatchEulerDiscreteScheduler(shift)``,
    which SANA's ``FlowEuler`` sampler wraps: it starts at exactly 1 and its last nonzero value is
    ``shift(shift(1e-3))`` (0.0090 for shift 3, the low end is shifted twice), then 0.

    ``dtype=torch.float64`` returns the values before rounding to float32 (the samplers use the
    float32 grid, as the anchors do).
    """
    s64, s32 = _flow_grid(steps, shift, schedule)
    return (s32 if dtype == torch.float32 else s64).to(dtype=dtype, device=device)


def flow_timesteps(
    steps: int, shift: float = 3.0, *, schedule: Schedule = "time_uniform", integer_timesteps: bool = False
) -> torch.Tensor:
    """The model timesteps of the grid of :func:`flow_sigmas` (float32 ``[steps]``, no final 0).

    By default they are ``sigma * 1000`` of the float32 grid, kept fractional, so the model is
    evaluated at exactly the flow time the solver assumes. ``integer_timesteps=True`` truncates them
    like the anchors (diffusers' ``DPMSolverMultistepScheduler`` casts the float64 ``sigma * 1000`` to
    int64; native Sana's model calls ``timestep.long()``), for exact parity with their outputs.
    """
    s64, s32 = _flow_grid(steps, shift, schedule)
    if not integer_timesteps:
        return (s32[:-1].double() * _NUM_TRAIN_TIMESTEPS).float()
    # diffusers' DPM scheduler truncates the unrounded float64 value; FlowMatchEuler's timesteps are
    # float32 (sigma * 1000), which native Sana's model truncates.
    base = s64[:-1] if schedule == "time_uniform" else s32[:-1].double()
    return (base * _NUM_TRAIN_TIMESTEPS).trunc().float()


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift ``t' = shift * t / (1 + (shift - 1) * t)`` of flow times ``t`` in ``[0, 1]``.

    It fixes 0 and 1 and, for ``shift > 1``, moves every time in between towards 1 (more noise);
    ``shift = 1`` is the identity. Computed in the input's dtype (float32 for integer input).
    """
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise InputError(f"shift must be a finite number > 0, got {shift!r}")
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.float()
    return _shift(t, float(shift))


# ------------------------------------------------------------------------------------------
# classifier-free guidance
# ------------------------------------------------------------------------------------------


def _check_text(states: Any, mask: Any, what: str) -> torch.Tensor | None:
    if not isinstance(states, torch.Tensor) or states.ndim != 3:
        found = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise InputError(f"{what} hidden states must be a [B, L, D] tensor, got {found}")
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(states.shape[:2]):
        found = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"{what} attention mask must be [B, L] = {tuple(states.shape[:2])}, got {found}")
    return mask


def _pad_text(states: torch.Tensor, mask: torch.Tensor | None, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to ``length`` tokens with zero states that the mask drops."""
    b, n, d = states.shape
    keep = torch.ones(b, n, dtype=torch.bool, device=states.device) if mask is None else mask != 0
    if n < length:
        states = torch.cat([states, states.new_zeros(b, length - n, d)], dim=1)
        keep = torch.cat([keep, keep.new_zeros(b, length - n)], dim=1)
    return states, keep


def _batch(t: torch.Tensor, b: int, what: str) -> torch.Tensor:
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:])
    raise InputError(f"{what} has batch {t.shape[0]}, expected 1 or the latent batch {b}")


def cfg_denoiser(
    model: Callable[..., torch.Tensor],
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
    *,
    negative_hidden_states: torch.Tensor | None = None,
    negative_attention_mask: torch.Tensor | None = None,
    guidance_scale: float = 4.5,
    max_timestep: float = 1000.0,
) -> Denoiser:
    """A :data:`Denoiser` for ``model(x, timestep, encoder_hidden_states, encoder_attention_mask)``,
    with classifier-free guidance.

    With ``guidance_scale == 1`` the model runs once on the prompt states. Otherwise it runs ONE
    forward pass on the batch ``[uncond; cond]`` (``2B``) and returns ``v_u + s * (v_c - v_u)``,
    computed in at least float32; guidance on the velocity equals SANA's guidance on the predicted
    noise, since the two are related by an affine map. Prompt and negative states may have different
    lengths (the shorter is padded with masked tokens) and a batch of 1 or of the latent's ``B``
    (broadcast). ``max_timestep`` is the model's timestep at ``t = 1`` (``config.max_timestep``): the
    sampler's ``t * 1000`` is rescaled to ``t * max_timestep``.
    """
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise InputError(f"guidance_scale must be a number, got {guidance_scale!r}")
    if not math.isfinite(guidance_scale):
        raise InputError(f"guidance_scale must be finite, got {guidance_scale!r}")
    if not (isinstance(max_timestep, (int, float)) and math.isfinite(max_timestep) and max_timestep > 0):
        raise InputError(f"max_timestep must be a finite number > 0, got {max_timestep!r}")
    if not callable(model):
        raise InputError(f"model must be callable as model(x, timestep, states, mask), got {type(model).__name__}")
    cond_mask = _check_text(encoder_hidden_states, encoder_attention_mask, "prompt")
    scale = float(guidance_scale)
    t_scale = float(max_timestep) / _NUM_TRAIN_TIMESTEPS

    def model_timestep(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=x.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, x.shape[0])):
            raise InputError(f"timestep must be a scalar or [B={x.shape[0]}], got shape {tuple(t.shape)}")
        t = t.reshape(-1).expand(x.shape[0])
        return t if t_scale == 1.0 else t.float() * t_scale

    if scale == 1.0:
        y_c = encoder_hidden_states

        def conditional(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            b = x.shape[0]
            mask = None if cond_mask is None else _batch(cond_mask, b, "prompt attention mask")
            return model(x, model_timestep(x, timestep), _batch(y_c, b, "prompt hidden states"), mask)

        return conditional

    if negative_hidden_states is None:
        raise InputError(
            f"guidance_scale={scale:g} needs an unconditional embedding: pass negative_hidden_states (and "
            "negative_attention_mask), e.g. the text encoder's output for the empty prompt '' or for a "
            "negative prompt; or use guidance_scale=1 to sample without classifier-free guidance"
        )
    neg_mask = _check_text(negative_hidden_states, negative_attention_mask, "negative")
    if negative_hidden_states.shape[2] != encoder_hidden_states.shape[2]:
        raise InputError(
            f"negative hidden states have {negative_hidden_states.shape[2]} channels, the prompt states "
            f"{encoder_hidden_states.shape[2]}; both must come from the same text encoder"
        )
    length = max(encoder_hidden_states.shape[1], negative_hidden_states.shape[1])
    need_mask = cond_mask is not None or neg_mask is not None or negative_hidden_states.shape[1] != length
    need_mask = need_mask or encoder_hidden_states.shape[1] != length
    y_c, m_c = _pad_text(encoder_hidden_states, cond_mask, length)
    y_u, m_u = _pad_text(negative_hidden_states.to(encoder_hidden_states.dtype), neg_mask, length)

    def guided(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = torch.cat([_batch(y_u, b, "negative hidden states"), _batch(y_c, b, "prompt hidden states")])
        mask = torch.cat([_batch(m_u, b, "negative mask"), _batch(m_c, b, "prompt mask")]) if need_mask else None
        t = model_timestep(x, timestep)
        v = model(torch.cat([x, x]), torch.cat([t, t]), y, mask)
        if not isinstance(v, torch.Tensor) or v.shape[0] != 2 * b:
            found = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise InputError(f"model must return a [2B={2 * b}, ...] velocity for the guided batch, got {found}")
        acc = torch.promote_types(v.dtype, torch.float32)
        v_u, v_c = v.to(acc).chunk(2)
        return v_u + scale * (v_c - v_u)

    return guided


# ------------------------------------------------------------------------------------------
# the sampling loop
# ------------------------------------------------------------------------------------------


def _check_noise(noise: Any) -> torch.Tensor:
    if not isinstance(noise, torch.Tensor) or noise.ndim not in (4, 5):
        found = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise InputError(f"noise must be a latent [B, C, H, W] (image) or [B, C, T, H, W] (video), got {found}")
    if not noise.is_floating_point():
        raise InputError(f"noise must be a floating-point tensor, got {noise.dtype}")
    if noise.numel() == 0:
        raise InputError(f"noise must not be empty, got shape {tuple(noise.shape)}")
    return noise


def _check_velocity(v: Any, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        found = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise InputError(f"the denoiser must return a velocity shaped like x {tuple(x.shape)}, got {found}")
    return v


def _steps(total: int, description: str, progress: bool) -> Iterator[int]:
    """``range(total)``, with a rich progress bar when asked (rich is imported only then)."""
    if not progress:
        yield from range(total)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:  # stdout stays free for results
        task = bar.add_task(description, total=total)
        for i in range(total):
            yield i
            bar.advance(task)


def _timestep_batch(value: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), value, dtype=torch.float32, device=x.device)


def sample(
    model: Callable[..., torch.Tensor],
    noise: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
    *,
    negative_hidden_states: torch.Tensor | None = None,
    negative_attention_mask: torch.Tensor | None = None,
    guidance_scale: float = 4.5,
    sampler: Literal["flow_dpm_solver", "flow_euler"] = "flow_dpm_solver",
    steps: int = 20,
    shift: float = 3.0,
    progress: bool = False,
) -> torch.Tensor:
    """Sample clean latents from ``noise`` (flow time 1) with a text-conditioned flow model.

    ``model`` is a :class:`~linear_dit.LinearDiT` or any callable with its signature
    ``model(x, timestep, encoder_hidden_states, encoder_attention_mask) -> velocity``; ``noise`` is
    ``[B, C, H, W]`` or ``[B, C, T, H, W]``. Guidance as in :func:`cfg_denoiser` (SANA's default scale
    is 4.5; scale 1 disables it and needs no negative states). ``sampler`` is the Flow-DPM-Solver
    (``steps`` model evaluations, 20 by default) or flow Euler (SANA's default there is 28 steps);
    ``shift`` is the timestep shift (the model's ``config.flow_shift``: 3 at 1K/2K, 6 at 4K). Runs
    under ``torch.no_grad()`` and returns the latent in ``noise``'s dtype.
    """
    from linear_dit.flow_dpm_solver import flow_dpm_solver_sample  # these import this module
    from linear_dit.flow_euler import flow_euler_sample

    noise = _check_noise(noise)
    _check_steps_shift(steps, shift)
    if sampler not in ("flow_dpm_solver", "flow_euler"):
        raise InputError(f"sampler must be 'flow_dpm_solver' or 'flow_euler', got {sampler!r}")
    config = getattr(model, "config", None)
    video = getattr(config, "video", None)
    if isinstance(video, bool) and noise.ndim != (5 if video else 4):
        want = "[B, C, T, H, W]" if video else "[B, C, H, W]"
        raise InputError(
            f"model config {getattr(config, 'name', '?')!r} takes {want} latents, got {tuple(noise.shape)}"
        )
    max_timestep = getattr(config, "max_timestep", float(_NUM_TRAIN_TIMESTEPS))
    denoiser = cfg_denoiser(
        model,
        encoder_hidden_states,
        encoder_attention_mask,
        negative_hidden_states=negative_hidden_states,
        negative_attention_mask=negative_attention_mask,
        guidance_scale=guidance_scale,
        max_timestep=float(max_timestep),
    )
    b = noise.shape[0]
    for states, what in ((encoder_hidden_states, "prompt hidden states"), (negative_hidden_states, "negative states")):
        if states is not None and states.shape[0] not in (1, b):
            raise InputError(f"{what} have batch {states.shape[0]}, expected 1 or the noise batch {b}")
    with torch.no_grad():
        if sampler == "flow_dpm_solver":
            return flow_dpm_solver_sample(denoiser, noise, steps=steps, shift=shift, progress=progress)
        return flow_euler_sample(denoiser, noise, steps=steps, shift=shift, progress=progress)
