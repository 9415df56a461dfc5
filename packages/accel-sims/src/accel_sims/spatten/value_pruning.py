"""Local value pruning: per head and query, fetch only the V rows of the largest attention probabilities.

SpAtten (arXiv:2012.09852), Sec. 3.3: after the softmax, a top-k on each query's probabilities picks the V rows worth
fetching; the other probabilities are dropped (not renormalised: they are small, and the hardware simply skips them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def local_value_prune(probs: Tensor, keep_ratio: float, key_valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Zero all but the top `ceil(keep_ratio * n)` probabilities of each query, n its number of valid keys.

    `probs` `[B, H, Lq, Lk]`; `key_valid` broadcastable to it (True = a key the query could attend to).
    Returns `(pruned probs, kept mask)`; ties keep the earlier key.
    """
    valid = torch.ones_like(probs, dtype=torch.bool) if key_valid is None else key_valid.expand_as(probs)
    if keep_ratio >= 1.0:
        return probs * valid.to(probs.dtype), valid
    n_valid = valid.sum(-1, keepdim=True)
    keep = torch.clamp(torch.ceil(n_valid.to(torch.float64) * keep_ratio - 1e-9), min=1).to(n_valid.dtype)
    keep = torch.minimum(keep, n_valid)
    score = probs.masked_fill(~valid, float("-inf"))
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )
    kept = (rank < keep) & valid
    return probs * kept.to(probs.dtype), kept


def value_fetch_count(keep_ratio: float, n_keys: int) -> int:
    """V rows one query fetches out of `n_keys` (the count `local_value_prune` keeps)."""
    return 0 if n_keys <= 0 else min(n_keys, max(1, math.ceil(n_keys * keep_ratio - 1e-9)))
