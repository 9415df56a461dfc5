"""PSNR of a 4-bit Linear DiT's samples against the 16-bit model's, same seeds: RTN, SmoothQuant, SVDQuant.

SVDQuant (Li et al., ICLR 2025), Sec. 5.1-5.2 and Table 1: image quality of W4A4 models is measured against the
16-bit model's images generated from the same noise (PSNR, "how close to the original"), next to W4A16 and the
W4A4 baselines without a low-rank branch (RTN, SmoothQuant). Here the DiT is a small Linear DiT (SANA,
Xie et al., ICLR 2025) trained for a few CPU minutes with the ``linear_dit`` package's own training entry point
(:func:`linear_dit.training.train`, what ``linear-dit train`` runs) on the synthetic class-conditional latents of
:func:`linear_dit.data.make_synthetic_dataset`. The "images" are the generated ``[C, H, W]`` latent arrays
themselves (the synthetic latents have 4 channels, which no bundled autoencoder decodes).

Reference: the trained model cast to bf16 (weights and activations). Every quantized model is built from that
bf16 model, so 16-bit scales and 16-bit activations before quantization, as the engine runs it:

* SVDQuant INT4 / NVFP4: :func:`svdquant.quantize_` (smoothing search + low-rank branch, the default filters:
  embedders and final layer in 16 bits, adaLN modulation ``t_block`` at W4A16), calibrated on the DiT inputs
  along real sampling trajectories (Flow-DPM-Solver with CFG, ``--calib-steps`` steps, captions and noise that
  are not those of the evaluation);
* the baselines, on exactly the modules ``quantize_`` replaced in the same format, with the same W4A16
  assignment: rank-0 :class:`svdquant.SVDQLinear` layers built here (no low-rank branch at all, which
  ``SVDQuantConfig`` cannot express since its rank is at least 1) -- W4A16 RTN (weights only), W4A4 RTN (no
  smoothing) and W4A4 SmoothQuant (``s = max|x|^0.5 / max|W|^0.5`` per input channel, from the same calibration
  run). A 1x1 convolution that ``quantize_`` replaced gets the same rank-0 layer on channels-last inputs.

Which modules went to 4 bits is measured, not assumed: the report lists the replaced modules per method and the
fraction of the DiT's Linear + 1x1-conv weight parameters they hold.

PSNR per image is ``10 log10(range^2 / MSE)`` with ``range = max - min`` of the reference image; the table gives
the mean (and minimum) over images. The class accuracy and Fréchet distances of :mod:`linear_dit.quality` are
reported for every sample set, next to the real-vs-real floor at the same sample count.

    OMP_NUM_THREADS=1 python packages/svdquant/bench/bench_dit_psnr.py [--workdir DIR] [--json] [--out FILE]

The trained checkpoint is cached in ``--workdir`` (keyed by the training settings), so reruns skip training.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from svdquant import SVDQLinear, SVDQuantConfig, quantize_
from svdquant.errors import SVDQuantError
from svdquant.formats import quantize_weight
from svdquant.smoothing import smoothquant_scale

FORMATS = ("int4", "nvfp4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "svdquant_bench_dit_psnr")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--train-per-class", type=int, default=256)
    p.add_argument("--size", type=int, default=8, help="latent height and width")
    p.add_argument("--hidden", type=int, default=64, help="model width")
    p.add_argument("--depth", type=int, default=8)
    p.add_argument(
        "--mlp-ratio", type=float, default=3.0, help="Mix-FFN ratio (3: hidden 192, a multiple of INT4's group 64)"
    )
    p.add_argument("--steps", type=int, default=1200, help="training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=32, help="evaluation images (balanced over classes)")
    p.add_argument("--sample-steps", type=int, default=20, help="Flow-DPM-Solver steps")
    p.add_argument("--guidance", type=float, default=2.0, help="CFG scale (the trainer benchmark's)")
    p.add_argument("--calib-images", type=int, default=8, help="calibration trajectories")
    p.add_argument("--calib-steps", type=int, default=10, help="sampler steps of each calibration trajectory")
    p.add_argument("--rank", type=int, default=8, help="SVDQuant low-rank branch rank (width 64: 1/8 of it)")
    p.add_argument("--num-grids", type=int, default=20, help="smoothing-search grid resolution")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    return p.parse_args(argv)


# -- training (cached) -------------------------------------------------------------------------------------------


def train_model(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], Any]:
    """The trained (EMA) model, a summary of its training, and the held-out data set; trains only when the
    workdir holds no checkpoint for these exact settings."""
    from linear_dit.checkpoint import load
    from linear_dit.config import LinearDiTConfig
    from linear_dit.data import make_synthetic_dataset, save_latent_dataset
    from linear_dit.training import TrainConfig, train

    common = dict(num_classes=args.classes, height=args.size, width=args.size, class_seed=args.seed)
    heldout = make_synthetic_dataset(samples_per_class=64, seed=args.seed + 2, **common)
    key = {k: getattr(args, k) for k in ("classes", "train_per_class", "size", "hidden", "depth", "mlp_ratio")}
    key |= {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "warmup", "ema", "seed")}
    tag = "_".join(f"{v}" for v in key.values()).replace(".", "p")
    run_dir = args.workdir / f"run_{tag}"
    summary_file = run_dir / "bench_summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if summary.get("key") == key and Path(summary["model_path"]).exists():
            return load(summary["model_path"]).eval(), {**summary, "cached": True}, heldout
    run_dir.mkdir(parents=True, exist_ok=True)
    train_set = make_synthetic_dataset(samples_per_class=args.train_per_class, seed=args.seed, **common)
    val_set = make_synthetic_dataset(samples_per_class=32, seed=args.seed + 1, **common)
    save_latent_dataset(train_set, run_dir / "train.safetensors")
    save_latent_dataset(val_set, run_dir / "val.safetensors")
    arch = LinearDiTConfig(
        name="bench-dit-psnr",
        in_channels=train_set.latent_shape[0],
        hidden_size=args.hidden,
        depth=args.depth,
        mlp_ratio=args.mlp_ratio,
        attention_head_dim=32 if args.hidden % 32 == 0 else 16,
        num_cross_attention_heads=4 if args.hidden % 4 == 0 else 2,
        caption_channels=train_set.caption_channels,
        sample_size=args.size,
        text_max_length=train_set.text_length,
        flow_shift=1.0,
    )
    cfg = TrainConfig(
        model=arch,
        data=run_dir / "train.safetensors",
        val_data=run_dir / "val.safetensors",
        out_dir=run_dir / "run",
        resume=True,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        lr_schedule="cosine",
        ema_decay=args.ema,
        flow_shift=1.0,
        cond_dropout=0.1,
        log_every=100,
        val_every=max(1, args.steps // 4),
        save_every=max(1, args.steps // 4),
        seed=args.seed,
        device="cpu",
    )
    result = train(cfg, progress=False)
    summary = {
        "key": key,
        "model_path": str(result.model_path),
        "train_seconds": round(result.wall_seconds, 1),
        "steps": result.step,
        "val_loss_before": result.initial_val_loss,
        "val_loss_after_ema": result.final_val_loss_ema,
        "params": sum(p.numel() for p in result.model.parameters()),
        "architecture": arch.model_dump(),
    }
    summary_file.write_text(json.dumps(summary, indent=2))
    return load(str(result.model_path)).eval(), {**summary, "cached": False}, heldout


# -- baselines: rank-0 SVDQLinear layers -------------------------------------------------------------------------


class _Pointwise(nn.Module):
    """A 1x1 convolution ``[B, K, H, W] -> [B, N, H, W]`` run by a linear layer on channels-last inputs."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)


