"""quantize_ (SVDQuant, Li et al., ICLR 2025, Sec. 4.2 and 5.1): module swap, filters, overrides, atomicity."""

from __future__ import annotations

import math

import pytest
import torch
from sq_testing import outlier_activations, rtn_int4, snr_db, structured_weight
from torch import Tensor, nn

from svdquant.config import SVDQuantConfig
from svdquant.errors import ConfigError, InputError, QuantizationError
from svdquant.quantize import _Capture, quantize_, target_modules
from svdquant.svdq_linear import SVDQLinear

FAST = SVDQuantConfig(rank=16, svd="randomized", lowrank_iters=10, num_grids=8, max_calibration_tokens=512)


def _mlp(d: int = 128, h: int = 256, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
    with torch.no_grad():
        m[0].weight.copy_(structured_weight(h, d, seed=seed + 1))
        m[2].weight.copy_(structured_weight(d, h, seed=seed + 2))
    return m.requires_grad_(False)


class _RTNLinear(nn.Module):
    """Plain W4A4 round-to-nearest INT4 (no smoothing, no branch): the baseline SVDQuant must beat."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.w, self.b = rtn_int4(lin.weight), lin.bias

    def forward(self, x: Tensor) -> Tensor:
        return rtn_int4(x) @ self.w.T + self.b


class Block(nn.Module):
    """A small pre-norm transformer block: adaLN modulation, attention (q/k/v/out) and a GELU MLP."""

    def __init__(self, d: int = 64, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.adaLN_modulation = nn.Linear(d, 4 * d)
        self.norm1, self.norm2 = nn.LayerNorm(d, elementwise_affine=False), nn.LayerNorm(d, elementwise_affine=False)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.proj_out = nn.Linear(d, d)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, shift2, scale2 = self.adaLN_modulation(c).unsqueeze(1).chunk(4, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        b, t, d = h.shape
        q, k, v = (p(h).reshape(b, t, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.out(a)
        h = self.norm2(x) * (1 + scale2) + shift2
        x = x + self.fc2(nn.functional.gelu(self.fc1(h)))
        return self.proj_out(x)


def test_mlp_beats_plain_w4a4_rtn() -> None:
    mlp = _mlp()
    data = outlier_activations(384, 128, seed=10)
    calib, x = [data[:128], (data[128:256],)], data[256:]  # the same outlier channels, unseen tokens
    ref = mlp(x)
    rtn = nn.Sequential(_RTNLinear(mlp[0]), nn.GELU(), _RTNLinear(mlp[2]))(x)
    reports = quantize_(mlp, FAST, calibration=calib)
    assert set(reports) == {"0", "2"} and all(isinstance(mlp[i], SVDQLinear) for i in (0, 2))
    assert reports["2"].act_unsigned is False  # "2" does not match the default post-GELU patterns
    for r in reports.values():
        assert r.snr_db is not None and r.snr_db > 20.0
        assert r.bytes_after < r.bytes_before / 2.5  # fp32 weights -> 4-bit codes, fp32 scales, rank-16 fp32 branch
    svdq, plain = snr_db(ref, mlp(x)), snr_db(ref, rtn)
    assert svdq > plain + 6.0, (svdq, plain)


def test_transformer_block_filters_and_callable_calibration() -> None:
    torch.manual_seed(0)
    block = Block().requires_grad_(False)
    xs = [torch.randn(2, 16, 64) for _ in range(3)]
    for x in xs:
        x[..., :2] *= 30.0  # a few outlier channels
    cs = [torch.randn(2, 64) for _ in range(3)]
    ref = block(xs[0], cs[0])

    def run(model: nn.Module) -> None:
        for x, c in zip(xs, cs, strict=True):
            model(x, c)

    cfg = FAST.model_copy(update={"rank": 8})
    assert target_modules(block, cfg) == ["adaLN_modulation", "q", "k", "v", "out", "fc1", "fc2"]
    reports = quantize_(block, cfg, calibration=run)
    assert isinstance(block.proj_out, nn.Linear) and not isinstance(block.proj_out, SVDQLinear)  # kept in 16 bits
    assert reports["adaLN_modulation"].w4a16 and block.adaLN_modulation.w4a16
    assert reports["fc2"].act_unsigned and block.fc2.act_unsigned and float(block.fc2.act_shift) > 0.1
    assert not reports["fc1"].act_unsigned
    assert snr_db(ref, block(xs[0], cs[0])) > 15.0
    assert block.svdquant_config == cfg


def test_nvfp4_and_overrides() -> None:
    mlp = _mlp()
    cfg = FAST.model_copy(update={"fmt": "nvfp4", "overrides": (("0", {"rank": 4}), ("2", {"skip": True}))})
    cfg = SVDQuantConfig(**cfg.model_dump())  # re-validate
    reports = quantize_(mlp, cfg, calibration=[outlier_activations(128, 128, seed=1)])
    assert list(reports) == ["0"] and mlp[0].rank == 4 and mlp[0].fmt == "nvfp4" and mlp[0].group_size == 16
    assert isinstance(mlp[2], nn.Linear)


def test_without_calibration() -> None:
    mlp = _mlp()
    x = torch.randn(32, 128)
    ref = mlp(x)
    reports = quantize_(mlp, FAST)
    assert all(r.snr_db is None and not r.alpha_beta_searched for r in reports.values())
    assert torch.equal(mlp[0].smooth_factor, torch.ones(128))
    assert snr_db(ref, mlp(x)) > 12.0


class _NaNAfterColumn(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x = x.clone()
        x[..., 0] = math.nan
        return x


def _snapshot(model: nn.Module) -> dict[str, tuple[type, Tensor]]:
    mods = dict(model.named_modules())
    return {k: (type(mods[k.rpartition(".")[0]]), v.clone()) for k, v in model.state_dict().items()}


def test_a_failing_layer_leaves_the_model_unchanged() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64), _NaNAfterColumn(), nn.Linear(64, 64))
    before = _snapshot(model)
    with pytest.raises(InputError, match=r"layer '4'.*calibration inputs must be finite.*left unchanged"):
        quantize_(model, FAST, calibration=[torch.randn(8, 64)])
    after = _snapshot(model)
    assert before.keys() == after.keys()
    for k, (t, v) in before.items():
        assert after[k][0] is t and torch.equal(after[k][1], v), k
    assert not hasattr(model, "svdquant_config")
    # The same holds for a NaN in a weight, found after the earlier layers were built.
    model[3] = nn.Identity()
    model[4].weight.data[0, 0] = math.inf
    with pytest.raises(InputError, match=r"layer '4'.*weight must be finite"):
        quantize_(model, FAST, calibration=[torch.randn(8, 64)])
    assert all(type(m) is not SVDQLinear for m in model.modules())


def test_calibration_errors() -> None:
    with pytest.raises(QuantizationError, match="calibration data through the model failed"):
        quantize_(_mlp(), FAST, calibration=[torch.randn(4, 7)])
    with pytest.raises(InputError, match="tensors or tuples"):
        quantize_(_mlp(), FAST, calibration=["not a tensor"])
    with pytest.raises(InputError, match="no nn.Linear"):
        quantize_(nn.Sequential(nn.GELU()), FAST)
    never = nn.ModuleDict({"used": nn.Linear(64, 64), "unused": nn.Linear(64, 64)})
    with pytest.raises(InputError, match="'unused'.*never called"):
        quantize_(never, FAST, calibration=lambda m: m["used"](torch.randn(4, 64)))


def test_capture_is_a_bounded_uniform_subsample() -> None:
    cap = _Capture(500, torch.Generator().manual_seed(0))
    for b in range(10):
        x = torch.full((1000, 3), float(b))
        x[:, 1] = torch.arange(1000) + 1000 * b  # a unique id per row
        cap.add(x)
    assert cap.rows is not None and cap.rows.shape == (500, 3)
    counts = torch.bincount(cap.rows[:, 0].long(), minlength=10)
    assert int(counts.min()) >= 25 and int(counts.max()) <= 80, counts  # each batch ~50: not first/last-biased
    assert cap.rows[:, 1].unique().numel() == 500  # sampled without replacement
    assert cap.lo is not None and cap.hi is not None
    assert cap.lo.tolist() == [0.0, 0.0, 0.0] and cap.hi.tolist() == [9.0, 9999.0, 9.0]  # exact over all rows


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="rank must be >= 1"):
        SVDQuantConfig(rank=0)
    with pytest.raises(ConfigError, match="group_size must be 16"):
        SVDQuantConfig(fmt="nvfp4", group_size=64)
    with pytest.raises(ConfigError, match="group_size must be a positive"):
        SVDQuantConfig(group_size=0)
    with pytest.raises(ConfigError, match="ranks"):
        SVDQuantConfig(ranks=3)  # a typo is an error naming the field
    with pytest.raises(ConfigError, match=r"override 'fc\*'.*unknown field"):
        SVDQuantConfig(overrides={"fc*": {"alpha": 1}})
    with pytest.raises(ConfigError, match="rank"):
        SVDQuantConfig(overrides={"fc1": {"rank": 0}})
    with pytest.raises(ConfigError, match="act_unsigned exists for INT4 only"):
        SVDQuantConfig(fmt="nvfp4", overrides={"fc2": {"act_unsigned": True}})
    cfg = SVDQuantConfig(overrides={"blocks.*.fc*": {"rank": 8}, "blocks.1.fc2": {"fmt": "nvfp4"}})
    assert cfg.resolved_group_size == 64
    s = cfg.layer("blocks.1.fc2")
    assert (s.rank, s.fmt, s.group_size, s.act_unsigned) == (8, "nvfp4", 16, False)
    assert cfg.layer("blocks.0.fc2").act_unsigned and cfg.layer("x_embedder.proj").skip
    assert cfg.layer("t_block.1").w4a16 and not cfg.layer("blocks.0.attn.q").w4a16
    with pytest.raises(ConfigError):
        SVDQuantConfig(svd="approx")


def test_diffusers_sana_block_at_a_tiny_config() -> None:
    sana = pytest.importorskip("diffusers.models.transformers.sana_transformer")
    torch.manual_seed(0)
    block = sana.SanaTransformerBlock(
        dim=64,
        num_attention_heads=2,
        attention_head_dim=32,
        num_cross_attention_heads=2,
        cross_attention_head_dim=32,
        cross_attention_dim=64,
        mlp_ratio=2.0,
    ).requires_grad_(False)
    batches = [
        (torch.randn(2, 16, 64) * 3, None, torch.randn(2, 8, 64), None, 0.1 * torch.randn(2, 6 * 64), 4, 4)
        for _ in range(2)
    ]
    ref = block(*batches[0])
    reports = quantize_(block, FAST.model_copy(update={"rank": 8}), calibration=batches)
    attn = {f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")}
    assert set(reports) == attn | {"ff.conv_inverted", "ff.conv_point"}  # SANA's 1x1 convs are quantized too
    assert isinstance(block.attn1.to_q, SVDQLinear) and isinstance(block.ff.conv_point, SVDQLinear)
    # self-attention q/k/v read one input; cross-attention k/v read the text states
    assert reports["attn1.to_q"].shared_with == ("attn1.to_q", "attn1.to_k", "attn1.to_v")
    assert reports["attn2.to_k"].shared_with == ("attn2.to_k", "attn2.to_v") and not reports["attn2.to_q"].shared_with
    assert snr_db(ref, block(*batches[0])) > 15.0
