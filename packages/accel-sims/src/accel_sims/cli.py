"""The `accel-sims` command line: `accel-sims spatten simulate | prune | report`, `accel-sims pointacc map | simulate |
report`, `accel-sims dota simulate | area | report`.

SpAtten (arXiv:2012.09852): `prune` runs a local Hugging Face-layout model with cascade token/head pruning, local
value pruning and progressive quantization and writes the workload the run produced; `simulate` runs a workload
file through the cycle-level simulator next to the unpruned 16-bit baseline; `report` tabulates and plots keep ratio
and DRAM traffic per layer. Torch is imported inside the commands, so `--help` stays fast. Errors of the package
print one line and exit with code 2.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from accel_sims.spatten.workload import Workload

app = typer.Typer(
    help="Accelerator algorithms and simulators (SpAtten, PointAcc, DOTA).",
    no_args_is_help=True,
    add_completion=False,
)
spatten_app = typer.Typer(
    help="SpAtten: cascade token/head pruning, progressive quantization, and its cycle-level simulator.",
    no_args_is_help=True,
)
app.add_typer(spatten_app, name="spatten")
pointacc_app = typer.Typer(
    help="PointAcc: ranking-based mapping operations and the point-cloud accelerator simulator.",
    no_args_is_help=True,
)
app.add_typer(pointacc_app, name="pointacc")
dota_app = typer.Typer(
    help="DOTA / Lightening-Transformer: photonic dot-product engines, architecture latency, energy and area.",
    no_args_is_help=True,
)
app.add_typer(dota_app, name="dota")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ConfigOpt = Annotated[str, typer.Option("--config", help="Hardware preset (spatten, spatten-1/8, bert-cpp, tiny).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    """accel_sims' errors and bad files as one line on stderr, exit code 2, no traceback."""
    from pydantic import ValidationError

    from accel_sims.errors import AccelSimsError

    try:
        yield
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise _fail(msg) from None
    except AccelSimsError as exc:
        raise _fail(" ".join(str(exc).split())) from None
    except OSError as exc:
        raise _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def _workload(source: str) -> Workload:
    """A workload CSV, or a built-in benchmark name (bert-base, bert-large, gpt2-small, gpt2-medium)."""
    from accel_sims.errors import WorkloadError
    from accel_sims.spatten.benchmarks import benchmark_names, make_workload
    from accel_sims.spatten.workload import read_csv

    if source in benchmark_names():
        return make_workload(source)
    if not Path(source).exists():
        raise WorkloadError(f"{source!r} is neither a workload file nor a benchmark {list(benchmark_names())}")
    return read_csv(source)


@spatten_app.command()
def simulate(
    workload: Annotated[str, typer.Argument(help="A workload CSV, or a benchmark name such as bert-base.")],
    config: ConfigOpt = "spatten",
    as_json: JsonOpt = False,
) -> None:
    """Simulate a workload; compare DRAM traffic, cycles and energy with the unpruned 16-bit baseline."""
    with _clean_errors():
        from accel_sims.spatten.config import SpAttenConfig
        from accel_sims.spatten.simulator import compare

        cfg = SpAttenConfig.from_name(config)
        wl = _workload(workload)
        result, dense = _pair(wl, cfg)
        ratios = compare(result, dense)
        if as_json:
            data = json.loads(result.model_dump_json())
            data["dense_baseline"] = {"cycles": dense.cycles, "dram_bytes": dense.total_dram_bytes}
            data["ratios"] = ratios
            typer.echo(json.dumps(data, indent=2))
            return
        typer.echo(
            f"{wl.model} on {cfg.name}: {result.cycles:,} cycles ({result.seconds * 1e6:.1f} us), "
            f"DRAM {result.total_dram_bytes / 1e6:.3f} MB, energy {result.total_energy_pj / 1e6:.3f} uJ"
        )
        typer.echo(
            f"dense 16-bit baseline: {dense.cycles:,} cycles, DRAM {dense.total_dram_bytes / 1e6:.3f} MB -> "
            f"DRAM reduction {ratios['dram_reduction']:.2f}x, speedup {ratios['speedup']:.2f}x, "
            f"energy saving {ratios['energy_saving']:.2f}x"
        )


