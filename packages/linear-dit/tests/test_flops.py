"""Tests of linear_dit.flops: counted = analytic, scaling with tokens, and the SANA reference figures."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from linear_dit import InputError, LinearDiT, LinearDiTConfig
from linear_dit.flops import FLOP_KEYS, _flop_counter, analytic_flops, count_flops, latent_size

PARTS = FLOP_KEYS[:9]  # the disjoint parts; "linear" and "total" are sums of them


def cfg(name: str, **overrides: object) -> LinearDiTConfig:
    base = LinearDiTConfig.from_name(name)
    return LinearDiTConfig.model_validate({**base.model_dump(), **overrides}) if overrides else base


@pytest.mark.parametrize(
    ("name", "h", "w", "frames"),
    [("tiny", 8, 6, None), ("tiny-1.5", 5, 7, None), ("tiny-pe", 3, 9, None), ("tiny-patch2", 6, 10, None)]
    + [("tiny-video", 4, 6, 3)],
)
def test_counted_equals_analytic_on_test_presets(name: str, h: int, w: int, frames: int | None) -> None:
    c = cfg(name)
    counted = count_flops(c, h, w, text_tokens=7, frames=frames, batch=2)
    assert counted == analytic_flops(c, h, w, text_tokens=7, frames=frames, batch=2)
    # The counter saw every operator: nothing unattributed, every part of this model non-zero.
    assert counted["other"] == 0
    for key in PARTS:
        if key != "other" and (key != "mix_ffn_temporal" or c.video):
            assert counted[key] > 0, key
    assert counted["total"] == sum(counted[k] for k in PARTS)
    assert counted["linear"] == sum(
        counted[k]
        for k in ("embedders", "self_attention_projections", "cross_attention_projections", "mix_ffn_pointwise")
    )


@settings(max_examples=12, deadline=None)
@given(
    head_dim=st.sampled_from([4, 8, 16]),
    heads=st.integers(1, 3),
    cross_heads=st.sampled_from([1, 2, 4]),
    mlp_ratio=st.sampled_from([1.0, 2.5, 3.3]),
    patch=st.sampled_from([1, 2]),
    video=st.booleans(),
    depth=st.integers(1, 2),
    hp=st.integers(1, 4),
    wp=st.integers(1, 4),
    frames=st.integers(1, 3),
    batch=st.integers(1, 2),
    text=st.integers(1, 9),
    in_ch=st.integers(1, 5),
    out_ch=st.sampled_from([None, 3]),
)
def test_counted_equals_analytic_property(
    head_dim: int,
    heads: int,
    cross_heads: int,
    mlp_ratio: float,
    patch: int,
    video: bool,
    depth: int,
    hp: int,
    wp: int,
    frames: int,
    batch: int,
    text: int,
    in_ch: int,
    out_ch: int | None,
) -> None:
    # A one-token latent lets einsum lower a size-1 contraction to an elementwise product, which
    # no FLOP counter sees; real latents have many tokens.
    assume(hp * wp * (frames if video else 1) > 1)
    width = 4 * head_dim * heads  # divisible by every cross_heads choice
    c = LinearDiTConfig(
        hidden_size=width,
        depth=depth,
        attention_head_dim=head_dim,
        num_cross_attention_heads=cross_heads,
        caption_channels=6,
        in_channels=in_ch,
        out_channels=out_ch,
        mlp_ratio=mlp_ratio,
        patch_size=patch,
        sample_size=4 * patch,
        video=video,
    )
    f = frames if video else None
    assert count_flops(c, hp * patch, wp * patch, text, f, batch) == analytic_flops(
        c, hp * patch, wp * patch, text, f, batch
    )


def test_cpu_sdpa_kernel_is_counted() -> None:
    """FlopCounterMode alone misses SDPA's fused CPU kernel; our counter must not."""
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    counter = _flop_counter()
    with counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 2 * (2 * 2 * 3 * 10 * 7 * 8)  # QK^T and AV, 2 FLOPs per MAC


def test_attention_parts_scale_linearly_with_tokens() -> None:
    c = LinearDiTConfig.from_name("sana-0.6b-1024px")
    f16, f32, f64 = (count_flops(c, s, s) for s in (16, 32, 64))
    for key in ("linear_attention", "cross_attention", "self_attention_projections", "mix_ffn_pointwise"):
        assert f32[key] == 4 * f16[key] and f64[key] == 4 * f32[key], key
    # With L text tokens fixed, the whole step is affine in N: a constant (text side, timestep)
    # plus a per-token cost, with no N^2 term.
    assert f64["total"] - f32["total"] == 4 * (f32["total"] - f16["total"])
    # Linear attention stays a sub-percent share at every resolution (no N^2 term).
    for f in (f16, f32, f64):
        assert f["linear_attention"] / f["total"] < 0.01


