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
import time
from functools import partial

from _bench_common import outlier_activations, snr_db, structured_weight

from svdquant.formats import fake_quantize_activation, fake_quantize_weight
from svdquant.low_rank import low_rank_branch
from svdquant.smoothing import fake_quant_linear, smoothquant_scale


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
