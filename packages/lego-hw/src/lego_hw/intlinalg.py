"""Exact integer linear algebra for the affine analyses (LEGO, arXiv:2509.12053, Sec. III).

Reuse and legality are questions about integer lattices: which space-time differences leave a tensor
index unchanged, whether a mapping is invertible. Floating-point rank tests (as in TensorLib) give wrong
answers on near-singular matrices; everything here uses Python integers and `fractions.Fraction`.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

IntMatrix = tuple[tuple[int, ...], ...]
IntVector = tuple[int, ...]


def as_matrix(rows: Sequence[Sequence[int]]) -> IntMatrix:
    """A tuple-of-tuples copy of `rows`; every row must have the same length and hold Python ints."""
    out = tuple(tuple(int(v) for v in row) for row in rows)
    if out and len({len(r) for r in out}) != 1:
        raise ValueError(f"ragged matrix: row lengths {[len(r) for r in out]}")
    return out


def matmul(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> IntMatrix:
    """a @ b in exact integers."""
    n = len(b)
    if a and len(a[0]) != n:
        raise ValueError(f"shape mismatch: {len(a)}x{len(a[0])} @ {n}x{len(b[0]) if b else 0}")
    cols = len(b[0]) if b else 0
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(n)) for j in range(cols)) for i in range(len(a)))


def matvec(a: Sequence[Sequence[int]], v: Sequence[int]) -> IntVector:
    """a @ v in exact integers."""
    return tuple(sum(x * y for x, y in zip(row, v, strict=True)) for row in a)


def determinant(m: Sequence[Sequence[int]]) -> int:
    """Determinant of a square integer matrix (fraction-free Bareiss elimination)."""
    n = len(m)
    if any(len(r) != n for r in m):
        raise ValueError("determinant needs a square matrix")
    if n == 0:
        return 1
    a = [list(r) for r in m]
    sign, prev = 1, 1
    for k in range(n - 1):
        if a[k][k] == 0:
            swap = next((i for i in range(k + 1, n) if a[i][k] != 0), None)
            if swap is None:
                return 0
            a[k], a[swap] = a[swap], a[k]
            sign = -sign
        for i in range(k + 1, n):
            for j in range(k + 1, n):
                a[i][j] = (a[i][j] * a[k][k] - a[i][k] * a[k][j]) // prev
        prev = a[k][k]
    return sign * a[n - 1][n - 1]


def inverse(m: Sequence[Sequence[int]]) -> tuple[tuple[Fraction, ...], ...]:
    """Exact rational inverse of a non-singular square integer matrix (Gauss-Jordan on Fractions)."""
    n = len(m)
    a = [[Fraction(v) for v in row] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(m)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if a[r][col] != 0), None)
        if pivot is None:
            raise ValueError("matrix is singular")
        a[col], a[pivot] = a[pivot], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col], strict=True)]
    return tuple(tuple(row[n:]) for row in a)


def integer_inverse(m: Sequence[Sequence[int]]) -> IntMatrix:
    """Inverse of a unimodular integer matrix; ValueError if the inverse is not integral."""
    inv = inverse(m)
    if any(v.denominator != 1 for row in inv for v in row):
        raise ValueError(f"matrix {as_matrix(m)} is not unimodular (determinant {determinant(m)})")
    return tuple(tuple(int(v) for v in row) for row in inv)


def kernel_basis(a: Sequence[Sequence[int]], ncols: int | None = None) -> IntMatrix:
    """A basis of the integer lattice {v in Z^n : a v = 0}, one basis vector per returned row.

    Column-style Hermite reduction: unimodular column operations (tracked in U) bring `a` to a lower
    echelon form `a U = [H | 0]`; the columns of U that end up under zero columns span the kernel lattice
    over Z (not only over Q), which is what reuse between integer iteration points needs.
    """
    rows = [list(r) for r in a]
    n = ncols if ncols is not None else (len(rows[0]) if rows else 0)
    if any(len(r) != n for r in rows):
        raise ValueError(f"kernel_basis: rows must have {n} columns")
    u = [[int(i == j) for j in range(n)] for i in range(n)]  # columns of u are tracked transforms

    def col_op(dst: int, src: int, f: int) -> None:  # column dst -= f * column src
        for r in rows:
            r[dst] -= f * r[src]
        for r in u:
            r[dst] -= f * r[src]

    def col_swap(i: int, j: int) -> None:
        for r in rows:
            r[i], r[j] = r[j], r[i]
        for r in u:
            r[i], r[j] = r[j], r[i]

    pivot_col = 0
    for row in range(len(rows)):
        if pivot_col >= n:
            break
        # Euclid over the columns pivot_col.. of this row until one non-zero entry remains.
        while True:
            nz = [j for j in range(pivot_col, n) if rows[row][j] != 0]
            if len(nz) <= 1:
                break
            j_min = min(nz, key=lambda j: abs(rows[row][j]))
            for j in nz:
                if j != j_min:
                    col_op(j, j_min, rows[row][j] // rows[row][j_min])
        nz = [j for j in range(pivot_col, n) if rows[row][j] != 0]
        if nz:
            col_swap(pivot_col, nz[0])
            pivot_col += 1
    basis = [tuple(u[i][j] for i in range(n)) for j in range(pivot_col, n)]
    return tuple(_normalize(v) for v in basis)


def rank(a: Sequence[Sequence[int]], ncols: int | None = None) -> int:
    """Rank over Q (= number of columns minus the kernel dimension)."""
    n = ncols if ncols is not None else (len(a[0]) if a else 0)
    return n - len(kernel_basis(a, n))


def _normalize(v: IntVector) -> IntVector:
    """Divide by the gcd of the entries and make the first non-zero entry positive."""
    from math import gcd

    g = 0
    for x in v:
        g = gcd(g, x)
    if g == 0:
        return v
    first = next(x for x in v if x != 0)
    s = 1 if first > 0 else -1
    return tuple(s * x // g for x in v)
