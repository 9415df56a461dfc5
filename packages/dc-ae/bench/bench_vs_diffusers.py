"""Our DC-AE against diffusers' ``AutoencoderDC`` at a real preset, same weights, CPU fp32.

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025), Sec. 3; the reference is diffusers' ``AutoencoderDC``, which is what users would
otherwise run. Both models hold the same random (default-initialised, seeded) weights: ours are
converted with :func:`dc_ae.layouts.to_diffusers` and loaded strictly into diffusers.

Timings are interleaved (ours, diffusers, ours, ...) so that load from other processes on a
shared machine hits both sides alike; the median of each is reported. Goals: time ratio
ours/diffusers at most 1.0, max abs output difference at most 1e-5.

    PYTHONPATH=packages/dc-ae/src python packages/dc-ae/bench/bench_vs_diffusers.py
    PYTHONPATH=packages/dc-ae/src python packages/dc-ae/bench/bench_vs_diffusers.py --preset dc-ae-f32c32-in-1.0 --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from dc_ae import DCAE, DCAEConfig, layouts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_pair(preset: str, seed: int) -> tuple[DCAE, torch.nn.Module]:
    """Our model with seeded default-init weights and diffusers' model holding the same weights."""
    from diffusers import AutoencoderDC

    cfg = DCAEConfig.from_name(preset)
    torch.manual_seed(seed)
    ours = DCAE(cfg).eval()
    dcfg = {k: v for k, v in layouts.diffusers_config(cfg).items() if not k.startswith("_")}
    with torch.device("meta"):
        ref = AutoencoderDC(**dcfg)
    ref.load_state_dict(layouts.to_diffusers(ours.state_dict(), cfg), strict=True, assign=True)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="dc-ae-f32c32-sana-1.0")
    parser.add_argument("--size", type=int, default=512, help="image height and width in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each model (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    ours, ref = build_pair(args.preset, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g) * 2 - 1  # [B, 3, H, W] in [-1, 1]

    with torch.inference_mode():
        z_ours = ours.encode(x)
        z_ref = ref.encode(x).latent
        # Decode the same latent on both sides so the decoder comparison is independent of the encoder's.
        y_ours = ours.decode(z_ours)
        y_ref = ref.decode(z_ours).sample
        for _ in range(args.warmup - 1):
            ours.encode(x), ref.encode(x)
        enc = interleaved_median({"ours": lambda: ours.encode(x), "diffusers": lambda: ref.encode(x)}, args.repeats)
        dec = interleaved_median(
            {"ours": lambda: ours.decode(z_ours), "diffusers": lambda: ref.decode(z_ours)}, args.repeats
        )

    import diffusers

    result = {
        "preset": args.preset,
        "image": [args.batch, 3, args.size, args.size],
        "latent": list(z_ours.shape),
        "encode_s": enc,
        "decode_s": dec,
        "encode_ratio": enc["ours"] / enc["diffusers"],
        "decode_ratio": dec["ours"] / dec["diffusers"],
        "latent_max_abs_diff": (z_ours - z_ref).abs().max().item(),
        "latent_max_abs": z_ref.abs().max().item(),
        "image_max_abs_diff": (y_ours - y_ref).abs().max().item(),
        "image_max_abs": y_ref.abs().max().item(),
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.preset}  image {result['image']} -> latent {result['latent']}  fp32, CPU, {args.threads} threads")
    print(f"{'':8} {'ours s':>9} {'diffusers s':>12} {'ratio':>7}")
    for name, t in (("encode", enc), ("decode", dec)):
        print(f"{name:8} {t['ours']:9.3f} {t['diffusers']:12.3f} {t['ours'] / t['diffusers']:7.3f}")
    print(f"max |z_ours - z_diffusers| = {result['latent_max_abs_diff']:.3g} (max |z| {result['latent_max_abs']:.3g})")
    print(f"max |x_ours - x_diffusers| = {result['image_max_abs_diff']:.3g} (max |x| {result['image_max_abs']:.3g})")
    print(f"median of {args.repeats} interleaved runs; torch {torch.__version__}, diffusers {diffusers.__version__}")
    print(f"{result['cpu']}, nproc {result['nproc']}, {result['date']}")


if __name__ == "__main__":
    main()
