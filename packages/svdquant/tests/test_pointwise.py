"""1x1 convolutions quantized as Linears, and nn.Linear subclasses with their own forward (SVDQuant, Li et al.,
ICLR 2025, Sec. 5.1: SANA's Mix-FFN pointwise convolutions), tested on linear_dit's tiny preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sq_testing import outlier_activations, snr_db, structured_weight
from torch import Tensor, nn

from svdquant.checkpoint import load_quantized, save_quantized
from svdquant.config import SVDQuantConfig
from svdquant.errors import InputError
from svdquant.quantize import quantize_, target_modules
from svdquant.svdq_linear import SVDQLinear
from svdquant.svdq_pointwise import SVDQPointwiseConv, conv_as_linear

FAST = SVDQuantConfig(rank=8, svd="randomized", lowrank_iters=5, num_grids=6, max_calibration_tokens=512)


def _conv(cin: int, cout: int, seed: int, **kw: object) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1, **kw)  # type: ignore[arg-type]
    with torch.no_grad():
        conv.weight.copy_(structured_weight(cout, cin, seed=seed)[:, :, None, None])
    return conv.requires_grad_(False)


def _images(b: int, c: int, h: int, w: int, seed: int) -> Tensor:
    # Outlier channels as in DiT activations, laid out [B, C, H, W].
    return outlier_activations(b * h * w, c, seed=seed).reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()


def test_pointwise_conv_is_the_linear_over_channels() -> None:
    conv = _conv(128, 64, seed=3)
    x = _images(2, 128, 5, 3, seed=4)
    rows = x.movedim(1, -1)
    q = SVDQPointwiseConv.from_conv(conv, rows, FAST, name="pw")
    lin = SVDQLinear.from_linear(conv_as_linear(conv), rows, FAST, name="pw")
    assert type(q) is SVDQPointwiseConv and q.in_features == 128 and q.out_features == 64
    assert list(q.state_dict()) == list(lin.state_dict())  # the engine's tensor names
    for k, v in lin.state_dict().items():
        assert torch.equal(q.state_dict()[k], v), k
    assert torch.equal(q(x), lin(rows).movedim(-1, 1))
    assert torch.equal(q(x[0]), q(x)[0])  # unbatched [C, H, W]
    assert snr_db(conv(x), q(x)) > 15.0
    with pytest.raises(InputError, match=r"expects inputs \[B, 128, H, W\]"):
        q(torch.randn(2, 64, 4, 4))


def test_conv_calibration_and_errors() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(_conv(64, 128, seed=1), nn.GELU(), _conv(128, 64, seed=2)).requires_grad_(False)
    data = _images(6, 64, 6, 6, seed=5)  # one set of outlier channels: calibration and test share it
    calib, x = [data[:2], data[2:4]], data[4:]
    ref = model(x)
    reports = quantize_(model, FAST, calibration=calib)
    assert list(reports) == ["0", "2"] and all(type(model[i]) is SVDQPointwiseConv for i in (0, 2))
    assert all(r.snr_db is not None and r.snr_db > 15.0 for r in reports.values())
    assert snr_db(ref, model(x)) > 15.0

    mixed = nn.ModuleDict(
        {"pw": _conv(64, 64, seed=1), "k3": nn.Conv2d(64, 64, 3, padding=1), "s2": nn.Conv2d(64, 64, 1, stride=2)}
    )
    assert target_modules(mixed, FAST) == ["pw"]  # other convolutions are left alone
    with pytest.raises(InputError, match=r"'k3' is named in the config but cannot be quantized.*kernel_size=\(3, 3\)"):
        target_modules(mixed, FAST.model_copy(update={"overrides": (("k3", {"rank": 4}),)}))
    with pytest.raises(InputError, match=r"'s2'.*stride=\(2, 2\)"):
        target_modules(mixed, FAST.model_copy(update={"overrides": (("s2", {"rank": 4}),)}))
    with pytest.raises(InputError, match=r"layer 'k3'.*kernel_size=\(3, 3\).*only pointwise"):
        SVDQPointwiseConv.from_conv(mixed["k3"], None, FAST, name="k3")


class _Tupled(nn.Linear):
    """A Linear whose forward returns a tuple (as linear_dit's FusedQKV does)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        y = super().forward(x)
        return y, y


def test_linear_subclasses_with_their_own_forward() -> None:
    model = nn.ModuleDict({"plain": nn.Linear(64, 64), "tupled": _Tupled(64, 64)})
    qual = f"{_Tupled.__module__}.{_Tupled.__qualname__}"
    with pytest.raises(InputError, match=rf"module 'tupled' is a {qual}.*allowed_linear_subclasses"):
        quantize_(model, FAST)
    assert type(model["tupled"]) is _Tupled
    skipped = quantize_(
        nn.ModuleDict({"plain": nn.Linear(64, 64), "tupled": _Tupled(64, 64)}),
        FAST.model_copy(update={"skip": ("tupled",)}),
    )
    assert list(skipped) == ["plain"]
    allowed = FAST.model_copy(update={"allowed_linear_subclasses": (qual,)})
    assert list(quantize_(model, allowed)) == ["plain", "tupled"] and type(model["tupled"]) is SVDQLinear
    assert "linear_dit.linear_attention.FusedQKV" in SVDQuantConfig().allowed_linear_subclasses


def _linear_dit() -> nn.Module:
    import linear_dit as ldit  # a sibling package outside svdquant's dependencies: integration tests only

    cfg = ldit.LinearDiTConfig.from_name("tiny")
    torch.manual_seed(0)
    model = ldit.LinearDiT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + 1.0)  # no trivially-identity norm
    return model.requires_grad_(False)


