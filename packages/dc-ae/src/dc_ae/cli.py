"""The ``dc-ae`` command line: inspect, encode, decode, reconstruct, convert, train and evaluate DC-AEs.

Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025). ``dc-ae demo`` reconstructs a real photograph held out from training with the small
f32c32 model embedded in the package and prints PSNR, SSIM and the compression it achieved.

torch is imported inside the commands, never at module level, so ``dc-ae --help`` stays fast.
Every command reports a bad input as one line on stderr and exit code 2, writes its outputs
atomically (temporary file, then rename) and writes nothing when it fails.

Examples::

    dc-ae demo
    dc-ae info --presets
    dc-ae reconstruct photo.png out.png --tile-size 1024
    dc-ae encode photo.png photo.latent.safetensors
    dc-ae decode photo.latent.safetensors photo.png
    dc-ae convert model.safetensors converted.safetensors --config dc-ae-f32c32-in-1.0
    dc-ae eval images/ --model checkpoint.safetensors --json
"""

from __future__ import annotations

import json
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dc_ae._cli_utils import (
    Loaded,
    build_lpips,
    check_image_size,
    clean_errors,
    count_params,
    echo_json,
    encode_any_size,
    fmt_params,
    load_model,
    meta_model,
    preset,
)
from dc_ae._io import atomic_output

if TYPE_CHECKING:
    import torch

    from dc_ae.config import DCAEConfig

__all__ = ["app"]

