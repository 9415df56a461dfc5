from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lego_hw import intlinalg as la

small = st.integers(-4, 4)


def _mat(rows: int, cols: int):
    return st.lists(st.lists(small, min_size=cols, max_size=cols), min_size=rows, max_size=rows)


@settings(max_examples=200, deadline=None)
@given(_mat(3, 3))
def test_determinant_matches_numpy(m):
    assert la.determinant(m) == round(np.linalg.det(np.array(m, dtype=float)))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.data())
def test_kernel_basis_spans_the_integer_kernel(rows, cols, data):
    a = data.draw(_mat(rows, cols))
    basis = la.kernel_basis(a, cols)
    # Every basis vector is in the kernel, the basis has the rank-nullity size ...
    for v in basis:
        assert la.matvec(a, v) == (0,) * rows
    assert len(basis) == cols - np.linalg.matrix_rank(np.array(a, dtype=float))
    # ... and it spans the integer lattice, not only the rational kernel: every small integer kernel vector is an
    # integer combination of the basis (solve exactly and check integrality).
    if basis:
        b = np.array(basis, dtype=float).T
        for v in np.ndindex(*(3,) * cols):
            w = np.array(v) - 1
            if any(la.matvec(a, tuple(int(x) for x in w))):
                continue
            coef, *_ = np.linalg.lstsq(b, w, rcond=None)
            assert np.allclose(coef, np.round(coef), atol=1e-9), (a, basis, w)


def test_kernel_is_a_lattice_basis_not_a_rational_one():
    # x + 2y = 0 has the integer kernel spanned by (2, -1) (normalized to positive first entry).
    assert la.kernel_basis(((1, 2),)) == ((2, -1),)
    # 2x + 4y = 0: same lattice; a float rank test would also give 1 dim, but the gcd must not leak in.
    assert la.kernel_basis(((2, 4),)) == ((2, -1),)
    assert la.kernel_basis(((1, 0, 0), (0, 1, 0))) == ((0, 0, 1),)


def test_inverse_and_unimodular():
    m = ((1, 0, 0), (0, 1, 0), (1, 1, 1))
    assert la.integer_inverse(m) == ((1, 0, 0), (0, 1, 0), (-1, -1, 1))
    inv = la.inverse(((2, 0), (0, 1)))
    assert inv[0][0] == Fraction(1, 2)
    try:
        la.integer_inverse(((2, 0), (0, 1)))
    except ValueError as e:
        assert "unimodular" in str(e)
    else:
        raise AssertionError("expected ValueError")
