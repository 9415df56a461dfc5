"""Data-reuse analysis in exact integer arithmetic (LEGO Sec. III-B; TensorLib's reuse taxonomy).

Two space-time points (s, t) and (s', t') use the same element of tensor D iff their iterations differ by
an integer vector u with A_D u = 0. The space-time differences are therefore the lattice STT * ker_Z(A_D),
computed here from an integer kernel basis (Hermite reduction), never from floating-point rank tests.

Each reuse vector (ds, dt), oriented so that dt >= 0, is:
- stationary: ds = 0, dt > 0 (the PE keeps the element in a register),
- systolic:   ds != 0, dt > 0 (the element moves to a neighbour through dt registers),
- broadcast:  dt = 0 (several PEs read the element in the same cycle; a wire or multicast bus).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from lego_hw import intlinalg as la
from lego_hw.dataflow import Dataflow
from lego_hw.workload import TensorAccess, Workload

ReuseKind = Literal["stationary", "systolic", "broadcast"]


@dataclass(frozen=True)
class ReuseVector:
    """A space-time step (ds, dt) between two uses of the same tensor element."""

    space: tuple[int, ...]
    time: int
    iteration: tuple[int, ...]  # the iteration-space step u with A u = 0 and STT u = (space, time)

    @property
    def kind(self) -> ReuseKind:
        if self.time == 0:
            return "broadcast"
        return "stationary" if not any(self.space) else "systolic"


@dataclass(frozen=True)
class TensorReuse:
    """Reuse of one tensor under one dataflow."""

    tensor: str
    role: Literal["input", "output"]
    basis: tuple[ReuseVector, ...]  # a lattice basis of all reuse, oriented and classified
    candidates: tuple[ReuseVector, ...]  # small combinations of the basis: the links an interconnect may use

    @property
    def kinds(self) -> frozenset[ReuseKind]:
        return frozenset(v.kind for v in self.basis)

    @property
    def classification(self) -> str:
        """One word per tensor: 'stationary', 'systolic', 'broadcast', a '+'-joined mix, or 'none'."""
        order: tuple[ReuseKind, ...] = ("stationary", "systolic", "broadcast")
        present = [k for k in order if k in self.kinds]
        return "+".join(present) if present else "none"


def _orient(space: tuple[int, ...], time: int, u: tuple[int, ...]) -> ReuseVector:
    """Point a reuse vector forward in time (or, at dt = 0, toward increasing PE coordinates)."""
    key = (time, *space)
    first = next((v for v in key if v != 0), 0)
    if first < 0:
        return ReuseVector(tuple(-v for v in space), -time, tuple(-v for v in u))
    return ReuseVector(space, time, u)


def inner_access(tensor: TensorAccess, workload: Workload, dataflow: Dataflow) -> tuple[tuple[int, ...], ...]:
    """The columns of the tensor's access matrix that belong to the dataflow's (inner) loops."""
    cols = [workload.loop_index(lp) for lp in dataflow.loops]
    return tuple(tuple(row[c] for c in cols) for row in tensor.matrix)


def analyze_tensor(workload: Workload, dataflow: Dataflow, tensor: str) -> TensorReuse:
    """Reuse basis and candidate link vectors of one tensor."""
    t = workload.tensor(tensor)
    a = inner_access(t, workload, dataflow)
    n = len(dataflow.loops)
    ker = la.kernel_basis(a, n)

    def to_vec(u: tuple[int, ...]) -> ReuseVector:
        st = la.matvec(dataflow.stt, u)
        return _orient(st[:-1], st[-1], u)

    basis = tuple(to_vec(u) for u in ker)
    # Candidate links: combinations of the basis with coefficients in {-1, 0, 1}, as TensorLib enumerates,
    # but exact; deduplicated after orientation.
    seen: dict[tuple[tuple[int, ...], int], ReuseVector] = {}
    for coeffs in itertools.product((-1, 0, 1), repeat=len(ker)):
        if not any(coeffs):
            continue
        u = tuple(sum(c * b[j] for c, b in zip(coeffs, ker, strict=True)) for j in range(n))
        v = to_vec(u)
        seen.setdefault((v.space, v.time), v)
    cands = tuple(sorted(seen.values(), key=lambda v: (sum(map(abs, v.space)), v.time, v.space)))
    return TensorReuse(tensor=t.name, role=t.role, basis=basis, candidates=cands)


def analyze(workload: Workload, dataflow: Dataflow) -> dict[str, TensorReuse]:
    """Reuse of every tensor of `workload` under `dataflow`, keyed by tensor name."""
    for lp in dataflow.loops:
        workload.loop_index(lp)
    return {t.name: analyze_tensor(workload, dataflow, t.name) for t in workload.tensors}
