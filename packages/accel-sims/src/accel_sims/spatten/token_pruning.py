"""Cascade token pruning: token importance from attention probabilities, accumulated over layers; top-k survivors.

SpAtten (arXiv:2012.09852), Sec. 3.1: a token's importance is the attention probability it receives, summed over heads
and queries, accumulated across layers; after a layer, only the top-k tokens go on, and a pruned token is gone for every
later layer (the cascade). For generative models the KV cache keeps the first `start` tokens, the `recent` last ones
and the `important` highest-importance tokens between them (`spatten_llm/kv_cache_token_pruning.py`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_importance(probs: Tensor, query_mask: Tensor | None = None, head_mask: Tensor | None = None) -> Tensor:
    """Σ over heads and queries of `probs` `[B, H, Lq, Lk]` -> `[B, Lk]`; padded queries and pruned heads add 0."""
    p = probs
    if query_mask is not None:
        p = p * query_mask[:, None, :, None].to(p.dtype)
    if head_mask is not None:
        p = p * head_mask[:, :, None, None].to(p.dtype)
    return p.sum(dim=(1, 2))


def select_top_tokens(importance: Tensor, valid: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the `keep[b]` valid tokens of highest `importance` (`[B, L]`), returned in their original order.

    Returns `(index [B, K], mask [B, K])` with K = max(keep); row b's entries past `keep[b]` are padding (mask False).
    Ties go to the earlier token, so the choice is deterministic.
    """
    b, n = importance.shape
    k = int(keep.max().item()) if b else 0
    score = importance.masked_fill(~valid, float("-inf"))
    # Stable descending sort: equal scores keep position order.
    order = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]
    rank_ok = torch.arange(k, device=importance.device)[None] < keep[:, None]
    # Padding slots point past the end so that sorting by position puts them last.
    index = torch.where(rank_ok, order, n)
    index = torch.sort(index, dim=1).values
    mask = index < n
    return torch.where(mask, index, 0), mask


def kv_cache_keep(importance: Tensor, alive: Tensor, start: int, important: int, recent: int) -> Tensor:
    """The KV-cache entries still alive after the start / important / recent split (`[B, L]` bool).

    The first `start` and last `recent` positions stay; between them, the `important` alive entries of highest
    accumulated importance stay; everything else is dropped for good (an entry dead in `alive` stays dead).
    """
    b, n = alive.shape
    pos = torch.arange(n, device=alive.device)[None].expand(b, n)
    protected = (pos < start) | (pos >= n - recent)
    middle = alive & ~protected
    keep = protected & alive
    if important > 0:
        k = min(important, n)
        score = importance.masked_fill(~middle, float("-inf"))
        top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]
        chosen = torch.zeros_like(alive).scatter(1, top, True) & middle
        keep = keep | chosen
    return keep
