"""The pluggable attention function shared by the minimal BERT, GPT-2 and Llama models.

SpAtten (Wang, Zhang, Han; HPCA 2021, arXiv:2012.09852), Sec. 3: the algorithms act inside attention (on Q.K scores,
probabilities and the V fetch) and, for the cascade, on which tokens later layers see. Every model here therefore
routes its attention through one callable with one signature, so SpAtten (or any other attention) plugs into all three
architectures the same way: `model.set_attention(fn)` or `with model.use_attention(fn): ...`.

Contract of an attention function: `fn(q, k, v, *, layer, key_mask, causal) -> out` with q `[B, H, Lq, D]`,
k and v `[B, H, Lk, D]` (grouped-query K/V are expanded to H heads by the model), `key_mask` `[B, Lk]` bool
(True = a real key) or None, `causal` True when query i may only see keys `<= Lk - Lq + i` (queries are the last Lq
positions of the keys); it returns `[B, H, Lq, D]`. A function that also has `select_tokens(layer, key_mask)` can
shrink the sequence an encoder layer works on (cascade token pruning): it returns `(index [B, L'], key_mask [B, L'])`
into the current sequence, or None to keep every token.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


class AttentionFn(Protocol):
    """Scaled dot-product attention over per-head q, k, v; see the module docstring for the contract."""

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, layer: int, key_mask: Tensor | None, causal: bool) -> Tensor:
        """Return the attention output `[B, H, Lq, D]`."""
        ...


@runtime_checkable
class TokenSelector(Protocol):
    """An attention function that also prunes the sequence an encoder layer sees (cascade token pruning)."""

    def select_tokens(self, layer: int, key_mask: Tensor) -> tuple[Tensor, Tensor] | None:
        """Indices `[B, L']` of the tokens layer `layer` keeps and their mask, or None to keep all."""
        ...


def attention_bias(
    key_mask: Tensor | None, causal: bool, lq: int, lk: int, dtype: torch.dtype, device: torch.device
) -> Tensor | None:
    """Additive bias `[B or 1, 1, Lq, Lk]` (0 or -inf) for padding and causality, or None when nothing is masked."""
    bias: Tensor | None = None
    if causal:
        # Query i sits at absolute position lk - lq + i and sees keys up to it.
        qpos = torch.arange(lq, device=device)[:, None] + (lk - lq)
        allowed = torch.arange(lk, device=device)[None, :] <= qpos
        bias = torch.zeros(lq, lk, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))[None, None]
    if key_mask is not None:
        pad = torch.zeros(key_mask.shape, dtype=dtype, device=device).masked_fill(~key_mask, float("-inf"))
        pad = pad[:, None, None, :]
        bias = pad if bias is None else bias + pad
    return bias


def dense_attention(q: Tensor, k: Tensor, v: Tensor, *, layer: int, key_mask: Tensor | None, causal: bool) -> Tensor:
    """Plain softmax attention, written out (no fused kernel) so it is the exact reference for SpAtten at keep 1.0."""
    del layer
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    bias = attention_bias(key_mask, causal, q.shape[-2], k.shape[-2], scores.dtype, scores.device)
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1) @ v


class HasAttention:
    """Mixin giving a model its attention slot; models call `self.attention_fn(...)` in every layer.

    The function lives on the instance (set in the model's `__init__` by `set_attention(None)`): a plain function
    stored on the class would bind as a method.
    """

    attention_fn: AttentionFn

    def set_attention(self, fn: AttentionFn | None) -> None:
        """Route every layer's attention through `fn` (None restores the dense reference)."""
        self.attention_fn = dense_attention if fn is None else fn

    @contextmanager
    def use_attention(self, fn: AttentionFn) -> Iterator[AttentionFn]:
        """Use `fn` inside the block, then restore the previous attention function."""
        previous = self.attention_fn
        self.set_attention(fn)
        try:
            yield fn
        finally:
            self.set_attention(previous)
