"""Tests of perplexity (against exp(mean NLL) computed by hand), the unigram baseline and the stdlib corpus."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from qserve.config import LlamaConfig
from qserve.errors import InputError
from qserve.evaluation import perplexity, unigram_perplexity
from qserve.model import LlamaForCausalLM
from qserve.text_data import stdlib_documents, stdlib_splits, write_text_file
from qserve.tokenizer import train_bpe_tokenizer


def tiny_model(vocab_size: int = 256) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**{**LlamaConfig.from_name("tiny").model_dump(), "vocab_size": vocab_size})
    return LlamaForCausalLM(config).eval()


def nll_by_hand(model: LlamaForCausalLM, window: torch.Tensor, first: int) -> list[float]:
    """-log p(token t | tokens < t) for t = first .. len-1, one softmax at a time."""
    with torch.no_grad():
        logits = model(window.unsqueeze(0))[0].double()  # [T, V]
    out = []
    for t in range(first, window.numel()):
        logp = logits[t - 1] - torch.logsumexp(logits[t - 1], dim=0)
        out.append(-float(logp[window[t]]))
    return out


def test_perplexity_equals_exp_mean_nll_of_non_overlapping_windows() -> None:
    model = tiny_model()
    ids = torch.randint(0, 256, (53,), generator=torch.Generator().manual_seed(1))
    nlls: list[float] = []
    for start in range(0, 53 - 8 + 1, 8):  # 6 windows; the 5-token tail is dropped
        nlls += nll_by_hand(model, ids[start : start + 8], first=1)
    assert len(nlls) == 6 * 7
    want = math.exp(sum(nlls) / len(nlls))
    for batch_size in (1, 4, 16):
        assert perplexity(model, ids, seq_len=8, batch_size=batch_size) == pytest.approx(want, rel=1e-6)
    assert perplexity(model, ids.tolist(), seq_len=8) == pytest.approx(want, rel=1e-6)
    first_two = math.exp(sum(nlls[:14]) / 14)
    assert perplexity(model, ids, seq_len=8, max_windows=2) == pytest.approx(first_two, rel=1e-6)


def test_perplexity_with_stride_scores_each_token_once() -> None:
    model = tiny_model()
    ids = torch.randint(0, 256, (20,), generator=torch.Generator().manual_seed(2))
    nlls = nll_by_hand(model, ids[0:8], first=1)  # window 0 scores tokens 1..7
    nlls += nll_by_hand(model, ids[4:12], first=4)  # later windows score their last 4 tokens
    nlls += nll_by_hand(model, ids[8:16], first=4)
    nlls += nll_by_hand(model, ids[12:20], first=4)
    want = math.exp(sum(nlls) / len(nlls))
    assert perplexity(model, ids, seq_len=8, stride=4, batch_size=3) == pytest.approx(want, rel=1e-6)


def test_perplexity_of_a_text_file(tmp_path: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    tok = train_bpe_tokenizer([text], vocab_size=256 + 3 + 20)
    model = tiny_model(tok.vocab_size)
    ids = torch.tensor(tok.encode(text))
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    assert perplexity(model, path, seq_len=16, tokenizer=tok) == perplexity(model, ids, seq_len=16)
    with pytest.raises(InputError, match="needs a tokenizer"):
        perplexity(model, path, seq_len=16)
    with pytest.raises(InputError, match="does not exist"):
        perplexity(model, tmp_path / "missing.txt", seq_len=16, tokenizer=tok)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InputError, match="is empty"):
        perplexity(model, tmp_path / "empty.txt", seq_len=16, tokenizer=tok)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq_len": 1}, "seq_len must be >= 2"),
        ({"seq_len": 64}, "at least 64 tokens, found 30"),
        ({"seq_len": 300}, "exceeds the model's context of 256"),
        ({"seq_len": 8, "stride": 9}, "stride must be in"),
        ({"seq_len": 8, "batch_size": 0}, "batch_size"),
        ({"seq_len": 8, "max_windows": 0}, "max_windows"),
    ],
)
def test_perplexity_errors(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(InputError, match=match):
        perplexity(tiny_model(), torch.arange(30), **kwargs)  # type: ignore[arg-type]


def test_unigram_perplexity_by_hand() -> None:
    train, ev = [0, 0, 1, 2, 0], [0, 3]
    # add-one counts over V=4: [4, 2, 2, 1] / 9
    want = math.exp(-(math.log(4 / 9) + math.log(1 / 9)) / 2)
    assert unigram_perplexity(train, ev, vocab_size=4) == pytest.approx(want, rel=1e-12)
    uniform = unigram_perplexity([], [1, 2, 3], vocab_size=10)
    assert uniform == pytest.approx(10.0)  # no counts: add-one gives the uniform model
    with pytest.raises(InputError, match=r"in \[0, 4\)"):
        unigram_perplexity([0, 4], [0], vocab_size=4)


def test_stdlib_corpus_is_deterministic_disjoint_english(tmp_path: Path) -> None:
    docs = stdlib_documents()
    assert docs == stdlib_documents()
    assert len({name for name, _ in docs}) == len(docs) and len({t for _, t in docs}) == len(docs)
    splits = stdlib_splits()
    sizes = {s: len(splits.text(s)) for s in ("train", "validation", "test")}
    assert sizes["train"] > 500_000 and sizes["validation"] > 20_000 and sizes["test"] > 20_000
    assert not set(splits.train) & set(splits.test) and not set(splits.validation) & set(splits.test)
    words = splits.text("test").split()
    assert sum(w.lower() in ("the", "a", "of", "is", "to") for w in words) / len(words) > 0.05  # English prose
    path = write_text_file(tmp_path / "sub" / "test.txt", "test")
    assert path.read_text(encoding="utf-8") == splits.text("test") + "\n"
    with pytest.raises(InputError, match="split must be"):
        splits.text("dev")  # type: ignore[arg-type]
