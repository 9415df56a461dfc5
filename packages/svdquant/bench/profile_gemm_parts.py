"""Where SVDQuant's fused W4A4 GEMM kernel spends its time (Li et al., ICLR 2025, Sec. 4.3 "kernel fusion").

GPU only, development aid: prints timings, not a result of the package. It times stripped-down Triton GEMMs
(CUDA graph, median) at N = K = 3072, group size 64, for each token count M, next to a bf16 ``x @ W^T`` and
``torch._int_mm``. The variants separate the costs of the real kernel: the INT4 weight packed two per byte (unpacked
in registers) or stored unpacked as int8; the per-group fp32 rescaling of the int32 partial sums on or off; an fp8
dot instead of the int8 one; the activation codes split even/odd so each half meets one weight nibble ("split
unpack"), with or without manually pipelining the next group's loads; and the output tile transposed (``swap``,
the small-M layout). Each variant reports its fastest launch shape (BM, BN, warps, stages). Codes and scales are
random: only the timings mean anything.

    python packages/svdquant/bench/profile_gemm_parts.py [--m 4096 16]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
import triton
import triton.language as tl


# One GEMM tile loop with every variant a constexpr switch, so each costs only what its branch adds:
# PACKED (int4 nibbles unpacked in registers vs int8 codes), SCALED (per-group fp32 rescale vs one int32 sum),
# FP_ACC (fp8 dot instead of int8), SWAP (accumulate the transposed tile, the small-M layout), GM (grouped order).
@triton.jit
def _k(
    a_ptr,
    w_ptr,
    as_ptr,
    ws_ptr,
    y_ptr,
    M,
    N,
    K,
    BM: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
    PACKED: tl.constexpr,
    SCALED: tl.constexpr,
    SWAP: tl.constexpr,
    GM: tl.constexpr,
    FP_ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    tm = tl.cdiv(M, BM)
    tn = tl.cdiv(N, BN)
    per = GM * tn
    fm = (pid // per) * GM
    rows = tl.minimum(tm - fm, GM)
    pm = fm + (pid % per) % rows
    pn = (pid % per) // rows
    om = pm * BM + tl.arange(0, BM)
    on = pn * BN + tl.arange(0, BN)
    ok = tl.arange(0, G)
    oh = tl.arange(0, G // 2)
    if SWAP:
        acc = tl.zeros((BN, BM), tl.float32)
        iacc = tl.zeros((BN, BM), tl.int32)
    else:
        acc = tl.zeros((BM, BN), tl.float32)
        iacc = tl.zeros((BM, BN), tl.int32)
    for g in range(0, K // G):
        a = tl.load(a_ptr + om[:, None] * K + (g * G + ok)[None, :])
        if PACKED:
            wp = tl.load(w_ptr + on[:, None] * (K // 2) + (g * (G // 2) + oh)[None, :])
            lo = (wp & 15).to(tl.int8)
            hi = (wp >> 4).to(tl.int8)
            lo = (lo ^ 8) - 8
            hi = (hi ^ 8) - 8
            w = tl.reshape(tl.join(lo, hi), (BN, G))
        else:
            w = tl.load(w_ptr + on[:, None] * K + (g * G + ok)[None, :])
        if FP_ACC:
            w = w.to(tl.float16).to(tl.float8e4nv)  # a is stored as fp8 already
        if SCALED:
            a_s = tl.load(as_ptr + g * M + om).to(tl.float32)
            w_s = tl.load(ws_ptr + g * N + on).to(tl.float32)
            if SWAP:
                if FP_ACC:
                    part = tl.dot(w, tl.trans(a))
                else:
                    part = tl.dot(w, tl.trans(a), out_dtype=tl.int32).to(tl.float32)
                acc += part * (w_s[:, None] * a_s[None, :])
            else:
                if FP_ACC:
                    part = tl.dot(a, tl.trans(w))
                else:
                    part = tl.dot(a, tl.trans(w), out_dtype=tl.int32).to(tl.float32)
                acc += part * (a_s[:, None] * w_s[None, :])
        else:
            if SWAP:
                iacc = tl.dot(w, tl.trans(a), iacc, out_dtype=tl.int32)
            else:
                iacc = tl.dot(a, tl.trans(w), iacc, out_dtype=tl.int32)
    if not SCALED:
        acc = iacc.to(tl.float32)
    if SWAP:
        tl.store(y_ptr + om[None, :] * N + on[:, None], acc.to(tl.bfloat16))
    else:
        tl.store(y_ptr + om[:, None] * N + on[None, :], acc.to(tl.bfloat16))


# One group's int32 partial sum without interleaving the nibbles: each nibble half gets its own dot.
@triton.jit
def _load_group(a_ptr, w_ptr, om, on, g, K, BM: tl.constexpr, BN: tl.constexpr, G: tl.constexpr, SWAP: tl.constexpr):
    H: tl.constexpr = G // 2
    oh = tl.arange(0, H)
    # codes of a group stored even channels first, then odd ones, so the two halves meet the two nibbles
    a_e = tl.load(a_ptr + om[:, None] * K + (g * G + oh)[None, :])
    a_o = tl.load(a_ptr + om[:, None] * K + (g * G + H + oh)[None, :])
    wp = tl.load(w_ptr + on[:, None] * (K // 2) + (g * H + oh)[None, :])
    lo = (wp & 15).to(tl.int8)
    hi = (wp >> 4).to(tl.int8)
    lo = (lo ^ 8) - 8
    hi = (hi ^ 8) - 8
    if SWAP:
        p = tl.dot(lo, tl.trans(a_e), out_dtype=tl.int32)
        p = tl.dot(hi, tl.trans(a_o), p, out_dtype=tl.int32)
    else:
        p = tl.dot(a_e, tl.trans(lo), out_dtype=tl.int32)
        p = tl.dot(a_o, tl.trans(hi), p, out_dtype=tl.int32)
    return p


# The "split unpack" GEMM (always packed and scaled); PIPE issues the next group's loads before the current
# group's rescale, to see whether Triton's own software pipelining leaves latency exposed.
@triton.jit
def _k2(
    a_ptr,
    w_ptr,
    as_ptr,
    ws_ptr,
    y_ptr,
    M,
    N,
    K,
    BM: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
    SWAP: tl.constexpr,
    GM: tl.constexpr,
    PIPE: tl.constexpr,
):
    pid = tl.program_id(0)
    tm = tl.cdiv(M, BM)
    tn = tl.cdiv(N, BN)
    per = GM * tn
    fm = (pid // per) * GM
    rows = tl.minimum(tm - fm, GM)
    pm = fm + (pid % per) % rows
    pn = (pid % per) // rows
    om = pm * BM + tl.arange(0, BM)
    on = pn * BN + tl.arange(0, BN)
    if SWAP:
        acc = tl.zeros((BN, BM), tl.float32)
    else:
        acc = tl.zeros((BM, BN), tl.float32)
    if PIPE:
        prev = _load_group(a_ptr, w_ptr, om, on, 0, K, BM, BN, G, SWAP)
        for g in range(1, K // G):
            cur = _load_group(a_ptr, w_ptr, om, on, g, K, BM, BN, G, SWAP)
            a_s = tl.load(as_ptr + (g - 1) * M + om).to(tl.float32)
            w_s = tl.load(ws_ptr + (g - 1) * N + on).to(tl.float32)
            if SWAP:
                acc += prev.to(tl.float32) * (w_s[:, None] * a_s[None, :])
            else:
                acc += prev.to(tl.float32) * (a_s[:, None] * w_s[None, :])
            prev = cur
        g = K // G - 1
        a_s = tl.load(as_ptr + g * M + om).to(tl.float32)
        w_s = tl.load(ws_ptr + g * N + on).to(tl.float32)
        if SWAP:
            acc += prev.to(tl.float32) * (w_s[:, None] * a_s[None, :])
        else:
            acc += prev.to(tl.float32) * (a_s[:, None] * w_s[None, :])
    else:
        for g in range(0, K // G):
            p = _load_group(a_ptr, w_ptr, om, on, g, K, BM, BN, G, SWAP)
            a_s = tl.load(as_ptr + g * M + om).to(tl.float32)
            w_s = tl.load(ws_ptr + g * N + on).to(tl.float32)
            if SWAP:
                acc += p.to(tl.float32) * (w_s[:, None] * a_s[None, :])
            else:
                acc += p.to(tl.float32) * (a_s[:, None] * w_s[None, :])
    if SWAP:
        tl.store(y_ptr + om[None, :] * N + on[:, None], acc.to(tl.bfloat16))
    else:
        tl.store(y_ptr + om[:, None] * N + on[None, :], acc.to(tl.bfloat16))


def graph_ms(fn: Callable[[], object], iters: int = 50) -> float:
    """Median milliseconds of one ``fn()`` call replayed from a CUDA graph: bench_gemm.py's timer."""
    from bench_gemm import graph_ms as timer  # same folder: run as a script, the folder is on sys.path

    return timer(fn, iters)


