"""Calibration cost: the randomized-SVD low-rank path against the exact float64 path at width 3072.

SVDQuant (Li et al., ICLR 2025), Sec. 4.2: the branch ``L`` of rank r is refined by ``L <- SVD_r(W - Q(W - L))``;
each round needs a rank-r SVD of a 3072x3072 matrix. The exact path computes a full float64 SVD per round; the
randomized path a ``torch.svd_lowrank`` range finder in float32. Both fit the same smoothed layer (fixed
SmoothQuant-style smoothing of an outlier input) for the same number of rounds (no early stop), scored by the
layer's W4A4 output SNR. Goal: randomized at least 5x faster, SNR within 0.3 dB.

Run: ``python packages/svdquant/bench/bench_calibration.py [--json] [--iters 3] [--fmt int4]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial

import torch
from torch import Tensor

from svdquant.formats import fake_quantize_activation, fake_quantize_weight
from svdquant.low_rank import low_rank_branch
from svdquant.smoothing import fake_quant_linear, smoothquant_scale


def outlier_activations(m: int, k: int, *, n_outliers: int = 8, seed: int = 0) -> Tensor:
    """Unit Gaussian channels, ``n_outliers`` of them (fixed, with an offset) scaled by 20-100x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    channels = torch.randperm(k, generator=g)[:n_outliers]
    gains = 20.0 + 80.0 * torch.rand(n_outliers, generator=g)
    x[:, channels] = (x[:, channels] + torch.randn(n_outliers, generator=g)) * gains
    return x


def structured_weight(n: int, k: int, *, strong: int = 16, seed: int = 1) -> Tensor:
    """A Gaussian bulk of std 1/sqrt(k) plus ``strong`` dominant rank-1 directions."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.randn(n, k, generator=g) / math.sqrt(k)
    u = torch.linalg.qr(torch.randn(n, strong, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(k, strong, generator=g, dtype=torch.float64))[0]
    return (bulk.double() + (u * (2.5 * torch.logspace(0, -0.5, strong, dtype=torch.float64))) @ v.T).float()


def snr_db(reference: Tensor, approx: Tensor) -> float:
    ref = reference.double()
    return float(10.0 * torch.log10(ref.square().sum() / (ref - approx.double()).square().sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--width", type=int, default=3072)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3, help="refinement rounds (no early stop)")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--fmt", default="int4", choices=["int4", "nvfp4"])
    args = parser.parse_args()
    group = 64 if args.fmt == "int4" else 16
    k = n = args.width
    x = outlier_activations(args.tokens, k, seed=3)
    w = structured_weight(n, k, seed=4)
    s = smoothquant_scale(x.abs().amax(0), w.abs().amax(0))
    qw = partial(fake_quantize_weight, fmt=args.fmt, group_size=group)
    qx = partial(fake_quantize_activation, fmt=args.fmt, group_size=group)
    ref = x @ w.T
    out: dict[str, object] = {"width": k, "rank": args.rank, "iters": args.iters, "fmt": args.fmt}
    for svd in ("randomized", "exact"):
        t0 = time.perf_counter()
        branch = low_rank_branch(w * s, args.rank, qw, iters=args.iters, early_stop=False, svd=svd, x=x / s)
        seconds = time.perf_counter() - t0
        approx = fake_quant_linear(x, s, branch.residual, qx, branch.up, branch.down)
        out[svd] = {"seconds": seconds, "snr_db": snr_db(ref, approx)}
    rnd, exa = out["randomized"], out["exact"]
    assert isinstance(rnd, dict) and isinstance(exa, dict)
    speedup = exa["seconds"] / rnd["seconds"]
    diff = exa["snr_db"] - rnd["snr_db"]
    out |= {"speedup": speedup, "snr_diff_db": diff, "met": speedup >= 5.0 and abs(diff) <= 0.3}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{k}x{n}, rank {args.rank}, {args.iters} rounds, {args.fmt}, {args.tokens} tokens")
    for svd in ("exact", "randomized"):
        r = out[svd]
        assert isinstance(r, dict)
        print(f"{svd:11s} {r['seconds']:8.2f} s  SNR {r['snr_db']:.2f} dB")
    print(
        f"speed-up {out['speedup']:.1f}x (goal >= 5), SNR exact - randomized {out['snr_diff_db']:+.3f} dB "
        f"(goal within 0.3): {'MET' if out['met'] else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
