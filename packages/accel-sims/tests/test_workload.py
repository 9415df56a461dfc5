import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sims.errors import WorkloadError
from accel_sims.spatten.workload import CSV_COLUMNS, HeadRecord, Workload, read_csv, write_csv


def _rec(**kw):
    base = dict(
        iteration_id=0, layer_id=0, head_id=0, head_dim=64, seq_len=993, key_fetch_num=993, key_bits=6,
        query_bits=12, requant_threshold=0.05, requant=False, requant_extra_bits=4, value_fetch_num=204,
        value_bits=8, accumulate_importance=True, topk=True, topk_k=800,
    )  # fmt: skip
    base.update(kw)
    return HeadRecord(**base)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 2048).flatmap(
        lambda seq: st.tuples(st.just(seq), st.integers(1, seq)).flatmap(
            lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(0, t[1]), st.integers(1, t[1]))
        )
    ),
    st.booleans(),
    st.floats(0, 1, allow_nan=False),
)
def test_csv_round_trip(sizes, requant, thres):
    seq, keys, values, k = sizes
    r = _rec(
        seq_len=seq, key_fetch_num=keys, value_fetch_num=values, topk_k=k, requant=requant, requant_threshold=thres
    )
    w = Workload(model="m", records=(r, _rec(layer_id=1)))
    back = read_csv(write_csv(w), model="m")
    assert back == w


def test_reference_header_and_layers(tmp_path):
    text = write_csv([_rec(), _rec(head_id=1), _rec(layer_id=1)])
    assert text.splitlines()[0].split(",")[:5] == [
        "iteration_id", "layer_id", "head_id", "embedding_length_D", "sentence_length_L",
    ]  # fmt: skip
    # A file in the reference repository's layout (no num_queries column) reads with num_queries = 1.
    cols = [c for c in CSV_COLUMNS.values() if c != "num_queries"]
    ref = ",".join(cols) + "\n0,3,5,64,993,993,6,12,0.05,0,4,204,8,1,0,1,800\n"
    p = tmp_path / "summary-gpt2-small.csv"
    p.write_text(ref)
    w = read_csv(p)
    assert w.model == "summary-gpt2-small" and w.records[0].num_queries == 1 and w.records[0].head_id == 5
    assert list(Workload(records=(_rec(), _rec(head_id=1), _rec(layer_id=1))).layers()) == [(0, 0), (0, 1)]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.replace(",993,993,", ",993,1000,"), r"line 2: .*key_fetch_num 1000 > seq_len 993"),
        (lambda t: t.replace(",204,", ",-1,"), r"line 2: field value_fetch_num"),
        (lambda t: t.replace(",0.05,", ",1.5,"), r"line 2: field requant_threshold"),
        (lambda t: t.replace(",0.05,", ",abc,"), r"line 2: field requant_threshold .* not a number"),
        (lambda t: t.replace("embedding_length_D", "D"), r"missing column\(s\) \['embedding_length_D'\]"),
        (lambda t: t.splitlines()[0] + "\n", "no records"),
        (lambda t: "", "empty file"),
        (lambda t: t.replace(",1,800,", ",1,0,"), r"topk_k 0 must be in 1..key_fetch_num"),
    ],
)
def test_malformed_files_name_the_line_and_field(edit, match):
    text = write_csv([_rec()])
    with pytest.raises(WorkloadError, match=match):
        read_csv(edit(text) if edit(text) else "\n")


def test_missing_file_and_empty_workload(tmp_path):
    with pytest.raises(WorkloadError, match="does not exist"):
        read_csv(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="at least one record"):
        Workload(records=())


def test_reference_conventions_minus_one_and_true_false():
    cols = [c for c in CSV_COLUMNS.values() if c != "num_queries"]
    row = "0,0,0,64,100,100,12,12,-1,False,-1,100,12,True,False,False,-1"
    w = read_csv(",".join(cols) + "\n" + row + "\n")
    r = w.records[0]
    assert r.topk is False and r.topk_k == 0 and r.requant_threshold == 0.0 and r.requant_extra_bits == 0
    assert r.accumulate_importance is True
    # -1 where the setting applies is still an error.
    bad = row.replace("False,False,-1", "False,True,-1")
    with pytest.raises(WorkloadError, match="field topk_k"):
        read_csv(",".join(cols) + "\n" + bad + "\n")
