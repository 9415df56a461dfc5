"""The SpAtten attention function: cascade token and head pruning, local value pruning and progressive quantization
inside one pluggable attention call, with per-(layer, head) statistics of what the hardware would fetch.

SpAtten (Wang, Zhang, Han; HPCA 2021, arXiv:2012.09852), Sec. 3. `SpAttenAttention` has the signature of
`accel_sims.models.AttentionFn`, so it runs inside the minimal BERT / GPT-2 / Llama models (`apply(model, config)`)
or as a stand-alone attention function called with `layer=` indices. Pruned heads and tokens are computed as zeros /
masked keys, which is numerically what removing them gives; for encoders the model also drops the pruned tokens from
its hidden states (`select_tokens`), as the cascade does. Called stand-alone by a host that keeps every token (no
`select_tokens` before the layer), the cascade masks the pruned tokens out of K and V instead; call `reset()` between
inputs then.

Where importance lives:
- encoder (non-causal calls): token importance accumulates over layers per original token; layer l keeps
  `token_keep_ratios[l]` of the original tokens, chosen after layer l-1 (the cascade);
- decoder (causal calls, KV cache): importance accumulates per layer over generation steps, and after each call the
  layer's cache keeps `start_size` first, `recent_size` last and the most important entries between them
  (`important_size`, or the budget `token_keep_ratios[l]` of the context gives);
- heads: Σ|head output| accumulates over the layers of one forward pass; layer l computes `head_keep_ratios[l]` of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from accel_sims.errors import AccelSimsError
from accel_sims.models.attention import HasAttention, attention_bias
from accel_sims.spatten.head_pruning import head_importance, select_heads
from accel_sims.spatten.progressive_quant import progressive_probs, progressive_values
from accel_sims.spatten.pruning import PruningConfig, keep_count
from accel_sims.spatten.token_pruning import kv_cache_keep, select_top_tokens, token_importance
from accel_sims.spatten.value_pruning import local_value_prune


@dataclass
class LayerStats:
    """What one attention call of one layer did, per batch row (and head): the source of workload records."""

    iteration: int
    layer: int
    causal: bool
    head_dim: int
    seq_len: Tensor  # [B] tokens in the context before pruning (original tokens for an encoder)
    num_queries: Tensor  # [B] real queries
    key_fetch: Tensor  # [B] keys the layer attends to after token pruning
    value_fetch: Tensor  # [B, H] V rows fetched per query (rounded-up mean over queries)
    head_alive: Tensor  # [B, H] heads computed
    requant: Tensor  # [B, H] any query of the head refetched LSBs
    requant_fraction: Tensor  # [B, H] share of queries that refetched LSBs
    max_prob: Tensor  # [B, H] mean over queries of the maximum probability
    topk_k: Tensor | None = None  # [B] tokens kept by the top-k after this layer (None: no top-k ran)
    positions: Tensor | None = None  # [B, L'] encoder: original index of each key (-1 = padding)

    def row(self, b: int) -> dict[str, Any]:
        """Plain-Python view of batch row `b` (for reports and JSON)."""
        return {
            "iteration": self.iteration,
            "layer": self.layer,
            "seq_len": int(self.seq_len[b]),
            "num_queries": int(self.num_queries[b]),
            "key_fetch": int(self.key_fetch[b]),
            "heads": [int(h) for h in self.head_alive[b].nonzero().flatten()],
            "value_fetch": [int(x) for x in self.value_fetch[b]],
            "requant": [bool(x) for x in self.requant[b]],
            "topk_k": None if self.topk_k is None else int(self.topk_k[b]),
        }


@dataclass
class _DecoderLayerState:
    alive: Tensor  # [B, L] cache entries still in the cache
    importance: Tensor  # [B, L]


@dataclass
class _State:
    iteration: int = -1
    # encoder cascade
    orig: Tensor | None = None  # [B, L'] original index of each current position (-1 = padding)
    alive: Tensor | None = None  # [B, L0] stand-alone use: tokens not pruned yet (masked out of K/V otherwise)
    token_imp: Tensor | None = None  # [B, L0]
    n0: Tensor | None = None  # [B] original real tokens
    # heads (per forward pass)
    head_imp: Tensor | None = None
    head_alive: Tensor | None = None
    # decoder KV caches, per layer
    caches: dict[int, _DecoderLayerState] = field(default_factory=dict)


class SpAttenAttention:
    """SpAtten as an attention function for a model of `num_layers` layers and `num_heads` heads per layer."""

    def __init__(self, config: PruningConfig, num_layers: int, num_heads: int) -> None:
        if num_layers < 1 or num_heads < 1:
            raise AccelSimsError(f"SpAttenAttention: num_layers {num_layers} and num_heads {num_heads} must be >= 1")
        self.config = config
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.token_ratios = config.per_layer("token_keep_ratios", num_layers)
        self.head_ratios = config.per_layer("head_keep_ratios", num_layers)
        self.stats: list[LayerStats] = []
        self._s = _State()
        self._pending_topk: tuple[Tensor, Tensor] | None = None
        self._selected = False  # the host model asked `select_tokens` for the coming layer

    def reset(self) -> None:
        """Forget statistics, importance and KV-cache pruning state (start a new input)."""
        self.stats = []
        self._s = _State()
        self._pending_topk = None
        self._selected = False

    # ----- cascade token pruning for encoders (called by the model before each layer) -----
    def select_tokens(self, layer: int, key_mask: Tensor) -> tuple[Tensor, Tensor] | None:
        """Tokens layer `layer` keeps, as indices into the current sequence and their mask; None keeps all."""
        self._check_layer(layer)
        s = self._s
        self._selected = True
        if layer == 0 or s.orig is None or s.token_imp is None or s.n0 is None:
            self._start_encoder(key_mask)
            return None
        picked = self._cascade_top(layer, key_mask)
        if picked is None:
            return None
        index, mask = picked
        s.orig = torch.where(mask, torch.gather(s.orig, 1, index), -1)
        return index, mask

    def _cascade_top(self, layer: int, valid: Tensor) -> tuple[Tensor, Tensor] | None:
        """The top-k of the current tokens (`valid` `[B, L']`) by accumulated importance, or None if all stay."""
        s = self._s
        assert s.orig is not None and s.token_imp is not None and s.n0 is not None
        keep = torch.tensor([keep_count(self.token_ratios[layer], int(n)) for n in s.n0], device=valid.device)
        current = valid.sum(1)
        keep = torch.minimum(keep, current)
        if bool((keep >= current).all()):
            return None
        imp = torch.gather(s.token_imp, 1, s.orig.clamp_min(0))
        index, mask = select_top_tokens(imp, valid, keep)
        if self.stats and self.stats[-1].layer == layer - 1:
            self.stats[-1].topk_k = keep
        return index, mask

    def _standalone_mask(self, layer: int, b: int, lk: int, key_mask: Tensor | None, device: torch.device) -> Tensor:
        """Cascade token pruning when the caller keeps every token: pruned tokens leave K and V as masked keys."""
        s = self._s
        if layer == 0 or s.alive is None or s.alive.shape != (b, lk):
            self._start_encoder(torch.ones(b, lk, dtype=torch.bool, device=device) if key_mask is None else key_mask)
        assert s.alive is not None
        if layer > 0:
            picked = self._cascade_top(layer, s.alive)
            if picked is not None:
                index, mask = picked
                s.alive = torch.zeros(b, lk, dtype=torch.long, device=device).scatter_add(1, index, mask.long()) > 0
        return s.alive

    def _start_encoder(self, key_mask: Tensor) -> None:
        s = self._s
        b, n = key_mask.shape
        s.orig = torch.where(key_mask, torch.arange(n, device=key_mask.device)[None].expand(b, n), -1)
        s.token_imp = torch.zeros(b, n, device=key_mask.device)
        s.n0 = key_mask.sum(1)
        s.alive = key_mask.clone()
        if bool((s.n0 == 0).any()):
            raise AccelSimsError("SpAttenAttention: key_mask has a row with no real tokens (an empty sequence)")

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise AccelSimsError(f"SpAttenAttention: layer {layer} outside 0..{self.num_layers - 1}")

    # ----- the attention call -----
    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, layer: int, key_mask: Tensor | None, causal: bool) -> Tensor:
        self._check_layer(layer)
        b, h, lq, d = q.shape
        lk = k.shape[2]
        if h != self.num_heads:
            raise AccelSimsError(f"SpAttenAttention: layer {layer} got {h} heads, configured for {self.num_heads}")
        if lq == 0 or lk == 0:
            raise AccelSimsError(f"SpAttenAttention: layer {layer} got an empty sequence (Lq={lq}, Lk={lk})")
        if k.shape != v.shape or k.shape[:2] != (b, h) or k.shape[3] != d:
            raise AccelSimsError(f"SpAttenAttention: layer {layer}: q {tuple(q.shape)}, k {tuple(k.shape)}, v "
                                 f"{tuple(v.shape)} do not match [B, H, L, D]")  # fmt: skip
        cfg, s = self.config, self._s
        if layer == 0:
            s.iteration += 1
            s.head_imp = torch.zeros(b, h, device=q.device)
            s.head_alive = torch.ones(b, h, dtype=torch.bool, device=q.device)
        assert s.head_imp is not None and s.head_alive is not None

        # Cascade head pruning: rank by importance accumulated in earlier layers.
        if layer > 0:
            k_heads = keep_count(self.head_ratios[layer], h)
            if k_heads < int(s.head_alive.sum(1).max()):
                s.head_alive = select_heads(s.head_imp, s.head_alive, k_heads)
        head_alive = s.head_alive

        # Which keys take part: padding, and for decoders the pruned KV-cache entries.
        query_mask: Tensor | None = None
        kmask: Tensor | None
        if causal:
            cache = self._decoder_cache(layer, b, lk, q.device)
            kmask = cache.alive if key_mask is None else cache.alive & key_mask
        else:
            selected, self._selected = self._selected, False
            kmask = key_mask if selected else self._standalone_mask(layer, b, lk, key_mask, q.device)
            # Queries of pruned tokens are not computed by the hardware: they add no importance.
            query_mask = kmask if kmask is not None and lq == lk else None
        if kmask is not None and bool((kmask.sum(1) == 0).any()):
            raise AccelSimsError(f"SpAttenAttention: layer {layer}: a row has no keys (an empty sequence)")
        bias = attention_bias(kmask, causal, lq, lk, q.dtype, q.device)

        if cfg.quantize:
            probs, requant = progressive_probs(
                q, k, bias, cfg.key_msb_bits, cfg.requant_extra_bits, cfg.requant_threshold
            )
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
            probs = torch.softmax(scores if bias is None else scores + bias, dim=-1)
            requant = torch.zeros(b, h, lq, dtype=torch.bool, device=q.device)

        valid = None if bias is None else torch.isfinite(bias)
        pruned, kept = local_value_prune(probs, cfg.value_keep_ratio, valid)
        if cfg.quantize:
            out = progressive_values(pruned, v, requant, cfg.value_msb_bits, cfg.requant_extra_bits)
        else:
            out = pruned @ v
        out = out * head_alive[:, :, None, None].to(out.dtype)

        # Importance for the next decisions: probabilities before value pruning, from the heads computed.
        s.head_imp = s.head_imp + head_importance(out, query_mask)
        imp = token_importance(probs, query_mask, head_alive)
        if causal:
            self._decoder_update(layer, imp)
        elif s.orig is not None and s.token_imp is not None and s.orig.shape == (b, lk):
            s.token_imp.scatter_add_(1, s.orig.clamp_min(0), imp * (s.orig >= 0).to(imp.dtype))

        self._record(layer, causal, d, q, probs, kept, requant, head_alive, kmask, query_mask, lk)
        return out

    # ----- decoders: the KV cache split -----
    def _decoder_cache(self, layer: int, b: int, lk: int, device: torch.device) -> _DecoderLayerState:
        caches = self._s.caches
        st = caches.get(layer)
        if st is None or st.alive.shape[0] != b or st.alive.shape[1] > lk:
            st = _DecoderLayerState(
                torch.ones(b, lk, dtype=torch.bool, device=device), torch.zeros(b, lk, device=device)
            )
        elif st.alive.shape[1] < lk:  # new tokens joined the cache
            grow = lk - st.alive.shape[1]
            st = _DecoderLayerState(
                torch.cat([st.alive, torch.ones(b, grow, dtype=torch.bool, device=device)], 1),
                torch.cat([st.importance, torch.zeros(b, grow, device=device)], 1),
            )
        caches[layer] = st
        return st

    def _decoder_update(self, layer: int, imp: Tensor) -> None:
        cfg = self.config
        st = self._s.caches[layer]
        st.importance = st.importance + imp
        lk = st.alive.shape[1]
        if cfg.important_size is not None:
            important = cfg.important_size
        elif self.token_ratios[layer] < 1.0:
            important = max(0, keep_count(self.token_ratios[layer], lk) - cfg.start_size - cfg.recent_size)
        else:
            return
        before = st.alive.sum(1)
        st.alive = kv_cache_keep(st.importance, st.alive, cfg.start_size, important, cfg.recent_size)
        self._pending_topk = (st.alive.sum(1), before)

    # ----- statistics -----
    def _record(
        self,
        layer: int,
        causal: bool,
        d: int,
        q: Tensor,
        probs: Tensor,
        kept: Tensor,
        requant: Tensor,
        head_alive: Tensor,
        kmask: Tensor | None,
        query_mask: Tensor | None,
        lk: int,
    ) -> None:
        b, h, lq, _ = q.shape
        qm = torch.ones(b, lq, dtype=torch.bool, device=q.device) if query_mask is None else query_mask
        nq = qm.sum(1)
        qw = qm[:, None, :].to(probs.dtype)
        denom = nq[:, None].clamp_min(1).to(probs.dtype)
        value_fetch = torch.ceil((kept.sum(-1).to(probs.dtype) * qw).sum(-1) / denom - 1e-6).long()
        req = requant & qm[:, None, :]
        key_fetch = torch.full((b,), lk, device=q.device) if kmask is None else kmask.sum(1)
        if causal:
            seq_len = torch.full((b,), lk, device=q.device)
        else:
            n0 = self._s.n0
            seq_len = n0 if n0 is not None and n0.shape[0] == b else key_fetch
        stats = LayerStats(
            iteration=self._s.iteration,
            layer=layer,
            causal=causal,
            head_dim=d,
            seq_len=seq_len.long(),
            num_queries=nq.long(),
            key_fetch=key_fetch.long(),
            value_fetch=value_fetch,
            head_alive=head_alive.clone(),
            requant=req.any(-1),
            requant_fraction=(req.to(probs.dtype).sum(-1) / denom),
            max_prob=(probs.amax(-1) * qw).sum(-1) / denom,
        )
        orig = self._s.orig
        if not causal and orig is not None and orig.shape == (b, lk):
            stats.positions = orig.clone() if kmask is None else torch.where(kmask, orig, -1)
        pending = self._pending_topk
        if causal and pending is not None:
            after, before = pending
            if bool((after < before).any()):
                stats.topk_k = after.long()
            self._pending_topk = None
        self.stats.append(stats)


@dataclass
class SpAttenRun:
    """A model run with SpAtten on: the model's own output and the per-layer statistics."""

    outputs: Any
    stats: list[LayerStats]


def _model_shape(model: HasAttention) -> tuple[int, int]:
    layers, heads = getattr(model, "num_layers", None), getattr(model, "num_heads", None)
    if not isinstance(layers, int) or not isinstance(heads, int):
        raise AccelSimsError(f"{type(model).__name__}: expected num_layers and num_heads attributes")
    return layers, heads


@contextmanager
def apply(model: HasAttention, config: PruningConfig) -> Iterator[SpAttenAttention]:
    """Run `model` with SpAtten attention inside the block; yields the attention object (its `.stats`)."""
    layers, heads = _model_shape(model)
    fn = SpAttenAttention(config, layers, heads)
    with model.use_attention(fn):
        yield fn


def run(model: HasAttention, config: PruningConfig, *args: Any, **kwargs: Any) -> SpAttenRun:
    """`model(*args, **kwargs)` under `torch.no_grad()` with SpAtten on; returns outputs and statistics."""
    with apply(model, config) as fn, torch.no_grad():
        out = model(*args, **kwargs)  # type: ignore[operator]
    return SpAttenRun(out, fn.stats)
