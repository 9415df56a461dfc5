"""Train, evaluate and install the embedded default model ``dc-ae-f32c32-small``.

DC-AE (Chen et al., ICLR 2025) phase 1 -- low-resolution full training with L1 + perceptual loss
(Sec. 3.3) -- of the small f32c32 preset (2.75M parameters) on the CPU, on real photographs that
ship inside the scikit-image wheel (:data:`dc_ae.data.TRAIN_PHOTOS`; nothing is downloaded).

    python packages/dc-ae/bench/train_default.py --out runs/default

Steps are fixed (not a time budget), so the run is reproducible: same seed, same machine type,
same weights. Afterwards the script

* evaluates PSNR/SSIM on the held-out photographs (:data:`dc_ae.data.HELDOUT_PHOTOS`: chelsea,
  coffee) and on the training photographs, each at full size centre-cropped to a multiple of 32,
  next to two clearly labelled sanity rows: the same architecture at its random initialisation,
  and bicubic down/up-sampling;
* sets the latent ``scaling_factor`` to ``1 / std`` of the latents of training crops (the
  practice for diffusion on DC-AE latents);
* saves the EMA weights in fp16 in our safetensors format and, unless ``--no-install``, copies
  them to ``src/dc_ae/weights/dc-ae-f32c32-small.safetensors`` (loading upcasts to fp32);
* prints a markdown table and writes ``results.json`` next to the run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dc_ae
from dc_ae.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, sample_photographs, to_tensor
from dc_ae.metrics import psnr, ssim
from dc_ae.train import TrainConfig, train

PRESET = "dc-ae-f32c32-small"
WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "dc_ae" / "weights" / f"{PRESET}.safetensors"


def _center_crop(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = h - h % multiple, w - w % multiple
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top : top + th, left : left + tw]


def _bicubic_roundtrip(x: torch.Tensor, factor: int) -> torch.Tensor:
    # PIL's antialiased bicubic on uint8, the way a user would downscale a photograph.
    u8 = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    im = Image.fromarray(u8)
    w, h = im.size
    small = im.resize((w // factor, h // factor), Image.Resampling.BICUBIC)
    back = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8)
    return to_tensor(back).unsqueeze(0)


@torch.no_grad()
def _evaluate(fn, photos: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    out = {}
    for name, x in photos.items():
        y = fn(x).float().clamp(-1, 1)
        out[name] = {"psnr": float(psnr(y, x)[0]), "ssim": float(ssim(y, x)[0])}
    return out


def _mean(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows.values()])) for k in ("psnr", "ssim")}


@torch.no_grad()
def _latent_std(model: dc_ae.DCAE, folder: Path, resolution: int, n: int = 64) -> float:
    from dc_ae.data import ImageFolder

    ds = ImageFolder(folder, crop_size=resolution, seed=12345)
    zs = []
    for i in range(n):
        ds.set_epoch(i // len(ds))
        zs.append(model.encode(ds[i % len(ds)].unsqueeze(0)))  # [1, c, r/f, r/f]
    return float(torch.cat(zs).std())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/default"), help="run folder (resumes if it holds a state)")
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps (fixed for reproducibility)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=128, help="random-crop size in pixels")
    ap.add_argument("--min-scale", type=float, default=0.35, help="crops come from the photo rescaled by [s, 1]")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--ema-decay", type=float, default=0.99)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--perceptual-network", type=Path, default=None, help="local LPIPS weights (default: weight-free)")
    ap.add_argument("--no-install", action="store_true", help="do not copy the weights into the package")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    out: Path = args.out
    photos_dir = out / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    # BMP: lossless like PNG but decoded ~20x faster, and the loader re-reads a file per crop.
    for name, arr in sample_photographs(TRAIN_PHOTOS).items():
        target = photos_dir / f"{name}.bmp"
        if not target.exists():
            Image.fromarray(arr).save(target)

    cfg = TrainConfig(
        model=PRESET,
        data=photos_dir,
        out_dir=out / "train",
        phase=1,
        resolution=args.resolution,
        min_scale=args.min_scale,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup,
        lr_schedule="cosine",
        min_lr_ratio=0.05,
        weight_decay=0.0,
        ema_decay=args.ema_decay,
        grad_clip=1.0,
        perceptual_network=args.perceptual_network,
        seed=args.seed,
        save_every=100,
        log_every=25,
        device="cpu",
        precision="fp32",
    )
    t0 = time.time()
    result = train(cfg, progress=not args.no_progress)
    train_s = time.time() - t0
    print(f"trained {result.step} steps in {train_s / 60:.1f} min (this process); perceptual: {result.perceptual_kind}")

    assert result.model_path is not None  # single process: this is rank 0
    trained = dc_ae.load(result.model_path, dtype=torch.float32)
    # Latent scale for diffusion models: z * sf has unit std on training crops.
    sf = 1.0 / _latent_std(trained, photos_dir, 256)
    shipped_cfg = trained.config.model_copy(update={"scaling_factor": round(sf, 5)})
    shipped = dc_ae.DCAE(shipped_cfg)
    shipped.load_state_dict(trained.state_dict())
    fp16_path = dc_ae.save(shipped.half(), out / f"{PRESET}.safetensors")
    model = dc_ae.load(fp16_path, dtype=torch.float32).float().eval()

    torch.manual_seed(args.seed)
    random_init = dc_ae.DCAE(dc_ae.DCAEConfig.from_name(PRESET)).eval()

    f = model.spatial_compression
    held = {n: _center_crop(to_tensor(a).unsqueeze(0), f) for n, a in sample_photographs(HELDOUT_PHOTOS).items()}
    seen = {n: _center_crop(to_tensor(a).unsqueeze(0), f) for n, a in sample_photographs(TRAIN_PHOTOS).items()}
    rows = {
        "trained (shipped fp16 weights)": model,
        "same architecture, random init (sanity)": random_init,
        "bicubic 4x down/up (sanity; keeps 3/16 values per pixel)": lambda x: _bicubic_roundtrip(x, 4),
        "bicubic 8x down/up (sanity; keeps 3/64 values per pixel)": lambda x: _bicubic_roundtrip(x, 8),
    }
    results: dict[str, object] = {
        "command": "python packages/dc-ae/bench/train_default.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "steps": result.step,
        "train_minutes": round(train_s / 60, 2),
        "batch_size": args.batch_size,
        "resolution": args.resolution,
        "perceptual": result.perceptual_kind,
        "scaling_factor": shipped_cfg.scaling_factor,
        "final_losses": result.final_losses,
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__} "
        f"threads {torch.get_num_threads()}".strip(),
        "date": datetime.date.today().isoformat(),
        "fp16_file_bytes": fp16_path.stat().st_size,
        "rows": {},
    }
    print(f"\nlatent values per pixel: {model.latent_channels}/{f * f} = {model.latent_channels / f / f:.4f}")
    print("\n| model | held-out PSNR (dB) | held-out SSIM | train PSNR (dB) | train SSIM |")
    print("|---|---|---|---|---|")
    for label, fn in rows.items():
        h, s = _evaluate(fn, held), _evaluate(fn, seen)
        mh, ms = _mean(h), _mean(s)
        results["rows"][label] = {"heldout": h, "train": s, "heldout_mean": mh, "train_mean": ms}  # type: ignore[index]
        print(f"| {label} | {mh['psnr']:.2f} | {mh['ssim']:.4f} | {ms['psnr']:.2f} | {ms['ssim']:.4f} |")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out / 'results.json'}")

    if not args.no_install:
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = WEIGHTS.with_suffix(".tmp")
        shutil.copyfile(fp16_path, tmp)
        tmp.replace(WEIGHTS)
        check = dc_ae.load(WEIGHTS).float()
        x = next(iter(held.values()))
        assert torch.isfinite(check(x)).all()
        print(f"installed {WEIGHTS} ({WEIGHTS.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
