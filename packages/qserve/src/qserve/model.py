"""A Llama-architecture causal LM (RMSNorm, RoPE, grouped-query attention, SwiGLU) with pluggable KV caches.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 4 (QoQ quantizes exactly these modules: the q/k/v/o and gate/up/down ``nn.Linear`` layers to W4A8, and the
post-RoPE keys and values to KV4). Module names equal the Hugging Face keys, so an HF ``state_dict`` loads as is.

Attention goes through an :class:`AttentionCache` when one is given (``DenseKVCache`` here, the engine's paged
cache elsewhere); otherwise it is causal attention over the given tokens. ``model.kv_quant`` (a KV quantizer with
``fake``/``quantize``/``dequantize``) makes every path attend over the same quantized-dequantized K/V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from qserve.config import LlamaConfig
from qserve.errors import InputError
from qserve.rope import apply_rope, rope_cos_sin

__all__ = [
    "AttentionCache",
    "DenseKVCache",
    "ForwardContext",
    "KVQuantizerLike",
    "LlamaAttention",
    "LlamaDecoderLayer",
    "LlamaForCausalLM",
    "LlamaMLP",
    "RMSNorm",
    "causal_attention",
    "generate_greedy",
]


@runtime_checkable
class KVQuantizerLike(Protocol):
    """What the model and caches need of a KV quantizer (``qserve.quant.kv.KVQuantizer`` is one)."""

    def fake(self, x: torch.Tensor) -> torch.Tensor: ...

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def dequantize(
        self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype = ...
    ) -> torch.Tensor: ...


@runtime_checkable
class AttentionCache(Protocol):
    """A KV cache the model attends through (one object for all layers)."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store ``k``/``v`` ``[B, Hkv, T, D]`` after each sequence's context in ``layer``; return the causal
        attention ``[B, Hq, T, D]`` of ``q`` ``[B, Hq, T, D]`` over context + new tokens (scale 1/sqrt(D), fp32)."""
        ...


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context_len: int = 0) -> torch.Tensor:
    """Causal GQA attention in float32, returned in ``q``'s dtype.

    ``q`` ``[B, Hq, T, D]`` holds the queries of positions ``context_len .. context_len + T - 1``; ``k``/``v``
    ``[B, Hkv, S, D]`` with ``S = context_len + T`` hold every position; query head ``h`` reads KV head
    ``h // (Hq // Hkv)``.
    """
    b, hq, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    if hq % hkv or s != context_len + t or v.shape != k.shape:
        raise InputError(
            f"attention expects q [B, Hq, T, D] and k = v [B, Hkv, context + T, D] with Hq % Hkv == 0; found q "
            f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, context {context_len}"
        )
    groups = hq // hkv
    kf = k.float().repeat_interleave(groups, dim=1)  # [B, Hq, S, D]
    vf = v.float().repeat_interleave(groups, dim=1)  # [B, Hq, S, D]
    scores = (q.float() @ kf.transpose(-1, -2)) / math.sqrt(d)  # [B, Hq, T, S]
    qpos = torch.arange(t, device=q.device).unsqueeze(1) + context_len  # [T, 1]
    kpos = torch.arange(s, device=q.device).unsqueeze(0)  # [1, S]
    scores = scores.masked_fill(kpos > qpos, float("-inf"))
    return (scores.softmax(dim=-1) @ vf).to(q.dtype)  # [B, Hq, T, D]


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``, normalised in float32 and cast back to the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


@dataclass(frozen=True)
class ForwardContext:
    """What every decoder layer of one forward pass shares: the RoPE tables ``cos``/``sin`` ``[B, T, D]``, the
    KV cache (None: causal attention over the given tokens) and the KV quantizer the no-cache path fakes."""

    cos: torch.Tensor
    sin: torch.Tensor
    cache: AttentionCache | None
    kv_quant: KVQuantizerLike | None


class LlamaMLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(c, i, bias=bias)
        self.up_proj = nn.Linear(c, i, bias=bias)
        self.down_proj = nn.Linear(i, c, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Module):
    """Grouped-query self-attention with RoPE on q and k."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.q_proj = nn.Linear(c, self.num_heads * d, bias=config.attention_bias)
        self.k_proj = nn.Linear(c, self.num_kv_heads * d, bias=config.attention_bias)
        self.v_proj = nn.Linear(c, self.num_kv_heads * d, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * d, c, bias=config.attention_out_bias)

    def forward(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
        b, t, _ = x.shape  # batch, tokens, hidden
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # [B, Hq, T, D]
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            y = ctx.cache.attend(layer, q, k, v)  # the cache applies its own KV quantization
        else:
            if ctx.kv_quant is not None:
                k, v = ctx.kv_quant.fake(k), ctx.kv_quant.fake(v)
            y = causal_attention(q, k, v)
        y = y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)  # [B, T, Hq * D]
        return self.o_proj(y)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), ctx, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Embedding, decoder layers and the final norm (HF's ``model.`` prefix)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        # _weight skips nn.Embedding's own normal_ init (LlamaForCausalLM.reset_parameters does it), which on the meta
        # device costs seconds of one-time set-up in every process that loads a checkpoint.
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        if not self.embed_tokens.weight.is_meta:
            nn.init.normal_(
                self.embed_tokens.weight
            )  # nn.Embedding's own init: keeps seeded runs' RNG stream as before
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """Llama-layout causal LM; ``forward(input_ids [B, T]) -> float32 logits [B, T, V]``.

    With tied embeddings ``lm_head.weight`` *is* ``model.embed_tokens.weight`` (one Parameter; checkpoints omit
    ``lm_head.weight``). :meth:`untie_embeddings` gives the head its own copy, e.g. before folding a norm into it.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.kv_quant: KVQuantizerLike | None = None
        self.reset_parameters()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) linears and embeddings, zero biases, unit norms (the HF init)."""
        std = self.config.initializer_range
        if self.lm_head.weight.is_meta:
            return  # a shell for load_state_dict(assign=True); meta normal_ would cost seconds of one-time set-up
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    @property
    def embeddings_tied(self) -> bool:
        """Whether ``lm_head.weight`` is the embedding Parameter itself."""
        return self.lm_head.weight is self.model.embed_tokens.weight

    def untie_embeddings(self) -> None:
        """Give ``lm_head`` its own copy of the embedding matrix and mark the config untied."""
        if self.embeddings_tied:
            self.lm_head.weight = nn.Parameter(self.model.embed_tokens.weight.detach().clone())
        if self.config.tie_word_embeddings:
            self.config = self.config.model_copy(update={"tie_word_embeddings": False})

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: AttentionCache | None = None,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits float32 ``[B, T, V]`` of ``input_ids`` ``[B, T]``.

        ``positions`` ``[B, T]`` defaults to ``arange(T)``, offset by the cached length of a :class:`DenseKVCache`.
        ``logits_at`` (int ``[B]``) keeps one position per sequence: logits ``[B, 1, V]`` of those positions only,
        which saves the head's product over a whole prompt when only the next token is needed (serving).
        """
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise InputError(
                f"input_ids must be an integer [B, T] tensor, found {input_ids.dtype} {tuple(input_ids.shape)}"
            )
        b, t = input_ids.shape
        if t == 0:
            raise InputError("input_ids must hold at least one token per sequence, found T = 0")
        v = self.config.vocab_size
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= v:
            raise InputError(f"token ids must be in [0, {v}), found [{int(input_ids.min())}, {int(input_ids.max())}]")
        if positions is None:
            start = cache.length if isinstance(cache, DenseKVCache) else 0
            positions = torch.arange(start, start + t, device=input_ids.device).expand(b, t)
        elif positions.shape != input_ids.shape:
            raise InputError(f"positions must have the shape of input_ids {(b, t)}, found {tuple(positions.shape)}")
        cos, sin = rope_cos_sin(self.config, positions)  # [B, T, D] each
        ctx = ForwardContext(cos, sin, cache, self.kv_quant)
        x = self.model.embed_tokens(input_ids)  # [B, T, C]
        for i, layer in enumerate(self.model.layers):
            x = layer(x, ctx, i)
        if logits_at is not None:
            if logits_at.shape != (b,):
                raise InputError(f"logits_at must be [B] = [{b}] positions, found {tuple(logits_at.shape)}")
            x = x[torch.arange(b, device=x.device), logits_at.to(x.device)][:, None]  # [B, 1, C]
        x = self.model.norm(x)
        return self.lm_head(x).float()  # [B, T, V] ([B, 1, V] with logits_at)


class DenseKVCache:
    """Contiguous per-sequence KV cache ``[B, Hkv, max_len, ...]`` for simple generation.

    All sequences of the batch share one length (prefill them together, then decode one token each). With a
    ``kv_quant`` the cache stores its codes, scales and zeros and attends over their dequantized values, the same
    values the no-cache path sees through ``kv_quant.fake``.
    """

    def __init__(
        self,
        config: LlamaConfig,
        batch: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        kv_quant: KVQuantizerLike | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if batch <= 0 or max_len <= 0:
            raise InputError(f"DenseKVCache needs batch > 0 and max_len > 0, found {batch}, {max_len}")
        self.config, self.batch, self.max_len, self.dtype = config, batch, max_len, dtype
        self.kv_quant = kv_quant
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.lengths = [0] * config.num_hidden_layers
        # Per layer, for k then v: a tuple of buffers (the plain tensor, or codes, scales, zeros); allocated on the
        # first store so that the shapes and dtypes of the quantizer's codes need not be known in advance.
        self._store: list[list[tuple[torch.Tensor, ...]] | None] = [None] * config.num_hidden_layers

    @property
    def length(self) -> int:
        """Tokens cached so far (that of the last layer: the first layers run ahead within a forward)."""
        return self.lengths[-1]

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.kv_quant is None:
            return (x.to(self.dtype),)
        return tuple(self.kv_quant.quantize(x))

    def _decode(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.kv_quant is None:
            return parts[0]
        codes, scales, zeros = parts
        return self.kv_quant.dequantize(codes, scales, zeros, self.dtype)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """See :class:`AttentionCache`."""
        b, hkv, t, _ = k.shape
        start = self.lengths[layer]
        if b != self.batch or hkv != self.config.num_key_value_heads:
            raise InputError(
                f"cache holds batch {self.batch} with {self.config.num_key_value_heads} KV heads, "
                f"found k {tuple(k.shape)}"
            )
        if start + t > self.max_len:
            raise InputError(f"DenseKVCache of max_len {self.max_len} holds {start} tokens and cannot take {t} more")
        new = [self._encode(k), self._encode(v)]
        if self._store[layer] is None:
            self._store[layer] = [
                tuple(torch.empty((b, hkv, self.max_len, *p.shape[3:]), dtype=p.dtype, device=p.device) for p in parts)
                for parts in new
            ]
        store = self._store[layer]
        assert store is not None
        for bufs, parts in zip(store, new, strict=True):
            for buf, p in zip(bufs, parts, strict=True):
                buf[:, :, start : start + t] = p
        self.lengths[layer] = start + t
        k_all = self._decode(tuple(buf[:, :, : start + t] for buf in store[0]))  # [B, Hkv, S, D]
        v_all = self._decode(tuple(buf[:, :, : start + t] for buf in store[1]))  # [B, Hkv, S, D]
        return causal_attention(q, k_all, v_all, context_len=start)


@torch.no_grad()
def generate_greedy(
    model: LlamaForCausalLM,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    eos: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Greedy continuation ``[B, T + n]`` of ``input_ids`` ``[B, T]`` through a :class:`DenseKVCache`.

    Generation stops once every sequence has produced an ``eos`` token (later slots of a finished sequence are
    filled with its first eos id), or after ``max_new_tokens``.
    """
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, found {max_new_tokens}")
    if max_new_tokens == 0:
        return input_ids.clone()
    eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
    b, t = input_ids.shape
    if t + max_new_tokens > model.config.max_position_embeddings:
        raise InputError(
            f"prompt of {t} tokens + {max_new_tokens} new ones exceeds the model's context "
            f"{model.config.max_position_embeddings}"
        )
    param = next(model.parameters())
    cache = DenseKVCache(model.config, b, t + max_new_tokens, param.dtype, model.kv_quant, input_ids.device)
    out = [input_ids]
    done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    logits = model(input_ids, cache=cache)[:, -1]  # [B, V]
    for step in range(max_new_tokens):
        nxt = logits.argmax(dim=-1)  # [B]
        if eos_ids:
            nxt = torch.where(done, eos_ids[0], nxt)
            done |= torch.isin(nxt, torch.tensor(eos_ids, device=nxt.device))
        out.append(nxt.unsqueeze(1))
        if (eos_ids and bool(done.all())) or step == max_new_tokens - 1:
            break
        logits = model(nxt.unsqueeze(1), cache=cache)[:, -1]
    return torch.cat(out, dim=1)