def _is_pointwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.stride == (1, 1)


def _weight2d(m: nn.Module) -> Tensor:
    assert isinstance(m, nn.Linear | nn.Conv2d)
    w = m.weight.detach()
    return w.reshape(w.shape[0], -1)


def baseline_layer(m: nn.Module, fmt: str, w4a16: bool, x_absmax: Tensor | None) -> nn.Module:
    """A rank-0 :class:`SVDQLinear` of ``m`` (Linear or 1x1 conv): RTN when ``x_absmax`` is None, else SmoothQuant."""
    w = _weight2d(m)
    n, k = w.shape
    dtype = w.dtype
    s = torch.ones(k)
    if x_absmax is not None:
        finfo = torch.finfo(dtype)
        raw = smoothquant_scale(x_absmax.float(), w.float().abs().amax(0))
        s = raw.clamp(min=finfo.tiny, max=finfo.max).to(dtype).float()
    qw = quantize_weight((w.float() * s).to(dtype), fmt, None)  # type: ignore[arg-type]
    layer = SVDQLinear(
        k, n, 0, fmt=fmt, bias=m.bias is not None, w4a16=w4a16, dtype=dtype, wcscales=qw.wcscales is not None
    )
    with torch.no_grad():
        layer.qweight.copy_(qw.qweight)
        layer.wscales.copy_(qw.wscales)
        if qw.wtscale is not None and layer.wtscale is not None:
            layer.wtscale.copy_(qw.wtscale.float().reshape(1))
        if qw.wcscales is not None and layer.wcscales is not None:
            layer.wcscales.copy_(qw.wcscales)
        layer.smooth_factor.copy_(s.to(dtype))
        bias = getattr(m, "bias", None)
        if isinstance(bias, Tensor) and layer.bias is not None:
            layer.bias.copy_(bias.detach())
    return _Pointwise(layer) if _is_pointwise(m) else layer


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# -- sampling, calibration, scores -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    guidance: float
    steps: int
    seed: int


