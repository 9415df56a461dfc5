"""Benchmark SVDQuant's fused INT4 W4A4 + low-rank kernels against a torch bf16 matmul (Li et al., ICLR 2025,
Sec. 4.3 and Sec. 5.2 "latency"). GPU only.

Times (CUDA events, warmup, median of --iters) at M=4096 and M=16 with N=K=3072 by default:
``bf16``: ``x @ W^T`` in bf16; ``w4a4``: the full layer (quantize kernel + GEMM kernel) with rank R;
``w4a4_r0``: the same without the branch (low-rank overhead = w4a4 / w4a4_r0 - 1); ``gemm``: the GEMM kernel
alone; ``gemm_r0``: the GEMM kernel without the branch (the GEMM's own low-rank overhead). Before timing it checks
the kernels against the PyTorch reference at a small shape (``--check-only`` runs only that check, on CPU too under
``TRITON_INTERPRET=1``). ``--sweep`` first times every launch shape of a candidate list for both kernels at each M
and reports the best (how the defaults of ``pick_gemm_config`` were chosen); the main timing then uses the best.
The GEMM's packed unpacking (``GemmConfig(packed_unpack=True)``, inline PTX) is checked on its own and, if right,
timed at the same launch shape next to the byte-wise GEMM (``gemm_packed_ms``, ``packed_unpack_speedup``).

    python packages/svdquant/bench/bench_gemm.py --json out.json [--sweep]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, nargs="+", default=[4096, 16], help="token counts M")
    p.add_argument("--n", type=int, default=3072)
    p.add_argument("--k", type=int, default=3072)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--json", type=str, default=None, help="write the results to this file")
    p.add_argument("--check-only", action="store_true", help="only compare the kernels with the reference")
    p.add_argument("--sweep", action="store_true", help="time candidate launch shapes and use the best")
    p.add_argument("--eager", action="store_true", help="time eager calls (launch overhead included), not graphs")
    return p.parse_args(argv)


def check(device: str, packed: bool = False) -> float:
    """Max relative error of the fused layer against the reference at a small odd shape; exact-code check. With
    ``packed``, the GEMM's launch shapes run with packed unpacking (inline PTX) instead."""
    from dataclasses import replace

    from svdquant.kernels.gemm_w4a4 import gemm_w4a4, gemm_w4a4_ref, pick_gemm_config
    from svdquant.kernels.quantize_act import quantize_act_fused, quantize_act_fused_ref

    gen = torch.Generator().manual_seed(0)
    m, k, n, r = 37, 256, 72, 32
    x = torch.randn(m, k, generator=gen).bfloat16().to(device)
    smooth = (torch.rand(k, generator=gen) + 0.5).bfloat16().to(device)
    pd = (torch.randn(k, r, generator=gen) / 16).bfloat16().to(device)
    from svdquant.formats import quantize_weight

    qw = quantize_weight(torch.randn(n, k, generator=gen).bfloat16().to(device), "int4")
    pu = (torch.randn(n, r, generator=gen) / 4).bfloat16().to(device)
    bias = torch.randn(n, generator=gen).bfloat16().to(device)
    got = quantize_act_fused(x, smooth, pd)
    want = quantize_act_fused_ref(x, smooth, pd)
    if not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])):
        raise SystemExit("FAIL: the quantize kernel's codes or scales differ from the reference")
    y_ref = gemm_w4a4_ref(*want[:2], qw.qweight, qw.wscales, want[2], pu, bias).float()
    err = 0.0
    for cfg in [None, *_gemm_candidates(m)]:
        if cfg is not None and (k // 64) % cfg.split_k:
            continue
        if packed:
            cfg = replace(cfg if cfg is not None else pick_gemm_config(m, n, k, 64), packed_unpack=True)
        y = gemm_w4a4(*got[:2], qw.qweight, qw.wscales, want[2], pu, bias, config=cfg).float()
        err = max(err, float((y - y_ref).abs().max() / y_ref.abs().max()))
    return err


def _gemm_candidates(m: int) -> list[object]:
    from svdquant.kernels.gemm_w4a4 import GemmConfig as C

    if m <= 64:
        bm = max(16, 1 << (m - 1).bit_length())
        return [
            C(block_m=bm, block_n=bn, swap=True, split_k=sk, num_warps=w, num_stages=st)
            for bn in (32, 64, 128)
            for sk in (1, 4, 8, 16)
            for (w, st) in ((4, 4),)
        ] + [C(block_m=bm, block_n=64, swap=True, split_k=8, num_warps=w, num_stages=st) for w, st in ((2, 3), (4, 6))]
    return [
        C(block_m=128, block_n=128, num_warps=8, num_stages=3),
        C(block_m=128, block_n=128, num_warps=4, num_stages=3),
        C(block_m=128, block_n=128, num_warps=8, num_stages=4),
        C(block_m=128, block_n=256, num_warps=8, num_stages=3),
        C(block_m=256, block_n=128, num_warps=8, num_stages=3),
        C(block_m=64, block_n=128, num_warps=4, num_stages=4),
        C(block_m=128, block_n=64, num_warps=4, num_stages=4),
        C(block_m=128, block_n=128, swap=True, num_warps=8, num_stages=3),
        C(block_m=128, block_n=128, swap=True, num_warps=4, num_stages=4),
        C(block_m=128, block_n=256, swap=True, num_warps=8, num_stages=3),
        C(block_m=256, block_n=128, swap=True, num_warps=8, num_stages=3),
        C(block_m=64, block_n=128, swap=True, num_warps=4, num_stages=4),
    ]


def _quant_candidates(m: int) -> list[dict[str, int]]:
    out: list[dict[str, int]] = [{}]
    for bm in (16, 32, 64):
        for bk in (128, 256):
            for w in (4, 8):
                out.append({"block_m": bm, "block_k": bk, "num_warps": w})
    if m <= 64:
        out += [{"block_m": 16, "block_k": 64, "split_k": s, "num_warps": 4} for s in (8, 16, 48)]
    return out


def graph_ms(fn: Callable[[], object], iters: int) -> float:
    """Median per-call time of ``fn`` replayed from a CUDA graph (10 calls per replay): the GPU time without the
    Python and launch overhead, which dominates small kernels when they are called eagerly."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(10):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(max(iters // 10, 3) + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 10)
    return statistics.median(times)


def time_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median CUDA-graph time; with ``--eager`` (module flag) the median of eager calls between CUDA events."""
    if not EAGER:
        return graph_ms(fn, iters)
    return eager_ms(fn, warmup, iters)


EAGER = False


def eager_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench(args: argparse.Namespace) -> dict[str, object]:
    from svdquant.formats import quantize_weight

    dev = "cuda"
    n, k, r = args.n, args.k, args.rank
    gen = torch.Generator(device=dev).manual_seed(0)
    w = torch.randn(n, k, device=dev, generator=gen).bfloat16()
    qw = quantize_weight(w, "int4")
    smooth = torch.ones(k, device=dev, dtype=torch.bfloat16)
    bias = torch.randn(n, device=dev, generator=gen).bfloat16()
    branches = {
        "w4a4": (torch.randn(k, r, device=dev).bfloat16() / 64, torch.randn(n, r, device=dev).bfloat16() / 8),
        "w4a4_r0": (torch.zeros(k, 0, device=dev).bfloat16(), torch.zeros(n, 0, device=dev).bfloat16()),
    }
    rows = []
    for m in args.m:
        x = torch.randn(m, k, device=dev, generator=gen).bfloat16()
        rows.append(_bench_one(args, x, w, qw, smooth, bias, branches))
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": rows}


def _best(label: str, fn: Callable[[object], object], cands: list[object], args: argparse.Namespace) -> object:
    timed = []
    for c in cands:
        try:
            timed.append((time_ms(lambda c=c: fn(c), args.warmup, args.iters), c))
        except Exception as e:  # a launch shape the GPU cannot run (shared memory, registers): skip it
            print(f"  {label}: {c} failed: {type(e).__name__}: {str(e)[:120]}")
    timed.sort(key=lambda t: t[0])
    for ms, c in timed[:3]:
        print(f"  {label}: {ms:.4f} ms  {c}")
    return timed[0][1]


def _bench_one(
    args: argparse.Namespace,
    x: torch.Tensor,
    w: torch.Tensor,
    qw: object,
    smooth: torch.Tensor,
    bias: torch.Tensor,
    branches: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, object]:
    from svdquant.kernels.gemm_w4a4 import gemm_w4a4
    from svdquant.kernels.quantize_act import quantize_act_fused

    qweight, wscales = qw.qweight, qw.wscales  # type: ignore[attr-defined]
    (m, k), n, r = x.shape, w.shape[0], branches["w4a4"][0].shape[1]
    row: dict[str, object] = {"M": m, "N": n, "K": k, "R": r}
    pd, pu = branches["w4a4"]
    qkw: dict[str, int] = {}
    gcfg = None
    if args.sweep:
        qkw = _best("quantize", lambda c: quantize_act_fused(x, smooth, pd, **c), list(_quant_candidates(m)), args)
        codes, ascales, lora = quantize_act_fused(x, smooth, pd)
        gcfg = _best(
            "gemm",
            lambda c: gemm_w4a4(codes, ascales, qweight, wscales, lora, pu, bias, config=c),
            [c for c in _gemm_candidates(m) if (k // 64) % c.split_k == 0],  # type: ignore[attr-defined]
            args,
        )
        row["quantize_launch"] = qkw
        row["gemm_config"] = repr(gcfg)
    row["bf16_ms"] = time_ms(lambda: torch.matmul(x, w.T), args.warmup, args.iters)
    row["bf16_eager_ms"] = eager_ms(lambda: torch.matmul(x, w.T), args.warmup, args.iters)
    for name, (pdb, pub) in branches.items():

        def layer(pd: torch.Tensor = pdb, pu: torch.Tensor = pub) -> torch.Tensor:
            codes, ascales, lora = quantize_act_fused(x, smooth, pd, **qkw)
            return gemm_w4a4(codes, ascales, qweight, wscales, lora, pu, bias, config=gcfg)  # type: ignore[arg-type]

        row[f"{name}_ms"] = time_ms(layer, args.warmup, args.iters)
        row[f"{name}_eager_ms"] = eager_ms(layer, args.warmup, args.iters)
    codes, ascales, lora = quantize_act_fused(x, smooth, pd)
    row["gemm_only_ms"] = time_ms(
        lambda: gemm_w4a4(codes, ascales, qweight, wscales, lora, pu, bias, config=gcfg),  # type: ignore[arg-type]
        args.warmup,
        args.iters,
    )
    pd0, pu0 = branches["w4a4_r0"]
    lora0 = lora[:, :0]
    row["gemm_r0_ms"] = time_ms(
        lambda: gemm_w4a4(codes, ascales, qweight, wscales, lora0, pu0, bias, config=gcfg),  # type: ignore[arg-type]
        args.warmup,
        args.iters,
    )
    if args.packed_ok:
        # The same launch shape with packed unpacking (four weight bytes per register), side by side.
        from dataclasses import replace

        from svdquant.kernels.gemm_w4a4 import pick_gemm_config

        pcfg = replace(gcfg if gcfg is not None else pick_gemm_config(m, n, k, 64), packed_unpack=True)  # type: ignore[type-var]
        row["gemm_packed_ms"] = time_ms(
            lambda: gemm_w4a4(codes, ascales, qweight, wscales, lora, pu, bias, config=pcfg),
            args.warmup,
            args.iters,
        )
        row["packed_unpack_speedup"] = row["gemm_only_ms"] / row["gemm_packed_ms"]  # type: ignore[operator]
    row["quantize_only_ms"] = time_ms(lambda: quantize_act_fused(x, smooth, pd, **qkw), args.warmup, args.iters)
    row["speedup_vs_bf16"] = row["bf16_ms"] / row["w4a4_ms"]  # type: ignore[operator]
    row["gemm_speedup_vs_bf16"] = row["bf16_ms"] / row["gemm_only_ms"]  # type: ignore[operator]
    row["lowrank_overhead"] = row["w4a4_ms"] / row["w4a4_r0_ms"] - 1.0  # type: ignore[operator]
    row["gemm_lowrank_overhead"] = row["gemm_only_ms"] / row["gemm_r0_ms"] - 1.0  # type: ignore[operator]
    row["gemm_tops"] = 2 * m * n * k / (row["gemm_only_ms"] * 1e-3) / 1e12  # type: ignore[operator]
    print(
        f"M={m:5d} N={n} K={k} R={r}: bf16 {row['bf16_ms']:.4f} ms, fused w4a4 {row['w4a4_ms']:.4f} ms "
        f"(x{row['speedup_vs_bf16']:.2f}), R=0 {row['w4a4_r0_ms']:.4f} ms "
        f"(low-rank overhead {100 * row['lowrank_overhead']:.1f}%), GEMM only {row['gemm_only_ms']:.4f} ms "
        f"(x{row['gemm_speedup_vs_bf16']:.2f}, {row['gemm_tops']:.0f} TOPS; its R=0 {row['gemm_r0_ms']:.4f} ms), "
        f"quantize only {row['quantize_only_ms']:.4f} ms"
        + (
            f", GEMM with packed unpacking x{row['packed_unpack_speedup']:.2f}"
            if "packed_unpack_speedup" in row
            else ""
        )
    )
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import os

    interpret = os.environ.get("TRITON_INTERPRET", "") == "1"
    if not torch.cuda.is_available() and not (args.check_only and interpret):
        print(
            "bench_gemm.py needs a CUDA GPU (Triton kernels); none found. On a CPU, only "
            "`TRITON_INTERPRET=1 python bench_gemm.py --check-only` runs.",
            file=sys.stderr,
        )
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    err = check(device)
    print(f"kernel vs reference: codes exact, max relative output error {err:.2e}")
    if err > 1e-2:
        print("FAIL: the fused GEMM disagrees with the reference", file=sys.stderr)
        return 1
    packed_err = check(device, packed=True)
    args.packed_ok = packed_err <= 1e-2
    print(f"packed unpacking vs reference: max relative output error {packed_err:.2e}")
    if not args.packed_ok:
        print("WARNING: packed unpacking disagrees with the reference; it is left out of the timings")
    if args.check_only:
        return 0
    global EAGER
    EAGER = args.eager
    out = bench(args)
    out["timing"] = "eager calls between CUDA events" if args.eager else "CUDA graph replay (10 calls per replay)"
    out["check_rel_err"] = err
    out["check_packed_rel_err"] = packed_err
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
