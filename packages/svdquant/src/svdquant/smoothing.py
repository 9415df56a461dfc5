"""SVD-aware smoothing: the per-layer (alpha, beta) search of SVDQuant, and the SmoothQuant baseline.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2 "Migrate outliers from activations to weights", building on SmoothQuant (Xiao et al., ICML 2023):
per input channel ``s = span(X)^alpha / span(W)^beta`` (spans are absolute maxima), the input is divided by ``s``
and the weight's columns multiplied by it, so ``(x / s)(W * s)^T = x W^T`` in exact arithmetic while the
activation outliers move into the weight, where the 16-bit low-rank branch absorbs them.

The reference searches (alpha, beta) per layer over a grid (``beta: -2, num_grids: 20``: 39 candidates) and
scores each candidate by the layer's output error with the low-rank branch in place. Here the candidate's
output is computed the way the runtime computes it:
``y = Q_x(x / s) Q_w(W s - L)^T + (x / s) L^T``, i.e. the branch reads the 16-bit smoothed input (as the
fused kernel does), not the 4-bit one. The bias cancels in the error and is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from svdquant.errors import ConfigError, InputError
from svdquant.low_rank import (
    SVDMethod,
    WeightQuantizer,
    _fit,
    check_finite,
    split_rows_quantizer,
)

__all__ = [
    "ActQuantizer",
    "SmoothingResult",
    "alpha_beta_grid",
    "fake_quant_linear",
    "search_smoothing",
    "smooth_scale",
    "smoothquant_scale",
]

ActQuantizer = Callable[[Tensor], Tensor]
"""Fake-quantizes float32 activations ``[M, K]`` (dynamic, per token per group); returns the same shape."""


@dataclass(frozen=True)
class SmoothingResult:
    """Outcome of :func:`search_smoothing`: the chosen ``alpha``/``beta``, the smoothing vector ``scale`` ``[K]``
    (float32; the runtime divides the input by it, the weight columns are multiplied by it), and every candidate
    ``(alpha, beta)`` with its output MSE, in search order."""

    alpha: float
    beta: float
    scale: Tensor
    candidates: tuple[tuple[float, float], ...]
    errors: tuple[float, ...]

    @property
    def best_error(self) -> float:
        return min(self.errors)


def smooth_scale(x_absmax: Tensor, w_absmax: Tensor, alpha: float, beta: float) -> Tensor:
    """Per-input-channel smoothing ``s = x_absmax^alpha / w_absmax^beta`` (float32 ``[K]``).

    A channel where either span is zero (a dead input or weight column, whose scale cannot change the output)
    gets 1, as does any zero result; if anything else is NaN or Inf (non-finite spans, overflow) the whole vector
    is ones, i.e. no smoothing, as in the reference.
    """
    if x_absmax.ndim != 1 or w_absmax.shape != x_absmax.shape:
        raise InputError(
            f"x_absmax and w_absmax must be 1-D of the same length (one span per input channel); "
            f"got {tuple(x_absmax.shape)} and {tuple(w_absmax.shape)}"
        )
    xs, ws = x_absmax.double(), w_absmax.double()
    scale = xs.pow(alpha) / ws.pow(beta)
    scale = torch.where((xs == 0) | (ws == 0) | (scale == 0), torch.ones_like(scale), scale).float()
    if not bool(torch.isfinite(scale).all()):
        return torch.ones_like(scale)
    return scale


def smoothquant_scale(x_absmax: Tensor, w_absmax: Tensor, alpha: float = 0.5) -> Tensor:
    """The SmoothQuant baseline: ``s = x_absmax^alpha / w_absmax^(1 - alpha)`` (alpha 0.5 by default)."""
    return smooth_scale(x_absmax, w_absmax, alpha, 1.0 - alpha)


def alpha_beta_grid(num_grids: int = 20) -> tuple[tuple[float, float], ...]:
    """The reference's ``beta = -2`` candidate set: ``(0, 0)``, then ``(a, 0)`` and ``(a, 1 - a)`` for
    ``a = 1/num_grids ... (num_grids - 1)/num_grids`` (39 pairs for 20 grids)."""
    if num_grids < 1:
        raise ConfigError(f"num_grids must be >= 1; got {num_grids}")
    steps = [i / num_grids for i in range(1, num_grids)]
    return ((0.0, 0.0), *((a, 0.0) for a in steps), *((a, 1.0 - a) for a in steps))


def fake_quant_linear(
    x: Tensor,
    scale: Tensor,
    residual_q: Tensor,
    quantize_x: ActQuantizer,
    up: Tensor | None = None,
    down: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """The quantized layer as the runtime computes it, in float32: ``Q_x(x / s) R^T + ((x / s) down^T) up^T
    + bias``, where ``residual_q`` ``R`` ``[N, K]`` is the fake-quantized smoothed residual and ``up``/``down``
    the 16-bit branch (omit both for a layer without one)."""
    xs = x.float() / scale.float()
    y = quantize_x(xs) @ residual_q.float().T
    if (up is None) != (down is None):
        raise InputError("up and down must be given together (or both omitted for no low-rank branch)")
    if up is not None and down is not None:
        y = y + (xs @ down.float().T) @ up.float().T
    return y if bias is None else y + bias.float()


def search_smoothing(
    x: Tensor,
    w: Tensor | Sequence[Tensor],
    quantize_w: WeightQuantizer,
    quantize_x: ActQuantizer,
    rank: int = 32,
    *,
    grid: Sequence[tuple[float, float]] | None = None,
    num_grids: int = 20,
    lowrank_iters: int = 1,
    svd: SVDMethod = "exact",
    seed: int = 0,
    x_absmax: Tensor | None = None,
) -> SmoothingResult:
    """Grid search of the smoothing (alpha, beta) of one layer, scored by the layer's output MSE on ``x``.

    ``x`` ``[M, K]`` are calibration inputs; ``w`` is the ``[N, K]`` weight, or a list of weights that read the
    same input (q/k/v), which then share one smoothing vector and one low-rank down-projection (the error sums
    over their outputs, and ``quantize_w`` is applied to each layer's rows separately). ``x_absmax`` ``[K]``
    overrides the input spans (e.g. maxima over a larger calibration set than the ``x`` used for scoring).

    For each candidate the branch of rank ``rank`` is fitted on the smoothed weight with ``lowrank_iters``
    refinement rounds (default 1, no early stop: the search only ranks candidates, and the final branch is fitted
    afterwards with the full iteration on the winner); ``rank=0`` searches without a branch (plain SmoothQuant
    style). The default grid is :func:`alpha_beta_grid` of ``num_grids``; ties keep the first candidate.
    """
    ws = [w] if isinstance(w, Tensor) else list(w)
    if not ws:
        raise InputError("search_smoothing needs at least one weight; got an empty sequence")
    if x.ndim != 2:
        raise InputError(f"calibration inputs x must be 2-D [tokens, in_features]; got shape {tuple(x.shape)}")
    k = x.shape[1]
    for i, wi in enumerate(ws):
        if wi.ndim != 2 or wi.shape[1] != k:
            raise InputError(f"weight {i} must have shape [out_features, {k}] to match x; got {tuple(wi.shape)}")
        check_finite(f"weight {i}", wi)
    check_finite("calibration inputs x", x)
    sizes = [wi.shape[0] for wi in ws]
    n = sum(sizes)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= min(n, k):
        raise InputError(f"rank must be an int in [0, min(out_features, in_features)] = [0, {min(n, k)}]; got {rank}")
    if lowrank_iters < 0:
        raise ConfigError(f"lowrank_iters must be >= 0; got {lowrank_iters}")
    if svd not in ("exact", "randomized"):
        raise ConfigError(f"svd must be 'exact' or 'randomized'; got {svd!r}")
    candidates = tuple(grid) if grid is not None else alpha_beta_grid(num_grids)
    if not candidates:
        raise ConfigError("the (alpha, beta) grid is empty")

    w_all = torch.cat([wi.float() for wi in ws], dim=0)
    x32 = x.float()
    if x_absmax is None:
        x_absmax = x32.abs().amax(dim=0)
    elif x_absmax.shape != (k,):
        raise InputError(f"x_absmax must have shape ({k},); got {tuple(x_absmax.shape)}")
    w_absmax = w_all.abs().amax(dim=0)
    quantize_rows = quantize_w if len(ws) == 1 else split_rows_quantizer(quantize_w, sizes)
    y_ref = x32 @ w_all.T
    gram = (x.double().T @ x.double()) / x.shape[0]

    errors: list[float] = []
    for alpha, beta in candidates:
        s = smooth_scale(x_absmax, w_absmax, alpha, beta)
        w_s = w_all * s
        if rank == 0:
            y = fake_quant_linear(x32, s, quantize_rows(w_s), quantize_x)
        else:
            s64 = s.double()
            up, down, r_q, _, _ = _fit(
                w_s,
                rank,
                quantize_rows,
                iters=lowrank_iters,
                early_stop=False,
                patience=1,
                min_rel_improvement=0.0,
                svd=svd,
                oversample=16,
                power_iters=4,
                seed=seed,
                svd_dtype=torch.float32,
                gram=gram / torch.outer(s64, s64),  # the Gram matrix of the smoothed input x / s
            )
            y = fake_quant_linear(x32, s, r_q, quantize_x, up, down)
        errors.append(float((y - y_ref).double().square().mean()))

    best = min(range(len(candidates)), key=errors.__getitem__)
    alpha, beta = candidates[best]
    return SmoothingResult(
        alpha=alpha,
        beta=beta,
        scale=smooth_scale(x_absmax, w_absmax, alpha, beta),
        candidates=candidates,
        errors=tuple(errors),
    )