def _pair(wl: Workload, cfg: Any) -> tuple[Any, Any]:
    from accel_sims.spatten.simulator import dense_baseline
    from accel_sims.spatten.simulator import simulate as run

    return run(wl, cfg), run(dense_baseline(wl), cfg)


@spatten_app.command()
def prune(
    model: Annotated[Path, typer.Argument(help="A local Hugging Face-layout BERT, GPT-2 or Llama folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Workload CSV to write.")],
    token_keep: Annotated[
        str, typer.Option("--token-keep", help="Last layer's token keep ratio (cascade), or one ratio per layer.")
    ] = "1.0",
    head_keep: Annotated[str, typer.Option("--head-keep", help="Head keep ratio (cascade) or one per layer.")] = "1.0",
    value_keep: Annotated[float, typer.Option("--value-keep", help="Local value pruning: V rows kept.")] = 1.0,
    quantize: Annotated[bool, typer.Option("--quantize/--no-quantize", help="Progressive quantization.")] = True,
    threshold: Annotated[float, typer.Option("--threshold", help="Refetch LSBs below this max probability.")] = 0.05,
    text: Annotated[str | None, typer.Option("--text", help="Input text (needs the folder's tokenizer.json).")] = None,
    text_file: Annotated[Path | None, typer.Option("--text-file", help="Read the input text from a file.")] = None,
    generate: Annotated[int, typer.Option("--generate", min=0, help="Decode steps (GPT-2, Llama).")] = 0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Truncate the input to this length.")] = 512,
    as_json: JsonOpt = False,
) -> None:
    """Run a local model with SpAtten on and write the workload its attention produced (for `simulate`).

    Without --text or --text-file the input is a passage of English prose shipped with Python (its docstrings).
    """
    with _clean_errors():
        from accel_sims.errors import AccelSimsError
        from accel_sims.spatten.emit import model_layers, parse_ratios
        from accel_sims.spatten.emit import prune as run_prune
        from accel_sims.spatten.pruning import PruningConfig
        from accel_sims.spatten.text import passages
        from accel_sims.spatten.workload import write_csv

        if text is not None and text_file is not None:
            raise AccelSimsError("give --text or --text-file, not both")
        if text_file is not None:
            text = text_file.read_text()
        if text is None:
            text = " ".join(passages(4))
        if not text.strip():
            raise AccelSimsError("the input text is empty; SpAtten needs at least one token")
        n = model_layers(model)
        cfg = PruningConfig.create(
            token_keep_ratios=parse_ratios(token_keep, n, "--token-keep"),
            head_keep_ratios=parse_ratios(head_keep, n, "--head-keep"),
            value_keep_ratio=value_keep,
            quantize=quantize,
            requant_threshold=threshold,
        )
        wl, _ = run_prune(model, cfg, text=text, generate=generate, max_tokens=max_tokens)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv(wl, out)
        heads = len(wl.records)
        keys = sum(r.key_fetch_num for r in wl.records)
        dense_keys = sum(r.seq_len for r in wl.records)
        summary = {"model": wl.model, "records": heads, "out": str(out), "key_fetch_fraction": keys / dense_keys}
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            typer.echo(
                f"{wl.model}: {heads} head records, {keys / dense_keys:.2f} of the keys fetched -> {out} "
                f"(simulate it with `accel-sims spatten simulate {out}`)"
            )


