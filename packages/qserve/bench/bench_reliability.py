"""Reliability of the paged-KV engine: 500 concurrent requests under a page budget that holds 10% of them.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 5 (the serving system). All requests are queued at once into an :class:`qserve.engine.Engine` whose KV4 page
pool holds about a tenth of their peak demand, so admission waits for pages and running requests get preempted
(recomputed later). Checks: every request completes, none is lost or reported twice, the greedy output of each
equals running it alone in an empty engine, pages in use never exceed the pool, and every page is returned.
Prints a summary and writes JSON (``--out``). The unit test ``tests/test_engine_engine.py`` runs the same checks on
80 requests; this is the full-size run.

    OMP_NUM_THREADS=2 python packages/qserve/bench/bench_reliability.py --out result.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from qserve.config import LlamaConfig
from qserve.engine import Engine, RequestOutput, SamplingParams
from qserve.model import LlamaForCausalLM
from qserve.quant.kv import KVQuantizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--fraction", type=float, default=0.10, help="share of the requests' peak pages the pool holds")
    p.add_argument("--page-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    cfg = LlamaConfig.from_name("tiny")
    model = LlamaForCausalLM(cfg).eval()
    model.kv_quant = KVQuantizer(4)
    g = torch.Generator().manual_seed(args.seed)
    reqs: list[tuple[list[int], SamplingParams]] = []
    for _ in range(args.requests):
        plen = int(torch.randint(2, 40, (1,), generator=g))
        olen = int(torch.randint(1, 40, (1,), generator=g))
        prompt = torch.randint(3, cfg.vocab_size, (plen,), generator=g).tolist()
        reqs.append((prompt, SamplingParams(max_tokens=olen, ignore_eos=True)))
    peak_pages = [-(-(len(p) + sp.max_tokens) // args.page_size) for p, sp in reqs]
    num_pages = max(max(peak_pages), int(args.fraction * sum(peak_pages)))
    eng = Engine(model, num_pages=num_pages, page_size=args.page_size, max_num_seqs=args.requests)
    ids = [eng.add_request(p, sp) for p, sp in reqs]
    finals: dict[str, RequestOutput] = {}
    duplicates = 0
    max_running = max_used = 0
    t0 = time.perf_counter()
    while eng.has_unfinished():
        for out in eng.step():
            if out.finished:
                duplicates += out.request_id in finals
                finals[out.request_id] = out
        max_running = max(max_running, len(eng.scheduler.running))
        max_used = max(max_used, num_pages - eng.cache.allocator.num_free)
    seconds = time.perf_counter() - t0
    lost = sorted(set(ids) - set(finals))
    # The same requests one at a time, each in an empty engine with the same page size.
    mismatches = 0
    t1 = time.perf_counter()
    for rid, (prompt, sp) in zip(ids, reqs, strict=True):
        alone = Engine(model, num_pages=max(peak_pages), page_size=args.page_size, max_num_seqs=1)
        (want,) = alone.generate([prompt], sp)
        mismatches += rid in finals and finals[rid].token_ids != want.token_ids
    result = {
        "command": "python packages/qserve/bench/bench_reliability.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine()},
        "requests": args.requests,
        "pages": num_pages,
        "page_size": args.page_size,
        "pages_if_all_ran_at_once": sum(peak_pages),
        "max_running": max_running,
        "max_pages_used": max_used,
        "preemptions": eng.num_preemptions,
        "completed": len(finals),
        "lost": len(lost),
        "duplicate_final_outputs": duplicates,
        "greedy_mismatches_vs_alone": mismatches,
        "pages_returned": eng.cache.allocator.num_free == num_pages,
        "engine_seconds": seconds,
        "alone_seconds": time.perf_counter() - t1,
        "ok": not lost and not duplicates and not mismatches and eng.cache.allocator.num_free == num_pages,
        "seconds": time.perf_counter() - t_start,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
