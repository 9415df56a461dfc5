import json

import pytest

from lego_hw.dataflow import ArraySpec, Dataflow
from lego_hw.errors import LegoError
from lego_hw.spec import DesignSpec, default_loops, parse_workload
from lego_hw.workload import conv2d, gemm


def test_parse_workload_forms(tmp_path):
    assert parse_workload("gemm:m=13,n=10,k=7") == gemm(13, 10, 7)
    assert parse_workload("conv2d:k=8,c=4,oh=5,ow=6,r=3,s=3,stride=2") == conv2d(8, 4, 5, 6, 3, 3, stride=2)
    wl = parse_workload("C[i, j] += A[i, k] * B[k, j] @ i=4, j=5, k=6")
    assert wl.bounds == (4, 5, 6) and wl.name == "custom"
    p = tmp_path / "w.json"
    p.write_text(gemm(2, 3, 4).model_dump_json())
    assert parse_workload(str(p)) == gemm(2, 3, 4)


@pytest.mark.parametrize(
    "text, match",
    [
        ("gemmm:m=1", "unknown workload 'gemmm'"),
        ("gemm:m=4,n=4", r"missing size\(s\) \['k'\]"),
        ("gemm:m=4,n=4,k=4,q=2", r"unknown size\(s\) \['q'\]"),
        ("gemm:m=four,n=4,k=4", "is not an integer"),
        ("gemm:m", "expected key=value"),
        ("C[i] += A[i]", "needs loop bounds after '@'"),
        ("C[i*i] += A[i] @ i=3", "not affine"),
        ("missing.json", "does not exist"),
    ],
)
def test_parse_workload_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_workload(text)


def test_default_loops():
    assert default_loops(gemm(4, 4, 4)) == ("i", "j", "k")
    assert default_loops(conv2d(k=8, c=4, oh=5, ow=6, r=3, s=3)) == ("k", "x", "c")
    with pytest.raises(LegoError, match="pass --loops explicitly"):
        default_loops(parse_workload("C[i] += A[i] @ i=4"))


def test_spec_round_trip_and_bad_files(tmp_path):
    spec = DesignSpec(
        name="top",
        workload=gemm(5, 6, 7),
        dataflows=(Dataflow.preset("output-stationary"), Dataflow.preset("weight-stationary")),
        array=ArraySpec(rows=2, cols=3),
    )
    path = spec.save(tmp_path / "d" / "design.json")
    assert DesignSpec.load(tmp_path / "d") == spec
    assert [m.dataflow.name for m in spec.mappings()] == ["output-stationary", "weight-stationary"]
    assert not list((tmp_path / "d").glob(".design-*"))  # no temporary left behind
    with pytest.raises(LegoError, match="no design spec"):
        DesignSpec.load(tmp_path / "nowhere")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LegoError, match="not valid JSON"):
        DesignSpec.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(LegoError, match="not a lego-hw design spec"):
        DesignSpec.load(bad)
    data = json.loads(path.read_text())
    data["array"]["rows"] = 0
    bad.write_text(json.dumps(data))
    with pytest.raises(LegoError, match="invalid design spec"):
        DesignSpec.load(bad)
    with pytest.raises(ValueError, match="dataflow names repeat"):
        DesignSpec(name="t", workload=gemm(2, 2, 2), dataflows=(spec.dataflows[0],) * 2, array=spec.array)
