"""The ``svdquant`` command line: quantize a model, inspect a quantized file, merge LoRAs, time a layer.

SVDQuant (Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models", ICLR
2025), Sec. 4-5. torch is imported inside the commands, never at module level, so ``svdquant --help`` stays fast.
Every command reports a bad input as one line on stderr and exit code 2.

A model is named by ``--arch module:function``, a zero-argument factory that builds the float ``nn.Module``
(importable: installed, or on ``PYTHONPATH``); its float weights come from a safetensors file of its state dict.
Calibration data is a safetensors file with the key ``inputs`` (``[B, ...]``, fed as ``model(inputs[i:i+b])``) or
the keys ``arg0``, ``arg1``, ... for a model with several positional inputs (``model(arg0[i:i+b], arg1[i:i+b])``).

Examples::

    svdquant quantize dit.safetensors calib.safetensors dit-int4.safetensors --arch my_models:tiny_dit
    svdquant quantize dit.safetensors calib.safetensors dit-fp4.safetensors --arch my_models:tiny_dit \\
        --fmt nvfp4 --rank 32 --svd randomized --skip "blocks.0.*"
    svdquant inspect dit-int4.safetensors
    svdquant inspect dit-int4.safetensors --arch my_models:tiny_dit --reference dit.safetensors \
        --inputs calib.safetensors
    svdquant apply-lora dit-int4.safetensors style.safetensors out.safetensors --arch my_models:tiny_dit --strength 0.8
    svdquant bench --m 4096 --n 3072 --k 3072 --device cuda --json
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from svdquant._cli_utils import (
    calibration_batches,
    clean_errors,
    echo_json,
    fmt_bytes,
    load_float_model,
    parse_lora_pair,
    read_tensors,
    table,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["app"]

app = typer.Typer(
    name="svdquant",
    help="SVDQuant: 4-bit weights and activations (INT4, NVFP4) with a 16-bit low-rank branch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Fmt(StrEnum):
    int4 = "int4"
    nvfp4 = "nvfp4"


class Svd(StrEnum):
    exact = "exact"
    randomized = "randomized"


ArchOpt = Annotated[
    str,
    typer.Option("--arch", help="Zero-argument factory 'module:function' that builds the float nn.Module."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

_LAYER_COLUMNS = (
    ("name", "layer"),
    ("fmt", "fmt"),
    ("rank", "rank"),
    ("snr_db", "SNR dB"),
    ("bytes_before", "bytes before"),
    ("bytes_after", "bytes after"),
)


# --------------------------------------------------------------------------------------------
# quantize
# --------------------------------------------------------------------------------------------


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="safetensors file of the float model's state dict.")],
    calib: Annotated[Path, typer.Argument(help="safetensors file of calibration inputs ('inputs' or 'arg0'...).")],
    out: Annotated[Path, typer.Argument(help="Quantized checkpoint to write (safetensors).")],
    arch: ArchOpt,
    fmt: Annotated[Fmt, typer.Option("--fmt", help="4-bit format.")] = Fmt.int4,
    rank: Annotated[int, typer.Option("--rank", min=1, help="Rank of the 16-bit low-rank branch.")] = 32,
    svd: Annotated[Svd, typer.Option("--svd", help="Exact float64 SVD or randomized (faster).")] = Svd.exact,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", help="fnmatch pattern of modules kept in 16 bits (repeatable; adds to the defaults)."),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="Calibration input rows kept per layer.")
    ] = 4096,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Calibration samples per forward.")] = 16,
    lowrank_iters: Annotated[
        int, typer.Option("--lowrank-iters", min=0, help="Maximum refinement rounds of the low-rank branch.")
    ] = 100,
    num_grids: Annotated[int, typer.Option("--num-grids", min=1, help="Resolution of the smoothing search.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Quantize MODEL with the calibration inputs CALIB and write OUT; print a per-layer table."""
    with clean_errors():
        import torch

        from svdquant.checkpoint import save_quantized
        from svdquant.config import SVDQuantConfig
        from svdquant.quantize import quantize_

        defaults = SVDQuantConfig()
        cfg = SVDQuantConfig(
            fmt=fmt.value,
            rank=rank,
            svd=svd.value,
            skip=(*defaults.skip, *(skip or ())),
            max_calibration_tokens=max_tokens,
            lowrank_iters=lowrank_iters,
            num_grids=num_grids,
        )
        tensors, _ = read_tensors(calib, "calibration file")
        batches = calibration_batches(tensors, batch_size)
        net = load_float_model(arch, model)
        t0 = time.perf_counter()
        with torch.no_grad():
            reports = quantize_(net, cfg, calibration=batches)
        seconds = time.perf_counter() - t0
        save_quantized(net, out)
        rows = [
            {
                "name": r.name,
                "fmt": "w4a16-" + r.fmt if r.w4a16 else r.fmt,
                "rank": r.rank,
                "snr_db": r.snr_db,
                "bytes_before": r.bytes_before,
                "bytes_after": r.bytes_after,
            }
            for r in reports.values()
        ]
        before = sum(r.bytes_before for r in reports.values())
        after = sum(r.bytes_after for r in reports.values())
        totals: dict[str, Any] = {
            "layers": len(rows),
            "bytes_before": before,
            "bytes_after": after,
            "ratio": before / after if after else None,
            "file_bytes": out.stat().st_size,
            "seconds": seconds,
        }
    if as_json:
        echo_json({"output": str(out), "layers": rows, "totals": totals})
        return
    typer.echo(table(rows, _LAYER_COLUMNS))
    typer.echo(
        f"total: {len(rows)} layers, {fmt_bytes(before)} -> {fmt_bytes(after)} ({totals['ratio']:.2f}x smaller), "
        f"file {fmt_bytes(totals['file_bytes'])}, {seconds:.1f} s; wrote {out}"
    )


# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------


def _layer_rows(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> list[dict[str, Any]]:
    """One row per quantized module of a ``svdquant/1`` file, from its metadata and tensor sizes."""
    from svdquant.checkpoint import FORMAT
    from svdquant.errors import CheckpointError

    found = metadata.get("format")
    if found != FORMAT:
        raise CheckpointError(f"{str(path)!r}: expected a quantized checkpoint of format {FORMAT!r}, found {found!r}")
    try:
        modules = json.loads(metadata["modules"])
        rows = []
        for name, meta in modules.items():
            prefix = f"{name}."
            stored = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith(prefix))
            k_in, n_out = int(meta["in_features"]), int(meta["out_features"])
            down = tensors.get(f"{name}.proj_down")
            bf16 = 2 * (k_in * n_out + (n_out if meta["bias"] else 0))
            rows.append(
                {
                    "name": name,
                    "fmt": ("w4a16-" if meta["w4a16"] else "") + str(meta["fmt"]),
                    "shape": f"{n_out}x{k_in}",
                    # The stored branch may be wider than the quantized rank once LoRAs were merged.
                    "rank": int(down.shape[1]) if down is not None else int(meta["rank"]),
                    "group_size": int(meta["group_size"]),
                    "unsigned": bool(meta["act_unsigned"]),
                    "bytes_bf16": bf16,
                    "bytes": stored,
                    "ratio": bf16 / stored if stored else None,
                }
            )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{str(path)!r}: bad quantization metadata ({e})") from e
    return rows


def _capture_inputs(model: nn.Module, names: list[str], batches: list[Any]) -> dict[str, Tensor]:
    """Every input row that reaches each named module when ``batches`` run through ``model``."""
    import torch

    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda _m, args, n=n: seen[n].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            for b in batches:
                model(*b) if isinstance(b, tuple) else model(b)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items() if v}


