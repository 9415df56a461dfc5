"""KV-cache bytes per token: INT4 pages (codes + fp16 scale + fp16 zero per token and head) against fp16.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 4.2 / 5. The figures are measured on allocated :class:`qserve.engine.PagedKVCache` tensors (their
``nbytes`` summed over every layer, divided by the token capacity) for one layer-sized slice of each real
config (the per-token figure scales with the layer count), and checked against :func:`kv_bytes_per_token`.
Also reports how many pages and tokens a 16 GiB budget buys. Prints JSON (``--json`` writes it to a file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _bench_common import emit_report

from qserve.config import LlamaConfig
from qserve.engine import PagedKVCache, kv_bytes_per_token, pages_for_budget

CONFIGS = {
    "Llama-2-7B": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "Llama-2-70B": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
    "Llama-3-8B": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "Mistral-7B": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
}


def measured_bytes_per_token(config: LlamaConfig, kv_bits: int, page_size: int = 16, num_pages: int = 4) -> float:
    """Allocate one layer's pages for real and count their bytes per token, times the layer count."""
    import torch

    one_layer = config.model_copy(update={"num_hidden_layers": 1})
    cache = PagedKVCache(one_layer, kv_bits, page_size, num_pages, dtype=torch.float16)
    layer = cache.layers[0]
    tensors = [layer.k_codes, layer.v_codes, layer.k_scales, layer.k_zeros, layer.v_scales, layer.v_zeros]
    total = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return total / (page_size * num_pages) * config.num_hidden_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget-gib", type=float, default=16.0)
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    budget = int(args.budget_gib * (1 << 30))
    rows = {}
    for name, fields in CONFIGS.items():
        cfg = LlamaConfig(**fields)
        row: dict[str, float | int] = {}
        for bits in (16, 8, 4):
            measured = measured_bytes_per_token(cfg, bits, args.page_size)
            formula = kv_bytes_per_token(cfg, bits)
            if measured != formula:
                raise RuntimeError(f"{name} KV{bits}: allocated {measured} bytes/token, formula {formula}")
            row[f"kv{bits}_bytes_per_token"] = formula
            row[f"kv{bits}_tokens_in_budget"] = pages_for_budget(cfg, bits, args.page_size, budget) * args.page_size
        row["fp16_over_int4"] = row["kv16_bytes_per_token"] / row["kv4_bytes_per_token"]
        row["fp16_over_int8"] = row["kv16_bytes_per_token"] / row["kv8_bytes_per_token"]
        rows[name] = row
    report = {
        "benchmark": "KV cache bytes per token (all layers, K and V, scales and zeros included)",
        "page_size": args.page_size,
        "budget_gib": args.budget_gib,
        "configs": rows,
        "min_fp16_over_int4": min(r["fp16_over_int4"] for r in rows.values()),
    }
    emit_report(report, args.json)


if __name__ == "__main__":
    main()
