"""Tiled encoding and decoding of images of any size with a DC-AE.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025), Sec. 4 (high-resolution generation decodes 2K-4K latents). The released coders only
take sizes that are multiples of the compression factor ``f`` and their activations grow with the
image, so high-resolution work decodes tiles; diffusers PR #10510 blends 512-px tiles with a 64-px
overlap, and users report seams on flat regions with that little overlap (see the reference notes,
"Tiling"). Here:

- images of any size are padded (reflect, or replicate when too small to reflect) to a multiple
  of ``f`` and cropped back after decoding;
- tiles are laid out on the latent grid, spread evenly so that every overlap is at least the one
  asked for (default: 25% of the tile and at least 2 latent pixels);
- overlapping outputs are cross-faded with linear or raised-cosine ramps centred in the
  overlaps, complementary so that the weights sum to one at every pixel: no seams, and the pixels
  at a tile's own edge, which its zero-padded convolutions get wrong, carry no weight;
- tiles run one at a time into a preallocated fp32 output, so peak memory is the output plus one
  tile's activations, whatever the image size.

Autograd follows the caller: nothing here switches gradients off, so run inference under
``torch.inference_mode()`` (with gradients on, every tile's activations stay alive for backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from numbers import Integral
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from dc_ae.autoencoder import check_tensor
from dc_ae.errors import InputError

if TYPE_CHECKING:
    from dc_ae.autoencoder import DCAE

__all__ = ["Ramp", "blend_weights", "default_overlap", "reconstruct", "tile_spans", "tiled_decode", "tiled_encode"]

Ramp = Literal["linear", "cosine"]


def default_overlap(tile: int) -> int:
    """Default overlap, in latent pixels, of tiles ``tile`` latent pixels wide.

    A quarter of the tile and at least 2 latent pixels (64 px at f32): 512-px tiles with an
    eighth of overlap leave visible seams on flat regions. Capped below the tile.
    """
    return max(0, min(max(2, math.ceil(tile / 4)), tile - 1))


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open spans ``[start, end)`` of tiles of size ``tile`` covering ``[0, length)``.

    Consecutive tiles overlap by at least ``overlap``: the fewest tiles that achieve it are spread
    evenly, so the last tile is not squeezed against the border with a huge overlap. One span
    ``(0, length)`` when the whole length fits in a tile.
    """
    for name, value, low in (("length", length, 1), ("tile", tile, 1), ("overlap", overlap, 0)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if overlap >= tile:
        raise InputError(f"overlap must be smaller than tile ({tile}), got {overlap}")
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    n = -(-(length - tile) // stride) + 1
    # Floor of an even spread: gaps differ by at most one and none exceeds ``stride``.
    return [((length - tile) * i // (n - 1), (length - tile) * i // (n - 1) + tile) for i in range(n)]


def _ramp(u: torch.Tensor, kind: Ramp) -> torch.Tensor:
    if kind == "linear":
        return u
    if kind == "cosine":
        return 0.5 - 0.5 * torch.cos(math.pi * u)
    raise InputError(f"ramp must be 'linear' or 'cosine', got {kind!r}")


def blend_weights(spans: list[tuple[int, int]], ramp: Ramp = "linear") -> list[torch.Tensor]:
    """Per-tile 1-D blending weights (fp32) for ordered ``spans`` that cover ``[0, max end)``.

    Each pair of neighbouring tiles cross-fades over a ramp centred in their overlap, as wide as
    the overlap but never so wide that it reaches the next pair's ramp. Complementary ramps
    (``r(u) + r(1 - u) = 1``) on disjoint intervals make the weights sum to exactly one at every
    position, and the pixels next to a tile's own edge (where zero padding spoils its output) get
    weight zero. 2-D weights are outer products of these, so they sum to one as well.
    """
    if not spans:
        raise InputError("spans must hold at least one (start, end) pair, got none")
    if spans[0][0] != 0 or any(not 0 <= a < b for a, b in spans):
        raise InputError(f"spans must be (start, end) pairs with 0 <= start < end, starting at 0; got {spans}")
    pairs = list(pairwise(spans))
    for (a0, b0), (a1, b1) in pairs:
        if not (a0 < a1 <= b0 and b0 < b1):
            raise InputError(f"spans must be ordered and cover without gaps; got ({a0}, {b0}) then ({a1}, {b1})")
    centres = [(a1 + b0) / 2 for (_, b0), (a1, _) in pairs]  # middle of each overlap
    widths = []
    for i, ((_, b0), (a1, _)) in enumerate(pairs):
        width = float(b0 - a1)
        # A ramp reaches half its width either side of its centre, so capping every width at the
        # gap to each neighbouring centre keeps consecutive ramps disjoint.
        if i > 0:
            width = min(width, centres[i] - centres[i - 1])
        if i < len(pairs) - 1:
            width = min(width, centres[i + 1] - centres[i])
        widths.append(width)

    def rise(p: torch.Tensor, i: int) -> torch.Tensor:
        """Weight of the later tile of pair ``i`` at pixel centres ``p``: 0 before the ramp, 1 after."""
        lo = centres[i] - widths[i] / 2
        if widths[i] == 0:  # abutting tiles: a hard switch at the shared edge
            return (p >= lo).double()
        return _ramp(((p - lo) / widths[i]).clamp(0.0, 1.0), ramp)

    weights = []
    for i, (start, end) in enumerate(spans):
        p = torch.arange(start, end, dtype=torch.float64) + 0.5  # pixel centres
        w = torch.ones_like(p)
        if i > 0:
            w = w * rise(p, i - 1)
        if i < len(spans) - 1:
            w = w * (1.0 - rise(p, i))
        weights.append(w.float())
    return weights


def _check_tile_args(tile_size: int, overlap: int | None, ramp: Ramp = "linear") -> None:
    if ramp not in ("linear", "cosine"):
        raise InputError(f"ramp must be 'linear' or 'cosine', got {ramp!r}")
    if isinstance(tile_size, bool) or not isinstance(tile_size, Integral):
        raise InputError(f"tile_size must be an integer, got {tile_size!r}")
    if tile_size <= 0:
        raise InputError(f"tile_size must be positive, got {tile_size}")
    if overlap is None:
        return
    if isinstance(overlap, bool) or not isinstance(overlap, Integral):
        raise InputError(f"overlap must be an integer or None, got {overlap!r}")
    if overlap < 0:
        raise InputError(f"overlap must be >= 0, got {overlap}")
    if overlap >= tile_size:
        raise InputError(f"overlap must be smaller than tile_size ({tile_size}), got {overlap}")


def _latent_tiling(tile_size: int, overlap: int | None, f: int) -> tuple[int, int]:
    """Pixel tile/overlap -> latent tile/overlap: tile rounded down, overlap up, to multiples of f."""
    _check_tile_args(tile_size, overlap)
    tile = int(tile_size) // f
    if tile < 1:
        raise InputError(f"tile_size must be at least the compression factor {f} pixels, got {tile_size}")
    if overlap is None:
        return tile, default_overlap(tile)
    return tile, min(-(-int(overlap) // f), tile - 1)


def _param_dtype(model: DCAE) -> torch.dtype:
    return next(model.parameters()).dtype


def _pad_to_multiple(x: torch.Tensor, f: int) -> torch.Tensor:
    """Pad [B, C, H, W] at the bottom and right to multiples of f (reflect; replicate if too small)."""
    pad_h, pad_w = -x.shape[-2] % f, -x.shape[-1] % f
    if not pad_h and not pad_w:
        return x
    # Reflection needs the pad to be shorter than the side; a 3-px image at f=32 cannot reflect.
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _blend_tiles(
    src: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    spans: tuple[list[tuple[int, int]], list[tuple[int, int]]],
    in_scale: int,
    out_scale: int,
    out_channels: int,
    out_dtype: torch.dtype,
    ramp: Ramp,
) -> torch.Tensor:
    """Run ``fn`` on each tile of ``src`` and blend the outputs.

    ``spans`` are in grid units (latent pixels); a span covers ``in_scale`` source pixels and
    ``out_scale`` output pixels per unit.
    """
    spans_y, spans_x = spans
    if len(spans_y) == 1 and len(spans_x) == 1:
        return fn(src)  # one tile: nothing to blend, and no second full-size buffer
    scaled_y = [(a * out_scale, b * out_scale) for a, b in spans_y]
    scaled_x = [(a * out_scale, b * out_scale) for a, b in spans_x]
    wys = [w.to(src.device) for w in blend_weights(scaled_y, ramp)]
    wxs = [w.to(src.device) for w in blend_weights(scaled_x, ramp)]
    acc_dtype = torch.promote_types(torch.float32, out_dtype)  # fp32 at least: bf16 sums of ramps drift
    out = torch.zeros(
        src.shape[0], out_channels, scaled_y[-1][1], scaled_x[-1][1], dtype=acc_dtype, device=src.device
    )  # (B, C_out, H_out, W_out)
    for (y0, y1), (oy0, oy1), wy in zip(spans_y, scaled_y, wys, strict=True):
        for (x0, x1), (ox0, ox1), wx in zip(spans_x, scaled_x, wxs, strict=True):
            tile = fn(src[..., y0 * in_scale : y1 * in_scale, x0 * in_scale : x1 * in_scale])
            weight = (wy[:, None] * wx[None, :]).to(acc_dtype)  # (h_tile, w_tile), separable
            out[..., oy0:oy1, ox0:ox1] += tile.to(acc_dtype) * weight
            del tile  # drop this tile's output before the next tile's activations are allocated
    return out.to(out_dtype)


def tiled_encode(
    model: DCAE, x: torch.Tensor, tile_size: int, overlap: int | None = None, ramp: Ramp = "linear"
) -> torch.Tensor:
    """Encode images ``[B, 3, H, W]`` of any size tile by tile -> latents ``[B, c, ceil(H/f), ceil(W/f)]``.

    ``tile_size`` and ``overlap`` are in pixels. The image is padded to a multiple of ``f``;
    tiles are ``tile_size`` rounded down to a multiple of ``f`` (an error below ``f``) and overlap
    by at least ``overlap`` rounded up to a multiple of ``f`` (default: 25% of the tile, at least
    2 latent pixels). Overlapping latents are blended with ``ramp`` weights that sum to one. The
    result is the latent of the padded image, in the model's parameter dtype. Keeps the caller's
    autograd mode; use ``torch.inference_mode()`` for inference.
    """
    _check_tile_args(tile_size, overlap, ramp)
    f = model.spatial_compression
    check_tensor(x, "x", model.config.in_channels)
    tile, lap = _latent_tiling(tile_size, overlap, f)
    dtype = _param_dtype(model)
    xp = _pad_to_multiple(x, f)  # (B, 3, ceil(H/f)*f, ceil(W/f)*f)
    h, w = xp.shape[-2] // f, xp.shape[-1] // f
    spans = (tile_spans(h, tile, lap), tile_spans(w, tile, lap))
    return _blend_tiles(
        xp, lambda t: model.encoder(t.to(dtype)), spans, f, 1, model.config.latent_channels, dtype, ramp
    )  # (B, c, h, w)


def tiled_decode(
    model: DCAE, z: torch.Tensor, tile_size: int, overlap: int | None = None, ramp: Ramp = "linear"
) -> torch.Tensor:
    """Decode latents ``[B, c, h, w]`` tile by tile -> images ``[B, 3, h*f, w*f]``.

    ``tile_size`` and ``overlap`` are in latent pixels (default overlap: 25% of the tile, at least
    2). Overlapping decoded tiles are blended in pixel space with ``ramp`` weights that sum to
    one, in fp32, so peak memory is the output plus one tile's activations. Structured-latent
    (DC-AE 1.5) models accept a channel prefix; the rest are taken as zero.
    """
    _check_tile_args(tile_size, overlap, ramp)
    if isinstance(z, torch.Tensor):
        z = model._pad_channels(z)
    check_tensor(z, "z", model.config.latent_channels)
    lap = default_overlap(int(tile_size)) if overlap is None else int(overlap)
    tile = int(tile_size)
    dtype = _param_dtype(model)
    f = model.spatial_compression
    spans = (tile_spans(z.shape[-2], tile, lap), tile_spans(z.shape[-1], tile, lap))
    return _blend_tiles(
        z, lambda t: model.decoder(t.to(dtype)), spans, 1, f, model.config.in_channels, dtype, ramp
    )  # (B, 3, h*f, w*f)


def reconstruct(
    model: DCAE, x: torch.Tensor, tile_size: int | None = None, overlap: int | None = None, ramp: Ramp = "linear"
) -> torch.Tensor:
    """Encode and decode images ``[B, 3, H, W]`` of any size (``H, W >= 1``) -> ``[B, 3, H, W]``.

    Pads to a multiple of ``f``, codes the image whole (``tile_size=None``) or in tiles of
    ``tile_size`` pixels with ``overlap`` pixels of overlap (both directions use the same tiles,
    in latent units for decoding), and crops back to the input size.
    """
    f = model.spatial_compression
    check_tensor(x, "x", model.config.in_channels)
    height, width = x.shape[-2:]
    if tile_size is None:
        if overlap is not None:
            raise InputError(f"overlap needs tile_size; got overlap={overlap} with tile_size=None")
        y = model.decode(model.encode(_pad_to_multiple(x, f)))
    else:
        tile, lap = _latent_tiling(tile_size, overlap, f)
        z = tiled_encode(model, x, tile * f, lap * f, ramp)
        y = tiled_decode(model, z, tile, lap, ramp)
    return y[..., :height, :width]  # (B, 3, H, W)
