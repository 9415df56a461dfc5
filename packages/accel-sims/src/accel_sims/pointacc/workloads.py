"""Point-cloud network workloads for the PointAcc simulator: editable layer lists built on synthetic clouds.

PointAcc (arXiv:2110.07600), Sec. 2 (the networks and their mapping operations) and Sec. 5 (benchmarks: PointNet,
PointNet++ classification / segmentation, DGCNN, F-PointNet++, MinkowskiUNet indoor / outdoor [M]).

A `Workload` is a tuple of `Layer` records (pydantic; edit them with `Workload.replace_layer` / `model_copy`) plus the
access maps the memory management unit replays (`AccessMap`: the input-row indices each gather or sparse convolution
reads, from the real mapping operations of `accel_sims.pointacc.mapping` on a synthetic cloud of
`accel_sims.pointacc.points`). Layers without a map (added by hand) get a uniform random access stream.

Layer shapes follow the published architectures (sources in each builder's docstring); where we simplify, the
docstring says so. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from accel_sims.errors import AccelSimsError, WorkloadError

OpKind = Literal[
    "fps",
    "knn",
    "ball_query",
    "voxel_downsample",
    "kernel_map",
    "gather",
    "interpolate",
    "sparse_conv",
    "dense",
    "pool",
]
MAPPING_OPS: tuple[str, ...] = ("fps", "knn", "ball_query", "voxel_downsample", "kernel_map")
OP_KINDS: tuple[str, ...] = MAPPING_OPS + ("gather", "interpolate", "sparse_conv", "dense", "pool")


class Layer(BaseModel):
    """One step of a point-cloud network.

    Field meaning by `op` (rows = points; channels = feature width):
    - fps: sample `n_out` of `n_in` points. knn / ball_query: `n_out` queries over `n_in` points, `k` neighbours,
      distances in `dims` dimensions (3 = coordinates; more = feature space, computed on the matrix unit).
    - voxel_downsample: `n_in` coordinates to `n_out` unique coarse coordinates.
    - kernel_map: sparse-conv maps between `n_in` inputs and `n_out` outputs over `k` kernel offsets, `pairs` in all.
    - gather: `n_out` groups of `k` input rows (`c_in` wide) from `n_in`; emits n_out*k rows of `c_out` channels
      (c_out may add the 3 relative coordinates).
    - interpolate: `n_out` points each a weighted sum of `k` rows of `n_in`; `c_out` = c_in + `skip_channels`
      (features concatenated from the skip connection, read from DRAM).
    - sparse_conv: `pairs` (input, output, offset) triples over `k` offsets, `c_in` -> `c_out`.
    - dense: point-wise layer (shared MLP / 1x1 conv / FC) on `n_in` = `n_out` rows, `c_in` -> `c_out`.
    - pool: max (or max+avg) over groups of `k` rows: `n_in` = n_out * k; `c_out` = c_in or 2 * c_in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op: OpKind
    n_in: int = Field(description="Input points/rows (see the class docstring).")
    n_out: int = Field(description="Output points/rows or queries.")
    c_in: int = Field(default=0, description="Input channels (0 for pure mapping operations).")
    c_out: int = Field(default=0, description="Output channels.")
    k: int = Field(default=1, description="Neighbours, group size or kernel volume.")
    dims: int = Field(default=3, description="Distance dimensions of knn / ball_query.")
    pairs: int = Field(default=0, description="kernel_map / sparse_conv: (input, output, offset) pairs in all.")
    skip_channels: int = Field(default=0, description="interpolate: skip-connection channels concatenated.")
    map_id: str | None = Field(default=None, description="Key of the workload's AccessMap this layer replays.")
    note: str = Field(default="", description="Where the shape comes from.")


