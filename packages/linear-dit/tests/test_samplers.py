"""Flow-DPM-Solver, flow Euler, CFG and the sampling loop: parity with diffusers' schedulers, exactness
on an oracle velocity, convergence on Gaussian data, guidance batching, and argument validation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ldit_testing import latent, random_model, text_inputs

from linear_dit import (
    FlowDPMSolver,
    InputError,
    cfg_denoiser,
    flow_dpm_solver_sample,
    flow_euler_sample,
    flow_sigmas,
    sample,
    shift_timesteps,
)
from linear_dit.sampling import flow_timesteps

STEP_SHIFT = [(1, 3.0), (2, 3.0), (3, 1.0), (5, 6.0), (14, 3.0), (20, 3.0), (20, 1.0), (28, 0.5)]


def _dpm_scheduler(steps: int, shift: float) -> Any:
    from diffusers import DPMSolverMultistepScheduler

    sch: Any = DPMSolverMultistepScheduler(
        use_flow_sigmas=True,
        flow_shift=shift,
        prediction_type="flow_prediction",
        solver_order=2,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    sch.set_timesteps(steps)
    return sch


def _euler_scheduler(steps: int, shift: float) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sch: Any = FlowMatchEulerDiscreteScheduler(shift=shift)
    sch.set_timesteps(steps)
    return sch


class Replay:
    """A denoiser returning pre-drawn velocities in order; records the timesteps it was called with."""

    def __init__(self, velocities: list[torch.Tensor]) -> None:
        self.velocities = velocities
        self.timesteps: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],)
        self.timesteps.append(t.clone())
        return self.velocities[len(self.timesteps) - 1]


def point_mass_oracle(x0: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exact velocity field when all data sit at ``x0``: ``v = (x - x0) / t``."""

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = (t.double() / 1000).view(-1, *[1] * (x.ndim - 1))
        return ((x.double() - x0.double()) / sigma).to(x.dtype)

    return denoiser


# ------------------------------------------------------------------------------------------
# grids and timestep shift
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20, 50])
@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0, 6.0])
def test_sigma_grid_equals_diffusers_bitwise(steps: int, shift: float) -> None:
    sch = _dpm_scheduler(steps, shift)
    ours = flow_sigmas(steps, shift)
    assert ours.dtype == torch.float32 and ours.shape == (steps + 1,)
    assert torch.equal(ours, sch.sigmas)
    assert torch.equal(flow_timesteps(steps, shift, integer_timesteps=True).long(), sch.timesteps)
    # default: fractional timesteps at exactly the solver's sigmas
    torch.testing.assert_close(flow_timesteps(steps, shift), ours[:-1] * 1000, rtol=0, atol=0)
    if shift == 3.0:
        assert flow_timesteps(steps, shift)[0] == pytest.approx(999.667, abs=1e-3)  # not truncated to 999
    assert ours[-1] == 0 and float(ours[0]) == pytest.approx(shift * 0.999 / (1 + (shift - 1) * 0.999), rel=1e-7)

    eul = _euler_scheduler(steps, shift)
    assert torch.equal(flow_sigmas(steps, shift, schedule="flow_match_euler"), eul.sigmas)
    assert torch.equal(flow_timesteps(steps, shift, schedule="flow_match_euler"), eul.timesteps)


def test_float64_grid_is_the_unrounded_grid() -> None:
    g64 = flow_sigmas(9, 3.0, dtype=torch.float64)
    assert g64.dtype == torch.float64
    assert torch.equal(g64.float(), flow_sigmas(9, 3.0))
    u = 1 - torch.linspace(1, 1e-3, 10, dtype=torch.float64)
    torch.testing.assert_close(g64, shift_timesteps(u, 3.0).flip(0), rtol=1e-15, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 60), shift=st.floats(0.1, 20.0))
def test_grids_decrease_to_zero(steps: int, shift: float) -> None:
    for schedule in ("time_uniform", "flow_match_euler"):
        g = flow_sigmas(steps, shift, schedule=schedule)
        assert g.shape == (steps + 1,) and g[-1] == 0
        assert bool((g[1:] < g[:-1]).all()) and bool((g <= 1).all())
    assert flow_sigmas(steps, shift, schedule="flow_match_euler")[0] == 1