@spatten_app.command()
def report(
    workload: Annotated[str, typer.Argument(help="A workload CSV, or a benchmark name such as bert-base.")],
    config: ConfigOpt = "spatten",
    fmt: Annotated[str, typer.Option("--format", help="md or html.")] = "md",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep ratio and DRAM traffic per layer, against the dense baseline: a table, and a plot in HTML."""
    with _clean_errors():
        from accel_sims.errors import AccelSimsError
        from accel_sims.spatten.config import SpAttenConfig
        from accel_sims.spatten.report import render
        from accel_sims.spatten.simulator import compare, layer_report

        if fmt not in ("md", "html"):
            raise AccelSimsError(f"--format must be 'md' or 'html', got {fmt!r}")
        cfg = SpAttenConfig.from_name(config)
        wl = _workload(workload)
        result, dense = _pair(wl, cfg)
        rows = layer_report(result, dense)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        title = f"SpAtten on {wl.model} ({cfg.name})"
        text = render(rows, title, compare(result, dense), "html" if fmt == "html" else "md")
        _emit(text, out)


_MAP_OPS = ("fps", "knn", "ball_query", "voxelize", "voxel_downsample", "kernel_map")


@pointacc_app.command("map")
def pointacc_map(
    op: Annotated[str, typer.Argument(help=f"One of {', '.join(_MAP_OPS)}.")],
    points_file: Annotated[Path, typer.Argument(help="Points: .npy [N,3], .txt/.xyz columns, or ASCII .ply.")],
    samples: Annotated[int, typer.Option("--samples", help="fps: points to sample; knn/ball_query: queries.")] = 1024,
    k: Annotated[int, typer.Option("--k", help="Neighbours per query (knn, ball_query).")] = 16,
    radius: Annotated[float, typer.Option("--radius", help="Ball query radius.")] = 0.2,
    voxel_size: Annotated[
        float, typer.Option("--voxel-size", help="Voxel edge (voxelize, downsample, kernel map).")
    ] = 0.05,
    stride: Annotated[int, typer.Option("--stride", help="Downsampling stride (voxel_downsample, kernel_map).")] = 2,
    kernel_size: Annotated[int, typer.Option("--kernel-size", help="Sparse-conv kernel size (kernel_map).")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Run one mapping operation on a point file; report its time, result size and ranking work."""
    import time

    import numpy as np

    with _clean_errors():
        from accel_sims.errors import AccelSimsError
        from accel_sims.pointacc import mapping as mp
        from accel_sims.pointacc.points import read_points

        if op not in _MAP_OPS:
            raise AccelSimsError(f"op must be one of {', '.join(_MAP_OPS)}; got {op!r}")
        pts = read_points(points_file)
        t0 = time.perf_counter()
        result: dict[str, Any] = {"op": op, "points": int(len(pts))}
        if op in ("fps", "knn", "ball_query"):
            if op != "fps" and samples > len(pts):
                raise AccelSimsError(f"--samples {samples} queries but the cloud has {len(pts)} points")
            n_q = min(samples, len(pts))
            idx = mp.farthest_point_sampling(pts, n_q) if op == "fps" else np.arange(n_q)
            if op == "fps":
                result |= {"samples": int(len(idx)), "stats": mp.fps_stats(len(pts), n_q)}
            elif op == "knn":
                nbr, _ = mp.knn(pts[idx], pts, k)
                result |= {"queries": n_q, "neighbours": int(nbr.size), "stats": mp.knn_stats(n_q, len(pts), k)}
            else:
                _, counts = mp.ball_query(pts[idx], pts, radius, k)
                result |= {
                    "queries": n_q,
                    "neighbours": int(counts.sum()),
                    "empty_neighbourhoods": int((counts == 0).sum()),
                    "stats": mp.ball_query_stats(n_q, len(pts), k),
                }
        else:
            coords, _ = mp.voxelize(pts, voxel_size)
            result["voxels"] = int(len(coords))
            if op == "voxelize":
                result["stats"] = mp.voxel_downsample_stats(len(pts), len(coords), op="voxelize")
            else:
                out, _ = mp.voxel_downsample(coords, stride)
                result["outputs"] = int(len(out))
                if op == "voxel_downsample":
                    result["stats"] = mp.voxel_downsample_stats(len(coords), len(out))
                else:
                    km = mp.kernel_map(coords, out, kernel_size=kernel_size, stride=stride)
                    result |= {"pairs": int(km.total), "offsets": int(len(km.offsets)), "stats": km.stats}
        result["seconds"] = round(time.perf_counter() - t0, 4)
        stats = result.pop("stats")
        result["ranking"] = stats.model_dump()
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=int))
            return
        sizes = ", ".join(f"{key} {v}" for key, v in result.items() if key not in ("op", "ranking", "seconds"))
        typer.echo(f"{op}: {sizes} in {result['seconds'] * 1e3:.1f} ms")


