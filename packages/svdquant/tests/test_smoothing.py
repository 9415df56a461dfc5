"""SVD-aware smoothing: the scale formula and its edge cases, the exact-arithmetic identity, the 39-pair grid,
the search's scoring, and the quality ordering RTN << SmoothQuant < SVDQuant on outlier activations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sq_testing import outlier_activations, rtn_int4, snr_db, structured_weight

from svdquant.errors import ConfigError, InputError
from svdquant.low_rank import low_rank_branch
from svdquant.smoothing import (
    alpha_beta_grid,
    fake_quant_linear,
    search_smoothing,
    smooth_scale,
    smoothquant_scale,
)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 9),
    k=st.integers(1, 17),
    n=st.integers(1, 9),
    alpha=st.floats(0, 1),
    beta=st.floats(0, 1),
    seed=st.integers(0, 10_000),
)
def test_smoothing_leaves_the_float_product_unchanged(
    m: int, k: int, n: int, alpha: float, beta: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g, dtype=torch.float64) * torch.logspace(-2, 2, k, dtype=torch.float64)
    w = torch.randn(n, k, generator=g, dtype=torch.float64)
    s = smooth_scale(x.abs().amax(0), w.abs().amax(0), alpha, beta).double()
    assert s.shape == (k,) and bool((s > 0).all())
    # the runtime divides the input by s, the weight columns are multiplied by s
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T, rtol=1e-12, atol=1e-10)
    identity = fake_quant_linear(x.float(), s.float(), (w * s).float(), lambda t: t)
    torch.testing.assert_close(identity, (x @ w.T).float(), rtol=1e-4, atol=1e-3)


def test_smooth_scale_formula_and_edge_cases() -> None:
    xa = torch.tensor([4.0, 9.0, 0.0, 1.0])
    wa = torch.tensor([1.0, 4.0, 2.0, 0.0])
    # x^0.5 / w^0.5; the zero spans (channels 2 and 3) get 1
    torch.testing.assert_close(smooth_scale(xa, wa, 0.5, 0.5), torch.tensor([2.0, 1.5, 1.0, 1.0]))
    torch.testing.assert_close(smoothquant_scale(xa, wa), smooth_scale(xa, wa, 0.5, 0.5))
    torch.testing.assert_close(smooth_scale(xa, wa, 1.0, 0.0), torch.tensor([4.0, 9.0, 1.0, 1.0]))
    torch.testing.assert_close(smooth_scale(xa, wa, 0.0, 0.0), torch.ones(4))
    nan = torch.tensor([4.0, float("nan"), 1.0, 1.0])
    assert torch.equal(smooth_scale(nan, wa, 0.5, 0.5), torch.ones(4))  # any NaN: no smoothing at all
    huge = torch.tensor([1e30, 1.0, 1.0, 1.0])
    assert torch.equal(smooth_scale(huge, torch.full((4,), 1e-30), 1.0, 1.0), torch.ones(4))  # overflow
    with pytest.raises(InputError, match="same length"):
        smooth_scale(xa, wa[:3], 0.5, 0.5)


def test_alpha_beta_grid_is_the_reference_39_pairs() -> None:
    grid = alpha_beta_grid(20)
    assert len(grid) == 39 and len(set(grid)) == 39 and grid[0] == (0.0, 0.0)
    assert {a for a, b in grid if b == 0.0 and a > 0} == {i / 20 for i in range(1, 20)}
    assert all(b == pytest.approx(1 - a) for a, b in grid[20:])
    assert len(alpha_beta_grid(4)) == 7
    with pytest.raises(ConfigError, match="num_grids"):
        alpha_beta_grid(0)


def test_search_scores_each_candidate_by_the_output_error() -> None:
    x = outlier_activations(64, 128, seed=1)
    w = structured_weight(64, 128, seed=2)
    res = search_smoothing(x, w, rtn_int4, rtn_int4, rank=0, num_grids=4)
    assert len(res.errors) == len(res.candidates) == 7
    best = res.errors.index(res.best_error)
    assert (res.alpha, res.beta) == res.candidates[best]
    torch.testing.assert_close(res.scale, smooth_scale(x.abs().amax(0), w.abs().amax(0), res.alpha, res.beta))
    for (a, b), err in zip(res.candidates, res.errors, strict=True):
        s = smooth_scale(x.abs().amax(0), w.abs().amax(0), a, b)
        y = fake_quant_linear(x, s, rtn_int4(w * s), rtn_int4)
        assert err == pytest.approx(float((y - x @ w.T).double().square().mean()), rel=1e-6)
    assert res.best_error < res.errors[0]  # smoothing beats no smoothing on outlier activations


def test_search_on_layers_sharing_an_input_sums_their_errors() -> None:
    x = outlier_activations(32, 128, seed=3)
    ws = [structured_weight(n, 128, seed=n) for n in (64, 32)]
    grid = [(0.5, 0.5)]
    shared = search_smoothing(x, ws, rtn_int4, rtn_int4, rank=0, grid=grid)
    # one smoothing vector from the spans of both weights; the MSE is the row-weighted mean of the layers' ones
    s = smooth_scale(x.abs().amax(0), torch.cat(ws).abs().amax(0), 0.5, 0.5)
    torch.testing.assert_close(shared.scale, s)
    singles = [
        float((fake_quant_linear(x, s, rtn_int4(w * s), rtn_int4) - x @ w.T).double().square().mean()) for w in ws
    ]
    assert shared.best_error == pytest.approx((64 * singles[0] + 32 * singles[1]) / 96, rel=1e-6)
    with_branch = search_smoothing(x, ws, rtn_int4, rtn_int4, rank=16, grid=grid)
    assert with_branch.best_error < shared.best_error


def test_w4a4_svdquant_beats_smoothquant_and_rtn_on_outlier_activations() -> None:
    m, k, n = 256, 256, 256
    x = outlier_activations(m, k, seed=0)
    w = structured_weight(n, k, seed=1)
    y = x @ w.T
    w4a16 = snr_db(y, x @ rtn_int4(w).T)
    rtn = snr_db(y, rtn_int4(x) @ rtn_int4(w).T)
    s_sq = smoothquant_scale(x.abs().amax(0), w.abs().amax(0))
    smoothquant = snr_db(y, fake_quant_linear(x, s_sq, rtn_int4(w * s_sq), rtn_int4))
    search = search_smoothing(x, w, rtn_int4, rtn_int4, rank=32, svd="randomized")
    s = search.scale
    branch = low_rank_branch(w * s, 32, rtn_int4, x=x / s)  # the branch of the smoothed layer, full iteration
    svdquant = snr_db(y, fake_quant_linear(x, s, branch.residual, rtn_int4, branch.up, branch.down))
    print(
        f"\nSNR dB (M=K=N=256, INT4 g64 RTN): W4A16 {w4a16:.2f}, W4A4 RTN {rtn:.2f}, W4A4 SmoothQuant {smoothquant:.2f},"
        f" W4A4 SVDQuant r32 {svdquant:.2f} (alpha {search.alpha}, beta {search.beta:.2f},"
        f" {branch.iterations} rounds)"
    )
    assert smoothquant > rtn + 3.0
    assert svdquant > smoothquant + 6.0  # the goal
    assert svdquant > w4a16 - 3.0


def test_search_bad_input_is_a_clear_error() -> None:
    x = torch.randn(16, 64)
    w = torch.randn(32, 64)
    with pytest.raises(InputError, match=r"\[0, 32\]; got 33"):
        search_smoothing(x, w, rtn_int4, rtn_int4, rank=33)
    bad = x.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(InputError, match="calibration inputs x must be finite"):
        search_smoothing(bad, w, rtn_int4, rtn_int4, rank=4)
    with pytest.raises(InputError, match=r"shape \[out_features, 64\]"):
        search_smoothing(x, torch.randn(32, 48), rtn_int4, rtn_int4, rank=4)
    with pytest.raises(ConfigError, match="grid is empty"):
        search_smoothing(x, w, rtn_int4, rtn_int4, rank=4, grid=[])
    with pytest.raises(ConfigError, match="svd must be"):
        search_smoothing(x, w, rtn_int4, rtn_int4, rank=4, svd="qr")  # type: ignore[arg-type]
