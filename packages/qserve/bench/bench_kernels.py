"""Benchmark QServe's kernels (Lin et al., arXiv 2405.04532, Sec. 5.2 W4A8 GEMM, Sec. 5.3 KV4 attention). GPU only.

GEMM, N=K=4096 by default, M in {1, 64, 1024}: ``bf16``: ``x @ W^T`` in bf16 (torch); ``w4a8``: our W4A8 GEMM
kernel on already-quantized activations (as the engine feeds it: the fused norm/activation ops emit INT8);
``w4a8_layer``: the same plus the per-token activation quantization in plain torch; ``int_mm``: torch's INT8 x INT8
GEMM ``torch._int_mm`` on an int8 weight (context: what a plain INT8 tensor-core GEMM costs; M is padded to 32
where it needs more than 16 rows). Decode attention at batch 64, 2K context, page size 64 (Llama-3-8B heads: 32
query heads, 8 KV heads, head_dim 128): our kernel over INT4 pages (and over fp16 pages) against torch SDPA on
contiguous fp16 K/V. Times are CUDA-graph replays (median); every figure is measured side by side in this process.

Before timing it checks the kernels against the PyTorch references at small odd shapes (``--check-only`` runs only
that, also on a CPU under ``TRITON_INTERPRET=1``). ``--sweep`` times candidate launch configs per M first and uses
the best. The packed dequantization (``W4A8Config(packed_dequant=True)``, inline PTX) is checked on its own: if it
disagrees with the reference it is left out of the sweep; otherwise every candidate is also swept with it, and each
M reports the chosen launch shape (unswapped where the sweep picked swapped operands, which packing does not
support) with byte-wise and with packed dequantization side by side (``packed_speedup``).

    python packages/qserve/bench/bench_kernels.py --json out.json [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, nargs="+", default=[1, 64, 1024], help="token counts M")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--batch", type=int, default=64, help="decode attention batch")
    p.add_argument("--context", type=int, default=2048, help="decode attention context length")
    p.add_argument("--page-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--json", type=str, default=None, help="write the results to this file")
    p.add_argument("--check-only", action="store_true", help="only compare the kernels with the references")
    p.add_argument("--sweep", action="store_true", help="time candidate launch configs and use the best")
    p.add_argument("--skip-attention", action="store_true")
    p.add_argument("--skip-gemm", action="store_true")
    return p.parse_args(argv)


def _g128_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from qserve.quant.formats import quantize_w4_g128

    q = quantize_w4_g128(w.float())
    return q.qweight, q.s1_scales, q.s2_scales, q.s2_zeros


def check(device: str) -> dict[str, float]:
    """Kernel vs reference at small odd shapes: the GEMM's max relative error over its launch configs and the
    attention's max abs error over KV4/KV16 and split counts."""
    from qserve.kernels.kv4_attention import AttentionConfig, paged_decode_attention, paged_decode_attention_ref
    from qserve.kernels.w4a8_gemm import W4A8Config, w4a8_gemm, w4a8_gemm_ref
    from qserve.quant.formats import quantize_activation
    from qserve.quant.kv import KVQuantizer

    gen = torch.Generator().manual_seed(0)
    m, n, k = 37, 80, 384
    qw, s1, s2, z2 = (t.to(device) for t in _g128_weight(torch.randn(n, k, generator=gen)))
    qa, a_s = quantize_activation(torch.randn(m, k, generator=gen).to(device))
    bias = torch.randn(n, generator=gen).to(device)
    want = w4a8_gemm_ref(qa, a_s, qw, s1, s2, z2, bias, torch.float32)
    gemm_err = 0.0
    for cfg in (None, W4A8Config(16, 16, num_warps=1, num_stages=1), W4A8Config(32, 16, swap=True, split_k=3)):
        got = w4a8_gemm(qa, a_s, qw, s1, s2, z2, bias, torch.float32, config=cfg)
        gemm_err = max(gemm_err, float((got - want).abs().max() / want.abs().max()))
    # Packed dequantization (inline PTX) on its own: a failure there drops it from the timings, not the run.
    packed_err = 0.0
    packed_cfgs = (
        W4A8Config(packed_dequant=True),
        W4A8Config(16, 32, num_warps=4, num_stages=2, packed_dequant=True),
        W4A8Config(32, 16, split_k=3, num_warps=4, packed_dequant=True),
    )
    for cfg in packed_cfgs:
        got = w4a8_gemm(qa, a_s, qw, s1, s2, z2, bias, torch.float32, config=cfg)
        packed_err = max(packed_err, float((got - want).abs().max() / want.abs().max()))
    # Per-channel weights (no level-1 groups) through the packed path too.
    s1c, zc = s1.float(), torch.zeros_like(s1)
    want_c = w4a8_gemm_ref(qa, a_s, qw, s1c, None, None, None, torch.float32, s1_szeros=zc)
    for cfg in packed_cfgs:
        got = w4a8_gemm(qa, a_s, qw, s1c, None, None, None, torch.float32, s1_szeros=zc, config=cfg)
        packed_err = max(packed_err, float((got - want_c).abs().max() / want_c.abs().max()))
    b, hq, hkv, d, page = 3, 8, 2, 64, 16
    lens = torch.tensor([1, 45, 70], dtype=torch.int32)
    pages_per = 5
    kv = torch.randn(2, b * pages_per + 2, page, hkv, d, generator=gen)
    table = torch.randperm(b * pages_per + 2, generator=gen)[: b * pages_per].reshape(b, pages_per).int()
    q = torch.randn(b, hq, d, generator=gen).half()
    attn_err = 0.0
    for bits in (4, 16):
        if bits == 4:
            kc, ks, kz = KVQuantizer(4).quantize(kv[0])
            vc, vs, vz = KVQuantizer(4).quantize(kv[1])
            cache = (kc, ks, kz, vc, vs, vz)
        else:
            cache = (kv[0].half(), None, None, kv[1].half(), None, None)
        cache_d = tuple(t.to(device) if t is not None else None for t in cache)
        args = (q.to(device), *cache_d, table.to(device), lens.to(device), d**-0.5, bits)
        ref = paged_decode_attention_ref(*args).float()  # type: ignore[arg-type]
        for splits in (1, 3):
            got = paged_decode_attention(*args, config=AttentionConfig(block_t=16, num_splits=splits))  # type: ignore[arg-type]
            attn_err = max(attn_err, float((got.float() - ref).abs().max()))
    return {"gemm_max_rel_err": gemm_err, "packed_gemm_max_rel_err": packed_err, "attention_max_abs_err": attn_err}


