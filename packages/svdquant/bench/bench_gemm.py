"""Benchmark SVDQuant's fused INT4 W4A4 + low-rank kernels against a torch bf16 matmul (Li et al., ICLR 2025,
Sec. 4.3 and Sec. 5.2 "latency"). GPU only.

Times (CUDA events, warmup, median of --iters) at M=4096 and M=16 with N=K=3072 by default:
``bf16``: ``x @ W^T`` in bf16; ``w4a4``: the full layer (quantize kernel + GEMM kernel) with rank R;
``w4a4_r0``: the same without the branch (low-rank overhead = w4a4 / w4a4_r0 - 1); ``gemm``: the GEMM kernel
alone. Before timing it checks the kernels against the PyTorch reference at a small shape (``--check-only`` runs
only that check, on CPU too under ``TRITON_INTERPRET=1``).

    python packages/svdquant/bench/bench_gemm.py --json out.json
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
    return p.parse_args(argv)


def check(device: str) -> float:
    """Max relative error of the fused layer against the reference at a small odd shape; exact-code check."""
    from svdquant.kernels.gemm_w4a4 import gemm_w4a4, gemm_w4a4_ref
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
    y = gemm_w4a4(*want[:2], qw.qweight, qw.wscales, want[2], pu, bias).float()
    y_ref = gemm_w4a4_ref(*want[:2], qw.qweight, qw.wscales, want[2], pu, bias).float()
    return float((y - y_ref).abs().max() / y_ref.abs().max())


def time_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
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


def _bench_one(
    args: argparse.Namespace,
    x: torch.Tensor,
    w: torch.Tensor,
    qw: object,
    smooth: torch.Tensor,
    bias: torch.Tensor,
    branches: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, float]:
    from svdquant.kernels.gemm_w4a4 import gemm_w4a4
    from svdquant.kernels.quantize_act import quantize_act_fused

    qweight, wscales = qw.qweight, qw.wscales  # type: ignore[attr-defined]
    (m, k), n, r = x.shape, w.shape[0], branches["w4a4"][0].shape[1]
    row: dict[str, float] = {"M": m, "N": n, "K": k, "R": r}
    row["bf16_ms"] = time_ms(lambda: torch.matmul(x, w.T), args.warmup, args.iters)
    for name, (pd, pu) in branches.items():

        def layer(pd: torch.Tensor = pd, pu: torch.Tensor = pu) -> torch.Tensor:
            packed, ascales, lora = quantize_act_fused(x, smooth, pd)
            return gemm_w4a4(packed, ascales, qweight, wscales, lora, pu, bias)

        row[f"{name}_ms"] = time_ms(layer, args.warmup, args.iters)
    pd, pu = branches["w4a4"]
    packed, ascales, lora = quantize_act_fused(x, smooth, pd)
    row["gemm_only_ms"] = time_ms(
        lambda: gemm_w4a4(packed, ascales, qweight, wscales, lora, pu, bias), args.warmup, args.iters
    )
    row["speedup_vs_bf16"] = row["bf16_ms"] / row["w4a4_ms"]
    row["lowrank_overhead"] = row["w4a4_ms"] / row["w4a4_r0_ms"] - 1.0
    print(
        f"M={m:5d} N={n} K={k} R={r}: bf16 {row['bf16_ms']:.4f} ms, fused w4a4 {row['w4a4_ms']:.4f} ms "
        f"(x{row['speedup_vs_bf16']:.2f}), R=0 {row['w4a4_r0_ms']:.4f} ms "
        f"(low-rank overhead {100 * row['lowrank_overhead']:.1f}%), GEMM only {row['gemm_only_ms']:.4f} ms"
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
    if args.check_only:
        return 0
    out = bench(args)
    out["check_rel_err"] = err
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