def profile(m: int) -> None:
    """Print the bf16 / int_mm baselines and the best time of each kernel variant at M = ``m``."""
    M, N, K = m, 3072, 3072
    G = 64
    dev = "cuda"
    a = torch.randint(-8, 8, (M, K), device=dev, dtype=torch.int8)
    w8 = torch.randint(-8, 8, (N, K), device=dev, dtype=torch.int8)
    wp = torch.randint(0, 256, (N, K // 2), device=dev, dtype=torch.uint8)
    a8 = a.to(torch.float16).to(torch.float8_e4m3fn)
    a_s = torch.rand(K // G, M, device=dev).bfloat16()
    w_s = torch.rand(K // G, N, device=dev).bfloat16()
    y = torch.empty(M, N, device=dev, dtype=torch.bfloat16)
    x = torch.randn(M, K, device=dev).bfloat16()
    wb = torch.randn(N, K, device=dev).bfloat16()
    print(f"M={M}: bf16 matmul {graph_ms(lambda: x @ wb.T):.4f} ms (graph)")
    if M >= 32:
        print(f"M={M}: torch._int_mm {graph_ms(lambda: torch._int_mm(a, w8.T)):.4f} ms (graph)")
    cfgs = [(128, 128, 8, 3), (128, 128, 4, 4), (128, 256, 8, 3), (256, 128, 8, 3), (64, 128, 4, 4)]
    if M <= 64:
        cfgs = [(16, 64, 4, 4), (16, 32, 4, 4), (16, 128, 4, 4)]
    for pipe in (False, True):
        for swap in (False, True):

            def split_unpack(bm: int, bn: int, nw: int, ns: int, swap: bool = swap, pipe: bool = pipe) -> None:
                grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
                _k2[grid](a, wp, a_s, w_s, y, M, N, K, BM=bm, BN=bn, G=G, SWAP=swap, GM=8, PIPE=pipe,
                          num_warps=nw, num_stages=ns)  # fmt: skip

            extra = [(64, 256, 8, 3), (128, 64, 4, 3)] if M > 64 else []
            _report_best(f"M={M} split-unpack pipe={pipe} swap={swap}", M, N, K, swap, cfgs + extra, split_unpack)
    for packed, scaled, fp8 in ((False, False, False), (True, True, False)):
        for swap in (False, True):

            def variant(
                bm: int, bn: int, nw: int, ns: int, swap: bool = swap, packed: bool = packed, scaled: bool = scaled,
                fp8: bool = fp8,
            ) -> None:  # fmt: skip
                grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
                _k[grid](a8 if fp8 else a, wp if packed else w8, a_s, w_s, y, M, N, K, BM=bm, BN=bn, G=G,
                         PACKED=packed, SCALED=scaled, SWAP=swap, GM=8, FP_ACC=fp8, num_warps=nw,
                         num_stages=ns)  # fmt: skip

            _report_best(f"M={M} packed={packed} scaled={scaled} fp8={fp8} swap={swap}", M, N, K, swap, cfgs, variant)


def _report_best(
    label: str,
    m: int,
    n: int,
    k: int,
    swap: bool,
    cfgs: list[tuple[int, int, int, int]],
    launch: Callable[[int, int, int, int], None],
) -> None:
    """Time ``launch(block_m, block_n, num_warps, num_stages)`` for each launch shape and print the fastest.

    Shapes the GPU cannot run (shared memory, registers) are reported and skipped; small M runs swapped only."""
    best: tuple[float, tuple[int, int, int, int]] | None = None
    for bm, bn, nw, ns in cfgs:
        if m <= 64 and not swap:
            continue
        try:
            ms = graph_ms(lambda bm=bm, bn=bn, nw=nw, ns=ns: launch(bm, bn, nw, ns))
        except Exception as e:
            print(f"   fail {bm},{bn},{nw},{ns}: {type(e).__name__} {str(e)[:100]}")
            continue
        if best is None or ms < best[0]:
            best = (ms, (bm, bn, nw, ns))
    if best:
        tops = 2 * m * n * k / best[0] / 1e9
        print(f"{label}: {best[0]:.4f} ms {tops:.0f} TOPS {best[1]}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, nargs="+", default=[4096, 16], help="token counts M (default: 4096 16)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "profile_gemm_parts: needs a CUDA GPU (times Triton kernels with CUDA graphs); none found", file=sys.stderr
        )
        return 2
    for m in args.m:
        profile(m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
