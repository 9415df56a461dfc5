"""The `lego-hw` command line: analyze, generate, simulate, synth, lint, estimate, report.

LEGO (arXiv:2509.12053) end to end: a workload and one or more dataflows go in; reuse analysis, a Verilog
design with its testbench, an Icarus simulation checked bit-exactly against numpy, Yosys cell counts and a
performance/energy estimate come out. `generate` writes a folder with `design.json` (the DesignSpec) and the
Verilog; the other commands take that folder. Errors of the package print one line and exit with code 2.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="LEGO: spatial accelerators from affine dataflows to simulated, synthesized Verilog.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
WorkloadArg = Annotated[
    str,
    typer.Argument(
        help="'gemm:m=64,n=64,k=32', 'conv2d:k=8,c=4,oh=5,ow=6,r=3,s=3,stride=2', "
        "'C[i,j] += A[i,k] * B[k,j] @ i=8,j=8,k=8', or a workload .json file."
    ),
]
DataflowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dataflow",
        "-d",
        help="Preset name (repeat to fuse several into one array). Default: output-stationary.",
    ),
]
LoopsOpt = Annotated[
    str | None, typer.Option("--loops", help="Row, column and reduction loops, e.g. 'k,x,c' (default: chosen).")
]
SttOpt = Annotated[
    str | None, typer.Option("--stt", help="A custom space-time matrix instead of a preset: '1,0,0;0,1,0;1,1,1'.")
]
RowsOpt = Annotated[int, typer.Option("--rows", min=1, help="PE rows.")]
ColsOpt = Annotated[int, typer.Option("--cols", min=1, help="PE columns.")]
DataWidthOpt = Annotated[int, typer.Option("--data-width", help="Input operand bits.")]
AccWidthOpt = Annotated[int, typer.Option("--acc-width", help="Accumulator and output bits.")]
DesignArg = Annotated[Path, typer.Argument(help="A folder written by `lego-hw generate` (or its design.json).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    """lego_hw's errors and missing tools as one line on stderr, exit code 2, no traceback."""
    from pydantic import ValidationError

    from lego_hw.errors import (
        LegoError,
        SimulationMismatchError,
        ToolFailedError,
        ToolNotFoundError,
    )

    try:
        yield
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise _fail(msg) from None
    except (LegoError, ToolNotFoundError, ToolFailedError, SimulationMismatchError) as exc:
        raise _fail(" ".join(str(exc).split())) from None
    except OSError as exc:
        raise _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def _spec(
    workload: str,
    dataflows: list[str] | None,
    loops: str | None,
    stt: str | None,
    rows: int,
    cols: int,
    data_width: int,
    acc_width: int,
    name: str | None,
) -> Any:
    from lego_hw.dataflow import ArraySpec, Dataflow
    from lego_hw.errors import LegoError
    from lego_hw.spec import DesignSpec, default_loops, parse_workload

    wl = parse_workload(workload)
    loop_names = tuple(s.strip() for s in loops.split(",")) if loops else default_loops(wl)
    if stt is not None:
        if dataflows:
            raise LegoError("pass either --stt or --dataflow, not both")
        try:
            matrix = tuple(tuple(int(v) for v in row.split(",")) for row in stt.split(";"))
        except ValueError:
            raise LegoError(
                f"--stt {stt!r}: expected integers, rows separated by ';', e.g. '1,0,0;0,1,0;1,1,1'"
            ) from None
        dfs = [Dataflow(name="custom", loops=loop_names[: len(matrix)], stt=matrix)]
    else:
        dfs = [Dataflow.preset(d, loops=loop_names) for d in (dataflows or ["output-stationary"])]
    array = ArraySpec(rows=rows, cols=cols, data_width=data_width, acc_width=acc_width)
    top = name or "lego_" + "_".join(d.name.replace("-", "_") for d in dfs) + f"_{wl.name}"
    return DesignSpec(name=top, workload=wl, dataflows=tuple(dfs), array=array)


