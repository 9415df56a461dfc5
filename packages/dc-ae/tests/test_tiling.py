"""Tests of tiled encoding/decoding (dc_ae.tiling): exactness, seams, any size, errors, weights, memory."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dc_ae import DCAE, DCAEConfig, InputError, reconstruct, tiled_decode, tiled_encode
from dc_ae.tiling import blend_weights, default_overlap, tile_spans

SRC = Path(__file__).resolve().parents[1] / "src"


def make_model(name: str, seed: int = 0) -> DCAE:
    torch.manual_seed(seed)
    return DCAE(DCAEConfig.from_name(name)).eval()


def smooth_image(height: int, width: int) -> torch.Tensor:
    """A low-frequency image: slow sinusoids and a gradient, nothing that changes at tile borders."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    channels = [torch.sin(2 * math.pi * (0.7 * xx + 0.3 * yy)), 2 * xx - 1, torch.cos(2 * math.pi * 0.8 * yy)]
    return 0.8 * torch.stack(channels)[None]  # (1, 3, H, W)


def seam_ratio(diff: torch.Tensor, borders_y: list[int], borders_x: list[int]) -> float:
    """Largest mean jump of ``diff`` across a tile border over the median jump elsewhere.

    A border at ``b`` is the step between pixel rows (columns) ``b - 1`` and ``b``. A seam shows
    as a border whose jump stands out from the smooth variation of the tiling error.
    """
    ratios = []
    for dim, borders in ((-2, borders_y), (-1, borders_x)):
        jumps = diff.diff(dim=dim).abs()
        jumps = jumps.mean(dim=(0, 1, 3) if dim == -2 else (0, 1, 2))  # per step between rows/columns
        at_border = [b - 1 for b in borders if 0 < b < diff.shape[dim]]
        if not at_border:
            continue
        elsewhere = [i for i in range(jumps.numel()) if i not in at_border]
        ratios.append(float(jumps[at_border].max() / jumps[elsewhere].median()))
    return max(ratios)


def tile_borders(length: int, tile: int, overlap: int, scale: int) -> list[int]:
    """Every tile edge inside the image, in output pixels."""
    edges = set()
    for start, end in tile_spans(length, tile, overlap):
        edges.update({start * scale, end * scale})
    return sorted(e for e in edges if 0 < e < length * scale)


# --- (1) a tile that covers the whole image is the untiled path -------------------------------------------


@pytest.mark.parametrize("name", ["tiny-f4", "tiny-f8-in"])
def test_whole_image_tile_equals_untiled(name: str) -> None:
    model = make_model(name)
    f = model.spatial_compression
    x = torch.rand(2, 3, 8 * f, 6 * f) * 2 - 1
    with torch.inference_mode():
        z = model.encode(x)
        y = model.decode(z)
        for tile in (8 * f, 8 * f + f - 1, 64 * f):  # exact, rounded down to a multiple of f, larger
            torch.testing.assert_close(model.encode(x, tile_size=tile), z, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.decode(z, tile_size=8), y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tiled_decode(model, z, 100), y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reconstruct(model, x, tile_size=8 * f), reconstruct(model, x), atol=1e-5, rtol=1e-5)


def test_blend_is_exact_for_a_pointwise_coder() -> None:
    """With a coder that has no spatial context, many overlapping tiles must reproduce the whole result.

    This checks tile placement and that the blend weights sum to one, separately from the
    receptive-field error of real models.
    """
    model = make_model("tiny-f4")
    f, c = model.spatial_compression, model.latent_channels
    torch.manual_seed(1)
    model.encoder = nn.Conv2d(3, c, kernel_size=f, stride=f)  # each latent sees exactly its own f x f patch
    model.decoder = nn.Sequential(nn.Conv2d(c, 3 * f * f, 1), nn.PixelShuffle(f))
    x = torch.randn(2, 3, 23 * f, 17 * f)
    with torch.inference_mode():
        z = model.encoder(x)
        y = model.decoder(z)
        for ramp in ("linear", "cosine"):
            for tile, lap in ((5, 2), (7, 0), (6, 5), (4, None)):
                torch.testing.assert_close(tiled_decode(model, z, tile, lap, ramp), y, atol=1e-5, rtol=1e-5)
                pix_lap = None if lap is None else lap * f
                torch.testing.assert_close(tiled_encode(model, x, tile * f, pix_lap, ramp), z, atol=1e-5, rtol=1e-5)


