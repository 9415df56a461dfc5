"""Layer-output SNR of W4A16 RTN, W4A4 RTN, W4A4 SmoothQuant and W4A4 SVDQuant (INT4, NVFP4).

SVDQuant (Li et al., ICLR 2025), Sec. 4 and Table 1's baselines: on layers whose activations carry a few channels
20-100x larger than the rest, SVDQuant should score at least 6 dB above SmoothQuant W4A4 and within 3 dB of
W4A16 (the issue's quality goal). Two layer sets:

(a) synthetic outlier layers (Gaussian tokens with a few large, offset channels; weights with a decaying
    spectrum), the construction of ``tests/sq_testing.py`` (copied: benchmarks do not import the tests);
(b) the 1x1 convolutions of a *trained* network, the DC-AE autoencoder of the sibling ``dc-ae`` package (its
    EfficientViT blocks: attention ``qkv``/``proj``, MLP ``inverted_conv``/``point_conv``), used as ``[N, K]``
    matrices, with their real inputs captured on a bundled photograph. ``dc_ae`` is a benchmark-only import,
    not a dependency of ``svdquant``; without it, set (b) is skipped and said so.

Each baseline is run in both 4-bit formats (INT4 in groups of 64, NVFP4 in groups of 16), so SVDQuant in a format
is compared with the baselines in the same format. SVDQuant is the package's own path,
``SVDQLinear.from_linear`` (smoothing search + low-rank branch, randomized SVD, rank ``min(--rank, min(N, K) // 4)``
so that a small layer's branch stays a small fraction of it), evaluated with its reference forward.

Run: ``python packages/svdquant/bench/bench_layer_snr.py [--json] [--rank 32] [--layers 6]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from functools import partial
from typing import Any, Literal

import torch
from _bench_common import outlier_activations, snr_db, structured_weight
from torch import Tensor, nn

from svdquant.config import SVDQuantConfig
from svdquant.formats import fake_quantize_activation, fake_quantize_weight
from svdquant.smoothing import fake_quant_linear, smoothquant_scale
from svdquant.svdq_linear import SVDQLinear

FORMATS: dict[Literal["int4", "nvfp4"], int] = {"int4": 64, "nvfp4": 16}


def layer_snrs(x: Tensor, w: Tensor, rank: int, num_grids: int) -> dict[str, float]:
    """Every method's output SNR (dB) on one layer ``w`` ``[N, K]`` with inputs ``x`` ``[M, K]``."""
    ref = x @ w.T
    ones = torch.ones(w.shape[1])
    out: dict[str, float] = {}
    for fmt, group in FORMATS.items():
        qw = partial(fake_quantize_weight, fmt=fmt, group_size=group)
        qx = partial(fake_quantize_activation, fmt=fmt, group_size=group)
        out[f"w4a16_{fmt}"] = snr_db(ref, x @ qw(w).T)
        out[f"w4a4_rtn_{fmt}"] = snr_db(ref, fake_quant_linear(x, ones, qw(w), qx))
        s = smoothquant_scale(x.abs().amax(0), w.abs().amax(0))
        out[f"smoothquant_{fmt}"] = snr_db(ref, fake_quant_linear(x, s, qw(w * s), qx))
        linear = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(w)
        cfg = SVDQuantConfig(fmt=fmt, rank=rank, svd="randomized", lowrank_iters=20, num_grids=num_grids)
        layer = SVDQLinear.from_linear(linear, x, cfg)
        with torch.no_grad():
            out[f"svdquant_{fmt}"] = snr_db(ref, layer(x))
    return out


def synthetic_layers(count: int) -> list[tuple[str, Tensor, Tensor]]:
    shapes = [(1024, 1024), (3072, 1024), (1024, 3072)]
    layers = []
    for i in range(count):
        n, k = shapes[i % len(shapes)]
        x = outlier_activations(512, k, seed=10 + i)
        layers.append((f"synthetic{i} {n}x{k}", x, structured_weight(n, k, seed=20 + i)))
    return layers


