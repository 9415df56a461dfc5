"""The DDOT: DOTA's dynamically-operated optical dot-product engine, as a numerical model in PyTorch.

DOTA / Lightening-Transformer (arXiv:2305.19533), Sec. 3 (DDOT) and Sec. 4 (non-idealities); hw.md Sec. 4.2.
Both operands are dynamic: x and y are encoded by MZMs as signed field amplitudes on Nλ wavelengths (WDM). One arm
gets a -pi/2 phase shift, a directional coupler with power splitting κ mixes the two, and a balanced photodetector
pair reads, per wavelength and summed over wavelengths,

    I+ - I- = Σλ [ 4 sqrt(κ(1-κ)) xλ yλ cos δφλ + (2κ-1)(xλ² - yλ²) ]

(derived from the coupler's transfer matrix: at κ = 1/2 this is Σλ 2 xλ yλ; an imbalanced coupler adds the error
(2κ-1)(Σx² - Σy²); phase noise δφ ~ N(0, σ) multiplies each product by cos δφ). The readout is divided by the ideal
gain 2, so one readout of Nλ-long chunks equals their dot product.

What the model does, in order (one matrix product `a @ b`, K = contraction length):

1. Per-vector scaling (what the hardware's digital periphery does): each row of operand 1 (one height-side
   modulator bank) is divided by its absolute maximum, and each column of operand 2 (one width-side bank) by its
   own, so the DAC's full range [-1, 1] covers every vector; output (i, j) is multiplied back by row scale i x column
   scale j. (A single scale per matrix lets one outlier channel of a transformer's activations wipe out the rest.)
2. DAC quantization of both operands: signed, symmetric, `in_bits` bits (levels ±(2^(b-1)-1)).
3. K is cut into chunks of Nλ wavelengths; each chunk is one DDOT readout (zero-padded at the end).
4. `time_accum` consecutive readouts are integrated on the detector before one conversion (temporal accumulation).
5. Detector noise (shot + thermal, lumped): additive Gaussian with std `detector_noise_std` x the detector's full
   scale Nλ·T (normalised units), per conversion.
6. ADC quantization of each conversion: signed, `out_bits` bits over ±`adc_range` x full scale, clipped; or, with
   `adc_clip_sigmas`, over a range calibrated per matrix (batch / head slice) to that many RMS of the readouts (a
   TIA gain set by calibration, so small signals are not lost under a 4-bit step of the worst-case range).
7. Conversions are summed digitally and rescaled.

Supported bit widths are 1 to 16 (`BITS_RANGE`); outside, or a non-positive size, is an AccelSimsError.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from accel_sims.dota.params import Frozen
from accel_sims.errors import AccelSimsError

BITS_RANGE = (1, 16)


class DDOTConfig(Frozen):
    """Numerical settings of one DDOT readout chain. None bits = no quantization at that converter."""

    num_wavelength: int = Field(12, ge=1, description="Wavelengths per readout (dot-product chunk), DOTA: 12.")
    in_bits: int | None = Field(
        8, ge=BITS_RANGE[0], le=BITS_RANGE[1], description="DAC bits of both operands (1-16; None: no quantization)."
    )
    out_bits: int | None = Field(
        8, ge=BITS_RANGE[0], le=BITS_RANGE[1], description="ADC bits of each conversion (1-16; None: none)."
    )
    kappa: float = Field(0.5, gt=0.0, lt=1.0, description="Directional coupler power splitting ratio (ideal 0.5).")
    phase_noise_std_deg: float = Field(0.0, ge=0.0, description="Std of the phase noise δφ per product, degrees.")
    phase_noise_model: Literal["exact", "gaussian"] = Field(
        "exact",
        description=(
            "'exact': one δφ per product (materialises M x N x Nλ per readout, slow on big products); 'gaussian': "
            "the readout's exact mean e^(-σ²/2) Σxy and variance Var(cos δφ) Σx²y², as a Gaussian (fast)."
        ),
    )
    detector_noise_std: float = Field(
        0.0, ge=0.0, description="Detector noise std, relative to the detector's full scale (Nλ x time_accum)."
    )
    time_accum: int = Field(1, ge=1, description="Readouts integrated before one ADC conversion (DOTA-B: up to 3).")
    adc_range: float = Field(
        1.0, gt=0.0, le=1.0, description="ADC input range as a fraction of the largest possible readout (clips above)."
    )

    adc_clip_sigmas: float | None = Field(
        None,
        gt=0.0,
        description=(
            "None: the ADC spans adc_range x full scale. A number: the ADC gain is calibrated per matrix (batch / "
            "head slice) so its range is this many RMS of the (noise-free) readouts, capped at full scale (a "
            "calibrated TIA gain)."
        ),
    )

    @classmethod
    def ideal(cls, bits: int | None = None, num_wavelength: int = 12) -> DDOTConfig:
        """No noise, κ = 1/2: equals exact matmul up to DAC/ADC quantization at `bits` (None: exactly)."""
        return cls(num_wavelength=num_wavelength, in_bits=bits, out_bits=bits)


def quantize_signed(x: Tensor, bits: int) -> Tensor:
    """Round values in [-1, 1] to the signed symmetric grid of `bits` bits (levels k / (2^(bits-1) - 1))."""
    if not BITS_RANGE[0] <= bits <= BITS_RANGE[1]:
        raise AccelSimsError(f"bits: expected {BITS_RANGE[0]}..{BITS_RANGE[1]}, got {bits}")
    levels = max(2 ** (bits - 1) - 1, 1)  # 1 bit: {-1, 0, 1} as a sign-magnitude ternary, the coarsest useful grid
    return torch.round(x.clamp(-1.0, 1.0) * levels) / levels


def _scale(t: Tensor, dim: int) -> Tensor:
    """Absolute maximum along `dim` (kept), never zero: per-row (`dim=-1`) or per-column (`dim=-2`) scales."""
    return t.abs().amax(dim=dim, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)


def _calibrated_range(x: Tensor, y: Tensor, lam: int, t_acc: int, gain: float, full_scale: float) -> Tensor:
    """RMS `[..., 1, 1]` over the noise-free conversions of each slice (first pass of a calibrated ADC gain)."""
    chunks = math.ceil(x.shape[-1] / lam)
    total: Tensor | None = None
    for g0 in range(0, chunks, t_acc):
        lo, hi = g0 * lam, min(g0 + t_acc, chunks) * lam
        sq = ((x[..., :, lo:hi] @ y[..., lo:hi, :]) * gain).square().mean(dim=(-2, -1), keepdim=True)
        total = sq if total is None else total + sq
    assert total is not None
    groups = math.ceil(chunks / t_acc)
    return (total / groups).sqrt().clamp_min(full_scale * 1e-6)


def photonic_matmul(a: Tensor, b: Tensor, config: DDOTConfig, generator: torch.Generator | None = None) -> Tensor:
    """`a @ b` (`[..., M, K] @ [..., K, N]`, batch dims broadcast) computed through the DDOT model; float result.

    Vectorised over the batch and the M x N outputs; loops only over the K / (Nλ·T) conversions.
    """
    if a.dim() < 2 or b.dim() < 2:
        raise AccelSimsError(f"photonic_matmul: a and b must be at least 2-D, got shapes {tuple(a.shape)}, {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise AccelSimsError(
            f"photonic_matmul: contraction sizes differ: a {tuple(a.shape)} has K={a.shape[-1]}, "
            f"b {tuple(b.shape)} has K={b.shape[-2]}"
        )
    if a.shape[-1] < 1:
        raise AccelSimsError(f"photonic_matmul: contraction size K must be positive, got {a.shape[-1]}")
    dtype = a.dtype if a.dtype in (torch.float32, torch.float64) else torch.float32
    a, b = a.to(dtype), b.to(dtype)
    sa, sb = _scale(a, -1), _scale(b, -2)  # [..., M, 1], [..., 1, N]
    x, y = a / sa, b / sb
    if config.in_bits is not None:
        x, y = quantize_signed(x, config.in_bits), quantize_signed(y, config.in_bits)
    k_len = a.shape[-1]
    lam, t_acc = config.num_wavelength, config.time_accum
    chunks = math.ceil(k_len / lam)
    kappa = config.kappa
    gain = 2.0 * math.sqrt(kappa * (1.0 - kappa))  # interference term / ideal gain 2
    imbalance = (2.0 * kappa - 1.0) / 2.0
    sigma = math.radians(config.phase_noise_std_deg)
    full_scale = float(lam * t_acc)  # largest |readout| of T integrated chunks with |x|, |y| <= 1
    levels = None if config.out_bits is None else max(2 ** (config.out_bits - 1) - 1, 1)
    adc_fs = torch.tensor(full_scale * config.adc_range, dtype=dtype)
    if levels is not None and config.adc_clip_sigmas is not None:
        adc_fs = _calibrated_range(x, y, lam, t_acc, gain, full_scale) * config.adc_clip_sigmas
        adc_fs = adc_fs.clamp(max=full_scale)
    out: Tensor | None = None
    for g0 in range(0, chunks, t_acc):
        acc: Tensor | None = None
        for c in range(g0, min(g0 + t_acc, chunks)):
            xc, yc = x[..., :, c * lam : (c + 1) * lam], y[..., c * lam : (c + 1) * lam, :]
            if sigma > 0.0 and config.phase_noise_model == "gaussian":
                mean = math.exp(-(sigma**2) / 2)
                var = (1 + math.exp(-2 * sigma**2)) / 2 - mean**2  # Var(cos δφ), δφ ~ N(0, σ)
                spread = ((xc * xc) @ (yc * yc)).sqrt() * math.sqrt(var)
                noise = torch.randn(spread.shape, generator=generator, dtype=dtype, device=spread.device)
                inter = mean * (xc @ yc) + spread * noise
            elif sigma > 0.0:
                # each product xλ yλ gets its own cos δφ: materialise [..., M, N, Nλ] for this chunk only
                prod = xc[..., :, None, :] * yc.transpose(-1, -2)[..., None, :, :]
                noise = torch.randn(prod.shape, generator=generator, dtype=dtype, device=prod.device) * sigma
                inter = (prod * torch.cos(noise)).sum(-1)
            else:
                inter = xc @ yc
            readout = gain * inter
            if imbalance != 0.0:
                readout = readout + imbalance * ((xc * xc).sum(-1)[..., :, None] - (yc * yc).sum(-2)[..., None, :])
            acc = readout if acc is None else acc + readout
        assert acc is not None
        if config.detector_noise_std > 0.0:
            acc = acc + torch.randn(acc.shape, generator=generator, dtype=dtype, device=acc.device) * (
                config.detector_noise_std * full_scale
            )
        if levels is not None:
            acc = torch.round(torch.maximum(torch.minimum(acc, adc_fs), -adc_fs) / adc_fs * levels) * (adc_fs / levels)
        out = acc if out is None else out + acc
    assert out is not None
    return out * (sa * sb)
