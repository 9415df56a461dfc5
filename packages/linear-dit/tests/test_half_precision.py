"""Half-precision robustness at 4K token counts (16384 latent tokens).

The contract (DESIGN.md, Numerics): bf16 and fp16 -- weights cast with ``.to(dtype)`` or fp32
weights under autocast -- give no NaN or Inf where fp32 gives none, with realistic and with
large-magnitude activations; with realistic activations they also stay close to fp32.

CPU tests use a narrow model (width 64, but the real 32-dim attention heads, the real 32 latent
channels and Gemma-2's 2304-wide text states) so that 16384 tokens run in seconds. The CUDA tests
run real block widths (0.6B: 1152, SANA-1.5 1.6B: 2240) with two blocks.

Every large-magnitude test first checks, in fp32, that the intermediate it targets really leaves
fp16's range (|x| > 65504), so it cannot pass vacuously.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from ldit_testing import random_model

from linear_dit import LinearDiT
from linear_dit.cross_attention import CrossAttention
from linear_dit.linear_attention import LinearAttention, relu_linear_attention
from linear_dit.mix_ffn import MixFFN

FP16_MAX = 65504.0
SIDE = 128  # 4096 px / 32: 16384 tokens
TOKENS = SIDE * SIDE
MODES = ["bf16", "fp16", "bf16-autocast", "fp16-autocast"]
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
NARROW = {
    "hidden_size": 64,
    "attention_head_dim": 32,
    "num_cross_attention_heads": 2,
    "in_channels": 32,
    "caption_channels": 2304,
    "depth": 2,
}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# -- inputs -------------------------------------------------------------------------------------


def gemma_like_text(batch: int, length: int, channels: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-encoder states with the statistics of Gemma-2's last layer: a unit-variance bulk and a
    few "massive activation" channels of a fixed sign and a magnitude of several hundred; the
    first sample is padded after 2/3 of its tokens."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, length, channels, generator=g)
    outliers = torch.tensor([7, 451, 1023, 2000]) % channels
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0])
    y[..., outliers] = signs * (300.0 + 60.0 * torch.randn(batch, length, len(outliers), generator=g))
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, (2 * length) // 3 :] = False
    return y, mask


def latent(batch: int, channels: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, SIDE, SIDE, generator=g)


def nonfinite(x: torch.Tensor) -> int:
    """Number of NaN/Inf entries (asserting on a count keeps failure reports short)."""
    return int((~torch.isfinite(x)).sum())


def fp16_representable(x: torch.Tensor) -> torch.Tensor:
    """Large-magnitude inputs are kept within fp16's range: an input that fp16 cannot hold is
    the caller's overflow, not the model's."""
    return x.clamp(-60000.0, 60000.0)


# -- running a model in a mode ------------------------------------------------------------------


@contextmanager
def no_tf32() -> Iterator[None]:
    """fp32 references on CUDA must be true fp32 (TF32 would make them less exact than bf16)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def run(model: LinearDiT, mode: str, *inputs: torch.Tensor | None) -> torch.Tensor:
    """The model's output (as fp32) in ``mode``: fp32, a half dtype (weights and inputs cast), or
    fp32 weights under autocast to a half dtype."""
    x, t, y, mask = inputs
    assert x is not None and t is not None and y is not None
    with torch.no_grad():
        if mode == "fp32":
            with no_tf32():
                return model(x, t, y, mask).float()
        dtype = HALF[mode.split("-")[0]]
        if mode.endswith("autocast"):
            with torch.autocast(x.device.type, dtype=dtype):
                return model(x, t, y, mask).float()
        half = copy.deepcopy(model).to(dtype)
        return half(x.to(dtype), t, y.to(dtype), mask).float()


def assert_close_in_direction(out: torch.Tensor, ref: torch.Tensor, min_cos: float, max_rel: float) -> None:
    for o, r in zip(out, ref, strict=True):  # per sample: each timestep end on its own
        cos = F.cosine_similarity(o.flatten().double(), r.flatten().double(), dim=0).item()
        rel = ((o.double() - r.double()).norm() / r.double().norm()).item()
        assert cos > min_cos and rel < max_rel, f"cosine {cos:.5f}, relative L2 error {rel:.4f}"


