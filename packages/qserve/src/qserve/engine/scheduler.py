"""Request bookkeeping and the scheduler: admission, in-flight batching and preemption by recomputation.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 5 (the serving system, vLLM-style). Each step the scheduler first makes room for one decode token of every
running sequence; when pages run out it preempts the youngest running sequence (frees all its pages and puts it
back at the front of the queue with prompt + generated tokens, to be recomputed by a prefill). Then, in in-flight
mode, it admits waiting sequences while pages and the token budget allow; in static mode it admits a new batch
only when the previous one has finished.
"""

from __future__ import annotations

import bisect
import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from qserve.engine.kv_cache import BlockAllocator
from qserve.engine.sampling import SamplingParams
from qserve.errors import ConfigError

__all__ = ["FinishReason", "Schedule", "Scheduler", "SeqStatus", "Sequence"]

FinishReason = Literal["stop", "length", "cancelled"]


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request: its tokens, pages and streaming state."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    arrival: int
    output_ids: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    num_cached: int = 0  # tokens whose K/V are in the pages
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: FinishReason | None = None
    text: str = ""  # decoded output (cut before a stop string)
    num_emitted_tokens: int = 0
    num_emitted_chars: int = 0
    num_preemptions: int = 0
    padding: bool = False  # static batching: a finished row that still runs until its batch ends

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


@dataclass
class Schedule:
    """What one engine step runs: prefills (all of a sequence's tokens) and one decode token per sequence."""

    prefill: list[Sequence]
    decode: list[Sequence]
    preempted: list[Sequence]


class Scheduler:
    """FIFO admission, in-flight (``"inflight"``) or static (``"static"``) batching, recompute preemption."""

    def __init__(
        self,
        allocator: BlockAllocator,
        page_size: int,
        max_num_seqs: int,
        max_batched_tokens: int,
        mode: Literal["inflight", "static", "static_compact"] = "inflight",
    ) -> None:
        if max_num_seqs < 1:
            raise ConfigError(f"max_num_seqs must be >= 1, found {max_num_seqs}")
        if max_batched_tokens < 1:
            raise ConfigError(f"max_batched_tokens must be >= 1, found {max_batched_tokens}")
        if mode not in ("inflight", "static", "static_compact"):
            raise ConfigError(f"batching mode must be 'inflight', 'static' or 'static_compact', found {mode!r}")
        self.allocator = allocator
        self.page_size = page_size
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.mode = mode
        self.keep_finished_rows = mode == "static"
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in arrival order: the last one is the youngest
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or any(not s.padding for s in self.running)

    def retire_padding(self) -> None:
        """End a static batch: once only padding rows are left, free them."""
        if self.running and all(s.padding for s in self.running):
            for seq in list(self.running):
                self.release(seq)

    def pages_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def release(self, seq: Sequence) -> None:
        """Free a sequence's pages and drop it from the queues (finished or cancelled)."""
        if seq.pages:
            self.allocator.free(seq.pages)
        seq.pages = []
        seq.num_cached = 0
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def _preempt(self, seq: Sequence) -> None:
        # Recomputation: drop the K/V; the next prefill feeds prompt + generated tokens again.
        self.release(seq)
        seq.status = SeqStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> Schedule:
        preempted: list[Sequence] = []
        decode: list[Sequence] = []
        # Room for one new token per running sequence, oldest first; the youngest gives way.
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            if seq.num_cached < len(seq.pages) * self.page_size:
                decode.append(seq)
                i += 1
                continue
            if self.allocator.num_free > 0:
                seq.pages += self.allocator.allocate(1)
                decode.append(seq)
                i += 1
                continue
            pads = [j for j, s in enumerate(self.running) if s.padding]
            if pads:  # a padding row (static batching) gives way first, and is simply dropped
                j = pads[-1]
                victim = self.running[j]
                self.release(victim)
                if j < i:
                    i -= 1  # it had its page already; `seq` moved one place down
                continue
            victim = self.running[-1]
            self._preempt(victim)
            preempted.append(victim)
            if victim is not seq:
                continue  # retry `seq` with the freed pages
            # `seq` itself was the youngest: it is re-queued, everything before it has its page.
        self.retire_padding()
        decode = [s for s in decode if s in self.running]

        prefill: list[Sequence] = []
        if self.mode == "inflight" or not self.running:
            prefill = self._admit(recently_preempted=bool(preempted))
        return Schedule(prefill=prefill, decode=decode, preempted=preempted)

    def _admit(self, recently_preempted: bool) -> list[Sequence]:
        admitted: list[Sequence] = []
        if recently_preempted:
            return admitted  # pages are short right now; admitting would only thrash
        longest = 0
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            n = seq.num_tokens
            # The padded batch costs max(T) * B tokens; one prompt longer than the budget still runs alone.
            cost = max(longest, n) * (len(admitted) + 1)
            if admitted and cost > self.max_batched_tokens:
                break
            need = self.pages_needed(n)
            # Keep a margin for the running sequences' next pages (about one per page_size of them).
            margin = -(-len(self.running) // self.page_size)
            fits = need + margin <= self.allocator.num_free or (not self.running and need <= self.allocator.num_free)
            if not fits:
                break
            self.waiting.popleft()
            seq.pages = self.allocator.allocate(need)
            seq.num_cached = 0
            seq.status = SeqStatus.RUNNING
            # Keep `running` in arrival order so the youngest (the preemption victim) is last.
            bisect.insort(self.running, seq, key=lambda s: s.arrival)
            admitted.append(seq)
            longest = max(longest, n)
        return admitted