@dataclasses.dataclass(frozen=True)
class AccessMap:
    """Input-row indices the MMU reads, in the order of the accelerator's dataflow.

    For gathers: `in_idx` in query order (k per query). For kernel maps: one entry per pair with its output row and
    kernel offset; the simulator orders them output-tile-major, offset, output (output-stationary tiles).
    """

    in_idx: np.ndarray
    out_idx: np.ndarray | None = None
    offset: np.ndarray | None = None
    n_in: int = 0
    n_out: int = 0
    kernel_volume: int = 1

    @property
    def sizes(self) -> np.ndarray:
        """Pairs per kernel offset (kernel maps) or the access count (gathers)."""
        if self.offset is None:
            return np.asarray([self.in_idx.size], dtype=np.int64)
        return np.bincount(self.offset, minlength=self.kernel_volume).astype(np.int64)

    def transposed(self) -> AccessMap:
        """The same pairs with inputs and outputs swapped (transposed convolution reuses the map)."""
        if self.out_idx is None:
            raise AccelSimsError("only kernel maps (with out_idx) can be transposed")
        return AccessMap(self.out_idx, self.in_idx, self.offset, self.n_out, self.n_in, self.kernel_volume)


class Workload(BaseModel):
    """A network as a list of layers, plus the access maps of its gathers and sparse convolutions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    layers: tuple[Layer, ...]
    points: int = Field(default=0, description="Points of the input cloud (after voxelization for sparse nets).")
    builder: str | None = Field(
        default=None, description="Built-in network this was made from (`make_workload` name), to rebuild its maps."
    )
    builder_points: int = Field(default=0, description="The n_points passed to the builder (before voxelization).")
    seed: int = Field(default=0)
    source: str = Field(default="", description="Architecture source and our assumptions.")
    _maps: dict[str, AccessMap] = PrivateAttr(default_factory=dict)

    @property
    def maps(self) -> dict[str, AccessMap]:
        """Access maps by id (not serialized; `model_copy` keeps them)."""
        return self._maps

    def with_maps(self, maps: dict[str, AccessMap]) -> Workload:
        wl = self.model_copy()
        wl._maps = dict(maps)
        return wl

    def replace_layer(self, name: str, **changes: object) -> Workload:
        """A copy with the fields of layer `name` changed (e.g. `c_out=128`), maps kept."""
        names = [layer.name for layer in self.layers]
        if name not in names:
            raise AccelSimsError(f"no layer named {name!r} in workload {self.name!r}")
        i = names.index(name)
        layers = list(self.layers)
        layers[i] = Layer.model_validate({**layers[i].model_dump(), **changes})
        wl = self.model_copy(update={"layers": tuple(layers)})
        wl._maps = dict(self._maps)
        return wl


def check_workload(workload: Workload) -> None:
    """Reject layers the simulator cannot run: the error names the layer and the field."""
    if not workload.layers:
        raise WorkloadError(f"workload {workload.name!r}: field layers is empty; expected at least one layer")
    for i, ly in enumerate(workload.layers):
        where = f"workload {workload.name!r} layer {i} ({ly.name!r}, op {ly.op})"
        for f in ("n_in", "n_out", "k", "dims"):
            if getattr(ly, f) < 1:
                raise WorkloadError(f"{where}: field {f} must be >= 1, got {getattr(ly, f)}")
        for f in ("c_in", "c_out", "pairs", "skip_channels"):
            if getattr(ly, f) < 0:
                raise WorkloadError(f"{where}: field {f} must be >= 0, got {getattr(ly, f)}")
        if ly.op in ("gather", "interpolate", "sparse_conv", "dense", "pool"):
            for f in ("c_in", "c_out"):
                if getattr(ly, f) < 1:
                    raise WorkloadError(f"{where}: field {f} must be >= 1 for op {ly.op}, got {getattr(ly, f)}")
        if ly.op in ("knn", "ball_query") and ly.k > ly.n_in:
            raise WorkloadError(f"{where}: field k = {ly.k} exceeds the n_in = {ly.n_in} points searched")
        if ly.op == "fps" and ly.n_out > ly.n_in:
            raise WorkloadError(f"{where}: field n_out = {ly.n_out} exceeds n_in = {ly.n_in} (FPS samples points)")
        if ly.op == "dense" and ly.n_in != ly.n_out:
            raise WorkloadError(f"{where}: field n_out = {ly.n_out} must equal n_in = {ly.n_in} for a dense layer")
        if ly.op == "pool" and ly.n_in != ly.n_out * ly.k:
            raise WorkloadError(f"{where}: field n_in = {ly.n_in} must equal n_out * k = {ly.n_out * ly.k}")
        if ly.op in ("kernel_map", "sparse_conv") and ly.pairs < 1:
            raise WorkloadError(f"{where}: field pairs must be >= 1 for op {ly.op}, got {ly.pairs}")
        if ly.map_id is not None:
            m = workload.maps.get(ly.map_id)
            want = ly.pairs if ly.op == "sparse_conv" else ly.n_out * ly.k
            if m is not None and ly.op in ("gather", "interpolate", "sparse_conv") and m.in_idx.size != want:
                what = "pairs" if ly.op == "sparse_conv" else "n_out * k"
                raise WorkloadError(
                    f"{where}: field map_id {ly.map_id!r} holds {m.in_idx.size} accesses but {what} = {want}"
                )
            if m is not None and m.in_idx.size and int(m.in_idx.max()) >= ly.n_in:
                raise WorkloadError(
                    f"{where}: field map_id {ly.map_id!r} indexes row {int(m.in_idx.max())} but n_in = {ly.n_in}"
                )


# ------------------------------------------------------------------------------------------------------- builders


class _Net:
    """Accumulates layers and access maps while a builder walks a network."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self.maps: dict[str, AccessMap] = {}

    def add(self, name: str, op: OpKind, n_in: int, n_out: int, **fields: object) -> None:
        self.layers.append(Layer.model_validate({"name": name, "op": op, "n_in": n_in, "n_out": n_out, **fields}))

    def mlp(self, prefix: str, rows: int, c_in: int, widths: list[int] | tuple[int, ...], note: str = "") -> int:
        c = c_in
        for j, c_out in enumerate(widths):
            self.add(f"{prefix}.mlp{j}", "dense", rows, rows, c_in=c, c_out=c_out, note=note)
            c = c_out
        return c

    def build(self, name: str, points: int, seed: int, source: str) -> Workload:
        return Workload(name=name, layers=tuple(self.layers), points=points, seed=seed, source=source).with_maps(
            self.maps
        )