@settings(max_examples=50, deadline=None)
@given(t=st.floats(0.0, 1.0), shift=st.floats(0.05, 20.0))
def test_shift_multiplies_the_odds(t: float, shift: float) -> None:
    tt = torch.tensor([0.0, t, 1.0], dtype=torch.float64)
    out = shift_timesteps(tt, shift)
    assert out[0] == 0 and math.isclose(out[2], 1.0, rel_tol=1e-12)
    torch.testing.assert_close(shift_timesteps(out, 1 / shift), tt, rtol=1e-12, atol=1e-12)
    if 1e-6 < t < 1 - 1e-6:
        assert math.isclose(out[1] / (1 - out[1]), shift * t / (1 - t), rel_tol=1e-9)
    assert torch.equal(shift_timesteps(tt, 1.0), tt)


# ------------------------------------------------------------------------------------------
# Flow-DPM-Solver
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "shift"), STEP_SHIFT)
def test_dpm_solver_steps_equal_diffusers(steps: int, shift: float) -> None:
    g = torch.Generator().manual_seed(steps)
    sch = _dpm_scheduler(steps, shift)
    solver = FlowDPMSolver(steps, shift)
    assert torch.equal(solver.sigmas, sch.sigmas)
    x = torch.randn(2, 4, 5, 3, generator=g)
    xd = x.clone()
    for i, t in enumerate(sch.timesteps):
        assert solver.step_index == i
        v = torch.randn(x.shape, generator=g)
        xd = sch.step(v, t, xd).prev_sample
        x = solver.step(v, x)
        # float32 rounding of the anchor's float32 logs; our coefficients are float64
        torch.testing.assert_close(x, xd, rtol=1e-6, atol=2e-6)
    assert solver.step_index == steps


def test_dpm_solver_equals_diffusers_through_the_sampling_loop() -> None:
    steps, shift = 12, 3.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, 4, 4, generator=g)
    vs = [torch.randn(noise.shape, generator=g) for _ in range(steps)]
    replay = Replay(vs)
    ours = flow_dpm_solver_sample(replay, noise, steps, shift, integer_timesteps=True)
    sch = _dpm_scheduler(steps, shift)
    xd = noise.clone()
    for i, t in enumerate(sch.timesteps):
        assert replay.timesteps[i].item() == t.item()
        xd = sch.step(vs[i], t, xd).prev_sample
    torch.testing.assert_close(ours, xd, rtol=1e-6, atol=2e-6)


def test_first_and_last_steps_are_first_order() -> None:
    steps, shift = 6, 3.0
    g = torch.Generator().manual_seed(1)
    solver = FlowDPMSolver(steps, shift)
    s = solver.sigmas.tolist()
    x = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    for i in range(steps):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        euler = x + (s[i + 1] - s[i]) * v  # the first-order DPM-Solver++ step in flow form
        nxt = solver.step(v, x)
        if i == 0:
            torch.testing.assert_close(nxt, euler, rtol=1e-12, atol=1e-12)
        elif i == steps - 1:
            assert torch.equal(nxt, x - s[i] * v)  # x0_hat exactly
            torch.testing.assert_close(nxt, euler, rtol=1e-12, atol=1e-12)
        else:  # the multistep correction is active in between
            assert (nxt - euler).abs().max() > 1e-3
        x = nxt


def test_order_one_is_euler_on_the_same_grid() -> None:
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
    vs = [torch.randn(noise.shape, generator=g, dtype=torch.float64) for _ in range(7)]
    solver = FlowDPMSolver(7, 2.0, order=1)
    x = noise
    for v in vs:
        x = solver.step(v, x)
    ref = flow_euler_sample(Replay(vs), noise, 7, 2.0, schedule="time_uniform")
    torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-12)


def test_reset_and_exhaustion() -> None:
    solver = FlowDPMSolver(3, 3.0)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, 2, 2, 2, generator=g)
    vs = [torch.randn(x0.shape, generator=g) for _ in range(3)]

    def run() -> torch.Tensor:
        x = x0
        for v in vs:
            x = solver.step(v, x)
        return x

    first = run()
    with pytest.raises(InputError, match="all 3 steps"):
        solver.step(vs[0], x0)
    solver.reset()
    assert solver.step_index == 0
    assert torch.equal(run(), first)


