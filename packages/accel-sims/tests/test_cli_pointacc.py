import json

import numpy as np
from typer.testing import CliRunner

from accel_sims.cli import app
from accel_sims.pointacc.points import object_cloud, write_points

runner = CliRunner()


def test_map_every_op(tmp_path):
    path = write_points(tmp_path / "obj.npy", object_cloud(2048, seed=1))
    sizes = {}
    for op in ("fps", "knn", "ball_query", "voxelize", "voxel_downsample", "kernel_map"):
        res = runner.invoke(
            app, ["pointacc", "map", op, str(path), "--samples", "256", "--k", "8", "--voxel-size", "0.05", "--json"]
        )
        assert res.exit_code == 0, (op, res.output)
        data = json.loads(res.output)
        assert data["points"] == 2048 and data["seconds"] >= 0 and data["ranking"]["op"]
        sizes[op] = data
    assert sizes["fps"]["samples"] == 256 and sizes["knn"]["neighbours"] == 256 * 8
    assert sizes["kernel_map"]["offsets"] == 27 and sizes["kernel_map"]["pairs"] > sizes["kernel_map"]["outputs"]
    assert sizes["voxel_downsample"]["outputs"] < sizes["voxelize"]["voxels"] <= 2048


def test_map_bad_input(tmp_path):
    good = write_points(tmp_path / "obj.npy", object_cloud(64, seed=0))
    nan = tmp_path / "nan.npy"
    cloud = object_cloud(64, seed=0)
    cloud[3, 1] = np.nan
    np.save(nan, cloud)
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 3)))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((10, 2)))
    cases = [
        (["knn", str(good), "--k", "100", "--samples", "8"], "k must be <= the number of points"),
        (["ball_query", str(good), "--radius", "0", "--samples", "8"], "radius"),
        (["voxelize", str(good), "--voxel-size", "-1"], "voxel_size"),
        (["knn", str(nan)], "NaN"),
        (["fps", str(empty)], "empty"),
        (["fps", str(flat)], "shape"),
        (["sort", str(good)], "op must be one of"),
        (["fps", str(tmp_path / "missing.npy")], "missing.npy"),
    ]
    for args, match in cases:
        res = runner.invoke(app, ["pointacc", "map", *args])
        assert res.exit_code == 2, (args, res.output)
        assert match in res.output, (args, res.output)


def test_simulate_and_report(tmp_path):
    res = runner.invoke(app, ["pointacc", "simulate", "pointnet2-cls", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["cycles"] > 0 and data["vs_gpu"]["speedup"] > 0
    assert data["vs_ablations"]["no_fusion"]["speedup"] >= 1.0 and data["vs_ablations"]["no_cache"]["speedup"] >= 1.0
    res = runner.invoke(app, ["pointacc", "simulate", "pointnet", "--no-fusion"])
    assert res.exit_code == 0 and "nofusion" in res.output
    page = tmp_path / "r.html"
    res = runner.invoke(app, ["pointacc", "report", "dgcnn", "--format", "html", "-o", str(page)])
    assert res.exit_code == 0, res.output
    assert "<svg" in page.read_text()
    res = runner.invoke(app, ["pointacc", "report", "pointnet"])
    assert res.exit_code == 0 and "| layer |" in res.output
    for args, match in [
        (["simulate", "resnet"], "neither a workload file nor a network"),
        (["simulate", "pointnet", "--config", "huge"], "huge"),
        (["report", "pointnet", "--format", "pdf"], "--format must be"),
    ]:
        res = runner.invoke(app, ["pointacc", *args])
        assert res.exit_code == 2 and match in res.output, (args, res.output)