def test_cross_attention_scales_with_text_tokens() -> None:
    c = cfg("tiny")
    a, b = count_flops(c, 8, 8, text_tokens=10), count_flops(c, 8, 8, text_tokens=30)
    assert b["cross_attention"] == 3 * a["cross_attention"]
    assert b["linear_attention"] == a["linear_attention"]


def test_sana_0_6b_at_1024px_is_plausible() -> None:
    """About 2 FLOPs per parameter per image token: the text-side layers (caption MLP, cross k/v)
    see 300 tokens instead of 1024, so the step is a little under 2 * params * N."""
    c = LinearDiTConfig.from_name("sana-0.6b-1024px")
    f = count_flops(c, latent_size(1024), latent_size(1024))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        params = LinearDiT(c).num_parameters()
    assert 0.55e9 < params < 0.65e9
    assert 1.0e12 < f["total"] < 1.25e12
    assert 0.85 < f["total"] / (2 * params * 1024) < 1.0
    # The linear layers are almost everything at 1K (SANA's Sec. 2.2 argument).
    assert f["linear"] / f["total"] > 0.95


def test_sana_1_6b_block_matches_reference_arithmetic() -> None:
    """The reference notes' per-block arithmetic for the 1.6B model (width 2240, 32-dim heads):
    at N=1024, linear layers about 80 GMAC (the notes round up: the exact figure is 13.5 C^2 N plus
    2 C^2 L = 72 GMAC), linear attention about 0.15 GMAC, quadratic attention would be 2 N^2 C =
    4.7 GMAC (about 6% of the linear layers); at N=16384 quadratic attention (1.2 TMAC) would be
    on a par with the linear layers."""
    c = LinearDiTConfig.from_name("sana-1.6b-1024px")
    per_block_mac = {}
    for side in (32, 128):
        f = count_flops(c, side, side)
        blocks_linear = f["self_attention_projections"] + f["cross_attention_projections"] + f["mix_ffn_pointwise"]
        per_block_mac[side] = (blocks_linear / c.depth / 2, f["linear_attention"] / c.depth / 2)
    n, width = 1024, c.hidden_size
    linear_1k, linattn_1k = per_block_mac[32]
    assert linear_1k == 13.5 * width**2 * n + 2 * width**2 * 300
    assert abs(linear_1k / 80e9 - 1) < 0.15
    assert abs(linattn_1k / 0.15e9 - 1) < 0.03
    quadratic_1k = 2 * n**2 * width
    assert abs(quadratic_1k / 4.7e9 - 1) < 0.01
    assert 0.04 < quadratic_1k / linear_1k < 0.08
    linear_4k, linattn_4k = per_block_mac[128]
    quadratic_4k = 2 * 16384**2 * width
    assert abs(quadratic_4k / 1.2e12 - 1) < 0.03
    assert 0.8 < quadratic_4k / linear_4k < 1.3
    assert linattn_4k == 16 * linattn_1k  # linear in N, where softmax attention would grow 256x


def test_4_8b_config_costs_three_1_6b_block_stacks() -> None:
    """SANA-1.5 4.8B is the 1.6B block stacked 60 deep instead of 20 (its RMSNorms are not counted)."""
    big = count_flops(LinearDiTConfig.from_name("sana-1.5-4.8b-1024px"), 32, 32)
    small = count_flops(LinearDiTConfig.from_name("sana-1.6b-1024px"), 32, 32)
    assert big["embedders"] == small["embedders"]
    assert big["total"] - big["embedders"] == 3 * (small["total"] - small["embedders"])


def test_model_instance_and_batch() -> None:
    c = cfg("tiny")
    model = LinearDiT(c)
    assert count_flops(model, 8, 8) == count_flops(c, 8, 8)
    one, three = count_flops(c, 8, 8, batch=1), count_flops(c, 8, 8, batch=3)
    assert all(three[k] == 3 * one[k] for k in FLOP_KEYS)


def test_latent_size() -> None:
    assert latent_size(1024) == 32
    assert latent_size(4096) == 128
    assert latent_size(512, spatial_compression=8) == 64
    for bad in (1000, 0, -32):
        with pytest.raises(InputError, match="multiple of"):
            latent_size(bad)
    with pytest.raises(InputError, match="spatial_compression"):
        latent_size(1024, 0)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("tiny-video", {}, "video config"),
        ("tiny", {"frames": 2}, "image config"),
        ("tiny-patch2", {"height": 5}, "multiples of patch size 2"),
        ("tiny", {"height": 0}, "positive multiples"),
        ("tiny", {"text_tokens": 0}, "text_tokens"),
        ("tiny", {"batch": 0}, "batch"),
    ],
)
def test_bad_arguments(name: str, kwargs: dict[str, int], match: str) -> None:
    args: dict[str, int] = {"height": 8, "width": 8, **kwargs}
    for fn in (count_flops, analytic_flops):
        with pytest.raises(InputError, match=match):
            fn(cfg(name), **args)


def test_rejects_non_config() -> None:
    with pytest.raises(InputError, match="LinearDiTConfig"):
        count_flops("tiny", 8, 8)  # type: ignore[arg-type]