def caption_fc1(model: LinearDiT) -> torch.nn.Module:
    fc1 = model.y_embedder.y_proj.fc1
    assert isinstance(fc1, torch.nn.Linear)
    return fc1


def block_output_max(model: LinearDiT, *inputs: torch.Tensor | None) -> float:
    """Largest |residual stream| after any block in an fp32 forward."""
    peak = [0.0]

    def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        peak[0] = max(peak[0], out.abs().max().item())

    handles = [b.register_forward_hook(hook) for b in model.blocks]
    try:
        run(model, "fp32", *inputs)
    finally:
        for h in handles:
            h.remove()
    return peak[0]


def scale_weights(model: LinearDiT, table: float, matrices: float) -> LinearDiT:
    """Large-magnitude regime: modulation tables times ``table`` (large gates, scales and shifts)
    and every block matrix times ``matrices``, so branches and the residual stream grow large."""
    with torch.no_grad():
        for name, p in model.blocks.named_parameters():
            if name.endswith("scale_shift_table"):
                p.mul_(table)
            elif p.ndim >= 2:
                p.mul_(matrices)
    return model


# -- whole model on the CPU at 16384 tokens -----------------------------------------------------


@pytest.fixture(scope="module")
def realistic() -> tuple[LinearDiT, tuple[torch.Tensor, ...], torch.Tensor]:
    model = random_model("tiny-1.5", 0, **NARROW)
    y, mask = gemma_like_text(2, 40, NARROW["caption_channels"])
    inputs = (latent(2, NARROW["in_channels"]), torch.tensor([0.0, 1000.0]), y, mask)  # both timestep ends
    ref = run(model, "fp32", *inputs)
    assert nonfinite(ref) == 0
    return model, inputs, ref


@pytest.mark.parametrize("mode", MODES)
def test_realistic_activations_match_fp32(
    realistic: tuple[LinearDiT, tuple[torch.Tensor, ...], torch.Tensor], mode: str
) -> None:
    model, inputs, ref = realistic
    out = run(model, mode, *inputs)
    bad = nonfinite(out)
    assert bad == 0, f"{mode} gives NaN/Inf where fp32 is finite"
    assert_close_in_direction(out, ref, min_cos=0.99, max_rel=0.1)


def make_large(case: str, model: LinearDiT, inputs: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor | None, ...]:
    """The two large-magnitude regimes, checked in fp32 to leave fp16's range where intended.

    ``inputs``: huge latents and text states through the model's own weights (the caption MLP
    overflows fp16). ``residual``: realistic inputs, scaled weights (the residual stream and the
    branches overflow fp16)."""
    x, t, y, mask = inputs
    assert x is not None and y is not None
    if case == "inputs":
        x, y = fp16_representable(x * 1e4), fp16_representable(y * 3e4)
    else:
        scale_weights(model, table=300.0, matrices=30.0)
    large = (x, t, y, mask)
    bad = nonfinite(run(model, "fp32", *large))
    assert bad == 0, "premise: fp32 is finite"
    if case == "inputs":
        with torch.no_grad():
            peak = caption_fc1(model)(y).abs().max().item()
        assert peak > FP16_MAX, "premise: the caption MLP leaves fp16's range"
    else:
        peak = block_output_max(model, *large)
        assert peak > FP16_MAX, "premise: the residual stream leaves fp16's range"
    return large


@pytest.fixture(scope="module", params=["inputs", "residual"])
def large(request: pytest.FixtureRequest) -> tuple[LinearDiT, tuple[torch.Tensor | None, ...]]:
    model = random_model("tiny", 1, **NARROW)
    y, mask = gemma_like_text(2, 40, NARROW["caption_channels"])
    inputs = (latent(2, NARROW["in_channels"]), torch.tensor([0.0, 1000.0]), y, mask)  # both timestep ends
    return model, make_large(request.param, model, inputs)