def graph_ms(fn: Callable[[], object], iters: int) -> float:
    """Median per-call time of ``fn`` replayed from a CUDA graph (10 calls per replay): the GPU time without the
    Python and launch overhead."""
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


def _gemm_candidates(m: int, packed: bool) -> list[Any]:
    """Launch shapes to sweep at this M; with ``packed``, each unswapped one also with packed dequantization."""
    from dataclasses import replace

    from qserve.kernels.w4a8_gemm import W4A8Config as C

    if m <= 64:
        bm = max(16, 1 << (max(m, 1) - 1).bit_length())
        shapes = [
            C(block_m=bm, block_n=bn, swap=True, split_k=sk, num_warps=4, num_stages=4)
            for bn in (32, 64, 128)
            for sk in (1, 4, 8)
        ]
    else:
        shapes = [
            C(block_m=128, block_n=128, num_warps=8, num_stages=3),
            C(block_m=128, block_n=128, num_warps=4, num_stages=4),
            C(block_m=128, block_n=256, num_warps=8, num_stages=3),
            C(block_m=128, block_n=128, swap=True, num_warps=8, num_stages=3),
            C(block_m=64, block_n=128, swap=True, num_warps=4, num_stages=4),
            C(block_m=256, block_n=128, num_warps=8, num_stages=3),
            # Two programs per SM (registers and shared memory allow it): one's dequantization can fill the
            # other's wgmma wait (bench/inspect_sass.py).
            C(block_m=128, block_n=128, num_warps=8, num_stages=4),
            C(block_m=128, block_n=64, num_warps=4, num_stages=4),
        ]
    if m <= 64:  # decode sizes want swapped operands, which packed dequantization does not support
        shapes += [C(block_m=bm, block_n=bn, num_warps=4, num_stages=4) for bn in (32, 64)]
    return shapes + ([replace(c, packed_dequant=True) for c in shapes if not c.swap] if packed else [])


