"""The ``linear-dit`` command line: inspect, convert, sample from, train and benchmark Linear DiTs.

SANA (Xie et al., ICLR 2025) and SANA-1.5 (ICML 2025). torch is imported inside the commands,
never at module level, so ``linear-dit --help`` stays fast. Every command reports a bad input as
one line on stderr and exit code 2, and writes its outputs atomically.

Examples::

    linear-dit info                                   # the presets
    linear-dit info sana-1.6b-4k --resolution 4096    # parameters and FLOPs per step
    linear-dit convert Sana_1600M_1024px.pth sana.safetensors --config sana-1.6b-1024px
    linear-dit sample sana.safetensors prompts.safetensors samples/ --steps 20 --guidance 4.5
    linear-dit train data.safetensors runs/tiny --config tiny --steps 600
    linear-dit bench sana-0.6b-1024px --resolution 1024 --device cuda --dtype bf16
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from linear_dit._cli_utils import (
    clean_errors,
    echo_json,
    fmt_count,
    latent_side,
    load_model,
    model_config,
    parse_dtype,
)

__all__ = ["app"]

app = typer.Typer(
    name="linear-dit",
    help="SANA's Linear DiT: ReLU linear attention, Mix-FFN, Flow-DPM-Solver and flow-matching training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Preset name for a checkpoint that does not record its config."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu, cuda, cuda:1, mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="fp32, bf16 or fp16.")]
CompressionOpt = Annotated[
    int, typer.Option("--compression", min=1, help="Spatial compression of the autoencoder (DC-AE f32: 32).")
]


class Layout(StrEnum):
    linear_dit = "linear_dit"
    sana = "sana"
    diffusers = "diffusers"


class Sampler(StrEnum):
    flow_dpm_solver = "flow_dpm_solver"
    flow_euler = "flow_euler"


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------


@app.command()
def info(
    model: Annotated[str | None, typer.Argument(help="Preset name or checkpoint; omit to list the presets.")] = None,
    resolution: Annotated[int, typer.Option("--resolution", min=1, help="Image side in pixels.")] = 1024,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Latent frames (video configs).")] = 8,
    text_tokens: Annotated[int, typer.Option("--text-tokens", min=1, help="Text length for the FLOP count.")] = 300,
    compression: CompressionOpt = 32,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Parameters and FLOPs per sampling step (one forward, no CFG) of a preset or checkpoint."""
    with clean_errors():
        import torch

        from linear_dit.config import preset_names
        from linear_dit.flops import count_flops
        from linear_dit.linear_dit import LinearDiT

        names = [model] if model is not None else preset_names()
        rows: list[dict[str, Any]] = []
        for name in names:
            cfg = model_config(name, config)
            with torch.device("meta"):
                params = LinearDiT(cfg).num_parameters()
            side = latent_side(resolution, compression, cfg.patch_size)
            flops = count_flops(cfg, side, side, text_tokens=text_tokens, frames=frames if cfg.video else None, batch=1)
            tokens = (side // cfg.patch_size) ** 2 * (frames if cfg.video else 1)
            rows.append(
                {
                    "name": cfg.name if model is None else name,
                    "parameters": params,
                    "depth": cfg.depth,
                    "width": cfg.hidden_size,
                    "heads": cfg.num_attention_heads,
                    "cross_heads": cfg.num_cross_attention_heads,
                    "qk_norm": cfg.qk_norm,
                    "use_pe": cfg.use_pe,
                    "video": cfg.video,
                    "resolution": resolution,
                    "latent": [frames, side, side] if cfg.video else [side, side],
                    "tokens": tokens,
                    "flops_per_step": flops,
                }
            )
        if json_out:
            echo_json(rows if model is None else rows[0])
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Linear DiT at {resolution}px ({compression}x autoencoder, {text_tokens} text tokens)")
        for col in ("model", "params", "depth", "width", "heads (lin/cross)", "tokens", "TFLOPs/step", "qk norm", "PE"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["name"],
                fmt_count(r["parameters"]),
                str(r["depth"]),
                str(r["width"]),
                f"{r['heads']}/{r['cross_heads']}",
                str(r["tokens"]),
                f"{r['flops_per_step']['total'] / 1e12:.3f}",
                "yes" if r["qk_norm"] else "no",
                "yes" if r["use_pe"] else "no",
            )
        Console().print(table)
        if model is not None:
            for part, value in rows[0]["flops_per_step"].items():
                typer.echo(f"  {part:>20}: {fmt_count(value, 'FLOP')}")


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Checkpoint file or diffusers folder (any layout).")],
    dest: Annotated[Path, typer.Argument(help="File (linear_dit, sana) or folder (diffusers) to write.")],
    layout: Annotated[Layout, typer.Option("--layout", help="Layout to write.")] = Layout.linear_dit,
    config: ConfigOpt = None,
) -> None:
    """Convert between our format, the original Sana layout and diffusers' SanaTransformer2DModel."""
    with clean_errors():
        from linear_dit.checkpoint import convert as convert_checkpoint

        out = convert_checkpoint(source, dest, layout=layout.value, config=config)
        typer.echo(f"wrote {out} ({layout.value} layout) from {source}")


