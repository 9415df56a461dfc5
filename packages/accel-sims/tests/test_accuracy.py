"""SpAtten on a trained model (all-MiniLM-L6-v2): pruned sentence embeddings stay close to the unpruned ones.

A small version of bench/bench_accuracy.py; the bounds sit below what that run measured on the same first sentences
(see BENCHMARKS.md, "Accuracy"). The model package is a test dependency: without it the test skips locally and fails
in CI (env var CI set).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from accel_sims.models import BertModel, load_bert
from accel_sims.spatten.accuracy import embed, key_fetch_fraction, requant_fraction, tokenize
from accel_sims.spatten.pruning import PruningConfig, cascade_schedule
from accel_sims.spatten.text import passages, sentences


@pytest.fixture(scope="module")
def setup(minilm_dir: Path) -> tuple[BertModel, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    folder = minilm_dir
    model = load_bert(folder)
    ids, mask = tokenize(folder, sentences(24) + passages(8))
    torch.set_grad_enabled(False)
    dense, _ = embed(model, ids, mask, PruningConfig())
    return model, (ids, mask), dense


def cosine(setup, **fields) -> tuple[torch.Tensor, list]:  # type: ignore[no-untyped-def]
    model, (ids, mask), dense = setup
    emb, stats = embed(model, ids, mask, PruningConfig.create(**fields))
    return (emb * dense).sum(-1), stats


def test_text_set_is_real_and_deterministic() -> None:
    s = sentences(50)
    assert len(s) == 50 and s == sentences(50) and len(set(s)) == 50
    assert all(8 <= len(x.split()) <= 40 and x[0].isupper() and x[-1] in ".!?" for x in s)
    assert len(passages(10)) == 10


def test_keep_all_is_exact(setup) -> None:  # type: ignore[no-untyped-def]
    cos, stats = cosine(setup)
    assert float(cos.min()) > 0.99999
    assert key_fetch_fraction(stats, setup[1][1]) == 1.0


def test_cascade_token_pruning_bounds(setup) -> None:  # type: ignore[no-untyped-def]
    mild, stats = cosine(setup, token_keep_ratios=cascade_schedule(6, 0.9))
    half, stats_half = cosine(setup, token_keep_ratios=cascade_schedule(6, 0.5))
    assert float(mild.mean()) > 0.97
    assert float(half.mean()) > 0.80
    assert float(half.mean()) < float(mild.mean())
    assert key_fetch_fraction(stats_half, setup[1][1]) < key_fetch_fraction(stats, setup[1][1]) < 1.0


def test_value_pruning_and_progressive_quantization_bounds(setup) -> None:  # type: ignore[no-untyped-def]
    values, _ = cosine(setup, value_keep_ratio=0.5)
    quant, stats = cosine(setup, quantize=True)
    assert float(values.mean()) > 0.98
    assert float(quant.mean()) > 0.999
    assert 0.0 < requant_fraction(stats) < 0.2
