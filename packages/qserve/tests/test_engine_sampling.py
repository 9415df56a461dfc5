"""Sampling parameters and seeded sampling of the QServe engine (Lin et al., arXiv 2405.04532, Sec. 5)."""

from __future__ import annotations

import pydantic
import pytest
import torch

from qserve.engine.sampling import SamplingParams, sample_next


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": -1}, "seed"),
        ({"stop": ["ok", ""]}, "stop"),
        ({"stop_token_ids": [3, -2]}, "stop_token_ids"),
        ({"max_token": 5}, "max_token"),
    ],
)
def test_invalid_params_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_params_are_frozen_and_normalised() -> None:
    p = SamplingParams(stop="###", stop_token_ids=[5, 6])
    assert p.stop == ("###",) and p.stop_token_ids == (5, 6)
    with pytest.raises(pydantic.ValidationError):
        p.temperature = 1.0  # type: ignore[misc]


def test_greedy_is_argmax() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert sample_next(logits, SamplingParams(), seed=3, step=0) == int(logits.argmax())


def test_seeded_sampling_is_reproducible_and_varies_with_step() -> None:
    logits = torch.zeros(100)  # uniform: every draw is informative
    p = SamplingParams(temperature=1.0, seed=7)
    a = [sample_next(logits, p, 7, i) for i in range(30)]
    b = [sample_next(logits, p, 7, i) for i in range(30)]
    c = [sample_next(logits, p, 8, i) for i in range(30)]
    assert a == b
    assert a != c
    assert len(set(a)) > 10


def test_top_p_keeps_the_nucleus_only() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    p = SamplingParams(temperature=1.0, top_p=0.7)  # keeps 0.5 and 0.3 (mass before 0.15 is 0.8 >= 0.7)
    draws = [sample_next(logits, p, 1, i) for i in range(400)]
    assert set(draws) == {0, 1}
    frac0 = draws.count(0) / len(draws)
    assert abs(frac0 - 0.5 / 0.8) < 0.08
    tiny = SamplingParams(temperature=1.0, top_p=1e-6)
    assert {sample_next(logits, tiny, 1, i) for i in range(50)} == {0}


def test_temperature_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05])
    p = SamplingParams(temperature=1.0)
    draws = torch.tensor([sample_next(probs.log(), p, 11, i) for i in range(2000)])
    freq = torch.bincount(draws, minlength=4).float() / 2000
    torch.testing.assert_close(freq, probs, atol=0.035, rtol=0.0)
    # A low temperature sharpens towards the mode.
    cold = SamplingParams(temperature=0.1)
    assert sum(sample_next(probs.log(), cold, 11, i) == 0 for i in range(200)) > 190
