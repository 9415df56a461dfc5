"""The ``qserve`` command line: quantize, perplexity, generation and benchmarks.

QServe / QoQ (Lin et al., arXiv 2405.04532), Sec. 4 (QoQ) and Sec. 5 (the serving system), around
:func:`qserve.quantize_`, :func:`qserve.perplexity` and :class:`qserve.Engine`. Models are read from local files
only: a Hugging Face-layout folder (``config.json``, ``*.safetensors``, ``tokenizer.json``) or a quantized file
written by ``qserve quantize`` (its tokenizer comes from ``--tokenizer`` or the file's folder). Torch is imported
inside the commands, so ``qserve --help`` stays fast. Errors of the package print one line and exit with code 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from qserve.model import LlamaForCausalLM
    from qserve.tokenizer import Tokenizer

app = typer.Typer(
    help="QServe / QoQ: W4A8KV4 quantization, perplexity, generation and benchmarks for Llama-family LLMs.",
    no_args_is_help=True,
    add_completion=False,
)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class Method(StrEnum):
    qoq = "qoq"
    qoq_gchn = "qoq-gchn"
    rtn = "rtn-w4a8kv4"
    w8a8 = "w8a8"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
TokenizerOpt = Annotated[
    Path | None,
    typer.Option("--tokenizer", help="Folder with tokenizer.json (default: the model folder, or the file's folder)."),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    """The package's own errors (and bad files) as one line on stderr, exit code 2, no traceback."""
    from pydantic import ValidationError

    from qserve.errors import QServeError

    try:
        yield
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise _fail(msg) from None
    except QServeError as exc:
        raise _fail(" ".join(str(exc).split())) from None
    except OSError as exc:
        raise _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def _load(model_path: Path, tokenizer_dir: Path | None) -> tuple[LlamaForCausalLM, Tokenizer]:
    """A float model folder or a quantized file, and its tokenizer."""
    from qserve.errors import CheckpointError
    from qserve.loading import load_model
    from qserve.quant_checkpoint import load_quantized
    from qserve.tokenizer import load_tokenizer

    if model_path.is_dir():
        model = load_model(model_path)
        tok_dir = tokenizer_dir or model_path
    elif model_path.is_file():
        model = load_quantized(model_path)
        tok_dir = tokenizer_dir or model_path.parent
    else:
        raise CheckpointError(f"{model_path} is neither a model folder nor a quantized .safetensors file")
    return model, load_tokenizer(tok_dir)