@pytest.mark.parametrize("sampler", ["dpm", "euler"])
@pytest.mark.parametrize(("steps", "shift"), [(1, 3.0), (2, 1.0), (20, 3.0), (9, 6.0)])
def test_nfe_equals_steps_and_timesteps_are_the_grid(sampler: str, steps: int, shift: float) -> None:
    noise = torch.randn(2, 3, 4, 5)
    replay = Replay([torch.zeros_like(noise)] * steps)
    if sampler == "dpm":
        out = flow_dpm_solver_sample(replay, noise, steps, shift)
        expected = FlowDPMSolver(steps, shift).timesteps
    else:
        out = flow_euler_sample(replay, noise, steps, shift)
        expected = flow_timesteps(steps, shift, schedule="flow_match_euler")
    assert len(replay.timesteps) == steps
    assert torch.equal(torch.stack([t[0] for t in replay.timesteps]), expected)
    assert all(t.dtype == torch.float32 and t.unique().numel() == 1 for t in replay.timesteps)
    assert out.shape == noise.shape


def test_euler_equals_diffusers_flow_match_euler_bitwise() -> None:
    steps, shift = 10, 3.0
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(2, 4, 3, 3, generator=g)
    vs = [torch.randn(noise.shape, generator=g) for _ in range(steps)]
    ours = flow_euler_sample(Replay(vs), noise, steps, shift)
    sch = _euler_scheduler(steps, shift)
    xd = noise.clone()
    for i, t in enumerate(sch.timesteps):
        xd = sch.step(vs[i], t, xd).prev_sample
    assert torch.equal(ours, xd)


# ------------------------------------------------------------------------------------------
# accuracy: exact oracle, Gaussian data
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("video", [False, True])
def test_oracle_velocity_recovers_x0(video: bool) -> None:
    g = torch.Generator().manual_seed(5)
    shape = (2, 3, 2, 4, 5) if video else (2, 3, 4, 5)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    oracle = point_mass_oracle(x0)
    for steps in (1, 2, 5, 20):
        for out in (
            flow_dpm_solver_sample(oracle, noise, steps, 3.0),
            flow_euler_sample(oracle, noise, steps, 3.0),
            flow_euler_sample(oracle, noise, steps, 3.0, schedule="time_uniform"),
        ):
            assert out.dtype == torch.float64
            torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)
    out32 = flow_dpm_solver_sample(point_mass_oracle(x0.float()), noise.float(), 20, 3.0)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, x0.float(), rtol=0, atol=2e-5)


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(1, 25), shift=st.floats(0.2, 10.0), seed=st.integers(0, 2**16))
def test_oracle_property(steps: int, shift: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    out = flow_dpm_solver_sample(point_mass_oracle(x0), noise, steps, shift)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)


def test_half_precision_noise_keeps_dtype_and_accuracy() -> None:
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(1, 4, 6, 6, generator=g)
    noise = torch.randn(1, 4, 6, 6, generator=g)
    oracle = point_mass_oracle(x0)
    seen: list[torch.dtype] = []

    def den(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.dtype)
        return oracle(x.float(), t).to(x.dtype)

    for dtype in (torch.bfloat16, torch.float16):
        seen.clear()
        out = flow_dpm_solver_sample(den, noise.to(dtype), 20, 3.0)
        assert out.dtype == dtype and set(seen) == {dtype}
        # the latent is carried in fp32; only the denoiser's input is rounded to half
        torch.testing.assert_close(out.float(), x0, rtol=0, atol=0.05)
        # the stateful solver on half tensors: fp32 arithmetic inside, the input dtype out
        solver, x = FlowDPMSolver(4, 3.0), noise.to(dtype)
        for t in solver.timesteps:
            x = solver.step(den(x, t.expand(1)), x)
            assert x.dtype == dtype
        torch.testing.assert_close(x.float(), x0, rtol=0, atol=0.05)


