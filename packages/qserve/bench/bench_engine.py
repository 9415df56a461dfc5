"""Engine throughput: in-flight batching against static batching of the same requests, same model, same cache.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 5. Both modes run the same :class:`qserve.engine.Engine` code over the same paged KV4 cache and page count;
the only difference is batching: in-flight batching refills the batch every step; static batching admits the
next batch only when the whole previous batch has finished, with a fixed batch shape (finished rows keep running
as padding, as FasterTransformer / TensorRT-LLM without in-flight batching); "static_compact" is a kinder baseline
that drops finished rows from the batch. Mixed prompt lengths and long-tailed output lengths, as in chat traces. Greedy outputs of the two
modes are compared token for token. Prints one JSON object (``--json`` writes it to a file too).

    python bench/bench_engine.py                     # random "small" Llama-layout model
    python bench/bench_engine.py --model path/to/hf  # a trained model folder
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from pathlib import Path

import torch
from _bench_common import emit_report

from qserve.config import LlamaConfig
from qserve.engine import Engine, SamplingParams
from qserve.model import LlamaForCausalLM
from qserve.quant.kv import KVQuantizer

SMALL = LlamaConfig(
    vocab_size=2048,
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    bos_token_id=1,
    eos_token_id=2,
)


def make_requests(n: int, vocab: int, seed: int) -> list[tuple[list[int], SamplingParams]]:
    """Prompts of 8-128 tokens; output lengths long-tailed (exponential, mean ~40, clipped to [4, 256])."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(8, 128))]
        out_len = int(min(256, max(4, rng.expovariate(1 / 40))))
        reqs.append((prompt, SamplingParams(max_tokens=out_len, ignore_eos=True)))
    return reqs


def run(
    model: LlamaForCausalLM, reqs: list[tuple[list[int], SamplingParams]], mode: str, args: argparse.Namespace
) -> dict:
    eng = Engine(
        model,
        page_size=args.page_size,
        num_pages=args.num_pages,
        max_num_seqs=args.max_num_seqs,
        mode=mode,  # type: ignore[arg-type]
    )
    t0 = time.perf_counter()
    outs = eng.generate([p for p, _ in reqs], [sp for _, sp in reqs])
    dt = time.perf_counter() - t0
    generated = sum(len(o.token_ids) for o in outs)
    return {
        "mode": mode,
        "seconds": dt,
        "generated_tokens": generated,
        "tokens_per_s": generated / dt,
        "steps": eng.stats["steps"],
        "decode_tokens": eng.stats["decode_tokens"],
        "prefill_tokens": eng.stats["prefill_tokens"],
        "preemptions": eng.num_preemptions,
        "forward_tokens": eng.stats["forward_tokens"],
        "mean_decode_batch": eng.stats["decode_tokens"] / max(1, eng.stats["steps"]),
        "_outputs": [o.token_ids for o in outs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="HF-layout model folder (default: random small model)")
    ap.add_argument("--num-requests", type=int, default=96)
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--num-pages", type=int, default=2048)
    ap.add_argument("--kv-bits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs per mode; the fastest counts")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.model is not None:
        from qserve.loading import load_model

        model = load_model(args.model)
    else:
        model = LlamaForCausalLM(SMALL).eval()
    if args.kv_bits != 16:
        model.kv_quant = KVQuantizer(args.kv_bits)
    reqs = make_requests(args.num_requests, model.config.vocab_size, args.seed)
    run(model, reqs[:4], "inflight", args)  # warm-up
    # Interleaved repeats, best time of each: the machine may be shared, and noise hits all modes alike.
    results: dict[str, dict] = {}
    for _ in range(args.repeats):
        for mode in ("static", "static_compact", "inflight"):
            r = run(model, reqs, mode, args)
            if mode not in results or r["seconds"] < results[mode]["seconds"]:
                results[mode] = r
    outs = [r.pop("_outputs") for r in results.values()]
    same = all(o == outs[-1] for o in outs)
    report = {
        "benchmark": "engine in-flight vs static batching",
        "model": str(args.model) if args.model else "random small (4 layers, 256 hidden, GQA 8/4, vocab 2048)",
        "kv_bits": args.kv_bits,
        "num_requests": args.num_requests,
        "max_num_seqs": args.max_num_seqs,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "greedy_outputs_identical": same,
        **results,
        "speedup_tokens_per_s": results["inflight"]["tokens_per_s"] / results["static"]["tokens_per_s"],
        "speedup_vs_static_compact": results["inflight"]["tokens_per_s"] / results["static_compact"]["tokens_per_s"],
    }
    emit_report(report, args.json)


if __name__ == "__main__":
    main()
