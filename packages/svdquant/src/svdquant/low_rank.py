"""The 16-bit low-rank branch of SVDQuant, refined iteratively against the 4-bit residual.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2: after smoothing, the weight is split as ``W = L1 L2 + R`` where ``L1 L2`` is a rank-r branch kept in
16 bits and only the residual ``R`` is quantized. Starting from ``L = SVD_r(W)``, each round refits the branch to
what the quantizer loses, ``L <- SVD_r(W - Q(W - L))``, and the best iterate is kept (the reference
implementation's ``num_iters: 100, early_stop: true``).

Each iterate is scored by the layer output error ``mean |x (W - (L + Q(W - L)))^T|^2`` when calibration inputs
``x`` are given (computed through the input Gram matrix, so the cost does not grow with the token count), else by
the weight error ``mean |W - (L + Q(W - L))|^2``.

Layers that share an input (q/k/v) share one down-projection: the branch is fitted on their weights concatenated
along the output rows, and the up-projection is split back per layer (:func:`low_rank_branch_shared`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from svdquant.errors import ConfigError, InputError

__all__ = [
    "LowRankResult",
    "SharedLowRankResult",
    "WeightQuantizer",
    "check_finite",
    "low_rank_branch",
    "low_rank_branch_shared",
    "split_rows_quantizer",
    "svd_r",
]

WeightQuantizer = Callable[[Tensor], Tensor]
"""Fake-quantizes a float32 ``[N, K]`` weight (quantize then dequantize); returns the same shape."""

SVDMethod = Literal["exact", "randomized"]


@dataclass(frozen=True)
class LowRankResult:
    """A fitted low-rank branch: ``W ~= up @ down + residual``.

    ``up`` ``[N, r]`` holds the singular values (``U[:, :r] * S[:r]``); ``down`` ``[r, K]`` is ``Vh[:r]`` with
    orthonormal rows. ``residual`` is the fake-quantized ``Q(W - up @ down)``. All three are float32.
    ``errors[i]`` is the score of iterate ``i`` (iterate 0 is the plain ``SVD_r(W)``); ``best_iteration`` indexes
    the kept one; ``iterations`` is how many refinement rounds ran (``len(errors) - 1``).
    """

    up: Tensor
    down: Tensor
    residual: Tensor
    errors: tuple[float, ...]
    best_iteration: int
    iterations: int

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def weight(self) -> Tensor:
        """The effective weight the quantized layer applies (``up @ down + residual``), float32."""
        return torch.addmm(self.residual, self.up, self.down)


@dataclass(frozen=True)
class SharedLowRankResult:
    """A branch shared by layers with one input: one ``down`` ``[r, K]``, one ``up`` ``[N_i, r]`` and one
    fake-quantized ``residual`` ``[N_i, K]`` per layer; the other fields are those of :class:`LowRankResult`
    for the concatenated layer."""

    ups: tuple[Tensor, ...]
    down: Tensor
    residuals: tuple[Tensor, ...]
    errors: tuple[float, ...]
    best_iteration: int
    iterations: int


def check_finite(name: str, t: Tensor) -> None:
    """Raise :class:`InputError` if ``t`` holds NaN or Inf, saying how many and where the first one is."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise InputError(
            f"{name} must be finite; found {int(bad.sum())} NaN/Inf value(s) of {t.numel()} "
            f"(first at index {first}, value {t[first].item()})"
        )


def _check_weight(name: str, w: Tensor) -> None:
    if not isinstance(w, Tensor) or w.ndim != 2 or not w.is_floating_point():
        found = f"{w.dtype} tensor of shape {tuple(w.shape)}" if isinstance(w, Tensor) else type(w).__name__
        raise InputError(f"{name} must be a 2-D floating-point [out_features, in_features] tensor; got {found}")
    check_finite(name, w)


