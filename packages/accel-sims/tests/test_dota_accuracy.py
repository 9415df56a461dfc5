"""All-MiniLM-L6-v2 (a trained 6-layer BERT) with every matmul on the DDOT model (DOTA, arXiv:2305.19533, Sec. 5.2)."""

from __future__ import annotations

from pathlib import Path

import torch

from accel_sims.dota.accuracy import MATMUL_KINDS, default_settings, evaluate, noise_settings, photonic
from accel_sims.dota.device import DDOTConfig


def test_minilm_matmuls_on_ddot(minilm_dir: Path) -> None:
    from accel_sims.models import load_bert
    from accel_sims.spatten.accuracy import tokenize
    from accel_sims.spatten.text import sentences

    folder = minilm_dir
    model = load_bert(folder)
    ids, mask = tokenize(folder, sentences(4), 32)
    settings = {"exact": DDOTConfig.ideal(None), **default_settings((4, 8))}
    rows = {r.setting: r for r in evaluate(model, ids, mask, settings, batch=4)}
    assert set(rows["8-bit"].relative_error) == set(MATMUL_KINDS)
    assert rows["exact"].cosine_min > 0.9999 and max(rows["exact"].relative_error.values()) < 1e-4
    for k in MATMUL_KINDS:  # every kind of product, attention's q@k^T and p@v included, went through the model
        assert rows["4-bit"].relative_error[k] > rows["8-bit"].relative_error[k] > 0
    assert rows["8-bit"].cosine_mean > 0.97
    assert rows["8-bit"].cosine_mean > rows["4-bit"].cosine_mean
    noisy = evaluate(model, ids, mask, {"k": noise_settings(8)["8-bit, κ = 0.505"]}, batch=4)[0]
    assert noisy.cosine_mean < rows["8-bit"].cosine_mean
    # the patch is undone afterwards
    with torch.no_grad():
        before = model(ids, mask).last_hidden_state
        with photonic(model, DDOTConfig.ideal(4)):
            pass
        assert torch.equal(model(ids, mask).last_hidden_state, before)
