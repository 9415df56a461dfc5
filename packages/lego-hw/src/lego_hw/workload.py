"""Tensor workloads as perfect loop nests with affine accesses (LEGO, arXiv:2509.12053, Sec. III-A).

A workload is a loop nest `for i in box: out[A_o i + b_o] += prod_k in_k[A_k i + b_k]`. Every access is
an integer matrix over the loop iterators plus an offset: the data mapping f_{I->D} of the paper. The
affine form is what makes reuse, banking and address generation linear algebra.

    wl = Workload.from_expr("C[i,j] += A[i,k] * B[k,j]", {"i": 64, "j": 64, "k": 32}, name="gemm")
    wl.reference({"A": a, "B": b})["C"]  # numpy golden model
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lego_hw.errors import LegoError, NonAffineAccessError

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TensorAccess(BaseModel):
    """One tensor and its affine access `index = matrix @ iterators + offset`."""

    model_config = _FROZEN

    name: str = Field(description="Tensor name, a Python/Verilog identifier.")
    role: Literal["input", "output"] = Field(description="Inputs are read; the output is accumulated into.")
    matrix: tuple[tuple[int, ...], ...] = Field(description="Rows: tensor dimensions; columns: loop iterators.")
    offset: tuple[int, ...] = Field(description="Constant term per tensor dimension.")

    @model_validator(mode="after")
    def _check(self) -> TensorAccess:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise LegoError(f"tensor name {self.name!r} is not an identifier")
        if len(self.offset) != len(self.matrix):
            raise LegoError(f"tensor {self.name}: {len(self.matrix)} index rows but {len(self.offset)} offsets")
        if self.matrix and len({len(r) for r in self.matrix}) != 1:
            raise LegoError(f"tensor {self.name}: access matrix rows have different lengths")
        return self


class Workload(BaseModel):
    """A perfect loop nest with one accumulated output and one or more multiplied inputs."""

    model_config = _FROZEN

    name: str = Field(default="workload", description="Name used in reports and generated module names.")
    loops: tuple[str, ...] = Field(description="Loop iterator names, outermost first.")
    bounds: tuple[int, ...] = Field(description="Trip count of each loop (iterators run over 0..bound-1).")
    tensors: tuple[TensorAccess, ...] = Field(description="The output first or anywhere; exactly one output.")

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if len(self.loops) != len(self.bounds):
            raise LegoError(f"{len(self.loops)} loops {self.loops} but {len(self.bounds)} bounds")
        if len(set(self.loops)) != len(self.loops):
            raise LegoError(f"loop names repeat: {self.loops}")
        for loop, b in zip(self.loops, self.bounds, strict=True):
            if b < 1:
                raise LegoError(f"loop {loop} has bound {b}; bounds must be >= 1")
        outputs = [t for t in self.tensors if t.role == "output"]
        if len(outputs) != 1:
            raise LegoError(f"a workload needs exactly one output tensor, found {len(outputs)}")
        if not any(t.role == "input" for t in self.tensors):
            raise LegoError("a workload needs at least one input tensor")
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise LegoError(f"tensor names repeat: {names}")
        for t in self.tensors:
            if any(len(r) != len(self.loops) for r in t.matrix):
                raise LegoError(f"tensor {t.name}: access matrix needs {len(self.loops)} columns (one per loop)")
            lo = [off + sum(min(0, c) * (b - 1) for c, b in zip(r, self.bounds, strict=True))
                  for r, off in zip(t.matrix, t.offset, strict=True)]  # fmt: skip
            if any(v < 0 for v in lo):
                raise LegoError(f"tensor {t.name}: an index goes below 0 on the loop box (minimum {lo})")
        return self

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_expr(cls, expr: str, bounds: Mapping[str, int], name: str = "workload") -> Workload:
        """Parse `Out[i, j] += In1[i, k] * In2[k + r, j]`; indices must be affine in the loop names.

        Loops are ordered as in `bounds`. A product, division, modulo or unknown name in an index raises
        NonAffineAccessError naming the tensor and the index.
        """
        m = re.fullmatch(r"\s*(.+?)\s*\+=\s*(.+?)\s*", expr)
        if not m:
            raise LegoError(f"expected 'Out[...] += In[...] * In[...]', got {expr!r}")
        loops = tuple(bounds)
        lhs = _parse_ref(m.group(1), loops, "output")
        try:
            rhs_tree = ast.parse(m.group(2), mode="eval").body
        except SyntaxError as e:
            raise LegoError(f"cannot parse the right-hand side {m.group(2)!r}: {e.msg}") from None
        factors: list[ast.expr] = []

        def flatten(node: ast.expr) -> None:
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                flatten(node.left)
                flatten(node.right)
            else:
                factors.append(node)

        flatten(rhs_tree)
        inputs = [_parse_ref(ast.unparse(f), loops, "input") for f in factors]
        return cls(name=name, loops=loops, bounds=tuple(int(bounds[k]) for k in loops), tensors=(lhs, *inputs))

    # -- queries ------------------------------------------------------------------------------
    @property
    def output(self) -> TensorAccess:
        return next(t for t in self.tensors if t.role == "output")

    @property
    def inputs(self) -> tuple[TensorAccess, ...]:
        return tuple(t for t in self.tensors if t.role == "input")

    def tensor(self, name: str) -> TensorAccess:
        for t in self.tensors:
            if t.name == name:
                return t
        raise LegoError(f"workload {self.name} has no tensor {name!r}; it has {[t.name for t in self.tensors]}")

    def loop_index(self, loop: str) -> int:
        if loop not in self.loops:
            raise LegoError(f"workload {self.name} has no loop {loop!r}; its loops are {self.loops}")
        return self.loops.index(loop)

    def bound(self, loop: str) -> int:
        return self.bounds[self.loop_index(loop)]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the whole nest (iterations of the loop box)."""
        return math.prod(self.bounds)

    def shape(self, tensor: str) -> tuple[int, ...]:
        """Smallest tensor shape that holds every index the loop box touches."""
        t = self.tensor(tensor)
        return tuple(
            off + sum(max(0, c) * (b - 1) for c, b in zip(row, self.bounds, strict=True)) + 1
            for row, off in zip(t.matrix, t.offset, strict=True)
        )

    def reduction_loops(self) -> tuple[str, ...]:
        """Loops the output index does not depend on: their iterations accumulate into one element."""
        out = self.output
        return tuple(lp for j, lp in enumerate(self.loops) if all(row[j] == 0 for row in out.matrix))

    def index_arrays(self, tensor: str) -> np.ndarray:
        """[dims, iterations] int64 indices of `tensor` for every point of the loop box (C order)."""
        t = self.tensor(tensor)
        grid = np.indices(self.bounds, dtype=np.int64).reshape(len(self.bounds), -1)
        return np.asarray(t.matrix, dtype=np.int64).reshape(len(t.matrix), -1) @ grid + np.asarray(
            t.offset, dtype=np.int64
        ).reshape(-1, 1)

    def random_inputs(self, rng: np.random.Generator, bits: int = 8) -> dict[str, np.ndarray]:
        """Signed random integers of `bits` bits for each input, shaped by `shape`."""
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
        return {t.name: rng.integers(lo, hi, size=self.shape(t.name), dtype=np.int64) for t in self.inputs}

    def reference(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """numpy golden model: the output tensor (int64) for the given input arrays."""
        if self.macs > 50_000_000:
            raise LegoError(f"reference evaluation of {self.macs} MACs is too large for the golden model")
        prod: np.ndarray | None = None
        for t in self.inputs:
            if t.name not in arrays:
                raise LegoError(f"reference: missing input array {t.name!r}")
            arr = np.asarray(arrays[t.name])
            need = self.shape(t.name)
            if arr.ndim != len(need) or any(a < n for a, n in zip(arr.shape, need, strict=True)):
                raise LegoError(f"reference: input {t.name} has shape {arr.shape}, needs at least {need}")
            vals = arr[tuple(self.index_arrays(t.name))].astype(np.int64)
            prod = vals if prod is None else prod * vals
        assert prod is not None
        out = np.zeros(self.shape(self.output.name), dtype=np.int64)
        np.add.at(out, tuple(self.index_arrays(self.output.name)), prod)
        return {self.output.name: out}


def _parse_ref(text: str, loops: tuple[str, ...], role: Literal["input", "output"]) -> TensorAccess:
    """`Name[e0, e1, ...]` with affine index expressions -> TensorAccess."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise LegoError(f"cannot parse tensor reference {text!r}: {e.msg}") from None
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
        raise LegoError(f"expected a tensor reference like 'A[i, k]', got {text!r}")
    name = node.value.id
    idx = node.slice
    exprs = list(idx.elts) if isinstance(idx, ast.Tuple) else [idx]
    rows, offsets = [], []
    for ix in exprs:
        coeffs, const = _affine(ix, loops, name, ast.unparse(ix))
        rows.append(tuple(coeffs.get(lp, 0) for lp in loops))
        offsets.append(const)
    return TensorAccess(name=name, role=role, matrix=tuple(rows), offset=tuple(offsets))


def _affine(node: ast.expr, loops: tuple[str, ...], tensor: str, text: str) -> tuple[dict[str, int], int]:
    """Coefficients per loop name and the constant of an affine index expression."""

    def fail(why: str) -> NonAffineAccessError:
        return NonAffineAccessError(
            f"tensor {tensor}: index {text!r} is not affine in the loops {loops} ({why}); "
            "write it as a sum of integer multiples of loop iterators plus a constant "
            "(no products of iterators, no / or %)"
        )

    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return {}, int(node.value)
    if isinstance(node, ast.Name):
        if node.id not in loops:
            raise fail(f"unknown name {node.id!r}")
        return {node.id: 1}, 0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        c, k = _affine(node.operand, loops, tensor, text)
        return {n: -v for n, v in c.items()}, -k
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        c1, k1 = _affine(node.left, loops, tensor, text)
        c2, k2 = _affine(node.right, loops, tensor, text)
        s = 1 if isinstance(node.op, ast.Add) else -1
        out = dict(c1)
        for n, v in c2.items():
            out[n] = out.get(n, 0) + s * v
        return out, k1 + s * k2
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        c1, k1 = _affine(node.left, loops, tensor, text)
        c2, k2 = _affine(node.right, loops, tensor, text)
        if c1 and c2:
            raise fail("product of two iterators")
        if c1:
            return {n: v * k2 for n, v in c1.items()}, k1 * k2
        return {n: v * k1 for n, v in c2.items()}, k1 * k2
    raise fail(f"unsupported operation {type(getattr(node, 'op', node)).__name__}")


# -- named workloads --------------------------------------------------------------------------
def gemm(m: int, n: int, k: int, name: str = "gemm") -> Workload:
    """C[m, n] += A[m, k] * B[k, n]; loops (i, j, k)."""
    return Workload.from_expr("C[i, j] += A[i, k] * B[k, j]", {"i": m, "j": n, "k": k}, name=name)


def batched_gemm(b: int, m: int, n: int, k: int, name: str = "bgemm") -> Workload:
    """C[b, m, n] += A[b, m, k] * B[b, k, n]; loops (b, i, j, k)."""
    return Workload.from_expr("C[b, i, j] += A[b, i, k] * B[b, k, j]", {"b": b, "i": m, "j": n, "k": k}, name=name)


def conv2d(
    k: int, c: int, oh: int, ow: int, r: int, s: int, stride: int = 1, batch: int = 1, name: str = "conv2d"
) -> Workload:
    """O[n, k, y, x] += W[k, c, r, s] * I[n, c, stride*y + r, stride*x + s]; loops (n, k, c, y, x, r, s)."""
    bounds = {"n": batch, "k": k, "c": c, "y": oh, "x": ow, "r": r, "s": s}
    return Workload.from_expr(
        f"O[n, k, y, x] += W[k, c, r, s] * I[n, c, {stride}*y + r, {stride}*x + s]", bounds, name=name
    )


def depthwise_conv2d(
    c: int, oh: int, ow: int, r: int, s: int, stride: int = 1, batch: int = 1, name: str = "dwconv2d"
) -> Workload:
    """O[n, c, y, x] += W[c, r, s] * I[n, c, stride*y + r, stride*x + s]; loops (n, c, y, x, r, s)."""
    bounds = {"n": batch, "c": c, "y": oh, "x": ow, "r": r, "s": s}
    return Workload.from_expr(f"O[n, c, y, x] += W[c, r, s] * I[n, c, {stride}*y + r, {stride}*x + s]", bounds, name)


def attention_qk(heads: int, q_len: int, kv_len: int, head_dim: int, name: str = "attn_qk") -> Workload:
    """S[h, i, j] += Q[h, i, d] * K[h, j, d]: attention scores (QK^T); loops (h, i, j, d)."""
    return Workload.from_expr(
        "S[h, i, j] += Q[h, i, d] * K[h, j, d]", {"h": heads, "i": q_len, "j": kv_len, "d": head_dim}, name
    )


def attention_pv(heads: int, q_len: int, kv_len: int, head_dim: int, name: str = "attn_pv") -> Workload:
    """O[h, i, d] += P[h, i, j] * V[h, j, d]: probabilities times values; loops (h, i, d, j)."""
    return Workload.from_expr(
        "O[h, i, d] += P[h, i, j] * V[h, j, d]", {"h": heads, "i": q_len, "d": head_dim, "j": kv_len}, name
    )


def mttkrp(i: int, j: int, k: int, r: int, name: str = "mttkrp") -> Workload:
    """D[i, r] += X[i, j, k] * B[j, r] * C[k, r]: matricized tensor times Khatri-Rao product."""
    return Workload.from_expr("D[i, r] += X[i, j, k] * B[j, r] * C[k, r]", {"i": i, "r": r, "j": j, "k": k}, name)