def generate(model: nn.Module, captions: Any, s: Sampling) -> Tensor:
    from linear_dit.quality import generate_for_captions

    return generate_for_captions(model, captions, guidance_scale=s.guidance, steps=s.steps, seed=s.seed)


def psnr(reference: Tensor, images: Tensor) -> list[float]:
    """Per-image PSNR (dB), the data range of each reference image as the peak."""
    ref, img = reference.double().flatten(1), images.double().flatten(1)
    rng = ref.amax(1) - ref.amin(1)
    mse = (ref - img).square().mean(1).clamp(min=1e-30)
    return (10 * torch.log10(rng.square() / mse)).tolist()


def capture_absmax(model: nn.Module, names: list[str], run: Any) -> dict[str, Tensor]:
    """Per-input-channel max |x| of the named modules (Linear: last dim; 1x1 conv: dim 1) over ``run(model)``."""
    found: dict[str, Tensor] = {}
    handles = []
    for name in names:
        m = model.get_submodule(name)
        dim = 1 if isinstance(m, nn.Conv2d) else -1

        def hook(_m: nn.Module, a: tuple[Tensor, ...], name: str = name, dim: int = dim) -> None:
            x = a[0].detach().float().movedim(dim, -1)
            cur = x.abs().reshape(-1, x.shape[-1]).amax(0)
            found[name] = cur if name not in found else torch.maximum(found[name], cur)

        handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in handles:
            h.remove()
    return found


def linear_like_params(model: nn.Module) -> dict[str, int]:
    """Weight parameter counts of every nn.Linear (FusedQKV included) and 1x1 conv of the float model."""
    return {name: m.weight.numel() for name, m in model.named_modules() if isinstance(m, nn.Linear) or _is_pointwise(m)}


def svdquant_model(
    model: nn.Module, fmt: str, args: argparse.Namespace, run: Any
) -> tuple[nn.Module, dict[str, Any], list[dict[str, str]]]:
    """``quantize_`` a copy of ``model``; a layer it refuses is added to ``skip`` and the rest quantized again
    (recorded, so the report says what was left in 16 bits and why)."""
    refused: list[dict[str, str]] = []
    base = SVDQuantConfig()
    extra: list[str] = []
    while True:
        cfg = SVDQuantConfig(
            fmt=fmt,
            rank=args.rank,
            num_grids=args.num_grids,
            seed=args.seed,
            skip=(*base.skip, *extra),
        )
        q = copy.deepcopy(model)
        try:
            reports = quantize_(q, cfg, calibration=run)
        except SVDQuantError as e:
            hit = re.search(r"layer '([^']+)'", str(e))
            if hit is None or hit.group(1) in extra:
                raise
            extra.append(hit.group(1))
            refused.append({"module": hit.group(1), "error": str(e)[:300]})
            continue
        return q, {"reports": reports, "config": cfg}, refused


