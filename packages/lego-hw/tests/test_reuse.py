import pytest

from lego_hw.dataflow import Dataflow
from lego_hw.reuse import analyze
from lego_hw.workload import Workload, attention_qk, conv2d, gemm, mttkrp

# Textbook classification of GEMM's tensors under each preset (TensorLib's taxonomy).
EXPECTED = {
    "output-stationary": {"A": "systolic", "B": "systolic", "C": "stationary"},
    "weight-stationary": {"A": "systolic", "B": "stationary", "C": "systolic"},
    "input-stationary": {"A": "stationary", "B": "systolic", "C": "systolic"},
    "os-broadcast": {"A": "broadcast", "B": "broadcast", "C": "stationary"},
    "os-multicast-a": {"A": "broadcast", "B": "systolic", "C": "stationary"},
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_gemm_classification_per_preset(name):
    r = analyze(gemm(8, 8, 8), Dataflow.preset(name))
    assert {t: v.classification for t, v in r.items()} == EXPECTED[name]


def test_output_stationary_vectors_are_the_textbook_ones():
    df = Dataflow(loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (1, 1, 1)))
    r = analyze(gemm(8, 8, 8), df)
    # A moves one PE along axis 1 per cycle, B one PE along axis 0, C stays.
    assert [(v.space, v.time) for v in r["A"].basis] == [((0, 1), 1)]
    assert [(v.space, v.time) for v in r["B"].basis] == [((1, 0), 1)]
    assert [(v.space, v.time) for v in r["C"].basis] == [((0, 0), 1)]
    assert r["A"].basis[0].iteration == (0, 1, 0)


def test_reuse_vectors_are_in_the_lattice():
    wl = conv2d(k=4, c=3, oh=4, ow=4, r=3, s=3)
    df = Dataflow.preset("weight-stationary", loops=("k", "x", "c"))
    for t, tr in analyze(wl, df).items():
        access = [[row[wl.loop_index(lp)] for lp in df.loops] for row in wl.tensor(t).matrix]
        for v in tr.candidates:
            assert all(sum(a * u for a, u in zip(row, v.iteration, strict=True)) == 0 for row in access)
            assert v.time > 0 or (v.time == 0 and next(x for x in v.space if x) > 0)


def test_no_reuse_and_multi_dim_reuse():
    # MTTKRP's X[i, j, k] under a transform over (i, j, k) is used once: no reuse.
    r = analyze(mttkrp(4, 4, 4, 4), Dataflow(loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (1, 1, 1))))
    assert r["X"].classification == "none" and r["X"].candidates == ()
    assert r["D"].classification == "stationary+systolic"  # D[i, r] is reduced over both j (across PEs) and k
    # QK^T with (h, i, j) inner: K[h, j, d] depends on h and j only -> reuse along i.
    r = analyze(attention_qk(2, 4, 4, 4), Dataflow(loops=("i", "j", "d"), stt=((1, 0, 0), (0, 1, 0), (1, 1, 1))))
    assert r["K"].classification == "systolic" and r["S"].classification == "stationary"
    # A tensor that depends on one inner loop only has a 2-D reuse lattice.
    wl = Workload.from_expr("C[i, j] += A[i, k] * s[k]", {"i": 4, "j": 4, "k": 4})
    r = analyze(wl, Dataflow.preset("output-stationary"))
    assert len(r["s"].basis) == 2 and r["s"].classification == "systolic"
    assert {(v.space, v.time) for v in r["s"].candidates} >= {((0, 1), 1), ((1, 0), 1), ((1, -1), 0)}
    # Loops outside the transform are constant within a tile: with (i, j) inner, A[i, k] is reused along j.
    r = analyze(gemm(4, 4, 4), Dataflow(loops=("i", "j"), stt=((1, 0), (1, 1))))
    assert [(v.space, v.time) for v in r["A"].basis] == [((0,), 1)]
