"""Tests of the flow-matching objective (linear_dit.flow_matching) and the weight EMA (linear_dit.ema):
SANA's rectified-flow training target (Xie et al., ICLR 2025, Sec. 2.3) on tiny presets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ldit_testing import latent, random_model, text_inputs
from torch import nn

from linear_dit.ema import EMA
from linear_dit.errors import InputError, TrainingError
from linear_dit.flow_matching import flow_matching_loss, interpolate, sample_flow_timesteps, velocity_target

# ------------------------------------------------------------------------------------------
# the straight path and its velocity
# ------------------------------------------------------------------------------------------


def test_path_endpoints_and_velocity_is_the_time_derivative() -> None:
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 5, 7, generator=g), torch.randn(3, 4, 5, 7, generator=g)
    assert torch.equal(interpolate(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(3)), noise)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    h = 1e-6
    x0d, nd = x0.double(), noise.double()
    numeric = (interpolate(x0d, nd, t + h) - interpolate(x0d, nd, t - h)) / (2 * h)
    torch.testing.assert_close(numeric, velocity_target(x0d, nd), rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.0, 1.0), b=st.integers(1, 3), frames=st.sampled_from([None, 2]))
def test_path_is_linear_in_t_for_any_shape(t: float, b: int, frames: int | None) -> None:
    shape = (b, 2, 3, 5) if frames is None else (b, 2, frames, 3, 5)
    g = torch.Generator().manual_seed(b)
    x0, noise = (
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )
    xt = interpolate(x0, noise, torch.full((b,), t, dtype=torch.float64))
    torch.testing.assert_close(xt - x0, t * velocity_target(x0, noise), rtol=1e-12, atol=1e-12)


def test_interpolate_rejects_mismatched_inputs() -> None:
    x = torch.zeros(2, 4, 3, 3)
    with pytest.raises(InputError, match="noise must have the latent's shape"):
        interpolate(x, torch.zeros(2, 4, 3, 4), torch.zeros(2))
    with pytest.raises(InputError, match=r"shape \[2\]"):
        interpolate(x, x, torch.zeros(3))


# ------------------------------------------------------------------------------------------
# timestep sampling
# ------------------------------------------------------------------------------------------


def test_logit_normal_times_have_the_requested_logit_moments() -> None:
    g = torch.Generator().manual_seed(1)
    t = sample_flow_timesteps(20000, sampling="logit_normal", logit_mean=0.5, logit_std=0.7, generator=g)
    assert t.dtype == torch.float32 and t.shape == (20000,)
    assert bool(((t > 0) & (t < 1)).all())
    logit = torch.log(t / (1 - t)).double()
    assert abs(logit.mean().item() - 0.5) < 0.03
    assert abs(logit.std().item() - 0.7) < 0.03


def test_uniform_times_are_uniform() -> None:
    t = sample_flow_timesteps(20000, sampling="uniform", generator=torch.Generator().manual_seed(2))
    # Kolmogorov-Smirnov distance to U(0, 1); the 0.1% critical value at n = 20000 is about 0.0138.
    ks = (t.sort().values - torch.arange(1, 20001) / 20000).abs().max().item()
    assert ks < 0.0138


def test_shift_is_applied_to_the_drawn_times() -> None:
    plain = sample_flow_timesteps(1000, generator=torch.Generator().manual_seed(3))
    shifted = sample_flow_timesteps(1000, shift=3.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(shifted, 3 * plain / (1 + 2 * plain))
    assert shifted.median() > 0.7 > plain.median()  # shift 3 moves the median 0.5 to 0.75
    again = sample_flow_timesteps(1000, shift=3.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(shifted, again)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampling": "cosine"}, "logit_normal' or 'uniform"),
        ({"logit_std": 0.0}, "std > 0"),
        ({"shift": -1.0}, "shift"),
    ],
)
def test_timestep_sampling_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        sample_flow_timesteps(4, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# the loss
# ------------------------------------------------------------------------------------------


class _Recorder(nn.Module):
    """Returns a fixed prediction and records the timesteps it was called with."""

    def __init__(self, prediction: torch.Tensor) -> None:
        super().__init__()
        self.prediction = prediction
        self.timesteps: list[torch.Tensor] = []

    def forward(
        self, x: torch.Tensor, timestep: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        self.timesteps.append(timestep)
        return self.prediction


def test_loss_is_the_mse_of_the_velocity_and_the_model_sees_t_times_1000() -> None:
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(3, 4, 6, 5, generator=g), torch.randn(3, 4, 6, 5, generator=g)
    t = torch.tensor([0.1, 0.5, 1.0])
    y = torch.randn(3, 2, 8)
    exact = _Recorder(noise - x0)
    assert flow_matching_loss(exact, x0, y, t=t, noise=noise).item() == 0.0
    torch.testing.assert_close(exact.timesteps[0], t * 1000)
    zero = _Recorder(torch.zeros_like(x0))
    loss = flow_matching_loss(zero, x0, y, t=t, noise=noise)
    torch.testing.assert_close(loss, (noise - x0).pow(2).mean())
    per_sample = flow_matching_loss(zero, x0, y, t=t, noise=noise, reduction="none")
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample.mean(), loss)
    torch.testing.assert_close(per_sample[1], (noise - x0)[1].pow(2).mean())


def test_loss_trains_every_parameter_of_the_model() -> None:
    model = random_model("tiny-1.5", seed=0).train()
    x0 = latent(model.config, batch=2, h=4, w=6)
    y, mask = text_inputs(model.config, batch=2, length=5)
    loss = flow_matching_loss(model, x0, y, mask, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not no_grad


def test_loss_on_video_latents() -> None:
    model = random_model("tiny-video", seed=0)
    x0 = latent(model.config, batch=2, h=4, w=4, frames=3)
    y, mask = text_inputs(model.config, batch=2, length=4)
    losses = flow_matching_loss(model, x0, y, mask, generator=torch.Generator().manual_seed(0), reduction="none")
    assert losses.shape == (2,) and bool(torch.isfinite(losses).all())


def test_loss_draws_are_reproducible_from_the_generator() -> None:
    model = random_model("tiny", seed=0)
    x0 = latent(model.config, batch=2, h=4, w=4)
    y, mask = text_inputs(model.config, batch=2)
    a = flow_matching_loss(model, x0, y, mask, generator=torch.Generator().manual_seed(7))
    b = flow_matching_loss(model, x0, y, mask, generator=torch.Generator().manual_seed(7))
    c = flow_matching_loss(model, x0, y, mask, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_loss_rejects_bad_inputs() -> None:
    x0 = torch.zeros(2, 4, 3, 3)
    model = _Recorder(torch.zeros_like(x0))
    with pytest.raises(InputError, match=r"lie in \[0, 1\]"):
        flow_matching_loss(model, x0, torch.zeros(2, 1, 8), t=torch.tensor([0.5, 1.5]), noise=x0)
    with pytest.raises(InputError, match="reduction"):
        flow_matching_loss(model, x0, torch.zeros(2, 1, 8), reduction="sum")  # type: ignore[arg-type]
    wrong = _Recorder(torch.zeros(2, 4, 3, 2))
    with pytest.raises(InputError, match="model returned shape"):
        flow_matching_loss(wrong, x0, torch.zeros(2, 1, 8), t=torch.zeros(2), noise=x0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast training runs on CUDA")
def test_loss_under_bf16_autocast_on_cuda_is_fp32_and_close() -> None:
    model = random_model("tiny", seed=0).cuda()
    x0 = latent(model.config, batch=4, h=8, w=8).cuda()
    y, mask = text_inputs(model.config, batch=4)
    t, noise = torch.rand(4, device="cuda"), torch.randn_like(x0)
    ref = flow_matching_loss(model, x0, y.cuda(), mask.cuda(), t=t, noise=noise)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = flow_matching_loss(model, x0, y.cuda(), mask.cuda(), t=t, noise=noise)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=3e-2, atol=3e-2)


# ------------------------------------------------------------------------------------------
# EMA
# ------------------------------------------------------------------------------------------


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    return net


def test_ema_follows_the_update_rule_and_copies_buffers() -> None:
    net = _net()
    ema = EMA(net, decay=0.9, warmup=False)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(5.0)
    ema.update(net)
    for name, p in net.named_parameters():
        torch.testing.assert_close(ema.shadow[name], 0.9 * start[name] + 0.1 * p.detach())
    assert torch.equal(ema.shadow["1.running_mean"], torch.full((4,), 5.0))
    assert ema.num_updates == 1


def test_ema_warmup_schedule() -> None:
    ema = EMA(_net(), decay=0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.update(_net())
    assert decays == pytest.approx([0.1, 2 / 11, 3 / 12])
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.999


def test_ema_skips_frozen_parameters() -> None:
    net = _net()
    net[0].bias.requires_grad_(False)
    ema = EMA(net, decay=0.5, warmup=False)
    before = ema.shadow["0.bias"].clone()
    with torch.no_grad():
        net[0].bias.add_(3.0)
    ema.update(net)
    assert torch.equal(ema.shadow["0.bias"], before)


def test_ema_state_round_trip_and_swap() -> None:
    net = _net()
    ema = EMA(net, decay=0.8)
    for _ in range(3):
        with torch.no_grad():
            net[0].weight.mul_(1.1)
        ema.update(net)
    state = ema.state_dict()
    other = EMA(_net(), decay=0.1)
    other.load_state_dict(state)
    assert other.decay == 0.8 and other.num_updates == 3
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    own = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.swapped_into(net):
        assert torch.equal(net[0].weight, ema.shadow["0.weight"])
    assert all(torch.equal(net.state_dict()[k], own[k]) for k in own)
    ema.copy_to(net)
    assert torch.equal(net[0].weight, ema.shadow["0.weight"])


def test_ema_rejects_mismatches() -> None:
    with pytest.raises(TrainingError, match="decay"):
        EMA(_net(), decay=1.0)
    ema = EMA(_net())
    with pytest.raises(TrainingError, match="does not match the model"):
        ema.update(nn.Linear(3, 4))
    bad = ema.state_dict()
    bad["shadow"] = {**bad["shadow"], "0.weight": torch.zeros(2, 2)}  # type: ignore[dict-item]
    with pytest.raises(TrainingError, match=r"0.weight has shape \(2, 2\)"):
        ema.load_state_dict(bad)
    with pytest.raises(TrainingError, match="missing"):
        ema.load_state_dict({"shadow": {}})