def _best(label: str, fn: Callable[[Any], object], cands: list[Any], iters: int) -> tuple[Any, list[list[Any]]]:
    timed = []
    for c in cands:
        try:
            timed.append((graph_ms(lambda c=c: fn(c), iters), c))
        except Exception as e:  # a launch shape this GPU cannot run (shared memory, registers): skip it
            print(f"  {label}: {c} failed: {type(e).__name__}: {str(e)[:120]}")
    timed.sort(key=lambda t: t[0])
    for ms, c in timed[:3]:
        print(f"  {label}: {ms:.4f} ms  {c}")
    return timed[0][1], [[ms, repr(c)] for ms, c in timed]


def bench_gemm(args: argparse.Namespace) -> list[dict[str, object]]:
    from qserve.kernels.w4a8_gemm import dequantize_int8_weight

    dev = "cuda"
    n, k = args.n, args.k
    gen = torch.Generator(device=dev).manual_seed(0)
    w = torch.randn(n, k, device=dev, generator=gen).bfloat16()
    qw, s1, s2, z2 = _g128_weight(w)
    w8 = dequantize_int8_weight(qw, s2, z2)  # [N, K] int8: w8.T is the column-major operand cuBLAS wants
    rows = []
    for m in args.m:
        x = torch.randn(m, k, device=dev, generator=gen).bfloat16()
        rows.append(_gemm_row(args, x, w, (qw, s1, s2, z2), w8))
    return rows


