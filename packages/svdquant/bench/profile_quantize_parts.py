"""Where SVDQuant's fused activation-quantize kernel spends its time (Li et al., ICLR 2025, Sec. 4.3 "kernel fusion").

GPU only, development aid: prints timings, not a result of the package. For each token count M (K = 3072, group
size 64, rank 32) it times, by CUDA graph, a plain copy of ``x`` (the memory-bound floor), the package's
``quantize_act_fused`` with its default launch, and a stripped-down Triton kernel doing the same fused work
(divide by the smoothing factor, per-group absmax INT4 codes and scales, and the low-rank down projection ``x @ L1``
that the paper fuses into this kernel). Its variants separate the costs: the low-rank branch on or off (``lora``),
correctly rounded ``div_rn`` vs plain division, and groups formed by a 3-D reshape of a wide block (``bk`` 128 or
256) vs one group per block (``bk`` 64). Each variant prints its fastest (ms, BM, warps). Inputs are random: only the
timings mean anything.

    python packages/svdquant/bench/profile_quantize_parts.py [--m 4096 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from svdquant.kernels.quantize_act import quantize_act_fused

# graph_ms lives in the sibling script; bench/ is no package, so make it importable however this file is loaded.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_gemm_parts import graph_ms  # noqa: E402


# The fused quantize with every variant a constexpr switch: LORA (accumulate x @ proj_down), DIVRN (div_rn vs /),
# RESHAPE (BK // G groups per block via a 3-D reshape, else BK must equal G).
@triton.jit
def _q(
    x_ptr,
    s_ptr,
    pd_ptr,
    c_ptr,
    as_ptr,
    l_ptr,
    M,
    K,
    BM: tl.constexpr,
    BK: tl.constexpr,
    G: tl.constexpr,
    LORA: tl.constexpr,
    DIVRN: tl.constexpr,
    RESHAPE: tl.constexpr,
    R: tl.constexpr,
):
    pid = tl.program_id(0)
    om = pid * BM + tl.arange(0, BM)
    ok = tl.arange(0, BK)
    orr = tl.arange(0, R)
    NG: tl.constexpr = BK // G
    lora = tl.zeros((BM, R), tl.float32)
    for k0 in range(0, K, BK):
        cols = k0 + ok
        x = tl.load(x_ptr + om[:, None] * K + cols[None, :])
        s = tl.load(s_ptr + cols).to(tl.float32)
        if DIVRN:
            xs = tl.math.div_rn(x.to(tl.float32), s[None, :])
        else:
            xs = x.to(tl.float32) / s[None, :]
        xs = xs.to(tl.bfloat16).to(tl.float32)
        if RESHAPE:
            xg = tl.reshape(xs, (BM, NG, G))
            amax = tl.max(tl.abs(xg), axis=2)
            sc = amax / 7.0
            tl.store(as_ptr + (k0 // G + tl.arange(0, NG))[None, :] * M + om[:, None], sc.to(tl.bfloat16))
            if DIVRN:
                v = tl.math.div_rn(xg, sc[:, :, None])
            else:
                v = xg / sc[:, :, None]
            c = ((v + 12582912.0) - 12582912.0).to(tl.int8)
            tl.store(c_ptr + om[:, None] * K + cols[None, :], tl.reshape(c, (BM, BK)))
        else:
            amax = tl.max(tl.abs(xs), axis=1)
            sc = amax / 7.0
            tl.store(as_ptr + (k0 // G) * M + om, sc.to(tl.bfloat16))
            if DIVRN:
                v = tl.math.div_rn(xs, sc[:, None])
            else:
                v = xs / sc[:, None]
            c = ((v + 12582912.0) - 12582912.0).to(tl.int8)
            tl.store(c_ptr + om[:, None] * K + cols[None, :], c)
        if LORA:
            pd = tl.load(pd_ptr + cols[:, None] * R + orr[None, :])
            lora += tl.dot(x, pd)
    if LORA:
        tl.store(l_ptr + om[:, None] * R + orr[None, :], lora)


def profile(m: int) -> None:
    """Print the copy floor, the package kernel and the best time of each stripped-down variant at M = ``m``."""
    M = m
    K, G, R = 3072, 64, 32
    x = torch.randn(M, K, device="cuda").bfloat16()
    s = torch.rand(K, device="cuda").bfloat16() + 0.5
    pd = torch.randn(K, R, device="cuda").bfloat16()
    c = torch.empty(M, K, device="cuda", dtype=torch.int8)
    a_s = torch.empty(K // G, M, device="cuda", dtype=torch.bfloat16)
    lo = torch.empty(M, R, device="cuda")
    print(f"M={M}: copy x (read+write) {graph_ms(lambda: x.clone()):.4f} ms")
    print(f"M={M}: current kernel default {graph_ms(lambda: quantize_act_fused(x, s, pd)):.4f} ms")
    best: tuple[float, int, int] | None
    for lora in (True, False):
        for divrn in (True, False):
            for reshape, bk in ((True, 128), (True, 256), (False, 64)):
                best = None
                for bm in (16, 32, 64):
                    for nw in (4, 8):
                        if M < bm:
                            continue

                        def fn(
                            bm: int = bm,
                            nw: int = nw,
                            bk: int = bk,
                            lora: bool = lora,
                            divrn: bool = divrn,
                            reshape: bool = reshape,
                        ) -> None:
                            _q[(triton.cdiv(M, bm),)](
                                x,
                                s,
                                pd,
                                c,
                                a_s,
                                lo,
                                M,
                                K,
                                BM=bm,
                                BK=bk,
                                G=G,
                                LORA=lora,
                                DIVRN=divrn,
                                RESHAPE=reshape,
                                R=R,
                                num_warps=nw,
                            )

                        ms = graph_ms(fn)
                        if best is None or ms < best[0]:
                            best = (ms, bm, nw)
                print(f"M={M} lora={lora} div_rn={divrn} reshape={reshape} bk={bk}: {best}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, nargs="+", default=[4096, 16], help="token counts M (default: 4096 16)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "profile_quantize_parts: needs a CUDA GPU (times Triton kernels with CUDA graphs); none found",
            file=sys.stderr,
        )
        return 2
    for m in args.m:
        profile(m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