# --------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------


@app.command()
def sample(
    model: Annotated[str, typer.Argument(help="Checkpoint (any layout) or preset name (random weights!).")],
    text: Annotated[Path, typer.Argument(help="Text-embedding file (see linear_dit.save_text_embeddings).")],
    out: Annotated[Path, typer.Argument(help="Folder for one latent file per prompt (dc-ae latent format).")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Sampling steps (= model evaluations).")] = 20,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale; 1 disables.")] = 4.5,
    sampler: Annotated[Sampler, typer.Option("--sampler")] = Sampler.flow_dpm_solver,
    shift: Annotated[float | None, typer.Option("--shift", help="Timestep shift; default: the config's.")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution", help="Image side in pixels.")] = None,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Latent frames (video configs).")] = 8,
    compression: CompressionOpt = 32,
    scaling_factor: Annotated[
        float, typer.Option("--scaling-factor", help="Autoencoder latent scale; outputs are divided by it.")
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    config: ConfigOpt = None,
) -> None:
    """Sample latents for every prompt of a text-embedding file, ready for `dc-ae decode`."""
    with clean_errors():
        import torch
        from safetensors.torch import save_file

        from linear_dit._io import atomic_output
        from linear_dit.errors import InputError
        from linear_dit.sampling import sample as run_sampler
        from linear_dit.text_embeddings import load_text_embeddings

        emb = load_text_embeddings(text)
        loaded = load_model(model, config, dtype=parse_dtype(dtype), device=device)
        cfg = loaded.model.config
        if emb.hidden_states.shape[2] != cfg.caption_channels:
            raise InputError(
                f"{text} holds {emb.hidden_states.shape[2]}-wide text states; {cfg.name} expects "
                f"{cfg.caption_channels} (its text encoder's hidden size)"
            )
        if guidance != 1.0 and emb.negative_hidden_states is None:
            raise InputError(
                f"--guidance {guidance:g} needs an unconditional embedding: save 'negative_hidden_states' "
                "(e.g. the text encoder's output for the empty prompt) in the text-embedding file, or pass --guidance 1"
            )
        side = cfg.sample_size if resolution is None else latent_side(resolution, compression, cfg.patch_size)
        shape = (cfg.in_channels, frames, side, side) if cfg.video else (cfg.in_channels, side, side)
        out.mkdir(parents=True, exist_ok=True)
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        for i in range(emb.batch):
            noise = torch.randn(1, *shape, generator=gen).to(device)
            neg = emb.negative_for(slice(i, i + 1))
            z = run_sampler(
                loaded.model,
                noise,
                emb.hidden_states[i : i + 1].to(device),
                emb.attention_mask[i : i + 1].to(device),
                negative_hidden_states=None if neg is None else neg[0].to(device),
                negative_attention_mask=None if neg is None else neg[1].to(device),
                guidance_scale=guidance,
                sampler=sampler.value,
                steps=steps,
                shift=cfg.flow_shift if shift is None else shift,
            )
            z = (z.float() / scaling_factor).cpu().contiguous()
            meta = {
                "format": "dc_ae_latent/1",
                "scaled": "false",
                "scaling_factor": repr(scaling_factor),
                "generator": f"linear-dit {cfg.name} {sampler.value} steps={steps} guidance={guidance:g} seed={seed}",
            }
            if resolution is not None and not cfg.video:
                meta |= {"image_height": str(resolution), "image_width": str(resolution)}
            path = out / f"{i:04d}.safetensors"
            with atomic_output(path) as tmp:
                save_file({"latent": z}, str(tmp), metadata=meta)
        dt = time.perf_counter() - t0
        typer.echo(
            f"wrote {emb.batch} latent(s) {list(shape)} to {out} with {loaded.source} "
            f"({sampler.value}, {steps} steps, guidance {guidance:g}) in {dt:.1f} s"
        )


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Latent data set file (linear_dit.data format).")],
    out: Annotated[Path, typer.Argument(help="Run folder: training state, final model, log.")],
    config: Annotated[str, typer.Option("--config", "-c", help="Model preset.")] = "tiny",
    train_config: Annotated[
        Path | None, typer.Option("--train-config", help="JSON file with TrainConfig fields (options override it).")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    mixed_precision: Annotated[str | None, typer.Option("--mixed-precision", help="no or bf16 (CUDA).")] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from the run folder's training state if present.")
    ] = True,
    strategy: Annotated[str | None, typer.Option("--strategy", help="Under torchrun: ddp or fsdp.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Flow-matching training (single process, or under torchrun with DDP/FSDP2)."""
    with clean_errors():
        import json

        from linear_dit.errors import InputError
        from linear_dit.training import TrainConfig
        from linear_dit.training import train as run_train

        fields: dict[str, Any] = {}
        if train_config is not None:
            try:
                fields = json.loads(train_config.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"--train-config {train_config} is not valid JSON: {exc}") from None
            if not isinstance(fields, dict):
                raise InputError(f"--train-config {train_config} must hold a JSON object of TrainConfig fields")
        options = {
            "model": config,
            "data": str(data),
            "out_dir": str(out),
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "mixed_precision": mixed_precision,
            "gradient_checkpointing": gradient_checkpointing,
            "resume": resume,
            "strategy": strategy,
        }
        fields |= {k: v for k, v in options.items() if v is not None and (k != "model" or "model" not in fields)}
        result = run_train(TrainConfig.model_validate(fields))
        summary = result.summary()
        if json_out:
            echo_json(summary)
        else:
            keys = ("step", "initial_val_loss", "final_val_loss", "final_val_loss_ema", "model_path", "wall_seconds")
            typer.echo(" ".join(f"{k}={summary[k]}" for k in keys if k in summary))


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="Preset name or checkpoint.")] = "sana-0.6b-1024px",
    resolution: Annotated[int, typer.Option("--resolution", min=1)] = 1024,
    frames: Annotated[int, typer.Option("--frames", min=1)] = 8,
    batch: Annotated[int, typer.Option("--batch", min=1)] = 1,
    text_tokens: Annotated[int, typer.Option("--text-tokens", min=1)] = 300,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 5,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps for the per-image estimate.")] = 20,
    compression: CompressionOpt = 32,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Time one denoising forward (median of repeats) and estimate seconds per image with CFG."""
    with clean_errors():
        import statistics

        import torch

        from linear_dit.flops import count_flops

        torch_dtype = parse_dtype(dtype)
        loaded = load_model(model, config, dtype=torch_dtype, device=device)
        cfg = loaded.model.config
        side = latent_side(resolution, compression, cfg.patch_size)
        shape = (batch, cfg.in_channels, frames, side, side) if cfg.video else (batch, cfg.in_channels, side, side)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=g).to(device, torch_dtype)
        y = torch.randn(batch, text_tokens, cfg.caption_channels, generator=g).to(device, torch_dtype)
        t = torch.full((batch,), 500.0, device=device)

        def sync() -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        times = []
        with torch.inference_mode():
            loaded.model(x, t, y)  # warm-up
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                loaded.model(x, t, y)
                sync()
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        flops = count_flops(cfg, side, side, text_tokens=text_tokens, frames=frames if cfg.video else None, batch=batch)
        result = {
            "model": loaded.source,
            "device": device,
            "dtype": dtype,
            "resolution": resolution,
            "batch": batch,
            "forward_s": median,
            "tflops_per_s": flops["total"] / median / 1e12,
            # CFG doubles the batch of every step.
            "seconds_per_image_cfg": 2 * median * steps / batch,
        }
        if json_out:
            echo_json(result)
        else:
            typer.echo(
                f"{cfg.name} at {resolution}px, batch {batch}, {dtype} on {device}: forward {median * 1e3:.1f} ms "
                f"({result['tflops_per_s']:.2f} TFLOP/s); ~{result['seconds_per_image_cfg']:.2f} s per image "
                f"at {steps} steps with CFG"
            )


if __name__ == "__main__":  # python -m linear_dit.cli
    app()
