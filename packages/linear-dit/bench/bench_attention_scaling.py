"""Linear against softmax self-attention in otherwise identical Linear DiT blocks, 1K to 16K tokens.

Paper: Xie et al., "SANA" (ICLR 2025), Sec. 2.2 "Linear Attention": ReLU linear attention costs
O(N) in the token count N where softmax attention costs O(N^2), which is what makes 4K images
(16384 latent tokens with DC-AE f32) affordable. Goals: at 16K tokens the linear attention is at
least 8x faster than softmax attention; the fitted scaling exponent (slope of log time against
log tokens) is at most 1.1 for linear attention and near 2 for softmax attention.

The softmax block is a deep copy of the linear block whose ``attn`` module is swapped for
multi-head softmax self-attention with the same parameters (fused qkv without bias, proj; heads
of the same 32 dims, ``F.scaled_dot_product_attention`` with the usual 1/sqrt(d) scale), loaded
with the linear module's weights. Three timings per token count, each alternating linear and
softmax and reporting the median:

* ``kernel``: the attention operator alone on the same q, k, v (``relu_linear_attention`` against
  ``F.scaled_dot_product_attention``): the cleanest view of the O(N) against O(N^2) scaling;
* ``attention``: the ``attn`` module (qkv, attention, proj) on the block's normalised input, i.e.
  what swapping the module is worth; its O(N) projections dilute the softmax exponent below 2
  until N is well past the width;
* ``block``: the whole block forward (self-attention, cross-attention to 300 text tokens,
  Mix-FFN), the end-to-end effect; both exponents are pulled towards 1 by the linear layers.

The goals are evaluated at each level and printed side by side.

Weights are random (timing does not depend on their values); forwards run without autograd.

    OMP_NUM_THREADS=2 python packages/linear-dit/bench/bench_attention_scaling.py --threads 2
    python packages/linear-dit/bench/bench_attention_scaling.py --device cuda --dtype bf16 \\
        --tokens 1024 4096 16384 65536 --json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _bench_common import machine
from torch import nn

from linear_dit import LinearDiTConfig
from linear_dit.linear_attention import FusedQKV, relu_linear_attention
from linear_dit.linear_dit import LinearDiTBlock

LEVELS = ("kernel", "attention", "block")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class SoftmaxSelfAttention(nn.Module):
    """Multi-head softmax self-attention with the parameter shapes of ``LinearAttention``."""

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.qkv = FusedQKV(dim)  # the same three products as the linear side
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (t.view(b, n, c // self.head_dim, self.head_dim).transpose(1, 2) for t in self.qkv(x))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, d]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def grid_for(tokens: int) -> tuple[int, int]:
    """The most nearly square ``h x w`` grid with ``h * w == tokens`` (the Mix-FFN conv needs one)."""
    h = math.isqrt(tokens)
    while tokens % h:
        h -= 1
    return h, tokens // h


def build_blocks(
    config: LinearDiTConfig, device: torch.device, dtype: torch.dtype
) -> tuple[LinearDiTBlock, LinearDiTBlock]:
    """A linear block and its softmax twin with identical weights."""
    if config.qk_norm:
        raise SystemExit(f"preset {config.name!r} has qk_norm: the softmax twin has no q/k norm to match it")
    torch.manual_seed(0)
    linear = LinearDiTBlock(config)
    for m in linear.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
    softmax = copy.deepcopy(linear)
    softmax.attn = SoftmaxSelfAttention(config.hidden_size, config.attention_head_dim)  # type: ignore[assignment]
    softmax.attn.load_state_dict(linear.attn.state_dict(), strict=True)
    return linear.to(device, dtype).eval(), softmax.to(device, dtype).eval()


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return run


def interleaved_median(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    clock = timer(device)
    for _ in range(warmup):
        for fn in fns.values():
            clock(fn)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(clock(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def loglog_slope(tokens: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(tokens)."""
    xs, ys = [math.log(n) for n in tokens], [math.log(s) for s in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def measure_tokens(
    n: int,
    blocks: tuple[LinearDiTBlock, LinearDiTBlock],
    config: LinearDiTConfig,
    y: torch.Tensor,
    t0: torch.Tensor,
    repeats: int,
    warmup: int,
    g: torch.Generator,
) -> dict[str, float | int]:
    """One row: kernel, attention-module and block timings at ``n`` tokens."""
    linear, softmax = blocks
    device, dtype, c = y.device, y.dtype, config.hidden_size
    grid = grid_for(n)
    x = torch.randn(1, n, c, generator=g).to(device, dtype)
    h = F.layer_norm(x, (c,))
    heads, d, eps = config.num_attention_heads, config.attention_head_dim, config.linear_attention_eps
    q, k, v = (torch.randn(1, n, heads, d, generator=g).to(device, dtype) for _ in range(3))
    qt, kt, vt = (z.transpose(1, 2).contiguous() for z in (q, k, v))  # [B, heads, N, d] for SDPA
    pairs: dict[str, dict[str, Callable[[], object]]] = {
        "kernel": {
            "linear": lambda: relu_linear_attention(q, k, v, eps),
            "softmax": lambda: F.scaled_dot_product_attention(qt, kt, vt),
        },
        "attention": {"linear": lambda: linear.attn(h), "softmax": lambda: softmax.attn(h)},
        "block": {"linear": lambda: linear(x, y, t0, None, grid), "softmax": lambda: softmax(x, y, t0, None, grid)},
    }
    row: dict[str, float | int] = {"tokens": n}
    with torch.inference_mode():
        for level, fns in pairs.items():
            t = interleaved_median(fns, repeats, warmup, device)
            row[f"{level}_linear_s"] = t["linear"]
            row[f"{level}_softmax_s"] = t["softmax"]
            row[f"{level}_speedup"] = t["softmax"] / t["linear"]
    return row


def measure(
    config: LinearDiTConfig,
    tokens: list[int],
    text_tokens: int,
    repeats: int,
    warmup: int,
    device: torch.device,
    dtype: torch.dtype,
) -> list[dict[str, float | int]]:
    blocks = build_blocks(config, device, dtype)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(1, text_tokens, config.hidden_size, generator=g).to(device, dtype)
    t0 = (0.1 * torch.randn(1, 6 * config.hidden_size, generator=g)).to(device, dtype)
    return [measure_tokens(n, blocks, config, y, t0, repeats, warmup, g) for n in tokens]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sana-0.6b-1024px", help="block architecture (width 1152, 32-dim heads)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384], help="latent token counts")
    parser.add_argument("--text-tokens", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if len(args.tokens) < 2:
        parser.error("give at least two token counts to fit a scaling exponent")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = LinearDiTConfig.from_name(args.preset)
    tokens = sorted(args.tokens)
    rows = measure(config, tokens, args.text_tokens, args.repeats, args.warmup, device, DTYPES[args.dtype])

    exponents = {
        f"{part}_{side}": loglog_slope(tokens, [float(r[f"{part}_{side}_s"]) for r in rows])
        for part in LEVELS
        for side in ("linear", "softmax")
    }
    last = rows[-1]
    goals: dict[str, dict[str, bool]] = {}
    for part in LEVELS:
        goals[part] = {
            "linear_exponent_at_most_1.1": exponents[f"{part}_linear"] <= 1.1,
            "softmax_exponent_within_0.3_of_2": abs(exponents[f"{part}_softmax"] - 2.0) <= 0.3,
        }
        if last["tokens"] >= 16384:  # the speed goal is stated at 16K tokens
            goals[part][f"speedup_at_{last['tokens']}_at_least_8x"] = float(last[f"{part}_speedup"]) >= 8.0
    result = {
        "preset": config.name,
        "width": config.hidden_size,
        "head_dim": config.attention_head_dim,
        "heads": config.num_attention_heads,
        "text_tokens": args.text_tokens,
        "device": str(device),
        "machine": machine(str(device)),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "rows": rows,
        "exponents": exponents,
        "goals": goals,
        "torch": torch.__version__,
        "nproc": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{config.name} block: width {config.hidden_size}, {config.num_attention_heads} heads of "
        f"{config.attention_head_dim}, {args.text_tokens} text tokens; {args.dtype} on {device} "
        f"({result['machine']}, {result['threads']} threads), median of {args.repeats}"
    )
    print(f"{'tokens':>7}" + "".join(f" | {lvl + ' linear s':>16} {lvl + ' softmax s':>17} {'x':>6}" for lvl in LEVELS))
    for r in rows:
        cells = "".join(
            f" | {float(r[f'{lvl}_linear_s']):>16.4f} {float(r[f'{lvl}_softmax_s']):>17.4f} "
            f"{float(r[f'{lvl}_speedup']):>6.2f}"
            for lvl in LEVELS
        )
        print(f"{r['tokens']:>7}{cells}")
    for lvl in LEVELS:
        print(
            f"{lvl:>9}: exponent linear {exponents[f'{lvl}_linear']:.2f}, softmax {exponents[f'{lvl}_softmax']:.2f}; "
            + ", ".join(f"{k}={v}" for k, v in goals[lvl].items())
        )
    print(f"torch {torch.__version__}, nproc {result['nproc']}, {result['date']}")


if __name__ == "__main__":
    main()
