"""Cascade head pruning: head importance from the magnitude of each head's output, accumulated; top-k heads survive.

SpAtten (arXiv:2012.09852), Sec. 3.2: a head's importance is Σ|output| of that head, accumulated across layers (heads
are matched by index from layer to layer); a layer computes only the top-k heads and a pruned head stays pruned in
every later layer.
"""

from __future__ import annotations

import torch
from torch import Tensor


def head_importance(out: Tensor, query_mask: Tensor | None = None) -> Tensor:
    """Σ|out| over queries and features of each head: `[B, H, Lq, D]` -> `[B, H]` (padded queries add 0)."""
    a = out.abs()
    if query_mask is not None:
        a = a * query_mask[:, None, :, None].to(a.dtype)
    return a.sum(dim=(2, 3))


def select_heads(importance: Tensor, alive: Tensor, keep: int) -> Tensor:
    """The `keep` alive heads of highest importance per row (`[B, H]` bool); dead heads never come back."""
    k = min(keep, alive.shape[1])
    score = importance.masked_fill(~alive, float("-inf"))
    top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(alive).scatter(1, top, True) & alive
