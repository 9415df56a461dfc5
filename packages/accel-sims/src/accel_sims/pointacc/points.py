"""Point files and synthetic point clouds for PointAcc's workloads (arXiv:2110.07600; its networks run ModelNet40-style
classification, part segmentation, S3DIS-style indoor and KITTI-style outdoor scenes: hw.md Sec. 3.2, list [M]).

Files (`read_points`, `write_points`): `.npy` ([N, C] array), `.txt` / `.xyz` / `.pts` (whitespace-separated
columns, `#` comments) and ASCII `.ply` (the vertex element's x, y, z properties). Files may carry extra columns
(colours, labels, intensity); the first three columns, or the x/y/z properties of a PLY, are the coordinates.

Synthetic clouds (`synthetic_cloud(kind, n_points, seed)`), deterministic for a given seed and size, no downloads:

- "object": a ModelNet-style CAD object (chair, table, lamp, airplane or mug built from boxes, cylinders, spheres and
  a torus), surface-sampled by area and normalized to the unit sphere as the PointNet++ loaders do. ModelNet40 uses
  1,024 to 10,000 points per object.
- "room": an S3DIS-style office room in metres (about 6 x 5 x 3 m): floor, ceiling, four walls, a board, tables and
  chairs, with 5 mm sensor noise. S3DIS rooms hold 0.5-3 M points; PointNet++ feeds 4,096-point blocks and sparse
  convolution networks whole rooms subsampled to tens of thousands of points.
- "lidar": a single spinning-LiDAR sweep, ray-cast from 1.73 m height (a KITTI Velodyne HDL-64E: 64 beams between
  -24.8 and +2 degrees elevation, 80 m range, 2 cm range noise) against a ground plane, parked cars, poles and
  building facades along a street. A KITTI sweep holds about 120 K points.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np

from accel_sims.errors import AccelSimsError, WorkloadError
from accel_sims.pointacc._checks import as_points, positive_int

CloudKind = Literal["object", "room", "lidar"]
CLOUD_KINDS: tuple[str, ...] = ("object", "room", "lidar")
OBJECT_SHAPES: tuple[str, ...] = ("chair", "table", "lamp", "airplane", "mug")
POINT_SUFFIXES: tuple[str, ...] = (".npy", ".txt", ".xyz", ".pts", ".ply")


# --------------------------------------------------------------------------------------------------- files


def read_points(path: str | Path) -> np.ndarray:
    """Coordinates [N, 3] float64 of a point file (module docstring for the formats). Raises WorkloadError naming
    the file when it is missing, empty, malformed, has fewer than three columns or holds NaN/inf coordinates."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise WorkloadError(f"point file {p}: suffix must be one of {', '.join(POINT_SUFFIXES)}; got {suffix!r}")
    if not p.is_file():
        raise WorkloadError(f"point file {p} does not exist")
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise WorkloadError(f"point file {p} is not a readable .npy array: {exc}") from exc
    elif suffix == ".ply":
        arr = _read_ply(p)
    else:
        arr = _read_columns(p)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise WorkloadError(f"point file {p} must hold an [N, >=3] array of coordinates; got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise WorkloadError(f"point file {p} holds no points")
    try:
        return as_points(f"points of {p}", arr[:, :3]).copy()
    except AccelSimsError as exc:
        raise WorkloadError(str(exc)) from exc


def write_points(path: str | Path, points: np.ndarray) -> Path:
    """Write points [N, 3] as .npy, whitespace text (.txt/.xyz/.pts, 17 significant digits so a round trip is exact)
    or ASCII .ply. Returns the path."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise WorkloadError(f"point file {p}: suffix must be one of {', '.join(POINT_SUFFIXES)}; got {suffix!r}")
    pts = as_points("points", points, dims=3)
    if suffix == ".npy":
        np.save(p, pts)
    elif suffix == ".ply":
        header = f"ply\nformat ascii 1.0\nelement vertex {pts.shape[0]}\n"
        header += "property double x\nproperty double y\nproperty double z\nend_header\n"
        p.write_text(header + "".join(f"{x!r} {y!r} {z!r}\n" for x, y, z in pts.tolist()))
    else:
        np.savetxt(p, pts, fmt="%.17g")
    return p


def _read_columns(p: Path) -> np.ndarray:
    rows: list[list[float]] = []
    width = -1
    for lineno, line in enumerate(p.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            row = [float(v) for v in text.replace(",", " ").split()]
        except ValueError as exc:
            raise WorkloadError(f"point file {p}, line {lineno}: expected numbers, got {text[:60]!r}") from exc
        if width < 0:
            width = len(row)
        elif len(row) != width:
            raise WorkloadError(f"point file {p}, line {lineno}: expected {width} columns, got {len(row)}")
        rows.append(row)
    if not rows:
        raise WorkloadError(f"point file {p} holds no points")
    return np.asarray(rows, dtype=np.float64)


def _read_ply(p: Path) -> np.ndarray:
    lines = p.read_bytes().decode("ascii", errors="replace").splitlines()
    if not lines or lines[0].strip() != "ply":
        raise WorkloadError(f"point file {p}: a PLY file must start with 'ply'")
    n_vertex, props, current, end = -1, [], "", -1
    for i, line in enumerate(lines[1:], start=1):
        words = line.split()
        if not words:
            continue
        if words[0] == "format" and words[1:2] != ["ascii"]:
            raise WorkloadError(f"point file {p}: only ASCII PLY is supported; got format {' '.join(words[1:])!r}")
        if words[0] == "element":
            current = words[1] if len(words) > 1 else ""
            if current == "vertex":
                n_vertex = int(words[2])
            elif n_vertex < 0:
                raise WorkloadError(f"point file {p}: the vertex element must come first in the PLY header")
        elif words[0] == "property" and current == "vertex":
            if words[1] == "list":
                raise WorkloadError(f"point file {p}: list properties on vertices are not supported")
            props.append(words[-1])
        elif words[0] == "end_header":
            end = i
            break
    if end < 0 or n_vertex < 0:
        raise WorkloadError(f"point file {p}: PLY header without 'element vertex N' and 'end_header'")
    missing = [c for c in ("x", "y", "z") if c not in props]
    if missing:
        raise WorkloadError(f"point file {p}: PLY vertices lack properties {missing}")
    body = lines[end + 1 : end + 1 + n_vertex]
    if len(body) < n_vertex:
        raise WorkloadError(f"point file {p}: header declares {n_vertex} vertices, file holds {len(body)}")
    try:
        table = np.asarray([[float(v) for v in row.split()[: len(props)]] for row in body], dtype=np.float64)
    except ValueError as exc:
        raise WorkloadError(f"point file {p}: a vertex line is not numeric ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != len(props):
        raise WorkloadError(f"point file {p}: vertex lines must hold {len(props)} values")
    return table[:, [props.index("x"), props.index("y"), props.index("z")]]


# --------------------------------------------------------------------------------------------------- surfaces
# A primitive is (kind, parameters); `_area` and `_sample` know each kind. Boxes are axis-aligned (centre, size);
# cylinders stand along z (centre, radius, height) unless axis is "x"; spheres (centre, radius); the torus lies in
# the x-z plane (centre, major radius, minor radius), the handle of a mug.
_Primitive = tuple[str, tuple[float, ...]]


def _box(cx: float, cy: float, cz: float, sx: float, sy: float, sz: float) -> _Primitive:
    return ("box", (cx, cy, cz, sx, sy, sz))


def _cyl(cx: float, cy: float, cz: float, r: float, h: float, axis_x: bool = False) -> _Primitive:
    return ("cylx" if axis_x else "cyl", (cx, cy, cz, r, h))


def _area(prim: _Primitive) -> float:
    kind, a = prim
    if kind == "box":
        sx, sy, sz = a[3:]
        return 2 * (sx * sy + sy * sz + sx * sz)
    if kind in ("cyl", "cylx"):
        r, h = a[3:]
        return 2 * math.pi * r * h + 2 * math.pi * r * r
    if kind == "sphere":
        return 4 * math.pi * a[3] ** 2
    return 4 * math.pi**2 * a[3] * a[4]  # torus


def _sample(prim: _Primitive, n: int, rng: np.random.Generator) -> np.ndarray:
    kind, a = prim
    centre = np.asarray(a[:3])
    if kind == "box":
        size = np.asarray(a[3:])
        face_area = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
        axis = rng.choice(3, size=n, p=face_area / face_area.sum())
        u = rng.random((n, 3)) - 0.5
        u[np.arange(n), axis] = np.where(rng.random(n) < 0.5, -0.5, 0.5)  # pin one coordinate to a face
        return centre + u * size
    if kind in ("cyl", "cylx"):
        r, h = a[3:]
        theta = rng.random(n) * 2 * math.pi
        on_side = rng.random(n) < h / (h + r)  # lateral area 2 pi r h vs caps 2 pi r^2
        rad = np.where(on_side, r, r * np.sqrt(rng.random(n)))
        t = np.where(on_side, rng.random(n) - 0.5, np.where(rng.random(n) < 0.5, -0.5, 0.5)) * h
        local = np.stack([rad * np.cos(theta), rad * np.sin(theta), t], axis=1)
        return centre + (local[:, [2, 0, 1]] if kind == "cylx" else local)
    if kind == "sphere":
        v = rng.normal(size=(n, 3))
        return centre + a[3] * v / np.linalg.norm(v, axis=1, keepdims=True)
    big, small = a[3:]
    u, v = rng.random(n) * 2 * math.pi, rng.random(n) * 2 * math.pi
    ring = big + small * np.cos(v)
    return centre + np.stack([ring * np.cos(u), small * np.sin(v), ring * np.sin(u)], axis=1)


def _sample_surfaces(prims: list[_Primitive], n: int, rng: np.random.Generator) -> np.ndarray:
    areas = np.asarray([_area(p) for p in prims])
    counts = rng.multinomial(n, areas / areas.sum())
    pts = np.concatenate([_sample(p, int(c), rng) for p, c in zip(prims, counts, strict=True)])
    return pts[rng.permutation(n)]


def _object_parts(shape: str) -> list[_Primitive]:
    if shape == "chair":
        legs = [_box(x, y, 0.22, 0.04, 0.04, 0.44) for x in (-0.2, 0.2) for y in (-0.2, 0.2)]
        return [_box(0, 0, 0.46, 0.46, 0.46, 0.04), _box(0, 0.21, 0.78, 0.46, 0.04, 0.6), *legs]
    if shape == "table":
        legs = [_box(x, y, 0.36, 0.06, 0.06, 0.72) for x in (-0.7, 0.7) for y in (-0.35, 0.35)]
        return [_box(0, 0, 0.74, 1.6, 0.8, 0.04), *legs]
    if shape == "lamp":
        return [_cyl(0, 0, 0.02, 0.15, 0.04), _cyl(0, 0, 0.4, 0.015, 0.76), _cyl(0, 0, 0.85, 0.18, 0.22)]
    if shape == "airplane":
        return [
            _cyl(0, 0, 0, 0.12, 2.0, axis_x=True),
            _box(0.1, 0, 0, 0.35, 2.2, 0.03),
            _box(-0.9, 0, 0, 0.2, 0.7, 0.02),
            _box(-0.9, 0, 0.18, 0.2, 0.02, 0.35),
            ("sphere", (1.0, 0.0, 0.0, 0.12)),
        ]
    if shape == "mug":
        return [_cyl(0, 0, 0.5, 0.4, 1.0), ("torus", (0.55, 0.0, 0.5, 0.22, 0.05))]
    raise AccelSimsError(f"shape must be one of {', '.join(OBJECT_SHAPES)}; got {shape!r}")


def object_cloud(n_points: int = 4096, seed: int = 0, shape: str | None = None) -> np.ndarray:
    """A ModelNet-style object [n_points, 3]: surface samples of `shape` (seed picks one when None), centred and
    scaled into the unit sphere."""
    n = positive_int("n_points", n_points)
    rng = np.random.default_rng(seed)
    name = shape if shape is not None else OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))]
    pts = _sample_surfaces(_object_parts(name), n, rng)
    pts -= pts.mean(axis=0)
    return pts / np.linalg.norm(pts, axis=1).max()


def room_cloud(n_points: int = 40_960, seed: int = 0) -> np.ndarray:
    """An S3DIS-style office room [n_points, 3] in metres (module docstring)."""
    n = positive_int("n_points", n_points)
    rng = np.random.default_rng(seed)
    lx, ly, lz = 5.0 + rng.random() * 3, 4.0 + rng.random() * 2, 2.8 + rng.random() * 0.4
    # Thin boxes for the shell: sampling a slab's six faces puts points on both sides of a wall, as a scanner that
    # sees the wall from inside does not; so the shell faces are sampled as planes (boxes of zero thickness).
    prims: list[_Primitive] = [
        _box(lx / 2, ly / 2, 0, lx, ly, 0),
        _box(lx / 2, ly / 2, lz, lx, ly, 0),
        _box(0, ly / 2, lz / 2, 0, ly, lz),
        _box(lx, ly / 2, lz / 2, 0, ly, lz),
        _box(lx / 2, 0, lz / 2, lx, 0, lz),
        _box(lx / 2, ly, lz / 2, lx, 0, lz),
        _box(lx / 2, ly - 0.02, 1.5, 2.0, 0.02, 1.0),  # board
    ]
    for _ in range(int(rng.integers(2, 5))):
        tx, ty = 1.0 + rng.random() * (lx - 2), 1.0 + rng.random() * (ly - 2)
        prims += [_box(tx, ty, 0.74, 1.4, 0.7, 0.04)]
        prims += [_box(tx + sx, ty + sy, 0.36, 0.05, 0.05, 0.72) for sx in (-0.6, 0.6) for sy in (-0.3, 0.3)]
        for side in (-1, 1):
            cx, cy = tx + side * 0.3, ty + side * 0.6
            prims += [_box(cx, cy, 0.46, 0.45, 0.45, 0.05), _box(cx, cy + side * 0.2, 0.75, 0.45, 0.05, 0.55)]
            prims += [_cyl(cx, cy, 0.22, 0.03, 0.44)]
    pts = _sample_surfaces(prims, n, rng)
    return pts + rng.normal(scale=0.005, size=pts.shape)


def _ray_boxes(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Nearest hit distance [R] of rays from `origin` along unit `dirs` [R, 3] with boxes [B, 3] (inf on a miss):
    the slab method, vectorized over rays and boxes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1 = (lo[None, :, :] - origin) * inv[:, None, :]
        t2 = (hi[None, :, :] - origin) * inv[:, None, :]
    near = np.nanmax(np.minimum(t1, t2), axis=2)
    far = np.nanmin(np.maximum(t1, t2), axis=2)
    hit = (far >= near) & (far > 0)
    return np.where(hit, np.maximum(near, 0), np.inf).min(axis=1)


def lidar_scan(n_points: int = 100_000, seed: int = 0, beams: int = 64) -> np.ndarray:
    """One spinning-LiDAR sweep [n_points, 3] in metres, sensor at (0, 0, 1.73) (module docstring)."""
    n = positive_int("n_points", n_points)
    beams = positive_int("beams", beams)
    rng = np.random.default_rng(seed)
    height, max_range = 1.73, 80.0
    boxes = []
    for _ in range(24):  # parked cars on both kerbs
        x, y = rng.uniform(-60, 60), rng.choice([-4.0, 4.0]) + rng.normal(0, 0.3)
        boxes.append(((x - 2.25, y - 0.9, 0.0), (x + 2.25, y + 0.9, 1.5)))
    for _ in range(16):  # poles and trunks
        x, y = rng.uniform(-60, 60), rng.choice([-7.0, 7.0])
        boxes.append(((x - 0.15, y - 0.15, 0.0), (x + 0.15, y + 0.15, 5.0)))
    for side in (-1.0, 1.0):  # facades, with gaps between buildings
        for x0 in range(-80, 80, 20):
            length = rng.uniform(12, 19)
            y0 = side * rng.uniform(10, 14)
            boxes.append(((x0, min(y0, y0 + side * 8), 0.0), (x0 + length, max(y0, y0 + side * 8), rng.uniform(6, 20))))
    lo, hi = np.asarray([b[0] for b in boxes]), np.asarray([b[1] for b in boxes])
    elevation = np.deg2rad(np.linspace(-24.8, 2.0, beams))
    origin = np.array([0.0, 0.0, height])
    steps = max(8, math.ceil(1.5 * n / beams))
    for _ in range(8):  # widen the azimuth sampling until enough rays return
        azimuth = (np.arange(steps) + rng.random()) * (2 * math.pi / steps)
        el, az = np.meshgrid(elevation, azimuth, indexing="ij")
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
        t = np.full(dirs.shape[0], np.inf)
        for chunk in range(0, dirs.shape[0], 20_000):  # bound the [rays, boxes, 3] slab arrays
            t[chunk : chunk + 20_000] = _ray_boxes(origin, dirs[chunk : chunk + 20_000], lo, hi)
        with np.errstate(divide="ignore"):
            t_ground = np.where(dirs[:, 2] < 0, -height / dirs[:, 2], np.inf)
        t = np.minimum(t, t_ground)
        ok = np.flatnonzero(t <= max_range)
        if ok.shape[0] >= n:
            keep = np.sort(rng.choice(ok, size=n, replace=False))  # keep scan order
            r = t[keep] + rng.normal(scale=0.02, size=n)
            return origin + dirs[keep] * r[:, None]
        steps = math.ceil(steps * 1.5 * n / max(1, ok.shape[0]))
    raise AccelSimsError(f"could not ray-cast {n} returns with {beams} beams")  # unreachable for sane sizes


def synthetic_cloud(kind: str, n_points: int, seed: int = 0) -> np.ndarray:
    """A synthetic cloud [n_points, 3] float64 of `kind` "object", "room" or "lidar" (module docstring)."""
    if kind == "object":
        return object_cloud(n_points, seed)
    if kind == "room":
        return room_cloud(n_points, seed)
    if kind == "lidar":
        return lidar_scan(n_points, seed)
    raise AccelSimsError(f"kind must be one of {', '.join(CLOUD_KINDS)}; got {kind!r}")
