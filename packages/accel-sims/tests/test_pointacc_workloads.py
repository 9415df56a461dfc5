"""PointAcc workloads: published layer shapes, maps from the real mapping operations, determinism, edits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accel_sims.errors import AccelSimsError, WorkloadError
from accel_sims.pointacc.simulator import simulate
from accel_sims.pointacc.workloads import Layer, Workload, check_workload, make_workload, workload_names


def _macs_dense(wl: Workload) -> int:
    return sum(ly.n_in * ly.c_in * ly.c_out for ly in wl.layers if ly.op == "dense")


def test_pointnet_macs_by_hand() -> None:
    wl = make_workload("pointnet", 1024)
    n = 1024
    shared = n * (3 * 64 + 64 * 64 + 64 * 64 + 64 * 128 + 128 * 1024)
    head = 1024 * 512 + 512 * 256 + 256 * 40
    assert _macs_dense(wl) == shared + head
    assert simulate(wl).macs == shared + head


def test_pointnet2_cls_shapes() -> None:
    wl = make_workload("pointnet2-cls", 1024, seed=3)
    by = {ly.name: ly for ly in wl.layers}
    assert (by["sa1.fps"].n_in, by["sa1.fps"].n_out) == (1024, 512)
    assert (by["sa1.ball_query"].k, by["sa2.ball_query"].k) == (32, 64)
    assert by["sa1.group"].c_in == 3 and by["sa2.group"].c_in == 128 + 3
    assert [by[f"sa1.mlp{j}"].c_out for j in range(3)] == [64, 128 // 2, 128]
    assert by["sa1.mlp0"].n_in == 512 * 32
    assert [by[f"sa3.mlp{j}"].c_out for j in range(3)] == [256, 512, 1024]
    assert [by[f"head.mlp{j}"].c_out for j in range(3)] == [512, 256, 40]
    m = wl.maps["sa1.group"]
    assert m.in_idx.size == 512 * 32 and m.in_idx.min() >= 0 and m.in_idx.max() < 1024
    check_workload(wl)


def test_pointnet2_seg_shapes_and_interpolation() -> None:
    wl = make_workload("pointnet2-seg", 1024)
    by = {ly.name: ly for ly in wl.layers}
    assert [by[f"sa{j}.fps"].n_out for j in range(1, 5)] == [256, 64, 16, 4]
    assert by["sa1.group"].c_in == 9 + 3
    assert by["fp4.interp"].c_out == 512 + 256 and by["fp4.knn"].k == 3
    assert by["fp1.interp"].n_out == 1024 and by["fp1.interp"].skip_channels == 0
    assert by["head.mlp1"].c_out == 13
    with pytest.raises(AccelSimsError, match="n_points"):
        make_workload("pointnet2-seg", 100)


def test_dgcnn_shapes() -> None:
    wl = make_workload("dgcnn", 256)
    knns = [ly for ly in wl.layers if ly.op == "knn"]
    assert [ly.dims for ly in knns] == [3, 64, 64, 128] and all(ly.k == 20 for ly in knns)
    edges = [ly for ly in wl.layers if ly.op == "gather"]
    assert [(ly.c_in, ly.c_out) for ly in edges] == [(3, 6), (64, 128), (64, 128), (128, 256)]
    assert {ly.name: ly for ly in wl.layers}["conv5.mlp0"].c_in == 64 + 64 + 128 + 256
    idx = wl.maps["edge"].in_idx.reshape(256, 20)
    assert np.all(idx[:, 0] == np.arange(256))  # each point is its own nearest neighbour


def test_minkunet_maps_follow_the_kernel_maps() -> None:
    wl = make_workload("minkunet-outdoor", 6000, seed=1)
    by = {ly.name: ly for ly in wl.layers}
    n0 = wl.points
    assert by["stem.conv1"].n_in == n0 and by["stem.conv1"].c_in == 4 and by["classifier"].c_out == 19
    for s in range(4):
        down = by[f"stage{s + 1}.down"]
        assert down.pairs == down.n_in  # a 2^3 stride-2 conv reads every input exactly once
        assert wl.maps[f"down{s}"].sizes.sum() == down.pairs
        up = by[f"up{4 - s}.deconv"]
        assert (up.n_in, up.n_out) == (down.n_out, down.n_in)
    km = by["L0.kernel_map"]
    conv = by["stem.conv2"]
    assert conv.pairs == km.pairs and wl.maps["sub0"].sizes.shape == (27,)
    sizes = wl.maps["sub0"].sizes
    assert sizes[13] == n0  # the centre offset pairs every voxel with itself
    assert np.array_equal(sizes, sizes[::-1])  # submanifold maps are symmetric in +-delta
    # channels of the up path: deconv + skip concatenated
    assert by["up1.block1.conv1"].c_in == 256 + 128 and by["up4.block1.conv1"].c_in == 96 + 32


def test_workloads_are_deterministic_and_seeded() -> None:
    a = make_workload("pointnet2-cls", 512, seed=5)
    b = make_workload("pointnet2-cls", 512, seed=5)
    c = make_workload("pointnet2-cls", 512, seed=6)
    assert a.layers == b.layers
    assert np.array_equal(a.maps["sa1.group"].in_idx, b.maps["sa1.group"].in_idx)
    assert not np.array_equal(a.maps["sa1.group"].in_idx, c.maps["sa1.group"].in_idx)
    assert simulate(a) == simulate(b)


def test_replace_layer_keeps_maps() -> None:
    wl = make_workload("dgcnn", 128)
    edited = wl.replace_layer("ec1.mlp0", c_out=128).replace_layer("ec1.pool", c_in=128, c_out=128)
    assert {ly.name: ly for ly in edited.layers}["ec1.mlp0"].c_out == 128
    assert edited.maps.keys() == wl.maps.keys()
    assert simulate(edited).macs > simulate(wl).macs
    with pytest.raises(AccelSimsError, match="no layer named"):
        wl.replace_layer("nope", c_out=1)
    broken = wl.replace_layer("ec2.edge", n_in=10)
    with pytest.raises(WorkloadError, match="map_id"):
        simulate(broken)


def test_bad_names_and_sizes() -> None:
    with pytest.raises(AccelSimsError, match="unknown workload"):
        make_workload("pointnet3")
    for bad in (0, -5):
        with pytest.raises(AccelSimsError, match="n_points"):
            make_workload("pointnet", bad)
    with pytest.raises(AccelSimsError, match="k must be"):
        make_workload("dgcnn", 10)
    assert set(workload_names()) == {
        "pointnet",
        "pointnet2-cls",
        "pointnet2-seg",
        "dgcnn",
        "minkunet-indoor",
        "minkunet-outdoor",
    }


def test_layer_list_is_json() -> None:
    wl = make_workload("pointnet", 64)
    text = wl.model_dump_json()
    back = Workload.model_validate_json(text)
    assert back.layers == wl.layers and back.maps == {}
    assert isinstance(back.layers[0], Layer)


def test_save_edit_load_rebuilds_maps(tmp_path: Path) -> None:
    from accel_sims.pointacc.workloads import load_workload, save_workload

    wl = make_workload("pointnet2-cls", 256, seed=2)
    path = save_workload(wl, tmp_path / "wl.json")
    text = path.read_text().replace('"c_out": 40', '"c_out": 10')  # edit the classifier
    path.write_text(text)
    back = load_workload(path)
    assert back.layers[-1].c_out == 10 and back.builder == "pointnet2-cls"
    assert np.array_equal(back.maps["sa1.group"].in_idx, wl.maps["sa1.group"].in_idx)
    assert simulate(back).macs < simulate(wl).macs
    with pytest.raises(WorkloadError, match="does not exist"):
        load_workload(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"name": "x", "layers": [{"name": "a", "op": "conv", "n_in": 1, "n_out": 1}]}')
    with pytest.raises(WorkloadError, match="op"):
        load_workload(tmp_path / "bad.json")