def _ldit_batch(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.rand(2, generator=g) * 1000
    y = torch.randn(2, 5, 24, generator=g)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, 3:] = 0
    return x, t, y, mask


# Mix-FFN's point_conv reads 2.5 x 64 / 2 = 160 channels: not a multiple of INT4's group of 64.
LDIT = FAST.model_copy(update={"overrides": (("*point_conv", {"group_size": 32}),)})


@pytest.mark.integration
def test_linear_dit_tiny_quantizes_attention_and_the_ffn_convolutions(tmp_path: Path) -> None:
    model = _linear_dit()
    calib = [_ldit_batch(s) for s in range(3)]
    x = _ldit_batch(10)
    ref = model(*x)
    with pytest.raises(InputError, match=r"layer 'blocks.0.mlp.point_conv'.*in_features=160 is not a multiple"):
        quantize_(model, FAST, calibration=calib)
    per_block = ("attn.qkv", "attn.proj", "cross_attn.q_linear", "cross_attn.kv_linear", "cross_attn.proj")
    per_block += ("mlp.inverted_conv", "mlp.point_conv")
    expected = ["t_block.1"] + [f"blocks.{i}.{n}" for i in range(2) for n in per_block]
    assert target_modules(model, LDIT) == expected  # embedders and the final layer stay 16-bit
    reports = quantize_(model, LDIT, calibration=calib)
    assert list(reports) == expected
    assert reports["t_block.1"].w4a16 and not reports["blocks.0.attn.qkv"].w4a16
    assert type(model.blocks[0].attn.qkv) is SVDQLinear  # the FusedQKV, returning the [.., 3C] product
    assert type(model.blocks[1].mlp.inverted_conv) is SVDQPointwiseConv
    assert type(model.blocks[1].mlp.depth_conv) is nn.Conv2d
    assert type(model.x_embedder.proj) is nn.Conv2d and type(model.final_layer.linear) is nn.Linear
    # Every block's kv_linear reads the same text states, but layers of different modules are not grouped.
    assert not any(r.shared_with for r in reports.values())
    quality = snr_db(ref, model(*x))
    assert quality > 10.0, quality

    path = save_quantized(model, tmp_path / "ldit.safetensors")
    fresh = load_quantized(_linear_dit(), path)
    assert type(fresh.blocks[0].mlp.point_conv) is SVDQPointwiseConv
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert torch.equal(fresh(*x), model(*x))

    streamed = _linear_dit()
    reports = quantize_(streamed, LDIT.model_copy(update={"calibration_mode": "blocks"}), calibration=calib)
    assert list(reports) == expected
    assert abs(snr_db(ref, streamed(*x)) - quality) < 2.0