def dcae_layers(max_tokens: int) -> tuple[list[tuple[str, Tensor, Tensor]], str]:
    """The trained DC-AE's 1x1 convolutions as ``[N, K]`` weights with their inputs on a real photograph."""
    try:
        import dc_ae
        import dc_ae.data as dc_data
    except ImportError as e:
        return [], f"dc_ae not importable ({e}); trained-network layers skipped"
    model = dc_ae.load_default().eval().float()
    try:
        photo = next(iter(dc_data.sample_photographs(["astronaut"]).values()))
        image = dc_data.to_tensor(photo)[None]
        source = "photograph 'astronaut'"
    except Exception as e:  # scikit-image's bundled photographs missing: a random image still exercises the layers
        image = torch.rand(1, 3, 512, 512) * 2 - 1
        source = f"random image (photographs unavailable: {e})"
    image = nn.functional.interpolate(image, size=(256, 256), mode="bilinear", antialias=True)
    convs = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
    }
    seen: dict[str, Tensor] = {}

    def hook(name: str) -> Any:
        def fn(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().float()
            seen[name] = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # [B*H*W, C_in] tokens

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in convs.items()]
    # LiteMLA applies its qkv/proj weights through a module-level helper (F.linear on the weight), never calling
    # the conv modules: wrap that helper to see their inputs too.
    by_weight = {id(m.weight): n for n, m in convs.items()}
    lite_mla = importlib.import_module("dc_ae.lite_mla")
    pointwise = getattr(lite_mla, "_pointwise", None)

    def recording_pointwise(x: Tensor, weight: Tensor) -> Tensor:
        name = by_weight.get(id(weight))
        if name is not None:
            seen[name] = x.detach().float().permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        return pointwise(x, weight)  # type: ignore[misc]

    if pointwise is not None:
        lite_mla._pointwise = recording_pointwise  # type: ignore[attr-defined]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for h in handles:
            h.remove()
        if pointwise is not None:
            lite_mla._pointwise = pointwise  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(0)
    layers = []
    for name, m in convs.items():
        if name not in seen:
            continue  # applied in a way neither hook sees
        x = seen[name]
        if x.shape[0] > max_tokens:
            x = x[torch.randperm(x.shape[0], generator=g)[:max_tokens]]
        w = m.weight.detach().float().reshape(m.out_channels, m.in_channels)
        if m.in_channels % 64:
            continue  # INT4 groups of 64 need in_features divisible by 64
        # A conv's bias adds the same to every method's output: the SNR is measured without it.
        layers.append((f"dc-ae {name} {w.shape[0]}x{w.shape[1]}", x, w))
    return layers, f"DC-AE ({model.config.name}) on a {source}, 256x256"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rank", type=int, default=32, help="rank of the low-rank branch (capped at min(N,K)//4)")
    parser.add_argument("--layers", type=int, default=3, help="synthetic layers")
    parser.add_argument("--dcae-layers", type=int, default=12, help="DC-AE layers (0: skip)")
    parser.add_argument("--num-grids", type=int, default=10, help="smoothing-search grid resolution")
    parser.add_argument("--max-tokens", type=int, default=1024, help="input rows per layer")
    args = parser.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    sets: dict[str, list[tuple[str, Tensor, Tensor]]] = {"synthetic": synthetic_layers(args.layers)}
    notes = {"synthetic": "8 outlier channels 20-100x, 512 tokens, structured weights"}
    if args.dcae_layers:
        layers, note = dcae_layers(args.max_tokens)
        # Every other EfficientViT block (encoder and decoder), all four layer kinds of each block.
        blocks = list(dict.fromkeys(name.split()[1].rsplit(".", 2)[0] for name, _, _ in layers))
        kept = set(blocks[::2])
        picked = [entry for entry in layers if entry[0].split()[1].rsplit(".", 2)[0] in kept]
        sets["dc-ae"], notes["dc-ae"] = picked[: args.dcae_layers], note
    results: dict[str, Any] = {"notes": notes, "sets": {}}
    for set_name, layers in sets.items():
        rows = []
        for name, x, w in layers:
            rank = min(args.rank, min(w.shape) // 4)
            rows.append({"layer": name, "rank": rank, **layer_snrs(x, w, rank, args.num_grids)})
        methods = [k for k in rows[0] if k not in ("layer", "rank")] if rows else []
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in methods} if rows else {}
        goals = {
            fmt: {
                "svdq_minus_smoothquant_db": mean[f"svdquant_{fmt}"] - mean[f"smoothquant_{fmt}"],
                "w4a16_minus_svdq_db": mean[f"w4a16_{fmt}"] - mean[f"svdquant_{fmt}"],
                "met": mean[f"svdquant_{fmt}"] >= mean[f"smoothquant_{fmt}"] + 6.0
                and mean[f"svdquant_{fmt}"] >= mean[f"w4a16_{fmt}"] - 3.0,
            }
            for fmt in FORMATS
            if rows
        }
        results["sets"][set_name] = {"layers": rows, "mean": mean, "goals": goals}
    results["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for set_name, res in results["sets"].items():
        print(f"\n== {set_name}: {notes[set_name]}")
        if not res["layers"]:
            print("(no layers)")
            continue
        methods = list(res["mean"])
        print(f"{'layer':48s} {'r':>3s} " + " ".join(f"{m:>17s}" for m in methods))
        for r in [*res["layers"], {"layer": "MEAN", "rank": "", **res["mean"]}]:
            print(f"{r['layer']:48s} {r['rank']!s:>3s} " + " ".join(f"{r[m]:17.2f}" for m in methods))
        for fmt, g in res["goals"].items():
            print(
                f"{fmt}: SVDQuant - SmoothQuant = {g['svdq_minus_smoothquant_db']:+.2f} dB (goal >= +6), "
                f"W4A16 - SVDQuant = {g['w4a16_minus_svdq_db']:+.2f} dB (goal <= 3): {'MET' if g['met'] else 'NOT MET'}"
            )
    print(f"\n{results['seconds']:.1f} s")


if __name__ == "__main__":
    main()