@app.command()
def inspect(
    qfile: Annotated[Path, typer.Argument(help="Quantized checkpoint (svdquant/1 safetensors).")],
    arch: Annotated[
        str | None, typer.Option("--arch", help="Factory 'module:function' of the model (needed for SNR).")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Float weights (safetensors) to measure per-layer SNR against.")
    ] = None,
    inputs: Annotated[
        Path | None,
        typer.Option("--inputs", help="Calibration-style inputs to run the float model on (default: random rows)."),
    ] = None,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="Random input rows per layer for the SNR.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Per-layer format, rank, group size and memory of QFILE; with --arch and --reference, per-layer output SNR."""
    with clean_errors():
        from svdquant.errors import InputError

        tensors, metadata = read_tensors(qfile, "quantized file")
        rows = _layer_rows(tensors, metadata, qfile)
        if (reference is None) != (arch is None) or (inputs is not None and reference is None):
            raise InputError("the SNR needs both --arch and --reference (and --inputs only with them)")
        if arch is not None and reference is not None:
            _add_snr(rows, qfile, arch, reference, inputs, tokens, seed)
        total_bf16 = sum(r["bytes_bf16"] for r in rows)
        total = sum(r["bytes"] for r in rows)
        config = json.loads(metadata.get("quantization_config", "null"))
    if as_json:
        echo_json(
            {
                "file": str(qfile),
                "version": metadata.get("version"),
                "layers": rows,
                "totals": {"bytes_bf16": total_bf16, "bytes": total, "file_bytes": qfile.stat().st_size},
                "quantization_config": config,
            }
        )
        return
    columns = [
        ("name", "layer"),
        ("fmt", "fmt"),
        ("shape", "NxK"),
        ("rank", "rank"),
        ("group_size", "group"),
        ("bytes_bf16", "bf16 bytes"),
        ("bytes", "bytes"),
        ("ratio", "ratio"),
    ]
    if any("snr_db" in r for r in rows):
        columns.append(("snr_db", "SNR dB"))
    typer.echo(table(rows, columns))
    ratio = f" ({total_bf16 / total:.2f}x smaller)" if total else ""
    typer.echo(
        f"total: {len(rows)} quantized layers, {fmt_bytes(total_bf16)} in bf16 -> {fmt_bytes(total)}{ratio}; "
        f"file {fmt_bytes(qfile.stat().st_size)}"
    )


def _add_snr(
    rows: list[dict[str, Any]], qfile: Path, arch: str, reference: Path, inputs: Path | None, tokens: int, seed: int
) -> None:
    import torch

    from svdquant._cli_utils import build_model
    from svdquant.checkpoint import load_quantized

    float_model = load_float_model(arch, reference)
    qmodel = load_quantized(build_model(arch), qfile)
    names = [r["name"] for r in rows]
    captured: dict[str, Tensor] = {}
    if inputs is not None:
        data, _ = read_tensors(inputs, "inputs file")
        captured = _capture_inputs(float_model, names, calibration_batches(data, 16))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for row in rows:
            fl, q = float_model.get_submodule(row["name"]), qmodel.get_submodule(row["name"])
            assert isinstance(fl, torch.nn.Linear)  # load_quantized checked it is a Linear of the right shape
            x = captured.get(row["name"])
            if x is None:
                x = torch.randn(tokens, fl.in_features, generator=gen)
            x = x.to(fl.weight.dtype)
            ref = fl(x).double()
            err = (q(x).double() - ref).square().sum().clamp(min=1e-300)
            row["snr_db"] = float(10 * torch.log10(ref.square().sum() / err))


# --------------------------------------------------------------------------------------------
# apply-lora
# --------------------------------------------------------------------------------------------


@app.command("apply-lora")
def apply_lora_cmd(
    qfile: Annotated[Path, typer.Argument(help="Quantized checkpoint (svdquant/1 safetensors).")],
    lora: Annotated[Path, typer.Argument(help="LoRA safetensors (PEFT/diffusers or kohya keys).")],
    out: Annotated[Path, typer.Argument(help="Checkpoint to write with the LoRA(s) merged into the branch.")],
    arch: ArchOpt,
    strength: Annotated[
        float, typer.Option("--strength", help="Strength of LORA (negative and |s| > 1 allowed).")
    ] = 1.0,
    extra: Annotated[
        list[str] | None, typer.Option("--lora", help="Another LoRA to merge, as PATH=STRENGTH (repeatable).")
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option("--prefix", help="Prefix to strip from the LoRA's module names (default: common ones)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge LORA (and any --lora PATH=STRENGTH) into QFILE's low-rank branches, without re-quantizing; write OUT."""
    with clean_errors():
        from svdquant._cli_utils import build_model
        from svdquant.checkpoint import load_quantized, save_quantized
        from svdquant.errors import InputError
        from svdquant.lora import apply_lora

        pairs = [(lora, strength), *(parse_lora_pair(s) for s in extra or ())]
        for path, _ in pairs:
            if not path.is_file():
                raise InputError(f"LoRA {str(path)!r}: no such file")
        model = load_quantized(build_model(arch), qfile)
        merged = []
        for i, (path, s) in enumerate(pairs):
            handle = apply_lora(model, path, strength=s, name=f"{i}:{path.name}", prefix=prefix)
            merged.append({"lora": str(path), "strength": s, "modules": len(handle.modules), "rank": max(handle.ranks)})
        save_quantized(model, out)
    if as_json:
        echo_json({"output": str(out), "loras": merged})
        return
    for m in merged:
        typer.echo(f"merged {m['lora']} (strength {m['strength']}, rank {m['rank']}) into {m['modules']} layers")
    typer.echo(f"wrote {out}")


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------


@app.command()
def bench(
    m: Annotated[int, typer.Option("--m", min=1, help="Tokens (rows of the input).")] = 256,
    n: Annotated[int, typer.Option("--n", min=1, help="out_features.")] = 1024,
    k: Annotated[int, typer.Option("--k", min=1, help="in_features (a multiple of the group size).")] = 1024,
    rank: Annotated[int, typer.Option("--rank", min=1, help="Rank of the low-rank branch.")] = 32,
    fmt: Annotated[Fmt, typer.Option("--fmt", help="4-bit format.")] = Fmt.int4,
    device: Annotated[str, typer.Option("--device", help="torch device: cpu, cuda, cuda:1.")] = "cpu",
    dtype: Annotated[str, typer.Option("--dtype", help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU).")] = "",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed forwards (after warm-up).")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Time an SVDQLinear forward against nn.Linear at M x K -> N (CPU: the reference path; GPU: what dispatches)."""
    with clean_errors():
        import torch

        from svdquant.config import SVDQuantConfig
        from svdquant.errors import InputError
        from svdquant.svdq_linear import SVDQLinear

        try:
            dev = torch.device(device)
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as e:
            raise InputError(f"--device {device!r} is not usable here: {e}") from e
        names = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        name = dtype or ("fp32" if dev.type == "cpu" else "bf16")
        if name not in names:
            raise InputError(f"--dtype must be one of {sorted(names)}, found {name!r}")
        dt = names[name]
        torch.manual_seed(0)
        linear = torch.nn.Linear(k, n, dtype=dt)
        # Timing only needs the right shapes: a one-round randomized branch keeps the set-up quick at any size.
        cfg = SVDQuantConfig(fmt=fmt.value, rank=rank, svd="randomized", lowrank_iters=1)
        layer = SVDQLinear.from_linear(linear, None, cfg).to(dev)
        linear = linear.to(dev)
        x = torch.randn(m, k, device=dev, dtype=dt)

        def timed(fn: Any) -> float:
            with torch.no_grad():
                for _ in range(2):
                    fn(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    fn(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
            return (time.perf_counter() - t0) / repeats * 1e3

        t_linear, t_svdq = timed(linear), timed(layer)
    result = {
        "m": m,
        "n": n,
        "k": k,
        "rank": rank,
        "fmt": fmt.value,
        "device": str(dev),
        "dtype": name,
        "linear_ms": t_linear,
        "svdq_ms": t_svdq,
        "speedup": t_linear / t_svdq,
    }
    if as_json:
        echo_json(result)
        return
    typer.echo(
        f"M={m} N={n} K={k} rank={rank} {fmt.value} on {dev} ({name}): nn.Linear {t_linear:.3f} ms, "
        f"SVDQLinear {t_svdq:.3f} ms, speed-up {result['speedup']:.2f}x"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
