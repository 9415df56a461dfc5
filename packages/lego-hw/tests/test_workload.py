import numpy as np
import pytest

from lego_hw.errors import LegoError, NonAffineAccessError
from lego_hw.workload import (
    Workload,
    attention_pv,
    attention_qk,
    batched_gemm,
    conv2d,
    depthwise_conv2d,
    gemm,
    mttkrp,
)


def test_gemm_parse_and_reference():
    wl = gemm(5, 3, 7)
    assert wl.loops == ("i", "j", "k") and wl.bounds == (5, 3, 7)
    assert wl.tensor("A").matrix == ((1, 0, 0), (0, 0, 1))
    assert wl.shape("A") == (5, 7) and wl.shape("B") == (7, 3) and wl.shape("C") == (5, 3)
    assert wl.reduction_loops() == ("k",) and wl.macs == 105
    rng = np.random.default_rng(0)
    x = wl.random_inputs(rng)
    np.testing.assert_array_equal(wl.reference(x)["C"], x["A"] @ x["B"])


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_reference_matches_direct_loops(stride):
    wl = conv2d(k=3, c=2, oh=3, ow=4, r=2, s=3, stride=stride, batch=2)
    x = wl.random_inputs(np.random.default_rng(1))
    w, i = x["W"], x["I"]
    ref = np.zeros((2, 3, 3, 4), dtype=np.int64)
    for n in range(2):
        for k in range(3):
            for y in range(3):
                for xx in range(4):
                    patch = i[n, :, stride * y : stride * y + 2, stride * xx : stride * xx + 3]
                    ref[n, k, y, xx] = (w[k] * patch).sum()
    np.testing.assert_array_equal(wl.reference(x)["O"], ref)
    assert wl.shape("I") == (2, 2, stride * 2 + 2, stride * 3 + 3)


def test_other_presets_reference():
    rng = np.random.default_rng(2)
    wl = attention_qk(2, 3, 4, 5)
    x = wl.random_inputs(rng)
    np.testing.assert_array_equal(wl.reference(x)["S"], np.einsum("hid,hjd->hij", x["Q"], x["K"]))
    wl = attention_pv(2, 3, 4, 5)
    x = wl.random_inputs(rng)
    np.testing.assert_array_equal(wl.reference(x)["O"], np.einsum("hij,hjd->hid", x["P"], x["V"]))
    wl = batched_gemm(2, 3, 4, 5)
    x = wl.random_inputs(rng)
    np.testing.assert_array_equal(wl.reference(x)["C"], x["A"] @ x["B"])
    wl = mttkrp(3, 4, 2, 5)
    x = wl.random_inputs(rng)
    np.testing.assert_array_equal(wl.reference(x)["D"], np.einsum("ijk,jr,kr->ir", x["X"], x["B"], x["C"]))
    wl = depthwise_conv2d(3, 2, 2, 2, 2)
    x = wl.random_inputs(rng)
    ref = np.zeros((1, 3, 2, 2), dtype=np.int64)
    for c in range(3):
        for y in range(2):
            for xx in range(2):
                ref[0, c, y, xx] = (x["W"][c] * x["I"][0, c, y : y + 2, xx : xx + 2]).sum()
    np.testing.assert_array_equal(wl.reference(x)["O"], ref)


@pytest.mark.parametrize(
    "expr, match",
    [
        ("C[i*k] += A[i]", "product of two iterators"),
        ("C[i % 2] += A[i]", "not affine"),
        ("C[i // 2] += A[i]", "not affine"),
        ("C[q] += A[i]", "unknown name 'q'"),
    ],
)
def test_non_affine_access_is_refused(expr, match):
    with pytest.raises(NonAffineAccessError, match=match):
        Workload.from_expr(expr, {"i": 4, "k": 3})


def test_bad_workloads():
    # Construction errors come wrapped in pydantic's ValidationError (a ValueError) with our message inside.
    with pytest.raises(ValueError, match="bound 0"):
        gemm(0, 2, 2)
    with pytest.raises(ValueError, match="exactly one output"):
        Workload(loops=("i",), bounds=(2,), tensors=())
    with pytest.raises(ValueError, match="below 0"):
        Workload.from_expr("C[i] += A[i - 1]", {"i": 4})
    with pytest.raises(LegoError, match="no tensor 'Z'"):
        gemm(2, 2, 2).tensor("Z")
    with pytest.raises(LegoError, match="missing input array 'B'"):
        gemm(2, 2, 2).reference({"A": np.zeros((2, 2))})
    with pytest.raises(LegoError, match=r"shape \(1, 2\), needs at least \(2, 2\)"):
        gemm(2, 2, 2).reference({"A": np.zeros((1, 2)), "B": np.zeros((2, 2))})
    with pytest.raises(Exception, match="frozen"):
        gemm(2, 2, 2).bounds = (1, 1, 1)  # type: ignore[misc]
