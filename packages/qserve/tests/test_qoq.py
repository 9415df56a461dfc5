"""QoQ transforms and quantize_ (QServe Sec. 4): each transform keeps the float function; QoQ beats RTN."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from qs_testing import tiny_model

from qserve.config import LlamaConfig
from qserve.errors import ConfigError, InputError, QuantizationError
from qserve.model import LlamaForCausalLM
from qserve.qoq import QoQConfig, calibration_windows, quantize_
from qserve.quant.formats import dequantize_weight, quantize_w4_channel, quantize_w4_g128
from qserve.quant.gptq import gptq_w4
from qserve.quant.kv import KVQuantizer
from qserve.quant.reorder import reorder_down, reorder_index
from qserve.quant.rotation import hadamard, rotate_model, rotation_matrix
from qserve.quant.smooth import attention_lambda, smooth_attention, smooth_down
from qserve.quant.w4a8_linear import W4A8Linear, W8A8Linear

VOCAB = 97


def tiny(tied: bool = False, bias: bool = False, seed: int = 0) -> LlamaForCausalLM:
    m = tiny_model(VOCAB, seed, tie_word_embeddings=tied, attention_bias=bias)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 2.0)
            elif "bias" in name:
                p.normal_(0, 0.1)
            elif p.dim() == 2:
                p.normal_(0, 0.08)
    return m.eval()


@torch.no_grad()
def inject_outliers(m: LlamaForCausalLM) -> None:
    """Function-preserving rescalings that create the outliers QoQ targets (as in real LLMs): residual channels
    with large norm gains, key channels 8x larger (queries 8x smaller), down_proj input channels 16x larger."""
    g = torch.Generator().manual_seed(1)
    for layer in m.model.layers:
        layer.input_layernorm.weight[torch.randperm(128, generator=g)[:4]] *= 30
        layer.post_attention_layernorm.weight[torch.randperm(128, generator=g)[:4]] *= 30
        attn, mlp = layer.self_attn, layer.mlp
        for h in range(attn.num_kv_heads):
            j = h * 32 + int(torch.randint(0, 16, (1,), generator=g))
            for c in (j, j + 16):  # a RoPE pair
                attn.k_proj.weight[c] *= 20
                for q_head in (2 * h, 2 * h + 1):
                    attn.q_proj.weight[q_head * 32 + c - h * 32] /= 20
        idx = torch.randperm(256, generator=g)[:6]
        mlp.up_proj.weight[idx] *= 50
        mlp.down_proj.weight[:, idx] /= 50


def nll(m: LlamaForCausalLM, ids: torch.Tensor) -> float:
    with torch.no_grad():
        logits = m(ids[:, :-1])
    return float(F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)))


def ids(n: int = 8, t: int = 32, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def assert_same_function(a: LlamaForCausalLM, b: LlamaForCausalLM) -> None:
    x = ids(2, 16, 7)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert float((ya - yb).abs().max()) < 1e-4 * max(1.0, float(ya.abs().max()))


def test_hadamard() -> None:
    h = hadamard(64)
    torch.testing.assert_close(h @ h.t(), torch.eye(64, dtype=torch.float64))
    assert float(h.abs().min()) == float(h.abs().max()) == 1 / 8
    with pytest.raises(ConfigError, match="power-of-two"):
        hadamard(96)


@pytest.mark.parametrize("tied,bias", [(False, False), (True, True)])
def test_rotation_preserves_function(tied: bool, bias: bool) -> None:
    m = tiny(tied, bias)
    r = copy.deepcopy(m)
    rotate_model(r)
    norms = [r.model.norm] + [la.input_layernorm for la in r.model.layers]
    assert not r.embeddings_tied and all(bool((n.weight == 1).all()) for n in norms)
    assert not torch.allclose(r.model.embed_tokens.weight, m.model.embed_tokens.weight)
    assert_same_function(m, r)


def test_rotation_of_other_sizes_is_random_orthogonal() -> None:
    m = tiny_model(VOCAB, hidden_size=96, intermediate_size=160, num_hidden_layers=1)  # head_dim 24
    r = copy.deepcopy(m)
    rotate_model(r, seed=3)
    assert_same_function(m, r)
    q = rotation_matrix(96, 3)
    torch.testing.assert_close(q @ q.t(), torch.eye(96, dtype=torch.float64))
    assert torch.equal(rotation_matrix(64), hadamard(64))


def test_reorder_and_smoothing_preserve_function() -> None:
    m = tiny(bias=True)
    t = copy.deepcopy(m)
    mlp = t.model.layers[0].mlp
    perm = reorder_index(torch.rand(256))
    reorder_down(mlp, perm)
    assert not torch.equal(mlp.down_proj.weight, m.model.layers[0].mlp.down_proj.weight)
    key_absmax = torch.rand(2, 32) * 5 + 0.1
    lam = smooth_attention(t.model.layers[1].self_attn, key_absmax, 0.5)
    assert torch.equal(lam[:, :16], lam[:, 16:])  # RoPE pairs share lambda
    assert float(lam[0, 0]) == pytest.approx(float(torch.maximum(key_absmax[0, 0], key_absmax[0, 16]) ** 0.5))
    x = torch.randn(64, 256) * torch.linspace(0.1, 20, 256)
    alpha, s = smooth_down(t.model.layers[1].mlp, x, (0.3, 0.5), lambda w: w.round())
    assert alpha in (0.3, 0.5) and not torch.allclose(s, torch.ones(256))
    assert_same_function(m, t)
    with pytest.raises(InputError, match="permutation"):
        reorder_down(mlp, torch.zeros(256, dtype=torch.long))


def test_attention_lambda_gqa() -> None:
    m = tiny()
    attn = m.model.layers[0].self_attn
    q0, k0 = attn.q_proj.weight.clone(), attn.k_proj.weight.clone()
    key_absmax = torch.ones(2, 32)
    key_absmax[1] = 4.0
    smooth_attention(attn, key_absmax, 1.0)
    # kv head 1 (rows 32..63 of k) divided by 4; its query heads 2 and 3 (rows 64..127 of q) multiplied by 4
    torch.testing.assert_close(attn.k_proj.weight[32:], k0[32:] / 4)
    torch.testing.assert_close(attn.q_proj.weight[64:], q0[64:] * 4)
    torch.testing.assert_close(attn.q_proj.weight[:64], q0[:64])
    assert attention_lambda(torch.zeros(1, 4)).min() > 0


def test_quantize_swaps_modules_and_sets_kv() -> None:
    m = tiny()
    report = quantize_(m, QoQConfig(), ids())
    assert report.linears == 14 and report.mean_clip_ratio is not None and 0.8 <= report.mean_clip_ratio <= 1
    assert isinstance(m.kv_quant, KVQuantizer) and m.kv_quant.bits == 4
    layer = m.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, W4A8Linear) and layer.self_attn.q_proj.group == 128
    assert type(m.lm_head) is torch.nn.Linear
    assert m.quantization_config == QoQConfig()
    m8 = tiny()
    quantize_(m8, QoQConfig.preset("w8a8"))
    assert isinstance(m8.model.layers[1].mlp.down_proj, W8A8Linear) and m8.kv_quant is None
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_(m8, QoQConfig.preset("w8a8"))


def test_qoq_beats_rtn_on_outlier_model() -> None:
    """On a random model with injected (function-preserving) outliers, QoQ's log-perplexity increase over float
    is less than half of round-to-nearest's (the issue's goal); W8A8 stays closer to float than RTN W4A8KV4.

    The increase is measured in expectation over text drawn from the float model itself: the mean
    KL(p_float || p_quant) of the next-token distributions, which is what the NLL increase converges to.
    """
    base = tiny()
    inject_outliers(base)
    calib, data = ids(16, 32, 11), ids(8, 32, 12)
    with torch.no_grad():
        logp = F.log_softmax(base(data), -1)
    inc = {}
    for name in ("qoq", "rtn-w4a8kv4", "w8a8"):
        m = copy.deepcopy(base)
        quantize_(m, QoQConfig.preset(name), calib)
        with torch.no_grad():
            logq = F.log_softmax(m(data), -1)
        inc[name] = float((logp.exp() * (logp - logq)).sum(-1).mean())
    assert inc["rtn-w4a8kv4"] > 1e-3, inc
    assert inc["qoq"] < 0.5 * inc["rtn-w4a8kv4"], inc
    assert inc["w8a8"] < inc["rtn-w4a8kv4"], inc


def test_auto_rotation_keeps_the_copy_with_the_lower_calibration_loss() -> None:
    calib = ids(8, 32, 3)
    reports = {}
    for rotate in ("auto", True, False):
        m = tiny()
        reports[rotate] = quantize_(m, QoQConfig(rotate=rotate), calib)
    auto = reports["auto"]
    assert auto.calibration_loss_rotated is not None and auto.calibration_loss_plain is not None
    assert auto.rotated == (auto.calibration_loss_rotated < auto.calibration_loss_plain)
    assert reports[True].rotated and not reports[False].rotated
    assert reports[True].calibration_loss_rotated is None  # only "auto" scores both
    # The loss "auto" recorded for its pick is that copy's own loss: the same model as a fixed choice gives.
    m_auto, m_fixed = tiny(), tiny()
    quantize_(m_auto, QoQConfig(rotate="auto"), calib)
    quantize_(m_fixed, QoQConfig(rotate=auto.rotated), calib)
    with torch.no_grad():
        assert torch.equal(m_auto(calib[:2]), m_fixed(calib[:2]))


def test_errors_leave_model_unchanged() -> None:
    m = tiny()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    bad = ids().float()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        quantize_(m, QoQConfig(), bad)
    with pytest.raises(InputError, match="needs calibration"):
        quantize_(m, QoQConfig())
    with pytest.raises(InputError, match=r"\[0, 97\)"):
        quantize_(m, QoQConfig(), ids() + 200)
    with pytest.raises(ConfigError, match="unknown QoQ preset"):
        QoQConfig.preset("w2a2")
    with pytest.raises(Exception, match="frozen"):
        QoQConfig().rotate = False  # type: ignore[misc]

    def failing() -> torch.Tensor:
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        quantize_(m, QoQConfig(), failing)
    assert m.kv_quant is None and all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        m.model.layers[0].mlp.up_proj.weight[0, 0] = float("inf")
    with pytest.raises(InputError, match="up_proj"):
        quantize_(m, QoQConfig(), ids())
    assert isinstance(m.model.layers[0].mlp.up_proj, torch.nn.Linear)


def test_calibration_windows() -> None:
    stream = torch.arange(100)
    w = calibration_windows(stream, 4, 10, seed=1)
    assert w.shape == (4, 10) and bool((w[:, 1:] - w[:, :-1] == 1).all())
    with pytest.raises(InputError, match="at least 10"):
        calibration_windows(torch.arange(5), 1, 10)


@pytest.mark.parametrize("group", [128, -1])
def test_gptq_lowers_output_error(group: int) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 256, generator=g)
    x = torch.randn(512, 256, generator=g) @ (torch.randn(256, 256, generator=g) * 0.1 + torch.eye(256))
    rtn = quantize_w4_g128(w) if group > 0 else quantize_w4_channel(w)
    q = gptq_w4(w, x, group)
    assert type(q) is type(rtn)

    def err(weight: object) -> float:
        return float((x @ (w - dequantize_weight(weight)).t()).square().sum())  # type: ignore[arg-type]

    assert err(q) < 0.7 * err(rtn)
    if group > 0:
        q8 = q.int8_weight()  # type: ignore[union-attr]
        assert q8.dtype == torch.int8 and torch.equal(q.s1_scales, rtn.s1_scales)


def test_quantize_refuses_bad_sizes() -> None:
    cfg = LlamaConfig.from_name("tiny")  # hidden 64: no 128-groups
    m = LlamaForCausalLM(cfg)
    with pytest.raises(ConfigError, match="multiples of 128"):
        quantize_(m, QoQConfig(), torch.randint(0, cfg.vocab_size, (2, 8)))
    report = quantize_(m, QoQConfig(w_group=-1, reorder=False), torch.randint(0, cfg.vocab_size, (2, 8)))
    assert report.linears == 2 * 7 and m.model.layers[0].mlp.up_proj.group == -1
