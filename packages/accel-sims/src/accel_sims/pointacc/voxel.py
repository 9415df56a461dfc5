"""Voxelization and voxel downsampling (output-coordinate generation) in PointAcc's ranking formulation.

PointAcc (arXiv:2110.07600), Mapping Unit; hw.md Sec. 3.2: output coordinates of a strided sparse
convolution are q = floor(p / s) * s, then sorted and deduplicated: the sorter ranks the packed coordinate keys and
a neighbour compare drops repeats. Semantics follow torchsparse's `spdownsample` (floor division, then unique; every
column is spatial here, so carry a batch index by offsetting each sample's coordinates instead). torchsparse returns
the unique coordinates in hash order; we return them in lexicographic order (column 0 most significant), the order
the sorter produces.
"""

from __future__ import annotations

import numpy as np

from accel_sims.errors import AccelSimsError
from accel_sims.pointacc._checks import as_coords, as_points, positive_float, positive_int
from accel_sims.pointacc.ranking import RankingStats, pack_keys, sort_comparisons

# Voxel indices beyond this magnitude would not survive int64 key packing; a cloud that needs them is mis-scaled.
_MAX_VOXEL_INDEX = 2**40


def unique_rows(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort-and-deduplicate int64 rows: (unique rows in lexicographic order, inverse [N] int64)."""
    (keys,), _ = pack_keys([coords])
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.empty(sorted_keys.shape[0], dtype=bool)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])  # neighbour compare: a new key starts a voxel
    inverse = np.empty(coords.shape[0], dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return coords[order[first]], inverse


def voxel_downsample(coords: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Output coordinates of a stride-`stride` sparse convolution: unique floor(c / stride) * stride rows [M, D]
    (int64, lexicographic order) and inverse [N] int64 with coords_out[inverse[i]] == floor(coords[i] / s) * s."""
    c = as_coords("coords", coords)
    s = positive_int("stride", stride)
    cells, inverse = unique_rows(np.floor_divide(c, s))  # dedup on cell indices: smaller keys than the scaled ones
    return cells * s, inverse


def voxelize(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Quantize float points [N, D] to voxels of edge `voxel_size`: unique integer voxel indices floor(p / size)
    [M, D] (int64, lexicographic order) and inverse [N] int64 (the voxel of each point)."""
    pts = as_points("points", points)
    size = positive_float("voxel_size", voxel_size)
    cells = np.floor(pts / size)
    if np.abs(cells).max() >= _MAX_VOXEL_INDEX:
        raise AccelSimsError(
            f"voxel_size {size} is too small for coordinates up to {np.abs(pts).max():.3g}: voxel indices exceed 2^40"
        )
    return unique_rows(cells.astype(np.int64))


def voxel_downsample_stats(n_points: int, n_out: int = 0, dims: int = 3, op: str = "voxel_downsample") -> RankingStats:
    """Mapping-unit work of sort-and-deduplicate: one sort of N keys and N - 1 neighbour compares; n_out outputs."""
    n = positive_int("n_points", n_points)
    return RankingStats(
        op=op,
        coordinate_dims=positive_int("dims", dims),
        sort_calls=1,
        sorted_elements=n,
        max_sort_length=n,
        sort_comparisons=sort_comparisons(n),
        reduction_elements=n - 1,
        outputs=n_out,
    )


def voxel_downsample_reference(coords: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash-based reference for tests: a dict from the downsampled tuple to its slot, like torchsparse's hash
    table, then the slots renumbered in lexicographic order of the tuples."""
    c = as_coords("coords", coords)
    slot: dict[tuple[int, ...], int] = {}
    first_seen = []
    for row in c.tolist():
        key = tuple((v // stride) * stride for v in row)
        first_seen.append(slot.setdefault(key, len(slot)))
    ranked = sorted(slot)
    rank_of = {key: r for r, key in enumerate(ranked)}
    by_slot = {s: rank_of[key] for key, s in slot.items()}
    out = np.asarray(ranked, dtype=np.int64).reshape(len(ranked), c.shape[1])
    return out, np.asarray([by_slot[s] for s in first_seen], dtype=np.int64)
