"""Perplexity of a causal LM on a token stream or a local text file, and the unigram baseline.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 6.2 (Table 3: WikiText2 perplexity at sequence length 2048). The protocol is the one GPTQ / AWQ / QServe use:
tokenize the whole text once, cut it into non-overlapping ``seq_len`` windows (the tail that does not fill a
window is dropped), run each window from scratch, and report ``exp`` of the mean next-token NLL over all predicted
tokens (``seq_len - 1`` per window). A ``stride < seq_len`` gives the overlapping variant: windows start every
``stride`` tokens and, after the first, score only their last ``stride`` tokens (each with more context).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qserve.errors import InputError
from qserve.tokenizer import Tokenizer

__all__ = ["load_token_ids", "perplexity", "unigram_perplexity"]


def load_token_ids(path: str | Path, tokenizer: Tokenizer) -> torch.Tensor:
    """Token ids int64 ``[N]`` of a UTF-8 text file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"text file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError(f"text file {path} is empty")
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def _as_ids(data: torch.Tensor | Sequence[int] | str | Path, tokenizer: Tokenizer | None) -> torch.Tensor:
    if isinstance(data, (str, Path)):
        if tokenizer is None:
            raise InputError("perplexity of a text file needs a tokenizer")
        return load_token_ids(data, tokenizer)
    ids = data if isinstance(data, torch.Tensor) else torch.tensor(list(data), dtype=torch.long)
    if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
        raise InputError(f"token ids must be an integer [N] tensor, found {ids.dtype} {tuple(ids.shape)}")
    return ids.long()


@torch.no_grad()
def perplexity(
    model: nn.Module,
    data: torch.Tensor | Sequence[int] | str | Path,
    seq_len: int,
    tokenizer: Tokenizer | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    max_windows: int | None = None,
) -> float:
    """Perplexity of ``model`` (``input_ids [B, T] -> logits [B, T, V]``) on ``data`` (token ids, or a text file
    read with ``tokenizer``) in windows of ``seq_len`` tokens; ``max_windows`` caps the windows evaluated."""
    if seq_len < 2:
        raise InputError(f"seq_len must be >= 2 (a window predicts seq_len - 1 tokens), found {seq_len}")
    stride = seq_len if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise InputError(f"stride must be in [1, seq_len={seq_len}], found {stride}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, found {batch_size}")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and seq_len > max_pos:
        raise InputError(f"seq_len {seq_len} exceeds the model's context of {max_pos} tokens")
    ids = _as_ids(data, tokenizer)
    n = ids.numel()
    if n < seq_len:
        raise InputError(f"perplexity at seq_len {seq_len} needs at least {seq_len} tokens, found {n}")
    starts = list(range(0, n - seq_len + 1, stride))
    if max_windows is not None:
        if max_windows < 1:
            raise InputError(f"max_windows must be >= 1, found {max_windows}")
        starts = starts[:max_windows]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll = 0.0
    count = 0
    try:
        for i in range(0, len(starts), batch_size):
            chunk = starts[i : i + batch_size]
            x = torch.stack([ids[s : s + seq_len] for s in chunk]).to(device)  # [B, T]
            logits = model(x).float()  # [B, T, V]
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")  # [B, T-1]
            for row, s in enumerate(chunk):
                # The first window scores every prediction; later (overlapping) ones only their last `stride`.
                scored = nll[row] if s == 0 else nll[row, -stride:]
                total_nll += float(scored.double().sum())
                count += scored.numel()
    finally:
        model.train(was_training)
    mean = total_nll / count
    if not math.isfinite(mean):
        raise InputError(f"the model produced a non-finite mean NLL ({mean}) on this text")
    return math.exp(mean)


def unigram_perplexity(
    train_ids: torch.Tensor | Sequence[int], eval_ids: torch.Tensor | Sequence[int], vocab_size: int
) -> float:
    """Perplexity on ``eval_ids`` of the add-one-smoothed unigram model estimated on ``train_ids``."""
    train = torch.as_tensor(train_ids, dtype=torch.long).flatten()
    ev = torch.as_tensor(eval_ids, dtype=torch.long).flatten()
    if ev.numel() == 0:
        raise InputError("unigram perplexity needs at least one evaluation token")
    for what, t in (("train", train), ("eval", ev)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_size):
            raise InputError(f"{what} ids must be in [0, {vocab_size}), found [{int(t.min())}, {int(t.max())}]")
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0  # [V]
    logp = counts.log() - counts.sum().log()
    return math.exp(-float(logp[ev].mean()))
