"""Paged-KV serving engine of QServe (Lin et al., arXiv 2405.04532, Sec. 5): paged INT4 KV cache, in-flight
batching with recompute preemption, streaming, and seeded greedy / temperature / top-p sampling."""

from qserve.engine.engine import Engine, RequestOutput
from qserve.engine.kv_cache import BlockAllocator, PagedBatch, PagedKVCache, kv_bytes_per_token, pages_for_budget
from qserve.engine.sampling import SamplingParams, sample_next

__all__ = [
    "BlockAllocator",
    "Engine",
    "PagedBatch",
    "PagedKVCache",
    "RequestOutput",
    "SamplingParams",
    "kv_bytes_per_token",
    "pages_for_budget",
    "sample_next",
]
