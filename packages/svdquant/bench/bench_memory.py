"""Memory of a FLUX-like layer set in bf16 against SVDQuant W4A4 (INT4 and NVFP4), resident and on disk.

SVDQuant (Li et al., ICLR 2025), Sec. 5.2 ("3.5x memory reduction" on FLUX.1): the 4-bit weights plus their
scales, the rank-32 16-bit low-rank branch, the smoothing vector and the bias, against the bf16 weights and
biases. The layer set is one FLUX-like transformer block at width 3072 with an MLP of 12288: q, k, v, out
(3072x3072), fc1 (12288x3072), fc2 (3072x12288). Weights are random: the bytes depend only on the shapes, so the
layers are quantized without calibration data (no smoothing search) with a one-round randomized branch.
Goal: at least 3.5x smaller, resident and on disk.

Run: ``python packages/svdquant/bench/bench_memory.py [--json] [--rank 32] [--fmt int4 nvfp4]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from svdquant.checkpoint import save_quantized
from svdquant.config import SVDQuantConfig
from svdquant.svdq_linear import SVDQLinear

WIDTH, MLP = 3072, 12288
SHAPES = {"q": (WIDTH, WIDTH), "k": (WIDTH, WIDTH), "v": (WIDTH, WIDTH), "out": (WIDTH, WIDTH)}
SHAPES |= {"fc1": (MLP, WIDTH), "fc2": (WIDTH, MLP)}


def float_block() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict({n: nn.Linear(k, o, dtype=torch.bfloat16) for n, (o, k) in SHAPES.items()})


def nbytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--fmt", nargs="+", default=["int4", "nvfp4"], choices=["int4", "nvfp4"])
    args = parser.parse_args()
    results: dict[str, object] = {"layers": {n: f"{o}x{k}" for n, (o, k) in SHAPES.items()}, "rank": args.rank}
    with tempfile.TemporaryDirectory() as d:
        block = float_block()
        bf16_file = Path(d) / "bf16.safetensors"
        save_file({k: v.contiguous() for k, v in block.state_dict().items()}, str(bf16_file))
        bf16 = {"resident": nbytes(block), "file": bf16_file.stat().st_size}
        results["bf16"] = bf16
        for fmt in args.fmt:
            t0 = time.perf_counter()
            cfg = SVDQuantConfig(fmt=fmt, rank=args.rank, svd="randomized", lowrank_iters=1)
            quant = nn.ModuleDict({n: SVDQLinear.from_linear(m, None, cfg, name=n) for n, m in block.items()})
            qfile = save_quantized(quant, Path(d) / f"{fmt}.safetensors", cfg)
            q = {"resident": nbytes(quant), "file": qfile.stat().st_size, "seconds": time.perf_counter() - t0}
            parts: dict[str, int] = {}
            for layer in quant.values():
                for name, buf in layer.named_buffers():
                    parts[name] = parts.get(name, 0) + buf.numel() * buf.element_size()
            results[fmt] = {
                **q,
                "parts": parts,
                "ratio_resident": bf16["resident"] / q["resident"],
                "ratio_file": bf16["file"] / q["file"],
            }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    mib = 2**20
    print(f"FLUX-like block, width {WIDTH}, MLP {MLP}, rank {args.rank}")
    print(f"{'':8s} {'resident MiB':>13s} {'file MiB':>10s} {'x resident':>11s} {'x file':>8s}")
    print(f"{'bf16':8s} {bf16['resident'] / mib:13.2f} {bf16['file'] / mib:10.2f} {1.0:11.2f} {1.0:8.2f}")
    for fmt in args.fmt:
        r = results[fmt]
        assert isinstance(r, dict)
        print(
            f"{fmt:8s} {r['resident'] / mib:13.2f} {r['file'] / mib:10.2f} {r['ratio_resident']:11.2f} "
            f"{r['ratio_file']:8.2f}   goal >= 3.5x: {'MET' if min(r['ratio_resident'], r['ratio_file']) >= 3.5 else 'NOT MET'}"
        )
        print("         " + ", ".join(f"{k} {v / mib:.2f} MiB" for k, v in r["parts"].items()))


if __name__ == "__main__":
    main()