# --- (2) no seams -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "max_error"),
    [
        # Random-weight linear attention gives every tile its own global context, so tiles cannot
        # match the whole decode; they still must not show seams.
        ("tiny-f4", 0.6),
        # ResBlocks only: a finite receptive field that the overlap mostly covers.
        ("tiny-f4-resblock", 0.05),
    ],
)
def test_tiled_decode_has_no_seams_and_naive_tiling_does(name: str, max_error: float) -> None:
    model = make_model(name)
    f = model.spatial_compression
    x = smooth_image(128, 128)
    tile = 16  # latent pixels: 64 px tiles, default overlap 4
    with torch.inference_mode():
        z = model.encode(x)
        whole = model.decode(z)
        blended = tiled_decode(model, z, tile)
        naive = tiled_decode(model, z, tile, overlap=0)  # abutting tiles, no blending
        cosine = tiled_decode(model, z, tile, ramp="cosine")
    lap = default_overlap(tile)
    assert lap == 4
    h, w = z.shape[-2:]
    naive_ratio = seam_ratio(naive - whole, tile_borders(h, tile, 0, f), tile_borders(w, tile, 0, f))
    blended_borders = (tile_borders(h, tile, lap, f), tile_borders(w, tile, lap, f))
    blended_ratio = seam_ratio(blended - whole, *blended_borders)
    cosine_ratio = seam_ratio(cosine - whole, *blended_borders)
    assert naive_ratio > 6.0, f"the seam detector must flag naive tiling (ratio {naive_ratio:.2f})"
    assert blended_ratio < 3.0, f"blended tiles show a seam (ratio {blended_ratio:.2f})"
    assert cosine_ratio < 3.0, f"cosine-blended tiles show a seam (ratio {cosine_ratio:.2f})"
    # The overlap gives each border pixel context from both sides: the error drops, and stays bounded.
    err_blended, err_naive = (blended - whole).abs().mean(), (naive - whole).abs().mean()
    assert err_blended < err_naive
    assert err_blended < max_error * whole.std()


def test_tiled_reconstruct_has_no_seams_and_naive_tiling_does() -> None:
    """The same through encoder and decoder: latent seams from encoding would show up here too."""
    model = make_model("tiny-f4")
    f = model.spatial_compression
    x = smooth_image(128, 128)
    tile = 64  # pixels: 16 latent pixels, overlap 4
    with torch.inference_mode():
        whole = reconstruct(model, x)
        blended = reconstruct(model, x, tile_size=tile)
        naive = reconstruct(model, x, tile_size=tile, overlap=0)
    lt, lap = tile // f, default_overlap(tile // f)
    n = 128 // f
    naive_ratio = seam_ratio(naive - whole, tile_borders(n, lt, 0, f), tile_borders(n, lt, 0, f))
    blended_ratio = seam_ratio(blended - whole, tile_borders(n, lt, lap, f), tile_borders(n, lt, lap, f))
    assert naive_ratio > 5.0, f"the seam detector must flag naive tiling (ratio {naive_ratio:.2f})"
    assert blended_ratio < 3.0, f"blended tiles show a seam (ratio {blended_ratio:.2f})"
    assert (blended - whole).abs().mean() < (naive - whole).abs().mean()