def _gemm_row(
    args: argparse.Namespace, x: torch.Tensor, w: torch.Tensor, weight: tuple[torch.Tensor, ...], w8: torch.Tensor
) -> dict[str, object]:
    from qserve.kernels.w4a8_gemm import w4a8_gemm
    from qserve.quant.formats import quantize_activation

    qw, s1, s2, z2 = weight
    (m, k), n = x.shape, w.shape[0]
    qa, a_s = quantize_activation(x)
    row: dict[str, object] = {"M": m, "N": n, "K": k}
    cfg = None
    if args.sweep:
        cfg, table = _best(
            f"w4a8 M={m}",
            lambda c: w4a8_gemm(qa, a_s, qw, s1, s2, z2, None, torch.bfloat16, config=c),
            [c for c in _gemm_candidates(m, args.packed_ok) if (k // 128) % c.split_k == 0],
            args.iters,
        )
        row["config"] = repr(cfg)
        row["sweep"] = table
    row["bf16_ms"] = graph_ms(lambda: torch.matmul(x, w.T), args.iters)
    row["w4a8_ms"] = graph_ms(lambda: w4a8_gemm(qa, a_s, qw, s1, s2, z2, None, torch.bfloat16, config=cfg), args.iters)
    if args.packed_ok:
        # The same launch shape with byte-wise and with packed dequantization, side by side.
        from dataclasses import replace

        from qserve.kernels.w4a8_gemm import pick_w4a8_config

        shape = cfg if cfg is not None else pick_w4a8_config(m, n, k)
        if shape.swap:  # packed dequantization needs unswapped operands: compare at the same tile, unswapped
            shape = replace(shape, swap=False, split_k=1)
        for mode, flag in (("bytewise", False), ("packed", True)):
            c = replace(shape, packed_dequant=flag)
            row[f"{mode}_ms"] = graph_ms(
                lambda c=c: w4a8_gemm(qa, a_s, qw, s1, s2, z2, None, torch.bfloat16, config=c), args.iters
            )
        row["packed_speedup"] = row["bytewise_ms"] / row["packed_ms"]  # type: ignore[operator]

    def layer() -> torch.Tensor:
        # quantize_activation's rule without its host-side finiteness check (not capturable in a graph).
        s = (x.float().abs().amax(dim=1) / 127).half()
        q = torch.round(x.float() / torch.where(s == 0, 1.0, s.float())[:, None]).clamp(-127, 127).to(torch.int8)
        return w4a8_gemm(q, s, qw, s1, s2, z2, None, torch.bfloat16, config=cfg)

    row["w4a8_layer_ms"] = graph_ms(layer, args.iters)
    qa_pad = qa if m > 16 else torch.nn.functional.pad(qa, (0, 0, 0, 32 - m))
    row["int_mm_rows"] = int(qa_pad.shape[0])
    try:
        row["int_mm_ms"] = graph_ms(lambda: torch._int_mm(qa_pad, w8.T), args.iters)
    except RuntimeError as e:  # an old torch or an unsupported shape: context only, keep the rest
        print(f"  torch._int_mm failed: {str(e)[:120]}")
        row["int_mm_ms"] = float("nan")
    row["speedup_vs_bf16"] = row["bf16_ms"] / row["w4a8_ms"]  # type: ignore[operator]
    row["layer_speedup_vs_bf16"] = row["bf16_ms"] / row["w4a8_layer_ms"]  # type: ignore[operator]
    row["w4a8_tops"] = 2 * m * n * k / (row["w4a8_ms"] * 1e-3) / 1e12  # type: ignore[operator]
    print(
        f"GEMM M={m:5d} N={n} K={k}: bf16 {row['bf16_ms']:.4f} ms, w4a8 {row['w4a8_ms']:.4f} ms "
        f"(x{row['speedup_vs_bf16']:.2f}, {row['w4a8_tops']:.0f} TOPS), with act quant {row['w4a8_layer_ms']:.4f} "
        f"ms (x{row['layer_speedup_vs_bf16']:.2f}), torch._int_mm {row['int_mm_ms']:.4f} ms"
        + (f", packed dequant x{row['packed_speedup']:.2f} of byte-wise" if "packed_speedup" in row else "")
    )
    return row


def bench_attention(args: argparse.Namespace) -> dict[str, object]:
    from qserve.kernels.kv4_attention import AttentionConfig, paged_decode_attention
    from qserve.quant.kv import KVQuantizer

    dev = "cuda"
    b, hq, hkv, d, ctx, page = args.batch, 32, 8, 128, args.context, args.page_size
    pages_per = -(-ctx // page)
    gen = torch.Generator(device=dev).manual_seed(1)
    k = torch.randn(b, hkv, ctx, d, device=dev, generator=gen, dtype=torch.float16)
    v = torch.randn(b, hkv, ctx, d, device=dev, generator=gen, dtype=torch.float16)
    q = torch.randn(b, hq, d, device=dev, generator=gen, dtype=torch.float16)
    # Pages in a shuffled order, as an engine's free list hands them out.
    perm = torch.randperm(b * pages_per, device=dev, generator=gen)
    table = perm.reshape(b, pages_per).int()
    lens = torch.full((b,), ctx, dtype=torch.int32, device=dev)

    def to_pages(x: torch.Tensor) -> torch.Tensor:  # [B, Hkv, L, D'] -> [pages, page, Hkv, D']
        x = x.transpose(1, 2).reshape(b * pages_per, page, hkv, x.shape[-1])
        out = torch.empty_like(x)
        out[perm] = x
        return out

    def to_page_scales(x: torch.Tensor) -> torch.Tensor:  # [B, Hkv, L] -> [pages, page, Hkv]
        x = x.transpose(1, 2).reshape(b * pages_per, page, hkv)
        out = torch.empty_like(x)
        out[perm] = x
        return out

    quant = KVQuantizer(4)
    kq, vq = quant.quantize(k), quant.quantize(v)
    cache4 = (
        to_pages(kq.codes), to_page_scales(kq.scales), to_page_scales(kq.zeros),
        to_pages(vq.codes), to_page_scales(vq.scales), to_page_scales(vq.zeros),
    )  # fmt: skip
    cache16 = (to_pages(k), None, None, to_pages(v), None, None)
    scale = d**-0.5
    q4 = q[:, :, None]  # [B, Hq, 1, D]
    res: dict[str, object] = {"batch": b, "context": ctx, "page_size": page, "Hq": hq, "Hkv": hkv, "head_dim": d}
    cfg = None
    if args.sweep:
        cands = [
            AttentionConfig(block_t=bt, num_splits=s, num_warps=w) for bt in (32, 64) for s in (1, 2) for w in (4,)
        ]
        cfg, table_s = _best(
            "kv4 attention",
            lambda c: paged_decode_attention(q, *cache4, table, lens, scale, 4, config=c),
            cands,
            args.iters,
        )
        res["config"] = repr(cfg)
        res["sweep"] = table_s
    res["sdpa_fp16_ms"] = graph_ms(
        lambda: torch.nn.functional.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=True), args.iters
    )
    res["kv4_ms"] = graph_ms(lambda: paged_decode_attention(q, *cache4, table, lens, scale, 4, config=cfg), args.iters)
    res["kv16_paged_ms"] = graph_ms(
        lambda: paged_decode_attention(q, *cache16, table, lens, scale, 16, config=cfg), args.iters
    )
    res["kv4_speedup_vs_sdpa"] = res["sdpa_fp16_ms"] / res["kv4_ms"]  # type: ignore[operator]
    kv4_bytes = sum(t.numel() * t.element_size() for t in cache4)
    res["kv4_gbps"] = kv4_bytes / (res["kv4_ms"] * 1e-3) / 1e9  # type: ignore[operator]
    ref = torch.nn.functional.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=True)[:, :, 0]
    got = paged_decode_attention(q, *cache4, table, lens, scale, 4, config=cfg)
    res["kv4_vs_fp16_max_abs_err"] = float((got.float() - ref.float()).abs().max())
    print(
        f"decode attention B={b} ctx={ctx} page={page}: SDPA fp16 {res['sdpa_fp16_ms']:.4f} ms, KV4 paged "
        f"{res['kv4_ms']:.4f} ms (x{res['kv4_speedup_vs_sdpa']:.2f}, {res['kv4_gbps']:.0f} GB/s), KV16 paged "
        f"{res['kv16_paged_ms']:.4f} ms"
    )
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interpret = os.environ.get("TRITON_INTERPRET", "") == "1"
    if not torch.cuda.is_available() and not (args.check_only and interpret):
        print(
            "bench_kernels.py needs a CUDA GPU (Triton kernels); none found. On a CPU, only "
            "`TRITON_INTERPRET=1 python bench_kernels.py --check-only` runs.",
            file=sys.stderr,
        )
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    errs = check(device)
    print(f"kernels vs references: {errs}")
    if errs["gemm_max_rel_err"] > 1e-5 or errs["attention_max_abs_err"] > 1e-2:
        print("FAIL: a kernel disagrees with its reference", file=sys.stderr)
        return 1
    args.packed_ok = errs["packed_gemm_max_rel_err"] <= 1e-5
    if not args.packed_ok:
        print("WARNING: packed dequantization disagrees with the reference; it is left out of the timings")
    out: dict[str, object] = {"check": errs}
    if not args.check_only:
        out["device"] = torch.cuda.get_device_name()
        out["torch"] = torch.__version__
        out["timing"] = "CUDA graph replay (10 calls per replay), median"
        if not args.skip_gemm:
            out["gemm"] = bench_gemm(args)
        if not args.skip_attention:
            out["attention"] = bench_attention(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