def summarize_modules(names: list[str], total: dict[str, int], w4a16: set[str], fp: nn.Module) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for n in names:
        leaf = re.sub(r"\.\d+\.", ".*.", n)
        kinds[leaf] = kinds.get(leaf, 0) + 1
    p4 = sum(total.get(n, 0) for n in names)
    p_w4a4 = sum(total.get(n, 0) for n in names if n not in w4a16)
    all_p = sum(total.values())
    untouched = sorted(re.sub(r"\.\d+\.", ".*.", n) for n in total if n not in names)
    return {
        "count": len(names),
        "by_pattern": kinds,
        "convs_1x1": sum(1 for n in names if n in total and _is_pointwise(fp.get_submodule(n))),
        "not_in_float_model": [n for n in names if n not in total],
        "w4a16": sorted(w4a16 & set(names)),
        "param_fraction_4bit": p4 / all_p,
        "param_fraction_w4a4": p_w4a4 / all_p,
        "linear_and_1x1_params": all_p,
        "left_16bit_patterns": sorted(set(untouched)),
    }


# -- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    t_start = time.monotonic()
    from linear_dit.data import make_synthetic_dataset
    from linear_dit.quality import score_samples

    fp32, train_info, heldout = train_model(args)
    reference_set, probe = heldout.split(0.5, seed=args.seed)
    per_class = max(1, args.num_images // args.classes)
    assert probe.labels is not None
    idx = torch.cat([(probe.labels == c).nonzero().flatten()[:per_class] for c in range(args.classes)])
    captions = probe.subset(idx)
    assert captions.labels is not None
    calib = make_synthetic_dataset(
        num_classes=args.classes,
        samples_per_class=max(1, args.calib_images // args.classes),
        height=args.size,
        width=args.size,
        seed=args.seed + 3,
        class_seed=args.seed,
    )
    evaluation = Sampling(args.guidance, args.sample_steps, args.seed)
    calibration = Sampling(args.guidance, args.calib_steps, args.seed + 7)

    def run(model: nn.Module) -> None:
        generate(model, calib, calibration)

    bf16 = copy.deepcopy(fp32).to(torch.bfloat16).eval()
    params = linear_like_params(fp32)
    rows: dict[str, dict[str, Any]] = {}
    samples: dict[str, Tensor] = {}
    timings: dict[str, float] = {}

    t0 = time.monotonic()
    samples["bf16"] = generate(bf16, captions, evaluation)
    timings["sample_bf16"] = time.monotonic() - t0
    samples["fp32"] = generate(fp32, captions, evaluation)
    rows["bf16"] = {"method": "bf16 (reference)", "fmt": "-", "modules": None}
    rows["fp32"] = {"method": "fp32 (unquantized)", "fmt": "-", "modules": None}

    modules_info: dict[str, Any] = {}
    for fmt in FORMATS:
        t0 = time.monotonic()
        q, info, refused = svdquant_model(bf16, fmt, args, run)
        timings[f"quantize_svdquant_{fmt}"] = time.monotonic() - t0
        reports = info["reports"]
        names = sorted(reports)
        w4a16 = {n for n, r in reports.items() if r.w4a16}
        summary = summarize_modules(names, params, w4a16, fp32)
        summary["refused"] = refused
        summary["types"] = sorted({type(q.get_submodule(n)).__name__ for n in names})
        summary["layer_snr_db_mean"] = sum(r.snr_db for r in reports.values() if r.snr_db is not None) / max(
            1, len(reports)
        )
        modules_info[fmt] = summary
        samples[f"svdquant_{fmt}"] = generate(q, captions, evaluation)
        rows[f"svdquant_{fmt}"] = {"method": f"SVDQuant W4A4 r{args.rank}", "fmt": fmt, "modules": fmt}
        absmax = capture_absmax(bf16, names, run)
        for key, label, smooth, weight_only in (
            ("w4a16_rtn", "W4A16 RTN", False, True),
            ("w4a4_rtn", "W4A4 RTN", False, False),
            ("w4a4_smoothquant", "W4A4 SmoothQuant", True, False),
        ):
            b = copy.deepcopy(bf16)
            for n in names:
                if n not in params:
                    continue  # reported under "not_in_float_model": no float module of that name to baseline
                m = bf16.get_submodule(n)
                _set_module(b, n, baseline_layer(m, fmt, weight_only or n in w4a16, absmax[n] if smooth else None))
            samples[f"{key}_{fmt}"] = generate(b, captions, evaluation)
            rows[f"{key}_{fmt}"] = {"method": label, "fmt": fmt, "modules": fmt}

    ref = samples["bf16"]
    real = score_samples(captions.latents, captions.labels, reference_set)
    for key, row in rows.items():
        values = psnr(ref, samples[key])
        scores = score_samples(samples[key], captions.labels, reference_set)
        row["psnr_db_mean"] = sum(values) / len(values) if key != "bf16" else None
        row["psnr_db_min"] = min(values) if key != "bf16" else None
        row["accuracy"] = scores.accuracy
        row["fd"] = scores.fd
        row["class_fd"] = scores.class_fd
    total = time.monotonic() - t_start

    arguments = shlex.join(argv if argv is not None else sys.argv[1:])
    command = f"OMP_NUM_THREADS={threads} python packages/svdquant/bench/bench_dit_psnr.py {arguments}".strip()
    report = {
        "command": command,
        "environment": {
            "machine": platform.processor() or platform.machine(),
            "threads": threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        },
        "images": "generated latent arrays [C, H, W] (not decoded: no bundled autoencoder takes 4-channel latents)",
        "reference": "bf16 weights and activations; quantized models are built from the bf16 model",
        "baselines": "rank-0 SVDQLinear layers built by this script on the modules quantize_ replaced (own RTN, "
        "SmoothQuant alpha 0.5); SVDQuant rows are svdquant.quantize_",
        "sampling": {
            "sampler": "flow_dpm_solver",
            "steps": args.sample_steps,
            "guidance": args.guidance,
            "num_images": len(captions),
            "seed": args.seed,
            "image_shape": list(captions.latent_shape),
        },
        "calibration": {"trajectories": len(calib), "steps": args.calib_steps, "guidance": args.guidance},
        "training": {k: v for k, v in train_info.items() if k not in ("key", "model_path")},
        "quantized_modules": modules_info,
        "real_floor": {"accuracy": real.accuracy, "fd": real.fd, "class_fd": real.class_fd},
        "results": rows,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "wall_s": round(total, 1),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    print(f"command : {report['command']}")
    env = report["environment"]
    print(f"machine : {env['machine']}, {env['threads']} thread(s), torch {env['torch']}, {env['date']}")
    tr = report["training"]
    arch = tr["architecture"]
    trained = "cached checkpoint" if tr["cached"] else f"{tr['train_seconds']} s"
    print(
        f"model   : Linear DiT {arch['hidden_size']}-wide, {arch['depth']} blocks, {tr['params']:,} parameters, "
        f"trained {tr['steps']} steps ({trained}); "
        f"val loss {tr['val_loss_before']:.3f} -> {tr['val_loss_after_ema']:.3f} (EMA)"
    )
    s = report["sampling"]
    print(
        f"images  : {s['num_images']} latents {s['image_shape']}, Flow-DPM-Solver {s['steps']} steps, "
        f"CFG {s['guidance']}; reference bf16"
    )
    for fmt, m in report["quantized_modules"].items():
        print(
            f"{fmt:6s}  : {m['count']} modules quantized ({m['convs_1x1']} 1x1 convs, {len(m['w4a16'])} W4A16), "
            f"{100 * m['param_fraction_4bit']:.1f}% of Linear+1x1-conv weights at 4 bits "
            f"({100 * m['param_fraction_w4a4']:.1f}% W4A4); types {m['types']}"
        )
        print(f"          {m['by_pattern']}")
        if m["refused"]:
            print(f"          refused by quantize_ (left 16-bit): {[r['module'] for r in m['refused']]}")
        print(f"          left 16-bit: {m['left_16bit_patterns']}")
    print(
        f"{'method':26s} {'fmt':6s} {'PSNR mean':>10s} {'PSNR min':>9s} {'class acc':>10s} {'FD':>8s} {'class FD':>9s}"
    )
    for row in report["results"].values():
        p = "" if row["psnr_db_mean"] is None else f"{row['psnr_db_mean']:.2f}"
        pm = "" if row["psnr_db_min"] is None else f"{row['psnr_db_min']:.2f}"
        print(
            f"{row['method']:26s} {row['fmt']:6s} {p:>10s} {pm:>9s} {row['accuracy']:10.3f} {row['fd']:8.4f} "
            f"{row['class_fd']:9.4f}"
        )
    fl = report["real_floor"]
    print(
        f"{'real latents (floor)':26s} {'':6s} {'':>10s} {'':>9s} {fl['accuracy']:10.3f} {fl['fd']:8.4f} "
        f"{fl['class_fd']:9.4f}"
    )
    print(f"wall    : {report['wall_s']} s; {report['timings_s']}")


if __name__ == "__main__":
    raise SystemExit(main())
