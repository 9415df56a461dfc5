"""Static look at the W4A8 GEMM's Hopper machine code, without a GPU (QServe, Lin et al., arXiv 2405.04532, Sec. 5.2).

Triton compiles the kernel ahead of time for sm_90a (its bundled ptxas), ``cuobjdump`` (bundled too) disassembles
it, and this script reports, per launch shape and dequantization mode, the main loop's instruction count per K step
of 128 (per warp), its instruction mix, the tensor-core instructions (``IGMMA`` = INT8 wgmma), registers, local-memory
spills, and whether each step waits for its wgmma to finish (``WARPGROUP.DEPBAR.LE gsb0, 0x0`` inside the loop:
then tensor-core and CUDA-core work do not overlap). No timing: it says what the GPU will have to execute, the part
of the kernel's cost that code changes move, and is what ``bench_kernels.py`` then times on a GPU.

Warp-instructions per step over the SM's issue rate (4 per clock) against the wgmma's time per step (the INT8 tensor
cores do 4096 multiply-adds per clock per SM on an H100) is the estimate printed as ``alu_clk`` / ``mma_clk``.
``ctas`` is how many programs fit on one SM at once (registers in 256-register units per warp of a 64K file,
shared memory of 227 KiB); with two or more, one program's dequantization can run while another's wgmma does, so
``step_clk`` (per program, per K step, per SM) is ``max(alu, mma)`` instead of their sum when each step waits.
``model_us`` applies that to M=1024, N=K=4096 at 1.755 GHz, whole waves of 132 SMs: a ranking aid for the sweep,
not a measurement.

    python packages/qserve/bench/inspect_sass.py --json out.json
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import emit_report  # noqa: E402

# Launch shapes from pick_w4a8_config (M=1024, 64 and 1) and the sweep's candidates.
SHAPES: tuple[tuple[int, int, bool, int, int], ...] = (
    (256, 128, False, 8, 3),
    (128, 128, False, 8, 3),
    (128, 128, False, 4, 3),
    (128, 128, False, 4, 4),
    (128, 256, False, 8, 3),
    (128, 64, False, 4, 4),
    (64, 128, True, 4, 4),
    (16, 32, True, 4, 4),
)
_SASS_LINE = re.compile(r"\s+/\*([0-9a-f]+)\*/\s+(.*?);")
_BRANCH = re.compile(r"BRA\s+(?:`\()?[^0-9]*0x([0-9a-f]+)")


def _tool(name: str) -> str:
    import triton  # type: ignore[import-untyped,import-not-found,unused-ignore]

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to Triton ({path}) or on PATH")
    return found


def compile_for_sm90(
    fn: Any, consts: dict[str, Any], ptr_types: dict[str, str], num_warps: int, num_stages: int
) -> Any:
    """Compile the Triton kernel ``fn`` for sm_90a with its constexprs ``consts``; pointer arguments get
    ``ptr_types`` (Triton type strings), every other argument is i32. Pointers and integers are declared 16-byte
    divisible, as Triton specialises them at run time for aligned tensors and strides."""
    # Triton 3.9 warns unless the FP-fusion default is named; 1 is its current default, so nothing changes.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import triton
    from triton.backends.compiler import GPUTarget  # type: ignore[import-untyped,import-not-found,unused-ignore]
    from triton.compiler import ASTSource  # type: ignore[import-untyped,import-not-found,unused-ignore]

    if not isinstance(fn, triton.runtime.JITFunction):
        raise RuntimeError("compiling for sm_90a needs real Triton kernels: unset TRITON_INTERPRET")
    names = list(fn.arg_names)
    unknown = set(consts) - set(names)
    if unknown:
        raise ValueError(f"unknown kernel arguments {sorted(unknown)}; the kernel takes {names}")
    sig = {n: "constexpr" if n in consts else ptr_types.get(n, "i32") for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in consts}
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in consts.items()}, attrs=attrs)
    return triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages}
    )


def machine_code_stats(compiled: Any, num_warps: int) -> dict[str, Any]:
    """:func:`loop_stats` of a compiled kernel plus its registers, stack, shared memory, how many of its programs
    fit on one SM, and its main loop's issue time (warp-instructions at 4 per clock)."""
    with tempfile.TemporaryDirectory() as d:
        cubin = Path(d) / "k.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([_tool("cuobjdump"), "-sass", str(cubin)], check=True, capture_output=True, text=True)
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", str(cubin)], check=True, capture_output=True, text=True)
    usage = re.search(r"REG:(\d+) STACK:(\d+)", res.stdout)
    if usage is None:
        raise ValueError(f"cuobjdump -res-usage printed no register count: {res.stdout[:200]}")
    stats = loop_stats(sass.stdout)
    regs, smem = int(usage.group(1)), int(compiled.metadata.shared)
    stats.update(
        registers=regs,
        stack_bytes=int(usage.group(2)),
        shared_bytes=smem,
        ctas=min(65536 // (-(-regs * 32 // 256) * 256 * num_warps), 232448 // max(smem + 1024, 1), 64 // num_warps),
        alu_clk=stats["instructions"] * num_warps / 4,
    )
    return stats


def compile_sm90(
    block_m: int, block_n: int, swap: bool, num_warps: int, num_stages: int, packed: bool, **flags: bool
) -> Any:
    """The W4A8 kernel (by default g128, even tiles, fp16 out; ``flags`` override the kernel's other constexprs)
    compiled for sm_90a."""
    from qserve.kernels.w4a8_gemm import GROUP_SIZE, _w4a8_kernel

    consts: dict[str, Any] = dict(
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=GROUP_SIZE,
        GROUP_M=8,
        SWAP=swap,
        EVEN_M=True,
        EVEN_N=True,
        PER_GROUP=True,
        RAW_INT=False,
        HAS_BIAS=False,
        OUT_BF16=False,
        PACKED=packed,
    )
    unknown = set(flags) - set(consts)
    if unknown:
        raise ValueError(f"unknown kernel flags {sorted(unknown)}; known: {sorted(consts)}")
    consts.update(flags)
    ptrs = {
        "a_ptr": "*i8",
        "as_ptr": "*fp16",
        "w_ptr": "*u8",
        "s1_ptr": "*fp16",
        "s2_ptr": "*u8",
        "z2_ptr": "*i8",
        "rs_ptr": "*i32",
        "zc_ptr": "*i32",
        "bias_ptr": "*fp16",
        "y_ptr": "*fp16",
    }
    return compile_for_sm90(_w4a8_kernel, consts, ptrs, num_warps, num_stages)


def loop_stats(sass: str) -> dict[str, Any]:
    """The innermost backward branch's body: instruction count, mix, wgmma count, and whether it waits for all
    wgmmas (``DEPBAR.LE gsb0, 0x0``)."""
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in map(_SASS_LINE.match, sass.splitlines()) if m]
    loops = []
    for addr, text in ins:
        b = _BRANCH.search(text)
        if b and int(b.group(1), 16) < addr:
            loops.append([t for a, t in ins if int(b.group(1), 16) <= a <= addr])
    if not loops:
        raise ValueError("no loop found in the disassembly")
    body = max(loops, key=lambda lp: sum("GMMA" in t for t in lp))
    ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
    return {
        "instructions": len(body),
        "igmma": ops.get("IGMMA", 0),
        "waits_each_step": any("DEPBAR.LE gsb0, 0x0" in t for t in body),
        "ops": dict(ops),
        "mix": dict(ops.most_common(8)),
    }


