"""The Linear DiT forward: shapes, parity of each part with an explicit reference, masks, video, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from ldit_testing import latent, random_model, text_inputs

from linear_dit import InputError, LinearDiT, LinearDiTConfig
from linear_dit.adaln_single import timestep_embedding
from linear_dit.linear_attention import LinearAttention, relu_linear_attention, relu_linear_attention_reference
from linear_dit.mix_ffn import MixFFN
from linear_dit.positional_embedding import sincos_2d

TINY = ["tiny", "tiny-1.5", "tiny-pe", "tiny-patch2", "tiny-video"]


@pytest.mark.parametrize("name", TINY)
def test_forward_shape_and_backward(name: str) -> None:
    model = random_model(name)
    x = latent(model.config, h=8, w=6)
    y, mask = text_inputs(model.config)
    out = model(x, torch.tensor([3.0, 999.5]), y, mask)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 2),
    n=st.integers(1, 23),
    heads=st.integers(1, 3),
    d=st.sampled_from([1, 4, 8]),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
)
def test_linear_attention_equals_quadratic_form(b: int, n: int, heads: int, d: int, scale: float) -> None:
    g = torch.Generator().manual_seed(n * 31 + d)
    q, k, v = (torch.randn(b, n, heads, d, generator=g) * scale for _ in range(3))
    fast = relu_linear_attention(q, k, v, eps=1e-8)
    ref = relu_linear_attention_reference(q, k, v, eps=1e-8)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-4, atol=1e-5 * scale)


def test_linear_attention_matches_sana_padded_value_form() -> None:
    # The released code pads V with a row of ones and reads the normaliser off the last row.
    torch.manual_seed(0)
    b, n, h, d = 2, 37, 3, 8
    q, k, v = (torch.randn(b, n, h, d) for _ in range(3))
    qt, kt, vt = (t.permute(0, 2, 3, 1) for t in (F.relu(q), F.relu(k), v))  # [B, h, d, N]
    vt = F.pad(vt, (0, 0, 0, 1), value=1.0)
    out = (vt @ kt.transpose(-1, -2)) @ qt  # [B, h, d+1, N]
    out = out[:, :, :-1] / (out[:, :, -1:] + 1e-8)
    torch.testing.assert_close(relu_linear_attention(q, k, v, 1e-8), out.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-6)


def test_linear_attention_zero_keys_give_zero_not_nan() -> None:
    q = torch.randn(1, 5, 2, 4)
    k = -torch.rand(1, 5, 2, 4)  # ReLU(k) = 0: empty normaliser
    out = relu_linear_attention(q, k, torch.randn(1, 5, 2, 4), eps=1e-8)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_linear_attention_accepts_a_plain_linear_qkv(qk_norm: bool) -> None:
    # Quantization libraries replace the FusedQKV with a module returning the [B, N, 3C] product.
    torch.manual_seed(0)
    attn = LinearAttention(64, 32, 1e-8, qk_norm=qk_norm).eval()
    if qk_norm:
        with torch.no_grad():
            for norm in (attn.q_norm, attn.k_norm):
                norm.weight.copy_(torch.rand_like(norm.weight) + 0.5)
    x = torch.randn(2, 10, 64)
    expected = attn(x)
    plain = torch.nn.Linear(64, 192, bias=False)
    with torch.no_grad():
        plain.weight.copy_(attn.qkv.weight)
    attn.qkv = plain  # type: ignore[assignment]
    got = attn(x)
    assert isinstance(plain(x), torch.Tensor)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # The split must follow FusedQKV's row order: q, k, v swapped around gives another output.
    q, k, v = plain.weight.detach().clone().chunk(3, dim=0)
    with torch.no_grad():
        plain.weight.copy_(torch.cat([v, k, q]))
    assert not torch.allclose(attn(x), expected, atol=1e-3)


def test_timestep_embedding_matches_diffusers() -> None:
    from diffusers.models.embeddings import Timesteps

    t = torch.tensor([0.0, 1.5, 250.0, 999.0])
    ref = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)(t)
    torch.testing.assert_close(timestep_embedding(t, 256), ref)


@pytest.mark.parametrize(("h", "w", "base", "interp"), [(4, 4, 4, 1.0), (6, 10, 8, 2.0), (5, 3, 16, 1.0)])
def test_sincos_2d_matches_diffusers(h: int, w: int, base: int, interp: float) -> None:
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    ref = get_2d_sincos_pos_embed(32, (h, w), base_size=base, interpolation_scale=interp, output_type="pt")
    torch.testing.assert_close(sincos_2d(32, h, w, base, interp), ref.float())


def test_mix_ffn_matches_plain_convolutions() -> None:
    torch.manual_seed(0)
    ffn = MixFFN(12, 20)
    x = torch.randn(2, 5 * 7, 12)
    img = x.transpose(1, 2).reshape(2, 12, 5, 7)
    h = ffn.depth_conv(F.silu(ffn.inverted_conv(img)))
    val, gate = h.chunk(2, dim=1)
    ref = ffn.point_conv(val * F.silu(gate)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(ffn(x, (5, 7)), ref, rtol=1e-5, atol=1e-5)


def test_mix_ffn_temporal_conv_is_depthwise_conv_over_frames() -> None:
    torch.manual_seed(0)
    ffn = MixFFN(8, 6, video=True)
    assert ffn.temporal_conv is not None
    with torch.no_grad():
        ffn.temporal_conv.weight.normal_()
        ffn.temporal_conv.bias.normal_()
    t, gh, gw = 4, 3, 5
    x = torch.randn(2, t * gh * gw, 8)
    frames = x.reshape(2 * t, gh, gw, 8).permute(0, 3, 1, 2)
    h = ffn.depth_conv(F.silu(ffn.inverted_conv(frames)))  # [B*T, 2H, gh, gw]
    ch = h.shape[1]
    seq = h.reshape(2, t, ch, gh * gw).permute(0, 3, 2, 1).reshape(-1, ch, t)  # conv1d over frames
    h = (seq + ffn.temporal_conv(seq)).reshape(2, gh * gw, ch, t).permute(0, 3, 2, 1)  # [B, T, 2H, HW]
    val, gate = h.chunk(2, dim=2)
    ref = torch.einsum("btcn,oc->btno", val * F.silu(gate), ffn.point_conv.weight.flatten(1)).reshape(2, -1, 8)
    torch.testing.assert_close(ffn(x, (t, gh, gw)), ref, rtol=1e-5, atol=1e-5)


def test_patch_embed_is_the_strided_conv_and_unpatchify_inverts_layout() -> None:
    model = random_model("tiny-patch2")
    x = latent(model.config, h=8, w=6)
    conv = model.x_embedder.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.x_embedder(x), conv, rtol=1e-5, atol=1e-5)
    # final_layer output laid out as (p, p, c) per token must land on the pixel it came from
    tokens = model.x_embedder(x)
    b, n, _ = tokens.shape
    p, c = 2, model.config.in_channels
    patches = x.reshape(b, c, 4, p, 3, p).permute(0, 2, 4, 3, 5, 1).reshape(b, n, p * p * c)
    torch.testing.assert_close(model._unpatchify(patches, (4, 3), b), x)


def test_masked_text_tokens_have_no_influence_and_full_mask_equals_none() -> None:
    model = random_model("tiny-1.5")
    x = latent(model.config)
    y, mask = text_inputs(model.config)
    out = model(x, 500.0, y, mask)
    y2 = y.clone()
    y2[0, 3:] = 1e3 * torch.randn_like(y2[0, 3:])  # padded positions of sample 0
    torch.testing.assert_close(model(x, 500.0, y2, mask), out)
    torch.testing.assert_close(model(x, 500.0, y, torch.ones_like(mask)), model(x, 500.0, y))
    torch.testing.assert_close(model(x, 500.0, y, mask.bool()), out)


def test_batch_elements_are_independent() -> None:
    model = random_model("tiny-pe")
    x = latent(model.config, batch=3)
    y, mask = text_inputs(model.config, batch=3)
    t = torch.tensor([1.0, 400.0, 1000.0])
    out = model(x, t, y, mask)
    for i in range(3):
        torch.testing.assert_close(model(x[i : i + 1], t[i], y[i : i + 1], mask[i : i + 1]), out[i : i + 1])


def test_scalar_and_vector_timesteps_agree() -> None:
    model = random_model()
    x = latent(model.config)
    y, _ = text_inputs(model.config)
    torch.testing.assert_close(model(x, 250.0, y), model(x, torch.tensor([250.0, 250.0]), y))
    torch.testing.assert_close(model(x, torch.tensor([250]), y), model(x, torch.tensor(250.0), y))


def test_gradient_checkpointing_same_output_and_grads() -> None:
    torch.manual_seed(0)
    model = random_model("tiny-1.5").train()
    x = latent(model.config)
    y, mask = text_inputs(model.config)

    def run(ckpt: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        out = model(x, 300.0, y, mask)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (a, ga), (b, gb) = run(False), run(True)
    torch.testing.assert_close(a, b)
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v)


def test_video_model_on_one_frame_equals_image_model() -> None:
    # Zero-initialised temporal conv and no PE: a one-frame video is the image model's input.
    video = LinearDiT(LinearDiTConfig.from_name("tiny-video").model_copy(update={"use_pe": False})).eval()
    image_cfg = LinearDiTConfig.from_name("tiny").model_copy(update={"hidden_size": 48, "num_cross_attention_heads": 2})
    image = LinearDiT(image_cfg).eval()
    missing, unexpected = image.load_state_dict(video.state_dict(), strict=False)
    assert not missing and all("temporal_conv" in k for k in unexpected)
    x = latent(video.config, frames=1)
    y, mask = text_inputs(video.config)
    torch.testing.assert_close(video(x, 100.0, y, mask)[:, :, 0], image(x[:, :, 0], 100.0, y, mask))


def test_video_frames_interact() -> None:
    model = random_model("tiny-video")
    x = latent(model.config, frames=3)
    y, _ = text_inputs(model.config)
    out = model(x, 600.0, y)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    assert not torch.allclose(model(x2, 600.0, y)[:, :, 2], out[:, :, 2])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_runs_close_to_fp32(dtype: torch.dtype) -> None:
    model = random_model("tiny-1.5")
    x = latent(model.config)
    y, mask = text_inputs(model.config)
    ref = model(x, 700.0, y, mask)
    out = model.to(dtype)(x, 700.0, y, mask)
    assert out.dtype == dtype
    cos = F.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0)
    assert cos > 0.99


def _bad_call(model: LinearDiT, **kw: object) -> None:
    cfg = model.config
    args: dict[str, object] = {"x": latent(cfg), "timestep": 10.0, "y": text_inputs(cfg)[0], "mask": None}
    args.update(kw)
    model(args["x"], args["timestep"], args["y"], args["mask"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"x": torch.randn(2, 3, 8, 6)}, "latent has 3 channels, config 'tiny' expects 4"),
        ({"x": torch.randn(2, 4, 8)}, r"latent must be \[B, C, H, W\]"),
        ({"x": torch.randint(0, 3, (2, 4, 8, 6))}, "floating-point"),
        ({"timestep": 1000.5}, r"timesteps must lie in \[0, 1000\]"),
        ({"timestep": -1.0}, r"timesteps must lie in \[0, 1000\]"),
        ({"timestep": float("nan")}, "timesteps must lie"),
        ({"timestep": torch.tensor([1.0, 2.0, 3.0])}, r"scalar or have shape \[2\]"),
        ({"y": torch.randn(2, 5, 23)}, r"encoder_hidden_states must be \[B=2, L, 24\]"),
        ({"y": torch.randn(1, 5, 24)}, r"encoder_hidden_states must be \[B=2"),
        ({"mask": torch.ones(2, 4)}, r"encoder_attention_mask must be \[B, L\] = \(2, 5\)"),
        ({"mask": torch.full((2, 5), 2)}, "only 0/1"),
        ({"mask": torch.tensor([[0] * 5, [1] * 5])}, "masks every text token"),
    ],
)
def test_bad_inputs(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _bad_call(random_model(), **kw)


def test_bad_patch_multiple() -> None:
    model = random_model("tiny-patch2")
    with pytest.raises(InputError, match="multiples of 2"):
        _bad_call(model, x=torch.randn(2, 4, 7, 6))
