"""Tests of the DC-AE model, block by block, against re-derivations written out here.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025), Sec. 3 (residual autoencoding, Fig. 4) and the EfficientViT blocks it reuses (Cai et
al., ICCV 2023, Sec. 3.1: ReLU linear attention). Facts from /work/shared/reference/dcae.md sec. 1.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from dcae_testing import randomize_norms
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dc_ae import DCAE, DCAEConfig, InputError
from dc_ae import lite_mla as lite_mla_module
from dc_ae.blocks import EfficientViTBlock, GLUMBConv, ResBlock, make_block
from dc_ae.lite_mla import LiteMLA, relu_linear_attention, relu_quadratic_attention
from dc_ae.norms import RMSNorm2d
from dc_ae.residual_autoencoding import (
    Downsample,
    Upsample,
    channel_to_space_duplicate,
    space_to_channel_average,
)

TINY = ["tiny-f4", "tiny-f8", "tiny-f4-resblock", "tiny-f8-in"]
EPS = 1e-15


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(name: str, seed: int = 0) -> DCAE:
    torch.manual_seed(seed)
    return randomize_norms(DCAE(DCAEConfig.from_name(name)), seed).eval()


def image(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=seeded(seed)) * 2 - 1


# --- ReLU linear attention -------------------------------------------------------------------


def reference_relu_attention(qkv: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Quadratic-form ReLU attention normalised per query, float64, heads read per-head interleaved.

    out_i = sum_j (relu(q_i) . relu(k_j)) v_j / (sum_j relu(q_i) . relu(k_j) + eps)
    """
    B, C, H, W = qkv.shape
    heads = C // (3 * head_dim)
    x = qkv.double().reshape(B, heads, 3, head_dim, H * W)  # head h owns channels [3dh, 3d(h+1))
    q, k, v = F.relu(x[:, :, 0]), F.relu(x[:, :, 1]), x[:, :, 2]  # (B, h, d, N)
    scores = torch.einsum("bhdi,bhdj->bhij", q, k)  # (B, h, N_q, N_k)
    out = torch.einsum("bhij,bhdj->bhdi", scores, v) / (scores.sum(-1)[:, :, None, :] + EPS)
    return out.reshape(B, heads * head_dim, H, W)


@pytest.mark.parametrize("fn", [relu_linear_attention, relu_quadratic_attention])
@pytest.mark.parametrize(("heads", "d", "h", "w"), [(3, 8, 5, 7), (1, 4, 1, 1), (2, 16, 3, 2), (4, 8, 9, 9)])
def test_attention_equals_quadratic_form(
    fn: Callable[[torch.Tensor, int], torch.Tensor], heads: int, d: int, h: int, w: int
) -> None:
    qkv = torch.randn(2, 3 * heads * d, h, w, generator=seeded(heads + d + h)) + 0.5
    out = fn(qkv, d)
    assert out.shape == (2, heads * d, h, w) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_relu_attention(qkv, d), rtol=2e-5, atol=1e-6)


def test_attention_is_not_blockwise_q_k_v() -> None:
    # The official layout interleaves per head; reading [all q | all k | all v] gives other numbers.
    heads, d = 3, 4
    qkv = torch.rand(1, 3 * heads * d, 4, 4, generator=seeded(1))
    q, k, v = qkv.chunk(3, dim=1)
    blockwise = torch.cat([t.reshape(1, heads, d, 4, 4) for t in (q, k, v)], dim=2).reshape_as(qkv)
    assert not torch.allclose(relu_linear_attention(blockwise, d), relu_linear_attention(qkv, d), atol=1e-3)


def test_permuting_heads_in_qkv_permutes_outputs() -> None:
    heads, d, C = 4, 8, 32
    mla = LiteMLA(C, d, scales=(), norm="rms2d").eval()
    x = torch.randn(2, C, 6, 5, generator=seeded(2))
    perm = torch.tensor([2, 0, 3, 1])
    permuted = LiteMLA(C, d, scales=(), norm="rms2d").eval()
    with torch.no_grad():
        qkv_w = mla.qkv.weight.reshape(heads, 3 * d, C, 1, 1)
        permuted.qkv.weight.copy_(qkv_w[perm].reshape(3 * heads * d, C, 1, 1))
        # The projection reads head h' = perm^-1(h) where head h used to be.
        proj_w = mla.proj.weight.reshape(C, heads, d, 1, 1)
        permuted.proj.weight.copy_(proj_w[:, perm].reshape(C, heads * d, 1, 1))
        permuted.norm.load_state_dict(mla.norm.state_dict())
        qkv = mla.qkv(x)
        heads_out = relu_linear_attention(qkv, d).reshape(2, heads, d, 6, 5)
        heads_perm = relu_linear_attention(permuted.qkv(x), d).reshape(2, heads, d, 6, 5)
        torch.testing.assert_close(heads_perm, heads_out[:, perm], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(permuted(x), mla(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("h", "w", "quadratic"), [(1, 1, True), (2, 4, True), (3, 3, False), (1, 9, False)])
def test_quadratic_form_on_maps_no_larger_than_head_dim(monkeypatch, h: int, w: int, quadratic: bool) -> None:
    calls: list[str] = []
    linear, quad = relu_linear_attention, relu_quadratic_attention
    monkeypatch.setattr(lite_mla_module, "relu_linear_attention", lambda *a: calls.append("linear") or linear(*a))
    monkeypatch.setattr(lite_mla_module, "relu_quadratic_attention", lambda *a: calls.append("quad") or quad(*a))
    mla = LiteMLA(16, 8, scales=(5,)).eval()
    with torch.no_grad():
        mla(torch.randn(1, 16, h, w))
    assert calls == ["quad" if quadratic else "linear"]


def test_multiscale_branch_shapes_and_forward() -> None:
    C, d = 32, 8
    heads = C // d
    mla = randomize_norms(LiteMLA(C, d, scales=(5,), norm="rms2d")).eval()
    assert mla.qkv.weight.shape == (3 * C, C, 1, 1) and mla.qkv.bias is None
    dw, grouped = mla.aggreg[0]
    assert dw.weight.shape == (3 * C, 1, 5, 5) and dw.bias is None
    assert grouped.weight.shape == (3 * C, d, 1, 1) and grouped.bias is None  # groups = 3 * heads
    assert grouped.groups == 3 * heads
    assert mla.proj.weight.shape == (C, 2 * C, 1, 1) and mla.proj.bias is None
    assert LiteMLA(C, d, scales=()).proj.weight.shape == (C, C, 1, 1)

    x = torch.randn(2, C, 7, 6, generator=seeded(3))
    with torch.no_grad():
        qkv = F.conv2d(x, mla.qkv.weight)
        ms = F.conv2d(F.conv2d(qkv, dw.weight, padding=2, groups=3 * C), grouped.weight, groups=3 * heads)
        att = reference_relu_attention(torch.cat([qkv, ms], 1), d).float()  # 2*heads heads
        y = F.conv2d(att, mla.proj.weight)
        expected = y / torch.sqrt(y.square().mean(1, keepdim=True) + 1e-5) * mla.norm.weight[:, None, None]
        expected = expected + mla.norm.bias[:, None, None]
        torch.testing.assert_close(mla(x), expected, rtol=1e-4, atol=1e-5)


def test_linear_attention_accumulates_in_fp32() -> None:
    # Sums over 64x64 tokens of products of values near 200 overflow fp16 (max 65504) at once.
    d, hw = 8, 64
    qkv = 150 + 50 * torch.rand(1, 3 * 2 * d, hw, hw, generator=seeded(4))
    ref = relu_linear_attention(qkv, d)
    for dtype in (torch.float16, torch.bfloat16):
        low = qkv.to(dtype)
        out = relu_linear_attention(low, d)
        assert out.dtype == dtype
        assert torch.isfinite(out).all(), dtype
        # Same computation from the rounded inputs: only the final cast may differ.
        torch.testing.assert_close(out.float(), relu_linear_attention(low.float(), d), rtol=1e-2, atol=0)
        torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=0)
        quad = relu_quadratic_attention(low[..., :4, :4], d)
        assert torch.isfinite(quad).all()


def test_large_inputs_to_efficientvit_block_in_bf16() -> None:
    torch.manual_seed(5)
    block = EfficientViTBlock(32, 8, (5,), "rms2d", "silu").eval()
    x = 300 * torch.randn(2, 32, 16, 16, generator=seeded(5))
    with torch.no_grad():
        ref = block(x)
        out = block.to(torch.bfloat16)(x.bfloat16())
    assert torch.isfinite(ref).all() and torch.isfinite(out).all()
    assert (out.float() - ref).norm() / ref.norm() < 2e-2


# --- ResBlock, GLUMBConv, norms --------------------------------------------------------------


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.double()
    y = x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)
    return y * weight.double()[:, None, None] + bias.double()[:, None, None]


def test_rms_norm_2d_formula_with_bias() -> None:
    norm = randomize_norms(RMSNorm2d(12))
    assert norm.eps == 1e-5
    x = torch.randn(3, 12, 5, 4, generator=seeded(6)) * 3
    torch.testing.assert_close(norm(x).double(), rms_norm_reference(x, norm.weight, norm.bias), rtol=1e-5, atol=1e-6)
    # Over channels only: scaling one pixel's channel vector does not change the normalised result.
    x2 = x.clone()
    x2[:, :, 0, 0] *= 7
    torch.testing.assert_close(norm(x2)[:, :, 0, 0], norm(x)[:, :, 0, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm(x2)[:, :, 1:], norm(x)[:, :, 1:])


def test_rms_norm_low_precision_large_values() -> None:
    norm = randomize_norms(RMSNorm2d(16))
    x = 8e3 * torch.randn(2, 16, 4, 4, generator=seeded(7))  # finite in fp16, but its squares overflow
    for dtype in (torch.float16, torch.bfloat16):
        out = norm.to(dtype)(x.to(dtype))
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), norm.float()(x.to(dtype).float()), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("norm", "act"), [("rms2d", "silu"), ("bn2d", "relu")])
def test_resblock(norm: str, act: str) -> None:
    block = randomize_norms(ResBlock(8, norm, act)).eval()
    assert block.conv1.bias is not None and block.conv2.bias is None
    x = torch.randn(2, 8, 6, 5, generator=seeded(8))
    with torch.no_grad():
        h = F.conv2d(x, block.conv1.weight, block.conv1.bias, padding=1)
        h = F.silu(h) if act == "silu" else F.relu(h)
        h = F.conv2d(h, block.conv2.weight, padding=1)
        if norm == "rms2d":
            h = rms_norm_reference(h, block.norm.weight, block.norm.bias).float()
        else:
            bn = block.norm
            h = (h - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
            h = h * bn.weight[:, None, None] + bn.bias[:, None, None]
        torch.testing.assert_close(block(x), x + h, rtol=1e-5, atol=1e-5)


def test_batchnorm_stage_uses_running_stats_in_eval_only() -> None:
    block = randomize_norms(ResBlock(8, "bn2d", "relu"))
    x = torch.randn(4, 8, 5, 5, generator=seeded(9))
    block.eval()
    with torch.no_grad():
        one_by_one = torch.cat([block(x[i : i + 1]) for i in range(4)])
        torch.testing.assert_close(block(x), one_by_one)  # no batch statistics in eval
        block.train()
        assert not torch.allclose(block(x), one_by_one, atol=1e-3)


def test_bn_model_is_batch_independent_in_eval() -> None:
    model = tiny_model("tiny-f8-in")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.decoder.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.encoder.modules())
    x = image(3, 16, 16)
    with torch.no_grad():
        z = model.encode(x)
        torch.testing.assert_close(model.decode(z), torch.cat([model.decode(z[i : i + 1]) for i in range(3)]))


def test_glumbconv() -> None:
    C = 8
    block = randomize_norms(GLUMBConv(C, "rms2d", "silu")).eval()
    assert block.inverted_conv.weight.shape == (8 * C, C, 1, 1) and block.inverted_conv.bias is not None
    assert block.depth_conv.weight.shape == (8 * C, 1, 3, 3) and block.depth_conv.bias is not None
    assert block.point_conv.weight.shape == (C, 4 * C, 1, 1) and block.point_conv.bias is None
    x = torch.randn(2, C, 5, 6, generator=seeded(10))
    with torch.no_grad():
        h = F.silu(F.conv2d(x, block.inverted_conv.weight, block.inverted_conv.bias))
        h = F.conv2d(h, block.depth_conv.weight, block.depth_conv.bias, padding=1, groups=8 * C)
        value, gate = h[:, : 4 * C], h[:, 4 * C :]
        h = F.conv2d(value * F.silu(gate), block.point_conv.weight)
        expected = rms_norm_reference(h, block.norm.weight, block.norm.bias).float()
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_efficientvit_block_is_two_residuals() -> None:
    block = randomize_norms(EfficientViTBlock(16, 8, (), "rms2d", "silu")).eval()
    x = torch.randn(1, 16, 4, 4, generator=seeded(11))
    with torch.no_grad():
        mid = x + block.attn(x)
        torch.testing.assert_close(block(x), mid + block.ffn(mid))


@pytest.mark.parametrize(("kind", "scales"), [("ResBlock", None), ("EViT_GLU", ()), ("EViTS5_GLU", (5,))])
def test_make_block(kind: str, scales: tuple[int, ...] | None) -> None:
    block = make_block(kind, 16, "rms2d", "silu", 8)
    if scales is None:
        assert isinstance(block, ResBlock)
    else:
        assert isinstance(block, EfficientViTBlock) and len(block.attn.aggreg) == len(scales)
    with pytest.raises(ValueError, match="unknown block type"):
        make_block("Transformer", 16, "rms2d", "silu", 8)


# --- residual autoencoding shortcuts -----------------------------------------------------------


def test_space_to_channel_average_g4_is_2x2_average_pool() -> None:
    x = torch.randn(2, 6, 8, 10, generator=seeded(12))
    torch.testing.assert_close(space_to_channel_average(x, 6, 2), F.avg_pool2d(x, 2))


def test_space_to_channel_average_g2_is_horizontal_pairs() -> None:
    # g = 2: each output channel averages the two horizontal neighbours of one sub-pixel row,
    # i.e. a 1x2 average pool followed by a 2x1 (rows only) unshuffle (efficientvit#141).
    C = 3
    x = torch.randn(2, C, 6, 8, generator=seeded(13))
    out = space_to_channel_average(x, 2 * C, 2)
    pooled = F.avg_pool2d(x, (1, 2))  # (B, C, H, W/2)
    expected = pooled.reshape(2, C, 3, 2, 4).permute(0, 1, 3, 2, 4).reshape(2, 2 * C, 3, 4)
    torch.testing.assert_close(out, expected)


def test_shortcuts_factor_one_are_channel_means_and_repeats() -> None:
    x = torch.randn(2, 12, 3, 3, generator=seeded(14))
    torch.testing.assert_close(space_to_channel_average(x, 4, 1), x.reshape(2, 4, 3, 3, 3).mean(2))
    torch.testing.assert_close(channel_to_space_duplicate(x, 24, 1), x.repeat_interleave(2, dim=1))
    # r = 1: the duplicating shortcut is a plain pixel shuffle.
    torch.testing.assert_close(channel_to_space_duplicate(x, 3, 2), F.pixel_shuffle(x, 2))


@settings(max_examples=40, deadline=None)
@given(
    channels=st.integers(1, 8),
    repeats=st.integers(1, 4),
    factor=st.sampled_from([1, 2]),
    size=st.integers(1, 4),
)
def test_duplicating_then_averaging_is_identity(channels: int, repeats: int, factor: int, size: int) -> None:
    # channel_to_space_duplicate needs out * f^2 to be a multiple of C: pick out = C * r / f^2 when whole.
    total = channels * repeats
    if total % (factor * factor):
        total *= factor * factor
    out = total // (factor * factor)
    x = torch.randn(2, channels, size, size, generator=seeded(channels * 31 + repeats))
    up = channel_to_space_duplicate(x, out, factor)
    assert up.shape == (2, out, size * factor, size * factor)
    torch.testing.assert_close(space_to_channel_average(up, channels, factor), x)


@pytest.mark.parametrize("kind", ["Conv", "ConvPixelUnshuffle"])
@pytest.mark.parametrize("shortcut", [True, False])
@pytest.mark.parametrize(("cin", "cout"), [(8, 16), (8, 32), (16, 16)])
def test_downsample(kind: str, shortcut: bool, cin: int, cout: int) -> None:
    down = Downsample(cin, cout, kind, shortcut=shortcut)
    x = torch.randn(2, cin, 6, 10, generator=seeded(15))
    with torch.no_grad():
        y = down(x)
        if kind == "Conv":
            assert down.conv.weight.shape == (cout, cin, 3, 3) and down.conv.stride == (2, 2)
            main = F.conv2d(x, down.conv.weight, down.conv.bias, stride=2, padding=1)
        else:
            assert down.conv.weight.shape == (cout // 4, cin, 3, 3)
            main = F.pixel_unshuffle(F.conv2d(x, down.conv.weight, down.conv.bias, padding=1), 2)
        g = 4 * cin // cout
        short = F.pixel_unshuffle(x, 2).reshape(2, cout, g, 3, 5).mean(2)
        assert y.shape == (2, cout, 3, 5)
        torch.testing.assert_close(y, main + short if shortcut else main)


@pytest.mark.parametrize("kind", ["ConvPixelShuffle", "InterpolateConv"])
@pytest.mark.parametrize("shortcut", [True, False])
@pytest.mark.parametrize(("cin", "cout"), [(16, 8), (32, 8), (16, 16)])
def test_upsample(kind: str, shortcut: bool, cin: int, cout: int) -> None:
    up = Upsample(cin, cout, kind, shortcut=shortcut)
    x = torch.randn(2, cin, 3, 5, generator=seeded(16))
    with torch.no_grad():
        y = up(x)
        if kind == "ConvPixelShuffle":
            assert up.conv.weight.shape == (4 * cout, cin, 3, 3)
            main = F.pixel_shuffle(F.conv2d(x, up.conv.weight, up.conv.bias, padding=1), 2)
        else:
            assert up.conv.weight.shape == (cout, cin, 3, 3)
            nearest = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            main = F.conv2d(nearest, up.conv.weight, up.conv.bias, padding=1)
        short = F.pixel_shuffle(x.repeat_interleave(4 * cout // cin, dim=1), 2)
        assert y.shape == (2, cout, 6, 10)
        torch.testing.assert_close(y, main + short if shortcut else main)


def test_unknown_block_kinds_raise() -> None:
    with pytest.raises(ValueError, match="unknown downsample block 'Pool'"):
        Downsample(4, 8, "Pool", shortcut=True)
    with pytest.raises(ValueError, match="unknown upsample block 'Bilinear'"):
        Upsample(8, 4, "Bilinear", shortcut=True)


def _shortcut_config(enc: bool, dec: bool) -> DCAEConfig:
    return DCAEConfig.model_validate(
        {**DCAEConfig.from_name("tiny-f8").model_dump(), "encoder_out_shortcut": enc, "decoder_in_shortcut": dec}
    )


@pytest.mark.parametrize("on", [True, False])
def test_encoder_out_and_decoder_in_shortcuts(on: bool) -> None:
    cfg = _shortcut_config(on, on)
    torch.manual_seed(17)
    model = DCAE(cfg).eval()
    c, last = cfg.latent_channels, cfg.width_list[-1]
    with torch.no_grad():
        for conv in (model.encoder.conv_out, model.decoder.conv_in):
            conv.weight.zero_()
            conv.bias.zero_()
    seen: dict[str, torch.Tensor] = {}
    model.encoder.stages[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("enc", o))
    model.decoder.stages[-1].register_forward_pre_hook(lambda m, i: seen.__setitem__("dec", i[0]))
    with torch.no_grad():
        z = model.encode(image(2, 16, 24))
        feats = seen["enc"]  # (B, last, h, w)
        expected_z = feats.reshape(2, c, last // c, 2, 3).mean(2) if on else torch.zeros_like(z)
        torch.testing.assert_close(z, expected_z)
        latent = torch.randn(2, c, 2, 3, generator=seeded(18))
        model.decode(latent)
        expected_in = latent.repeat_interleave(last // c, dim=1) if on else torch.zeros(2, last, 2, 3)
        torch.testing.assert_close(seen["dec"], expected_in)


def test_empty_first_stage_folds_sampling_into_conv_in_and_out() -> None:
    model = tiny_model("tiny-f8-in")
    cfg = model.config
    assert cfg.encoder_depth_list[0] == 0 and cfg.decoder_depth_list[0] == 0
    assert isinstance(model.encoder.conv_in, Downsample) and not model.encoder.conv_in.shortcut
    assert model.encoder.conv_in.kind == "ConvPixelUnshuffle"
    assert isinstance(model.decoder.conv_out, Upsample) and not model.decoder.conv_out.shortcut
    assert model.decoder.conv_out.kind == "ConvPixelShuffle"
    assert len(model.encoder.stages[0].blocks) == 0 and model.encoder.stages[0].down is None
    assert model.decoder.norm_out.weight.shape == (cfg.width_list[1],)
    x = image(1, 16, 16)
    with torch.no_grad():
        assert model.encoder.conv_in(x).shape == (1, cfg.width_list[1], 8, 8)


def test_sampling_block_types_follow_config() -> None:
    sana_like = tiny_model("tiny-f8")
    for stage in sana_like.encoder.stages[:-1]:
        assert stage.down.kind == "Conv" and stage.down.shortcut
    for stage in sana_like.decoder.stages[:-1]:
        assert stage.up.kind == "InterpolateConv" and stage.up.shortcut
    assert sana_like.encoder.stages[-1].down is None and sana_like.decoder.stages[-1].up is None
    in_like = tiny_model("tiny-f8-in")
    for stage in in_like.encoder.stages[1:-1]:
        assert stage.down.kind == "ConvPixelUnshuffle"
    for stage in in_like.decoder.stages[1:-1]:
        assert stage.up.kind == "ConvPixelShuffle"


# --- the whole model ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("batch", [1, 3])
def test_encode_decode_shapes(name: str, batch: int) -> None:
    model = tiny_model(name)
    f, c = model.spatial_compression, model.latent_channels
    assert f == model.config.spatial_compression and c == model.config.latent_channels
    h, w = 2 * f, 3 * f
    with torch.no_grad():
        z = model.encode(image(batch, h, w))
        assert z.shape == (batch, c, 2, 3) and z.dtype == torch.float32
        y = model.decode(z)
        assert y.shape == (batch, 3, h, w)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(model(image(batch, h, w)), y)


@pytest.mark.parametrize("name", TINY)
def test_batch_elements_are_independent(name: str) -> None:
    model = tiny_model(name)
    x = image(3, 16, 16, seed=1)
    with torch.no_grad():
        z = model.encode(x)
        torch.testing.assert_close(z[1:2], model.encode(x[1:2]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-f8", "tiny-f8-in"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_runs_finite(name: str, dtype: torch.dtype) -> None:
    model = tiny_model(name)
    x = image(2, 32, 24, seed=2)
    with torch.no_grad():
        z32 = model.encode(x)
        y32 = model.decode(z32)
        low = tiny_model(name).to(dtype)
        z = low.encode(x.to(dtype))
        y = low.decode(z)
    assert torch.isfinite(z32).all() and torch.isfinite(y32).all()
    assert z.dtype == dtype and y.dtype == dtype
    assert torch.isfinite(z).all() and torch.isfinite(y).all()
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    assert (z.float() - z32).norm() / z32.norm() < tol
    assert (y.float() - y32).norm() / y32.norm() < tol


def test_outputs_are_contiguous_whatever_the_input_layout() -> None:
    # EfficientViT blocks switch to channels-last internally; callers get plain contiguous tensors.
    model = tiny_model("tiny-f8")
    x = image(2, 16, 24)
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
        assert z.is_contiguous() and y.is_contiguous()
        z_cl = model.encode(x.contiguous(memory_format=torch.channels_last))
        y_cl = model.decode(z.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(z_cl, z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)


def test_encode_casts_input_to_the_model_dtype() -> None:
    model = tiny_model("tiny-f4").to(torch.bfloat16)
    with torch.no_grad():
        assert model.encode(image(1, 8, 8)).dtype == torch.bfloat16
        assert model.decode(torch.zeros(1, 4, 2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-in-1.0", "tiny-f4"])
def test_scaling_factor_property(name: str) -> None:
    cfg = DCAEConfig.from_name(name)
    with torch.device("meta"):
        model = DCAE(cfg)
    assert model.scaling_factor == cfg.scaling_factor
    assert model.latent_channels == cfg.latent_channels
    assert model.spatial_compression == cfg.spatial_compression == 2 ** (len(cfg.width_list) - 1)
    with pytest.raises(AttributeError):
        model.scaling_factor = 2.0  # type: ignore[misc]


def test_scaling_is_multiplicative_convention() -> None:
    # DC-AE convention: z_diffusion = z * sf; decode(z_diffusion / sf) is decode(z).
    model = tiny_model("tiny-f4")
    x = image(1, 16, 16)
    with torch.no_grad():
        z = model.encode(x)
        z_dm = z * model.scaling_factor
        torch.testing.assert_close(model.decode(z_dm / model.scaling_factor), model.decode(z))
    assert DCAEConfig.from_name("dc-ae-f32c32-sana-1.0").scaling_factor == 0.41407


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.rand(1, 4, 16, 16), "must have 3 channels, got 4"),
        (torch.rand(1, 1, 16, 16), "must have 3 channels, got 1"),
        (torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8), "floating-point tensor, got dtype torch.uint8"),
        (torch.randint(0, 255, (1, 3, 16, 16)), "floating-point tensor, got dtype torch.int64"),
        (torch.rand(3, 16, 16), r"must be 4-D \[B, C, H, W\], got shape \(3, 16, 16\)"),
        (torch.rand(1, 1, 3, 16, 16), "must be 4-D"),
        (torch.rand(1, 3, 4, 16), r"smaller than one latent pixel \(8x8\)"),
        (torch.rand(1, 3, 4, 4), "smaller than one latent pixel"),
        (torch.rand(1, 3, 12, 16), r"size \(12, 16\) is not a multiple of 8; pass tile_size"),
        (torch.rand(1, 3, 16, 20), "not a multiple of 8"),
        (torch.zeros(1, 3, 16, 16).index_fill_(2, torch.tensor([3]), float("nan")), "NaN"),
        (torch.full((1, 3, 16, 16), float("inf")), "NaN or Inf"),
        ([[0.0]], "must be a torch.Tensor, got list"),
    ],
)
def test_bad_images_to_encode(bad: object, match: str) -> None:
    model = tiny_model("tiny-f8")
    with pytest.raises(InputError, match=match) as info:
        model.encode(bad)  # type: ignore[arg-type]
    assert "image" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.rand(1, 4, 2, 2), "must have 8 channels, got 4"),
        (torch.rand(1, 9, 2, 2), "must have 8 channels, got 9"),
        (torch.ones(1, 8, 2, 2, dtype=torch.int32), "floating-point tensor, got dtype torch.int32"),
        (torch.rand(8, 2, 2), "must be 4-D"),
        (torch.full((1, 8, 2, 2), float("nan")), "NaN"),
    ],
)
def test_bad_latents_to_decode(bad: torch.Tensor, match: str) -> None:
    model = tiny_model("tiny-f8")
    with pytest.raises(InputError, match=match) as info:
        model.decode(bad)
    assert "latent" in str(info.value)


def test_inputs_are_not_modified() -> None:
    model = tiny_model("tiny-f4")
    x = image(1, 8, 8)
    before = x.clone()
    with torch.no_grad():
        z = model.encode(x)
        z_before = z.clone()
        model.decode(z)
    assert torch.equal(x, before) and torch.equal(z, z_before)


# --- structured latent (DC-AE 1.5 behaviour) ---------------------------------------------------


def _structured() -> DCAE:
    cfg = DCAEConfig.model_validate(
        {
            **DCAEConfig.from_name("tiny-f4-resblock").model_dump(),
            "name": "tiny-structured",
            "latent_channels": 8,
            "encoder_out_shortcut": False,
            "decoder_in_shortcut": False,
            "structured_latent": True,
        }
    )
    torch.manual_seed(19)
    return randomize_norms(DCAE(cfg)).eval()


def test_structured_latent_prefix() -> None:
    model = _structured()
    x = image(2, 8, 12)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, 8, 2, 3)
        for k in (1, 4, 8):
            zk = model.encode(x, latent_channels=k)
            assert zk.shape == (2, k, 2, 3)
            torch.testing.assert_close(zk, z[:, :k])
            # Missing back channels decode as zeros.
            padded = torch.cat([zk, torch.zeros(2, 8 - k, 2, 3)], dim=1)
            torch.testing.assert_close(model.decode(zk), model.decode(padded))
        assert not torch.allclose(model.decode(z[:, :4]), model.decode(z), atol=1e-4)


@pytest.mark.parametrize("k", [0, 9, -1])
def test_structured_latent_prefix_out_of_range(k: int) -> None:
    with pytest.raises(InputError, match=r"latent_channels must be in \[1, 8\]"):
        _structured().encode(image(1, 8, 8), latent_channels=k)


def test_prefix_needs_structured_model() -> None:
    model = tiny_model("tiny-f4")
    with pytest.raises(InputError, match="structured-latent"):
        model.encode(image(1, 8, 8), latent_channels=2)
    with pytest.raises(InputError, match="must have 4 channels, got 2"):
        model.decode(torch.zeros(1, 2, 2, 2))
