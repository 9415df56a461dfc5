import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lego_hw import intlinalg as la
from lego_hw.dataflow import ArraySpec, Dataflow, check_legality, map_workload, preset_names
from lego_hw.errors import ArrayTooLargeError, IllegalMappingError, LegoError
from lego_hw.workload import conv2d, gemm


@pytest.mark.parametrize("name", preset_names())
def test_presets_are_legal_and_map(name):
    wl = gemm(13, 10, 7)
    m = map_workload(wl, Dataflow.preset(name), ArraySpec(rows=4, cols=4))
    # Every local iteration of a tile lands on a PE of the array, and (pe, t) -> iteration inverts it.
    pes = set()
    for it in itertools.product(*[range(e) for e in m.tile]):
        pe, t = m.space(it), m.time(it)
        assert all(0 <= c < s for c, s in zip(pe, m.pe_shape(), strict=True))
        assert 0 <= t < m.time_span
        assert m.iteration(pe, t) == it
        pes.add((pe, t))
    assert len(pes) == len(list(itertools.product(*[range(e) for e in m.tile])))  # injective on the tile


def test_tile_extents_follow_the_array():
    wl = gemm(13, 10, 7)
    arr = ArraySpec(rows=4, cols=3)
    os_ = map_workload(wl, Dataflow.preset("output-stationary"), arr)
    assert os_.tile == (4, 3, 7) and os_.tiles_per_loop == (4, 4, 1) and os_.num_tiles == 16
    assert os_.time_span == 3 + 2 + 6 + 1
    ws = map_workload(wl, Dataflow.preset("weight-stationary"), arr)
    assert ws.tile == (13, 3, 4) and ws.tiles_per_loop == (1, 4, 2)
    conv = conv2d(k=8, c=3, oh=5, ow=6, r=3, s=3)
    m = map_workload(conv, Dataflow.preset("output-stationary", loops=("k", "x", "c")), ArraySpec(rows=4, cols=4))
    assert [conv.loops[w] for w in m.outer] == ["n", "y", "r", "s"]
    assert m.num_tiles == 2 * 2 * 1 * (1 * 5 * 3 * 3)


def test_singular_stt_is_illegal_and_names_the_collision():
    df = Dataflow(name="bad", loops=("i", "j", "k"), stt=((1, 0, 0), (0, 1, 0), (1, 1, 0)))
    with pytest.raises(IllegalMappingError, match=r"singular.*'k': 1"):
        check_legality(gemm(4, 4, 4), df)


def test_reduction_in_zero_time_is_refused():
    # Weight-stationary with all of i in time and k across rows at dt = 0: partial sums of C would meet in one cycle.
    df = Dataflow(name="ws-bcast", loops=("i", "j", "k"), stt=((0, 0, 1), (0, 1, 0), (1, 0, 0)))
    with pytest.raises(IllegalMappingError, match="reduction of C.*spatial reduction tree"):
        check_legality(gemm(4, 4, 4), df)


def test_bad_mappings():
    with pytest.raises(ArrayTooLargeError, match="16 PEs but loop 'i' of gemm has only 4"):
        map_workload(gemm(4, 32, 8), Dataflow.preset("output-stationary"), ArraySpec(rows=16, cols=16))
    with pytest.raises(LegoError, match="no loop 'q'"):
        check_legality(gemm(4, 4, 4), Dataflow.preset("output-stationary", loops=("i", "j", "q")))
    with pytest.raises(LegoError, match="unknown dataflow preset 'diagonal'"):
        Dataflow.preset("diagonal")
    with pytest.raises(ValueError, match="STT must be 3x3"):
        Dataflow(loops=("i", "j", "k"), stt=((1, 0), (0, 1)))
    one_d = Dataflow(name="1d", loops=("i", "k"), stt=((1, 0), (1, 1)))
    with pytest.raises(LegoError, match="1-D but the array has 4 columns"):
        map_workload(gemm(4, 4, 4), one_d, ArraySpec(rows=4, cols=4))
    skew = Dataflow(name="skew", loops=("i", "j", "k"), stt=((1, 0, 1), (0, 1, 0), (0, 0, 1)))
    with pytest.raises(LegoError, match="pass its tile extent explicitly"):
        map_workload(gemm(8, 8, 8), skew, ArraySpec(rows=4, cols=4))
    with pytest.raises(LegoError, match="spans 7 PEs along axis 0"):
        map_workload(gemm(8, 8, 8), skew, ArraySpec(rows=4, cols=4), tile={"i": 4, "k": 4})
    m = map_workload(gemm(8, 8, 8), skew, ArraySpec(rows=4, cols=4), tile={"i": 2, "k": 3})
    assert m.tile == (2, 4, 3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(-2, 2), min_size=3, max_size=3), min_size=3, max_size=3))
def test_legality_agrees_with_exhaustive_injectivity(rows):
    stt = tuple(tuple(r) for r in rows)
    box = (4, 4, 4)
    images = {la.matvec(stt, p) for p in itertools.product(*[range(b) for b in box])}
    injective = len(images) == 64
    if la.determinant(stt) != 0:
        assert injective
    else:
        (u,) = la.kernel_basis(stt)[:1]
        # A singular STT collides on the box exactly when a kernel step fits inside it.
        assert injective == (not all(abs(v) < b for v, b in zip(u, box, strict=True))) or len(la.kernel_basis(stt)) > 1
        with pytest.raises(IllegalMappingError):
            check_legality(gemm(4, 4, 4), Dataflow(loops=("i", "j", "k"), stt=stt))