app = typer.Typer(
    name="dc-ae",
    help="Deep Compression Autoencoders (DC-AE): 32x-128x spatial compression for latent diffusion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LATENT_FORMAT = "dc_ae_latent/1"

# Shared option aliases: one spelling and help text for every command.
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Checkpoint file or folder (our, efficientvit or diffusers layout) or a preset name "
        "(random weights!). Default: the embedded trained dc-ae-f32c32-small.",
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Preset name for a checkpoint that does not record its config."),
]
TileOpt = Annotated[
    int | None,
    typer.Option("--tile-size", min=1, help="Code in overlapping tiles of this many pixels (bounds memory)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


class Layout(StrEnum):
    dc_ae = "dc_ae"
    efficientvit = "efficientvit"
    diffusers = "diffusers"


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------


def _config_summary(cfg: DCAEConfig) -> dict[str, Any]:
    from dc_ae.evaluate import compression_ratio

    meta = meta_model(cfg)
    return {
        "name": cfg.name,
        "spatial_compression": cfg.spatial_compression,
        "latent_channels": cfg.latent_channels,
        "compression_ratio": compression_ratio(cfg),
        "parameters": count_params(meta),
        "encoder_parameters": count_params(meta.encoder),
        "decoder_parameters": count_params(meta.decoder),
        "scaling_factor": cfg.scaling_factor,
        "width_list": list(cfg.width_list),
        "encoder_depth_list": list(cfg.encoder_depth_list),
        "encoder_block_types": list(cfg.encoder_block_types),
        "decoder_width_list": list(cfg.decoder_widths),
        "decoder_depth_list": list(cfg.decoder_depth_list),
        "decoder_block_types": list(cfg.decoder_block_types),
        "structured_latent": cfg.structured_latent,
    }


def _checkpoint_info(path: Path, config: str | None) -> tuple[DCAEConfig, dict[str, Any]]:
    from dc_ae import checkpoint

    # The layout is a property of the keys as stored, so read them before conversion.
    file = checkpoint._resolve_file(path)
    state, meta = checkpoint._read_file(file)
    layout = checkpoint.detect_layout(set(state))
    cfg, _ = checkpoint.load_state_dict(path, config)  # also checks every key and shape
    extra = {"file": str(file), "layout": layout, "format": meta.get("format"), "written_by": meta.get("dc_ae_version")}
    return cfg, extra


@app.command()
def info(
    model: Annotated[
        str | None,
        typer.Argument(help="Preset name or checkpoint file/folder. Default: the embedded default model."),
    ] = None,
    config: ConfigOpt = None,
    presets: Annotated[bool, typer.Option("--presets", help="List every preset instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's configuration: compression, latent channels, parameters, stages, scaling factor."""
    with clean_errors():
        from dc_ae.config import DCAEConfig, preset_names
        from dc_ae.pretrained import DEFAULT_MODEL, default_weights_path, load_default

        if presets:
            rows = [_config_summary(DCAEConfig.from_name(n)) for n in preset_names()]
            if as_json:
                echo_json(rows)
                return
            _print_presets(rows)
            return
        if model is None:
            if not default_weights_path().is_file():
                load_default()  # raises the error that says how to reproduce the weights
            cfg, extra = _checkpoint_info(default_weights_path(), config)
            extra["weights"] = f"trained (embedded default {DEFAULT_MODEL})"
        elif Path(model).exists():
            cfg, extra = _checkpoint_info(Path(model), config)
            extra["weights"] = "from checkpoint"
        else:
            cfg = preset(model)
            extra = {"weights": "none (a preset: a model built from it has random weights)"}
        summary = {**_config_summary(cfg), **extra}
        if as_json:
            echo_json(summary)
            return
        for key, value in summary.items():
            if isinstance(value, int) and key.endswith("parameters"):
                value = f"{fmt_params(value)} ({value:,})"
            elif key == "compression_ratio":
                value = f"{value:g}x  (elements: H*W*3 / (h*w*c))"
            elif key == "spatial_compression":
                value = f"f{value}  (one latent pixel per {value}x{value} image pixels)"
            elif isinstance(value, list):
                value = ", ".join(map(str, value))
            typer.echo(f"{key.replace('_', ' '):>22}: {value}")


def _print_presets(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="DC-AE presets")
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    for col in ("f", "c", "elements", "params", "scaling"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["spatial_compression"]),
            str(r["latent_channels"]),
            f"{r['compression_ratio']:g}x",
            fmt_params(r["parameters"]),
            f"{r['scaling_factor']:g}",
        )
    Console().print(table)


# --------------------------------------------------------------------------------------------
# encode / decode / reconstruct
# --------------------------------------------------------------------------------------------


@app.command()
def encode(
    image: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, ...).")],
    out: Annotated[Path, typer.Argument(help="Latent file to write (.safetensors).")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    tile_size: TileOpt = None,
) -> None:
    """Encode an image into its (unscaled) latent, stored with the model and image size."""
    with clean_errors():
        import torch
        from safetensors.torch import save_file

        from dc_ae.data import load_image

        loaded = load_model(model, config)
        x = load_image(image)  # [1, 3, H, W]
        check_image_size(loaded.model, x)
        with torch.inference_mode():
            z = encode_any_size(loaded.model, x, tile_size).float().contiguous()  # [1, c, h, w]
        cfg = loaded.model.config
        meta = {
            "format": LATENT_FORMAT,
            "model": cfg.name,
            "config": cfg.model_dump_json(),
            "image_height": str(x.shape[-2]),
            "image_width": str(x.shape[-1]),
            "scaled": "false",
            "scaling_factor": repr(cfg.scaling_factor),
        }
        with atomic_output(out) as tmp:
            save_file({"latent": z}, str(tmp), metadata=meta)
        typer.echo(
            f"wrote {out}: latent {list(z.shape[1:])} (unscaled; multiply by {cfg.scaling_factor:g} for diffusion) "
            f"from image {list(x.shape[1:])} with {loaded.source}"
        )


def _read_latent(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    from dc_ae._io import read_safetensors
    from dc_ae.errors import InputError

    if not path.is_file():
        raise InputError(f"no latent file at {path}")
    tensors, meta = read_safetensors(path, InputError, "latent file")
    if set(tensors) != {"latent"}:
        raise InputError(f"latent file {path} must hold one tensor named 'latent', found {sorted(tensors)}")
    z = tensors["latent"]
    if z.ndim == 3:
        z = z.unsqueeze(0)
    if z.ndim != 4 or z.shape[0] != 1:
        raise InputError(f"latent in {path} must have shape [c, h, w] or [1, c, h, w], found {tuple(z.shape)}")
    return z, meta


@app.command()
def decode(
    latent: Annotated[Path, typer.Argument(help="Latent file written by `dc-ae encode`.")],
    out: Annotated[Path, typer.Argument(help="Image file to write (.png for lossless).")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    tile_size: TileOpt = None,
) -> None:
    """Decode a latent file back into an image, cropped to the size recorded by `encode`."""
    with clean_errors():
        import torch

        from dc_ae.config import DCAEConfig
        from dc_ae.data import save_image
        from dc_ae.errors import InputError

        z, meta = _read_latent(latent)
        loaded = load_model(model, config)
        cfg = loaded.model.config
        if z.shape[1] != cfg.latent_channels:
            raise InputError(
                f"latent {latent} has {z.shape[1]} channels but model {cfg.name} expects {cfg.latent_channels}"
                + (f" (it was encoded with {meta['model']})" if "model" in meta else "")
            )
        if not z.is_floating_point():
            raise InputError(f"latent {latent} has dtype {z.dtype}; expected a floating-point tensor")
        if "config" in meta:
            made_by = DCAEConfig.model_validate_json(meta["config"])
            if made_by.model_dump(exclude={"name"}) != cfg.model_dump(exclude={"name"}):
                raise InputError(
                    f"latent {latent} was encoded with {made_by.name}, whose architecture differs from "
                    f"--model's {cfg.name}; decode it with the model that encoded it"
                )
        f = cfg.spatial_compression
        latent_tile = None if tile_size is None else max(1, tile_size // f)
        with torch.inference_mode():
            y = loaded.model.decode(z, tile_size=latent_tile).float()  # [1, 3, h*f, w*f]
        height = int(meta.get("image_height", y.shape[-2]))
        width = int(meta.get("image_width", y.shape[-1]))
        y = y[..., :height, :width]
        save_image(y, out)
        typer.echo(f"wrote {out}: image {list(y.shape[1:])} from latent {list(z.shape[1:])} with {loaded.source}")


def _scores(y: torch.Tensor, x: torch.Tensor) -> tuple[float, float | None]:
    from dc_ae.metrics import psnr, ssim

    # SSIM's 11x11 window does not fit a smaller image; report it as absent rather than fail.
    s = float(ssim(y, x)[0]) if min(x.shape[-2:]) >= 11 else None
    return float(psnr(y, x)[0]), s


@app.command()
def reconstruct(
    image: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, ...).")],
    out: Annotated[Path, typer.Argument(help="Reconstruction to write (.png for lossless).")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    tile_size: TileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Encode and decode an image, write the result and print PSNR and SSIM against the input."""
    with clean_errors():
        from dc_ae.data import load_image, save_image
        from dc_ae.evaluate import compression_ratio, reconstruct_image

        loaded = load_model(model, config)
        x = load_image(image)  # [1, 3, H, W]
        start = time.perf_counter()
        y = reconstruct_image(loaded.model, x, tile_size)  # [1, 3, H, W]
        seconds = time.perf_counter() - start
        p, s = _scores(y, x)
        save_image(y, out)
        cfg = loaded.model.config
        result = {
            "image": str(image),
            "output": str(out),
            "model": cfg.name,
            "weights": loaded.source,
            "random_weights": loaded.random_weights,
            "height": int(x.shape[-2]),
            "width": int(x.shape[-1]),
            "psnr": p,
            "ssim": s,
            "spatial_compression": cfg.spatial_compression,
            "compression_ratio": compression_ratio(cfg),
            "seconds": seconds,
        }
        if as_json:
            echo_json(result)
            return
        typer.echo(f"wrote {out} ({x.shape[-2]}x{x.shape[-1]}) with {loaded.source} in {seconds:.2f} s")
        what = "scores of an UNTRAINED model (meaningless)" if loaded.random_weights else "reconstruction"
        ssim_text = "n/a (image under 11x11)" if s is None else f"{s:.4f}"
        typer.echo(f"{what}: PSNR {p:.2f} dB, SSIM {ssim_text}")


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="Checkpoint file or folder in any supported layout.")],
    dst: Annotated[Path, typer.Argument(help="Where to write (a folder for --to diffusers).")],
    config: ConfigOpt = None,
    to: Annotated[Layout, typer.Option("--to", help="Layout to write.")] = Layout.dc_ae,
    as_json: JsonOpt = False,
) -> None:
    """Convert a checkpoint between our format and the efficientvit and diffusers layouts."""
    with clean_errors():
        import dc_ae
        from dc_ae import checkpoint
        from dc_ae.errors import CheckpointError

        if not src.exists():
            raise CheckpointError(f"checkpoint {src} does not exist")
        layout = checkpoint.detect_layout(set(checkpoint._read_file(checkpoint._resolve_file(src))[0]))
        net = dc_ae.load(src, config=config)
        written = dc_ae.save(net, dst, layout=to.value)
        result = {
            "source": str(src),
            "source_layout": layout,
            "destination": str(written),
            "layout": to.value,
            "model": net.config.name,
            "parameters": count_params(net),
        }
        if as_json:
            echo_json(result)
            return
        typer.echo(
            f"converted {src} ({layout}, {net.config.name}, {fmt_params(count_params(net))}) -> {written} ({to.value})"
        )


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


@app.command("eval")
def eval_(
    folder: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    lpips_net: Annotated[
        Path | None,
        typer.Option("--lpips-net", help="Local weights of the LPIPS feature network (enables LPIPS)."),
    ] = None,
    lpips_arch: Annotated[
        str,
        typer.Option("--lpips-arch", help="vgg16, alexnet (need torchvision) or module:function building the network."),
    ] = "vgg16",
    lpips_layers: Annotated[
        str | None,
        typer.Option(
            "--lpips-layers", help="Comma-separated layer names (default: the official ones for vgg16/alexnet)."
        ),
    ] = None,
    lpips_lin: Annotated[
        Path | None,
        typer.Option("--lpips-lin", help="LPIPS 'lin' weights (e.g. the lpips package's vgg.pth)."),
    ] = None,
    tile_size: TileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reconstruct every image in a folder and report PSNR, SSIM (and LPIPS) per image and on average."""
    with clean_errors():
        from dc_ae.errors import ConfigError
        from dc_ae.evaluate import evaluate_folder

        if lpips_net is None and lpips_lin is not None:
            raise ConfigError("--lpips-lin needs --lpips-net (the feature network the lin weights belong to)")
        loaded = load_model(model, config)
        lpips = build_lpips(lpips_net, lpips_arch, lpips_layers, lpips_lin) if lpips_net is not None else None
        result = evaluate_folder(loaded.model, folder, lpips=lpips, tile_size=tile_size, progress=not as_json)
        if as_json:
            echo_json(
                {**result.model_dump(mode="json"), "weights": loaded.source, "random_weights": loaded.random_weights}
            )
            return
        _print_eval(result, loaded)


def _print_eval(result: Any, loaded: Loaded) -> None:
    from rich.console import Console
    from rich.table import Table

    with_lpips = result.mean_lpips is not None
    title = "scores of an UNTRAINED model (meaningless)" if loaded.random_weights else "reconstruction quality"
    table = Table(title=f"{title}: {loaded.source}")
    for col in ("image", "size", "PSNR (dB)", "SSIM") + (("LPIPS",) if with_lpips else ()):
        table.add_column(col, justify="left" if col == "image" else "right")
    for r in result.records:
        row = [r.name, f"{r.height}x{r.width}", f"{r.psnr:.2f}", f"{r.ssim:.4f}"]
        table.add_row(*row, *((f"{r.lpips:.4f}",) if with_lpips else ()))
    mean = [f"mean of {len(result.records)}", "", f"{result.mean_psnr:.2f}", f"{result.mean_ssim:.4f}"]
    table.add_row(*mean, *((f"{result.mean_lpips:.4f}",) if with_lpips else ()), style="bold")
    console = Console()
    console.print(table)
    console.print(
        f"spatial compression f{result.spatial_compression}, element ratio {result.compression_ratio:g}x, "
        f"{result.seconds:.2f} s"
    )


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


@app.command()
def train(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TrainConfig as JSON (every field); the flags below override it."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Preset to train from scratch.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of training images.")] = None,
    phase: Annotated[
        int | None,
        typer.Option(
            "--phase", min=1, max=3, help="1: low-res full training, 2: high-res latent adaptation, 3: head refinement."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Total optimiser steps.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per step.")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution", min=1, help="Crop size in pixels.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak AdamW learning rate.")] = None,
    init: Annotated[
        Path | None, typer.Option("--init", help="Checkpoint to start from (needed for phases 2 and 3).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (state, model, log); resumes if set.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Seed of initialisation and crops.")] = None,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", help="Stop (saving a checkpoint) after this many minutes.")
    ] = None,
    perceptual_network: Annotated[
        Path | None, typer.Option("--perceptual-network", help="Local LPIPS weights; default: weight-free loss.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train one phase of the DC-AE recipe (resumes when --out holds a run of the same config)."""
    with clean_errors():
        from dc_ae.errors import ConfigError
        from dc_ae.train import PHASE_NAMES, TrainConfig
        from dc_ae.train import train as run_training

        fields: dict[str, Any] = {}
        if config is not None:
            try:
                fields = json.loads(config.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"--config {config} is not valid JSON: {exc}") from None
            if not isinstance(fields, dict):
                raise ConfigError(f"--config {config} must hold a JSON object, found {type(fields).__name__}")
        flags = {
            "model": model,
            "data": data,
            "phase": phase,
            "steps": steps,
            "batch_size": batch_size,
            "resolution": resolution,
            "lr": lr,
            "init_checkpoint": init,
            "out_dir": out,
            "seed": seed,
            "max_minutes": max_minutes,
            "perceptual_network": perceptual_network,
            "device": device,
        }
        fields.update({k: v for k, v in flags.items() if v is not None})
        cfg = TrainConfig.model_validate(fields)
        if not as_json:
            typer.echo(
                f"phase {cfg.phase} ({PHASE_NAMES[cfg.phase]}): {cfg.steps} steps of {cfg.batch_size} "
                f"{cfg.resolution}px crops from {cfg.data} -> {cfg.out_dir}",
                err=True,
            )
        result = run_training(cfg, progress=not as_json)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
            return
        summary = {
            "step": result.step,
            "completed": result.completed,
            "trainable": list(result.trainable),
            "trainable_parameters": result.num_trainable_params,
            "perceptual": result.perceptual_kind,
            "final_losses": result.final_losses,
            "seconds": result.wall_seconds,
            "model_path": str(result.model_path) if result.model_path is not None else None,
            "state_path": str(result.state_path) if result.state_path is not None else None,
        }
        if as_json:
            echo_json(summary)
            return
        status = "done" if result.completed else "stopped early by --max-minutes (rerun to resume)"
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items() if k not in ("step", "lr"))
        typer.echo(f"{status} at step {result.step} in {result.wall_seconds:.1f} s; last losses: {losses or 'n/a'}")
        typer.echo(f"model: {result.model_path}")


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


@app.command()
def demo(
    image: Annotated[
        str, typer.Option("--image", help="Photograph bundled with scikit-image (held out from training).")
    ] = "chelsea",
    save: Annotated[Path | None, typer.Option("--save", help="Also write the reconstruction here (.png).")] = None,
    allow_train_image: Annotated[
        bool, typer.Option("--allow-train-image", help="Accept a photograph the default model was trained on.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Reconstruct a real held-out photograph with the embedded model; print PSNR, SSIM and compression."""
    with clean_errors():
        import torch

        from dc_ae.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, sample_photographs, save_image, to_tensor
        from dc_ae.errors import InputError
        from dc_ae.evaluate import compression_ratio, latent_shape, reconstruct_image
        from dc_ae.pretrained import DEFAULT_MODEL, default_weights_path, load_default

        if image in TRAIN_PHOTOS and not allow_train_image:
            raise InputError(
                f"{image!r} is one of the photographs the default model was trained on, so its score would "
                f"overstate quality on unseen images; pick a held-out one ({', '.join(HELDOUT_PHOTOS)}) "
                "or pass --allow-train-image"
            )
        x = to_tensor(sample_photographs([image])[image]).unsqueeze(0)  # [1, 3, H, W]
        start = time.perf_counter()
        net = load_default()
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        y = reconstruct_image(net, x)  # [1, 3, H, W]
        rec_s = time.perf_counter() - start
        p, s = _scores(y, x)
        if save is not None:
            save_image(y, save)
        cfg = net.config
        h, w = int(x.shape[-2]), int(x.shape[-1])
        c, lh, lw = latent_shape(cfg, h, w)
        n_params, held_out = count_params(net), image in HELDOUT_PHOTOS
        ratio_here = (3 * h * w) / (c * lh * lw)  # with the padding to a multiple of f
        device, threads = str(next(net.parameters()).device), torch.get_num_threads()
        result = {
            "model": DEFAULT_MODEL,
            "weights": str(default_weights_path()),
            "parameters": n_params,
            "image": image,
            "held_out": held_out,
            "image_shape": [3, h, w],
            "latent_shape": [c, lh, lw],
            "psnr": p,
            "ssim": s,
            "spatial_compression": cfg.spatial_compression,
            "compression_ratio": compression_ratio(cfg),
            "compression_ratio_this_image": ratio_here,
            "load_seconds": load_s,
            "reconstruct_seconds": rec_s,
            "device": device,
            "torch_threads": threads,
            "saved": str(save) if save is not None else None,
        }
        if as_json:
            echo_json(result)
            return
        origin = "held out from training" if held_out else "NOT held out: the model was trained on it"
        ssim_text = "n/a" if s is None else f"{s:.4f}"
        lines = [
            f"model        {DEFAULT_MODEL} ({fmt_params(n_params)} parameters, embedded in the package)",
            f"photograph   {image} (scikit-image bundled data, {origin})",
            f"image        [3, {h}, {w}] -> latent [{c}, {lh}, {lw}]",
            f"compression  spatial f{cfg.spatial_compression} ({cfg.spatial_compression}x per side), "
            f"elements {compression_ratio(cfg):g}x (H*W*3 / h*w*c; {ratio_here:.1f}x "
            "for this image, padded to a multiple of f)",
            f"PSNR         {p:.2f} dB",
            f"SSIM         {ssim_text}",
            f"time         {rec_s:.2f} s to reconstruct ({load_s:.2f} s to load the model), "
            f"on {device} with {threads} torch thread(s)",
        ]
        if save is not None:
            lines.append(f"saved        {save}")
        typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
