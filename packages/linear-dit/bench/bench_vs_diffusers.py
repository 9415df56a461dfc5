"""Our Linear DiT forward against diffusers' ``SanaTransformer2DModel``, same weights, CPU fp32.

Papers: Xie et al., "SANA" (ICLR 2025), Sec. 2.2 (the Linear DiT) and "SANA 1.5" (ICML 2025); the
reference is diffusers' ``SanaTransformer2DModel``, which is what users would otherwise run. Both
models hold the same weights: ours are seeded default-initialised, converted with
:func:`linear_dit.layouts.to_layout` and loaded strictly into diffusers' model.

One forward = one sampling step without CFG: latent ``[B, C, H, W]`` (32x32 for 1024px), text
states ``[B, L, caption_channels]`` with a padding mask (the first ``--text-keep`` tokens kept),
timestep 500. Timings are interleaved (ours, diffusers, ours, ...) so that load from other
processes hits both alike; the median of each is reported. Goals: time ratio ours/diffusers at
most 1.0; max abs output difference at most 1e-5 (diffusers' linear attention uses eps 1e-15,
ours the Sana blocks' 1e-8; ``--match-eps`` gives ours 1e-15 too).

    PYTHONPATH=packages/linear-dit/src python packages/linear-dit/bench/bench_vs_diffusers.py
    PYTHONPATH=packages/linear-dit/src python packages/linear-dit/bench/bench_vs_diffusers.py --config tiny --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from _bench_common import machine

from linear_dit import LinearDiT, LinearDiTConfig, layouts


def build_pair(cfg: LinearDiTConfig, seed: int) -> tuple[LinearDiT, torch.nn.Module]:
    """Our model with seeded default-init weights and diffusers' model holding the same weights."""
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(seed)
    ours = LinearDiT(cfg).eval()
    kwargs = {k: v for k, v in layouts.diffusers_config(cfg).items() if not k.startswith("_")}
    with torch.device("meta"):
        ref = SanaTransformer2DModel(**kwargs)
    ref.load_state_dict(layouts.to_layout(ours.state_dict(), cfg, "diffusers"), strict=True, assign=True)
    # The PE buffer (non-persistent) was built on the meta device: rebuild it for real.
    if ref.patch_embed.pos_embed is not None:
        from diffusers.models.embeddings import get_2d_sincos_pos_embed

        pe = get_2d_sincos_pos_embed(
            cfg.hidden_size, cfg.base_size, base_size=cfg.base_size, interpolation_scale=cfg.pe_interpolation
        )
        ref.patch_embed.pos_embed = pe.float().unsqueeze(0)
    return ours, ref.eval()


def interleaved_median(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each callable, timed round-robin ``repeats`` times."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", default="sana-0.6b-1024px", help="preset name")
    parser.add_argument("--depth", type=int, default=None, help="override the preset's depth (quick checks)")
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-len", type=int, default=300, help="text tokens L")
    parser.add_argument("--text-keep", type=int, default=None, help="unpadded tokens (default: 2/3 of L)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each model (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--match-eps", action="store_true", help="give ours diffusers' linear-attention eps 1e-15")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cfg = LinearDiTConfig.from_name(args.config)
    updates: dict[str, Any] = {}
    if args.depth is not None:
        updates["depth"] = args.depth
    if args.match_eps:
        updates["linear_attention_eps"] = 1e-15
    if updates:
        cfg = LinearDiTConfig.model_validate({**cfg.model_dump(), **updates})
    ours, ref = build_pair(cfg, args.seed)

    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, cfg.in_channels, args.size, args.size, generator=g)
    y = torch.randn(args.batch, args.text_len, cfg.caption_channels, generator=g)
    keep = args.text_keep if args.text_keep is not None else max(1, 2 * args.text_len // 3)
    mask = torch.zeros(args.batch, args.text_len, dtype=torch.long)
    mask[:, :keep] = 1
    t = torch.full((args.batch,), 500.0)

    def run_ours() -> torch.Tensor:
        return ours(x, t, y, mask)

    def run_ref() -> torch.Tensor:
        return ref(x, encoder_hidden_states=y, timestep=t, encoder_attention_mask=mask).sample

    with torch.no_grad():
        out_ours, out_ref = run_ours(), run_ref()
        for _ in range(args.warmup - 1):
            run_ours(), run_ref()
        times = interleaved_median({"ours": run_ours, "diffusers": run_ref}, args.repeats)

    import diffusers

    result = {
        "config": cfg.name if args.depth is None else f"{cfg.name} (depth {cfg.depth})",
        "parameters": ours.num_parameters(),
        "latent": [args.batch, cfg.in_channels, args.size, args.size],
        "text": [args.batch, args.text_len, cfg.caption_channels],
        "text_kept": keep,
        "linear_attention_eps": {"ours": cfg.linear_attention_eps, "diffusers": 1e-15},
        "forward_s": times,
        "ratio": times["ours"] / times["diffusers"],
        "max_abs_diff": (out_ours - out_ref).abs().max().item(),
        "max_abs": out_ref.abs().max().item(),
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cpu": machine("cpu"),
        "nproc": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['config']} ({result['parameters'] / 1e6:.1f}M params)  latent {result['latent']}  "
        f"text {result['text']} ({keep} kept)  fp32, CPU, {args.threads} threads"
    )
    print(f"{'':8} {'ours s':>9} {'diffusers s':>12} {'ratio':>7}")
    print(f"{'forward':8} {times['ours']:9.4f} {times['diffusers']:12.4f} {result['ratio']:7.3f}")
    print(
        f"max |v_ours - v_diffusers| = {result['max_abs_diff']:.3g} (max |v| {result['max_abs']:.3g}; "
        f"linear-attention eps ours {cfg.linear_attention_eps:g}, diffusers 1e-15)"
    )
    print(f"median of {args.repeats} interleaved runs; torch {torch.__version__}, diffusers {diffusers.__version__}")
    print(f"{result['cpu']}, nproc {result['nproc']}, {result['date']}")


if __name__ == "__main__":
    main()