# --- (3) any size, (4) smaller than one latent pixel ----------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-f4", "tiny-f8-in"])
@pytest.mark.parametrize("size", [(37, 53), (8, 61), (1, 9)])
def test_any_size_round_trips_to_the_same_shape(name: str, size: tuple[int, int]) -> None:
    model = make_model(name)
    f = model.spatial_compression
    x = smooth_image(*size).repeat(2, 1, 1, 1)
    with torch.inference_mode():
        z = tiled_encode(model, x, tile_size=4 * f)
        assert z.shape == (2, model.latent_channels, -(-size[0] // f), -(-size[1] // f))
        assert tiled_decode(model, z, tile_size=3).shape == (2, 3, z.shape[-2] * f, z.shape[-1] * f)
        for tile_size in (None, 2 * f, 3 * f + 1):
            y = reconstruct(model, x, tile_size=tile_size)
            assert y.shape == x.shape
            assert torch.isfinite(y).all()
        with pytest.raises(InputError, match="not a multiple|smaller than one latent pixel"):
            model.encode(x)  # the untiled path keeps its contract; only tiling pads


def test_tile_size_is_rounded_down_to_a_multiple_of_f() -> None:
    model = make_model("tiny-f4")
    x = smooth_image(40, 44)
    with torch.inference_mode():
        torch.testing.assert_close(tiled_encode(model, x, 19, 4), tiled_encode(model, x, 16, 4))
        torch.testing.assert_close(tiled_encode(model, x, 16, 1), tiled_encode(model, x, 16, 4))  # overlap rounds up
        torch.testing.assert_close(reconstruct(model, x, 19), reconstruct(model, x, 16))


@pytest.mark.parametrize("size", [(3, 2), (1, 1), (5, 3)])
def test_image_smaller_than_f(size: tuple[int, int]) -> None:
    model = make_model("tiny-f8")
    x = torch.rand(1, 3, *size) * 2 - 1
    with torch.inference_mode():
        for tile_size in (None, 8, 64):
            y = reconstruct(model, x, tile_size=tile_size)
            assert y.shape == x.shape and torch.isfinite(y).all()
        assert model.encode(x, tile_size=8).shape == (1, model.latent_channels, 1, 1)
        with pytest.raises(InputError):
            model.encode(x)


def test_constant_image_pads_without_edge_artifacts() -> None:
    """Reflect/replicate padding of a flat image is flat, so the padded tiles see no fake edge."""
    model = make_model("tiny-f4")
    x = torch.full((1, 3, 10, 7), 0.3)
    with torch.inference_mode():
        z = tiled_encode(model, x, tile_size=16)  # one tile over the padded 12 x 8 image
        ref = model.encode(torch.full((1, 3, 12, 8), 0.3))
    torch.testing.assert_close(z, ref, atol=1e-5, rtol=1e-5)


# --- (5) argument errors ------------------------------------------------------------------------------------


def test_bad_arguments_raise_input_error_naming_the_argument() -> None:
    model = make_model("tiny-f4")
    x = torch.rand(1, 3, 16, 16)
    z = torch.rand(1, model.latent_channels, 4, 4)
    cases = [
        (lambda: tiled_encode(model, x, 0), "tile_size"),
        (lambda: tiled_encode(model, x, -4), "tile_size"),
        (lambda: tiled_encode(model, x, 3), "tile_size"),  # below f = 4
        (lambda: tiled_encode(model, x, 8.0), "tile_size"),
        (lambda: tiled_encode(model, x, 8, 8), "overlap"),
        (lambda: tiled_encode(model, x, 8, -1), "overlap"),
        (lambda: tiled_encode(model, x[0], 8), "x"),
        (lambda: tiled_encode(model, x[:, :2], 8), "x"),
        (lambda: tiled_encode(model, (x * 255).to(torch.uint8), 8), "x"),
        (lambda: tiled_decode(model, z, 0), "tile_size"),
        (lambda: tiled_decode(model, z, 4, 4), "overlap"),
        (lambda: tiled_decode(model, z, 4, 9), "overlap"),
        (lambda: tiled_decode(model, z, True), "tile_size"),
        (lambda: tiled_decode(model, z[0], 4), "z"),
        (lambda: tiled_decode(model, torch.rand(1, 3, 4, 4), 4), "z"),
        (lambda: reconstruct(model, x[None], 8), "x"),
        (lambda: reconstruct(model, x, 8, 8), "overlap"),
        (lambda: reconstruct(model, x, None, 4), "overlap"),
        (lambda: tiled_decode(model, z, 4, ramp="gaussian"), "ramp"),
        (lambda: model.decode(z, tile_size=-2), "tile_size"),
    ]
    for i, (call, name) in enumerate(cases):
        with pytest.raises(InputError, match=name):
            call()
            pytest.fail(f"case {i} did not raise")


# --- (6) blending weights -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 300),
    tile=st.integers(1, 64),
    frac=st.floats(0, 0.99),
    ramp=st.sampled_from(["linear", "cosine"]),
)
def test_tiles_cover_and_weights_sum_to_one(length: int, tile: int, frac: float, ramp: str) -> None:
    overlap = min(int(frac * tile), tile - 1)
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (s0, e0), (s1, e1) in zip(spans, spans[1:], strict=False):
        assert e0 - s0 == tile and e1 - s1 == tile  # several tiles are all full size
        assert s0 < s1 and e0 - s1 >= overlap  # ordered, and at least the overlap asked for
    weights = blend_weights(spans, ramp)
    total = torch.zeros(length, dtype=torch.float64)
    for (start, end), w in zip(spans, weights, strict=True):
        assert w.shape == (end - start,) and w.dtype == torch.float32
        assert (w >= 0).all() and (w <= 1 + 1e-6).all()
        total[start:end] += w.double()
    torch.testing.assert_close(total, torch.ones(length, dtype=torch.float64), atol=1e-6, rtol=0)
    # Outside the overlaps the one tile there has weight 1.
    counts = torch.zeros(length, dtype=torch.int64)
    for start, end in spans:
        counts[start:end] += 1
    for (start, end), w in zip(spans, weights, strict=True):
        torch.testing.assert_close(w[counts[start:end] == 1], torch.ones(int((counts[start:end] == 1).sum())))
    # No jumps: ramps are at least min(overlap, smallest stride) wide, so a weight moves by at most
    # the ramp's steepest slope over that width between neighbours, and is near zero at a tile's edge.
    if len(spans) > 1 and overlap > 0:
        width = min(overlap, *(s1 - s0 for (s0, _), (s1, _) in zip(spans, spans[1:], strict=False)))
        step = (math.pi / 2 if ramp == "cosine" else 1.0) / width + 1e-6
        for i, w in enumerate(weights):
            assert (w.diff().abs() <= step).all()
            if i > 0:
                assert w[0] <= step / 2
            if i < len(spans) - 1:
                assert w[-1] <= step / 2


@pytest.mark.parametrize(
    "spans", [[], [(1, 4)], [(0, 4), (5, 9)], [(0, 4), (2, 3)], [(0, 4), (0, 6)], [(0, 3), (3, 2)]]
)
def test_blend_weights_reject_bad_spans(spans: list[tuple[int, int]]) -> None:
    with pytest.raises(InputError, match="spans"):
        blend_weights(spans)


def test_weights_are_one_outside_overlaps_and_linear_inside() -> None:
    spans = tile_spans(40, 16, 4)
    assert spans == [(0, 16), (12, 28), (24, 40)]
    w0, w1, _ = blend_weights(spans)
    torch.testing.assert_close(w0[:12], torch.ones(12))
    torch.testing.assert_close(w1[:4], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    torch.testing.assert_close(w1[4:12], torch.ones(8))


def test_default_overlap_is_a_quarter_and_at_least_two() -> None:
    assert [default_overlap(t) for t in (1, 2, 3, 4, 8, 9, 16, 32)] == [0, 1, 2, 2, 2, 3, 4, 8]


# --- dtype and autograd follow the caller ------------------------------------------------------------------------


def test_autograd_and_dtype_follow_the_model() -> None:
    model = make_model("tiny-f4")
    z = torch.randn(1, model.latent_channels, 10, 10, requires_grad=True)
    y = tiled_decode(model, z, 4)
    assert y.requires_grad
    y.square().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    model = model.to(torch.bfloat16)
    with torch.inference_mode():
        y = tiled_decode(model, z.detach(), 4)
        x = tiled_encode(model, torch.rand(1, 3, 20, 20), 8)
    assert y.dtype == torch.bfloat16 and x.dtype == torch.bfloat16
    assert torch.isfinite(y.float()).all() and torch.isfinite(x.float()).all()


# --- (7) peak memory is set by the tile, not the image ----------------------------------------------------------

_PEAK_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from dc_ae import DCAE, DCAEConfig
    size, tile = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    model = DCAE(DCAEConfig.from_name("tiny-f8")).eval()
    f = model.spatial_compression
    z = torch.randn(1, model.latent_channels, size // f, size // f)
    try:  # Linux >= 4.0: reset the peak so that it covers the decode only
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    with torch.inference_mode():
        y = model.decode(z, tile_size=tile or None)
    assert y.shape[-1] == size
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (a large pytest process).
    print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")))
    """
)


def peak_rss_kib(size: int, tile: int) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(size), str(tile)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc/self/status, which only Linux has")
def test_peak_memory_is_set_by_the_tile_not_the_image() -> None:
    small, large = peak_rss_kib(256, 16), peak_rss_kib(1024, 16)  # 128-px tiles; 16x the pixels
    untiled = peak_rss_kib(1024, 0)
    assert large / small < 1.5, f"tiled 1024 px peaks at {large / small:.2f}x the 256-px decode"
    # The same measurement catches a decoder whose memory grows with the image.
    assert untiled / small > 1.5, f"untiled 1024 px only {untiled / small:.2f}x: the measurement cannot tell"