def _echo(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")


@app.command()
def quantize(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face-layout model folder (float weights).")],
    calibration: Annotated[Path, typer.Argument(help="UTF-8 text file of calibration text.")],
    output: Annotated[Path, typer.Argument(help="The quantized .safetensors file to write.")],
    method: Annotated[Method, typer.Option("--method", help="Recipe: QoQ (g128 or per-channel), RTN, W8A8.")] = (
        Method.qoq
    ),
    kv_bits: Annotated[int | None, typer.Option("--kv-bits", help="KV-cache bits 4, 8 or 16 (default: recipe's).")] = (
        None
    ),
    samples: Annotated[int, typer.Option("--samples", min=1, help="Calibration windows.")] = 64,
    seq_len: Annotated[int, typer.Option("--seq-len", min=2, help="Tokens per calibration window.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the window draw and the recipe.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Quantize a model with QoQ (W4A8KV4) or a baseline recipe and write one safetensors file."""
    with _clean_errors():
        from qserve.evaluation import load_token_ids
        from qserve.qoq import QoQConfig, calibration_windows, quantize_
        from qserve.quant_checkpoint import save_quantized

        if output.exists() and output.is_dir():
            raise _fail(f"output {output} is a folder; give a .safetensors file path")
        model, tokenizer = _load(model_dir, None)
        overrides: dict[str, Any] = {"seed": seed}
        if kv_bits is not None:
            overrides["kv_bits"] = kv_bits
        config = QoQConfig.preset(method.value, **overrides)
        ids = None
        if config.needs_calibration:
            tokens = load_token_ids(calibration, tokenizer)
            ids = calibration_windows(tokens, samples, min(seq_len, model.config.max_position_embeddings), seed)
        t0 = time.perf_counter()
        report = quantize_(model, config, ids)
        save_quantized(model, output)
        copied = []
        for name in _TOKENIZER_FILES:
            src, dst = model_dir / name, output.parent / name
            if src.is_file() and not dst.exists():  # never overwrite a file the user has there
                shutil.copyfile(src, dst)
                copied.append(name)
    result = {
        "output": str(output),
        "method": method.value,
        "kv_bits": config.kv_bits,
        "seconds": time.perf_counter() - t0,
        "quantized_linears": report.linears,
        "calibration_tokens": report.calibration_tokens,
        "rotated": report.rotated,
        "tokenizer_files_copied": ", ".join(copied) or "none",
    }
    _echo(result, as_json)


@app.command()
def ppl(
    model: Annotated[Path, typer.Argument(help="Model folder or quantized .safetensors file.")],
    text: Annotated[Path, typer.Argument(help="UTF-8 text file to evaluate on.")],
    seq_len: Annotated[int, typer.Option("--seq-len", min=2, help="Window length in tokens.")] = 512,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows per forward.")] = 8,
    max_windows: Annotated[int | None, typer.Option("--max-windows", min=1, help="Evaluate at most this many.")] = (
        None
    ),
    tokenizer: TokenizerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Perplexity on a local text file in non-overlapping windows (the GPTQ / WikiText2 protocol)."""
    with _clean_errors():
        from qserve.evaluation import load_token_ids, perplexity

        m, tok = _load(model, tokenizer)
        ids = load_token_ids(text, tok)
        t0 = time.perf_counter()
        value = perplexity(m, ids, seq_len, batch_size=batch_size, max_windows=max_windows)
    _echo(
        {"perplexity": value, "tokens": int(ids.numel()), "seq_len": seq_len, "seconds": time.perf_counter() - t0},
        as_json,
    )


@app.command()
def generate(
    model: Annotated[Path, typer.Argument(help="Model folder or quantized .safetensors file.")],
    prompts: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most new tokens per prompt.")] = 64,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass, in (0, 1].")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Seed of the sampling (per request).")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")] = None,
    kv_bits: Annotated[int | None, typer.Option("--kv-bits", help="KV-cache bits (default: the model's).")] = None,
    page_size: Annotated[int, typer.Option("--page-size", min=1, help="Tokens per KV page.")] = 16,
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
    tokenizer: TokenizerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate continuations with the paged-KV engine (in-flight batching over all prompts)."""
    with _clean_errors():
        from qserve.engine import Engine, SamplingParams

        m, tok = _load(model, tokenizer)
        params = SamplingParams(
            temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, stop=tuple(stop or ())
        )
        engine = Engine(m, tok, kv_bits=kv_bits, page_size=page_size)
        t0 = time.perf_counter()
        if stream and not as_json:
            ids = [engine.add_request(p, params) for p in prompts]
            for out in engine.stream():
                if out.new_text:
                    typer.echo(
                        f"[{ids.index(out.request_id)}] {out.new_text}" if len(ids) > 1 else out.new_text, nl=False
                    )
                if out.finished:
                    typer.echo(f"\n[{out.request_id}: {out.finish_reason}]" if len(ids) > 1 else "")
            return
        outs = engine.generate(prompts, params)
    seconds = time.perf_counter() - t0
    if as_json:
        rows = [
            {"prompt": p, "text": o.text, "tokens": len(o.token_ids), "finish_reason": o.finish_reason}
            for p, o in zip(prompts, outs, strict=True)
        ]
        typer.echo(json.dumps({"outputs": rows, "seconds": seconds}, indent=2))
        return
    for p, o in zip(prompts, outs, strict=True):
        typer.echo(f"{p}{o.text}")


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="Model folder or quantized .safetensors file.")],
    requests: Annotated[int, typer.Option("--requests", min=1, help="Requests of mixed lengths.")] = 64,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, help="Running requests at most.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the request mix.")] = 0,
    tokenizer: TokenizerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Engine throughput: in-flight batching against static batching on the same requests, and KV bytes/token."""
    with _clean_errors():
        import torch

        from qserve.engine import Engine, SamplingParams, kv_bytes_per_token

        m, _ = _load(model, tokenizer)
        g = torch.Generator().manual_seed(seed)
        vocab, ctx = m.config.vocab_size, m.config.max_position_embeddings
        work = []
        for _ in range(requests):
            # Mixed lengths with a long tail of outputs, the case in-flight batching is for.
            plen = int(torch.randint(4, max(5, min(128, ctx // 4)), (1,), generator=g))
            u = float(torch.rand(1, generator=g))
            olen = min(ctx - plen, 4 + int(-24.0 * math.log1p(-u)))  # exponential, mean ~28
            prompt = torch.randint(0, vocab, (plen,), generator=g).tolist()
            work.append((prompt, SamplingParams(max_tokens=max(1, olen), ignore_eos=True)))
        result: dict[str, Any] = {"requests": requests}
        outputs = {}
        for mode in ("inflight", "static"):
            engine = Engine(m, None, max_num_seqs=max_num_seqs, mode=mode)
            t0 = time.perf_counter()
            outs = engine.generate([p for p, _ in work], [sp for _, sp in work])
            seconds = time.perf_counter() - t0
            tokens = sum(len(o.token_ids) for o in outs)
            outputs[mode] = [o.token_ids for o in outs]
            result[f"{mode}_tokens_per_s"] = tokens / seconds
        result["speedup"] = result["inflight_tokens_per_s"] / result["static_tokens_per_s"]
        result["same_outputs"] = outputs["inflight"] == outputs["static"]
        kv = getattr(m, "kv_quant", None)
        bits = kv.bits if kv is not None else 16
        result["kv_bits"] = bits
        result["kv_bytes_per_token"] = kv_bytes_per_token(m.config, bits)
        result["kv_bytes_per_token_fp16"] = kv_bytes_per_token(m.config, 16)
    _echo(result, as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