@pytest.mark.parametrize("mode", MODES)
def test_large_activations_stay_finite(large: tuple[LinearDiT, tuple[torch.Tensor | None, ...]], mode: str) -> None:
    model, inputs = large
    bad = nonfinite(run(model, mode, *inputs))
    assert bad == 0, f"{mode} gives NaN/Inf where fp32 is finite"


# -- the pieces ---------------------------------------------------------------------------------


def qkv(n: int, heads: int, scale: float, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(fp16_representable(torch.randn(1, n, heads, 32, generator=g) * scale).to(device) for _ in range(3))


@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_attention_half_inputs_accumulate_in_fp32(scale: float, dtype: torch.dtype) -> None:
    """16384 tokens: the key sum of N non-negative products (~N * d * E[relu]^2 ~ 8e4 already at
    unit scale) overflows fp16; the function must give the fp32 result of the rounded inputs."""
    q, k, v = (t.to(dtype) for t in qkv(TOKENS, 2, scale))
    out = relu_linear_attention(q, k, v, 1e-8)
    ref = relu_linear_attention(q.float(), k.float(), v.float(), 1e-8)
    assert out.dtype == torch.float32
    assert nonfinite(out) == 0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_attention_under_autocast_accumulates_in_fp32(scale: float, dtype: torch.dtype) -> None:
    """Autocast re-casts matmul operands to its half dtype; the fp32 products must survive it."""
    q, k, v = qkv(TOKENS, 2, scale)
    ref = relu_linear_attention(q, k, v, 1e-8)
    k_sum_peak = (F.relu(q) * F.relu(k).sum(1, keepdim=True)).sum(-1).max().item()
    assert k_sum_peak > FP16_MAX, "premise: the normaliser leaves fp16's range"
    with torch.autocast("cpu", dtype=dtype):
        out = relu_linear_attention(q, k, v, 1e-8)
    assert nonfinite(out) == 0
    torch.testing.assert_close(out.float(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def _module_in_mode(module: torch.nn.Module, mode: str, *args: object) -> torch.Tensor:
    with torch.no_grad():
        if mode.endswith("autocast"):
            with torch.autocast("cpu", dtype=HALF[mode.split("-")[0]]):
                return module(*args)
        half = copy.deepcopy(module).to(HALF[mode])
        return half(*(a.to(HALF[mode]) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args))


@pytest.mark.parametrize("mode", ["fp16", "fp16-autocast"])
def test_linear_attention_module_with_overflowing_projections(mode: str) -> None:
    torch.manual_seed(0)
    attn = LinearAttention(64, 32, 1e-8, qk_norm=False)
    x = fp16_representable(torch.randn(1, TOKENS, 64) * 3e4)
    with torch.no_grad():
        peak = max(t.abs().max().item() for t in attn.qkv(x))
        assert peak > FP16_MAX, "premise: qkv leaves fp16's range"
        assert nonfinite(attn(x)) == 0
    bad = nonfinite(_module_in_mode(attn, mode, x))
    assert bad == 0


@pytest.mark.parametrize("mode", ["fp16", "fp16-autocast"])
def test_cross_attention_with_a_large_residual_stream(mode: str) -> None:
    """The cross-attention reads the raw residual stream (no norm before it), so its query
    projection is the first to overflow when the stream is large; an inf query makes the softmax NaN."""
    torch.manual_seed(0)
    cross = CrossAttention(64, 2, qk_norm=False)
    x = fp16_representable(torch.randn(1, TOKENS, 64) * 4e4)
    y, mask = torch.randn(1, 40, 64), torch.ones(1, 40, dtype=torch.bool)
    mask[0, 30:] = False
    with torch.no_grad():
        peak = cross.q_linear(x).abs().max().item()
        assert peak > FP16_MAX, "premise: the query leaves fp16's range"
        assert nonfinite(cross(x, y, mask)) == 0
    bad = nonfinite(_module_in_mode(cross, mode, x, y, mask))
    assert bad == 0


@pytest.mark.parametrize("mode", ["fp16", "fp16-autocast"])
def test_mix_ffn_with_an_overflowing_gate(mode: str) -> None:
    """silu(-inf) and inf - inf are NaN: an fp16 overflow inside the GLU must saturate, not spread."""
    torch.manual_seed(0)
    ffn = MixFFN(64, 160)
    x = torch.randn(1, TOKENS, 64) * 1e3
    with torch.no_grad():
        hidden = F.silu(F.linear(x, ffn.inverted_conv.weight.flatten(1), ffn.inverted_conv.bias))
        val, gate = ffn.depth_conv(hidden.reshape(1, SIDE, SIDE, -1).permute(0, 3, 1, 2)).chunk(2, dim=1)
        peak = (val * F.silu(gate)).abs().max().item()
        assert peak > FP16_MAX, "premise: the GLU product leaves fp16's range"
        assert nonfinite(ffn(x, (SIDE, SIDE))) == 0
    bad = nonfinite(_module_in_mode(ffn, mode, x, (SIDE, SIDE)))
    assert bad == 0


@pytest.mark.parametrize("mode", ["fp16", "fp16-autocast"])
def test_caption_projection_of_large_text_states(mode: str) -> None:
    """Gemma-width (2304) text states of magnitude 1e4 overflow the caption MLP's first layer in
    fp16; GELU(-inf) is NaN and the RMSNorm after it cannot undo a NaN."""
    model = random_model("tiny", 0, **NARROW)
    y, _ = gemma_like_text(1, 40, NARROW["caption_channels"])
    y = fp16_representable(y * 3e4)
    with torch.no_grad():
        peak = caption_fc1(model)(y).abs().max().item()
        assert peak > FP16_MAX, "premise: fc1 leaves fp16's range"
        caption = torch.nn.Sequential(model.y_embedder, model.attention_y_norm)
        assert nonfinite(caption(y)) == 0
    bad = nonfinite(_module_in_mode(caption, mode, y))
    assert bad == 0


# -- CUDA: real widths at 16384 tokens ----------------------------------------------------------


def _cuda_model(name: str) -> LinearDiT:
    return random_model(name, 0, depth=2).cuda()


def _cuda_inputs(model: LinearDiT) -> tuple[torch.Tensor, ...]:
    cfg = model.config
    y, mask = gemma_like_text(2, 300, cfg.caption_channels)
    return tuple(t.cuda() for t in (latent(2, cfg.in_channels), torch.tensor([0.0, 1000.0]), y, mask))


@cuda
@pytest.mark.parametrize("name", ["sana-0.6b-4k", "sana-1.5-1.6b-1024px"])
def test_cuda_realistic_widths_match_fp32(name: str) -> None:
    model = _cuda_model(name)
    inputs = _cuda_inputs(model)
    ref = run(model, "fp32", *inputs)
    assert nonfinite(ref) == 0
    for mode in MODES:
        out = run(model, mode, *inputs)
        bad = nonfinite(out)
        assert bad == 0, f"{name} {mode}: NaN/Inf where fp32 is finite"
        assert_close_in_direction(out, ref, min_cos=0.99, max_rel=0.15)


@cuda
@pytest.mark.parametrize("name", ["sana-0.6b-4k", "sana-1.5-1.6b-1024px"])
@pytest.mark.parametrize("case", ["inputs", "residual"])
def test_cuda_large_activations_stay_finite(name: str, case: str) -> None:
    model = _cuda_model(name)
    inputs = make_large(case, model, _cuda_inputs(model))
    for mode in MODES:
        bad = nonfinite(run(model, mode, *inputs))
        assert bad == 0, f"{name} {case} {mode}: NaN/Inf where fp32 is finite"


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_linear_attention_at_64k_tokens(dtype: torch.dtype) -> None:
    q, k, v = qkv(65536, 36, 1e3, device="cuda")
    with no_tf32():
        ref = relu_linear_attention(q, k, v, 1e-8)
        half = relu_linear_attention(q.to(dtype), k.to(dtype), v.to(dtype), 1e-8)
        with torch.autocast("cuda", dtype=dtype):
            auto = relu_linear_attention(q, k, v, 1e-8)
    for out in (half, auto):
        assert nonfinite(out) == 0
    torch.testing.assert_close(auto.float(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