GAUSS_MU, GAUSS_S = 0.7, 0.8


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[noise - x0 | x_t] for data ~ N(mu, s^2) per element, noise ~ N(0, 1)."""
    t = (t.double() / 1000).view(-1, *[1] * (x.ndim - 1))
    var = (1 - t) ** 2 * GAUSS_S**2 + t**2
    return -GAUSS_MU + (t - (1 - t) * GAUSS_S**2) / var * (x - (1 - t) * GAUSS_MU)


def gaussian_endpoint(x: torch.Tensor, t: float) -> torch.Tensor:
    """The exact flow-ODE endpoint at t=0 from x at time t (a 1-D Gaussian's monotone map)."""
    z = (x - (1 - t) * GAUSS_MU) / math.sqrt((1 - t) ** 2 * GAUSS_S**2 + t**2)
    return GAUSS_MU + GAUSS_S * z


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_dpm_solver_beats_euler_with_half_the_steps(shift: float) -> None:
    noise = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def err(out: torch.Tensor, t0: float) -> float:
        return (out - gaussian_endpoint(noise, t0)).abs().max().item()

    start = float(flow_sigmas(20, shift)[0])
    dpm20 = err(flow_dpm_solver_sample(gaussian_velocity, noise, 20, shift), start)
    first_order20 = FlowDPMSolver(20, shift, order=1)
    x = noise
    for t in first_order20.timesteps:
        x = first_order20.step(gaussian_velocity(x, t.expand(1)), x)
    euler40 = err(flow_euler_sample(gaussian_velocity, noise, 40, shift), 1.0)
    assert dpm20 < 0.5 * euler40
    assert dpm20 < 0.2 * err(x, start)
    assert err(flow_euler_sample(gaussian_velocity, noise, 80, shift), 1.0) < 0.6 * euler40  # Euler is first order


# ------------------------------------------------------------------------------------------
# classifier-free guidance
# ------------------------------------------------------------------------------------------


class TextModel:
    """A fake model ``v = x * masked_mean(y) + t / 1000`` that counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        self.calls.append((x.shape[0], t.clone(), None if mask is None else mask.clone()))
        keep = torch.ones(y.shape[:2]) if mask is None else mask.float()
        w = ((y * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)).mean(-1)
        view = (-1,) + (1,) * (x.ndim - 1)
        return x * w.view(view) + (t.float() / 1000).view(view)


def test_cfg_scale_one_is_the_conditional_output() -> None:
    g = torch.Generator().manual_seed(8)
    y, mask = torch.randn(2, 5, 6, generator=g), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    x, t = torch.randn(2, 3, 4, 4, generator=g), torch.tensor([500.0, 500.0])
    model = TextModel()
    den = cfg_denoiser(model, y, mask, guidance_scale=1.0)  # no negative states needed
    out = den(x, t)
    assert len(model.calls) == 1 and model.calls[0][0] == 2
    assert torch.equal(out, TextModel()(x, t, y, mask))
    # negatives are ignored at scale 1
    neg = torch.randn(1, 3, 6, generator=g)
    assert torch.equal(cfg_denoiser(model, y, mask, negative_hidden_states=neg, guidance_scale=1.0)(x, t), out)


@pytest.mark.parametrize("scale", [0.0, 4.5, 7.0])
def test_cfg_formula_one_batched_call_and_padding(scale: float) -> None:
    g = torch.Generator().manual_seed(9)
    y, mask = torch.randn(2, 5, 6, generator=g), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    neg, neg_mask = torch.randn(1, 3, 6, generator=g), torch.tensor([[1, 1, 0]])  # shorter, batch 1
    x = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor(321.5)
    model = TextModel()
    den = cfg_denoiser(
        model, y, mask, negative_hidden_states=neg, negative_attention_mask=neg_mask, guidance_scale=scale
    )
    out = den(x, t)
    assert len(model.calls) == 1
    batch, t_seen, mask_seen = model.calls[0]
    assert batch == 4 and t_seen.shape == (4,) and bool((t_seen == 321.5).all())
    assert mask_seen is not None and mask_seen.shape == (4, 5) and not bool(mask_seen[:2, 3:].any())
    ref = TextModel()
    v_c = ref(x, t.expand(2), y, mask)
    v_u = ref(x, t.expand(2), neg.expand(2, -1, -1), neg_mask.expand(2, -1))
    torch.testing.assert_close(out, v_u + scale * (v_c - v_u), rtol=1e-6, atol=1e-6)


def test_cfg_without_masks_passes_none_and_rescales_timesteps() -> None:
    y, neg = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    model = TextModel()
    den = cfg_denoiser(model, y, negative_hidden_states=neg, guidance_scale=3.0, max_timestep=1.0)
    den(torch.randn(2, 3, 4, 4), torch.tensor([1000.0, 250.0]))
    assert model.calls[0][2] is None
    torch.testing.assert_close(model.calls[0][1], torch.tensor([1.0, 0.25, 1.0, 0.25]))


def test_cfg_padding_does_not_change_a_linear_dit() -> None:
    model = random_model("tiny", seed=3)
    cfg = model.config
    y, mask = text_inputs(cfg, batch=2, length=6)
    neg, neg_mask = text_inputs(cfg, batch=1, length=2, seed=4)
    x = latent(cfg, batch=2, h=4, w=6)
    t = torch.tensor([700.0, 20.5])
    with torch.no_grad():
        out = cfg_denoiser(
            model, y, mask, negative_hidden_states=neg, negative_attention_mask=neg_mask, guidance_scale=4.5
        )(x, t)
        v_c = model(x, t, y, mask)
        v_u = model(x, t, neg.expand(2, -1, -1), neg_mask.expand(2, -1))
    torch.testing.assert_close(out, v_u + 4.5 * (v_c - v_u), rtol=1e-4, atol=1e-4)


def test_cfg_needs_negative_states() -> None:
    with pytest.raises(InputError, match="unconditional embedding"):
        cfg_denoiser(TextModel(), torch.randn(1, 3, 6), guidance_scale=4.5)


# ------------------------------------------------------------------------------------------
# sample()
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "tiny-video"])
@pytest.mark.parametrize("sampler", ["flow_dpm_solver", "flow_euler"])
def test_sample_drives_a_linear_dit(name: str, sampler: str) -> None:
    model = random_model(name, seed=0)
    for p in model.parameters():
        p.requires_grad_(True)
    cfg = model.config
    y, mask = text_inputs(cfg, batch=2, length=5)
    neg, neg_mask = text_inputs(cfg, batch=1, length=3, seed=5)
    noise = latent(cfg, batch=2, h=4, w=6, frames=2)
    out = sample(
        model,
        noise,
        y,
        mask,
        negative_hidden_states=neg,
        negative_attention_mask=neg_mask,
        guidance_scale=4.5,
        sampler=sampler,
        steps=3,
    )
    assert out.shape == noise.shape and out.dtype == noise.dtype
    assert bool(torch.isfinite(out).all()) and not out.requires_grad
    den = cfg_denoiser(model, y, mask, negative_hidden_states=neg, negative_attention_mask=neg_mask)
    with torch.no_grad():
        ref = (flow_dpm_solver_sample if sampler == "flow_dpm_solver" else flow_euler_sample)(den, noise, 3, 3.0)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 3, 2, 4, 4)])
def test_sample_drives_a_plain_callable(shape: tuple[int, ...]) -> None:
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(10))
    calls: list[int] = []

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        calls.append(x.shape[0])
        return point_mass_oracle(x0)(x, t)

    y = torch.randn(1, 4, 8)
    out = sample(model, torch.randn(shape), y, guidance_scale=1.0, steps=6, progress=True)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)
    assert calls == [shape[0]] * 6


def test_bad_arguments_raise_input_error() -> None:
    y = torch.randn(2, 4, 8)
    noise = torch.randn(2, 3, 4, 4)

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        return x

    cases: list[tuple[dict[str, Any], str]] = [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(shift=0.0), "shift"),
        (dict(shift=-1.0), "shift"),
        (dict(shift=float("nan")), "shift"),
        (dict(sampler="ddim"), "sampler"),
        (dict(guidance_scale=4.5, negative_hidden_states=None), "unconditional"),
        (dict(guidance_scale=float("inf")), "finite"),
        (dict(negative_hidden_states=torch.randn(2, 4, 7)), "channels"),
        (dict(negative_hidden_states=torch.randn(3, 4, 8)), "batch"),
    ]
    for kwargs, match in cases:
        kw = {"guidance_scale": 2.0, "negative_hidden_states": torch.randn(1, 2, 8), **kwargs}
        with pytest.raises(InputError, match=match):
            sample(model, noise, y, **kw)
    with pytest.raises(InputError, match=r"\[B, C, H, W\]"):
        sample(model, torch.randn(2, 3, 4), y, guidance_scale=1.0)
    with pytest.raises(InputError, match="floating-point"):
        sample(model, torch.ones(2, 3, 4, 4, dtype=torch.long), y, guidance_scale=1.0)
    with pytest.raises(InputError, match="batch"):
        sample(model, noise, torch.randn(3, 4, 8), guidance_scale=1.0)
    with pytest.raises(InputError, match="mask"):
        sample(model, noise, y, torch.ones(2, 5), guidance_scale=1.0)
    with pytest.raises(InputError, match="takes"):
        sample(random_model("tiny"), torch.randn(1, 32, 2, 4, 4), y, guidance_scale=1.0)
    with pytest.raises(InputError, match="velocity shaped like"):
        flow_euler_sample(lambda x, t: x[:1], noise, 2)
    with pytest.raises(InputError, match="velocity shaped like"):
        FlowDPMSolver(2).step(torch.randn(1, 3, 4, 4), noise)
    with pytest.raises(InputError, match="order"):
        FlowDPMSolver(2, order=3)
    with pytest.raises(InputError, match="schedule"):
        flow_sigmas(4, schedule="karras")
    with pytest.raises(InputError, match="shift"):
        shift_timesteps(torch.rand(3), 0.0)