def _pointacc_workload(source: str, n_points: int | None, seed: int) -> Any:
    from accel_sims.pointacc.workloads import load_workload, make_workload, workload_names

    if source in workload_names():
        return make_workload(source, n_points=n_points, seed=seed)
    if not Path(source).is_file():
        from accel_sims.errors import WorkloadError

        raise WorkloadError(f"{source!r} is neither a workload file nor a network {list(workload_names())}")
    return load_workload(source)


PointsOpt = Annotated[int | None, typer.Option("--points", help="Points (or voxels) of the synthetic cloud.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the synthetic cloud.")]
PaConfigOpt = Annotated[str, typer.Option("--config", help="Accelerator preset: server, edge, tiny.")]


@pointacc_app.command("simulate")
def pointacc_simulate(
    workload: Annotated[
        str, typer.Argument(help="A network (pointnet2-seg, minkunet-indoor, ...) or a workload JSON.")
    ],
    config: PaConfigOpt = "server",
    points: PointsOpt = None,
    seed: SeedOpt = 0,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="The MMU's cache (ablation: off).")] = True,
    fusion: Annotated[bool, typer.Option("--fusion/--no-fusion", help="Temporal layer fusion (ablation).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a point-cloud network on PointAcc; compare with the GPU-like baseline and the ablations."""
    with _clean_errors():
        from accel_sims.pointacc.baselines import compare_gpu, simulate_gpu
        from accel_sims.pointacc.config import PointAccConfig
        from accel_sims.pointacc.simulator import compare, simulate

        wl = _pointacc_workload(workload, points, seed)
        cfg = PointAccConfig.from_name(config).ablate(cache=cache, fusion=fusion)
        res = simulate(wl, cfg)
        gpu = compare_gpu(res, simulate_gpu(wl))
        ablations = {
            name: compare(res, simulate(wl, cfg.ablate(**flag)))  # > 1: the full design is faster
            for name, flag in (("no_cache", {"cache": False}), ("no_fusion", {"fusion": False}))
        }
        if as_json:
            data = json.loads(res.model_dump_json(exclude={"layers"}))
            data |= {"vs_gpu": gpu, "vs_ablations": ablations}
            typer.echo(json.dumps(data, indent=2))
            return
        typer.echo(
            f"{wl.name} on {cfg.name}: {res.cycles:,} cycles ({res.seconds * 1e3:.3f} ms), "
            f"DRAM {res.total_dram_bytes / 1e6:.2f} MB, energy {res.total_energy_pj / 1e6:.1f} uJ, "
            f"cache hit rate {res.cache_hit_rate:.2f}"
        )
        typer.echo(f"vs GPU-like baseline: speedup {gpu['speedup']:.2f}x, energy saving {gpu['energy_saving']:.1f}x")
        for name, r in ablations.items():
            typer.echo(
                f"vs {name.replace('_', '-')} ablation: speedup {r['speedup']:.2f}x, "
                f"energy saving {r['energy_saving']:.2f}x"
            )


@pointacc_app.command("report")
def pointacc_report(
    workload: Annotated[str, typer.Argument(help="A network name or a workload JSON.")],
    config: PaConfigOpt = "server",
    points: PointsOpt = None,
    seed: SeedOpt = 0,
    fmt: Annotated[str, typer.Option("--format", help="md or html.")] = "md",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Per-layer table and the cycles/energy breakdown plot (HTML) of a network on PointAcc."""
    with _clean_errors():
        from accel_sims.errors import AccelSimsError
        from accel_sims.pointacc.config import PointAccConfig
        from accel_sims.pointacc.report import html_report, markdown
        from accel_sims.pointacc.simulator import simulate

        if fmt not in ("md", "html"):
            raise AccelSimsError(f"--format must be 'md' or 'html', got {fmt!r}")
        wl = _pointacc_workload(workload, points, seed)
        res = simulate(wl, PointAccConfig.from_name(config))
        text = html_report(res) if fmt == "html" else markdown(res)
        _emit(text, out)


DotaWorkloadArg = Annotated[str, typer.Argument(help="deit-t, deit-s, deit-b, bert-b, bert-l (or tiny).")]
DotaConfigOpt = Annotated[
    str, typer.Option("--config", help="dota-b-4bit, dota-b-8bit, dota-l-4bit, dota-l-8bit, mrr-bank-4bit, ...")
]
TokensOpt = Annotated[int | None, typer.Option("--tokens", min=1, help="Sequence length (default: the model's).")]


@dota_app.command("simulate")
def dota_simulate(
    workload: DotaWorkloadArg,
    config: DotaConfigOpt = "dota-b-4bit",
    tokens: TokensOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Latency and energy of a transformer on a photonic accelerator (per matmul and in total)."""
    with _clean_errors():
        from accel_sims.dota.arch import simulate as run
        from accel_sims.dota.workloads import TransformerSpec

        res = run(TransformerSpec.from_name(workload, tokens=tokens), config)
        if as_json:
            typer.echo(res.model_dump_json(indent=2))
            return
        parts = sorted(res.energy_breakdown_pj.items(), key=lambda kv: -kv[1])
        share = ", ".join(f"{k} {v / res.energy_pj:.0%}" for k, v in parts if v / res.energy_pj >= 0.01)
        typer.echo(
            f"{res.workload} on {res.accelerator}: {res.latency_s * 1e6:,.1f} us, {res.energy_pj / 1e6:,.1f} uJ "
            f"({res.energy_pj / res.macs:.3f} pJ/MAC over {res.macs / 1e9:.2f} GMAC); energy: {share}"
        )


@dota_app.command("area")
def dota_area(
    config: DotaConfigOpt = "dota-b-4bit",
    as_json: JsonOpt = False,
) -> None:
    """Area breakdown from device counts x device areas (DOTA-B 4-bit: reference 60.33 mm²)."""
    with _clean_errors():
        from accel_sims.dota.arch import area
        from accel_sims.dota.report import area_markdown

        rep = area(config)
        if as_json:
            typer.echo(rep.model_dump_json(indent=2))
            return
        typer.echo(f"{rep.accelerator}: {rep.total_mm2:.2f} mm²\n")
        typer.echo(area_markdown(rep))


@dota_app.command("report")
def dota_report(
    workloads: Annotated[list[str] | None, typer.Argument(help="Workloads (default: all five of the paper).")] = None,
    bits: Annotated[int, typer.Option("--bits", help="4 or 8: DOTA-B, the MRR bank and the electronic array.")] = 4,
    fmt: Annotated[str, typer.Option("--format", help="md or html.")] = "md",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """DOTA-B against the same-area microring bank and the electronic array; HTML adds the energy-breakdown plot."""
    with _clean_errors():
        from accel_sims.dota.baselines import compare
        from accel_sims.dota.report import html_report, markdown
        from accel_sims.dota.workloads import workload_names
        from accel_sims.errors import AccelSimsError

        if fmt not in ("md", "html"):
            raise AccelSimsError(f"--format must be 'md' or 'html', got {fmt!r}")
        if bits not in (4, 8):
            raise AccelSimsError(f"--bits must be 4 or 8 (the presets' precisions), got {bits}")
        names = workloads or [w for w in workload_names() if w != "tiny"]
        results = [r for w in names for r in compare(w, bits).values()]
        title = f"DOTA-B vs MRR bank vs electronic, {bits}-bit"
        _emit(html_report(results, title) if fmt == "html" else markdown(results), out)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}")


def main() -> None:  # pragma: no cover - console entry point
    app()