def inspect(block_m: int, block_n: int, swap: bool, num_warps: int, num_stages: int, packed: bool) -> dict[str, Any]:
    stats = machine_code_stats(compile_sm90(block_m, block_n, swap, num_warps, num_stages, packed), num_warps)
    ctas, alu, mma = stats["ctas"], stats["alu_clk"], block_m * block_n * 128 / 4096
    step = (alu + mma if stats["waits_each_step"] else max(alu, mma)) if ctas < 2 else max(alu, mma)
    m, n, kk = 1024, 4096, 4096
    tiles = -(-m // block_m) * -(-n // block_n)
    waves = -(-tiles // (132 * max(ctas, 1)))
    stats.update(
        config=f"{block_m}x{block_n} swap={swap} warps={num_warps} stages={num_stages}",
        packed_dequant=packed,
        mma_clk=mma,
        step_clk=step,
        model_us=waves * max(ctas, 1) * step * (kk // 128) / 1755.0,
    )
    return stats


def table_main(
    argv: list[str] | None,
    description: str,
    make_rows: Callable[[], list[dict[str, Any]]],
    columns: list[tuple[str, str, str]],
    extra: dict[str, Any],
) -> int:
    """The command line of an inspector: ``--json PATH``; prints ``make_rows()`` as a table of ``columns``
    (header, key, format spec) and then the JSON report (``extra`` plus Triton's version, target and rows)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None, help="write the report to this file")
    args = p.parse_args(argv)
    import triton

    rows = make_rows()
    widths = [max(len(h), len(format(rows[0][k], f))) if rows else len(h) for h, k, f in columns]
    print(" ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths, strict=True)))
    for r in rows:
        print(" ".join(format(r[k], f).rjust(w) for (_, k, f), w in zip(columns, widths, strict=True)))
    emit_report({"triton": triton.__version__, "target": "sm_90a", **extra, "loops": rows}, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    return table_main(
        argv,
        __doc__ or "",
        # Packed dequantization only where w4a8_gemm allows it: unswapped operands.
        lambda: [inspect(*shape, packed=p) for shape in SHAPES for p in ((False,) if shape[2] else (False, True))],
        [
            ("config", "config", "40s"),
            ("packed", "packed_dequant", ""),
            ("instr", "instructions", "d"),
            ("alu_clk", "alu_clk", ".0f"),
            ("mma_clk", "mma_clk", ".0f"),
            ("regs", "registers", "d"),
            ("smem", "shared_bytes", "d"),
            ("ctas", "ctas", "d"),
            ("waits", "waits_each_step", ""),
            ("step", "step_clk", ".0f"),
            ("model_us", "model_us", ".1f"),
        ],
        {},
    )


if __name__ == "__main__":
    raise SystemExit(main())
