"""GPU check of the paged-KV engine with the Triton decode-attention kernel (QServe, Lin et al., arXiv 2405.04532,
Sec. 5): greedy outputs of 24 mixed requests under a page budget that forces preemption, with the kernel and with
the engine's PyTorch gather path, against decoding each prompt token by token with the model's own no-cache
forward. Exit 1 if either path disagrees on more than one request (KV4 rounding can flip a near-tie once in a
while: the no-cache path and the cache see the same dequantized values, but not bit-identical sums).

    python packages/qserve/bench/gpu_check_engine.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from qserve.config import LlamaConfig
from qserve.engine import Engine, SamplingParams
from qserve.model import LlamaForCausalLM
from qserve.quant.kv import KVQuantizer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=12)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("needs CUDA (or --device cpu, which checks the gather path only)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    cfg = LlamaConfig.from_name("tiny")
    model = LlamaForCausalLM(cfg).eval().to(args.device)
    model.kv_quant = KVQuantizer(4)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 40, (args.requests,), generator=g).tolist()
    prompts = [torch.randint(3, cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]
    sp = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    want = []
    with torch.no_grad():
        for prompt in prompts:
            ids = list(prompt)
            for _ in range(args.max_tokens):
                ids.append(int(model(torch.tensor([ids], device=args.device))[0, -1].argmax()))
            want.append(tuple(ids[len(prompt) :]))
    worst = 0
    for name, attention in (("kernel (auto)", "auto"), ("gather", None)):
        eng = Engine(model, num_pages=40, page_size=4, decode_attention=attention)
        t0 = time.perf_counter()
        outs = eng.generate(prompts, sp)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        bad = sum(o.token_ids != w for o, w in zip(outs, want, strict=True))
        worst = max(worst, bad)
        module = getattr(eng.decode_attention, "__module__", None)
        print(
            f"{name}: decode attention {module}, {time.perf_counter() - t0:.2f} s, {eng.num_preemptions} preemptions, "
            f"pages returned {eng.cache.allocator.num_free == eng.cache.num_pages}, "
            f"greedy equal to the no-cache model on {len(prompts) - bad}/{len(prompts)}"
        )
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