@app.command()
def analyze(
    workload: WorkloadArg,
    dataflow: DataflowOpt = None,
    loops: LoopsOpt = None,
    stt: SttOpt = None,
    rows: RowsOpt = 4,
    cols: ColsOpt = 4,
    as_json: JsonOpt = False,
) -> None:
    """Legality, reuse classification and the chosen interconnect of each tensor, per dataflow."""
    with _clean_errors():
        from lego_hw.interconnect import build_interconnect

        spec = _spec(workload, dataflow, loops, stt, rows, cols, 8, 32, None)
        out: list[dict[str, Any]] = []
        for m in spec.mappings():
            ic = build_interconnect(m)
            out.append(
                {
                    "dataflow": m.dataflow.name,
                    "loops": list(m.dataflow.loops),
                    "stt": [list(r) for r in m.dataflow.stt],
                    "tile": dict(zip(m.dataflow.loops, m.tile, strict=True)),
                    "tiles": m.num_tiles,
                    "tensors": {
                        n: {
                            "role": net.role,
                            "reuse": net.reuse.classification,
                            "vectors": [[list(v.space), v.time] for v in net.reuse.basis],
                            "memory_ports": len(net.memory_ports),
                            "fifo_bits": net.fifo_bits(m.array.data_width),
                        }
                        for n, net in ic.networks.items()
                    },
                }
            )
        if as_json:
            typer.echo(json.dumps(out, indent=2))
            return
        for d in out:
            typer.echo(f"{d['dataflow']}  loops={','.join(d['loops'])}  stt={d['stt']}  tile={d['tile']}")
            for n, t in d["tensors"].items():
                typer.echo(
                    f"  {n:<4} {t['role']:<6} {t['reuse']:<22} vectors={t['vectors']} "
                    f"ports={t['memory_ports']} fifo_bits={t['fifo_bits']}"
                )