def _gather_map(idx: np.ndarray, self_idx: np.ndarray, n_in: int) -> AccessMap:
    """A gather map from [Q, k] neighbour indices; empty neighbourhoods (-1) read the query's own point."""
    idx = np.where(idx < 0, self_idx[:, None], idx)
    return AccessMap(in_idx=idx.reshape(-1).astype(np.int64), n_in=n_in, n_out=idx.shape[0])


def _set_abstraction(
    net: _Net, tag: str, xyz: np.ndarray, c_in: int, npoint: int, radius: float, nsample: int, widths: list[int]
) -> tuple[np.ndarray, np.ndarray, int]:
    """PointNet++ set abstraction: FPS -> ball query -> gather (features + relative xyz) -> shared MLP -> max pool."""
    from accel_sims.pointacc.mapping import ball_query, farthest_point_sampling

    n = xyz.shape[0]
    nsample = min(nsample, n)  # small test clouds: a ball cannot hold more points than the cloud
    centres = farthest_point_sampling(xyz, npoint)
    idx, _counts = ball_query(xyz[centres], xyz, radius, nsample)
    net.maps[f"{tag}.group"] = _gather_map(idx, centres, n)
    net.add(f"{tag}.fps", "fps", n, npoint)
    net.add(f"{tag}.ball_query", "ball_query", n, npoint, k=nsample, note=f"radius {radius}")
    net.add(f"{tag}.group", "gather", n, npoint, k=nsample, c_in=c_in + 3, c_out=c_in + 3, map_id=f"{tag}.group")
    c = net.mlp(tag, npoint * nsample, c_in + 3, widths)
    net.add(f"{tag}.pool", "pool", npoint * nsample, npoint, k=nsample, c_in=c, c_out=c)
    return xyz[centres], centres, c


