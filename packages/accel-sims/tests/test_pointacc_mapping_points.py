"""Point files (.npy, .txt/.xyz/.pts, ASCII .ply) and synthetic clouds for the PointAcc mapping operations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accel_sims.errors import AccelSimsError, WorkloadError
from accel_sims.pointacc.points import (
    OBJECT_SHAPES,
    lidar_scan,
    object_cloud,
    read_points,
    room_cloud,
    synthetic_cloud,
    write_points,
)


@pytest.mark.parametrize("suffix", [".npy", ".txt", ".xyz", ".pts", ".ply"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    pts = np.random.default_rng(0).normal(size=(50, 3)) * 1e3
    path = write_points(tmp_path / f"cloud{suffix}", pts)
    got = read_points(path)
    np.testing.assert_array_equal(got, pts)
    assert got.dtype == np.float64 and got.shape == (50, 3)


def test_extra_columns_comments_and_commas(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("# x y z r g b\n1 2 3 255 0 0\n\n4,5,6,0,255,0  # tail comment\n")
    assert read_points(tmp_path / "a.txt").tolist() == [[1, 2, 3], [4, 5, 6]]
    np.save(tmp_path / "b.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    assert read_points(tmp_path / "b.npy").tolist() == [[0, 1, 2], [4, 5, 6], [8, 9, 10]]
    ply = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float intensity\nproperty float z\nproperty float y\n"
    ply += "property float x\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n9 3 2 1\n9 6 5 4\n"
    (tmp_path / "c.ply").write_text(ply)
    assert read_points(tmp_path / "c.ply").tolist() == [[1, 2, 3], [4, 5, 6]]


BAD_FILES = [
    ("missing.npy", None, "does not exist"),
    ("cloud.obj", "1 2 3\n", "suffix must be one of"),
    ("empty.txt", "# nothing\n", "holds no points"),
    ("words.txt", "1 2 3\n4 five 6\n", "line 2: expected numbers"),
    ("ragged.xyz", "1 2 3\n4 5\n", "line 2: expected 3 columns, got 2"),
    ("two.txt", "1 2\n3 4\n", "must hold an [N, >=3] array"),
    ("nan.txt", "1 2 3\nnan 0 0\n", "holds NaN or infinite coordinates (first bad row 1)"),
    ("bin.ply", "ply\nformat binary_little_endian 1.0\nelement vertex 1\nend_header\n", "only ASCII PLY"),
    (
        "noz.ply",
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n1 2\n",
        "lack properties ['z']",
    ),
    (
        "short.ply",
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n1 2 3\n",
        "declares 3 vertices, file holds 1",
    ),
    ("nohead.ply", "1 2 3\n", "must start with 'ply'"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(WorkloadError) as info:
        read_points(tmp_path / name)
    assert message in str(info.value) and name in str(info.value)


def test_bad_npy_and_writes(tmp_path: Path) -> None:
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(WorkloadError, match="not a readable .npy"):
        read_points(tmp_path / "junk.npy")
    np.save(tmp_path / "flat.npy", np.arange(6.0))
    with pytest.raises(WorkloadError, match=r"got shape \(6,\)"):
        read_points(tmp_path / "flat.npy")
    with pytest.raises(AccelSimsError, match="points must have 3 coordinate columns"):
        write_points(tmp_path / "x.npy", np.zeros((4, 2)))
    with pytest.raises(WorkloadError, match="suffix"):
        write_points(tmp_path / "x.csv", np.zeros((4, 3)))


@pytest.mark.parametrize("kind", ["object", "room", "lidar"])
def test_synthetic_clouds_are_deterministic_and_sized(kind: str) -> None:
    a = synthetic_cloud(kind, 4096, seed=3)
    np.testing.assert_array_equal(a, synthetic_cloud(kind, 4096, seed=3))
    assert a.shape == (4096, 3) and a.dtype == np.float64 and np.isfinite(a).all()
    assert not np.array_equal(a, synthetic_cloud(kind, 4096, seed=4))
    assert np.unique(a, axis=0).shape[0] > 4000


def test_object_shapes_fit_the_unit_sphere() -> None:
    for shape in OBJECT_SHAPES:
        pts = object_cloud(2048, seed=1, shape=shape)
        radius = np.linalg.norm(pts, axis=1)
        assert radius.max() == pytest.approx(1.0) and np.abs(pts.mean(axis=0)).max() < 1e-9
    with pytest.raises(AccelSimsError, match="shape must be one of"):
        object_cloud(10, shape="sofa")


def test_room_and_lidar_extents() -> None:
    room = room_cloud(20_000, seed=2)
    assert room.min() > -0.05 and room.max(axis=0)[2] < 3.3
    floor = np.abs(room[:, 2]) < 0.02
    assert 0.1 < floor.mean() < 0.5  # the floor is one of the largest surfaces
    scan = lidar_scan(20_000, seed=2)
    rng = np.linalg.norm(scan[:, :2], axis=1)
    assert rng.max() < 81 and scan[:, 2].min() > -0.2
    assert (scan[:, 2] > 0.3).mean() > 0.05  # cars, poles and facades, not only ground
    assert np.median(rng) < 20  # returns crowd near the sensor, as on a real sweep


def test_synthetic_bad_arguments() -> None:
    with pytest.raises(AccelSimsError, match="kind must be one of"):
        synthetic_cloud("forest", 100)
    with pytest.raises(AccelSimsError, match="n_points must be >= 1"):
        synthetic_cloud("room", 0)
