"""End to end on one layer with the package's own formats: the issue's quality goal in INT4 and NVFP4.

SVDQuant (Li et al., ICLR 2025), Sec. 4: smoothing migrates activation outliers into the weight and
the 16-bit low-rank branch absorbs the weight's outliers, so W4A4 gets close to W4A16. On a layer
whose activations carry a few channels 20-100x larger than the rest, W4A4 SVDQuant must beat W4A4
SmoothQuant by at least 6 dB of output SNR and stay within 3 dB of W4A16.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from sq_testing import outlier_activations, snr_db, structured_weight

from svdquant.formats import fake_quantize_activation, fake_quantize_weight
from svdquant.low_rank import low_rank_branch
from svdquant.smoothing import fake_quant_linear, search_smoothing, smoothquant_scale


@pytest.mark.parametrize(("fmt", "group"), [("int4", 64), ("nvfp4", 16)])
def test_svdquant_beats_smoothquant_and_nears_w4a16(fmt: str, group: int) -> None:
    m, k, n = 256, 256, 256
    x = outlier_activations(m, k, seed=3)
    w = structured_weight(n, k, seed=4)
    ref = x @ w.T
    qw = partial(fake_quantize_weight, fmt=fmt, group_size=group)
    qx = partial(fake_quantize_activation, fmt=fmt, group_size=group)
    ones = torch.ones(k)

    w4a16 = snr_db(ref, x @ qw(w).T)
    w4a4_rtn = snr_db(ref, fake_quant_linear(x, ones, qw(w), qx))
    s = smoothquant_scale(x.abs().amax(0), w.abs().amax(0))
    smoothquant = snr_db(ref, fake_quant_linear(x, s, qw(w * s), qx))

    found = search_smoothing(x, w, qw, qx, rank=32, svd="randomized")
    branch = low_rank_branch(w * found.scale, 32, qw, x=x / found.scale, iters=20)
    svdq = snr_db(ref, fake_quant_linear(x, found.scale, branch.residual, qx, branch.up, branch.down))

    assert w4a4_rtn < smoothquant
    assert svdq >= smoothquant + 6.0, (fmt, svdq, smoothquant)
    assert svdq >= w4a16 - 3.0, (fmt, svdq, w4a16)