def _check_rank(rank: int, n: int, k: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise InputError(f"rank must be an int; got {type(rank).__name__}")
    if not 1 <= rank <= min(n, k):
        raise InputError(
            f"rank must be in [1, min(out_features, in_features)] = [1, {min(n, k)}] for a [{n}, {k}] weight; "
            f"got {rank}"
        )


def _check_options(iters: int, patience: int, svd: str, oversample: int, svd_dtype: torch.dtype) -> None:
    if iters < 0:
        raise ConfigError(f"iters must be >= 0; got {iters}")
    if patience < 1:
        raise ConfigError(f"patience must be >= 1; got {patience}")
    if svd not in ("exact", "randomized"):
        raise ConfigError(f"svd must be 'exact' or 'randomized'; got {svd!r}")
    if oversample < 0:
        raise ConfigError(f"oversample must be >= 0; got {oversample}")
    if svd_dtype not in (torch.float32, torch.float64):
        raise ConfigError(f"svd_dtype must be torch.float32 or torch.float64; got {svd_dtype}")


def svd_r(
    a: Tensor,
    rank: int,
    *,
    svd: SVDMethod = "exact",
    oversample: int = 16,
    power_iters: int = 4,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """The best rank-``rank`` factorisation ``a ~= up @ down``, ``up = U[:, :r] * S[:r]``, ``down = Vh[:r]``.

    ``"exact"``: full SVD (LAPACK) in the dtype of ``a``. ``"randomized"``: Halko et al.'s range finder through
    ``torch.svd_lowrank`` with ``rank + oversample`` probes and ``power_iters`` power iterations; its Gaussian
    probes come from a generator seeded with ``seed`` (the global RNG is left untouched), so it is deterministic.
    """
    if svd == "exact":
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        return u[:, :rank] * s[:rank], vh[:rank]
    q = min(rank + oversample, min(a.shape))
    # svd_lowrank draws its probes from the global RNG: fork it so the result depends on `seed` only.
    on_cpu = a.device.type == "cpu"
    with torch.random.fork_rng(devices=[] if on_cpu else [a.device], device_type="cuda" if on_cpu else a.device.type):
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(a, q=q, niter=power_iters)
    return u[:, :rank] * s[:rank], v[:, :rank].T


def _gram(x: Tensor, k: int) -> Tensor:
    if x.ndim < 2 or x.shape[-1] != k:
        raise InputError(f"calibration inputs x must have shape [..., {k}] (in_features last); got {tuple(x.shape)}")
    check_finite("calibration inputs x", x)
    x2 = x.reshape(-1, k).double()
    return (x2.T @ x2) / x2.shape[0]


def _fit(
    w: Tensor,
    rank: int,
    quantize_w: WeightQuantizer,
    *,
    iters: int,
    early_stop: bool,
    patience: int,
    min_rel_improvement: float,
    svd: SVDMethod,
    oversample: int,
    power_iters: int,
    seed: int,
    svd_dtype: torch.dtype,
    gram: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, list[float], int]:
    # The exact path runs in float64 as the reference does; the randomized path in the dtype asked for.
    work = w.to(torch.float64 if svd == "exact" else svd_dtype)

    def quantize(r: Tensor) -> Tensor:
        # Quantizers see float32 (the dtype every format handles), whatever the working precision.
        q = quantize_w(r.float())
        if q.shape != r.shape:
            raise InputError(f"the weight quantizer must return shape {tuple(r.shape)}; got {tuple(q.shape)}")
        return q.to(work.dtype)

    def score(err: Tensor) -> float:
        if gram is None:
            return float(err.double().square().mean())
        e = err.double()
        # mean over tokens and output rows of (x e^T)^2 = trace(e G e^T) / N with G = x^T x / M
        return float(((e @ gram) * e).sum() / e.shape[0])

    up, down = svd_r(work, rank, svd=svd, oversample=oversample, power_iters=power_iters, seed=seed)
    q = quantize(work - up @ down)
    errors = [score(work - up @ down - q)]
    best = (up, down, q)
    best_i, since_best = 0, 0
    for i in range(1, iters + 1):
        # Refit the branch to the part of W the quantizer keeps losing: W - Q(W - L).
        up, down = svd_r(work - q, rank, svd=svd, oversample=oversample, power_iters=power_iters, seed=seed + i)
        q = quantize(work - up @ down)
        err = score(work - up @ down - q)
        errors.append(err)
        if err < errors[best_i] * (1.0 - min_rel_improvement):
            best, best_i, since_best = (up, down, q), i, 0
        else:
            since_best += 1
            if early_stop and since_best >= patience:
                break
        if not math.isfinite(err):
            break
    up, down, q = best
    return up.float(), down.float(), q.float(), errors, best_i


def low_rank_branch(
    w: Tensor,
    rank: int,
    quantize_w: WeightQuantizer,
    *,
    iters: int = 100,
    early_stop: bool = True,
    patience: int = 1,
    min_rel_improvement: float = 1e-4,
    svd: SVDMethod = "exact",
    oversample: int = 16,
    power_iters: int = 4,
    seed: int = 0,
    svd_dtype: torch.dtype = torch.float32,
    x: Tensor | None = None,
) -> LowRankResult:
    """Fit the rank-``rank`` 16-bit branch of ``w`` ``[N, K]`` against the 4-bit residual ``quantize_w(w - L)``.

    Iterate 0 is ``L = SVD_r(w)``; round ``i`` sets ``L <- SVD_r(w - Q(w - L))``, for at most ``iters`` rounds.
    Each iterate is scored by the output error on ``x`` ``[..., K]`` if given, else by the weight error, and the
    best one is returned. Early stop (patience rule): an iterate *improves* when its error is below the best so far
    by more than the fraction ``min_rel_improvement``; after ``patience`` consecutive rounds without improvement
    the loop stops (``patience=1`` stops at the first round that fails to improve, as the reference does).

    ``svd="exact"`` runs the whole iteration in float64 with a full SVD; ``svd="randomized"`` in ``svd_dtype``
    (float32 or float64) with ``torch.svd_lowrank`` (``rank + oversample`` probes, ``power_iters`` power
    iterations, probes seeded by ``seed + round``: deterministic).

    Raises :class:`InputError` for a non-2-D or non-finite ``w`` or ``x``, or a rank outside
    ``[1, min(N, K)]``; :class:`ConfigError` for bad options.
    """
    _check_weight("weight", w)
    n, k = w.shape
    _check_rank(rank, n, k)
    _check_options(iters, patience, svd, oversample, svd_dtype)
    gram = None if x is None else _gram(x, k)
    up, down, q, errors, best_i = _fit(
        w,
        rank,
        quantize_w,
        iters=iters,
        early_stop=early_stop,
        patience=patience,
        min_rel_improvement=min_rel_improvement,
        svd=svd,
        oversample=oversample,
        power_iters=power_iters,
        seed=seed,
        svd_dtype=svd_dtype,
        gram=gram,
    )
    return LowRankResult(up, down, q, tuple(errors), best_i, len(errors) - 1)


def split_rows_quantizer(quantize_w: WeightQuantizer, sizes: Sequence[int]) -> WeightQuantizer:
    """A quantizer for row-concatenated layers that quantizes each layer's rows on their own, so per-tensor
    scales (NVFP4) stay per layer as they are at run time."""
    sizes = list(sizes)

    def quantize(w: Tensor) -> Tensor:
        return torch.cat([quantize_w(part) for part in torch.split(w, sizes, dim=0)], dim=0)

    return quantize


def low_rank_branch_shared(
    ws: Sequence[Tensor],
    rank: int,
    quantize_w: WeightQuantizer,
    *,
    iters: int = 100,
    early_stop: bool = True,
    patience: int = 1,
    min_rel_improvement: float = 1e-4,
    svd: SVDMethod = "exact",
    oversample: int = 16,
    power_iters: int = 4,
    seed: int = 0,
    svd_dtype: torch.dtype = torch.float32,
    x: Tensor | None = None,
) -> SharedLowRankResult:
    """One branch for layers that read the same input (q/k/v): :func:`low_rank_branch` on the weights
    concatenated along the output rows, with ``quantize_w`` applied to each layer's rows separately. The shared
    ``down`` ``[r, K]`` is returned once, ``up`` is split back into one ``[N_i, r]`` per layer. The rank bound is
    ``min(sum N_i, K)``. The score sums the errors of all layers (each output element weighs the same)."""
    if len(ws) == 0:
        raise InputError("low_rank_branch_shared needs at least one weight; got an empty sequence")
    for i, w in enumerate(ws):
        _check_weight(f"weight {i}", w)
    ks = {w.shape[1] for w in ws}
    if len(ks) != 1:
        raise InputError(
            f"layers sharing a down-projection must have the same in_features; got {[tuple(w.shape) for w in ws]}"
        )
    sizes = [w.shape[0] for w in ws]
    dtype = torch.promote_types(torch.float32, ws[0].dtype)
    result = low_rank_branch(
        torch.cat([w.to(dtype) for w in ws], dim=0),
        rank,
        split_rows_quantizer(quantize_w, sizes),
        iters=iters,
        early_stop=early_stop,
        patience=patience,
        min_rel_improvement=min_rel_improvement,
        svd=svd,
        oversample=oversample,
        power_iters=power_iters,
        seed=seed,
        svd_dtype=svd_dtype,
        x=x,
    )
    return SharedLowRankResult(
        ups=tuple(u.contiguous() for u in torch.split(result.up, sizes, dim=0)),
        down=result.down,
        residuals=tuple(r.contiguous() for r in torch.split(result.residual, sizes, dim=0)),
        errors=result.errors,
        best_iteration=result.best_iteration,
        iterations=result.iterations,
    )
