"""The DDOT numerical model (DOTA, arXiv:2305.19533, Sec. 3): exactness when ideal, each non-ideality, bad input."""

from __future__ import annotations

import pytest
import torch

from accel_sims.dota.device import DDOTConfig, photonic_matmul, quantize_signed
from accel_sims.errors import AccelSimsError


def _operands(seed: int = 0, shape: tuple[int, ...] = (3,)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, 20, 50, generator=g), torch.randn(*shape, 50, 16, generator=g)


def _rel(y: torch.Tensor, exact: torch.Tensor) -> float:
    return float((y - exact).norm() / exact.norm())


def test_ideal_without_quantization_is_exact() -> None:
    a, b = _operands()
    assert torch.allclose(photonic_matmul(a, b, DDOTConfig.ideal(None)), a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [12, 16])
def test_ideal_high_bits_close_to_exact(bits: int) -> None:
    a, b = _operands()
    assert _rel(photonic_matmul(a, b, DDOTConfig.ideal(bits)), a @ b) < 0.01


def test_error_falls_with_bits() -> None:
    a, b = _operands()
    errs = [
        _rel(photonic_matmul(a, b, DDOTConfig(in_bits=n, out_bits=n, adc_clip_sigmas=8.0)), a @ b) for n in (4, 6, 8)
    ]
    assert errs[0] > errs[1] > errs[2]


def test_balanced_coupler_has_no_imbalance_error_and_imbalance_matches_formula() -> None:
    a, b = _operands()
    ideal = DDOTConfig(in_bits=None, out_bits=None, kappa=0.5)
    assert torch.allclose(photonic_matmul(a, b, ideal), a @ b, atol=1e-4)
    # one chunk (K <= Nλ), unit-range operands: readout/2 = 2sqrt(κ(1-κ)) x.y + (2κ-1)/2 (|x|² - |y|²)
    x = torch.tensor([[0.5, -1.0, 0.25]])
    y = torch.tensor([[1.0], [0.5], [-1.0]])
    k = 0.6
    out = photonic_matmul(x, y, DDOTConfig(in_bits=None, out_bits=None, kappa=k))
    # per-vector scales are 1 (absmax of x row and y column are 1)
    expect = 2 * (k * (1 - k)) ** 0.5 * float(x @ y) + (2 * k - 1) / 2 * (float((x * x).sum()) - float((y * y).sum()))
    assert float(out) == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize(
    "field,values",
    [
        ("phase_noise_std_deg", (1.0, 5.0, 20.0)),
        ("detector_noise_std", (1e-4, 1e-3, 1e-2)),
        ("kappa", (0.501, 0.51, 0.55)),
    ],
)
def test_error_grows_with_noise(field: str, values: tuple[float, ...]) -> None:
    a, b = _operands()
    errs = []
    for v in values:
        cfg = DDOTConfig(in_bits=None, out_bits=None, **{field: v})
        errs.append(_rel(photonic_matmul(a, b, cfg, torch.Generator().manual_seed(1)), a @ b))
    assert 0 < errs[0] < errs[1] < errs[2]


def test_gaussian_phase_noise_model_matches_exact_in_size() -> None:
    a, b = _operands()
    exact, gauss = (
        _rel(
            photonic_matmul(
                a,
                b,
                DDOTConfig(in_bits=None, out_bits=None, phase_noise_std_deg=10.0, phase_noise_model=m),
                torch.Generator().manual_seed(2),
            ),
            a @ b,
        )
        for m in ("exact", "gaussian")
    )
    assert gauss == pytest.approx(exact, rel=0.25)


def test_signed_full_range_operands() -> None:
    # all four sign combinations and values at the full-scale ends
    a = torch.tensor([[1.0, -1.0, 0.5, -0.5], [-1.0, -1.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-0.5, 0.5], [1.0, -1.0]])
    out = photonic_matmul(a, b, DDOTConfig(num_wavelength=2, in_bits=8, out_bits=12))
    assert torch.allclose(out, a @ b, atol=0.02)
    assert (out.sign() == (a @ b).sign()).all()


def test_seeded_noise_is_deterministic() -> None:
    a, b = _operands()
    cfg = DDOTConfig(phase_noise_std_deg=3.0, detector_noise_std=1e-3, kappa=0.52)
    y1 = photonic_matmul(a, b, cfg, torch.Generator().manual_seed(7))
    y2 = photonic_matmul(a, b, cfg, torch.Generator().manual_seed(7))
    y3 = photonic_matmul(a, b, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_batch_broadcast_and_time_accumulation() -> None:
    a, b = _operands(shape=(2, 3))
    out = photonic_matmul(a, b[0, 0], DDOTConfig(in_bits=None, out_bits=None, time_accum=3))
    assert out.shape == (2, 3, 20, 16)
    assert torch.allclose(out, a @ b[0, 0], atol=1e-4)


def test_quantize_signed_grid() -> None:
    q = quantize_signed(torch.tensor([-1.0, -0.3, 0.0, 0.3, 1.0, 2.0]), 4)
    assert torch.allclose(q * 7, torch.round(q * 7))
    assert float(q.max()) == 1.0


@pytest.mark.parametrize(
    "kwargs", [{"in_bits": 0}, {"out_bits": 17}, {"in_bits": 20}, {"num_wavelength": 0}, {"kappa": 1.0}]
)
def test_bad_config_names_field(kwargs: dict[str, float]) -> None:
    with pytest.raises(AccelSimsError, match=next(iter(kwargs))):
        DDOTConfig(**kwargs)


def test_bad_shapes() -> None:
    with pytest.raises(AccelSimsError, match="contraction"):
        photonic_matmul(torch.ones(2, 3), torch.ones(4, 2), DDOTConfig())
    with pytest.raises(AccelSimsError, match="bits"):
        quantize_signed(torch.ones(2), 0)
