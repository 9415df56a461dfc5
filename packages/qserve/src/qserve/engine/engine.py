"""The serving engine: requests in, streamed tokens out, over a paged (INT4) KV cache with in-flight batching.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 5 (the QServe system; the API follows vLLM's ``LLMEngine``: ``add_request`` / ``step``). Each :meth:`Engine.step`
runs the prefill of newly admitted requests (right-padded into one batch) and one batched decode step (``T = 1``)
for every running request, both through :class:`~qserve.engine.kv_cache.PagedBatch`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from qserve.config import LlamaConfig
from qserve.engine.kv_cache import PagedKVCache, pages_for_budget
from qserve.engine.sampling import SamplingParams, sample_next
from qserve.engine.scheduler import FinishReason, Scheduler, SeqStatus, Sequence
from qserve.errors import ConfigError, InputError
from qserve.model import LlamaForCausalLM

__all__ = ["Engine", "RequestOutput"]

_DEFAULT_BUDGET = 1 << 30  # 1 GiB of KV pages when neither a budget nor a page count is given


class Tokenizer(Protocol):
    """``encode(text)`` gives ids (or an object with ``.ids``, as ``tokenizers.Tokenizer``); ``decode(ids)`` text."""

    def encode(self, text: str) -> Any: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class RequestOutput:
    """What one step produced for one request: the new tokens/text and everything so far."""

    request_id: str
    new_token_ids: tuple[int, ...]
    new_text: str
    token_ids: tuple[int, ...]
    text: str
    finished: bool
    finish_reason: FinishReason | None


def _resolve_decode_attention(device: torch.device) -> Callable[..., torch.Tensor] | None:
    """The kernels' paged decode attention (Triton) on a GPU; None elsewhere, where the cache's own vectorised
    gather path is faster than the per-sequence PyTorch reference the dispatcher would pick."""
    if device.type != "cuda":
        return None
    try:
        from qserve.kernels import dispatch
    except ImportError:
        return None
    fn = getattr(dispatch, "paged_decode_attention", None)
    return fn if callable(fn) else None


class Engine:
    """Paged-KV serving engine over a :class:`qserve.model.LlamaForCausalLM` (plain or quantized).

    ``kv_bits`` defaults to the model's ``kv_quant.bits`` (16 without one); the page count comes from
    ``num_pages`` or ``memory_budget_bytes`` (not both; 1 GiB of pages if neither). ``mode="static"`` is the
    static-batching baseline: a batch runs, fixed in shape (finished rows keep running as padding), until its last
    request finishes before the next batch is admitted; ``"static_compact"`` drops finished rows.
    """

    def __init__(
        self,
        model: LlamaForCausalLM,
        tokenizer: Tokenizer | None = None,
        *,
        kv_bits: int | None = None,
        page_size: int = 16,
        memory_budget_bytes: int | None = None,
        num_pages: int | None = None,
        max_num_seqs: int = 64,
        max_batched_tokens: int = 4096,
        mode: Literal["inflight", "static", "static_compact"] = "inflight",
        decode_attention: Callable[..., torch.Tensor] | Literal["auto"] | None = "auto",
    ) -> None:
        config = model.config
        self.config: LlamaConfig = config
        self.model = model
        self.tokenizer = tokenizer
        if kv_bits is None:
            kv_quant = getattr(model, "kv_quant", None)
            kv_bits = int(getattr(kv_quant, "bits", 16)) if kv_quant is not None else 16
        param = next(model.parameters())
        self.device = param.device
        # A KV16 cache keeps the model's own float dtype, so cached and freshly computed K/V are the same values.
        self.dtype = param.dtype if param.dtype.is_floating_point else torch.float16
        if num_pages is not None and memory_budget_bytes is not None:
            raise ConfigError(
                f"give num_pages or memory_budget_bytes, not both (found {num_pages} and {memory_budget_bytes})"
            )
        if num_pages is None:
            dtype_bytes = torch.finfo(self.dtype).bits // 8
            budget = _DEFAULT_BUDGET if memory_budget_bytes is None else memory_budget_bytes
            num_pages = pages_for_budget(config, kv_bits, page_size, budget, dtype_bytes)
            if memory_budget_bytes is None:
                full = -(-config.max_position_embeddings // page_size) * max_num_seqs
                num_pages = min(num_pages, full)
            if num_pages < 1:
                raise ConfigError(f"a memory budget of {budget} bytes holds no page of {page_size} tokens")
        self.max_context = config.max_position_embeddings
        self.cache = PagedKVCache(config, kv_bits, page_size, num_pages, self.device, self.dtype)
        self.scheduler = Scheduler(self.cache.allocator, page_size, max_num_seqs, max_batched_tokens, mode)
        self.decode_attention = (
            _resolve_decode_attention(self.device) if decode_attention == "auto" else decode_attention
        )
        eos = getattr(config, "eos_token_id", None)
        self._eos: frozenset[int] = frozenset(() if eos is None else (eos,) if isinstance(eos, int) else tuple(eos))
        self._seqs: dict[str, Sequence] = {}
        self._pending: list[RequestOutput] = []  # cancellations reported by the next step
        self._arrivals = itertools.count()
        self._ids = itertools.count()
        self._seed_gen = torch.Generator().manual_seed(0x5EED)
        self.stats = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0, "forward_tokens": 0}

    # ----------------------------------------------------------------------------------------------- requests

    @property
    def num_preemptions(self) -> int:
        return self.scheduler.num_preemptions

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._pending)

    def _encode(self, prompt: str | Seq[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InputError("a text prompt needs a tokenizer; pass token ids or give the Engine a tokenizer")
            enc = self.tokenizer.encode(prompt)
            return [int(i) for i in getattr(enc, "ids", enc)]
        return [int(i) for i in prompt]

    def _decode_text(self, ids: list[int]) -> str:
        return "" if self.tokenizer is None else self.tokenizer.decode(ids)

    def add_request(
        self, prompt: str | Seq[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> str:
        """Queue a request; returns its id. Errors (nothing queued) if it can never run."""
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise InputError(f"params must be a SamplingParams, found {type(params).__name__}")
        ids = self._encode(prompt)
        if not ids:
            raise InputError("the prompt is empty; it needs at least one token")
        v = self.config.vocab_size
        if min(ids) < 0 or max(ids) >= v:
            raise InputError(f"prompt token ids must be in [0, {v}), found [{min(ids)}, {max(ids)}]")
        if len(ids) > self.max_context:
            raise InputError(f"the prompt has {len(ids)} tokens, longer than the maximum context of {self.max_context}")
        if params.stop and self.tokenizer is None:
            raise InputError(f"stop strings {params.stop} need a tokenizer to decode text")
        # The most tokens this request ever holds in the cache (the last sampled token is never fed).
        peak = min(len(ids) + params.max_tokens - 1, self.max_context)
        need = self.scheduler.pages_needed(peak)
        if need > self.cache.num_pages:
            raise InputError(
                f"the request needs up to {peak} cached tokens = {need} pages of {self.cache.page_size}, "
                f"but the KV cache has only {self.cache.num_pages} pages; lower max_tokens or raise the budget"
            )
        rid = f"req-{next(self._ids)}" if request_id is None else str(request_id)
        if rid in self._seqs:
            raise InputError(f"request id {rid!r} is already in use")
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (), generator=self._seed_gen))
        arrival = next(self._arrivals)
        seq = Sequence(request_id=rid, prompt_ids=ids, params=params, seed=seed, arrival=arrival)
        self._seqs[rid] = seq
        self.scheduler.add(seq)
        return rid

    def cancel(self, request_id: str) -> bool:
        """Stop a queued or running request and free its pages; False if it is unknown or already finished."""
        seq = self._seqs.get(request_id)
        if seq is None or seq.status is SeqStatus.FINISHED:
            return False
        self.scheduler.release(seq)
        self._finish(seq, "cancelled")
        self._pending.append(self._output(seq))
        del self._seqs[request_id]
        return True

    # ------------------------------------------------------------------------------------------------ running

    @torch.no_grad()
    def _forward(self, seqs: list[Sequence], tokens: list[list[int]]) -> torch.Tensor:
        """Run the model over the new ``tokens`` of each sequence; returns the last new position's logits [B, V]."""
        n_new = [len(t) for t in tokens]
        t_max = max(n_new)
        ids = torch.zeros((len(seqs), t_max), dtype=torch.long)
        pos = torch.zeros((len(seqs), t_max), dtype=torch.long)
        for b, (seq, toks) in enumerate(zip(seqs, tokens, strict=True)):
            ids[b, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            # Padding positions are clamped into the table range; their outputs are dropped.
            pos[b] = torch.arange(seq.num_cached, seq.num_cached + t_max).clamp_(max=self.max_context - 1)
        batch = self.cache.batch(
            [s.pages for s in seqs], [s.num_cached for s in seqs], n_new, decode_attention=self.decode_attention
        )
        last = torch.tensor([n - 1 for n in n_new], device=self.device)
        logits = self.model(ids.to(self.device), pos.to(self.device), cache=batch, logits_at=last)  # [B, 1, V]
        self.stats["forward_tokens"] += len(seqs) * t_max
        return logits[:, 0]  # [B, V]

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason

    def _append(self, seq: Sequence, token: int) -> None:
        """Add a sampled token and decide whether the request is done."""
        seq.output_ids.append(token)
        p = seq.params
        if self.tokenizer is not None:
            text = self._decode_text(seq.output_ids)
            if p.stop:
                cut = min((i for i in (text.find(s) for s in p.stop) if i >= 0), default=-1)
                if cut >= 0:
                    seq.text = text[:cut]
                    self._finish(seq, "stop")
                    return
            seq.text = text
        if token in p.stop_token_ids or (not p.ignore_eos and token in self._eos):
            self._finish(seq, "stop")
        elif len(seq.output_ids) >= p.max_tokens or seq.num_tokens > self.max_context:
            self._finish(seq, "length")

    def _safe_text_len(self, seq: Sequence) -> int:
        """Length of the text that can be streamed: hold back a possible stop-string prefix or a partial char."""
        text = seq.text
        if seq.status is SeqStatus.FINISHED:
            return len(text)
        hold = 0
        for s in seq.params.stop:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        end = len(text) - hold
        while end > 0 and text[end - 1] == "\ufffd":  # an incomplete UTF-8 sequence decodes to U+FFFD
            end -= 1
        return max(end, seq.num_emitted_chars)

    def _output(self, seq: Sequence) -> RequestOutput:
        new_ids = tuple(seq.output_ids[seq.num_emitted_tokens :])
        end = self._safe_text_len(seq)
        new_text = seq.text[seq.num_emitted_chars : end]
        seq.num_emitted_tokens = len(seq.output_ids)
        seq.num_emitted_chars = end
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=new_ids,
            new_text=new_text,
            token_ids=tuple(seq.output_ids),
            text=seq.text[:end],
            finished=seq.status is SeqStatus.FINISHED,
            finish_reason=seq.finish_reason,
        )

    def step(self) -> list[RequestOutput]:
        """One scheduling step (prefill of admitted requests + one decode token for the running ones)."""
        outputs, self._pending = self._pending, []
        sched = self.scheduler.schedule()
        groups: list[tuple[list[Sequence], list[list[int]]]] = []
        if sched.prefill:
            groups.append((sched.prefill, [s.all_ids for s in sched.prefill]))
            self.stats["prefill_tokens"] += sum(s.num_tokens for s in sched.prefill)
        if sched.decode:
            groups.append((sched.decode, [[s.all_ids[-1]] for s in sched.decode]))
            self.stats["decode_tokens"] += sum(not s.padding for s in sched.decode)
        touched: list[Sequence] = []
        for seqs, tokens in groups:
            logits = self._forward(seqs, tokens)
            for b, (seq, toks) in enumerate(zip(seqs, tokens, strict=True)):
                seq.num_cached += len(toks)
                if seq.padding:
                    if seq.num_cached >= self.max_context:
                        self.scheduler.release(seq)
                    continue
                self._append(seq, sample_next(logits[b], seq.params, seq.seed, len(seq.output_ids)))
                touched.append(seq)
        for seq in touched:
            if seq.status is SeqStatus.FINISHED:
                if self.scheduler.keep_finished_rows:
                    seq.padding = True  # static batching: the row stays in the batch, its output is final
                else:
                    self.scheduler.release(seq)
            out = self._output(seq)
            if out.new_token_ids or out.new_text or out.finished:
                outputs.append(out)
        for seq in touched:
            if seq.status is SeqStatus.FINISHED:
                del self._seqs[seq.request_id]
        self.scheduler.retire_padding()
        self.stats["steps"] += 1
        return outputs

    def stream(
        self, prompts: Iterable[str | Seq[int]] = (), params: SamplingParams | Seq[SamplingParams] | None = None
    ) -> Iterator[RequestOutput]:
        """Queue ``prompts`` (if any), then yield every request's outputs step by step until all are done."""
        self._add_all(list(prompts), params)
        while self.has_unfinished():
            yield from self.step()

    def _add_all(self, prompts: list[str | Seq[int]], params: SamplingParams | Seq[SamplingParams] | None) -> list[str]:
        if params is None or isinstance(params, SamplingParams):
            plist = [params] * len(prompts)
        else:
            plist = list(params)
            if len(plist) != len(prompts):
                raise InputError(f"got {len(prompts)} prompts but {len(plist)} SamplingParams")
        return [self.add_request(p, sp) for p, sp in zip(prompts, plist, strict=True)]

    def generate(
        self, prompts: Seq[str | Seq[int]], params: SamplingParams | Seq[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """Run ``prompts`` to completion (with any requests already queued); final outputs in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            raise InputError("generate takes a list of prompts (each a string or a list of token ids)")
        ids = self._add_all(list(prompts), params)
        wanted = set(ids)
        final: dict[str, RequestOutput] = {}
        while wanted - final.keys():
            for out in self.step():
                if out.finished and out.request_id in wanted:
                    final[out.request_id] = out
        return [final[i] for i in ids]