def _group_all(net: _Net, tag: str, n: int, c_in: int, widths: list[int]) -> int:
    c = net.mlp(tag, n, c_in + 3, widths)
    net.add(f"{tag}.pool", "pool", n, 1, k=n, c_in=c, c_out=c)
    return c


def _head(net: _Net, c: int, widths: list[int]) -> None:
    net.mlp("head", 1, c, widths, note="fully connected classifier")


def pointnet(n_points: int = 1024, seed: int = 0) -> Workload:
    """PointNet classification (Qi et al., CVPR 2017): shared MLP (64, 64) and (64, 128, 1024), global max pool,
    FC 512-256-40. The input and feature T-Nets are left out (our simplification)."""
    net = _Net()
    c = net.mlp("mlp1", n_points, 3, [64, 64])
    c = net.mlp("mlp2", n_points, c, [64, 128, 1024])
    net.add("global.pool", "pool", n_points, 1, k=n_points, c_in=c, c_out=c)
    _head(net, c, [512, 256, 40])
    return net.build("pointnet", n_points, seed, "PointNet cls (Qi et al. 2017, vanilla without T-Nets)")


def pointnet2_cls(n_points: int = 1024, seed: int = 0) -> Workload:
    """PointNet++ SSG classification (Qi et al., NeurIPS 2017, the ModelNet40 SSG model): SA(512, 0.2, 32,
    [64, 64, 128]), SA(128, 0.4, 64, [128, 128, 256]), SA(all, [256, 512, 1024]), FC 512-256-40; on an `object_cloud`
    in the unit sphere."""
    from accel_sims.pointacc.points import object_cloud

    xyz = object_cloud(n_points, seed)
    net = _Net()
    s1 = max(1, n_points // 2)
    s2 = max(1, n_points // 8)
    xyz1, _, c = _set_abstraction(net, "sa1", xyz, 0, s1, 0.2, 32, [64, 64, 128])
    _xyz2, _, c = _set_abstraction(net, "sa2", xyz1, c, s2, 0.4, 64, [128, 128, 256])
    c = _group_all(net, "sa3", s2, c, [256, 512, 1024])
    _head(net, c, [512, 256, 40])
    return net.build(
        "pointnet2-cls", n_points, seed, "PointNet++ SSG cls (Qi et al. 2017; pointnet2 repo ModelNet40 SSG config)"
    )


def _s3dis_block(n_points: int, seed: int) -> np.ndarray:
    """n_points from a 1.5 m x 1.5 m column of a synthetic room (S3DIS training blocks are 1 m x 1 m; we widen it
    so the block holds enough distinct surface points), coordinates in metres."""
    from accel_sims.pointacc.points import room_cloud

    room = room_cloud(max(40 * n_points, 40_960), seed)
    centre = (room.min(axis=0) + room.max(axis=0)) / 2
    inside = np.flatnonzero(np.all(np.abs(room[:, :2] - centre[:2]) <= 0.75, axis=1))
    rng = np.random.default_rng(seed)
    pick = rng.choice(inside, size=n_points, replace=inside.size < n_points)
    return room[np.sort(pick)]


def pointnet2_seg(n_points: int = 4096, seed: int = 0) -> Workload:
    """PointNet++ SSG semantic segmentation for S3DIS (the pointnet2 repo's sem-seg SSG model): 9 input channels;
    SA(N/4, 0.1, 32, [32, 32, 64]), SA(N/16, 0.2, 32, [64, 64, 128]), SA(N/64, 0.4, 32, [128, 128, 256]),
    SA(N/256, 0.8, 32, [256, 256, 512]); feature propagation by 3-NN interpolation with skips, MLPs [256, 256],
    [256, 256], [256, 128], [128, 128, 128]; head 128-128-13."""
    from accel_sims.pointacc.mapping import knn

    if n_points < 256:
        raise AccelSimsError(f"n_points must be >= 256 for pointnet2-seg (four 4x downsamplings), got {n_points}")
    xyz0 = _s3dis_block(n_points, seed)
    net = _Net()
    levels = [xyz0]
    chans = [9]
    for j, (radius, widths) in enumerate(
        [(0.1, [32, 32, 64]), (0.2, [64, 64, 128]), (0.4, [128, 128, 256]), (0.8, [256, 256, 512])]
    ):
        xyz = levels[-1]
        new_xyz, _, c = _set_abstraction(net, f"sa{j + 1}", xyz, chans[-1], xyz.shape[0] // 4, radius, 32, widths)
        levels.append(new_xyz)
        chans.append(c)
    c = chans[-1]
    fp_widths = [[256, 256], [256, 256], [256, 128], [128, 128, 128]]
    for j, widths in enumerate(fp_widths):
        coarse, fine = levels[4 - j], levels[3 - j]
        skip = chans[3 - j] if j < 3 else 0  # FP1 of the sem-seg model does not concatenate the raw input
        tag = f"fp{4 - j}"
        idx, _ = knn(fine, coarse, 3)
        net.maps[f"{tag}.interp"] = AccessMap(in_idx=idx.reshape(-1).astype(np.int64), n_in=coarse.shape[0],
                                              n_out=fine.shape[0])  # fmt: skip
        net.add(f"{tag}.knn", "knn", coarse.shape[0], fine.shape[0], k=3)
        net.add(f"{tag}.interp", "interpolate", coarse.shape[0], fine.shape[0], k=3, c_in=c, c_out=c + skip,
                skip_channels=skip, map_id=f"{tag}.interp")  # fmt: skip
        c = net.mlp(tag, fine.shape[0], c + skip, widths)
    net.mlp("head", n_points, c, [128, 13])
    return net.build(
        "pointnet2-seg", n_points, seed, "PointNet++ SSG sem-seg for S3DIS (pointnet2 repo); synthetic room block"
    )


def dgcnn(n_points: int = 1024, seed: int = 0, k: int = 20) -> Workload:
    """DGCNN classification (Wang et al., TOG 2019): four EdgeConvs (kNN graph rebuilt in each layer's feature
    space, k = 20; edge feature [x_i, x_j - x_i]; MLP 64, 64, 128, 256; max over neighbours), concat 512 -> 1024,
    max+avg global pool, FC 512-256-40.

    The access maps of EdgeConvs 2-4 reuse the coordinate kNN graph (we have no trained features); their
    feature-space kNN cost is still charged in `dims` dimensions."""
    from accel_sims.pointacc.mapping import knn
    from accel_sims.pointacc.points import object_cloud

    if k > n_points:
        raise AccelSimsError(f"k must be <= n_points, got k={k}, n_points={n_points}")
    xyz = object_cloud(n_points, seed)
    idx, _ = knn(xyz, xyz, k)
    net = _Net()
    net.maps["edge"] = _gather_map(idx, np.arange(n_points), n_points)
    c = 3
    outs = []
    for j, width in enumerate([64, 64, 128, 256]):
        tag = f"ec{j + 1}"
        net.add(f"{tag}.knn", "knn", n_points, n_points, k=k, dims=c)
        net.add(f"{tag}.edge", "gather", n_points, n_points, k=k, c_in=c, c_out=2 * c, map_id="edge")
        c = net.mlp(tag, n_points * k, 2 * c, [width])
        net.add(f"{tag}.pool", "pool", n_points * k, n_points, k=k, c_in=c, c_out=c)
        outs.append(c)
    c = net.mlp("conv5", n_points, sum(outs), [1024])
    net.add("global.pool", "pool", n_points, 1, k=n_points, c_in=c, c_out=2 * c, note="max and average")
    _head(net, 2 * c, [512, 256, 40])
    return net.build("dgcnn", n_points, seed, "DGCNN cls (Wang et al. 2019), k=20")


def minkunet(n_points: int = 100_000, seed: int = 0, scene: str = "lidar") -> Workload:
    """A MinkowskiNet-style sparse-conv U-Net (Choy et al. 2019; the torchsparse/SPVNAS `MinkUNet` layout, cr = 1):
    channels [32, 32, 64, 128, 256, 256, 128, 96, 96]; stem of two 3^3 convs; four stages of a 2^3 stride-2 conv and
    two residual blocks (two 3^3 submanifold convs, a 1x1 shortcut when channels change); four up stages of a 2^3
    transposed conv, concat with the skip, two residual blocks; a linear classifier (19 classes outdoor, 13 indoor).

    `scene` "lidar": a `lidar_scan` of n_points voxelized at 5 cm (SemanticKITTI practice); "room": a `room_cloud`
    of n_points voxelized at 5 cm (the defaults give ~80K voxels each). Residual additions and batch norms are not
    charged (our simplification)."""
    from accel_sims.pointacc.mapping import kernel_map, voxelize
    from accel_sims.pointacc.points import lidar_scan, room_cloud

    if scene not in ("lidar", "room"):
        raise AccelSimsError(f"scene must be 'lidar' or 'room', got {scene!r}")
    cloud = lidar_scan(n_points, seed) if scene == "lidar" else room_cloud(n_points, seed)
    coords, _ = voxelize(cloud, 0.05)
    in_ch, classes = (4, 19) if scene == "lidar" else (6, 13)
    net = _Net()
    levels = [coords]
    sub_done: set[int] = set()

    def sub_map(level: int) -> str:
        mid = f"sub{level}"
        if level not in sub_done:
            km = kernel_map(levels[level], None, 3)
            n = levels[level].shape[0]
            net.maps[mid] = _kmap_access(km.pairs, n, n)
            net.add(f"L{level}.kernel_map", "kernel_map", n, n, k=27, pairs=km.total)
            sub_done.add(level)
        return mid

    def conv(name: str, level: int, c_in: int, c_out: int) -> None:
        mid = sub_map(level)
        n = levels[level].shape[0]
        net.add(name, "sparse_conv", n, n, c_in=c_in, c_out=c_out, k=27, pairs=int(net.maps[mid].in_idx.size),
                map_id=mid)  # fmt: skip

    def res(name: str, level: int, c_in: int, c_out: int) -> None:
        conv(f"{name}.conv1", level, c_in, c_out)
        conv(f"{name}.conv2", level, c_out, c_out)
        if c_in != c_out:
            n = levels[level].shape[0]
            net.add(f"{name}.shortcut", "dense", n, n, c_in=c_in, c_out=c_out)

    cs = [32, 32, 64, 128, 256, 256, 128, 96, 96]
    conv("stem.conv1", 0, in_ch, cs[0])
    conv("stem.conv2", 0, cs[0], cs[0])
    skip = [cs[0]]
    c = cs[0]
    for s in range(4):
        fine = levels[s]
        km = kernel_map(fine, None, kernel_size=2, stride=2)
        coarse = km.out_coords // 2  # compact grid of the next level: stride-1 offsets there
        levels.append(coarse)
        net.maps[f"down{s}"] = _kmap_access(km.pairs, fine.shape[0], coarse.shape[0])
        net.add(f"stage{s + 1}.voxel_downsample", "voxel_downsample", fine.shape[0], coarse.shape[0])
        net.add(f"stage{s + 1}.kernel_map", "kernel_map", fine.shape[0], coarse.shape[0], k=8, pairs=km.total)
        net.add(f"stage{s + 1}.down", "sparse_conv", fine.shape[0], coarse.shape[0], c_in=c, c_out=c, k=8,
                pairs=km.total, map_id=f"down{s}")  # fmt: skip
        res(f"stage{s + 1}.block1", s + 1, c, cs[s + 1])
        res(f"stage{s + 1}.block2", s + 1, cs[s + 1], cs[s + 1])
        c = cs[s + 1]
        skip.append(c)
    for u in range(4):
        lv = 3 - u
        mid = f"down{lv}.T"
        net.maps[mid] = net.maps[f"down{lv}"].transposed()
        n_c, n_f = levels[lv + 1].shape[0], levels[lv].shape[0]
        c_up = cs[5 + u]
        net.add(f"up{u + 1}.deconv", "sparse_conv", n_c, n_f, c_in=c, c_out=c_up, k=8,
                pairs=int(net.maps[mid].in_idx.size), map_id=mid)  # fmt: skip
        res(f"up{u + 1}.block1", lv, c_up + skip[lv], c_up)
        res(f"up{u + 1}.block2", lv, c_up, c_up)
        c = c_up
    n0 = levels[0].shape[0]
    net.add("classifier", "dense", n0, n0, c_in=c, c_out=classes)
    name = "minkunet-outdoor" if scene == "lidar" else "minkunet-indoor"
    return net.build(name, n0, seed, f"MinkUNet (torchsparse layout, cr=1) on a synthetic {scene} scene")


def _kmap_access(pairs: tuple[np.ndarray, ...], n_in: int, n_out: int) -> AccessMap:
    sizes = [p.shape[0] for p in pairs]
    both = np.concatenate(pairs, axis=0) if pairs else np.zeros((0, 2), dtype=np.int64)
    offset = np.repeat(np.arange(len(pairs), dtype=np.int64), sizes)
    return AccessMap(in_idx=both[:, 0].copy(), out_idx=both[:, 1].copy(), offset=offset, n_in=n_in, n_out=n_out,
                     kernel_volume=len(pairs))  # fmt: skip


_BUILDERS: dict[str, tuple[Callable[[int, int], Workload], int]] = {
    "pointnet": (pointnet, 1024),
    "pointnet2-cls": (pointnet2_cls, 1024),
    "pointnet2-seg": (pointnet2_seg, 4096),
    "dgcnn": (dgcnn, 1024),
    "minkunet-indoor": (lambda n, s: minkunet(n, s, scene="room"), 400_000),
    "minkunet-outdoor": (lambda n, s: minkunet(n, s, scene="lidar"), 100_000),
}


def workload_names() -> tuple[str, ...]:
    """Names accepted by `make_workload`."""
    return tuple(_BUILDERS)


def make_workload(name: str, n_points: int | None = None, seed: int = 0) -> Workload:
    """A built-in network on a synthetic cloud of `n_points` (default: the size the network is usually run at)."""
    if name not in _BUILDERS:
        raise AccelSimsError(f"unknown workload {name!r}; expected one of {sorted(_BUILDERS)}")
    build, default = _BUILDERS[name]
    n = default if n_points is None else n_points
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise AccelSimsError(f"n_points must be a positive integer, got {n_points!r}")
    wl = build(n, seed)
    out = wl.model_copy(update={"builder": name, "builder_points": n})
    return out.with_maps(wl.maps)


def save_workload(workload: Workload, path: str | Path) -> Path:
    """Write the layer list as JSON (edit it, then `load_workload`); access maps are not stored."""
    p = Path(path)
    p.write_text(workload.model_dump_json(indent=2) + "\n")
    return p


def load_workload(path: str | Path) -> Workload:
    """Read a layer list written by `save_workload` (possibly edited). When it names its `builder`, the access maps
    are rebuilt from the same synthetic cloud (same builder_points and seed); layers whose sizes no longer fit their
    map are reported by the simulator. Without a builder, gathers replay uniform random streams."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError(f"workload file {str(p)!r} does not exist")
    try:
        wl = Workload.model_validate_json(p.read_text())
    except ValueError as e:  # pydantic's ValidationError names the layer index and field
        raise WorkloadError(f"workload file {str(p)!r}: {e}") from e
    if wl.builder is None:
        return wl
    rebuilt = make_workload(wl.builder, wl.builder_points, wl.seed)
    used = {ly.map_id for ly in wl.layers if ly.map_id is not None}
    return wl.with_maps({k: v for k, v in rebuilt.maps.items() if k in used})