@app.command()
def generate(
    workload: WorkloadArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for design.json and the Verilog.")],
    dataflow: DataflowOpt = None,
    loops: LoopsOpt = None,
    stt: SttOpt = None,
    rows: RowsOpt = 4,
    cols: ColsOpt = 4,
    data_width: DataWidthOpt = 8,
    acc_width: AccWidthOpt = 32,
    name: Annotated[str | None, typer.Option("--name", help="Top module name.")] = None,
    share_links: Annotated[
        bool, typer.Option("--share-links", help="Fused arrays: choose each mode's links to share more (fewer muxes).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate the array (one dataflow, or several fused) as Verilog plus its design.json.

    Writes the core `<name>.v`, its banked buffers `<name>_buffers.v` and the system `<name>_system.v` that the
    testbench simulates.
    """
    with _clean_errors():
        from lego_hw.design import generate as gen
        from lego_hw.spec import SPEC_FILE

        spec = _spec(workload, dataflow, loops, stt, rows, cols, data_width, acc_width, name)
        spec = spec.model_copy(update={"share_links": share_links})
        t0 = time.perf_counter()
        design = gen(spec.mappings(), name=spec.name, share_links=spec.share_links)
        files = [str(p) for p in design.write(out)]
        seconds = time.perf_counter() - t0
        spec.save(out / SPEC_FILE)
        result = {"name": spec.name, "out": str(out), "files": files, "seconds": round(seconds, 3)}
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            typer.echo(f"{spec.name}: {len(files)} file(s) in {out} ({seconds:.2f} s)")


def _load_design(path: Path) -> tuple[Any, Any]:
    from lego_hw.design import generate as gen
    from lego_hw.spec import DesignSpec

    spec = DesignSpec.load(path)
    return spec, gen(spec.mappings(), name=spec.name, share_links=spec.share_links)


@app.command()
def simulate(
    design_dir: DesignArg,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random integer inputs.")] = 0,
    mode: Annotated[str | None, typer.Option("--mode", help="Dataflow to run on a fused array (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate in Icarus Verilog on random inputs; compare with numpy bit-exactly and cycles with the model."""
    import numpy as np

    with _clean_errors():
        from lego_hw.errors import LegoError, SimulationMismatchError
        from lego_hw.schedule import total_cycles
        from lego_hw.tools import simulate as sim

        spec, design = _load_design(design_dir)
        names = [d.name for d in spec.dataflows]
        if mode is not None and mode not in names:
            raise LegoError(f"--mode {mode!r} is not a dataflow of this design; it has {names}")
        rows = []
        for m in spec.mappings():
            if mode is not None and m.dataflow.name != mode:
                continue
            rng = np.random.default_rng(seed)
            inputs = spec.workload.random_inputs(rng, bits=spec.array.data_width)
            res = sim(design, inputs, mode=m.dataflow.name)
            ref = spec.workload.reference(inputs)
            name = spec.workload.output.name
            exact = bool(np.array_equal(res.outputs[name], ref[name]))
            rows.append(
                {
                    "dataflow": m.dataflow.name,
                    "bit_exact": exact,
                    "cycles": res.cycles,
                    "model_cycles": total_cycles(m),
                    "bank_conflicts": res.bank_conflicts,
                }
            )
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            for r in rows:
                typer.echo(
                    f"{r['dataflow']}: {'bit-exact' if r['bit_exact'] else 'MISMATCH'} vs numpy, "
                    f"{r['cycles']} cycles (model {r['model_cycles']}), {r['bank_conflicts']} bank conflicts"
                )
        if not all(r["bit_exact"] for r in rows):
            raise SimulationMismatchError("the RTL output differs from the numpy reference")
        if any(r["bank_conflicts"] for r in rows):
            raise SimulationMismatchError("a buffer bank was asked for two words in one cycle (see bank_conflicts)")


@app.command()
def synth(
    design_dir: DesignArg,
    buffers: Annotated[
        bool, typer.Option("--buffers", help="Synthesize the banked buffers instead of the core.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Synthesize the core (PE array, links, address generators, control) with Yosys: cells, flip-flops, area."""
    with _clean_errors():
        from lego_hw.tools import synthesize

        _, design = _load_design(design_dir)
        rep = synthesize(design, part="buffers" if buffers else "core")
        result = {
            "cells": rep.cells,
            "flip_flops": rep.flip_flops,
            "area_estimate": rep.area_estimate,
            "cells_by_type": rep.cells_by_type,
        }
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            typer.echo(f"cells {rep.cells}  flip-flops {rep.flip_flops}  area ~{rep.area_estimate:.0f}")


@app.command()
def lint(design_dir: DesignArg) -> None:
    """Lint the generated Verilog with `verilator --lint-only -Wall`."""
    with _clean_errors():
        from lego_hw.tools import lint as run_lint

        _, design = _load_design(design_dir)
        text = run_lint(design)
        typer.echo(text.strip() or "verilator: lint clean")


@app.command()
def pipeline(
    design_dir: DesignArg,
    clock_ns: Annotated[
        float | None, typer.Option("--clock-ns", help="Target clock period (default: the fastest feasible).")
    ] = None,
    keep: Annotated[
        list[str] | None, typer.Option("--keep", help="Dataflows to keep; logic only the others use is removed.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Back end: pipeline registers by LP for a clock target (vs registering every edge), and unused logic."""
    with _clean_errors():
        from lego_hw.backend import compare_register_insertion, primitive_graph, remove_unused_logic
        from lego_hw.interconnect import build_interconnect
        from lego_hw.spec import DesignSpec

        spec = DesignSpec.load(design_dir)
        pg = primitive_graph([build_interconnect(m) for m in spec.mappings()])
        result: dict[str, Any] = {"registers": compare_register_insertion(pg, clock_ns).as_dict()}
        if keep:
            result["unused_logic"] = remove_unused_logic(pg, keep).as_dict()
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
            return
        r = result["registers"]
        ratio = r["lp_bits"] / r["naive_bits"]
        typer.echo(
            f"clock {r['clock_ns']:.2f} ns (fastest feasible {r['min_clock_ns']:.2f}): "
            f"LP {r['lp_bits']} register bits, balanced ASAP {r['asap_bits']}, every edge {r['naive_bits']} "
            f"(LP/naive {ratio:.3f}), min-cost-flow dual {r['dual_bits']}, latency {r['latency']} cycles"
        )
        if keep:
            u = result["unused_logic"]
            typer.echo(
                f"keeping {', '.join(keep)}: muxes {u['before']['muxes']} -> {u['after']['muxes']}, "
                f"register bits {u['before']['register_bits']} -> {u['after']['register_bits']}, "
                f"gated register fraction {u['gated_fraction']:.3f}"
            )


@app.command()
def estimate(
    workload: WorkloadArg,
    dataflow: DataflowOpt = None,
    loops: LoopsOpt = None,
    rows: RowsOpt = 16,
    cols: ColsOpt = 16,
    scratchpad_kib: Annotated[int, typer.Option("--scratchpad-kib", min=1, help="Input scratchpad size.")] = 256,
    accumulator_kib: Annotated[int, typer.Option("--accumulator-kib", min=1, help="Accumulator size.")] = 64,
    dram_bytes_per_cycle: Annotated[float, typer.Option("--dram-bytes-per-cycle", help="Off-chip bandwidth.")] = 16.0,
    as_json: JsonOpt = False,
) -> None:
    """Cycles, utilization, traffic and energy of a workload (a given dataflow, or the best of the presets).

    WORKLOAD may also be a folder written by `generate`: then each of its dataflows is estimated.
    """
    with _clean_errors():
        from lego_hw.dataflow import ArraySpec, Dataflow, map_workload
        from lego_hw.perf import MemoryConfig, estimate_best
        from lego_hw.perf import estimate as run_estimate
        from lego_hw.spec import SPEC_FILE, DesignSpec, default_loops, parse_workload

        memory = MemoryConfig(
            scratchpad_bytes=scratchpad_kib * 1024,
            accumulator_bytes=accumulator_kib * 1024,
            dram_bytes_per_cycle=dram_bytes_per_cycle,
        )
        if (Path(workload) / SPEC_FILE).is_file():
            reports = [run_estimate(m, memory) for m in DesignSpec.load(workload).mappings()]
        else:
            wl = parse_workload(workload)
            array = ArraySpec(rows=rows, cols=cols)
            if dataflow:
                names = tuple(s.strip() for s in loops.split(",")) if loops else default_loops(wl)
                reports = [run_estimate(map_workload(wl, Dataflow.preset(d, names), array), memory) for d in dataflow]
            else:
                reports = [estimate_best(wl, array, memory)[1]]
        if as_json:
            typer.echo(json.dumps([json.loads(r.model_dump_json()) for r in reports], indent=2))
            return
        for r in reports:
            e = r.energy
            typer.echo(
                f"{r.workload} {r.dataflow} loops={','.join(r.loops)} on {r.array_rows}x{r.array_cols}: "
                f"{r.total_cycles:,} cycles (compute {r.cycles:,}, DRAM {r.dram_cycles:,}), "
                f"utilization {r.utilization:.2f}, DRAM {r.dram_bytes / 1024:.1f} KiB, "
                f"energy {e.total_pj / 1e6:.3f} uJ (MAC {e.mac_pj / 1e6:.3f}, regs {e.register_pj / 1e6:.3f}, "
                f"SRAM {e.sram_pj / 1e6:.3f}, DRAM {e.dram_pj / 1e6:.3f})"
            )


@app.command()
def report(
    model: Annotated[str, typer.Option("--model", help="resnet50 or transformer.")] = "resnet50",
    seq: Annotated[int, typer.Option("--seq", min=1, help="Tokens, for the transformer block.")] = 512,
    fmt: Annotated[str, typer.Option("--format", help="md or html.")] = "md",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Per-layer report of the LEGO design against the Gemmini-like baseline (same performance model)."""
    with _clean_errors():
        from lego_hw.errors import LegoError
        from lego_hw.gemmini import LEGO_ARRAY, compare
        from lego_hw.models import model_layers
        from lego_hw.report import LayerRow, render

        if fmt not in ("md", "html"):
            raise LegoError(f"--format must be 'md' or 'html', got {fmt!r}")
        layers = model_layers(model, seq=seq) if model == "transformer" else model_layers(model)
        rows = [
            LayerRow(
                name=c.name,
                dataflow=c.lego.dataflow,
                macs=c.lego.macs,
                cycles=c.lego.total_cycles,
                utilization=c.lego.macs / (c.lego.total_cycles * c.lego.pes),
                energy_pj=c.lego.energy.total_pj,
                dram_bytes=c.lego.dram_bytes,
                count=c.count,
                baseline_cycles=c.baseline.total_cycles,
                baseline_energy_pj=c.baseline.energy.total_pj,
            )
            for c in compare(layers)
        ]
        title = f"{model}: LEGO-generated array vs Gemmini-like baseline ({LEGO_ARRAY.rows}x{LEGO_ARRAY.cols} PEs)"
        text = render(rows, title, LEGO_ARRAY.num_pes, "html" if fmt == "html" else "md")
        if out is None:
            typer.echo(text)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            typer.echo(f"wrote {out}")


def main() -> None:  # pragma: no cover - console entry point
    app()
