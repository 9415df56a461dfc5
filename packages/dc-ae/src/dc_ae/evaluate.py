"""Reconstruction quality of a DC-AE over a folder of images: PSNR, SSIM and optional LPIPS.

Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025), Sec. 4 / Table 2 report reconstructions as PSNR, SSIM and LPIPS (with rFID on
ImageNet). Here every image of a folder is reconstructed whole -- padded to a multiple of the
spatial compression ``f`` and cropped back by :func:`dc_ae.tiling.reconstruct`, so any size works
-- and scored with :mod:`dc_ae.metrics`. LPIPS needs a feature network with local weights, so it
is computed only when one is given.

Compression is reported two ways, named apart: the *spatial* compression ``f`` (the paper's
"f32": each latent pixel covers ``f x f`` image pixels) and the *element* ratio
``(H * W * 3) / (h * w * c)`` (values in the image per value in the latent; 96x for f32c32).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from dc_ae.config import DCAEConfig
from dc_ae.errors import DCAEError, InputError

if TYPE_CHECKING:
    import torch
    from rich.progress import Progress

    from dc_ae.autoencoder import DCAE
    from dc_ae.metrics import LPIPS

__all__ = [
    "EvalResult",
    "ImageRecord",
    "compression_ratio",
    "evaluate_folder",
    "latent_shape",
    "reconstruct_image",
]


class ImageRecord(BaseModel):
    """Scores of one reconstructed image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Path of the image relative to the evaluated folder (POSIX separators).")
    psnr: float = Field(description="PSNR in dB on the [0, 1] range (data range 1).")
    ssim: float = Field(description="SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5).")
    lpips: float | None = Field(description="LPIPS distance; None when no feature network was given.")
    height: int = Field(gt=0, description="Image height in pixels.")
    width: int = Field(gt=0, description="Image width in pixels.")


class EvalResult(BaseModel):
    """Per-image scores and their means over a folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Config name of the evaluated autoencoder.")
    folder: str = Field(description="The evaluated folder.")
    tile_size: int | None = Field(description="Tile size in pixels, or None for whole-image coding.")
    spatial_compression: int = Field(gt=0, description="Spatial compression f (one latent pixel per f x f pixels).")
    compression_ratio: float = Field(gt=0, description="Element ratio (H*W*3)/(h*w*c) of image to latent values.")
    records: tuple[ImageRecord, ...] = Field(description="One record per image, sorted by name.")
    mean_psnr: float = Field(description="Mean of the records' PSNR, dB.")
    mean_ssim: float = Field(description="Mean of the records' SSIM.")
    mean_lpips: float | None = Field(description="Mean of the records' LPIPS; None when not computed.")
    seconds: float = Field(ge=0, description="Wall-clock time of the whole evaluation.")


def compression_ratio(config: DCAEConfig) -> float:
    """Element compression ``(H * W * C_in) / (h * w * c) = f**2 * C_in / c`` (96.0 for f32c32).

    This counts values, not bits. The *spatial* compression is ``config.spatial_compression``.
    """
    f = config.spatial_compression
    return f * f * config.in_channels / config.latent_channels


def latent_shape(config: DCAEConfig, height: int, width: int) -> tuple[int, int, int]:
    """Shape ``(c, ceil(H/f), ceil(W/f))`` of the latent of one ``H x W`` image (padded coding)."""
    f = config.spatial_compression
    return config.latent_channels, math.ceil(height / f), math.ceil(width / f)


def reconstruct_image(model: DCAE, x: torch.Tensor, tile_size: int | None = None) -> torch.Tensor:
    """``decode(encode(x))`` of images ``[B, 3, H, W]`` in ``[-1, 1]`` of any size, clamped to ``[-1, 1]``.

    The result has the input's shape, on the model's device, in float32; clamping scores the image
    that would be saved. Raises :class:`~dc_ae.errors.InputError` for a wrong channel count or
    dtype, NaN/Inf values, or an image smaller than one latent pixel (``f x f``).
    """
    import torch

    from dc_ae.tiling import reconstruct

    cfg = model.config
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected an image tensor, found {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != cfg.in_channels:
        raise InputError(
            f"expected an image batch [B, {cfg.in_channels}, H, W] for {cfg.name}, found shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise InputError(f"expected a floating-point image in [-1, 1], found dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("the image contains NaN or Inf values")
    f = cfg.spatial_compression
    h, w = x.shape[-2:]
    if h < f or w < f:
        raise InputError(f"image {h}x{w} is smaller than one latent pixel of {cfg.name} ({f}x{f} pixels)")
    param = next(model.parameters())
    with torch.inference_mode():
        y = reconstruct(model, x.to(device=param.device, dtype=param.dtype), tile_size=tile_size)
    return y.float().clamp(-1.0, 1.0)  # [B, 3, H, W]


def evaluate_folder(
    model: DCAE,
    folder: str | os.PathLike[str],
    *,
    lpips: LPIPS | None = None,
    tile_size: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Reconstruct every image under ``folder`` (recursively, sorted by path) and score it.

    Each image is read with :func:`dc_ae.data.load_image` and coded whole (or in tiles of
    ``tile_size`` pixels), one image at a time since sizes differ. PSNR and SSIM are always
    computed; LPIPS only when ``lpips`` (a :class:`dc_ae.metrics.LPIPS` on a local network) is
    given. ``progress`` shows a progress bar on stderr. An unreadable or unusable image raises
    :class:`~dc_ae.errors.InputError` naming the file.
    """
    import torch

    from dc_ae.data import ImageFolder, load_image
    from dc_ae.metrics import psnr, ssim

    root = Path(folder)
    paths = ImageFolder(root, crop_size=None).paths  # discovery and its errors: missing folder, no images
    device = next(model.parameters()).device
    if lpips is not None:
        lpips = lpips.to(device)
    start = time.perf_counter()
    records: list[ImageRecord] = []
    with _progress_bar(progress) as bar:
        task = bar.add_task("evaluating", total=len(paths))
        for path in paths:
            name = path.relative_to(root).as_posix()
            bar.update(task, description=name)
            try:
                x = load_image(path).to(device)  # [1, 3, H, W]
                y = reconstruct_image(model, x, tile_size)  # [1, 3, H, W]
                with torch.inference_mode():
                    p = float(psnr(y, x)[0])
                    s = float(ssim(y, x)[0])
                    d = float(lpips(y, x)[0]) if lpips is not None else None
            except DCAEError as exc:
                raise type(exc)(f"{path}: {exc}") from exc
            records.append(
                ImageRecord(name=name, psnr=p, ssim=s, lpips=d, height=int(x.shape[-2]), width=int(x.shape[-1]))
            )
            bar.advance(task)
    lpips_values = [r.lpips for r in records if r.lpips is not None]
    return EvalResult(
        model=model.config.name,
        folder=str(root),
        tile_size=tile_size,
        spatial_compression=model.config.spatial_compression,
        compression_ratio=compression_ratio(model.config),
        records=tuple(records),
        mean_psnr=sum(r.psnr for r in records) / len(records),
        mean_ssim=sum(r.ssim for r in records) / len(records),
        mean_lpips=sum(lpips_values) / len(lpips_values) if lpips is not None else None,
        seconds=time.perf_counter() - start,
    )


def _progress_bar(enabled: bool) -> Progress:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # stderr keeps stdout clean for --json; transient so the table that follows stands alone.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )
