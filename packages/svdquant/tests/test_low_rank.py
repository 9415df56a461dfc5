"""The iterative low-rank branch: SVD_r exactness, best-iterate and early-stop rules, randomized vs exact SVD,
the shared down-projection of q/k/v, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sq_testing import outlier_activations, rtn_int4, snr_db, structured_weight

from svdquant.errors import ConfigError, InputError
from svdquant.low_rank import low_rank_branch, low_rank_branch_shared, svd_r


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 24), k=st.integers(1, 24), r=st.integers(1, 6), seed=st.integers(0, 1000))
def test_svd_r_recovers_an_exact_low_rank_matrix(n: int, k: int, r: int, seed: int) -> None:
    r = min(r, n, k)
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, r, generator=g, dtype=torch.float64) @ torch.randn(r, k, generator=g, dtype=torch.float64)
    for method in ("exact", "randomized"):
        up, down = svd_r(a, r, svd=method)
        assert up.shape == (n, r) and down.shape == (r, k)
        torch.testing.assert_close(up @ down, a, rtol=0, atol=1e-9 * max(1.0, float(a.abs().max())))
        # down has orthonormal rows; up carries the singular values
        torch.testing.assert_close(down @ down.T, torch.eye(r, dtype=torch.float64), rtol=0, atol=1e-9)
    s = torch.linalg.svdvals(a)[:r]
    torch.testing.assert_close(svd_r(a, r)[0].norm(dim=0), s, rtol=1e-9, atol=1e-9)


def test_best_iterate_is_kept_and_never_worse_than_the_first() -> None:
    w = structured_weight(128, 192, seed=3)
    x = outlier_activations(64, 192, seed=4)
    for xs in (None, x):
        res = low_rank_branch(w, 16, rtn_int4, iters=30, early_stop=False, x=xs)
        assert res.iterations == 30 and len(res.errors) == 31
        assert res.errors[res.best_iteration] == min(res.errors) <= res.errors[0]
        assert res.errors[res.best_iteration] < 0.9 * res.errors[0]  # the refinement does help here
        # the returned residual is the quantized remainder of the kept branch
        torch.testing.assert_close(res.residual, rtn_int4(w - res.up @ res.down), rtol=0, atol=1e-5)
        d = (w - res.weight()).double()
        direct = d.square().mean() if xs is None else (xs.double() @ d.T).square().mean()
        assert float(direct) == pytest.approx(res.errors[res.best_iteration], rel=1e-4)


def test_early_stop_follows_the_patience_rule() -> None:
    w = structured_weight(96, 128, seed=5)
    full = low_rank_branch(w, 8, rtn_int4, iters=60, early_stop=False)
    for patience in (1, 3):
        res = low_rank_branch(w, 8, rtn_int4, iters=60, patience=patience, min_rel_improvement=1e-3)
        assert res.iterations < 60
        # it ran exactly `patience` rounds past the best one, none of which improved by 0.1 %
        assert res.iterations == res.best_iteration + patience
        tail = res.errors[res.best_iteration + 1 :]
        assert all(e >= res.errors[res.best_iteration] * (1 - 1e-3) for e in tail)
        assert res.errors == full.errors[: res.iterations + 1]  # same trajectory, cut short


def test_randomized_svd_is_close_to_exact_and_deterministic() -> None:
    k, n = 512, 256
    w = structured_weight(n, k, seed=6)
    x = outlier_activations(128, k, seed=7)
    kwargs = {"iters": 8, "x": x}
    exact = low_rank_branch(w, 32, rtn_int4, svd="exact", **kwargs)  # type: ignore[arg-type]
    rand = low_rank_branch(w, 32, rtn_int4, svd="randomized", seed=11, **kwargs)  # type: ignore[arg-type]
    y = x @ w.T
    snr_exact, snr_rand = snr_db(y, x @ exact.weight().T), snr_db(y, x @ rand.weight().T)
    # the iterates of the two paths differ, so their best SNRs wander by a few tenths of a dB at this width
    assert abs(snr_exact - snr_rand) < 0.4, (snr_exact, snr_rand)
    state = torch.get_rng_state()
    again = low_rank_branch(w, 32, rtn_int4, svd="randomized", seed=11, **kwargs)  # type: ignore[arg-type]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    assert torch.equal(again.up, rand.up) and torch.equal(again.down, rand.down) and again.errors == rand.errors
    rand64 = low_rank_branch(w, 32, rtn_int4, svd="randomized", svd_dtype=torch.float64, **kwargs)  # type: ignore[arg-type]
    assert abs(snr_db(y, x @ rand64.weight().T) - snr_exact) < 0.4


def test_shared_down_projection_reconstructs_each_layer() -> None:
    k = 128
    ws = [structured_weight(n, k, seed=10 + n) for n in (64, 64, 32)]
    seen: list[tuple[int, ...]] = []

    def quantizer(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape))
        return rtn_int4(t)

    x = outlier_activations(48, k, seed=2)
    res = low_rank_branch_shared(ws, 16, quantizer, iters=5, x=x)
    assert res.down.shape == (16, k) and [u.shape for u in res.ups] == [(64, 16), (64, 16), (32, 16)]
    assert set(seen) == {(64, k), (32, k)}  # each layer's rows are quantized on their own
    cat = low_rank_branch(torch.cat(ws), 16, rtn_int4, iters=5, x=x)
    torch.testing.assert_close(torch.cat(res.ups), cat.up)
    torch.testing.assert_close(res.down, cat.down)
    for w, up, residual in zip(ws, res.ups, res.residuals, strict=True):
        torch.testing.assert_close(residual, rtn_int4(w - up @ res.down), rtol=0, atol=1e-5)
        assert snr_db(x @ w.T, x @ (up @ res.down + residual).T) > snr_db(x @ w.T, x @ rtn_int4(w).T)


def test_bad_rank_and_non_finite_input_are_clear_errors() -> None:
    w = torch.randn(32, 64)
    with pytest.raises(InputError, match=r"rank must be in \[1, min\(out_features, in_features\)\] = \[1, 32\]"):
        low_rank_branch(w, 33, rtn_int4)
    with pytest.raises(InputError, match="got 0"):
        low_rank_branch(w, 0, rtn_int4)
    bad = w.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(InputError, match=r"weight must be finite; found 1 NaN/Inf .*\(3, 5\)"):
        low_rank_branch(bad, 4, rtn_int4)
    x = torch.randn(8, 64)
    x[0, 0] = float("inf")
    with pytest.raises(InputError, match="calibration inputs x must be finite"):
        low_rank_branch(w, 4, rtn_int4, x=x)
    with pytest.raises(InputError, match=r"shape \[\.\.\., 64\]"):
        low_rank_branch(w, 4, rtn_int4, x=torch.randn(8, 63))
    with pytest.raises(InputError, match="2-D"):
        low_rank_branch(torch.randn(4, 4, 4), 2, rtn_int4)
    with pytest.raises(ConfigError, match="svd must be"):
        low_rank_branch(w, 4, rtn_int4, svd="lanczos")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="same in_features"):
        low_rank_branch_shared([w, torch.randn(32, 32)], 4, rtn_int4)
    with pytest.raises(InputError, match=r"\[1, 64\]"):  # shared rank bound: min(sum N_i, K)
        low_rank_branch_shared([w, w, w], 65, rtn_int4)
